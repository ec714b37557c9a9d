//! The [`Watchdog`] itself, its [`WatchdogBuilder`] and the [`LoopHandle`] of a registered loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::heartbeat::HeartbeatState;
use crate::intensity::RestartHistory;
use crate::loop_spec::EscalationFn;
use crate::registry::{LoopEntry, Registry, Settings, lock};
use crate::{
    Backoff, Escalation, HealthReport, HeartbeatSink, Intensity, LoopSpec, LoopStatus,
    ShutdownReport, StallConfig, StallDetector, WatchdogError,
};

/// State shared by the watchdog handle and its background tasks.
pub(crate) struct Shared {
    pub(crate) clock: Arc<Clock>,
    pub(crate) registry: Registry,
    pub(crate) heartbeat: HeartbeatState,
}

impl Shared {
    pub(crate) fn statuses(&self) -> Vec<LoopStatus> {
        let mut out = Vec::with_capacity(self.registry.len());
        self.registry.for_each(|e| out.push(e.status()));
        out
    }

    pub(crate) fn health_report(&self, beat: u64) -> HealthReport {
        let mut report = HealthReport::new(self.statuses(), self.clock.uptime(), beat);
        report.heartbeat_age_ms = self.heartbeat.age_ms(self.clock.now_ms());
        report
    }

    fn any_critical_failed(&self) -> bool {
        let mut failed = false;
        self.registry.for_each(|e| failed = failed || e.critical_failed());
        failed
    }

    /// Whether systemd may be told `WATCHDOG=1`: the heartbeat is fresh and no critical loop
    /// has failed.
    #[cfg_attr(not(feature = "systemd"), allow(dead_code))]
    pub(crate) fn may_pet_systemd(&self) -> bool {
        self.heartbeat.is_fresh(self.clock.now_ms()) && !self.any_critical_failed()
    }
}

/// Configures and starts a [`Watchdog`]; from [`Watchdog::builder`].
///
/// | setting            | default | meaning                                                     |
/// |--------------------|---------|-------------------------------------------------------------|
/// | `check_interval`   | 1 s     | how often the monitor scans the loops' pings                |
/// | `max_silence`      | 60 s    | default silence allowed to a loop before it is restarted    |
/// | `grace`            | 5 s     | default time a cancelled loop has to return before abort    |
/// | `backoff`          | 1 s–60 s| default jittered exponential delay before a restart         |
/// | `intensity`        | 5 in 60 s, stable after 60 s | default restart-intensity limit        |
/// | `heartbeat`        | 15 s    | interval of the global heartbeat                            |
/// | `sink_timeout`     | min(10 s, heartbeat) | limit on one call of the heartbeat sink        |
/// | `stall_detection`  | off     | runtime-stall detector on its own OS thread                 |
/// | `systemd` (feature)| on      | READY / WATCHDOG / STOPPING notifications                   |
#[must_use = "a builder does nothing until build() is called"]
pub struct WatchdogBuilder {
    check_interval: Duration,
    max_silence: Duration,
    grace: Duration,
    backoff: Backoff,
    intensity: Intensity,
    heartbeat: Duration,
    sink_timeout: Option<Duration>,
    sink: Option<Arc<dyn HeartbeatSink>>,
    on_escalation: Option<EscalationFn>,
    stall: Option<StallConfig>,
    #[cfg(feature = "systemd")]
    systemd: bool,
}

impl std::fmt::Debug for WatchdogBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchdogBuilder")
            .field("check_interval", &self.check_interval)
            .field("max_silence", &self.max_silence)
            .field("grace", &self.grace)
            .field("backoff", &self.backoff)
            .field("intensity", &self.intensity)
            .field("heartbeat", &self.heartbeat)
            .field("sink_timeout", &self.sink_timeout)
            .field("sink", &self.sink.is_some())
            .field("on_escalation", &self.on_escalation.is_some())
            .field("stall", &self.stall)
            .finish_non_exhaustive()
    }
}

impl Default for WatchdogBuilder {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(1),
            max_silence: Duration::from_secs(60),
            grace: Duration::from_secs(5),
            backoff: Backoff::default(),
            intensity: Intensity::default(),
            heartbeat: Duration::from_secs(15),
            sink_timeout: None,
            sink: None,
            on_escalation: None,
            stall: None,
            #[cfg(feature = "systemd")]
            systemd: true,
        }
    }
}

impl WatchdogBuilder {
    /// How often the monitor checks every loop's last ping. Silence is detected at most
    /// `max_silence + check_interval` after a loop's last ping.
    pub fn check_interval(mut self, every: Duration) -> Self {
        self.check_interval = every;
        self
    }

    /// The `max_silence` of loops whose [`LoopSpec`] sets none.
    pub fn max_silence(mut self, max_silence: Duration) -> Self {
        self.max_silence = max_silence;
        self
    }

    /// The grace of loops whose [`LoopSpec`] sets none.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The backoff of loops whose [`LoopSpec`] sets none.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The restart intensity of loops whose [`LoopSpec`] sets none.
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// The interval of the global heartbeat.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Where the heartbeat delivers its reports. Without a sink the heartbeat still runs (it
    /// keeps the systemd watchdog fed) but delivers nothing.
    pub fn heartbeat_sink(mut self, sink: impl HeartbeatSink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// The limit on one call of the heartbeat sink; at most the heartbeat interval.
    pub fn sink_timeout(mut self, timeout: Duration) -> Self {
        self.sink_timeout = Some(timeout);
        self
    }

    /// Runs `callback` when a loop without its own escalation callback exceeds its restart
    /// intensity.
    pub fn on_escalation(mut self, callback: impl Fn(&Escalation) + Send + Sync + 'static) -> Self {
        self.on_escalation = Some(Arc::new(callback));
        self
    }

    /// Starts a [`StallDetector`] on the runtime the watchdog is built in.
    pub fn stall_detection(mut self, config: StallConfig) -> Self {
        self.stall = Some(config);
        self
    }

    /// Whether to notify systemd (default: on; a no-op when not run by systemd).
    #[cfg(feature = "systemd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "systemd")))]
    pub fn systemd(mut self, enabled: bool) -> Self {
        self.systemd = enabled;
        self
    }

    /// Checks the configuration and starts the watchdog's background tasks (monitor,
    /// heartbeat, and if configured the stall detector and systemd notifications) on the
    /// current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`WatchdogError::ZeroDuration`], [`WatchdogError::BackoffRange`] or
    /// [`WatchdogError::TooLong`] for bad settings, [`WatchdogError::NoRuntime`] outside a
    /// tokio runtime, [`WatchdogError::StallThread`] if the stall detector's thread cannot start.
    pub fn build(self) -> Result<Watchdog, WatchdogError> {
        for (setting, value) in [
            ("check_interval", self.check_interval),
            ("max_silence", self.max_silence),
            ("grace", self.grace),
            ("heartbeat", self.heartbeat),
        ] {
            if value.is_zero() {
                return Err(WatchdogError::ZeroDuration { setting });
            }
        }
        let sink_timeout = match self.sink_timeout {
            Some(t) if t.is_zero() => {
                return Err(WatchdogError::ZeroDuration { setting: "sink_timeout" });
            }
            Some(t) if t > self.heartbeat => {
                return Err(WatchdogError::TooLong {
                    setting: "sink_timeout",
                    value: t,
                    limit_setting: "heartbeat",
                    limit: self.heartbeat,
                });
            }
            Some(t) => t,
            None => self.heartbeat.min(Duration::from_secs(10)),
        };
        self.backoff.validate()?;
        self.intensity.validate()?;
        if let Some(stall) = &self.stall {
            stall.validate()?;
        }
        let runtime = Handle::try_current().map_err(|_| WatchdogError::NoRuntime)?;

        let shared = Arc::new(Shared {
            clock: Arc::new(Clock::new()),
            registry: Registry::default(),
            heartbeat: HeartbeatState::new(self.heartbeat, sink_timeout, self.check_interval),
        });
        let background = CancellationToken::new();
        let stall = match self.stall {
            Some(config) => Some(StallDetector::start(&runtime, config)?),
            None => None,
        };
        let mut tasks = vec![
            runtime.spawn(crate::monitor::run(
                shared.clone(),
                self.check_interval,
                background.clone(),
            )),
            runtime.spawn(crate::heartbeat::run(
                shared.clone(),
                self.sink,
                self.heartbeat,
                sink_timeout,
                background.clone(),
            )),
        ];
        #[cfg(feature = "systemd")]
        if self.systemd {
            if let Some(every) = crate::systemd::pet_interval() {
                tasks.push(runtime.spawn(crate::systemd::pet(
                    shared.clone(),
                    every,
                    background.clone(),
                )));
            }
            crate::systemd::ready();
        }
        tasks.shrink_to_fit();
        Ok(Watchdog {
            inner: Arc::new(Inner {
                shared,
                runtime,
                defaults: Defaults {
                    max_silence: self.max_silence,
                    grace: self.grace,
                    backoff: self.backoff,
                    intensity: self.intensity,
                    on_escalation: self.on_escalation,
                },
                background,
                tasks: Mutex::new(tasks),
                stall_count: stall.as_ref().map(StallDetector::counter),
                stall: Mutex::new(stall),
                #[cfg(feature = "systemd")]
                systemd: self.systemd,
            }),
        })
    }
}

struct Defaults {
    max_silence: Duration,
    grace: Duration,
    backoff: Backoff,
    intensity: Intensity,
    on_escalation: Option<EscalationFn>,
}

struct Inner {
    shared: Arc<Shared>,
    runtime: Handle,
    defaults: Defaults,
    background: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stall: Mutex<Option<StallDetector>>,
    stall_count: Option<Arc<std::sync::atomic::AtomicU64>>,
    #[cfg(feature = "systemd")]
    systemd: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without shutdown(): cancel every loop (each still gets its grace) and stop the
        // background tasks.
        self.shared.registry.for_each(|e| e.stop.cancel());
        self.background.cancel();
    }
}

/// Supervises named async loops: restarts them when they go silent, fail, panic or (if
/// permanent) return; keeps a global heartbeat; optionally detects runtime stalls and talks to
/// systemd. See the [crate documentation](crate) for the whole picture.
///
/// `Watchdog` is a cheap handle (`Clone`): hand copies to health endpoints. Dropping the last
/// copy without [`Watchdog::shutdown`] cancels every loop and stops the background tasks.
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::{LoopSpec, Watchdog};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), channel_watchdog::WatchdogError> {
/// let watchdog = Watchdog::builder().check_interval(Duration::from_secs(1)).build()?;
/// watchdog.register(LoopSpec::new("ticker", |ctx| async move {
///     loop {
///         ctx.ping();
///         tokio::select! {
///             _ = ctx.cancelled() => return Ok(()),
///             _ = tokio::time::sleep(Duration::from_secs(1)) => {}
///         }
///     }
/// }))?;
/// tokio::time::sleep(Duration::from_secs(3)).await;
/// assert!(watchdog.health().healthy);
/// let report = watchdog.shutdown(Duration::from_secs(5)).await;
/// assert!(report.all_graceful());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Watchdog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("loops", &self.inner.shared.registry.len())
            .field("shut_down", &self.inner.shared.registry.is_closed())
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// A builder with the defaults listed on [`WatchdogBuilder`].
    pub fn builder() -> WatchdogBuilder {
        WatchdogBuilder::default()
    }

    /// Registers a loop and starts its first run right away.
    ///
    /// # Errors
    ///
    /// [`WatchdogError::EmptyName`], [`WatchdogError::DuplicateName`],
    /// [`WatchdogError::ShutDown`] after [`Watchdog::shutdown`] has begun, and
    /// [`WatchdogError::ZeroDuration`] / [`WatchdogError::BackoffRange`] for bad settings.
    pub fn register(&self, spec: LoopSpec) -> Result<LoopHandle, WatchdogError> {
        let inner = &self.inner;
        if spec.name.trim().is_empty() {
            return Err(WatchdogError::EmptyName);
        }
        if inner.shared.registry.is_closed() {
            return Err(WatchdogError::ShutDown);
        }
        let defaults = &inner.defaults;
        let settings = Settings {
            policy: spec.policy,
            max_silence: spec.max_silence.unwrap_or(defaults.max_silence),
            grace: spec.grace.unwrap_or(defaults.grace),
            critical: spec.critical,
            backoff: spec.backoff.unwrap_or(defaults.backoff),
        };
        if settings.max_silence.is_zero() {
            return Err(WatchdogError::ZeroDuration { setting: "max_silence" });
        }
        if settings.grace.is_zero() {
            return Err(WatchdogError::ZeroDuration { setting: "grace" });
        }
        settings.backoff.validate()?;
        let intensity = spec.intensity.unwrap_or(defaults.intensity);
        intensity.validate()?;

        let entry = Arc::new(LoopEntry::new(
            Arc::from(spec.name),
            settings,
            RestartHistory::new(intensity),
            spec.factory,
            spec.on_escalation,
            inner.shared.clock.clone(),
        ));
        let fallback = defaults.on_escalation.clone();
        inner.shared.registry.insert(entry.clone(), |entry| {
            let runner = inner.runtime.spawn(crate::runner::supervise(entry.clone(), fallback));
            *lock(&entry.runner) = Some(runner);
        })?;
        tracing::debug!(r#loop = %entry.name, "loop registered");
        Ok(LoopHandle { entry })
    }

    /// The status of every loop, in registration order.
    pub fn status(&self) -> Vec<LoopStatus> {
        self.inner.shared.statuses()
    }

    /// The status of the loop named `name`, if there is one.
    pub fn loop_status(&self, name: &str) -> Option<LoopStatus> {
        self.inner.shared.registry.get(name).map(|e| e.status())
    }

    /// A full health report (what the heartbeat sends, with `beat` 0).
    pub fn health(&self) -> HealthReport {
        self.inner.shared.health_report(0)
    }

    /// Stalls reported by the stall detector so far (0 when stall detection is off).
    pub fn stalls(&self) -> u64 {
        self.inner
            .stall_count
            .as_ref()
            .map_or(0, |count| count.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Stops every loop, last registered first, and then the background tasks.
    ///
    /// Call it from outside the supervised loops (for example from `main` after a signal): a
    /// loop awaiting it would wait for itself and be aborted with it.
    ///
    /// Each loop's token is cancelled and the loop gets its grace to return, but never beyond
    /// the overall `deadline`: a loop that ignores its cancellation is aborted when its grace or
    /// the deadline runs out, whichever comes first, so the shutdown ends within `deadline`
    /// (a loop stuck in a blocking call cannot be aborted and is left behind). A zero `deadline`
    /// aborts every running loop at once. After shutdown has begun, [`Watchdog::register`]
    /// fails with [`WatchdogError::ShutDown`]. Calling it again returns at once.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        let end = started + deadline;
        let inner = &self.inner;
        let entries = inner.shared.registry.close();
        #[cfg(feature = "systemd")]
        if inner.systemd {
            crate::systemd::stopping();
        }
        tracing::info!(loops = entries.len(), ?deadline, "watchdog shutting down");
        let loops = crate::shutdown::stop_loops(&entries, end).await;
        inner.background.cancel();
        let tasks = std::mem::take(&mut *lock(&inner.tasks));
        for task in tasks {
            task.abort();
        }
        if let Some(stall) = lock(&inner.stall).take() {
            drop(stall);
        }
        let report = ShutdownReport { elapsed: started.elapsed(), deadline, loops };
        tracing::info!(
            elapsed = ?report.elapsed,
            all_graceful = report.all_graceful(),
            "watchdog shut down"
        );
        report
    }
}

/// A registered loop; from [`Watchdog::register`].
#[derive(Clone)]
pub struct LoopHandle {
    entry: Arc<LoopEntry>,
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle").field("name", &self.entry.name).finish_non_exhaustive()
    }
}

impl LoopHandle {
    /// The loop's name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The loop's current status.
    pub fn status(&self) -> LoopStatus {
        self.entry.status()
    }
}
