//! The engine's settings: [`EngineConfig`], read through its getters and set through the
//! [`EngineBuilder`](crate::EngineBuilder)'s methods of the same names. Each setting and its
//! default are listed once, in [`settings!`].

use std::time::Duration;

use crate::channel::HistoryRequest;
use crate::engine::EngineBuilder;
use crate::error::EngineError;
use crate::events::DEFAULT_EVENT_CAPACITY;
use crate::model::LifecyclePolicy;
use crate::retry::RetryPolicy;
use crate::validate::Limits;

/// The default timeout of one database operation: 10 s.
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(10);
/// The default timeout of one `Channel::send`: 30 s.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The default timeout of one `Channel::fetch_history`: 60 s.
pub const DEFAULT_HISTORY_TIMEOUT: Duration = Duration::from_secs(60);

/// Declares every setting once: the field, its getter on [`EngineConfig`], its setter on
/// [`EngineBuilder`] and its default.
macro_rules! settings {
    ($( $(#[$doc:meta])* $name:ident: $ty:ty = $default:expr; )*) => {
        /// The engine's settings, read through one getter per setting. Set them with the
        /// [`EngineBuilder`] method of the same name; [`EngineBuilder::build`] validates them
        /// (see [`EngineConfig::validate`]).
        #[derive(Clone, Debug)]
        pub struct EngineConfig {
            $( pub(crate) $name: $ty, )*
        }

        impl Default for EngineConfig {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        impl EngineConfig {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> $ty {
                    self.$name.clone()
                }
            )*
        }

        impl EngineBuilder {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> Self {
                    self.config.$name = value;
                    self
                }
            )*
        }
    };
}

settings! {
    /// This process's name in job and named leases (default `worker-<pid>-<random>`).
    worker_id: String = format!(
        "worker-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    /// Timeout of each database operation (10 s).
    db_timeout: Duration = DEFAULT_DB_TIMEOUT;
    /// Timeout of each `Channel::send` (30 s).
    send_timeout: Duration = DEFAULT_SEND_TIMEOUT;
    /// Timeout of each `Channel::fetch_history` (60 s).
    history_timeout: Duration = DEFAULT_HISTORY_TIMEOUT;
    /// Retries of send and history jobs (10 attempts, from 2 s doubling to 1 h, jittered).
    retry: RetryPolicy = RetryPolicy::DEFAULT;
    /// History page size when a request gives none (100).
    history_limit: usize = 100;
    /// Largest history page (500, also the most a channel fetches:
    /// [`HistoryRequest::MAX_LIMIT`]).
    history_max: usize = HistoryRequest::MAX_LIMIT;
    /// Lease of a claimed job; past it the job is rescued (90 s: longer than any timeout).
    job_lease_ttl: Duration = Duration::from_secs(90);
    /// Jobs claimed at once by the dispatcher (16).
    claim_batch: usize = 16;
    /// Longest sleep of an idle dispatcher between looks at the queue (30 s).
    poll_interval: Duration = Duration::from_secs(30);
    /// How long a job waits when its account needs a login or is disabled (5 min).
    needs_login_snooze: Duration = Duration::from_secs(300);
    /// How long a job waits when its account is connected by another process (2 s).
    elsewhere_snooze: Duration = Duration::from_secs(2);
    /// How long a job of an account whose channel does not run in this process must have been
    /// due before this process claims it (5 s): the worker running the account takes its
    /// sends first, and a job whose account runs nowhere is still handled after the wait
    /// (see [`QueueStore::claim_preferring`](crate::QueueStore::claim_preferring)). Zero
    /// claims any due job at once.
    others_claim_after: Duration = Duration::from_secs(5);
    /// How often the leader rescues jobs of crashed workers (15 s).
    rescue_interval: Duration = Duration::from_secs(15);
    /// How often the leader schedules lifecycle sweeps (60 s).
    sweep_interval: Duration = Duration::from_secs(60);
    /// Conversations handled per sweep round (500).
    sweep_batch: usize = 500;
    /// Named leases (leader, accounts): time to live (15 s).
    lease_ttl: Duration = Duration::from_secs(15);
    /// Named leases: renewal period (5 s; shorter than `lease_ttl`).
    lease_renew_every: Duration = Duration::from_secs(5);
    /// Lifecycle policy of accounts without their own.
    default_lifecycle: LifecyclePolicy = LifecyclePolicy::default();
    /// Field limits of stored messages.
    limits: Limits = Limits::DEFAULT;
    /// Capacity of the in-process event channel (1024).
    event_capacity: usize = DEFAULT_EVENT_CAPACITY;
    /// How long the durable feed keeps events that every consumer passed, and how long a
    /// consumer may stay unseen before it is unregistered (7 days).
    feed_retention: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Longest wait of a feed consumer between looks at the feed when no in-process event
    /// wakes it (1 s; events of other processes and of transactions that committed late).
    feed_poll_interval: Duration = Duration::from_secs(1);
    /// How often a worker writes its heartbeat row (15 s; stale after three missed beats).
    heartbeat_interval: Duration = Duration::from_secs(15);
}

impl EngineBuilder {
    /// History page sizes: the default and the largest (see
    /// [`history_limit`](Self::history_limit) and [`history_max`](Self::history_max)).
    pub fn history_limits(self, default: usize, max: usize) -> Self {
        self.history_limit(default).history_max(max)
    }

    /// Named-lease timing: time to live and renewal period.
    pub fn leases(self, ttl: Duration, renew_every: Duration) -> Self {
        self.lease_ttl(ttl).lease_renew_every(renew_every)
    }
}

impl EngineConfig {
    /// Checks every setting, naming the first one out of range in
    /// [`EngineError::InvalidSetting`]: durations and counts must be non-zero, the retry policy
    /// must allow at least one attempt, the worker id must not be empty, the default history
    /// page must fit the largest, a job's lease must outlast the send and history timeouts, and
    /// named leases must be renewed before they expire. [`EngineBuilder::build`] calls it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use channel_core::{BlobStore, Engine, EngineError, state::StateKey, testing::MemoryStore};
    /// let built = Engine::builder(Arc::new(MemoryStore::new()), StateKey::generate())
    ///     .blob_store(BlobStore::in_memory())
    ///     .sweep_interval(Duration::ZERO)
    ///     .build();
    /// assert!(matches!(built, Err(EngineError::InvalidSetting { setting: "sweep_interval", .. })));
    /// ```
    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid = |setting, reason| Err(EngineError::InvalidSetting { setting, reason });
        let durations = [
            ("db_timeout", self.db_timeout),
            ("send_timeout", self.send_timeout),
            ("history_timeout", self.history_timeout),
            ("job_lease_ttl", self.job_lease_ttl),
            ("poll_interval", self.poll_interval),
            ("needs_login_snooze", self.needs_login_snooze),
            ("elsewhere_snooze", self.elsewhere_snooze),
            ("rescue_interval", self.rescue_interval),
            ("sweep_interval", self.sweep_interval),
            ("lease_ttl", self.lease_ttl),
            ("lease_renew_every", self.lease_renew_every),
            ("feed_retention", self.feed_retention),
            ("feed_poll_interval", self.feed_poll_interval),
            ("heartbeat_interval", self.heartbeat_interval),
            ("retry.backoff.initial", self.retry.backoff.initial()),
            ("retry.backoff.max", self.retry.backoff.max()),
        ];
        if let Some((setting, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return invalid(setting, "must be longer than zero");
        }
        let counts = [
            ("claim_batch", self.claim_batch),
            ("sweep_batch", self.sweep_batch),
            ("event_capacity", self.event_capacity),
            ("history_limit", self.history_limit),
            ("history_max", self.history_max),
        ];
        if let Some((setting, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return invalid(setting, "must be at least 1");
        }
        if self.history_max > HistoryRequest::MAX_LIMIT {
            return invalid(
                "history_max",
                "must be at most 500 (HistoryRequest::MAX_LIMIT, the largest page a channel fetches)",
            );
        }
        if self.history_limit > self.history_max {
            return invalid("history_limit", "must not be larger than history_max");
        }
        if self.retry.max_attempts < 1 {
            return invalid("retry.max_attempts", "must be at least 1");
        }
        if self.retry.backoff.max() < self.retry.backoff.initial() {
            return invalid("retry.backoff.max", "must not be shorter than retry.backoff.initial");
        }
        if self.worker_id.trim().is_empty() {
            return invalid("worker_id", "must not be empty");
        }
        if self.job_lease_ttl <= self.send_timeout || self.job_lease_ttl <= self.history_timeout {
            return invalid(
                "job_lease_ttl",
                "must be longer than send_timeout and history_timeout",
            );
        }
        if self.lease_renew_every >= self.lease_ttl {
            return invalid("lease_renew_every", "must be shorter than lease_ttl");
        }
        Ok(())
    }
}
