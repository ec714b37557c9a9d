//! Test support: the real mail stack comes from `channel_email::testing` (feature `testing`,
//! shared with the benchmarks); what the channel delivers is recorded by channel-core's
//! `RecordingInbound`; and the fault-injecting proxy.
#![allow(dead_code)]

pub mod corpus;
pub mod fault_proxy;

#[allow(unused_imports)]
pub use channel_core::testing::RecordingInbound;
#[allow(unused_imports)]
pub use channel_email::testing::*;
