//! When a loop is restarted ([`RestartPolicy`]) and how long it waits first ([`Backoff`]).

use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::WatchdogError;

/// Which endings of a loop lead to a restart, with the meanings of Erlang/OTP's child specs.
///
/// | the loop's task…                          | `Permanent` | `Transient` | `Temporary` |
/// |-------------------------------------------|:-----------:|:-----------:|:-----------:|
/// | returns `Ok(())`                          | restart     | completed   | completed   |
/// | returns `Err(_)`                          | restart     | restart     | exited      |
/// | panics                                    | restart     | restart     | exited      |
/// | stays silent longer than `max_silence`    | restart     | restart     | exited      |
///
/// A loop stopped by [`Watchdog::shutdown`](crate::Watchdog::shutdown) is never restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Always restarted, even when it returns `Ok(())`: a loop that is meant to run forever.
    #[default]
    Permanent,
    /// Restarted only when it ends abnormally (error, panic, silence); `Ok(())` means done.
    Transient,
    /// Never restarted; a silent temporary loop is still cancelled and aborted.
    Temporary,
}

impl RestartPolicy {
    /// Whether a loop that ended this way is started again.
    pub(crate) fn restarts(self, ending: Ending) -> bool {
        match self {
            RestartPolicy::Permanent => true,
            RestartPolicy::Transient => ending != Ending::Returned,
            RestartPolicy::Temporary => false,
        }
    }
}

/// How a loop's run ended, as far as the restart policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Returned `Ok(())`.
    Returned,
    /// Returned an error, panicked, or stayed silent.
    Abnormal,
}

/// Jittered exponential backoff between a loop's failure and its restart.
///
/// The n-th consecutive restart (counting from 0) waits a random duration in
/// `[d/2, d]` where `d = min(max, initial × 2ⁿ)` ("equal jitter"): restarts of many loops that
/// failed together spread out instead of stampeding. The count of consecutive restarts starts
/// again from 0 after the loop has run for the [`Intensity`](crate::Intensity)'s stable period.
///
/// Default: `initial` 1 s, `max` 60 s.
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// assert_eq!(backoff.initial(), Duration::from_millis(100));
/// assert_eq!(backoff.max(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backoff {
    #[serde(rename = "initial_ms", serialize_with = "crate::status::as_millis")]
    initial: Duration,
    #[serde(rename = "max_ms", serialize_with = "crate::status::as_millis")]
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

impl Backoff {
    /// A backoff starting at `initial` and doubling up to `max`; checked when the loop or
    /// watchdog using it is registered or built.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The delay before the first restart (before jitter).
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The ceiling of the delay (before jitter).
    pub fn max(&self) -> Duration {
        self.max
    }

    pub(crate) fn validate(&self) -> Result<(), WatchdogError> {
        if self.initial.is_zero() {
            return Err(WatchdogError::ZeroDuration { setting: "backoff.initial" });
        }
        if self.max.is_zero() {
            return Err(WatchdogError::ZeroDuration { setting: "backoff.max" });
        }
        if self.max < self.initial {
            return Err(WatchdogError::BackoffRange { initial: self.initial, max: self.max });
        }
        Ok(())
    }

    /// The un-jittered delay before retry number `attempt` (0-based): `initial * 2^attempt`,
    /// at most `max`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use channel_watchdog::Backoff;
    /// let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    /// assert_eq!(b.ceiling(0), Duration::from_secs(2));
    /// assert_eq!(b.ceiling(3), Duration::from_secs(16));
    /// assert_eq!(b.ceiling(99), Duration::from_secs(60));
    /// ```
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.checked_mul(factor).map_or(self.max, |d| d.min(self.max))
    }

    /// The jittered delay before retry number `attempt` (0-based): uniform in `[d/2, d]` for
    /// the [`ceiling`](Self::ceiling) `d` ("equal jitter": never much shorter than planned,
    /// yet many retries spread out).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = crate::clock::millis(ceiling - half);
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_secs(1));
        assert_eq!(b.ceiling(1), Duration::from_secs(2));
        assert_eq!(b.ceiling(5), Duration::from_secs(32));
        assert_eq!(b.ceiling(6), Duration::from_secs(60));
        assert_eq!(b.ceiling(1000), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let b = Backoff::default();
        for attempt in 0..10 {
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt), "{d:?}");
            }
        }
    }

    #[test]
    fn policies_follow_otp() {
        use Ending::*;
        assert!(RestartPolicy::Permanent.restarts(Returned));
        assert!(RestartPolicy::Permanent.restarts(Abnormal));
        assert!(!RestartPolicy::Transient.restarts(Returned));
        assert!(RestartPolicy::Transient.restarts(Abnormal));
        assert!(!RestartPolicy::Temporary.restarts(Returned));
        assert!(!RestartPolicy::Temporary.restarts(Abnormal));
    }
}
