//! Typed timeouts for the operations a service's loops perform: [`timeout`], [`TimeoutError`]
//! and the default set [`Timeouts`].

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::WatchdogError;
use crate::status::as_millis;

/// An operation did not finish in time.
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::TimeoutError;
///
/// let e = TimeoutError::new("send", Duration::from_secs(30));
/// assert_eq!(e.to_string(), "operation `send` timed out after 30s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation `{operation}` timed out after {after:?}")]
pub struct TimeoutError {
    /// The operation's name, as passed to [`timeout`].
    pub operation: Cow<'static, str>,
    /// The time limit that passed.
    pub after: Duration,
}

impl TimeoutError {
    /// A timeout of `operation` after `after`.
    pub fn new(operation: impl Into<Cow<'static, str>>, after: Duration) -> Self {
        Self { operation: operation.into(), after }
    }
}

/// Runs `future` for at most `after`; past that it is dropped and a [`TimeoutError`] naming the
/// operation is returned, and the `watchdog_timeouts_total{operation}` counter is incremented.
///
/// A zero `after` gives the future a single poll.
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::timeout;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let fast = timeout("resolve_peer", Duration::from_secs(15), async { 42 }).await;
/// assert_eq!(fast, Ok(42));
///
/// let slow = timeout("send", Duration::from_secs(30), std::future::pending::<()>()).await;
/// let error = slow.unwrap_err();
/// assert_eq!(error.operation, "send");
/// assert_eq!(error.after, Duration::from_secs(30));
/// # }
/// ```
pub async fn timeout<F: Future>(
    operation: impl Into<Cow<'static, str>>,
    after: Duration,
    future: F,
) -> Result<F::Output, TimeoutError> {
    match tokio::time::timeout(after, future).await {
        Ok(output) => Ok(output),
        Err(_) => {
            let operation = operation.into();
            metrics::counter!("watchdog_timeouts_total", "operation" => operation.clone())
                .increment(1);
            tracing::warn!(%operation, ?after, "operation timed out");
            Err(TimeoutError { operation, after })
        }
    }
}

/// Time limits for the usual operations of a messaging service, with the defaults of the system
/// this crate replaces.
///
/// | field          | default |
/// |----------------|---------|
/// | `send`         | 30 s    |
/// | `resolve_peer` | 15 s    |
/// | `media`        | 60 s    |
/// | `database`     | 10 s    |
/// | `loop_cycle`   | 120 s   |
///
/// ```
/// use std::time::Duration;
/// use channel_watchdog::{timeout, Timeouts};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limits = Timeouts { database: Duration::from_secs(5), ..Timeouts::default() };
/// limits.validate().unwrap();
/// let rows = timeout("database", limits.database, async { vec![1, 2, 3] }).await;
/// assert_eq!(rows.unwrap().len(), 3);
/// assert_eq!(Timeouts::default().send, Duration::from_secs(30));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Sending a message.
    #[serde(rename = "send_ms", serialize_with = "as_millis")]
    pub send: Duration,
    /// Resolving a peer (user, chat, address).
    #[serde(rename = "resolve_peer_ms", serialize_with = "as_millis")]
    pub resolve_peer: Duration,
    /// Uploading or downloading media.
    #[serde(rename = "media_ms", serialize_with = "as_millis")]
    pub media: Duration,
    /// One database call.
    #[serde(rename = "database_ms", serialize_with = "as_millis")]
    pub database: Duration,
    /// One cycle of a loop.
    #[serde(rename = "loop_cycle_ms", serialize_with = "as_millis")]
    pub loop_cycle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            send: Duration::from_secs(30),
            resolve_peer: Duration::from_secs(15),
            media: Duration::from_secs(60),
            database: Duration::from_secs(10),
            loop_cycle: Duration::from_secs(120),
        }
    }
}

impl Timeouts {
    /// Checks that no limit is zero.
    pub fn validate(&self) -> Result<(), WatchdogError> {
        for (setting, value) in [
            ("timeouts.send", self.send),
            ("timeouts.resolve_peer", self.resolve_peer),
            ("timeouts.media", self.media),
            ("timeouts.database", self.database),
            ("timeouts.loop_cycle", self.loop_cycle),
        ] {
            if value.is_zero() {
                return Err(WatchdogError::ZeroDuration { setting });
            }
        }
        Ok(())
    }
}
