//! The reconnect delays of one loop: the family's [`Backoff`], counted from the last session
//! that worked, never shorter than its first delay.

use std::time::Duration;

use channel_core::Backoff;

/// Failures since the last session that worked, and the delays they call for.
#[derive(Clone, Debug)]
pub(crate) struct Reconnects {
    backoff: Backoff,
    failures: u32,
}

impl Reconnects {
    pub(crate) fn new(backoff: Backoff) -> Self {
        Self { backoff, failures: 0 }
    }

    /// Forgets earlier failures (after a session that worked).
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The next delay: jittered in the upper half of the backoff's ceiling, and never shorter
    /// than the first delay (so that many accounts do not reconnect in step).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.backoff.delay(self.failures).max(self.backoff.initial());
        self.failures = self.failures.saturating_add(1);
        delay.min(self.backoff.max().max(self.backoff.initial()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_bounds() {
        let mut b = Reconnects::new(Backoff::new(Duration::from_secs(2), Duration::from_secs(80)));
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
