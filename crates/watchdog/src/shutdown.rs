//! Graceful shutdown of all loops, newest first, within a deadline: [`ShutdownReport`].

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::LoopState;
use crate::registry::{LoopEntry, lock};
use crate::status::as_millis;

/// How one loop ended at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ShutdownOutcome {
    /// Its run returned after its token was cancelled, within its grace.
    Graceful,
    /// Its run ignored cancellation and was aborted when its grace or the deadline ran out.
    Aborted,
    /// No run was in progress (it had completed, exited, failed, or was in backoff).
    NotRunning,
}

/// One loop's line in a [`ShutdownReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LoopShutdown {
    /// The loop's name.
    pub name: String,
    /// How it ended.
    pub outcome: ShutdownOutcome,
    /// Its state before shutdown reached it.
    pub state_before: LoopState,
}

/// What [`Watchdog::shutdown`](crate::Watchdog::shutdown) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// How long the shutdown took.
    #[serde(rename = "elapsed_ms", serialize_with = "as_millis")]
    pub elapsed: Duration,
    /// The deadline it was given.
    #[serde(rename = "deadline_ms", serialize_with = "as_millis")]
    pub deadline: Duration,
    /// The loops, in the order they were stopped (reverse registration order).
    pub loops: Vec<LoopShutdown>,
}

impl ShutdownReport {
    /// Whether every loop that was running ended by itself after cancellation.
    pub fn all_graceful(&self) -> bool {
        self.loops.iter().all(|l| l.outcome != ShutdownOutcome::Aborted)
    }

    /// Whether the shutdown finished within its deadline.
    pub fn within_deadline(&self) -> bool {
        self.elapsed <= self.deadline
    }
}

/// Stops `entries` one by one, last registered first, so that every loop is gone by `end`.
pub(crate) async fn stop_loops(entries: &[Arc<LoopEntry>], end: Instant) -> Vec<LoopShutdown> {
    let mut report = Vec::with_capacity(entries.len());
    for entry in entries.iter().rev() {
        let state_before = {
            let mut st = lock(&entry.state);
            st.stop_deadline = Some(end);
            st.phase
        };
        entry.stop.cancel();
        let runner = lock(&entry.runner).take();
        if let Some(mut runner) = runner
            && tokio::time::timeout_at(end, &mut runner).await.is_err()
        {
            // The runner did not finish by the deadline (it aborts at the deadline itself, so
            // this is a photo finish or a starved runtime): enforce the deadline from here.
            runner.abort();
            let mut st = lock(&entry.state);
            if let Some(task) = st.task.take() {
                task.abort();
            }
            st.shutdown_outcome = Some(ShutdownOutcome::Aborted);
            st.set_phase(LoopState::Stopped);
        }
        let outcome = lock(&entry.state).shutdown_outcome.unwrap_or(ShutdownOutcome::NotRunning);
        report.push(LoopShutdown { name: entry.name.to_string(), outcome, state_before });
    }
    report
}
