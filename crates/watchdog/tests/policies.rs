//! Restart policies with OTP's meanings: permanent, transient, temporary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use channel_watchdog::{FailureKind, LoopResult, LoopSpec, LoopState, RestartPolicy, Watchdog};

/// Registers a loop whose every run ends with `end` (or hangs, for `None`) and returns its call
/// counter.
fn register(
    watchdog: &Watchdog,
    name: &str,
    policy: RestartPolicy,
    end: fn() -> Option<LoopResult>,
) -> Arc<AtomicU64> {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    watchdog
        .register(
            LoopSpec::new(name, move |_ctx| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    match end() {
                        Some(result) => result,
                        None => std::future::pending().await,
                    }
                }
            })
            .policy(policy)
            .max_silence(Duration::from_secs(5))
            .grace(Duration::from_secs(1)),
        )
        .unwrap();
    calls
}

fn ok() -> Option<LoopResult> {
    Some(Ok(()))
}

fn err() -> Option<LoopResult> {
    Some(Err("failed".into()))
}

fn hang() -> Option<LoopResult> {
    None
}

const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn a_transient_loop_returning_ok_is_not_restarted() {
    let watchdog = Watchdog::builder().build().unwrap();
    let calls = register(&watchdog, "t-ok", RestartPolicy::Transient, ok);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let status = watchdog.loop_status("t-ok").unwrap();
    assert_eq!(status.state, LoopState::Completed);
    assert!(status.healthy);
    assert_eq!(status.restarts_total, 0);
}

#[tokio::test(start_paused = true)]
async fn a_transient_loop_returning_an_error_is_restarted() {
    let watchdog = Watchdog::builder().build().unwrap();
    let calls = register(&watchdog, "t-err", RestartPolicy::Transient, err);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(calls.load(Ordering::SeqCst) >= 2);
    let status = watchdog.loop_status("t-err").unwrap();
    assert!(status.restarts_total >= 1);
    assert_eq!(status.last_error.unwrap().kind, FailureKind::Error);
}

#[tokio::test(start_paused = true)]
async fn a_silent_transient_loop_is_restarted() {
    let watchdog = Watchdog::builder().build().unwrap();
    let calls = register(&watchdog, "t-hang", RestartPolicy::Transient, hang);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_temporary_loop_is_never_restarted() {
    let watchdog = Watchdog::builder().build().unwrap();
    let returned = register(&watchdog, "tmp-ok", RestartPolicy::Temporary, ok);
    let failed = register(&watchdog, "tmp-err", RestartPolicy::Temporary, err);
    let hung = register(&watchdog, "tmp-hang", RestartPolicy::Temporary, hang);
    tokio::time::sleep(SETTLE).await;
    for calls in [&returned, &failed, &hung] {
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
    let state = |name: &str| watchdog.loop_status(name).unwrap();
    assert_eq!(state("tmp-ok").state, LoopState::Completed);
    assert_eq!(state("tmp-err").state, LoopState::Exited);
    assert_eq!(state("tmp-hang").state, LoopState::Exited);
    assert_eq!(state("tmp-hang").last_error.unwrap().kind, FailureKind::Silence);
    assert!(state("tmp-err").healthy);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_loop_returning_ok_is_restarted() {
    let watchdog = Watchdog::builder().build().unwrap();
    let calls = register(&watchdog, "p-ok", RestartPolicy::Permanent, ok);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(calls.load(Ordering::SeqCst) >= 2);
    let status = watchdog.loop_status("p-ok").unwrap();
    assert_eq!(status.last_error.unwrap().kind, FailureKind::Returned);
}
