//! The durable event feed (a transactional outbox): every [`Event`] is written by the store in
//! the transaction of the change it reports, and read back in order by named consumers that
//! acknowledge what they handled.
//!
//! - **At least once, in order, resumable.** A consumer reads after its acknowledged
//!   [`FeedPosition`]; what it read but did not acknowledge before a crash (its own, or the
//!   worker's) it reads again. Make reactions idempotent (a send with an idempotency key:
//!   [`Engine::send`](crate::Engine::send)).
//! - **Never past an event that commits later.** On PostgreSQL, concurrent transactions
//!   commit out of the order in which they numbered their events. Each event keeps the id of
//!   its transaction, the feed is ordered by transaction then number, and a read hands out only
//!   events of transactions older than the oldest one still in flight (its snapshot's `xmin`),
//!   so no event can ever appear behind a position already handed out. A transaction left open
//!   (a session idle in transaction, a long report) holds the feed back until it ends; a
//!   connection pooler in transaction mode does not change this. On SQLite one writer commits
//!   at a time and the order is the number's.
//! - **Retention.** [`FeedStore::feed_prune`] deletes events older than the retention
//!   (7 days by default: [`EngineConfig::feed_retention`](crate::EngineConfig::feed_retention))
//!   that every registered consumer has passed. A consumer not seen for longer than the
//!   retention is unregistered (it no longer holds events back) and its next read fails with
//!   [`StoreError::FeedCursorExpired`]: never a silent skip. So does a read after a position
//!   older than what was pruned.
//! - The in-process broadcast ([`Engine::subscribe`](crate::Engine::subscribe)) stays as a
//!   fast wake-up; it is not durable.
//!
//! Backends write events with the pure functions of [`derive`](mod@derive), so that every backend records
//! the same events for the same change.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{Event, Timestamp};
use crate::store::StoreError;

/// A place in the feed: after the event of transaction `tx` numbered `seq`. Positions are
/// ordered by `tx`, then `seq`; written as `"<tx>-<seq>"` (an SSE `Last-Event-ID`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FeedPosition {
    /// The writing transaction's id (PostgreSQL's `xid8`; 0 on SQLite and in memory).
    pub tx: i64,
    /// The event's number.
    pub seq: i64,
}

impl FeedPosition {
    /// Before every event.
    pub const START: FeedPosition = FeedPosition { tx: 0, seq: 0 };
}

impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tx, self.seq)
    }
}

/// A text that is not a [`FeedPosition`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a feed position: write `<tx>-<seq>`, as an event's position prints")]
pub struct BadPosition(String);

impl FromStr for FeedPosition {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.chars().take(64).collect());
        let (tx, seq) = s.trim().split_once('-').ok_or_else(bad)?;
        let tx = tx.parse().map_err(|_| bad())?;
        let seq = seq.parse().map_err(|_| bad())?;
        if tx < 0 || seq < 0 {
            return Err(bad());
        }
        Ok(FeedPosition { tx, seq })
    }
}

/// An event as the feed holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Where it is in the feed.
    pub position: FeedPosition,
    /// When it was written.
    pub at: Timestamp,
    /// The event.
    pub event: Event,
}

/// Where a consumer that is registered now starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConsumerStart {
    /// At the oldest event still kept: everything retained is read.
    #[default]
    Beginning,
    /// After the last event written so far: only what happens from now on.
    End,
}

/// A registered consumer of the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedConsumerInfo {
    /// Its name.
    pub name: String,
    /// What it acknowledged last: it reads after this.
    pub position: FeedPosition,
    /// When it registered.
    pub registered_at: Timestamp,
    /// When it last registered or acknowledged.
    pub seen_at: Timestamp,
    /// Whether it was unregistered for idleness: its reads fail with
    /// [`StoreError::FeedCursorExpired`] until it is registered again
    /// ([`FeedStore::feed_reset`]).
    pub expired: bool,
}

/// What a prune did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedPruned {
    /// Events deleted.
    pub events: u64,
    /// Consumers unregistered for idleness.
    pub consumers: u64,
}

/// The feed's part of the backend contract. The events themselves are written by the other
/// traits' operations, in their transactions; [`append_events`](Self::append_events) is for
/// events that report no change of the store's own.
#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
    /// Writes events that report a change outside the store (a login step, a history page),
    /// in one transaction of their own.
    async fn append_events(&self, events: &[Event], now: Timestamp) -> Result<(), StoreError>;

    /// Up to `limit` events after `after`, in feed order, only those that no transaction still
    /// in flight can precede. Fails with [`StoreError::FeedCursorExpired`] when events after
    /// `after` were pruned.
    async fn feed_read(
        &self,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError>;

    /// The position of the last event a read can hand out now: reading after it gives only
    /// what is written from now on ([`ConsumerStart::End`] starts there).
    async fn feed_end(&self) -> Result<FeedPosition, StoreError>;

    /// The consumer `name`, registered at `start` if it is new; marks it seen. An expired
    /// consumer is returned as it is (`expired`), not registered again.
    async fn feed_consumer(
        &self,
        name: &str,
        start: ConsumerStart,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError>;

    /// Registers `name` again at `start`, whatever it was (also after it expired).
    async fn feed_reset(
        &self,
        name: &str,
        start: ConsumerStart,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError>;

    /// Acknowledges everything up to `position` for `name` and marks it seen. A position
    /// before the acknowledged one changes nothing (acknowledgements only move forward).
    /// Fails with `NotFound` for an unknown consumer and `FeedCursorExpired` for an expired
    /// one.
    async fn feed_ack(
        &self,
        name: &str,
        position: FeedPosition,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError>;

    /// The registered consumers, by name.
    async fn feed_consumers(&self) -> Result<Vec<FeedConsumerInfo>, StoreError>;

    /// Unregisters consumers not seen since `idle_before`, then deletes the events written
    /// before `written_before` that every consumer still registered has acknowledged.
    async fn feed_prune(
        &self,
        written_before: Timestamp,
        idle_before: Timestamp,
    ) -> Result<FeedPruned, StoreError>;
}

mod consumer;
pub mod derive;

pub use consumer::FeedConsumer;
