//! How a loop is described when it is registered: [`LoopSpec`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{Backoff, Intensity, LoopContext, LoopResult, RestartPolicy};

/// The boxed future a loop factory builds.
pub type LoopFuture = Pin<Box<dyn Future<Output = LoopResult> + Send + 'static>>;

/// Builds a fresh run of a loop from its context.
pub(crate) type Factory = Arc<dyn Fn(LoopContext) -> LoopFuture + Send + Sync + 'static>;

/// Called when a loop exceeds its restart intensity and becomes
/// [`Failed`](crate::LoopState::Failed).
pub(crate) type EscalationFn = Arc<dyn Fn(&Escalation) + Send + Sync + 'static>;

/// What an escalation callback learns about the loop that was given up on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Escalation {
    /// The loop's name.
    pub name: String,
    /// Whether the loop was registered as critical.
    pub critical: bool,
    /// Restarts within the intensity window when it gave up (the allowed maximum).
    pub restarts_in_window: u32,
    /// The intensity limit that was exceeded.
    pub intensity: Intensity,
    /// Why the last run ended.
    pub last_error: String,
}

/// The description of a supervised loop, passed to
/// [`Watchdog::register`](crate::Watchdog::register).
///
/// Settings left unset take the watchdog's defaults (see
/// [`WatchdogBuilder`](crate::WatchdogBuilder)). Values are checked at registration, which
/// returns a [`WatchdogError`](crate::WatchdogError) for bad ones.
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::{LoopSpec, RestartPolicy};
///
/// let spec = LoopSpec::new("imap-idle", |ctx| async move {
///     loop {
///         ctx.ping();
///         tokio::select! {
///             _ = ctx.cancelled() => return Ok(()),
///             _ = tokio::time::sleep(Duration::from_secs(1)) => {}
///         }
///     }
/// })
/// .policy(RestartPolicy::Permanent)
/// .max_silence(Duration::from_secs(30))
/// .grace(Duration::from_secs(2))
/// .critical(true);
/// assert_eq!(spec.name(), "imap-idle");
/// ```
#[must_use = "a LoopSpec does nothing until it is registered with Watchdog::register"]
pub struct LoopSpec {
    pub(crate) name: String,
    pub(crate) factory: Factory,
    pub(crate) policy: RestartPolicy,
    pub(crate) max_silence: Option<Duration>,
    pub(crate) grace: Option<Duration>,
    pub(crate) critical: bool,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) intensity: Option<Intensity>,
    pub(crate) on_escalation: Option<EscalationFn>,
}

impl std::fmt::Debug for LoopSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopSpec")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("max_silence", &self.max_silence)
            .field("grace", &self.grace)
            .field("critical", &self.critical)
            .field("backoff", &self.backoff)
            .field("intensity", &self.intensity)
            .field("on_escalation", &self.on_escalation.is_some())
            .finish_non_exhaustive()
    }
}

impl LoopSpec {
    /// A loop named `name` whose runs `factory` builds. The factory is called once per run
    /// (first start and every restart) with a fresh [`LoopContext`].
    ///
    /// Defaults: [`RestartPolicy::Permanent`], not critical, and the watchdog's `max_silence`,
    /// grace, backoff and intensity.
    pub fn new<F, Fut>(name: impl Into<String>, factory: F) -> Self
    where
        F: Fn(LoopContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = LoopResult> + Send + 'static,
    {
        Self {
            name: name.into(),
            factory: Arc::new(move |ctx| Box::pin(factory(ctx)) as LoopFuture),
            policy: RestartPolicy::default(),
            max_silence: None,
            grace: None,
            critical: false,
            backoff: None,
            intensity: None,
            on_escalation: None,
        }
    }

    /// The loop's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which endings lead to a restart (default [`RestartPolicy::Permanent`]).
    pub fn policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long the loop may go without [`LoopContext::ping`] before it is restarted.
    pub fn max_silence(mut self, max_silence: Duration) -> Self {
        self.max_silence = Some(max_silence);
        self
    }

    /// How long the loop has to return after its token is cancelled before its task is aborted.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// A critical loop that is [`Failed`](crate::LoopState::Failed) stops the systemd watchdog
    /// pings (feature `systemd`) and marks the health report's `critical_ok` false.
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }

    /// The delay before restarts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// The restart-intensity limit.
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = Some(intensity);
        self
    }

    /// Runs `callback` when the loop exceeds its restart intensity (instead of the watchdog-wide
    /// callback, if one is set). It runs on a tokio worker: keep it short and non-blocking.
    pub fn on_escalation(mut self, callback: impl Fn(&Escalation) + Send + Sync + 'static) -> Self {
        self.on_escalation = Some(Arc::new(callback));
        self
    }
}
