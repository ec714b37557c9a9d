//! The send policy: asked before every send attempt whether the message may go now.
//!
//! [`RateLimitPolicy`] (the default) keeps per-account and per-chat rates with `governor`; a
//! service can add its own rules (quiet hours, opt-outs) by implementing [`SendPolicy`] and
//! combining it with [`PolicyChain`].

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

use crate::model::{AccountId, ChannelKind, MessageId, Timestamp};

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

/// governor's clock, read from tokio's clock so paused-time tests control it.
#[derive(Clone, Debug)]
struct TokioGovClock {
    start: tokio::time::Instant,
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

impl GovClock for TokioGovClock {
    type Instant = GovInstant;
    fn now(&self) -> GovInstant {
        let d = tokio::time::Instant::now().saturating_duration_since(self.start);
        GovInstant(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

type Keyed<K> = RateLimiter<
    K,
    DefaultKeyedStateStore<K>,
    TokioGovClock,
    governor::middleware::NoOpMiddleware<GovInstant>,
>;

/// Per-account and per-chat rate limits (GCRA, through `governor`).
///
/// The defaults keep well inside Telegram's and common SMTP servers' limits: per account 20
/// messages per minute with bursts of 5, per chat 1 message per 3 seconds with bursts of 3.
/// Over the limit, the answer is [`SendDecision::DelayUntil`] the earliest time a message may
/// go.
pub struct RateLimitPolicy {
    per_account: Keyed<AccountId>,
    per_chat: Keyed<(AccountId, String)>,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimitPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitPolicy").finish_non_exhaustive()
    }
}

impl RateLimitPolicy {
    /// The default account quota: 20 per minute, bursts of 5.
    pub fn default_account_quota() -> Quota {
        Quota::per_minute(NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN))
    }

    /// The default chat quota: one per 3 seconds, bursts of 3.
    pub fn default_chat_quota() -> Quota {
        Quota::with_period(Duration::from_secs(3))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN))
    }

    /// Limits with these quotas.
    pub fn new(per_account: Quota, per_chat: Quota) -> Self {
        let clock = TokioGovClock { start: tokio::time::Instant::now() };
        Self {
            per_account: RateLimiter::new(
                per_account,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            per_chat: RateLimiter::new(per_chat, DefaultKeyedStateStore::default(), clock),
            checks: AtomicU64::new(0),
        }
    }
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        Self::new(Self::default_account_quota(), Self::default_chat_quota())
    }
}

#[async_trait]
impl SendPolicy for RateLimitPolicy {
    async fn check(&self, ctx: &SendContext<'_>) -> SendDecision {
        // Forget idle keys now and then so the maps stay small.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.per_account.retain_recent();
            self.per_chat.retain_recent();
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(account: AccountId, thread: &str) -> SendContext<'_> {
        SendContext {
            account_id: account,
            kind: ChannelKind::Memory,
            thread_key: thread,
            message_id: MessageId::new(),
            attempt: 1,
            now: Timestamp(1_000_000),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_chat_over_its_rate_is_delayed_until_its_next_slot() {
        let policy = RateLimitPolicy::new(
            RateLimitPolicy::default_account_quota(),
            Quota::with_period(Duration::from_secs(3)).unwrap(),
        );
        let account = AccountId::new();
        assert_eq!(policy.check(&ctx(account, "chat")).await, SendDecision::Allow);
        assert_eq!(
            policy.check(&ctx(account, "chat")).await,
            SendDecision::DelayUntil(Timestamp(1_003_000)),
            "the next slot is 3 s later"
        );
        assert_eq!(policy.check(&ctx(account, "other chat")).await, SendDecision::Allow);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(policy.check(&ctx(account, "chat")).await, SendDecision::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_over_its_rate_is_delayed_whatever_the_chat() {
        let policy = RateLimitPolicy::new(
            Quota::per_minute(NonZeroU32::new(2).unwrap()),
            Quota::per_second(NonZeroU32::new(100).unwrap()),
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
}
