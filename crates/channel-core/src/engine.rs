//! The [`Engine`]: the store, the blob store, the state cipher, the event bus and the
//! configuration that ingest, send, the dispatcher and the lifecycle sweep share.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::blob::BlobStore;
use crate::channel::{Channel, HistoryRequest};
use crate::clock::{Clock, SystemClock};
use crate::error::{EngineError, with_timeout};
use crate::events::{DEFAULT_EVENT_CAPACITY, EventBus, JOBS_TOPIC};
use crate::model::*;
use crate::provider::{Provider, Providers};
use crate::retry::RetryPolicy;
use crate::send_policy::{RateLimitPolicy, SendPolicy, StorePolicyMemory};
use crate::state::{AccountState, StateCipher, StateKeys};
use crate::store::{Notification, Store, StoreError};
use crate::validate::Limits;

/// The default timeout of one database operation: 10 s.
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(10);
/// The default timeout of one `Channel::send`: 30 s.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The default timeout of one `Channel::fetch_history`: 60 s.
pub const DEFAULT_HISTORY_TIMEOUT: Duration = Duration::from_secs(60);

/// The engine's settings. Build them with [`EngineBuilder`]; every field has a documented
/// default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// This process's name in job and named leases (default `worker-<pid>-<random>`).
    pub worker_id: String,
    /// Timeout of each database operation (10 s).
    pub db_timeout: Duration,
    /// Timeout of each `Channel::send` (30 s).
    pub send_timeout: Duration,
    /// Timeout of each `Channel::fetch_history` (60 s).
    pub history_timeout: Duration,
    /// Retries of send and history jobs (10 attempts, from 2 s doubling to 1 h, jittered).
    pub retry: RetryPolicy,
    /// History page size when none is given (100).
    pub history_limit: usize,
    /// Largest history page (500).
    pub history_max: usize,
    /// Lease of a claimed job; past it the job is rescued (90 s: longer than any timeout).
    pub job_lease_ttl: Duration,
    /// Jobs claimed at once by the dispatcher (16).
    pub claim_batch: usize,
    /// Longest sleep of an idle dispatcher between looks at the queue (30 s).
    pub poll_interval: Duration,
    /// How long a job waits when its account needs a login or is disabled (5 min).
    pub needs_login_snooze: Duration,
    /// How long a job waits when its account is connected by another process (2 s).
    pub elsewhere_snooze: Duration,
    /// How often the leader rescues jobs of crashed workers (15 s).
    pub rescue_interval: Duration,
    /// How often the leader schedules lifecycle sweeps (60 s).
    pub sweep_interval: Duration,
    /// Conversations handled per sweep round (500).
    pub sweep_batch: usize,
    /// Named leases (leader, accounts): time to live (15 s).
    pub lease_ttl: Duration,
    /// Named leases: renewal period (5 s).
    pub lease_renew_every: Duration,
    /// Lifecycle policy of accounts without their own.
    pub default_lifecycle: LifecyclePolicy,
    /// Field limits of stored messages.
    pub limits: Limits,
    /// Capacity of the in-process event channel (1024).
    pub event_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            worker_id: format!(
                "worker-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            db_timeout: DEFAULT_DB_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            history_timeout: DEFAULT_HISTORY_TIMEOUT,
            retry: RetryPolicy::DEFAULT,
            history_limit: 100,
            history_max: 500,
            job_lease_ttl: Duration::from_secs(90),
            claim_batch: 16,
            poll_interval: Duration::from_secs(30),
            needs_login_snooze: Duration::from_secs(300),
            elsewhere_snooze: Duration::from_secs(2),
            rescue_interval: Duration::from_secs(15),
            sweep_interval: Duration::from_secs(60),
            sweep_batch: 500,
            lease_ttl: Duration::from_secs(15),
            lease_renew_every: Duration::from_secs(5),
            default_lifecycle: LifecyclePolicy::default(),
            limits: Limits::DEFAULT,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

impl EngineConfig {
    /// Checks every setting on its own: durations and counts must be non-zero, the retry
    /// policy must allow at least one attempt, ids and domains must not be empty.
    /// [`EngineBuilder::build`] calls it (and also checks how settings relate).
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
            ("retry.backoff.initial", self.retry.backoff.initial()),
            ("retry.backoff.max", self.retry.backoff.max()),
        ];
        for (setting, d) in durations {
            if d.is_zero() {
                return Err(EngineError::InvalidSetting {
                    setting,
                    reason: "must be longer than zero",
                });
            }
        }
        let counts = [
            ("claim_batch", self.claim_batch),
            ("sweep_batch", self.sweep_batch),
            ("event_capacity", self.event_capacity),
            ("history_limit", self.history_limit),
            ("history_max", self.history_max),
        ];
        for (setting, n) in counts {
            if n == 0 {
                return Err(EngineError::InvalidSetting { setting, reason: "must be at least 1" });
            }
        }
        if self.history_max > HistoryRequest::MAX_LIMIT {
            return Err(EngineError::InvalidSetting {
                setting: "history_max",
                reason: "must be at most 500 (HistoryRequest::MAX_LIMIT, the largest page a channel fetches)",
            });
        }
        if self.retry.max_attempts < 1 {
            return Err(EngineError::InvalidSetting {
                setting: "retry.max_attempts",
                reason: "must be at least 1",
            });
        }
        if self.retry.backoff.max() < self.retry.backoff.initial() {
            return Err(EngineError::InvalidSetting {
                setting: "retry.backoff.max",
                reason: "must not be shorter than retry.backoff.initial",
            });
        }
        if self.worker_id.trim().is_empty() {
            return Err(EngineError::InvalidSetting {
                setting: "worker_id",
                reason: "must not be empty",
            });
        }
        Ok(())
    }
}

/// Builds an [`Engine`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use channel_core::{BlobStore, Engine, state::StateKey, testing::MemoryStore};
///
/// let engine = Engine::builder(Arc::new(MemoryStore::new()), StateKey::generate())
///     .blob_store(BlobStore::in_memory())
///     .send_timeout(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// assert_eq!(engine.config().send_timeout, Duration::from_secs(10));
/// assert_eq!(engine.config().db_timeout, Duration::from_secs(10));
/// ```
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    keys: StateKeys,
    blobs: Option<BlobStore>,
    blob_dir: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    send_policy: Option<Arc<dyn SendPolicy>>,
    providers: Providers,
    config: EngineConfig,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl EngineBuilder {
    /// Attachments in this blob store.
    pub fn blob_store(mut self, blobs: BlobStore) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// Attachments in a local directory (the usual choice; created if missing).
    pub fn blob_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.blob_dir = Some(dir.into());
        self
    }

    /// The clock (default: the system clock; tests use [`TokioClock`](crate::clock::TokioClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The send policy (default: [`RateLimitPolicy::default`], its counters kept in the
    /// store: [`StorePolicyMemory`]).
    pub fn send_policy(mut self, policy: Arc<dyn SendPolicy>) -> Self {
        self.send_policy = Some(policy);
        self
    }

    /// Registers a provider (see [`Provider`]): the engine asks it for the idempotency keys of
    /// its accounts' sends, and a [`Runtime`](crate::runtime::Runtime) built with
    /// [`Runtime::with_providers`](crate::runtime::Runtime::with_providers) creates their
    /// channels with it. Register every provider in every process that queues sends for its
    /// accounts.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(provider);
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    setter!(
        /// This process's worker id.
        worker_id: String
    );
    setter!(
        /// Timeout of each database operation.
        db_timeout: Duration
    );
    setter!(
        /// Timeout of each send.
        send_timeout: Duration
    );
    setter!(
        /// Timeout of each history fetch.
        history_timeout: Duration
    );
    setter!(
        /// Retry policy of jobs.
        retry: RetryPolicy
    );
    setter!(
        /// Lease of a claimed job.
        job_lease_ttl: Duration
    );
    setter!(
        /// Lifecycle policy of accounts without their own.
        default_lifecycle: LifecyclePolicy
    );
    setter!(
        /// Field limits.
        limits: Limits
    );

    setter!(
        /// Jobs claimed at once by the dispatcher (at least 1).
        claim_batch: usize
    );
    setter!(
        /// Longest sleep of an idle dispatcher between looks at the queue (non-zero).
        poll_interval: Duration
    );
    setter!(
        /// How long a job waits when its account needs a login or is disabled (non-zero).
        needs_login_snooze: Duration
    );
    setter!(
        /// How long a job waits when its account is connected by another process (non-zero).
        elsewhere_snooze: Duration
    );
    setter!(
        /// How often the leader rescues jobs of crashed workers (non-zero).
        rescue_interval: Duration
    );
    setter!(
        /// How often the leader schedules lifecycle sweeps (non-zero).
        sweep_interval: Duration
    );
    setter!(
        /// Conversations handled per sweep round (at least 1).
        sweep_batch: usize
    );
    setter!(
        /// Capacity of the in-process event channel (at least 1).
        event_capacity: usize
    );

    /// History page sizes: the default and the largest.
    pub fn history_limits(mut self, default: usize, max: usize) -> Self {
        self.config.history_limit = default.max(1);
        self.config.history_max = max.max(self.config.history_limit);
        self
    }

    /// Named-lease timing: time to live and renewal period.
    pub fn leases(mut self, ttl: Duration, renew_every: Duration) -> Self {
        self.config.lease_ttl = ttl;
        self.config.lease_renew_every = renew_every;
        self
    }

    /// The engine. Fails with [`EngineError::InvalidSetting`] when a setting is out of range
    /// (a zero duration or count: see [`EngineConfig::validate`]), and with
    /// [`EngineError::Config`] when no blob store is configured, the blob directory can't be
    /// created, or settings contradict each other.
    pub fn build(self) -> Result<Engine, EngineError> {
        let blobs = match (self.blobs, self.blob_dir) {
            (Some(b), _) => b,
            (None, Some(dir)) => BlobStore::local(dir)?,
            (None, None) => {
                return Err(EngineError::Config(
                    "no blob store: call .blob_dir(path) or .blob_store(BlobStore::in_memory())"
                        .into(),
                ));
            }
        };
        self.config.validate()?;
        if self.config.job_lease_ttl <= self.config.send_timeout
            || self.config.job_lease_ttl <= self.config.history_timeout
        {
            return Err(EngineError::Config(
                "job_lease_ttl must exceed the send and history timeouts".into(),
            ));
        }
        if self.config.lease_renew_every >= self.config.lease_ttl {
            return Err(EngineError::Config(
                "leases must be renewed more often than they expire".into(),
            ));
        }
        let events = EventBus::new(
            Arc::clone(&self.store),
            self.config.worker_id.clone(),
            self.config.event_capacity,
            self.config.db_timeout,
        );
        let send_policy = self.send_policy.unwrap_or_else(|| {
            let memory = StorePolicyMemory::new(Arc::clone(&self.store));
            Arc::new(RateLimitPolicy::default().remembered_in(Arc::new(memory)))
        });
        Ok(Engine {
            inner: Arc::new(Inner {
                cipher: Arc::new(StateCipher::from_keys(&self.keys)),
                store: self.store,
                blobs,
                clock: self.clock,
                send_policy,
                events,
                wake: Notify::new(),
                channels: RwLock::new(HashMap::new()),
                settings: RwLock::new(HashMap::new()),
                known_accounts: RwLock::new(HashSet::new()),
                providers: RwLock::new(self.providers),
                config: self.config,
            }),
        })
    }
}

/// The durable engine: idempotent ingest, outbound sends through the job queue, history
/// syncs and the conversation lifecycle. Cheap to clone (one `Arc`).
///
/// Channels are run by the [`Runtime`](crate::runtime::Runtime), which attaches each connected
/// account's channel while it holds the account's lease; the dispatcher sends only through
/// attached channels.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: BlobStore,
    pub(crate) cipher: Arc<StateCipher>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) send_policy: Arc<dyn SendPolicy>,
    pub(crate) events: EventBus,
    pub(crate) wake: Notify,
    pub(crate) channels: RwLock<HashMap<AccountId, Arc<dyn Channel>>>,
    /// The stored settings of the accounts this process has seen, refreshed from the store
    /// by the runtime's lease loop and by updates made here.
    pub(crate) settings: RwLock<HashMap<AccountId, AccountSettings>>,
    pub(crate) known_accounts: RwLock<HashSet<AccountId>>,
    pub(crate) providers: RwLock<Providers>,
    pub(crate) config: EngineConfig,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("worker_id", &self.inner.config.worker_id)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts building an engine on `store`, encrypting account state under `state_keys`: a
    /// [`StateKey`](crate::state::StateKey), or a keyring ([`StateKeys`]) whose first key
    /// seals and whose every key opens.
    pub fn builder(store: Arc<dyn Store>, state_keys: impl Into<StateKeys>) -> EngineBuilder {
        EngineBuilder {
            store,
            keys: state_keys.into(),
            blobs: None,
            blob_dir: None,
            clock: Arc::new(SystemClock),
            send_policy: None,
            providers: Providers::new(),
            config: EngineConfig::default(),
        }
    }

    /// Registers a provider after the engine was built (what
    /// [`RuntimeBuilder::provider`](crate::runtime::RuntimeBuilder::provider) does).
    pub fn register_provider(&self, provider: Arc<dyn Provider>) {
        write(&self.inner.providers).insert(provider);
    }

    /// The provider of `kind`, if this process has it.
    pub fn provider(&self, kind: &ChannelKind) -> Option<Arc<dyn Provider>> {
        read(&self.inner.providers).get(kind).cloned()
    }

    /// The providers this process has.
    pub fn providers(&self) -> Providers {
        read(&self.inner.providers).clone()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// A subscription to the events published from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The engine's current time.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The encrypted state of an account.
    pub fn account_state(&self, account: AccountId) -> AccountState {
        AccountState::new(Arc::clone(&self.inner.store), Arc::clone(&self.inner.cipher), account)
            .with_timeout(self.inner.config.db_timeout)
    }

    /// Attaches the channel that sends for `account` in this process. Only the runtime does,
    /// while it holds the account's lease, so that no second live session opens (tests:
    /// [`testing::attach_channel`](crate::testing::attach_channel)). A service cannot:
    ///
    /// ```compile_fail
    /// # use std::sync::Arc;
    /// # use channel_core::{*, testing::{MemoryChannel, MemoryStore}, state::StateKey};
    /// # let engine = Engine::builder(Arc::new(MemoryStore::new()), StateKey::generate()).blob_store(BlobStore::in_memory()).build().unwrap();
    /// engine.attach_channel(AccountId::new(), Arc::new(MemoryChannel::new())); // private
    /// ```
    pub(crate) fn attach_channel(&self, account: AccountId, channel: Arc<dyn Channel>) {
        write(&self.inner.channels).insert(account, channel);
        self.wake_dispatcher();
    }

    /// Detaches the account's channel (its lease was lost or it stopped).
    pub(crate) fn detach_channel(&self, account: AccountId) -> Option<Arc<dyn Channel>> {
        write(&self.inner.channels).remove(&account)
    }

    /// The channel attached for `account`, if any.
    pub fn channel(&self, account: AccountId) -> Option<Arc<dyn Channel>> {
        read(&self.inner.channels).get(&account).cloned()
    }

    /// The account's settings as stored (lifecycle policy, send rates). Read from the store
    /// the first time and kept: a change made in another process reaches this one within a
    /// lease tick ([`EngineConfig::lease_renew_every`]) when a runtime runs here.
    pub async fn account_settings(
        &self,
        account: AccountId,
    ) -> Result<AccountSettings, EngineError> {
        if let Some(s) = read(&self.inner.settings).get(&account) {
            return Ok(*s);
        }
        let stored = self.account_db("account", account, self.inner.store.account(account)).await?;
        self.remember_settings(std::slice::from_ref(&stored));
        Ok(stored.settings)
    }

    /// Keeps the settings of accounts just read from the store.
    pub(crate) fn remember_settings(&self, accounts: &[Account]) {
        let mut settings = write(&self.inner.settings);
        for a in accounts {
            settings.insert(a.id, a.settings);
        }
    }

    /// The lifecycle policy of an account with these settings.
    pub(crate) fn lifecycle_of(&self, settings: &AccountSettings) -> LifecyclePolicy {
        settings.lifecycle.unwrap_or(self.inner.config.default_lifecycle)
    }

    /// Changes an account: its name, its provider configuration (checked by its provider,
    /// which must be registered here: [`EngineError::AccountConfig`] or
    /// [`EngineError::NoProvider`] and nothing saved otherwise) and its settings, which
    /// every worker process applies. [`Runtime::update_account`](crate::runtime::Runtime::update_account)
    /// also restarts the account's channel on a new configuration.
    pub async fn update_account(
        &self,
        account: AccountId,
        update: AccountUpdate,
    ) -> Result<Account, EngineError> {
        if let Some(config) = &update.config {
            let kind =
                self.account_db("account", account, self.inner.store.account(account)).await?.kind;
            let provider = self.provider(&kind).ok_or(EngineError::NoProvider(kind))?;
            provider.check_config(config)?;
        }
        let now = self.now();
        let stored = self.inner.store.update_account(account, &update, now);
        let updated = self.account_db("update_account", account, stored).await?;
        self.remember_settings(std::slice::from_ref(&updated));
        tracing::info!(%account, "account updated");
        Ok(updated)
    }

    /// Removes an account: its channel here stops, its state (sessions, cursors) and its
    /// unfinished jobs go (a pending send ends `Failed`), and it is no longer listed. Its
    /// conversations and messages stay readable unless `purge_messages`. Another process
    /// running its channel stops it within a lease tick (its lease is gone, and whatever it
    /// still writes for the account is refused).
    pub async fn remove_account(
        &self,
        account: AccountId,
        purge_messages: bool,
    ) -> Result<(), EngineError> {
        self.detach_channel(account);
        let now = self.now();
        let removed = self.inner.store.remove_account(account, purge_messages, now);
        self.account_db("remove_account", account, removed).await?;
        write(&self.inner.settings).remove(&account);
        write(&self.inner.known_accounts).remove(&account);
        tracing::info!(%account, purge_messages, "account removed");
        Ok(())
    }

    /// Wakes the dispatcher of this process (new or changed jobs).
    pub fn wake_dispatcher(&self) {
        self.inner.wake.notify_one();
    }

    /// Wakes this process's dispatcher and tells other processes that jobs are waiting.
    pub(crate) async fn announce_jobs(&self, what: &str) {
        self.wake_dispatcher();
        let n = Notification {
            topic: JOBS_TOPIC.to_owned(),
            payload: format!("{{\"kind\":\"{what}\"}}"),
        };
        if let Err(e) = self.db("notify", self.inner.store.notify(&n)).await {
            tracing::debug!(error = %e, "could not notify other processes of new jobs");
        }
    }

    /// A store call under the database timeout.
    pub(crate) async fn db<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        with_timeout(operation, self.inner.config.db_timeout, call).await
    }

    /// A store call about `account`, under the database timeout: `NotFound` becomes
    /// [`EngineError::UnknownAccount`].
    pub(crate) async fn account_db<T>(
        &self,
        operation: &'static str,
        account: AccountId,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, EngineError> {
        match self.db(operation, call).await {
            Err(StoreError::NotFound { .. }) => Err(EngineError::UnknownAccount(account)),
            other => Ok(other?),
        }
    }

    /// The account, checked to exist (cached once seen, until it is removed here; the store
    /// refuses what is written for an account another process removed).
    pub(crate) async fn require_account(&self, account: AccountId) -> Result<(), EngineError> {
        if read(&self.inner.known_accounts).contains(&account) {
            return Ok(());
        }
        self.account_db("account", account, self.inner.store.account(account)).await?;
        write(&self.inner.known_accounts).insert(account);
        Ok(())
    }

    /// Records a connection state the account's channel reported, publishing
    /// `AccountStateChanged` when it changed.
    pub async fn report_state(
        &self,
        account: AccountId,
        state: ConnectionState,
    ) -> Result<(), EngineError> {
        let current = self.db("account", self.inner.store.account(account)).await?;
        if current.connection == state {
            return Ok(());
        }
        let now = self.now();
        self.db(
            "set_connection_state",
            self.inner.store.set_connection_state(account, &state, now),
        )
        .await?;
        self.inner.events.publish(Event::AccountStateChanged { account_id: account, state }).await;
        Ok(())
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
