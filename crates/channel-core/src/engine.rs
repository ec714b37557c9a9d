//! The [`Engine`]: the store, the blob store, the state cipher, the event bus and the
//! configuration that ingest, send, the dispatcher and the lifecycle sweep share.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::blob::BlobStore;
use crate::channel::Channel;
use crate::clock::{Clock, SystemClock};
use crate::engine_config::EngineConfig;
use crate::error::{EngineError, with_timeout};
use crate::events::{EventBus, JOBS_TOPIC};
use crate::model::*;
use crate::provider::{Provider, Providers};
use crate::send_policy::{RateLimitPolicy, SendPolicy, StorePolicyMemory};
use crate::state::{AccountState, StateCipher, StateKeys};
use crate::store::{Notification, Store, StoreError};

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
/// assert_eq!(engine.config().send_timeout(), Duration::from_secs(10));
/// assert_eq!(engine.config().db_timeout(), Duration::from_secs(10));
/// ```
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    keys: StateKeys,
    blobs: Option<BlobStore>,
    blob_dir: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    send_policy: Option<Arc<dyn SendPolicy>>,
    providers: Providers,
    pub(crate) config: EngineConfig,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder").field("config", &self.config).finish_non_exhaustive()
    }
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

    /// The backend itself, for the crates' own tests and tools. Hidden: reads and changes
    /// here skip the engine's timeouts and events; applications read and administer through
    /// the engine's methods (see the [`reads`](crate::reads) module).
    #[doc(hidden)]
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

    /// The accounts whose channels are attached in this process.
    pub(crate) fn attached_accounts(&self) -> Vec<AccountId> {
        read(&self.inner.channels).keys().copied().collect()
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

    /// Writes events that report no change of the store's own (a login step, a history
    /// page) to the feed, then publishes them in process. A failed write is logged: the
    /// change they report happened.
    pub(crate) async fn record_events(&self, events: Vec<Event>) {
        let write = self.inner.store.append_events(&events, self.now());
        if let Err(e) = self.db("append_events", write).await {
            tracing::warn!(error = %e, "could not write events to the feed");
        }
        self.inner.events.publish_all(events).await;
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
