//! What the watchdog reports: per-loop [`LoopStatus`] and the [`HealthReport`] handed to
//! health endpoints and heartbeat sinks. All of it serializes with serde.

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::{RestartPolicy, Timestamp};

/// Serializes a duration as whole milliseconds.
pub(crate) fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(crate::clock::millis(*d))
}

/// Where a loop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoopState {
    /// Its factory is building a run.
    Starting,
    /// A run is in progress and watched for silence.
    Running,
    /// The run was found silent and cancelled; it is within its grace period.
    Restarting,
    /// Waiting out the backoff delay before the next run.
    Backoff,
    /// Exceeded its restart intensity: no further restarts. Reported unhealthy.
    Failed,
    /// Being stopped by shutdown.
    Stopping,
    /// Stopped by shutdown.
    Stopped,
    /// Returned `Ok(())` and its policy does not restart it.
    Completed,
    /// Ended abnormally and its policy ([`RestartPolicy::Temporary`]) does not restart it.
    Exited,
}

impl LoopState {
    /// Whether this state counts as healthy (everything but [`LoopState::Failed`]).
    pub fn is_healthy(self) -> bool {
        self != LoopState::Failed
    }
}

/// Why a run of a loop ended abnormally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The loop returned an error.
    Error,
    /// The loop's task (or its factory) panicked.
    Panic,
    /// The loop did not ping within its `max_silence`.
    Silence,
    /// A permanent loop returned `Ok(())`.
    Returned,
}

/// The last abnormal end of a loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LastError {
    /// What kind of ending it was.
    pub kind: FailureKind,
    /// The error's or panic's message.
    pub message: String,
    /// When it happened (wall clock).
    pub at: Timestamp,
}

/// The state of one loop, as [`Watchdog::status`](crate::Watchdog::status) reports it.
///
/// Serialized field names: `name`, `state`, `since`, `healthy`, `critical`, `policy`, `run`,
/// `last_ping_age_ms`, `max_silence_ms`, `restarts_total`, `restarts_in_window`, `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LoopStatus {
    /// The loop's name.
    pub name: String,
    /// Its state.
    pub state: LoopState,
    /// When it entered that state (wall clock).
    pub since: Timestamp,
    /// False when the loop is [`Failed`](LoopState::Failed).
    pub healthy: bool,
    /// Whether it was registered as critical.
    pub critical: bool,
    /// Its restart policy.
    pub policy: RestartPolicy,
    /// The number of the current (or last) run: 0 for the first.
    pub run: u64,
    /// Milliseconds since the last ping of the current (or last) run, with a resolution of one
    /// check interval. `None` before the first run starts.
    pub last_ping_age_ms: Option<u64>,
    /// Its maximum silence.
    #[serde(rename = "max_silence_ms", serialize_with = "as_millis")]
    pub max_silence: Duration,
    /// Restarts since registration.
    pub restarts_total: u64,
    /// Restarts inside the current intensity window.
    pub restarts_in_window: u32,
    /// The last abnormal end, if any.
    pub last_error: Option<LastError>,
}

/// Everything the watchdog knows, as one serializable value: what a health endpoint returns and
/// what the heartbeat hands to its [`HeartbeatSink`](crate::HeartbeatSink).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// When the report was made (wall clock).
    pub generated_at: Timestamp,
    /// Milliseconds since the watchdog was built.
    pub uptime_ms: u64,
    /// The heartbeat's sequence number (0 for reports not made by the heartbeat).
    pub beat: u64,
    /// False when any loop is [`Failed`](LoopState::Failed).
    pub healthy: bool,
    /// False when any critical loop is [`Failed`](LoopState::Failed).
    pub critical_ok: bool,
    /// Milliseconds since the heartbeat last finished a beat; `None` before the first.
    pub heartbeat_age_ms: Option<u64>,
    /// Every loop, in registration order.
    pub loops: Vec<LoopStatus>,
}

impl HealthReport {
    pub(crate) fn new(loops: Vec<LoopStatus>, uptime: Duration, beat: u64) -> Self {
        let healthy = loops.iter().all(|l| l.healthy);
        let critical_ok = loops.iter().all(|l| l.healthy || !l.critical);
        Self {
            generated_at: Timestamp::now(),
            uptime_ms: crate::clock::millis(uptime),
            beat,
            healthy,
            critical_ok,
            heartbeat_age_ms: None,
            loops,
        }
    }
}
