//! Graceful shutdown: newest loop first, within the deadline, even with a loop that ignores its
//! cancellation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel_watchdog::{LoopSpec, LoopState, ShutdownOutcome, Watchdog, WatchdogError};
use tokio::time::Instant;

/// A loop that pings every second and returns when cancelled, logging its stop.
fn polite(name: &'static str, stops: Arc<Mutex<Vec<&'static str>>>) -> LoopSpec {
    LoopSpec::new(name, move |ctx| {
        let stops = stops.clone();
        async move {
            loop {
                ctx.ping();
                tokio::select! {
                    () = ctx.cancelled() => {
                        stops.lock().unwrap().push(name);
                        return Ok(());
                    }
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    })
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_within_its_deadline_with_a_hung_loop_present() {
    let watchdog = Watchdog::builder().build().unwrap();
    let stops = Arc::default();
    let dropped = Arc::new(AtomicBool::new(false));
    watchdog.register(polite("first", Arc::clone(&stops))).unwrap();
    let flag = dropped.clone();
    watchdog
        .register(
            LoopSpec::new("hung", move |ctx| {
                let guard = DropFlag(flag.clone());
                async move {
                    let _guard = guard;
                    ctx.ping();
                    // Ignores its cancellation forever.
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
            // A grace far longer than the deadline: the deadline must win.
            .grace(Duration::from_secs(3600))
            .max_silence(Duration::from_secs(3600)),
        )
        .unwrap();
    watchdog.register(polite("last", Arc::clone(&stops))).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let deadline = Duration::from_secs(10);
    let started = Instant::now();
    let report = watchdog.shutdown(deadline).await;
    let took = started.elapsed();

    assert!(took <= deadline, "shutdown took {took:?}");
    assert!(report.within_deadline());
    assert!(!report.all_graceful());
    let outcomes: Vec<(&str, ShutdownOutcome)> =
        report.loops.iter().map(|l| (l.name.as_str(), l.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            ("last", ShutdownOutcome::Graceful),
            ("hung", ShutdownOutcome::Aborted),
            // The hung loop spent the whole deadline: the remaining loop is aborted at once.
            ("first", ShutdownOutcome::Aborted),
        ]
    );
    tokio::task::yield_now().await;
    assert!(dropped.load(Ordering::SeqCst), "the hung loop is still alive");
    for status in watchdog.status() {
        assert_eq!(status.state, LoopState::Stopped, "{}", status.name);
    }
    assert_eq!(*stops.lock().unwrap(), ["last"]);
}

#[tokio::test(start_paused = true)]
async fn a_loop_ignoring_cancellation_gets_its_grace_when_the_deadline_allows() {
    let watchdog = Watchdog::builder().build().unwrap();
    watchdog
        .register(
            LoopSpec::new("stubborn", |_ctx| async {
                std::future::pending::<()>().await;
                Ok(())
            })
            .grace(Duration::from_secs(2)),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let report = watchdog.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.elapsed, Duration::from_secs(2));
    assert_eq!(report.loops[0].outcome, ShutdownOutcome::Aborted);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_loops_in_reverse_registration_order() {
    let watchdog = Watchdog::builder().build().unwrap();
    let stops = Arc::new(Mutex::new(Vec::new()));
    for name in ["a", "b", "c", "d"] {
        watchdog.register(polite(name, stops.clone())).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = watchdog.shutdown(Duration::from_secs(5)).await;
    assert!(report.all_graceful());
    assert_eq!(*stops.lock().unwrap(), ["d", "c", "b", "a"]);
    let order: Vec<&str> = report.loops.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(order, ["d", "c", "b", "a"]);
}

#[tokio::test(start_paused = true)]
async fn a_loop_waiting_in_backoff_is_stopped_at_once_and_not_restarted() {
    let watchdog = Watchdog::builder().build().unwrap();
    watchdog.register(LoopSpec::new("failing", |_ctx| async { Err("down".into()) })).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(watchdog.loop_status("failing").unwrap().state, LoopState::Backoff);
    let report = watchdog.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.elapsed, Duration::ZERO);
    assert_eq!(report.loops[0].outcome, ShutdownOutcome::NotRunning);
    assert_eq!(report.loops[0].state_before, LoopState::Backoff);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let status = watchdog.loop_status("failing").unwrap();
    assert_eq!(status.state, LoopState::Stopped);
    assert_eq!(status.run, 0);
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_registration_fails_and_a_second_shutdown_returns_at_once() {
    let watchdog = Watchdog::builder().build().unwrap();
    watchdog.register(polite("only", Arc::default())).unwrap();
    watchdog.shutdown(Duration::from_secs(5)).await;
    let again = watchdog.shutdown(Duration::from_secs(5)).await;
    assert_eq!(again.elapsed, Duration::ZERO);
    assert!(matches!(
        watchdog.register(polite("late", Arc::default())),
        Err(WatchdogError::ShutDown)
    ));
}
