//! Wall-clock instants as stored: the family's one [`Timestamp`], defined in
//! `channel-watchdog` (the crate every other one builds on) and re-exported here.

pub use channel_watchdog::Timestamp;
