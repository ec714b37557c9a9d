//! The runtime-stall detector: an OS thread that notices when the tokio runtime stops running
//! tasks, for example because a worker thread is stuck in a blocking call.
//!
//! # What it detects
//!
//! The detector's thread (a plain `std::thread`, so it keeps running when the runtime does not)
//! repeatedly spawns a tiny *probe* task onto the runtime and measures how long the probe takes
//! to run. When a probe has not run within the `bound`, the runtime is stalled: the detector
//! reports it (callback, `tracing` error, `watchdog_runtime_stalls_total` counter) and then
//! takes its [`StallAction`]. It reports once per stall and logs when the runtime recovers.
//!
//! A probe spawned from outside the runtime waits in the runtime's shared queue and is run by
//! whichever worker is free, so the detector answers "can this runtime still run a freshly
//! spawned task within the bound?":
//!
//! * on a `current_thread` runtime, and on a multi-thread runtime with one worker, any blocking
//!   call longer than the bound is detected;
//! * on a multi-thread runtime with several workers, a stall is detected when every worker is
//!   blocked (or busy) for longer than the bound. One blocked worker among several is not
//!   detected, since the others keep running the probes; tasks queued behind that worker may
//!   still starve, which the per-loop silence detection catches for supervised loops.
//!
//! A stall is reported within `bound + 2 × check_every` of its start. The probe uses no timer,
//! so the detector works the same on a paused test clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::WatchdogError;
use crate::runner::panic_message;

/// What the stall detector does after reporting a stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StallAction {
    /// Only report it (callback, log, metrics).
    #[default]
    Report,
    /// Abort the process (`std::process::abort`) so an outer supervisor (systemd, Kubernetes)
    /// restarts it.
    Abort,
    /// Exit the process with this code (`std::process::exit`), without running destructors.
    Exit(i32),
}

/// A detected stall, as handed to the `on_stall` callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StallEvent {
    /// How long the pending probe had waited when the stall was reported.
    pub stalled_for: Duration,
    /// The configured bound.
    pub bound: Duration,
}

type StallCallback = Arc<dyn Fn(&StallEvent) + Send + Sync + 'static>;

/// Configuration of the [`StallDetector`].
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::{StallAction, StallConfig};
///
/// let config = StallConfig::new(Duration::from_secs(10))
///     .action(StallAction::Abort)
///     .on_stall(|event| eprintln!("runtime stalled for {:?}", event.stalled_for));
/// assert_eq!(config.bound(), Duration::from_secs(10));
/// ```
#[derive(Clone)]
pub struct StallConfig {
    bound: Duration,
    check_every: Option<Duration>,
    action: StallAction,
    on_stall: Option<StallCallback>,
}

impl std::fmt::Debug for StallConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallConfig")
            .field("bound", &self.bound)
            .field("check_every", &self.check_every())
            .field("action", &self.action)
            .field("on_stall", &self.on_stall.is_some())
            .finish()
    }
}

impl StallConfig {
    /// Report a stall when the runtime cannot run a probe task within `bound`. The default
    /// action is [`StallAction::Report`]; the thread checks every `bound / 10` (at least 1 ms).
    pub fn new(bound: Duration) -> Self {
        Self { bound, check_every: None, action: StallAction::Report, on_stall: None }
    }

    /// How often the detector's thread wakes up to look (default `bound / 10`, at least 1 ms).
    pub fn check_every(&self) -> Duration {
        self.check_every.unwrap_or_else(|| (self.bound / 10).max(Duration::from_millis(1)))
    }

    /// Sets how often the detector's thread wakes up.
    pub fn with_check_every(mut self, every: Duration) -> Self {
        self.check_every = Some(every);
        self
    }

    /// What to do after reporting.
    pub fn action(mut self, action: StallAction) -> Self {
        self.action = action;
        self
    }

    /// Called (on the detector's thread) once per stall, before the action.
    pub fn on_stall(mut self, callback: impl Fn(&StallEvent) + Send + Sync + 'static) -> Self {
        self.on_stall = Some(Arc::new(callback));
        self
    }

    /// The bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    pub(crate) fn validate(&self) -> Result<(), WatchdogError> {
        if self.bound.is_zero() {
            return Err(WatchdogError::ZeroDuration { setting: "stall.bound" });
        }
        if self.check_every().is_zero() {
            return Err(WatchdogError::ZeroDuration { setting: "stall.check_every" });
        }
        Ok(())
    }
}

/// A running stall detector; see the [module docs](self) for what it detects.
///
/// It stops when [`StallDetector::stop`] is called or when it is dropped, and by itself when the
/// runtime it watches shuts down.
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::{StallConfig, StallDetector};
///
/// # fn main() -> Result<(), channel_watchdog::WatchdogError> {
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let detector = StallDetector::start(runtime.handle(), StallConfig::new(Duration::from_millis(50)))?;
/// runtime.block_on(async {
///     std::thread::sleep(Duration::from_millis(300)); // blocks the only worker
/// });
/// assert_eq!(detector.stalls(), 1);
/// detector.stop();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct StallDetector {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stalls: Arc<AtomicU64>,
}

impl StallDetector {
    /// Starts watching the runtime behind `handle` on a new OS thread.
    pub fn start(handle: &Handle, config: StallConfig) -> Result<Self, WatchdogError> {
        config.validate()?;
        let (stop, stopped) = mpsc::channel();
        let stalls = Arc::new(AtomicU64::new(0));
        let watcher = Watcher { handle: handle.clone(), config, stalls: stalls.clone() };
        let thread = std::thread::Builder::new()
            .name("watchdog-stall".to_owned())
            .spawn(move || watcher.run(&stopped))
            .map_err(WatchdogError::StallThread)?;
        Ok(Self { stop: Some(stop), thread: Some(thread), stalls })
    }

    /// How many stalls were reported so far.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        self.stalls.clone()
    }

    /// Stops the detector and waits for its thread to end.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StallDetector {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread, which then ends by itself.
        self.stop.take();
    }
}

struct Watcher {
    handle: Handle,
    config: StallConfig,
    stalls: Arc<AtomicU64>,
}

struct Probe {
    task: tokio::task::JoinHandle<()>,
    ran: Arc<AtomicBool>,
    sent: Instant,
}

impl Watcher {
    fn run(self, stopped: &mpsc::Receiver<()>) {
        let every = self.config.check_every();
        let mut probe = self.send_probe();
        let mut reported = false;
        loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if probe.ran.load(Ordering::Acquire) {
                if reported {
                    tracing::warn!(
                        stalled_for = ?now.duration_since(probe.sent),
                        "tokio runtime is making progress again"
                    );
                    reported = false;
                }
                probe = self.send_probe();
            } else if probe.task.is_finished() {
                // Cancelled without running: the runtime has shut down.
                return;
            } else if !reported && now.duration_since(probe.sent) > self.config.bound {
                reported = true;
                self.report(now.duration_since(probe.sent));
            }
        }
    }

    fn send_probe(&self) -> Probe {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let task = self.handle.spawn(async move {
            flag.store(true, Ordering::Release);
        });
        Probe { task, ran, sent: Instant::now() }
    }

    fn report(&self, stalled_for: Duration) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("watchdog_runtime_stalls_total").increment(1);
        tracing::error!(
            ?stalled_for,
            bound = ?self.config.bound,
            action = ?self.config.action,
            "tokio runtime stalled: a probe task has not run within the bound \
             (a blocking call on a worker thread?)"
        );
        let event = StallEvent { stalled_for, bound: self.config.bound };
        if let Some(callback) = &self.config.on_stall
            && let Err(panic) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&event)))
        {
            tracing::error!(panic = %panic_message(&*panic), "the on_stall callback panicked");
        }
        match self.config.action {
            StallAction::Report => {}
            StallAction::Abort => std::process::abort(),
            StallAction::Exit(code) => std::process::exit(code),
        }
    }
}
