//! Backoff for failed send attempts: exponential from a base, capped, jittered.

use std::time::Duration;

pub use channel_watchdog::Backoff;

/// How often and how patiently a job is retried: its attempts, and the family's one
/// [`Backoff`] between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the dead letter (default 10).
    pub max_attempts: i32,
    /// The delays: from 2 s after the first failed attempt, doubling up to 1 h.
    pub backoff: Backoff,
    /// Whether delays are jittered (default true).
    pub jitter: bool,
}

impl RetryPolicy {
    /// 10 attempts, from 2 s doubling up to 1 h, jittered.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(3600)),
        jitter: true,
    };

    /// The un-jittered delay after failed attempt `attempt` (1-based).
    ///
    /// ```
    /// use std::time::Duration;
    /// use channel_core::retry::RetryPolicy;
    /// let p = RetryPolicy::DEFAULT;
    /// assert_eq!(p.ceiling(1), Duration::from_secs(2));
    /// assert_eq!(p.ceiling(4), Duration::from_secs(16));
    /// assert_eq!(p.ceiling(30), Duration::from_secs(3600));
    /// ```
    pub fn ceiling(&self, attempt: i32) -> Duration {
        self.backoff.ceiling(u32::try_from(attempt.saturating_sub(1)).unwrap_or(0))
    }

    /// The delay after failed attempt `attempt`: with jitter, uniformly random between half
    /// the [`ceiling`](Self::ceiling) and the ceiling ([`Backoff::delay`]).
    pub fn delay(&self, attempt: i32) -> Duration {
        let n = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0);
        if self.jitter { self.backoff.delay(n) } else { self.backoff.ceiling(n) }
    }

    /// Whether attempt `attempt` was the last one allowed.
    pub fn is_last(&self, attempt: i32, max_attempts: i32) -> bool {
        attempt >= max_attempts
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_delays_stay_between_half_and_the_ceiling() {
        let p = RetryPolicy::DEFAULT;
        for attempt in 1..=12 {
            for _ in 0..50 {
                let d = p.delay(attempt);
                assert!(d >= p.ceiling(attempt) / 2 && d <= p.ceiling(attempt), "{attempt}: {d:?}");
            }
        }
        assert_eq!(RetryPolicy { jitter: false, ..p }.delay(3), Duration::from_secs(8));
        assert_eq!(p.ceiling(0), Duration::from_secs(2));
        assert_eq!(p.ceiling(i32::MAX), Duration::from_secs(3600));
    }
}
