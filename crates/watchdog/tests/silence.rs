//! A loop that stops pinging is found silent within `max_silence + check_interval` and restarted.

use std::time::Duration;

use channel_watchdog::{FailureKind, LoopSpec, LoopState, Watchdog};
use tokio::sync::mpsc;
use tokio::time::Instant;

type Token = channel_watchdog::CancellationToken;

const MAX_SILENCE: Duration = Duration::from_secs(10);
const CHECK: Duration = Duration::from_secs(1);

/// Registers a loop that waits `ping_after`, pings once, then sleeps forever (ignoring its
/// token), and returns a receiver of (run, ping instant, token) per run.
fn hung_loop(
    watchdog: &Watchdog,
    name: &str,
    ping_after: Duration,
) -> mpsc::UnboundedReceiver<(u64, Instant, Token)> {
    let (tx, rx) = mpsc::unbounded_channel();
    watchdog
        .register(
            LoopSpec::new(name, move |ctx| {
                let tx = tx.clone();
                async move {
                    tokio::time::sleep(ping_after).await;
                    ctx.ping();
                    let _ = tx.send((ctx.run(), Instant::now(), ctx.token().clone()));
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
            .max_silence(MAX_SILENCE)
            .grace(Duration::from_secs(2)),
        )
        .unwrap();
    rx
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_sleeps_forever_is_restarted_within_max_silence_plus_one_check() {
    let watchdog = Watchdog::builder().check_interval(CHECK).build().unwrap();
    let mut runs = hung_loop(&watchdog, "sleeper", Duration::ZERO);

    let (run, pinged_at, token) = runs.recv().await.unwrap();
    assert_eq!(run, 0);
    token.cancelled().await;
    let detection = pinged_at.elapsed();
    assert!(
        detection <= MAX_SILENCE + CHECK,
        "found silent after {detection:?}, more than max_silence + check_interval"
    );
    assert!(detection > MAX_SILENCE - CHECK, "found silent too early: {detection:?}");

    // The factory is called again: grace (2 s) + backoff (at most 1 s) later.
    let (run, restarted_at, _) = tokio::time::timeout(Duration::from_secs(4), runs.recv())
        .await
        .expect("the factory was not called again")
        .unwrap();
    assert_eq!(run, 1);
    assert!(restarted_at - pinged_at <= MAX_SILENCE + CHECK + Duration::from_secs(3));

    let status = watchdog.loop_status("sleeper").unwrap();
    assert_eq!(status.restarts_total, 1);
    assert_eq!(status.run, 1);
    assert_eq!(status.state, LoopState::Running);
    assert_eq!(status.last_error.unwrap().kind, FailureKind::Silence);
}

#[tokio::test(start_paused = true)]
async fn detection_bound_holds_wherever_the_last_ping_falls_between_checks() {
    let watchdog = Watchdog::builder().check_interval(CHECK).build().unwrap();
    let offsets = [0, 1, 250, 500, 999, 1000, 1001, 3700];
    let mut receivers = Vec::new();
    for ms in offsets {
        receivers
            .push((ms, hung_loop(&watchdog, &format!("hung-{ms}"), Duration::from_millis(ms))));
    }
    for (ms, runs) in &mut receivers {
        let (_, pinged_at, token) = runs.recv().await.unwrap();
        token.cancelled().await;
        let detection = pinged_at.elapsed();
        assert!(
            detection <= MAX_SILENCE + CHECK && detection > MAX_SILENCE - CHECK,
            "ping at +{ms} ms: found silent after {detection:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_keeps_pinging_is_never_restarted() {
    let watchdog = Watchdog::builder().check_interval(CHECK).build().unwrap();
    let handle = watchdog
        .register(
            LoopSpec::new("steady", |ctx| async move {
                loop {
                    ctx.ping();
                    tokio::time::sleep(Duration::from_millis(9_900)).await;
                }
            })
            .max_silence(MAX_SILENCE),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let status = handle.status();
    assert_eq!(status.restarts_total, 0);
    assert_eq!(status.state, LoopState::Running);
    assert!(status.last_ping_age_ms.unwrap() <= 10_000);
}

#[tokio::test(start_paused = true)]
async fn pings_of_a_replaced_run_do_not_count_for_the_new_one() {
    let watchdog = Watchdog::builder().check_interval(CHECK).build().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    watchdog
        .register(
            LoopSpec::new("zombie", move |ctx| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((ctx.run(), Instant::now()));
                    if ctx.run() == 0 {
                        // Leaves behind a task that keeps pinging through run 0's context, then
                        // fails, so run 0 is replaced.
                        let stale = ctx.clone();
                        tokio::spawn(async move {
                            loop {
                                stale.ping();
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        });
                        return Err("run 0 fails".into());
                    }
                    // Run 1 hangs without pinging.
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
            .max_silence(MAX_SILENCE)
            .grace(Duration::from_secs(1)),
        )
        .unwrap();
    assert_eq!(rx.recv().await.unwrap().0, 0);
    let (run, started) = rx.recv().await.unwrap();
    assert_eq!(run, 1);
    // Run 1 is found silent despite run 0's pinger, and replaced by run 2.
    let (run, restarted) = rx.recv().await.unwrap();
    assert_eq!(run, 2);
    assert!(
        restarted - started
            <= MAX_SILENCE + CHECK + Duration::from_secs(1) + Duration::from_secs(2)
    );
    let status = watchdog.loop_status("zombie").unwrap();
    assert_eq!(status.restarts_total, 2);
    assert_eq!(status.last_error.unwrap().kind, FailureKind::Silence);
}
