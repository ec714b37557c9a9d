//! Test support, behind the `testing` feature: a loopback MTProto server that a real grammers
//! client talks to ([`loopback`]). The in-memory [`Inbound`](channel_core::Inbound) is
//! channel-core's [`RecordingInbound`](channel_core::testing::RecordingInbound).

pub mod loopback;
