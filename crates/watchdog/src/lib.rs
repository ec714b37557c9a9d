//! Supervisor for named async loops on tokio: silence detection, Erlang/OTP-style restarts, a
//! global heartbeat, runtime-stall detection and the systemd watchdog.
//!
//! A long-running service (mail, chat, queue workers) is mostly loops: an IMAP IDLE loop per
//! account, a Telegram update loop, an outbox sender. When one of them hangs on a dead socket or
//! dies on a panic, nothing else notices. A [`Watchdog`] notices:
//!
//! * every loop is registered with a name, a factory that builds its future from a
//!   [`LoopContext`], a [`RestartPolicy`], a `max_silence` and a grace period ([`LoopSpec`]);
//! * the loop calls [`LoopContext::ping`] once per cycle (one atomic store) and watches
//!   [`LoopContext::cancelled`];
//! * a loop silent for longer than `max_silence`, or whose task ends by error, panic or (for
//!   permanent loops) return, is restarted: its token is cancelled, it gets its grace, it is
//!   aborted, and after a jittered exponential [`Backoff`] the factory builds a fresh run;
//! * too many restarts in a window ([`Intensity`]) leave the loop [`LoopState::Failed`]:
//!   reported unhealthy, no further restarts, and an escalation callback runs;
//! * a global heartbeat hands a [`HealthReport`] to your [`HeartbeatSink`] on its own schedule,
//!   whatever the loops do;
//! * an optional [`StallDetector`] on its own OS thread notices when the tokio runtime itself
//!   stops running tasks (a blocking call on a worker) and reports it or aborts the process;
//! * with the `systemd` feature, `READY=1`, `WATCHDOG=1` (only while the heartbeat is fresh and
//!   no critical loop failed) and `STOPPING=1` are sent;
//! * [`Watchdog::shutdown`] stops all loops, newest first, within a deadline.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use channel_watchdog::{
//!     async_trait, HealthReport, HeartbeatSink, LoopSpec, SinkError, Watchdog,
//! };
//!
//! /// Where heartbeats go: in a real service, a row in a `worker_heartbeats` table.
//! struct PrintSink;
//!
//! #[async_trait]
//! impl HeartbeatSink for PrintSink {
//!     async fn beat(&self, report: &HealthReport) -> Result<(), SinkError> {
//!         println!("heartbeat {}: healthy = {}", report.beat, report.healthy);
//!         Ok(())
//!     }
//! }
//!
//! // The paused clock makes the example's 20 seconds pass instantly; a service uses
//! // #[tokio::main].
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let watchdog = Watchdog::builder()
//!         .check_interval(Duration::from_secs(1))
//!         .heartbeat(Duration::from_secs(15))
//!         .heartbeat_sink(PrintSink)
//!         .build()?;
//!
//!     // A well-behaved loop: pings every cycle and returns when cancelled.
//!     watchdog.register(
//!         LoopSpec::new("imap-idle", |ctx| async move {
//!             loop {
//!                 ctx.ping();
//!                 tokio::select! {
//!                     _ = ctx.cancelled() => return Ok(()),
//!                     _ = tokio::time::sleep(Duration::from_secs(5)) => { /* one cycle */ }
//!                 }
//!             }
//!         })
//!         .max_silence(Duration::from_secs(30))
//!         .critical(true),
//!     )?;
//!
//!     // A loop that hangs after its first ping and ignores cancellation.
//!     let hung = watchdog.register(
//!         LoopSpec::new("telegram-updates", |ctx| async move {
//!             ctx.ping();
//!             std::future::pending::<()>().await;
//!             Ok(())
//!         })
//!         .max_silence(Duration::from_secs(10))
//!         .grace(Duration::from_secs(2)),
//!     )?;
//!
//!     // Found silent after 10-11 s, aborted after its 2 s grace, restarted after backoff.
//!     tokio::time::sleep(Duration::from_secs(20)).await;
//!     assert_eq!(hung.status().restarts_total, 1);
//!     for loop_status in watchdog.status() {
//!         println!("{}: {:?}, run {}", loop_status.name, loop_status.state, loop_status.run);
//!     }
//!
//!     let report = watchdog.shutdown(Duration::from_secs(10)).await;
//!     assert!(report.within_deadline());
//!     Ok(())
//! }
//! ```
//!
//! # Silence detection
//!
//! One monitor task wakes every check interval (default 1 s), advances a coarse clock and scans
//! every loop's last ping; there is no timer per loop, so thousands of idle loops cost little.
//! [`LoopContext::ping`] copies the coarse clock into the loop's slot: a relaxed load and store,
//! no lock, no allocation, no system call. A loop is found silent at most
//! `max_silence + check_interval` after its last ping (and, because pings are stamped with the
//! time of the latest check, not before `max_silence - check_interval`). Time is read through
//! `tokio::time::Instant`, so tests on tokio's paused clock are deterministic.
//!
//! # Restarts
//!
//! Each loop runs in its own task, so a panic is caught ([`tokio::task::JoinError::is_panic`])
//! and restarted like an error; a panicking factory is too. What restarts depends on the
//! [`RestartPolicy`] (OTP's permanent / transient / temporary). The n-th consecutive restart
//! waits a random duration between half and all of `min(60 s, 1 s × 2ⁿ)`. More than
//! [`Intensity::max_restarts`] restarts within [`Intensity::window`] make the loop
//! [`LoopState::Failed`]; once a run lasts [`Intensity::stable_period`], the count starts over.
//!
//! # Runtime stalls
//!
//! Silence detection runs on the runtime; if the runtime itself is stuck (a blocking call on a
//! worker thread), nothing on it runs. The [`StallDetector`] (enable it with
//! [`WatchdogBuilder::stall_detection`]) lives on its own OS thread and checks that the runtime
//! still runs a freshly spawned probe task within a bound; see [`stall`] for exactly what that
//! catches on current-thread and multi-thread runtimes.
//!
//! # Observability
//!
//! Each loop's runner and each run are instrumented with `tracing` spans (`watchdog_loop` and
//! `watchdog_run`, both with a `loop` field; the run's span also has `run`), and the
//! watchdog's own events about a loop carry the `loop` field too, so they stay attributable when
//! a filter hides the INFO-level spans. Through the `metrics` facade:
//!
//! | metric                              | kind    | labels             |
//! |-------------------------------------|---------|--------------------|
//! | `watchdog_loop_restarts_total`      | counter | `loop`, `reason`   |
//! | `watchdog_loop_failures_total`      | counter | `loop`             |
//! | `watchdog_loop_ping_age_seconds`    | gauge   | `loop`             |
//! | `watchdog_heartbeats_total`         | counter | `outcome`          |
//! | `watchdog_runtime_stalls_total`     | counter |                    |
//! | `watchdog_timeouts_total`           | counter | `operation`        |
//!
//! [`Watchdog::status`] and [`Watchdog::health`] return serde-serializable reports for health
//! endpoints.
//!
//! # Features
//!
//! * `systemd`: notify systemd through the `sd-notify` crate (see `WatchdogBuilder::systemd`, present with the feature).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod context;
mod error;
mod heartbeat;
mod intensity;
mod loop_spec;
mod monitor;
mod policy;
mod registry;
mod runner;
mod shutdown;
pub mod stall;
mod status;
mod supervisor;
#[cfg(feature = "systemd")]
mod systemd;
mod timeout;
mod timestamp;

pub use async_trait::async_trait;
pub use context::LoopContext;
pub use error::{LoopError, LoopResult, SinkError, WatchdogError};
pub use heartbeat::HeartbeatSink;
pub use intensity::Intensity;
pub use loop_spec::{Escalation, LoopFuture, LoopSpec};
pub use policy::{Backoff, RestartPolicy};
pub use shutdown::{LoopShutdown, ShutdownOutcome, ShutdownReport};
pub use stall::{StallAction, StallConfig, StallDetector, StallEvent};
pub use status::{FailureKind, HealthReport, LastError, LoopState, LoopStatus};
pub use supervisor::{LoopHandle, Watchdog, WatchdogBuilder};
pub use timeout::{TimeoutError, Timeouts, timeout};
pub use timestamp::Timestamp;
pub use tokio_util::sync::CancellationToken;

/// The README's examples, compiled and run as doctests so they stay correct.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
