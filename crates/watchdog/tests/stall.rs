//! The runtime-stall detector fires when a worker thread is blocked (real time, small bounds).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use channel_watchdog::{StallAction, StallConfig, StallDetector, StallEvent, Watchdog};

const BOUND: Duration = Duration::from_millis(200);
const BLOCK: Duration = Duration::from_millis(600);

fn detector_config(tx: mpsc::Sender<(StallEvent, Instant)>) -> StallConfig {
    StallConfig::new(BOUND).with_check_every(Duration::from_millis(10)).on_stall(move |event| {
        let _ = tx.send((*event, Instant::now()));
    })
}

#[test]
fn the_stall_detector_fires_while_a_current_thread_worker_is_blocked_in_thread_sleep() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (tx, rx) = mpsc::channel();
    let detector = StallDetector::start(runtime.handle(), detector_config(tx)).unwrap();

    let blocked_at = runtime.block_on(async {
        // A responsive runtime first: no stall reported.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(detector.stalls(), 0, "false alarm on a responsive runtime");
        // Then the only worker blocks.
        let blocked_at = Instant::now();
        std::thread::sleep(BLOCK);
        blocked_at
    });

    let (event, reported_at) =
        rx.try_recv().expect("no stall reported while the worker was blocked");
    assert!(event.stalled_for > BOUND);
    assert_eq!(event.bound, BOUND);
    // Reported during the block, once.
    assert!(reported_at < blocked_at + BLOCK);
    assert!(reported_at >= blocked_at + BOUND);
    assert_eq!(detector.stalls(), 1);
    detector.stop();
}

#[test]
fn the_stall_detector_fires_on_a_multi_thread_runtime_whose_only_worker_is_blocked() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tx, rx) = mpsc::channel();
    let watchdog = runtime.block_on(async {
        Watchdog::builder().stall_detection(detector_config(tx)).build().unwrap()
    });
    let blocked_at = Instant::now();
    let blocker = runtime.spawn(async {
        std::thread::sleep(BLOCK);
    });
    let (event, reported_at) = rx
        .recv_timeout(BLOCK + Duration::from_secs(1))
        .expect("no stall reported while the worker was blocked");
    assert!(event.stalled_for > BOUND);
    assert!(reported_at < blocked_at + BLOCK + Duration::from_millis(100));
    runtime.block_on(blocker).unwrap();
    assert_eq!(watchdog.stalls(), 1);
    runtime.block_on(watchdog.shutdown(Duration::from_secs(1)));
}

/// Re-runs this test binary to check that [`StallAction::Abort`] really aborts the process.
#[test]
fn the_abort_action_aborts_the_process() {
    use std::os::unix::process::ExitStatusExt;

    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["stall_abort_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("WATCHDOG_STALL_ABORT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("child: blocking"), "child output: {stdout}");
    assert!(!stdout.contains("child: survived"), "child output: {stdout}");
    assert_eq!(output.status.signal(), Some(6), "expected SIGABRT, got {:?}", output.status);
}

/// The child half of `the_abort_action_aborts_the_process`; does nothing unless run by it.
#[test]
#[ignore = "run by the_abort_action_aborts_the_process in a child process"]
fn stall_abort_child() {
    if std::env::var_os("WATCHDOG_STALL_ABORT_CHILD").is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _detector = StallDetector::start(
        runtime.handle(),
        StallConfig::new(Duration::from_millis(100)).action(StallAction::Abort),
    )
    .unwrap();
    runtime.block_on(async {
        println!("child: blocking");
        std::thread::sleep(Duration::from_secs(3));
    });
    println!("child: survived");
}
