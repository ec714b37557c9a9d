//! A panic in a loop (or in its factory) restarts the loop and harms nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use channel_watchdog::{FailureKind, LoopSpec, LoopState, Watchdog};
use tokio::sync::mpsc;

#[tokio::test(start_paused = true)]
async fn a_panicking_loop_is_restarted() {
    let watchdog = Watchdog::builder().build().unwrap();
    let (tx, mut runs) = mpsc::unbounded_channel();
    let handle = watchdog
        .register(LoopSpec::new("panicky", move |ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ctx.run());
                if ctx.run() == 0 {
                    panic!("boom in run 0");
                }
                loop {
                    ctx.ping();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }))
        .unwrap();

    assert_eq!(runs.recv().await, Some(0));
    // Restarted after the first backoff (at most 1 s).
    let second = tokio::time::timeout(Duration::from_millis(1_100), runs.recv()).await;
    assert_eq!(second.expect("not restarted after the panic"), Some(1));

    let status = handle.status();
    assert_eq!(status.state, LoopState::Running);
    assert_eq!(status.restarts_total, 1);
    let error = status.last_error.unwrap();
    assert_eq!(error.kind, FailureKind::Panic);
    assert!(error.message.contains("boom in run 0"), "{}", error.message);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_factory_is_restarted() {
    let watchdog = Watchdog::builder().build().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let handle = watchdog
        .register(LoopSpec::new("bad-factory", move |ctx| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("factory failed to build");
            }
            async move {
                loop {
                    ctx.ping();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let status = handle.status();
    assert_eq!(status.state, LoopState::Running);
    assert_eq!(status.last_error.unwrap().kind, FailureKind::Panic);
}

#[tokio::test(start_paused = true)]
async fn a_loop_panicking_every_run_does_not_stop_silence_detection_of_others() {
    let watchdog = Watchdog::builder().build().unwrap();
    watchdog
        .register(LoopSpec::new("always-panics", |_ctx| async move {
            panic!("always");
        }))
        .unwrap();
    let (tx, mut cancelled) = mpsc::unbounded_channel();
    watchdog
        .register(
            LoopSpec::new("hung", move |ctx| {
                let tx = tx.clone();
                async move {
                    ctx.cancelled().await;
                    let _ = tx.send(ctx.run());
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
            .max_silence(Duration::from_secs(30)),
        )
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(32), cancelled.recv()).await;
    assert_eq!(found.expect("the hung loop was not found silent"), Some(0));
    assert!(watchdog.loop_status("always-panics").unwrap().restarts_total >= 4);
}
