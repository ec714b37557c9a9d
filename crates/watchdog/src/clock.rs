//! The watchdog's clocks: a monotonic millisecond clock relative to the watchdog's start (read
//! through `tokio::time::Instant`, so paused-clock tests control it), a coarse copy of it that
//! pings read, and the wall-clock [`Timestamp`] used in status reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tokio::time::Instant;

/// Monotonic milliseconds since the watchdog was built.
///
/// `coarse` is what [`LoopContext::ping`](crate::LoopContext::ping) copies: the monitor stores
/// the precise time into it on every check, so a ping is one relaxed load and one relaxed store
/// and never reads the OS clock.
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    coarse: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self { epoch: Instant::now(), coarse: AtomicU64::new(0) }
    }

    /// Precise milliseconds since the epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// Milliseconds since the epoch at `at`.
    pub(crate) fn ms_at(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.epoch))
    }

    /// The coarse clock, as of the last [`Clock::tick`].
    #[inline]
    pub(crate) fn coarse(&self) -> u64 {
        self.coarse.load(Ordering::Relaxed)
    }

    /// Reads the precise clock and publishes it as the coarse one; returns it.
    pub(crate) fn tick(&self) -> u64 {
        let now = self.now_ms();
        self.coarse.fetch_max(now, Ordering::Relaxed);
        now
    }

    /// Time since the watchdog was built.
    pub(crate) fn uptime(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A wall-clock instant, serialized as an RFC 3339 UTC string with milliseconds
/// (`"2025-01-31T08:15:02.250Z"`).
///
/// Status reports carry wall-clock time so a person reading a health endpoint or a heartbeat
/// row can tell when something happened; supervision itself only uses the monotonic clock.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use channel_watchdog::Timestamp;
///
/// let t = Timestamp::from(UNIX_EPOCH + Duration::from_millis(1_738_311_302_250));
/// assert_eq!(t.to_string(), "2025-01-31T08:15:02.250Z");
/// assert_eq!(t.unix_millis(), 1_738_311_302_250);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// Milliseconds since the Unix epoch (0 for times before it).
    pub fn unix_millis(&self) -> u64 {
        self.0.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
    }

    /// The underlying [`SystemTime`].
    pub fn system_time(&self) -> SystemTime {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Self(t)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.unix_millis();
        let secs = ms / 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            ms % 1000
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Proleptic Gregorian date of the given day count since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a "year"; eras are the
    // 400-year Gregorian cycles of 146 097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(ms: u64) -> String {
        Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    }

    #[test]
    fn formats_known_dates_as_rfc3339() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(fmt(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(fmt(1_709_251_199_000), "2024-02-29T23:59:59.000Z");
        assert_eq!(fmt(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn serializes_as_a_string() {
        let json = serde_json::to_string(&Timestamp::from(UNIX_EPOCH)).unwrap();
        assert_eq!(json, "\"1970-01-01T00:00:00.000Z\"");
    }
}
