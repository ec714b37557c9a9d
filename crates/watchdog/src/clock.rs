//! The watchdog's clocks: a monotonic millisecond clock relative to the watchdog's start (read
//! through `tokio::time::Instant`, so paused-clock tests control it), a coarse copy of it that
//! pings read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Monotonic milliseconds since the watchdog was built.
///
/// `coarse` is what [`LoopContext::ping`](crate::LoopContext::ping) copies: the monitor stores
/// the precise time into it on every check, so a ping is one relaxed load and one relaxed store
/// and never reads the OS clock.
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    coarse: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self { epoch: Instant::now(), coarse: AtomicU64::new(0) }
    }

    /// Precise milliseconds since the epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// Milliseconds since the epoch at `at`.
    pub(crate) fn ms_at(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.epoch))
    }

    /// The coarse clock, as of the last [`Clock::tick`].
    #[inline]
    pub(crate) fn coarse(&self) -> u64 {
        self.coarse.load(Ordering::Relaxed)
    }

    /// Reads the precise clock and publishes it as the coarse one; returns it.
    pub(crate) fn tick(&self) -> u64 {
        let now = self.now_ms();
        self.coarse.fetch_max(now, Ordering::Relaxed);
        now
    }

    /// Time since the watchdog was built.
    pub(crate) fn uptime(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
