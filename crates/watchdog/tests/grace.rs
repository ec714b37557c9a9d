//! A cancelled loop gets exactly its grace: aborted after it if it ignores cancellation, left to
//! finish if it returns within it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use channel_watchdog::{CancellationToken, LoopSpec, Watchdog};
use tokio::sync::mpsc;
use tokio::time::Instant;

const GRACE: Duration = Duration::from_secs(5);

/// Sets its flag when dropped: when the loop's future is dropped by the abort.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_loop_ignoring_cancellation_is_aborted_after_its_grace_and_not_before() {
    let watchdog = Watchdog::builder().build().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let (tx, mut tokens) = mpsc::unbounded_channel::<CancellationToken>();
    let flag = dropped.clone();
    watchdog
        .register(
            LoopSpec::new("stubborn", move |ctx| {
                let tx = tx.clone();
                let guard = (ctx.run() == 0).then(|| DropFlag(flag.clone()));
                async move {
                    let _guard = guard;
                    let _ = tx.send(ctx.token().clone());
                    // Never pings, never looks at its token.
                    loop {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                }
            })
            .max_silence(Duration::from_secs(10))
            .grace(GRACE),
        )
        .unwrap();

    let token = tokens.recv().await.unwrap();
    token.cancelled().await;
    let cancelled_at = Instant::now();

    tokio::time::sleep_until(cancelled_at + GRACE - Duration::from_millis(1)).await;
    assert!(!dropped.load(Ordering::SeqCst), "aborted before its grace had passed");
    tokio::time::sleep_until(cancelled_at + GRACE + Duration::from_millis(1)).await;
    assert!(dropped.load(Ordering::SeqCst), "still running after its grace");
}

#[tokio::test(start_paused = true)]
async fn a_loop_honouring_cancellation_finishes_its_cleanup_within_grace() {
    let watchdog = Watchdog::builder().build().unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let (tx, mut runs) = mpsc::unbounded_channel();
    let done = finished.clone();
    watchdog
        .register(
            LoopSpec::new("polite", move |ctx| {
                let tx = tx.clone();
                let done = done.clone();
                async move {
                    let _ = tx.send(ctx.run());
                    ctx.cancelled().await;
                    // Cleanup that takes most of the grace.
                    tokio::time::sleep(GRACE - Duration::from_secs(1)).await;
                    done.store(true, Ordering::SeqCst);
                    Ok(())
                }
            })
            .max_silence(Duration::from_secs(10))
            .grace(GRACE),
        )
        .unwrap();
    assert_eq!(runs.recv().await, Some(0));
    assert_eq!(runs.recv().await, Some(1));
    assert!(finished.load(Ordering::SeqCst), "the cleanup was cut short");
}
