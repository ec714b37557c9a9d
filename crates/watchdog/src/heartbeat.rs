//! The global heartbeat: every interval, a [`HealthReport`] goes to the embedding service's
//! [`HeartbeatSink`], independently of the loops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::clock::millis;
use crate::runner::panic_message;
use crate::supervisor::Shared;
use crate::{HealthReport, SinkError};

/// Where the heartbeat delivers its reports: implemented by the embedding service, for example
/// by writing a row to a `worker_heartbeats` table with the status of every loop.
///
/// Each call runs in its own task under the heartbeat's sink timeout: a sink that hangs is
/// abandoned (and its task aborted) and one that panics is logged; neither stops the heartbeat.
///
/// ```
/// use channel_watchdog::{async_trait, HealthReport, HeartbeatSink, SinkError};
///
/// struct LogSink;
///
/// #[async_trait]
/// impl HeartbeatSink for LogSink {
///     async fn beat(&self, report: &HealthReport) -> Result<(), SinkError> {
///         println!("beat {}: healthy = {}, {} loops", report.beat, report.healthy, report.loops.len());
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait HeartbeatSink: Send + Sync + 'static {
    /// Records one heartbeat.
    async fn beat(&self, report: &HealthReport) -> Result<(), SinkError>;
}

/// Sentinel for "no beat yet".
const NEVER: u64 = u64::MAX;

/// What the rest of the watchdog knows about the heartbeat.
#[derive(Debug)]
pub(crate) struct HeartbeatState {
    /// Watchdog-clock milliseconds at which the last beat attempt finished.
    last_beat_ms: AtomicU64,
    /// The longest gap between finished beats that still counts as fresh.
    fresh_for_ms: u64,
}

impl HeartbeatState {
    pub(crate) fn new(interval: Duration, sink_timeout: Duration, slack: Duration) -> Self {
        Self {
            last_beat_ms: AtomicU64::new(NEVER),
            fresh_for_ms: millis(interval + sink_timeout + slack),
        }
    }

    /// Milliseconds since the last beat attempt finished, if any.
    pub(crate) fn age_ms(&self, now_ms: u64) -> Option<u64> {
        match self.last_beat_ms.load(Ordering::Relaxed) {
            NEVER => None,
            at => Some(now_ms.saturating_sub(at)),
        }
    }

    /// Whether the heartbeat task is alive: its last beat attempt (successful or not: a failing
    /// sink is the sink's problem, not the process's) finished within one interval plus the
    /// sink timeout plus one check interval.
    pub(crate) fn is_fresh(&self, now_ms: u64) -> bool {
        self.age_ms(now_ms).is_some_and(|age| age <= self.fresh_for_ms)
    }

    fn record(&self, now_ms: u64) {
        self.last_beat_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// The outcome of one beat, as logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BeatOutcome {
    Delivered,
    NoSink,
    SinkError,
    TimedOut,
    Panicked,
}

impl BeatOutcome {
    fn label(self) -> &'static str {
        match self {
            BeatOutcome::Delivered => "delivered",
            BeatOutcome::NoSink => "no_sink",
            BeatOutcome::SinkError => "sink_error",
            BeatOutcome::TimedOut => "timed_out",
            BeatOutcome::Panicked => "panicked",
        }
    }
}

/// The heartbeat task: beats every `interval` until `stop` is cancelled.
pub(crate) async fn run(
    shared: Arc<Shared>,
    sink: Option<Arc<dyn HeartbeatSink>>,
    interval: Duration,
    sink_timeout: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut beat: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        beat += 1;
        let report = shared.health_report(beat);
        let outcome = match &sink {
            None => BeatOutcome::NoSink,
            Some(sink) => deliver(sink.clone(), report, sink_timeout).await,
        };
        shared.heartbeat.record(shared.clock.now_ms());
        metrics::counter!("watchdog_heartbeats_total", "outcome" => outcome.label()).increment(1);
        tracing::debug!(beat, outcome = outcome.label(), "heartbeat");
    }
}

/// Hands `report` to `sink` in its own task, under `timeout`.
async fn deliver(
    sink: Arc<dyn HeartbeatSink>,
    report: HealthReport,
    timeout: Duration,
) -> BeatOutcome {
    let mut call = tokio::spawn(async move { sink.beat(&report).await });
    match tokio::time::timeout(timeout, &mut call).await {
        Ok(Ok(Ok(()))) => BeatOutcome::Delivered,
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "heartbeat sink failed");
            BeatOutcome::SinkError
        }
        Ok(Err(error)) => {
            let message = if error.is_panic() {
                panic_message(&*error.into_panic())
            } else {
                error.to_string()
            };
            tracing::error!(panic = %message, "heartbeat sink panicked");
            BeatOutcome::Panicked
        }
        Err(_) => {
            call.abort();
            tracing::warn!(?timeout, "heartbeat sink timed out; abandoned this beat");
            BeatOutcome::TimedOut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_follows_the_last_beat() {
        let hb = HeartbeatState::new(
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(1),
        );
        assert!(!hb.is_fresh(0), "never beaten is not fresh");
        hb.record(1_000);
        assert!(hb.is_fresh(27_000));
        assert!(!hb.is_fresh(27_001));
    }
}
