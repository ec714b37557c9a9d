//! Test support, behind the `testing` feature: [`MemoryStore`], [`MemoryChannel`],
//! [`RecordingInbound`], the [`Store`](crate::Store) [`conformance`] suite and the
//! [`Channel`] [`channel_conformance`] suite.
//!
//! Library users can use these in their own tests: drive a real engine against an in-memory
//! store and a scriptable channel, or run the conformance suite against their own store.

pub mod channel_conformance;
pub mod conformance;
mod memory_channel;
mod memory_store;
mod recording_inbound;

pub use memory_channel::{
    MEMORY_KIND, MEMORY_LOGIN_TOKEN, MemoryChannel, MemoryProvider, SendScript,
};
pub use memory_store::MemoryStore;
pub use recording_inbound::{Recorded, RecordingInbound};

use std::sync::Arc;

use crate::{AccountId, Channel, Engine};

/// Attaches `channel` as the one that sends for `account` in `engine`, as the runtime does
/// when it takes the account's lease: for tests that drive a [`Dispatcher`](crate::dispatcher::Dispatcher)
/// without a runtime. A service never does this (the runtime holds the lease first, so no
/// second live session opens).
pub fn attach_channel(engine: &Engine, account: AccountId, channel: Arc<dyn Channel>) {
    engine.attach_channel(account, channel);
}

/// Detaches the account's channel, as the runtime does when it loses the account's lease.
pub fn detach_channel(engine: &Engine, account: AccountId) -> Option<Arc<dyn Channel>> {
    engine.detach_channel(account)
}
