//! Backoff for failed send attempts: exponential from a base, capped, jittered.

use std::time::Duration;

/// How often and how patiently a job is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the dead letter (default 10).
    pub max_attempts: i32,
    /// The delay after the first failed attempt (default 2 s).
    pub base: Duration,
    /// The longest delay (default 1 h).
    pub cap: Duration,
    /// Whether delays are jittered (default true).
    pub jitter: bool,
}

impl RetryPolicy {
    /// 10 attempts, from 2 s doubling up to 1 h, jittered.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        base: Duration::from_secs(2),
        cap: Duration::from_secs(3600),
        jitter: true,
    };

    /// The un-jittered delay after failed attempt `attempt` (1-based): `base * 2^(attempt-1)`,
    /// at most `cap`.
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
        let exp = u32::try_from(attempt.saturating_sub(1).max(0)).unwrap_or(0).min(31);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }

    /// The delay after failed attempt `attempt`: with jitter, uniformly random between half
    /// the [`ceiling`](Self::ceiling) and the ceiling ("equal jitter": never much shorter than
    /// planned, yet retries of many jobs spread out).
    pub fn delay(&self, attempt: i32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter {
            return ceiling;
        }
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(if spread == 0 { 0 } else { rand::random_range(0..=spread) })
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
