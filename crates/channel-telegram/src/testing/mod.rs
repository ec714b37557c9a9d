//! Test support, behind the `testing` feature: a loopback MTProto server that a real grammers
//! client talks to ([`loopback`]) and an in-memory [`Inbound`](channel_core::Inbound)
//! ([`MemoryInbound`]).

pub mod loopback;
mod sink;

pub use sink::MemoryInbound;
