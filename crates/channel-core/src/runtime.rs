//! The [`Runtime`]: runs the engine in a process under the watchdog (`channel-watchdog`).
//!
//! Supervised loops, each pinging the watchdog every cycle and restarted with backoff when
//! it fails or falls silent:
//!
//! * `leases`: the [`LeaseKeeper`] takes and renews the leader lease and the lease of every
//!   enabled account that no other process holds (TTL 15 s, renewed every 5 s);
//! * `account:<id>`: one per account whose lease this process took: it creates the account's
//!   channel through the [`ChannelFactory`], attaches it to the engine for sends, and runs it
//!   while the lease is held;
//! * `dispatcher`: the [`Dispatcher`];
//! * `leader`: while this process is the leader, rescues jobs of crashed workers and queues
//!   lifecycle sweeps;
//! * `notifications` (stores with cross-process notifications): wakes the dispatcher on
//!   `channel_jobs` and hands other processes' events to local subscribers.
//!
//! [`Runtime::shutdown`] stops the loops (channels first, the dispatcher last, so jobs in
//! flight finish), records the accounts it connected as disconnected (`TransientDisconnect`,
//! reason [`WORKER_STOPPED`]) and releases the leases so other processes take over at once.
//!
//! This module is the only place that uses the watchdog's API.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use channel_watchdog::{Intensity, LoopContext, LoopResult, LoopSpec, ShutdownReport, Watchdog};
use tokio::sync::{Notify, watch};

use crate::channel::{Channel, ChannelError};
use crate::dispatcher::Dispatcher;

mod balance;
mod presence;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::events::JOBS_TOPIC;
use crate::lease_keeper::LeaseKeeper;
use crate::model::*;
use crate::store::Notification;

/// Creates the channel of an account when this process takes the account's lease.
#[async_trait]
pub trait ChannelFactory: Send + Sync + 'static {
    /// The channel for `account`. `NeedsLogin` and `Permanent` errors are recorded as the
    /// account's state and the account waits for [`Runtime::reconnect`]; other errors are
    /// retried with backoff.
    async fn create(&self, account: &Account) -> Result<Arc<dyn Channel>, ChannelError>;

    /// Whether this process can run accounts of `kind`; the runtime takes the lease only of
    /// accounts it can run and leaves the others to the processes that can. The default says
    /// yes to every kind.
    fn supports(&self, kind: &ChannelKind) -> bool {
        let _ = kind;
        true
    }
}

/// The [`ChannelFactory`] of a runtime built with [`Runtime::with_providers`]: each account's
/// channel from the engine's provider of its kind.
#[derive(Debug, Clone)]
pub struct ProviderChannels {
    engine: Engine,
}

impl ProviderChannels {
    /// Channels from `engine`'s providers.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl ChannelFactory for ProviderChannels {
    async fn create(&self, account: &Account) -> Result<Arc<dyn Channel>, ChannelError> {
        match self.engine.provider(&account.kind) {
            Some(provider) => provider.channel(account, &self.engine).await,
            None => Err(ChannelError::permanent(format!(
                "this process has no provider of kind `{}` for account {}",
                account.kind, account.id
            ))),
        }
    }

    fn supports(&self, kind: &ChannelKind) -> bool {
        self.engine.provider(kind).is_some()
    }
}

/// A [`ChannelFactory`] over channels made in advance (tests, fixed setups).
#[derive(Default)]
pub struct StaticChannels {
    channels: Mutex<HashMap<AccountId, Arc<dyn Channel>>>,
}

impl fmt::Debug for StaticChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticChannels").finish_non_exhaustive()
    }
}

impl StaticChannels {
    /// No channels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the channel of `account`.
    pub fn with(self, account: AccountId, channel: Arc<dyn Channel>) -> Self {
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).insert(account, channel);
        self
    }
}

#[async_trait]
impl ChannelFactory for StaticChannels {
    async fn create(&self, account: &Account) -> Result<Arc<dyn Channel>, ChannelError> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&account.id)
            .cloned()
            .ok_or_else(|| {
                ChannelError::permanent(format!("no channel configured for account {}", account.id))
            })
    }
}

/// Builds and starts a [`Runtime`].
pub struct RuntimeBuilder {
    engine: Engine,
    factory: Arc<dyn ChannelFactory>,
    watchdog: Option<Watchdog>,
    channel_max_silence: Duration,
    shutdown_deadline: Duration,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("channel_max_silence", &self.channel_max_silence)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Registers a provider on the engine (see
    /// [`EngineBuilder::provider`](crate::EngineBuilder::provider)); with
    /// [`Runtime::with_providers`] its accounts' channels are created by it.
    pub fn provider(self, provider: Arc<dyn crate::provider::Provider>) -> Self {
        self.engine.register_provider(provider);
        self
    }

    /// Runs the loops under this watchdog (default: one with the watchdog's defaults).
    pub fn watchdog(mut self, watchdog: Watchdog) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// How long a channel may go without calling `Inbound::alive` before it is restarted
    /// (default 10 min: IMAP IDLE cycles are up to 29 min, so email channels ping while idle).
    pub fn channel_max_silence(mut self, d: Duration) -> Self {
        self.channel_max_silence = d;
        self
    }

    /// The deadline of [`Runtime::shutdown`] (default 30 s).
    pub fn shutdown_deadline(mut self, d: Duration) -> Self {
        self.shutdown_deadline = d;
        self
    }

    /// Registers the loops and starts them.
    pub async fn start(self) -> Result<Runtime, EngineError> {
        let watchdog = match self.watchdog {
            Some(w) => w,
            None => Watchdog::builder().build().map_err(|e| EngineError::Config(e.to_string()))?,
        };
        let cfg = self.engine.config().clone();
        let keeper = LeaseKeeper::new(
            Arc::clone(self.engine.store()),
            cfg.worker_id.clone(),
            Arc::clone(&self.engine.inner.clock),
        )
        .with_ttl(cfg.lease_ttl, cfg.db_timeout);
        // This worker's liveness lock and row, then the takeover of dead workers, before the
        // first lease tick: a worker restarted after a crash takes its accounts back at once.
        let liveness = presence::register(&self.engine).await?;
        presence::take_over_dead(&self.engine).await;
        let shared = Arc::new(Shared {
            liveness: Mutex::new(Some(liveness)),
            started_at: self.engine.now(),
            engine: self.engine.clone(),
            factory: self.factory,
            watchdog: watchdog.clone(),
            keeper: tokio::sync::Mutex::new(keeper),
            leader: AtomicBool::new(false),
            slots: Mutex::new(HashMap::new()),
            channel_max_silence: self.channel_max_silence,
            lease_wake: Notify::new(),
        });
        let reg = |spec: LoopSpec| {
            watchdog.register(spec).map(|_| ()).map_err(|e| EngineError::Config(e.to_string()))
        };

        // Registered first, stopped last: jobs in flight finish before the process exits.
        let s = Arc::clone(&shared);
        let lease_ttl = cfg.job_lease_ttl;
        reg(LoopSpec::new("dispatcher", move |ctx: LoopContext| {
            let dispatcher = Dispatcher::new(s.engine.clone());
            async move {
                let ping = ctx.clone();
                dispatcher.run(ctx.token().clone(), move || ping.ping()).await;
                Ok(())
            }
        })
        // A batch ends within: its store reads and the send (each under its timeout), then
        // recording a successful send for up to one job lease.
        .max_silence((lease_ttl * 2).max(lease_ttl + cfg.send_timeout + cfg.db_timeout * 8))
        .grace(cfg.send_timeout + Duration::from_secs(5))
        .critical(true))?;

        let s = Arc::clone(&shared);
        reg(LoopSpec::new("leader", move |ctx| leader_loop(Arc::clone(&s), ctx))
            .max_silence(cfg.db_timeout * 4 + cfg.rescue_interval)
            .critical(true))?;

        if let Some(rx) = self.engine.store().notifications() {
            let s = Arc::clone(&shared);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            reg(LoopSpec::new("notifications", move |ctx| {
                notifications_loop(Arc::clone(&s), Arc::clone(&rx), ctx)
            })
            .max_silence(Duration::from_secs(120)))?;
        }

        let s = Arc::clone(&shared);
        reg(LoopSpec::new("leases", move |ctx| lease_loop(Arc::clone(&s), ctx))
            .max_silence(cfg.lease_ttl * 2 + cfg.db_timeout * 8)
            .critical(true))?;

        let s = Arc::clone(&shared);
        reg(LoopSpec::new("heartbeat", move |ctx| presence::heartbeat_loop(Arc::clone(&s), ctx))
            .max_silence(cfg.heartbeat_interval * 2 + cfg.db_timeout * 4))?;

        Ok(Runtime { shared, shutdown_deadline: self.shutdown_deadline })
    }
}

/// The running engine of one process. See the [module documentation](self).
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// use channel_core::runtime::{Runtime, StaticChannels};
/// use channel_core::testing::{MemoryChannel, MemoryStore};
/// use channel_core::{state::StateKey, *};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let store = Arc::new(MemoryStore::new());
/// let engine = Engine::builder(store.clone(), StateKey::generate())
///     .blob_store(BlobStore::in_memory())
///     .clock(Arc::new(channel_core::clock::TokioClock::new()))
///     .build()
///     .unwrap();
/// let account = store.create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now()).await.unwrap();
/// let channel = Arc::new(MemoryChannel::new());
/// let channels = StaticChannels::new().with(account.id, channel.clone());
/// let runtime = Runtime::builder(engine.clone(), Arc::new(channels)).start().await.unwrap();
///
/// channel.push_inbound(InboundMessage::text("m1", "chat", IdentityInfo::new("tg:1"), "hi", engine.now()));
/// let delivered = channel.wait_for_deliveries(1).await;
/// assert!(delivered[0].is_ok());
/// assert!(runtime.holds_account(account.id));
///
/// let report = runtime.shutdown().await;
/// assert!(report.within_deadline());
/// # }
/// ```
pub struct Runtime {
    shared: Arc<Shared>,
    shutdown_deadline: Duration,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("engine", &self.shared.engine).finish_non_exhaustive()
    }
}

struct Shared {
    /// This worker's liveness lock: dropped (and the row deleted) on shutdown.
    liveness: Mutex<Option<Box<dyn crate::workers::Liveness>>>,
    /// When this worker started.
    started_at: Timestamp,
    engine: Engine,
    factory: Arc<dyn ChannelFactory>,
    watchdog: Watchdog,
    keeper: tokio::sync::Mutex<LeaseKeeper>,
    leader: AtomicBool,
    slots: Mutex<HashMap<AccountId, Arc<Slot>>>,
    channel_max_silence: Duration,
    /// Wakes the lease loop before its next tick (a new account).
    lease_wake: Notify,
}

/// What the lease loop tells an account loop.
struct Slot {
    held: watch::Sender<bool>,
    reconnect: Notify,
    /// The configuration the running channel was created with.
    config: Mutex<Option<serde_json::Value>>,
    /// Restarts the running channel (its configuration changed).
    restart: Notify,
}

impl Slot {
    fn running_config(&self) -> std::sync::MutexGuard<'_, Option<serde_json::Value>> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Runtime {
    /// Starts building a runtime for `engine` whose accounts' channels are created by the
    /// engine's providers ([`ProviderChannels`]); add providers with
    /// [`RuntimeBuilder::provider`]. Accounts of a kind this process has no provider for are
    /// left to the processes that have one.
    pub fn with_providers(engine: Engine) -> RuntimeBuilder {
        let factory = Arc::new(ProviderChannels::new(engine.clone()));
        Self::builder(engine, factory)
    }

    /// Starts building a runtime for `engine`, creating channels with `factory`.
    pub fn builder(engine: Engine, factory: Arc<dyn ChannelFactory>) -> RuntimeBuilder {
        RuntimeBuilder {
            engine,
            factory,
            watchdog: None,
            channel_max_silence: Duration::from_secs(600),
            shutdown_deadline: Duration::from_secs(30),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Every worker process on the store, by id, with its last heartbeat (its loops and the
    /// accounts it holds) and whether it is alive now (its liveness lock, read from the
    /// database). A row is stale when [`WorkerInfo::is_stale`](crate::workers::WorkerInfo::is_stale)
    /// with the [`heartbeat_interval`](crate::EngineConfig::heartbeat_interval).
    pub async fn workers(&self) -> Result<Vec<crate::workers::WorkerInfo>, EngineError> {
        self.shared.engine.workers().await
    }

    /// The watchdog supervising the loops (status and health reports).
    pub fn watchdog(&self) -> &Watchdog {
        &self.shared.watchdog
    }

    /// Whether this process is the leader now.
    pub fn is_leader(&self) -> bool {
        self.shared.leader.load(Ordering::Relaxed)
    }

    /// Whether this process holds the account's lease (and so runs its channel).
    pub fn holds_account(&self, account: AccountId) -> bool {
        self.shared.slot(account).is_some_and(|s| *s.held.borrow())
    }

    /// Creates an account after its provider checked its configuration
    /// ([`Provider::check_config`](crate::provider::Provider::check_config)); nothing is saved
    /// when the configuration is refused ([`EngineError::AccountConfig`], naming the field) or
    /// this process has no provider of its kind ([`EngineError::NoProvider`]). An enabled
    /// account is connected by the runtime that takes its lease; one that needs a login waits
    /// for [`Runtime::login_step`]. The lease loop runs at once, so a login can usually start
    /// right after this returns (when another process was faster, its steps run there).
    pub async fn add_account(&self, new: NewAccount) -> Result<Account, EngineError> {
        let engine = &self.shared.engine;
        let provider =
            engine.provider(&new.kind).ok_or_else(|| EngineError::NoProvider(new.kind.clone()))?;
        provider.check_config(&new.config)?;
        let now = engine.now();
        let account = engine.db("create_account", engine.store().create_account(new, now)).await?;
        // Take its lease now rather than at the next tick, so that its login can start.
        self.shared.lease_wake.notify_one();
        Ok(account)
    }

    /// Enables or disables an account (an account whose server cannot be reached while it is
    /// verified can be kept saved, unverified and disabled). The lease loop runs at once: a
    /// disabled account's channel stops and its lease is released, an enabled one is taken
    /// by the process whose lease loop is first.
    pub async fn set_account_enabled(
        &self,
        account: AccountId,
        enabled: bool,
    ) -> Result<Account, EngineError> {
        let engine = &self.shared.engine;
        let now = engine.now();
        let set = engine.store().set_account_enabled(account, enabled, now);
        let account = engine.account_db("set_account_enabled", account, set).await?;
        self.shared.lease_wake.notify_one();
        Ok(account)
    }

    /// The accounts (not removed ones), oldest first, each with its connection state as last
    /// reported by the process that runs it.
    pub async fn accounts(&self) -> Result<Vec<Account>, EngineError> {
        let engine = &self.shared.engine;
        Ok(engine.db("accounts", engine.store().accounts()).await?)
    }

    /// Changes an account ([`Engine::update_account`]: name, provider configuration checked
    /// by its provider, settings). On a new configuration the account's channel restarts
    /// with it, here at once, in another process within a lease tick. New settings apply in
    /// every process within a lease tick.
    pub async fn update_account(
        &self,
        account: AccountId,
        update: AccountUpdate,
    ) -> Result<Account, EngineError> {
        let new_config = update.config.is_some();
        let updated = self.shared.engine.update_account(account, update).await?;
        if new_config && let Some(slot) = self.shared.slot(account) {
            let changed = slot.running_config().as_ref().is_some_and(|c| *c != updated.config);
            if changed {
                slot.restart.notify_one();
            }
        }
        Ok(updated)
    }

    /// Removes an account ([`Engine::remove_account`]): its channel stops (here at once,
    /// elsewhere within a lease tick), its state and unfinished jobs go, and its messages stay
    /// unless `purge_messages`.
    pub async fn remove_account(
        &self,
        account: AccountId,
        purge_messages: bool,
    ) -> Result<(), EngineError> {
        self.shared.engine.remove_account(account, purge_messages).await?;
        if let Some(slot) = self.shared.slot(account) {
            slot.held.send_replace(false);
        }
        self.shared.lease_wake.notify_one();
        Ok(())
    }

    /// Runs one step of an account's login (see
    /// [`Provider::login_step`](crate::provider::Provider::login_step)) through the provider
    /// of its kind, in this process, which must hold the account's lease: with several
    /// workers, the steps run where the account's connection lives and no second session
    /// opens. When the login is done the account connects at once.
    ///
    /// A step right after the account was added or enabled waits up to one lease tick for
    /// this process to take its lease. Errors: [`Elsewhere`](crate::provider::LoginError::Elsewhere)
    /// when another process holds the account's lease (run the step there); [`Failed`](crate::provider::LoginError::Failed)
    /// for an unknown account or kind.
    pub async fn login_step(
        &self,
        account: AccountId,
        flow: &str,
        input: crate::provider::LoginInput,
    ) -> Result<crate::provider::LoginStep, crate::provider::LoginError> {
        use crate::provider::{LoginError, LoginStep};
        let engine = &self.shared.engine;
        let acc = match engine.db("account", engine.store().account(account)).await {
            Ok(a) => a,
            Err(e) if e.is_transient() => return Err(LoginError::Unavailable(e.to_string())),
            Err(e) => return Err(LoginError::Failed(e.to_string())),
        };
        let Some(provider) = engine.provider(&acc.kind) else {
            return Err(LoginError::Failed(format!(
                "this process has no provider of kind `{}`: register it on the runtime",
                acc.kind
            )));
        };
        if !self.holds_account(account) {
            // A new or just enabled account: the lease loop takes it within a tick.
            self.shared.lease_wake.notify_one();
            let deadline = tokio::time::Instant::now() + engine.config().lease_renew_every;
            while !self.holds_account(account) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !self.holds_account(account) {
                return Err(LoginError::Elsewhere(account));
            }
        }
        let step = provider.login_step(&acc, engine, flow, input).await?;
        let name = match &step {
            LoginStep::Input { name, .. } | LoginStep::Display { name, .. } => name.clone(),
            LoginStep::Done { .. } => "done".to_owned(),
        };
        engine.record_events(vec![Event::LoginStepped { account_id: account, step: name }]).await;
        if matches!(step, LoginStep::Done { .. }) {
            tracing::info!(%account, flow, "logged in; connecting");
            self.reconnect(account);
        }
        Ok(step)
    }

    /// Makes the account's loop try again after a login or configuration fix (it waits after
    /// `NeedsLogin` and `Permanent` errors).
    pub fn reconnect(&self, account: AccountId) {
        if let Some(s) = self.shared.slot(account) {
            s.reconnect.notify_one();
        }
    }

    /// Stops every loop within the deadline, records the accounts this process connected as
    /// disconnected, and releases the leases.
    ///
    /// Each account whose lease this process still holds and whose recorded state is
    /// `Connecting` or `Connected` becomes `TransientDisconnect { reason: "worker stopped" }`
    /// (publishing `AccountStateChanged`): nobody is connected to it now, and nothing is
    /// asked of the user; the process that takes the lease over reports `Connecting` and
    /// `Connected` again. States that ask the user for something (`NeedsLogin`, `Failed`,
    /// `LoggedOut`) are kept. The state is written before the lease is released, so it never
    /// overwrites what a new holder reports.
    pub async fn shutdown(self) -> ShutdownReport {
        let stopped = self.shared.watchdog.shutdown(self.shutdown_deadline).await;
        let mut keeper = self.shared.keeper.lock().await;
        // Only leases still safely ours: one that ran out may have a new holder by now.
        let held: Vec<AccountId> = keeper
            .held()
            .filter(|name| keeper.holds(name))
            .filter_map(|name| name.strip_prefix("account:"))
            .filter_map(|id| id.parse().ok())
            .collect();
        let engine = &self.shared.engine;
        for account in held {
            engine.detach_channel(account);
            match engine.db("account", engine.store().account(account)).await {
                Ok(a)
                    if matches!(
                        a.connection,
                        ConnectionState::Connecting | ConnectionState::Connected
                    ) =>
                {
                    let state =
                        ConnectionState::TransientDisconnect { reason: WORKER_STOPPED.to_owned() };
                    report(engine, account, state).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%account, error = %e, "could not record the account as disconnected")
                }
            }
        }
        keeper.release_all().await;
        drop(keeper);
        self.shared.leader.store(false, Ordering::Relaxed);
        // Free the liveness lock, then remove this worker's row as any worker would.
        drop(self.shared.liveness.lock().unwrap_or_else(|e| e.into_inner()).take());
        let me = engine.config().worker_id();
        if let Err(e) = engine.db("take_over", engine.store().take_over(&me, engine.now())).await {
            tracing::debug!(error = %e, "could not remove this worker's row; the next worker will");
        }
        stopped
    }
}

impl Shared {
    /// The accounts whose leases this worker holds.
    async fn held_accounts(&self) -> BTreeSet<AccountId> {
        self.keeper
            .lock()
            .await
            .held()
            .filter_map(|name| name.strip_prefix("account:"))
            .filter_map(|id| id.parse().ok())
            .collect()
    }

    fn slot(&self, account: AccountId) -> Option<Arc<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(&account).cloned()
    }

    /// The account's slot, registering its supervised loop the first time.
    fn ensure_slot(self: &Arc<Self>, account: AccountId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get(&account) {
            return Arc::clone(s);
        }
        let slot = Arc::new(Slot {
            held: watch::channel(false).0,
            reconnect: Notify::new(),
            config: Mutex::new(None),
            restart: Notify::new(),
        });
        slots.insert(account, Arc::clone(&slot));
        drop(slots);
        let me = Arc::clone(self);
        let spec = LoopSpec::new(format!("account:{account}"), move |ctx| {
            account_loop(Arc::clone(&me), account, ctx)
        })
        .max_silence(self.channel_max_silence)
        .intensity(Intensity::new(30, Duration::from_secs(600)));
        if let Err(e) = self.watchdog.register(spec) {
            tracing::warn!(%account, error = %e, "could not register the account's loop");
        }
        slot
    }
}

/// Every `lease_renew_every`: takes over dead workers, renews and acquires leases (this
/// worker's share of the accounts: [`balance`]), hands over what it holds beyond its share
/// (disconnecting first), and flips account slots and the leader flag.
async fn lease_loop(s: Arc<Shared>, ctx: LoopContext) -> LoopResult {
    let every = s.engine.config().lease_renew_every;
    let me = s.engine.config().worker_id();
    let mut workers = 1usize;
    let mut was_over = false;
    // Accounts being handed over (stopped here, lease still held until the channel is
    // gone), and those handed over lately (not taken again for a while), with when.
    let mut handing: BTreeSet<AccountId> = BTreeSet::new();
    let mut cooling: HashMap<AccountId, tokio::time::Instant> = HashMap::new();
    loop {
        ctx.ping();
        if let Some(n) = presence::take_over_dead(&s.engine).await {
            workers = n;
        }
        cooling.retain(|_, since| since.elapsed() < every * 4);
        let mut wanted = vec![Lease::LEADER.to_owned()];
        let mut acquire_up_to = usize::MAX;
        match s.engine.db("accounts", s.engine.store().accounts()).await {
            Ok(accounts) => {
                s.engine.remember_settings(&accounts);
                restart_changed_channels(&s, &accounts);
                let candidates: Vec<AccountId> = accounts
                    .iter()
                    .filter(|a| a.enabled && s.factory.supports(&a.kind))
                    .map(|a| a.id)
                    .collect();
                let held = s.held_accounts().await;
                let cool: BTreeSet<AccountId> = cooling.keys().copied().collect();
                let plan = balance::plan(&me, &candidates, &held, &cool, workers, was_over);
                was_over = plan.over;
                for account in plan.hand_over {
                    if handing.insert(account) {
                        tracing::info!(%account, workers, "handing the account over to balance the workers");
                        if let Some(slot) = s.slot(account) {
                            slot.held.send_replace(false);
                        }
                    }
                }
                // Release what was handed over once its channel is gone.
                handing.retain(|a| {
                    let gone = s.engine.channel(*a).is_none();
                    if gone {
                        cooling.insert(*a, tokio::time::Instant::now());
                    }
                    !gone
                });
                let keep =
                    held.iter().filter(|a| candidates.contains(a) && !cooling.contains_key(a));
                wanted.extend(keep.map(|a| Lease::account_name(*a)));
                wanted.extend(plan.try_acquire.iter().map(|a| Lease::account_name(*a)));
                acquire_up_to = plan.acquire_up_to;
            }
            Err(e) => {
                // Keep what we hold; acquire nothing new.
                tracing::warn!(error = %e, "could not list accounts");
                let keeper = s.keeper.lock().await;
                wanted = keeper.held().map(str::to_owned).collect();
            }
        }
        let changes = s.keeper.lock().await.tick_limited(&wanted, acquire_up_to).await;
        for name in changes.lost.iter().chain(&changes.gained) {
            let gained = changes.gained.contains(name);
            if name == Lease::LEADER {
                s.leader.store(gained, Ordering::Relaxed);
                tracing::info!(leader = gained, "leadership changed");
            } else if let Some(account) =
                name.strip_prefix("account:").and_then(|id| id.parse().ok())
            {
                let slot = if gained { Some(s.ensure_slot(account)) } else { s.slot(account) };
                if let Some(slot) = slot {
                    slot.held.send_replace(gained && !handing.contains(&account));
                }
            }
        }
        tokio::select! {
            _ = ctx.cancelled() => {
                // Stop the account loops' channels first; shutdown releases the leases.
                return Ok(());
            }
            _ = tokio::time::sleep(every) => {}
            _ = s.lease_wake.notified() => {}
        }
    }
}

/// Restarts the channels running here whose account's configuration changed (in this
/// process or another).
fn restart_changed_channels(s: &Shared, accounts: &[Account]) {
    for a in accounts {
        if let Some(slot) = s.slot(a.id)
            && slot.running_config().as_ref().is_some_and(|running| *running != a.config)
        {
            tracing::info!(account = %a.id, "the account's configuration changed: restarting its channel");
            slot.restart.notify_one();
        }
    }
}

/// Runs the account's channel while its lease is held.
async fn account_loop(s: Arc<Shared>, account: AccountId, ctx: LoopContext) -> LoopResult {
    let Some(slot) = s.slot(account) else { return Ok(()) };
    let mut held = slot.held.subscribe();
    let idle_ping = Duration::from_secs(5).min(s.channel_max_silence / 4);
    loop {
        // Wait for the lease.
        *slot.running_config() = None;
        loop {
            ctx.ping();
            if *held.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = ctx.cancelled() => return Ok(()),
                _ = held.changed() => {}
                _ = tokio::time::sleep(idle_ping) => {}
            }
        }
        let engine = &s.engine;
        let acc = engine.db("account", engine.store().account(account)).await?;
        *slot.running_config() = Some(acc.config.clone());
        let result = match s.factory.create(&acc).await {
            Ok(channel) => run_channel(&s, &slot, account, channel, &ctx, &mut held).await,
            Err(e) => Err(e),
        };
        let park = match result {
            Ok(()) => false,
            Err(ChannelError::NeedsLogin(reason)) => {
                report(engine, account, ConnectionState::NeedsLogin { reason: reason.report() })
                    .await;
                true
            }
            Err(ChannelError::Permanent(reason)) => {
                report(engine, account, ConnectionState::Failed { reason: reason.report() }).await;
                true
            }
            Err(e) => {
                report(
                    engine,
                    account,
                    ConnectionState::TransientDisconnect { reason: e.to_string() },
                )
                .await;
                return Err(Box::new(e));
            }
        };
        if ctx.is_cancelled() {
            return Ok(());
        }
        if park {
            // Wait for a fix (reconnect), the loss of the lease, or shutdown.
            loop {
                ctx.ping();
                tokio::select! {
                    _ = ctx.cancelled() => return Ok(()),
                    _ = slot.reconnect.notified() => break,
                    _ = slot.restart.notified() => break,
                    _ = held.changed() => if !*held.borrow_and_update() { break },
                    _ = tokio::time::sleep(idle_ping) => {}
                }
            }
        }
    }
}

/// Runs the channel until it ends, the lease is lost or the loop is cancelled.
async fn run_channel(
    s: &Arc<Shared>,
    slot: &Slot,
    account: AccountId,
    channel: Arc<dyn Channel>,
    ctx: &LoopContext,
    held: &mut watch::Receiver<bool>,
) -> Result<(), ChannelError> {
    let engine = &s.engine;
    engine.attach_channel(account, Arc::clone(&channel));
    let token = ctx.token().child_token();
    let ping = ctx.clone();
    let sink = Arc::new(engine.account_sink(account).with_alive(Arc::new(move || ping.ping())));
    let run = channel.run(sink, token.clone());
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = slot.restart.notified(), if !token.is_cancelled() => {
                engine.detach_channel(account);
                token.cancel();
            }
            _ = held.changed(), if !token.is_cancelled() => {
                if !*held.borrow_and_update() {
                    tracing::info!(%account, "account lease lost: stopping its channel");
                    engine.detach_channel(account);
                    token.cancel();
                }
            }
        }
    };
    engine.detach_channel(account);
    result
}

/// The reason recorded for the accounts of a process that shut down.
pub const WORKER_STOPPED: &str = "worker stopped";

async fn report(engine: &Engine, account: AccountId, state: ConnectionState) {
    if let Err(e) = engine.report_state(account, state).await {
        tracing::warn!(%account, error = %e, "could not record the connection state");
    }
}

/// While leader: rescue expired jobs every `rescue_interval`, queue sweeps and prune the
/// event feed every `sweep_interval`.
async fn leader_loop(s: Arc<Shared>, ctx: LoopContext) -> LoopResult {
    let cfg = s.engine.config().clone();
    let tick = cfg.rescue_interval.min(cfg.sweep_interval);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        ctx.ping();
        if s.leader.load(Ordering::Relaxed) {
            let engine = &s.engine;
            if let Err(e) = engine.rescue_expired_jobs().await {
                tracing::warn!(error = %e, "rescue failed");
            }
            if last_sweep.is_none_or(|t| t.elapsed() >= cfg.sweep_interval) {
                last_sweep = Some(tokio::time::Instant::now());
                if let Err(e) = engine.schedule_sweeps().await {
                    tracing::warn!(error = %e, "scheduling sweeps failed");
                }
                if let Err(e) = engine.feed_prune().await {
                    tracing::warn!(error = %e, "pruning the event feed failed");
                }
            }
        }
        tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// Forwards the store's cross-process notifications.
async fn notifications_loop(
    s: Arc<Shared>,
    rx: Arc<tokio::sync::Mutex<tokio::sync::broadcast::Receiver<Notification>>>,
    ctx: LoopContext,
) -> LoopResult {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = rx.lock().await;
    loop {
        ctx.ping();
        let next = tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            n = rx.recv() => n,
            _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
        };
        match next {
            Ok(n) if n.topic == JOBS_TOPIC => s.engine.wake_dispatcher(),
            Ok(n) => {
                s.engine.events().forward_remote(&n);
            }
            Err(RecvError::Lagged(_)) => s.engine.wake_dispatcher(),
            Err(RecvError::Closed) => {
                // The store's listener is gone: poll instead, and let the watchdog see us alive.
                loop {
                    ctx.ping();
                    tokio::select! {
                        _ = ctx.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
            }
        }
    }
}
