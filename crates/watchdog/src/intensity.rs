//! Restart intensity, as in Erlang/OTP: too many restarts in too short a time mean restarting
//! does not help, and the loop is given up on ([`LoopState::Failed`](crate::LoopState::Failed)).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::WatchdogError;

/// The restart-intensity limit of a loop.
///
/// When a loop would be restarted for the `max_restarts + 1`-th time within `window`, it is
/// not restarted: it becomes [`Failed`](crate::LoopState::Failed), is reported unhealthy and its
/// escalation callback runs. Once a run of the loop has lasted `stable_after` without ending, its
/// restart history is forgotten (the window count drops to 0 and the backoff starts again
/// from its initial delay).
///
/// Defaults: 5 restarts in 60 s, stable after 60 s.
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::Intensity;
///
/// let strict = Intensity::new(3, Duration::from_secs(30)).stable_after(Duration::from_secs(10));
/// assert_eq!(strict.max_restarts(), 3);
/// assert_eq!(Intensity::default().window(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Intensity {
    max_restarts: u32,
    #[serde(rename = "window_ms", serialize_with = "crate::status::as_millis")]
    window: Duration,
    #[serde(rename = "stable_after_ms", serialize_with = "crate::status::as_millis")]
    stable_after: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl Intensity {
    /// At most `max_restarts` restarts within `window` (stable period: the default 60 s).
    /// `max_restarts` may be 0: the first failure then fails the loop.
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        Self { max_restarts, window, ..Self::default() }
    }

    /// After a run has lasted this long, the restart history is forgotten.
    pub fn stable_after(mut self, stable_after: Duration) -> Self {
        self.stable_after = stable_after;
        self
    }

    /// The number of restarts allowed within the window.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The sliding window restarts are counted in.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How long a run must last for the restart history to be forgotten.
    pub fn stable_period(&self) -> Duration {
        self.stable_after
    }

    pub(crate) fn validate(&self) -> Result<(), WatchdogError> {
        if self.window.is_zero() {
            return Err(WatchdogError::ZeroDuration { setting: "intensity.window" });
        }
        if self.stable_after.is_zero() {
            return Err(WatchdogError::ZeroDuration { setting: "intensity.stable_after" });
        }
        Ok(())
    }
}

/// The restart history of one loop.
#[derive(Debug)]
pub(crate) struct RestartHistory {
    limits: Intensity,
    /// Times of the restarts still inside the window (at most `max_restarts + 1`).
    recent: VecDeque<Instant>,
    /// Consecutive restarts since the last stable run: the backoff exponent.
    consecutive: u32,
}

impl RestartHistory {
    pub(crate) fn new(limits: Intensity) -> Self {
        Self { limits, recent: VecDeque::new(), consecutive: 0 }
    }

    /// Forgets the history if the current run, started at `running_since`, has been stable.
    pub(crate) fn forget_if_stable(&mut self, running_since: Option<Instant>, now: Instant) {
        if let Some(since) = running_since
            && now.saturating_duration_since(since) >= self.limits.stable_after
        {
            self.recent.clear();
            self.consecutive = 0;
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.limits.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// Restarts inside the window as of `now`.
    pub(crate) fn in_window(&self, now: Instant) -> u32 {
        let count = self
            .recent
            .iter()
            .filter(|&&t| now.saturating_duration_since(t) < self.limits.window)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Asks for one more restart at `now`. `Some(attempt)` (the 0-based backoff exponent) if it
    /// is allowed, `None` if it would exceed the intensity.
    pub(crate) fn try_restart(&mut self, now: Instant) -> Option<u32> {
        self.prune(now);
        let allowed = self.limits.max_restarts as usize;
        if self.recent.len() >= allowed {
            return None;
        }
        self.recent.push_back(now);
        let attempt = self.consecutive;
        self.consecutive = self.consecutive.saturating_add(1);
        Some(attempt)
    }

    pub(crate) fn limits(&self) -> Intensity {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_past_the_limit_is_refused() {
        let start = Instant::now();
        let mut h = RestartHistory::new(Intensity::new(2, Duration::from_secs(10)));
        assert_eq!(h.try_restart(start), Some(0));
        assert_eq!(h.try_restart(start + Duration::from_secs(1)), Some(1));
        assert_eq!(h.try_restart(start + Duration::from_secs(2)), None);
        // The first restart leaves the window at t = 10 s.
        assert_eq!(h.in_window(start + Duration::from_secs(10)), 1);
        assert_eq!(h.try_restart(start + Duration::from_secs(10)), Some(2));
    }

    #[test]
    fn zero_restarts_allowed_fails_on_the_first() {
        let mut h = RestartHistory::new(Intensity::new(0, Duration::from_secs(10)));
        assert_eq!(h.try_restart(Instant::now()), None);
    }

    #[test]
    fn a_stable_run_forgets_the_history() {
        let start = Instant::now();
        let limits =
            Intensity::new(5, Duration::from_secs(600)).stable_after(Duration::from_secs(5));
        let mut h = RestartHistory::new(limits);
        h.try_restart(start);
        h.try_restart(start);
        h.forget_if_stable(Some(start), start + Duration::from_secs(4));
        assert_eq!(h.in_window(start + Duration::from_secs(4)), 2);
        h.forget_if_stable(Some(start), start + Duration::from_secs(5));
        assert_eq!(h.in_window(start + Duration::from_secs(5)), 0);
        assert_eq!(h.try_restart(start + Duration::from_secs(5)), Some(0));
    }
}
