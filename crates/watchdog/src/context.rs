//! What a running loop gets from the watchdog: [`LoopContext`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::clock::Clock;

/// The last ping of one run of a loop, in the watchdog clock's milliseconds.
#[derive(Debug)]
pub(crate) struct Beacon {
    last_ping: AtomicU64,
}

impl Beacon {
    pub(crate) fn new(now_ms: u64) -> Self {
        Self { last_ping: AtomicU64::new(now_ms) }
    }

    pub(crate) fn last_ping(&self) -> u64 {
        self.last_ping.load(Ordering::Relaxed)
    }
}

/// Handed to a loop's factory for each run: the loop pings through it and watches it for
/// cancellation.
///
/// Each run (the first one and every restart) gets a fresh context with a fresh cancellation
/// token; pings through the context of an earlier run no longer count.
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::{LoopContext, LoopResult};
///
/// async fn poll_mailbox(ctx: LoopContext) -> LoopResult {
///     loop {
///         ctx.ping();
///         tokio::select! {
///             _ = ctx.cancelled() => return Ok(()),
///             _ = tokio::time::sleep(Duration::from_secs(5)) => { /* one cycle of work */ }
///         }
///     }
/// }
/// # let _ = poll_mailbox;
/// ```
#[derive(Debug, Clone)]
pub struct LoopContext {
    beacon: Arc<Beacon>,
    clock: Arc<Clock>,
    token: CancellationToken,
    name: Arc<str>,
    run: u64,
}

impl LoopContext {
    pub(crate) fn new(
        beacon: Arc<Beacon>,
        clock: Arc<Clock>,
        token: CancellationToken,
        name: Arc<str>,
        run: u64,
    ) -> Self {
        Self { beacon, clock, token, name, run }
    }

    /// Tells the watchdog this loop is alive. Call it once per cycle.
    ///
    /// It is one relaxed atomic load and one relaxed atomic store: no lock, no allocation, no
    /// system call. The time stored is the watchdog's coarse clock, which the monitor advances on
    /// every check, so a ping is stamped with the time of the latest check (at most one
    /// check interval early). Silence is therefore measured with a resolution of one check
    /// interval: a loop is declared silent once the stamped silence exceeds its `max_silence`,
    /// which happens at most `max_silence + check_interval` after its last ping and not before
    /// `max_silence - check_interval`.
    #[inline]
    pub fn ping(&self) {
        self.beacon.last_ping.store(self.clock.coarse(), Ordering::Relaxed);
    }

    /// The loop's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which run of the loop this is: 0 for the first, 1 after the first restart, and so on.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The cancellation token of this run. It is cancelled when the loop is to stop: when it was
    /// silent too long, or at shutdown. After cancellation the loop has its grace period to
    /// return before its task is aborted.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Completes when this run is cancelled (see [`LoopContext::token`]).
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Whether this run has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}
