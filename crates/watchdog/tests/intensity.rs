//! Restart intensity: too many restarts in the window leave a loop Failed for good; a stable run
//! resets the count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel_watchdog::{Escalation, Intensity, LoopSpec, LoopState, Watchdog};
use tokio::sync::mpsc;

#[tokio::test(start_paused = true)]
async fn exceeding_the_intensity_leaves_the_loop_failed_with_no_more_restarts() {
    let watchdog = Watchdog::builder().build().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let escalations: Arc<Mutex<Vec<Escalation>>> = Arc::default();
    let counter = calls.clone();
    let seen = escalations.clone();
    let handle = watchdog
        .register(
            LoopSpec::new("flaky", move |_ctx| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Err("connection refused".into()) }
            })
            .critical(true)
            // Default intensity: 5 restarts in 60 s. Backoff waits add up to at most
            // 1 + 2 + 4 + 8 + 16 = 31 s, inside the window.
            .on_escalation(move |e| seen.lock().unwrap().push(e.clone())),
        )
        .unwrap();

    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 6, "1 run + 5 restarts");
    let status = handle.status();
    assert_eq!(status.state, LoopState::Failed);
    assert!(!status.healthy);
    assert_eq!(status.restarts_total, 5);
    assert_eq!(status.last_error.unwrap().message, "connection refused");

    let escalations = escalations.lock().unwrap().clone();
    assert_eq!(escalations.len(), 1, "the escalation callback ran once");
    assert_eq!(escalations[0].name, "flaky");
    assert!(escalations[0].critical);
    assert_eq!(escalations[0].restarts_in_window, 5);

    let health = watchdog.health();
    assert!(!health.healthy);
    assert!(!health.critical_ok);

    // No further restarts, ever.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(handle.status().state, LoopState::Failed);
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_wide_escalation_callback_runs_for_loops_without_their_own() {
    let (tx, mut escalated) = mpsc::unbounded_channel();
    let watchdog = Watchdog::builder()
        .intensity(Intensity::new(1, Duration::from_secs(60)))
        .on_escalation(move |e| {
            let _ = tx.send(e.name.clone());
        })
        .build()
        .unwrap();
    watchdog.register(LoopSpec::new("fragile", |_ctx| async { Err("nope".into()) })).unwrap();
    let name = tokio::time::timeout(Duration::from_secs(5), escalated.recv()).await;
    assert_eq!(name.unwrap().as_deref(), Some("fragile"));
    let status = watchdog.loop_status("fragile").unwrap();
    assert_eq!(status.state, LoopState::Failed);
    assert_eq!(status.restarts_total, 1);
    // A failed loop that is not critical leaves the critical check green.
    assert!(watchdog.health().critical_ok);
}

#[tokio::test(start_paused = true)]
async fn restart_count_resets_after_a_stable_period() {
    let watchdog = Watchdog::builder().build().unwrap();
    let (tx, mut runs) = mpsc::unbounded_channel();
    // A 10-minute window, so only the stable-period reset (10 s) can bring the count down.
    let intensity =
        Intensity::new(5, Duration::from_secs(600)).stable_after(Duration::from_secs(10));
    let handle = watchdog
        .register(
            LoopSpec::new("recovering", move |ctx| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(ctx.run());
                    match ctx.run() {
                        // Three quick failures.
                        0..=2 => Err("not yet".into()),
                        // Then a run that is stable for 20 s before failing again.
                        3 => {
                            for _ in 0..20 {
                                ctx.ping();
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            Err("failed after a stable period".into())
                        }
                        _ => loop {
                            ctx.ping();
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        },
                    }
                }
            })
            .intensity(intensity),
        )
        .unwrap();

    for expected in 0..=3 {
        assert_eq!(runs.recv().await, Some(expected));
    }
    let status = handle.status();
    assert_eq!(status.restarts_total, 3);
    assert_eq!(status.restarts_in_window, 3);

    // Run 3 has been stable for 10 s: the window count is forgotten.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let status = handle.status();
    assert_eq!(status.state, LoopState::Running);
    assert_eq!(status.restarts_in_window, 0);
    assert_eq!(status.restarts_total, 3);

    // When run 3 fails, the backoff starts again from its initial delay (at most 1 s), not
    // from the fourth step (up to 8 s), and the window holds just this one restart.
    let failed_at = tokio::time::Instant::now() + Duration::from_secs(9);
    assert_eq!(runs.recv().await, Some(4));
    assert!(tokio::time::Instant::now() - failed_at <= Duration::from_secs(1));
    let status = handle.status();
    assert_eq!(status.restarts_total, 4);
    assert_eq!(status.restarts_in_window, 1);
}
