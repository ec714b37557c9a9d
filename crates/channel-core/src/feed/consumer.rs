//! [`FeedConsumer`]: a named reader of the durable feed, and the engine's feed methods.

use std::fmt;

use tokio::sync::broadcast::{self, error::RecvError};

use super::{ConsumerStart, FeedConsumerInfo, FeedEvent, FeedPosition, FeedPruned};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::Event;
use crate::store::StoreError;

/// A named reader of the durable feed: reads in order after what it read last, and
/// acknowledges what it handled. After a crash, the consumer of the same name starts after
/// what it acknowledged, so whatever it read and did not acknowledge comes again (at least
/// once). Get one with [`Engine::feed_consumer`].
///
/// ```
/// use std::sync::Arc;
/// use channel_core::feed::ConsumerStart;
/// use channel_core::{testing::MemoryStore, state::StateKey, *};
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new());
/// let engine = Engine::builder(store.clone(), StateKey::generate())
///     .blob_store(BlobStore::in_memory())
///     .build()
///     .unwrap();
/// let account = store
///     .create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now())
///     .await
///     .unwrap();
/// let hello = InboundMessage::text("m1", "chat", IdentityInfo::new("tg:1"), "hi", Timestamp(1));
/// engine.deliver(account.id, hello).await.unwrap();
///
/// let mut replies = engine.feed_consumer("auto-reply", ConsumerStart::Beginning).await.unwrap();
/// let batch = replies.next_batch(100).await.unwrap();
/// assert!(batch.iter().any(|e| matches!(e.event, Event::MessageReceived { .. })));
/// // ... react to each event, idempotently, then:
/// replies.ack(batch.last().unwrap().position).await.unwrap();
///
/// // A restarted consumer of the same name starts after what was acknowledged.
/// let mut again = engine.feed_consumer("auto-reply", ConsumerStart::Beginning).await.unwrap();
/// assert!(again.poll(100).await.unwrap().is_empty());
/// # });
/// ```
pub struct FeedConsumer {
    engine: Engine,
    name: String,
    read: FeedPosition,
    acked: FeedPosition,
    wake: broadcast::Receiver<Event>,
}

impl fmt::Debug for FeedConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedConsumer")
            .field("name", &self.name)
            .field("read", &self.read)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

impl FeedConsumer {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it acknowledged last.
    pub fn acknowledged(&self) -> FeedPosition {
        self.acked
    }

    /// Up to `max` events after what it read last, without waiting (empty when there are
    /// none yet). Fails with [`StoreError::FeedCursorExpired`] (in [`EngineError::Store`])
    /// when the feed no longer holds what comes after it.
    pub async fn poll(&mut self, max: usize) -> Result<Vec<FeedEvent>, EngineError> {
        let events = self.engine.feed_read(self.read, max.max(1)).await.map_err(|e| match e {
            EngineError::Store(StoreError::FeedCursorExpired { .. }) => {
                EngineError::Store(StoreError::FeedCursorExpired { consumer: self.name.clone() })
            }
            other => other,
        })?;
        // How far behind the consumer is: the age of the oldest event it has yet to handle.
        let lag = events.first().map_or(0.0, |e| self.engine.now().since(e.at).as_secs_f64());
        metrics::gauge!("channel_feed_lag_seconds", "consumer" => self.name.clone()).set(lag);
        if let Some(last) = events.last() {
            self.read = last.position;
            metrics::counter!("channel_feed_read_total", "consumer" => self.name.clone())
                .increment(events.len() as u64);
        }
        Ok(events)
    }

    /// Up to `max` events after what it read last, waiting for at least one: woken by the
    /// engine's in-process events, and looking again every
    /// [`feed_poll_interval`](crate::EngineConfig::feed_poll_interval) for events of other
    /// processes (and of transactions that commit late).
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<FeedEvent>, EngineError> {
        let every = self.engine.config().feed_poll_interval;
        loop {
            let events = self.poll(max).await?;
            if !events.is_empty() {
                return Ok(events);
            }
            tokio::select! {
                woke = self.wake.recv() => {
                    if let Err(RecvError::Closed) = woke {
                        tokio::time::sleep(every).await;
                    }
                }
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Acknowledges every event up to `position`: after a restart the consumer starts after
    /// it. Acknowledging an older position changes nothing.
    pub async fn ack(&mut self, position: FeedPosition) -> Result<(), EngineError> {
        let now = self.engine.now();
        let call = self.engine.store().feed_ack(&self.name, position, now);
        let info = self.engine.db("feed_ack", call).await?;
        self.acked = info.position;
        self.read = self.read.max(info.position);
        Ok(())
    }

    /// Goes back to what it acknowledged: what it read since comes again.
    pub fn rewind(&mut self) {
        self.read = self.acked;
    }
}

impl Engine {
    /// The feed consumer `name`, registered at `start` if it is new, reading after what it
    /// acknowledged. A consumer unregistered for idleness fails with
    /// [`StoreError::FeedCursorExpired`] (in [`EngineError::Store`]): rebuild what it derives
    /// from the store, then [`feed_reset`](Self::feed_reset).
    pub async fn feed_consumer(
        &self,
        name: &str,
        start: ConsumerStart,
    ) -> Result<FeedConsumer, EngineError> {
        let wake = self.subscribe();
        let call = self.store().feed_consumer(name, start, self.now());
        let info = self.db("feed_consumer", call).await?;
        if info.expired {
            return Err(StoreError::FeedCursorExpired { consumer: info.name }.into());
        }
        Ok(self.consumer_at(info, wake))
    }

    /// Registers the consumer `name` again at `start`, whatever its cursor was.
    pub async fn feed_reset(
        &self,
        name: &str,
        start: ConsumerStart,
    ) -> Result<FeedConsumer, EngineError> {
        let wake = self.subscribe();
        let info = self.db("feed_reset", self.store().feed_reset(name, start, self.now())).await?;
        Ok(self.consumer_at(info, wake))
    }

    fn consumer_at(
        &self,
        info: FeedConsumerInfo,
        wake: broadcast::Receiver<Event>,
    ) -> FeedConsumer {
        FeedConsumer {
            engine: self.clone(),
            name: info.name,
            read: info.position,
            acked: info.position,
            wake,
        }
    }

    /// Up to `limit` events after `after`, in feed order, without a consumer (an SSE stream
    /// resuming from its `Last-Event-ID`, say).
    pub async fn feed_read(
        &self,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, EngineError> {
        Ok(self.db("feed_read", self.store().feed_read(after, limit)).await?)
    }

    /// The position of the last event written so far that a read can hand out: reading
    /// after it gives what happens from now on (a live view, such as an event stream opened
    /// without a position to resume from).
    pub async fn feed_end(&self) -> Result<FeedPosition, EngineError> {
        Ok(self.db("feed_end", self.store().feed_end()).await?)
    }

    /// The registered feed consumers, with their cursors (for feed-lag metrics and people).
    pub async fn feed_consumers(&self) -> Result<Vec<FeedConsumerInfo>, EngineError> {
        Ok(self.db("feed_consumers", self.store().feed_consumers()).await?)
    }

    /// Applies the feed's retention
    /// ([`feed_retention`](crate::EngineConfig::feed_retention)): unregisters consumers not
    /// seen for that long, then deletes older events every remaining consumer passed. The
    /// runtime's leader calls it with each lifecycle sweep.
    pub async fn feed_prune(&self) -> Result<FeedPruned, EngineError> {
        let cutoff = self.now().minus(self.config().feed_retention);
        let pruned = self.db("feed_prune", self.store().feed_prune(cutoff, cutoff)).await?;
        if pruned.consumers > 0 {
            tracing::warn!(
                consumers = pruned.consumers,
                "feed consumers unseen for longer than the retention were unregistered"
            );
        }
        Ok(pruned)
    }
}
