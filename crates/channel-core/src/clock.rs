//! Where the engine reads the time.
//!
//! Every store call takes `now` from the engine's [`Clock`]. Production uses [`SystemClock`];
//! tests use [`TokioClock`], which follows tokio's (pausable) clock so a test can move time
//! forward with `tokio::time::advance` instead of sleeping.

use std::fmt;
use std::time::SystemTime;

use crate::model::Timestamp;

/// A source of wall-clock time for the engine.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock ([`Timestamp::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Wall-clock time that advances with tokio's clock: the wall time when it was created plus
/// the `tokio::time::Instant` time elapsed since. Under `#[tokio::test(start_paused = true)]`
/// it stands still until the test advances it.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    wall: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting at the current wall time.
    pub fn new() -> Self {
        Self::starting_at(Timestamp::from_system_time(SystemTime::now()))
    }

    /// A clock starting at `wall` (deterministic tests).
    pub fn starting_at(wall: Timestamp) -> Self {
        Self { wall, start: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.wall.plus(tokio::time::Instant::now().saturating_duration_since(self.start))
    }
}
