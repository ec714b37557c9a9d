//! Test support, behind the `testing` feature: [`MemoryStore`], [`MemoryChannel`] and the
//! [`Store`](crate::Store) [`conformance`] suite.
//!
//! Library users can use these in their own tests: drive a real engine against an in-memory
//! store and a scriptable channel, or run the conformance suite against their own store.

pub mod conformance;
mod memory_channel;
mod memory_store;

pub use memory_channel::{
    MEMORY_KIND, MEMORY_LOGIN_TOKEN, MemoryChannel, MemoryProvider, SendScript,
};
pub use memory_store::MemoryStore;
