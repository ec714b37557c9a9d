//! The send policy: asked before every send attempt whether the message may go now.
//!
//! [`RateLimitPolicy`] (the default) keeps per-account and per-chat rates with `governor`; a
//! service can add its own rules (quiet hours, opt-outs) by implementing [`SendPolicy`] and
//! combining it with [`PolicyChain`].
//!
//! Counted in memory only, a restart would forget what was just sent, and a worker in a
//! crash loop would send faster than the policy allows. With a [`PolicyMemory`]
//! ([`RateLimitPolicy::remembered_in`]; the engine's default keeps it in the account state,
//! [`StorePolicyMemory`]) each allowed send first writes the account's counters — for every
//! limit, the time its next slot frees up (GCRA's theoretical arrival time), in wall-clock
//! time — and a process that sees an account for the first time loads them and starts from
//! there, rounded towards sending less. A send whose counters cannot be written is held back
//! for a second, never let through uncounted.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock as GovClock, Reference};
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::model::{AccountId, ChannelKind, MessageId, Rate, SendRates, Timestamp};
use crate::store::Store;

/// The account-state key under which [`StorePolicyMemory`] keeps an account's counters.
pub const POLICY_STATE_KEY: &str = "core/send_policy";

/// Where [`RateLimitPolicy`] keeps its counters across restarts, one value per account.
#[async_trait]
pub trait PolicyMemory: Send + Sync + 'static {
    /// The account's stored counters, if any. An error holds the account's sends back.
    async fn load(&self, account: AccountId) -> Result<Option<Vec<u8>>, String>;
    /// Stores the account's counters (before the send they allow goes out).
    async fn save(&self, account: AccountId, value: &[u8]) -> Result<(), String>;
}

/// A [`PolicyMemory`] in the store's account state, under [`POLICY_STATE_KEY`] (the counters
/// are times, not secrets: stored as they are), each call under a timeout.
pub struct StorePolicyMemory {
    store: Arc<dyn Store>,
    timeout: Duration,
}

impl std::fmt::Debug for StorePolicyMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorePolicyMemory").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl StorePolicyMemory {
    /// Counters in `store`, each read or write limited to the default database timeout.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, timeout: crate::DEFAULT_DB_TIMEOUT }
    }
}

#[async_trait]
impl PolicyMemory for StorePolicyMemory {
    async fn load(&self, account: AccountId) -> Result<Option<Vec<u8>>, String> {
        match tokio::time::timeout(self.timeout, self.store.state_get(account, POLICY_STATE_KEY))
            .await
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                Err(format!("reading the send policy's counters took over {:?}", self.timeout))
            }
        }
    }

    async fn save(&self, account: AccountId, value: &[u8]) -> Result<(), String> {
        let put = self.store.state_put(account, POLICY_STATE_KEY, value);
        match tokio::time::timeout(self.timeout, put).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                Err(format!("writing the send policy's counters took over {:?}", self.timeout))
            }
        }
    }
}

/// An account's counters as remembered: when each limit's next slot frees up (unix ms).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Counters {
    /// The account's limit.
    a: i64,
    /// Each chat's limit, by thread key (only chats whose slot lies in the future).
    c: HashMap<String, i64>,
}

/// Advances a GCRA theoretical arrival time by one send at `now`.
fn gcra_next(tat: i64, now: i64, period: Duration) -> i64 {
    tat.max(now).saturating_add(i64::try_from(period.as_millis()).unwrap_or(i64::MAX))
}

/// How many of a limit's cells a remembered arrival time `tat` takes at `now`, rounded up
/// (towards sending less), at most the burst.
fn cells_taken(tat: i64, now: i64, quota: &Quota) -> u32 {
    let ahead = tat.saturating_sub(now);
    if ahead <= 0 {
        return 0;
    }
    let period = i64::try_from(quota.replenish_interval().as_millis()).unwrap_or(i64::MAX).max(1);
    let cells = ahead.saturating_add(period - 1) / period;
    u32::try_from(cells).unwrap_or(u32::MAX).min(quota.burst_size().get())
}

/// What the policy is asked about.
#[derive(Clone, Debug)]
pub struct SendContext<'a> {
    /// The account sending.
    pub account_id: AccountId,
    /// Its provider.
    pub kind: ChannelKind,
    /// The thread (chat) sent to.
    pub thread_key: &'a str,
    /// The message.
    pub message_id: MessageId,
    /// The attempt about to be made (1-based).
    pub attempt: i32,
    /// Now.
    pub now: Timestamp,
    /// The account's own send rates, from its stored settings (`None`: the policy's
    /// defaults).
    pub rates: Option<SendRates>,
}

/// The policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendDecision {
    /// Send now.
    Allow,
    /// Not before this time: the job is snoozed, no attempt is spent.
    DelayUntil(Timestamp),
    /// Never: the message fails with this reason.
    Reject(String),
}

/// Decides whether a message may be sent now.
#[async_trait]
pub trait SendPolicy: Send + Sync + 'static {
    /// The decision for this attempt.
    async fn check(&self, ctx: &SendContext<'_>) -> SendDecision;
}

/// Allows everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

#[async_trait]
impl SendPolicy for AllowAll {
    async fn check(&self, _ctx: &SendContext<'_>) -> SendDecision {
        SendDecision::Allow
    }
}

/// Asks several policies in order; the first answer other than `Allow` wins.
pub struct PolicyChain(pub Vec<Arc<dyn SendPolicy>>);

#[async_trait]
impl SendPolicy for PolicyChain {
    async fn check(&self, ctx: &SendContext<'_>) -> SendDecision {
        for p in &self.0 {
            let d = p.check(ctx).await;
            if d != SendDecision::Allow {
                return d;
            }
        }
        SendDecision::Allow
    }
}

/// governor's clock, driven by the engine's: each check moves it to the check's
/// [`SendContext::now`] (never backwards), so rate limits follow the engine's
/// [`Clock`](crate::clock::Clock), in tests too.
#[derive(Clone, Debug, Default)]
struct EngineGovClock {
    /// Nanoseconds since the Unix epoch.
    now: Arc<AtomicU64>,
}

impl EngineGovClock {
    fn advance_to(&self, now: Timestamp) {
        let nanos = u64::try_from(now.as_millis()).unwrap_or(0).saturating_mul(1_000_000);
        self.now.fetch_max(nanos, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GovInstant(u64);

impl Add<Nanos> for GovInstant {
    type Output = Self;
    fn add(self, other: Nanos) -> Self {
        Self(self.0.saturating_add(other.as_u64()))
    }
}

impl Reference for GovInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.saturating_sub(duration.as_u64()))
    }
}

impl GovClock for EngineGovClock {
    type Instant = GovInstant;
    fn now(&self) -> GovInstant {
        GovInstant(self.now.load(Ordering::Relaxed))
    }
}

type Keyed<K> = RateLimiter<
    K,
    DefaultKeyedStateStore<K>,
    EngineGovClock,
    governor::middleware::NoOpMiddleware<GovInstant>,
>;

/// One account quota and one chat quota, with their limiters.
struct Limiters {
    per_account: Keyed<AccountId>,
    per_chat: Keyed<(AccountId, String)>,
    account_quota: Quota,
    chat_quota: Quota,
}

impl Limiters {
    fn new(account_quota: Quota, chat_quota: Quota, clock: EngineGovClock) -> Self {
        Self {
            per_account: RateLimiter::new(
                account_quota,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            per_chat: RateLimiter::new(chat_quota, DefaultKeyedStateStore::default(), clock),
            account_quota,
            chat_quota,
        }
    }

    /// The limiters of an account's stored rates.
    fn of(rates: SendRates, clock: EngineGovClock) -> Self {
        Self::new(quota(rates.per_account), quota(rates.per_chat), clock)
    }

    /// The decision of the in-memory limiters (a refusal spends nothing).
    fn decide(&self, ctx: &SendContext<'_>) -> SendDecision {
        let chat_key = (ctx.account_id, ctx.thread_key.to_owned());
        if let Err(not_until) = self.per_chat.check_key(&chat_key) {
            let wait = not_until.wait_time_from(self.per_chat.clock().now());
            return SendDecision::DelayUntil(ctx.now.plus(wait.max(Duration::from_millis(1))));
        }
        if let Err(not_until) = self.per_account.check_key(&ctx.account_id) {
            let wait = not_until.wait_time_from(self.per_account.clock().now());
            return SendDecision::DelayUntil(ctx.now.plus(wait.max(Duration::from_millis(1))));
        }
        SendDecision::Allow
    }

    /// Takes the cells that remembered counters say are in use.
    fn prime(&self, account: AccountId, counters: &Counters, now: i64) {
        let take = |n: u32| NonZeroU32::new(n);
        if let Some(n) = take(cells_taken(counters.a, now, &self.account_quota)) {
            let _ = self.per_account.check_key_n(&account, n);
        }
        for (thread, tat) in &counters.c {
            if let Some(n) = take(cells_taken(*tat, now, &self.chat_quota)) {
                let _ = self.per_chat.check_key_n(&(account, thread.clone()), n);
            }
        }
    }

    fn retain_recent(&self) {
        self.per_account.retain_recent();
        self.per_chat.retain_recent();
    }
}

/// governor's quota of a stored [`Rate`].
fn quota(rate: Rate) -> Quota {
    let rate = rate.clamped();
    Quota::with_period(rate.every)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN))
}

/// Per-account and per-chat rate limits (GCRA, through `governor`).
///
/// The defaults keep well inside Telegram's and common SMTP servers' limits: per account 20
/// messages per minute with bursts of 5, per chat 1 message per 3 seconds with bursts of 3.
/// An account whose stored settings have [`SendRates`]
/// ([`AccountSettings::send_rates`](crate::AccountSettings::send_rates), passed in
/// [`SendContext::rates`]) is limited by those instead, in every worker. Over the limit, the
/// answer is [`SendDecision::DelayUntil`] the earliest time a message may go.
pub struct RateLimitPolicy {
    clock: EngineGovClock,
    defaults: Limiters,
    /// The limiters of accounts with rates of their own.
    custom: std::sync::Mutex<HashMap<AccountId, (SendRates, Arc<Limiters>)>>,
    checks: AtomicU64,
    memory: Option<Arc<dyn PolicyMemory>>,
    /// The counters of the accounts seen by this process (with a memory). One check at a
    /// time, so that the writes land in order.
    remembered: tokio::sync::Mutex<HashMap<AccountId, Counters>>,
}

impl std::fmt::Debug for RateLimitPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitPolicy").finish_non_exhaustive()
    }
}

/// The limiters a check uses: the defaults, or an account's own.
enum Chosen<'a> {
    Defaults(&'a Limiters),
    Own(Arc<Limiters>),
}

impl std::ops::Deref for Chosen<'_> {
    type Target = Limiters;
    fn deref(&self) -> &Limiters {
        match self {
            Chosen::Defaults(l) => l,
            Chosen::Own(l) => l,
        }
    }
}

impl RateLimitPolicy {
    /// The default rates: per account 20 a minute with bursts of 5, per chat one every 3
    /// seconds with bursts of 3.
    pub fn default_rates() -> SendRates {
        SendRates {
            per_account: Rate::per_minute(20).burst(5),
            per_chat: Rate::every(Duration::from_secs(3)).burst(3),
        }
    }

    /// Limits with these rates for accounts without rates of their own.
    pub fn new(per_account: Rate, per_chat: Rate) -> Self {
        Self::with_quotas(quota(per_account), quota(per_chat))
    }

    fn with_quotas(per_account: Quota, per_chat: Quota) -> Self {
        let clock = EngineGovClock::default();
        Self {
            defaults: Limiters::new(per_account, per_chat, clock.clone()),
            clock,
            custom: std::sync::Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
            memory: None,
            remembered: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Limits with these rates for accounts without rates of their own.
    pub fn with_rates(rates: SendRates) -> Self {
        Self::new(rates.per_account, rates.per_chat)
    }

    /// Keeps the counters in `memory` too, so that they survive a restart (see the module
    /// docs). The engine's default policy keeps them in the store ([`StorePolicyMemory`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use channel_core::send_policy::{RateLimitPolicy, StorePolicyMemory};
    /// # fn demo(store: Arc<dyn channel_core::Store>) {
    /// let memory = Arc::new(StorePolicyMemory::new(store));
    /// let policy = RateLimitPolicy::default().remembered_in(memory);
    /// # }
    /// ```
    pub fn remembered_in(mut self, memory: Arc<dyn PolicyMemory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// The limiters of this check's account, and whether they are new (to be primed).
    fn limiters(&self, ctx: &SendContext<'_>) -> (Chosen<'_>, bool) {
        let mut custom = self.custom.lock().unwrap_or_else(|e| e.into_inner());
        // Forget idle keys now and then so the maps stay small.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.defaults.retain_recent();
            custom.values().for_each(|(_, l)| l.retain_recent());
        }
        let Some(rates) = ctx.rates else {
            let had_own = custom.remove(&ctx.account_id).is_some();
            return (Chosen::Defaults(&self.defaults), had_own);
        };
        match custom.get(&ctx.account_id) {
            Some((known, l)) if *known == rates => (Chosen::Own(Arc::clone(l)), false),
            _ => {
                let l = Arc::new(Limiters::of(rates, self.clock.clone()));
                custom.insert(ctx.account_id, (rates, Arc::clone(&l)));
                (Chosen::Own(l), true)
            }
        }
    }

    async fn check_remembered(
        &self,
        memory: &Arc<dyn PolicyMemory>,
        ctx: &SendContext<'_>,
    ) -> SendDecision {
        let now = ctx.now.as_millis();
        let hold = |why: String| {
            tracing::warn!(account = %ctx.account_id, error = %why, "send policy counters unavailable; holding the send back");
            SendDecision::DelayUntil(ctx.now.plus(Duration::from_secs(1)))
        };
        let mut remembered = self.remembered.lock().await;
        let (limiters, fresh) = self.limiters(ctx);
        let counters = match remembered.entry(ctx.account_id) {
            std::collections::hash_map::Entry::Occupied(known) => {
                let counters = known.into_mut();
                if fresh {
                    // New rates: the new limiters start from what was sent so far.
                    limiters.prime(ctx.account_id, counters, now);
                }
                counters
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                let counters = match memory.load(ctx.account_id).await {
                    Ok(Some(raw)) => serde_json::from_slice(&raw).unwrap_or_else(|e| {
                        // Unreadable: as if the account's limit had just been used up.
                        tracing::warn!(error = %e, "unreadable send policy counters; starting as if just used");
                        let full = i64::try_from(
                            limiters.account_quota.burst_size_replenished_in().as_millis(),
                        )
                        .unwrap_or(i64::MAX);
                        Counters { a: now.saturating_add(full), c: HashMap::new() }
                    }),
                    Ok(None) => Counters::default(),
                    Err(e) => return hold(e),
                };
                limiters.prime(ctx.account_id, &counters, now);
                slot.insert(counters)
            }
        };
        let decision = limiters.decide(ctx);
        if decision != SendDecision::Allow {
            return decision;
        }
        counters.a = gcra_next(counters.a, now, limiters.account_quota.replenish_interval());
        let chat = counters.c.get(ctx.thread_key).copied().unwrap_or(0);
        counters.c.insert(
            ctx.thread_key.to_owned(),
            gcra_next(chat, now, limiters.chat_quota.replenish_interval()),
        );
        counters.c.retain(|_, tat| *tat > now);
        let bytes = serde_json::to_vec(&*counters).unwrap_or_default();
        match memory.save(ctx.account_id, &bytes).await {
            Ok(()) => SendDecision::Allow,
            // The cells stay taken in memory: the next try waits for them, uncounted never.
            Err(e) => hold(e),
        }
    }
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        Self::with_rates(Self::default_rates())
    }
}

#[async_trait]
impl SendPolicy for RateLimitPolicy {
    async fn check(&self, ctx: &SendContext<'_>) -> SendDecision {
        self.clock.advance_to(ctx.now);
        match &self.memory {
            Some(memory) => self.check_remembered(memory, ctx).await,
            None => self.limiters(ctx).0.decide(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(account: AccountId, thread: &str) -> SendContext<'_> {
        SendContext {
            account_id: account,
            kind: ChannelKind::from_static("memory"),
            thread_key: thread,
            message_id: MessageId::new(),
            attempt: 1,
            now: Timestamp(1_000_000),
            rates: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_chat_over_its_rate_is_delayed_until_its_next_slot() {
        let policy = RateLimitPolicy::new(
            RateLimitPolicy::default_rates().per_account,
            Rate::every(Duration::from_secs(3)),
        );
        let account = AccountId::new();
        assert_eq!(policy.check(&ctx(account, "chat")).await, SendDecision::Allow);
        assert_eq!(
            policy.check(&ctx(account, "chat")).await,
            SendDecision::DelayUntil(Timestamp(1_003_000)),
            "the next slot is 3 s later"
        );
        assert_eq!(policy.check(&ctx(account, "other chat")).await, SendDecision::Allow);
        // The engine's clock, not tokio's, moves the limits.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(policy.check(&ctx(account, "chat")).await, SendDecision::DelayUntil(_)));
        let later = SendContext { now: Timestamp(1_003_000), ..ctx(account, "chat") };
        assert_eq!(policy.check(&later).await, SendDecision::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_over_its_rate_is_delayed_whatever_the_chat() {
        let policy = RateLimitPolicy::new(
            Rate::per_minute(2).burst(2),
            Rate::every(Duration::from_millis(10)),
        );
        let account = AccountId::new();
        assert_eq!(policy.check(&ctx(account, "a")).await, SendDecision::Allow);
        assert_eq!(policy.check(&ctx(account, "b")).await, SendDecision::Allow);
        assert!(matches!(policy.check(&ctx(account, "c")).await, SendDecision::DelayUntil(_)));
        assert_eq!(
            policy.check(&ctx(AccountId::new(), "c")).await,
            SendDecision::Allow,
            "other accounts are separate"
        );
    }

    /// A memory in a map, that can be made to fail.
    #[derive(Default)]
    struct MapMemory {
        values: std::sync::Mutex<HashMap<AccountId, Vec<u8>>>,
        fail_saves: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl PolicyMemory for MapMemory {
        async fn load(&self, account: AccountId) -> Result<Option<Vec<u8>>, String> {
            Ok(self.values.lock().unwrap().get(&account).cloned())
        }
        async fn save(&self, account: AccountId, value: &[u8]) -> Result<(), String> {
            if self.fail_saves.load(Ordering::Relaxed) {
                return Err("store down".to_owned());
            }
            self.values.lock().unwrap().insert(account, value.to_vec());
            Ok(())
        }
    }

    /// Wall-clock time that moves with tokio's paused clock.
    fn at(start: tokio::time::Instant, thread: &str, account: AccountId) -> SendContext<'_> {
        SendContext { now: Timestamp(1_000_000).plus(start.elapsed()), ..ctx(account, thread) }
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_in_a_crash_loop_never_sends_faster_than_one_that_kept_running() {
        let start = tokio::time::Instant::now();
        let account = AccountId::new();
        let memory: Arc<MapMemory> = Arc::default();
        let fresh = || RateLimitPolicy::default().remembered_in(memory.clone());
        let steady = RateLimitPolicy::default();
        let (mut crashing_sent, mut steady_sent) = (0, 0);
        let mut life = fresh();
        // 60 s, a check every 100 ms, a restart every 700 ms.
        for step in 1..=600 {
            if step % 7 == 0 {
                life = fresh();
            }
            if life.check(&at(start, "chat", account)).await == SendDecision::Allow {
                crashing_sent += 1;
            }
            if steady.check(&at(start, "chat", account)).await == SendDecision::Allow {
                steady_sent += 1;
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!(crashing_sent <= steady_sent, "{crashing_sent} > {steady_sent}");
        // Burst of 3, then one per 3 s: 3 + 19.
        assert_eq!(steady_sent, 22);
        assert!(crashing_sent >= 20, "restarts cost at most a slot each: {crashing_sent}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_policy_starts_where_the_last_one_stopped() {
        let start = tokio::time::Instant::now();
        let account = AccountId::new();
        let memory: Arc<MapMemory> = Arc::default();
        let first = RateLimitPolicy::default().remembered_in(memory.clone());
        for _ in 0..3 {
            assert_eq!(first.check(&at(start, "chat", account)).await, SendDecision::Allow);
        }
        drop(first);
        let second = RateLimitPolicy::default().remembered_in(memory.clone());
        assert!(
            matches!(second.check(&at(start, "chat", account)).await, SendDecision::DelayUntil(_)),
            "the burst was used before the restart"
        );
        assert_eq!(second.check(&at(start, "other chat", account)).await, SendDecision::Allow);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(second.check(&at(start, "chat", account)).await, SendDecision::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_whose_counters_cannot_be_written_is_held_back() {
        let start = tokio::time::Instant::now();
        let account = AccountId::new();
        let memory: Arc<MapMemory> = Arc::default();
        memory.fail_saves.store(true, Ordering::Relaxed);
        let policy = RateLimitPolicy::default().remembered_in(memory.clone());
        assert!(matches!(
            policy.check(&at(start, "chat", account)).await,
            SendDecision::DelayUntil(_)
        ));
    }
}
