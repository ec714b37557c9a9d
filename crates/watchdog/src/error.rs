//! Error types: bad configuration, and the errors loops and sinks return.

use std::time::Duration;

/// The error a supervised loop returns; any error type that is `Send + Sync` converts into it
/// with `?` or `.into()`.
pub type LoopError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a supervised loop's future resolves to.
pub type LoopResult = Result<(), LoopError>;

/// The error a [`HeartbeatSink`](crate::HeartbeatSink) returns when it could not record a beat.
pub type SinkError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Bad input to the watchdog: a configuration it refuses, or a call it cannot honour.
///
/// Every variant's message says what to change. Nothing in this crate panics on bad input; it
/// returns one of these instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchdogError {
    /// A duration that must be positive was zero.
    #[error(
        "`{setting}` must be greater than zero; pass a positive duration \
         (for example Duration::from_millis(1) for \"almost immediately\")"
    )]
    ZeroDuration {
        /// The setting, for example `"max_silence"` or `"check_interval"`.
        setting: &'static str,
    },

    /// A loop was registered with an empty name.
    #[error(
        "a loop name must not be empty; give every loop a short, unique name such as \"imap-idle\""
    )]
    EmptyName,

    /// A loop with the same name is already registered.
    #[error(
        "a loop named `{name}` is already registered; loop names must be unique, \
         so choose another name (for example append an account or shard id)"
    )]
    DuplicateName {
        /// The name that was already taken.
        name: String,
    },

    /// `register` was called after `shutdown` had started.
    #[error(
        "the watchdog is shutting down or has shut down, so it accepts no new loops; \
         register loops before calling shutdown(), or build a new Watchdog"
    )]
    ShutDown,

    /// The backoff ceiling is below its starting delay.
    #[error(
        "backoff maximum ({max:?}) is below its initial delay ({initial:?}); \
         set max to at least the initial delay"
    )]
    BackoffRange {
        /// The initial delay given.
        initial: Duration,
        /// The maximum delay given.
        max: Duration,
    },

    /// A timeout that must fit inside a period does not.
    #[error(
        "`{setting}` ({value:?}) must be shorter than `{limit_setting}` ({limit:?}); \
         shorten the first or lengthen the second"
    )]
    TooLong {
        /// The setting that is too long.
        setting: &'static str,
        /// Its value.
        value: Duration,
        /// The setting it must fit inside.
        limit_setting: &'static str,
        /// That setting's value.
        limit: Duration,
    },

    /// `build()` (or the stall detector) was called outside a tokio runtime.
    #[error(
        "no tokio runtime is running on this thread; call build() from inside a tokio runtime \
         (for example in #[tokio::main]) or enter one with Runtime::enter()"
    )]
    NoRuntime,

    /// The stall detector's OS thread could not be started.
    #[error(
        "could not start the runtime-stall detector thread ({0}); check the process's thread limit"
    )]
    StallThread(#[source] std::io::Error),
}
