//! Jittered exponential backoff between reconnects.

use std::time::Duration;

use rand::Rng;

use crate::config::BackoffConfig;

/// Delays that double from `min` up to `max`, each drawn uniformly from its upper half
/// (so that many accounts do not reconnect in step).
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// Forgets earlier failures (after a session that worked).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let min = self.config.min.max(Duration::from_millis(1));
        let max = self.config.max.max(min);
        let ceiling = min.saturating_mul(1u32 << self.attempt.min(20)).min(max);
        self.attempt = self.attempt.saturating_add(1);
        let floor = (ceiling / 2).max(min).min(ceiling);
        let span = u64::try_from((ceiling - floor).as_millis()).unwrap_or(u64::MAX);
        floor + Duration::from_millis(rand::rng().random_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_bounds() {
        let cfg = BackoffConfig { min: Duration::from_secs(2), max: Duration::from_secs(80) };
        let mut b = Backoff::new(cfg);
        let mut last = Duration::ZERO;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d >= Duration::from_secs(2), "{d:?}");
            assert!(d <= Duration::from_secs(80), "{d:?}");
            last = d;
        }
        assert!(last >= Duration::from_secs(40));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }
}
