//! The per-loop supervisor task: starts runs, notices how they end, applies the restart policy,
//! intensity and backoff, and stops the loop at shutdown.
//!
//! A runner costs nothing while its loop runs: it waits on the loop's task, on the silence token
//! the monitor cancels, and on the shutdown token. Timers exist only during a grace period or a
//! backoff.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::context::Beacon;
use crate::loop_spec::EscalationFn;
use crate::policy::Ending;
use crate::registry::{LoopEntry, lock};
use crate::shutdown::ShutdownOutcome;
use crate::{Escalation, FailureKind, LastError, LoopContext, LoopResult, LoopState, Timestamp};

/// How one run ended.
enum RunEnd {
    /// Returned `Ok(())`.
    Returned,
    /// Error, panic or silence.
    Abnormal(FailureKind, String),
    /// Stopped by shutdown.
    Stopped(ShutdownOutcome),
}

/// Supervises `entry` until it is stopped, completes, exits or fails.
pub(crate) async fn supervise(entry: Arc<LoopEntry>, fallback_escalation: Option<EscalationFn>) {
    let span = tracing::info_span!("watchdog_loop", r#loop = %entry.name);
    async move {
        loop {
            let end = run_once(&entry).await;
            let (kind, message) = match end {
                RunEnd::Stopped(outcome) => {
                    let mut st = lock(&entry.state);
                    st.shutdown_outcome = Some(outcome);
                    st.set_phase(LoopState::Stopped);
                    tracing::info!(r#loop = %entry.name, ?outcome, "loop stopped");
                    return;
                }
                RunEnd::Returned => {
                    if !entry.settings.policy.restarts(Ending::Returned) {
                        lock(&entry.state).set_phase(LoopState::Completed);
                        tracing::info!(r#loop = %entry.name, "loop completed");
                        return;
                    }
                    (
                        FailureKind::Returned,
                        "a permanent loop returned Ok(())".to_owned(),
                    )
                }
                RunEnd::Abnormal(kind, message) => (kind, message),
            };
            let restart = entry.settings.policy.restarts(Ending::Abnormal);
            let decision = {
                let mut st = lock(&entry.state);
                st.last_error = Some(LastError {
                    kind,
                    message: message.clone(),
                    at: Timestamp::now(),
                });
                if !restart && kind != FailureKind::Returned {
                    st.set_phase(LoopState::Exited);
                    None
                } else {
                    let now = Instant::now();
                    let since = st.running_since.take();
                    st.history.forget_if_stable(since, now);
                    match st.history.try_restart(now) {
                        Some(attempt) => {
                            st.restarts_total += 1;
                            st.set_phase(LoopState::Backoff);
                            Some(Ok(attempt))
                        }
                        None => {
                            st.set_phase(LoopState::Failed);
                            Some(Err(st.history.in_window(now)))
                        }
                    }
                }
            };
            match decision {
                None => {
                    tracing::warn!(r#loop = %entry.name, kind = ?kind, error = %message, "temporary loop ended abnormally; not restarted");
                    return;
                }
                Some(Err(restarts_in_window)) => {
                    fail(&entry, fallback_escalation.as_ref(), restarts_in_window, message);
                    return;
                }
                Some(Ok(attempt)) => {
                    metrics::counter!(
                        "watchdog_loop_restarts_total",
                        "loop" => entry.name.clone(),
                        "reason" => kind_label(kind),
                    )
                    .increment(1);
                    let delay = entry.settings.backoff.delay(attempt);
                    tracing::warn!(r#loop = %entry.name, kind = ?kind, error = %message, ?delay, "loop ended; restarting after backoff");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = entry.stop.cancelled() => {
                            let mut st = lock(&entry.state);
                            st.shutdown_outcome = Some(ShutdownOutcome::NotRunning);
                            st.set_phase(LoopState::Stopped);
                            return;
                        }
                    }
                }
            }
        }
    }
    .instrument(span)
    .await;
}

/// Starts one run and waits for it to end.
async fn run_once(entry: &LoopEntry) -> RunEnd {
    if entry.stop.is_cancelled() {
        return RunEnd::Stopped(ShutdownOutcome::NotRunning);
    }
    let beacon = Arc::new(Beacon::new(entry.clock.now_ms()));
    let token = CancellationToken::new();
    let silenced = CancellationToken::new();
    let run = {
        let mut st = lock(&entry.state);
        st.beacon = Some(beacon.clone());
        st.set_phase(LoopState::Starting);
        st.runs_started += 1;
        st.runs_started - 1
    };
    let ctx = LoopContext::new(beacon, entry.clock.clone(), token.clone(), entry.name.clone(), run);
    let future = match catch_unwind(AssertUnwindSafe(|| (entry.factory)(ctx))) {
        Ok(future) => future,
        Err(panic) => {
            return RunEnd::Abnormal(
                FailureKind::Panic,
                format!("the loop's factory panicked: {}", panic_message(&*panic)),
            );
        }
    };
    let span = tracing::info_span!("watchdog_run", r#loop = %entry.name, run);
    let mut task = tokio::spawn(future.instrument(span));
    {
        let mut st = lock(&entry.state);
        st.watch = Some(silenced.clone());
        st.task = Some(task.abort_handle());
        st.running_since = Some(Instant::now());
        st.set_phase(LoopState::Running);
    }

    let end = tokio::select! {
        result = &mut task => Some(result),
        () = silenced.cancelled() => None,
        () = entry.stop.cancelled() => {
            let outcome = stop_run(entry, &mut task, &token).await;
            return RunEnd::Stopped(outcome);
        }
    };
    lock(&entry.state).watch = None;

    let Some(result) = end else {
        // Silent: cancel, give it its grace, abort.
        let silence = entry.settings.max_silence;
        tracing::warn!(r#loop = %entry.name, ?silence, "loop silent for longer than max_silence; cancelling it");
        token.cancel();
        lock(&entry.state).set_phase(LoopState::Restarting);
        let grace_end = Instant::now() + entry.settings.grace;
        let (ended, stopped) = wait_for_end(entry, &mut task, grace_end).await;
        if !ended {
            task.abort();
            tracing::warn!(r#loop = %entry.name, grace = ?entry.settings.grace, "silent loop ignored its cancellation; aborted");
        }
        lock(&entry.state).task = None;
        if stopped {
            return RunEnd::Stopped(if ended {
                ShutdownOutcome::Graceful
            } else {
                ShutdownOutcome::Aborted
            });
        }
        return RunEnd::Abnormal(
            FailureKind::Silence,
            format!("no ping for longer than max_silence ({silence:?})"),
        );
    };
    token.cancel();
    lock(&entry.state).task = None;
    match result {
        Ok(Ok(())) => RunEnd::Returned,
        Ok(Err(error)) => RunEnd::Abnormal(FailureKind::Error, error.to_string()),
        Err(error) => join_failure(error),
    }
}

/// Turns a failed join into a run ending.
fn join_failure(error: JoinError) -> RunEnd {
    if error.is_panic() {
        let panic = error.into_panic();
        RunEnd::Abnormal(FailureKind::Panic, format!("panicked: {}", panic_message(&*panic)))
    } else {
        RunEnd::Abnormal(FailureKind::Error, format!("task ended: {error}"))
    }
}

/// Stops a running run for shutdown: cancel, wait for its grace (bounded by the shutdown
/// deadline), abort.
async fn stop_run(
    entry: &LoopEntry,
    task: &mut JoinHandle<LoopResult>,
    token: &CancellationToken,
) -> ShutdownOutcome {
    token.cancel();
    let limit = {
        let mut st = lock(&entry.state);
        st.watch = None;
        st.set_phase(LoopState::Stopping);
        let grace_end = Instant::now() + entry.settings.grace;
        st.stop_deadline.map_or(grace_end, |d| d.min(grace_end))
    };
    let outcome = match tokio::time::timeout_at(limit, &mut *task).await {
        Ok(_) => ShutdownOutcome::Graceful,
        Err(_) => {
            task.abort();
            tracing::warn!(r#loop = %entry.name, "loop ignored its cancellation at shutdown; aborted");
            ShutdownOutcome::Aborted
        }
    };
    lock(&entry.state).task = None;
    outcome
}

/// Waits for a cancelled run to end until `grace_end`, or the shutdown deadline if shutdown
/// begins meanwhile. Returns (ended, stopped by shutdown).
async fn wait_for_end(
    entry: &LoopEntry,
    task: &mut JoinHandle<LoopResult>,
    grace_end: Instant,
) -> (bool, bool) {
    let mut limit = grace_end;
    let mut stopped = false;
    loop {
        tokio::select! {
            result = tokio::time::timeout_at(limit, &mut *task) => return (result.is_ok(), stopped),
            () = entry.stop.cancelled(), if !stopped => {
                stopped = true;
                let mut st = lock(&entry.state);
                st.set_phase(LoopState::Stopping);
                if let Some(deadline) = st.stop_deadline {
                    limit = limit.min(deadline);
                }
            }
        }
    }
}

/// Marks the loop given up on: metrics, log, escalation callback.
fn fail(
    entry: &LoopEntry,
    fallback: Option<&EscalationFn>,
    restarts_in_window: u32,
    last_error: String,
) {
    let intensity = lock(&entry.state).history.limits();
    metrics::counter!("watchdog_loop_failures_total", "loop" => entry.name.clone()).increment(1);
    tracing::error!(
        r#loop = %entry.name,
        restarts_in_window,
        max_restarts = intensity.max_restarts(),
        window = ?intensity.window(),
        error = %last_error,
        "loop exceeded its restart intensity; it is Failed and will not be restarted"
    );
    let Some(callback) = entry.escalation.as_ref().or(fallback) else {
        return;
    };
    let escalation = Escalation {
        name: entry.name.to_string(),
        critical: entry.settings.critical,
        restarts_in_window,
        intensity,
        last_error,
    };
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| callback(&escalation))) {
        tracing::error!(
            r#loop = %entry.name,
            panic = %panic_message(&*panic),
            "the escalation callback panicked"
        );
    }
}

fn kind_label(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Error => "error",
        FailureKind::Panic => "panic",
        FailureKind::Silence => "silence",
        FailureKind::Returned => "returned",
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}
