//! Publishing [`Event`]s after commits: in-process through a `tokio::sync::broadcast`
//! channel, and to other processes through [`LeaseStore::notify`](crate::LeaseStore::notify) on the [`EVENTS_TOPIC`] topic.
//!
//! Events carry ids and states, never content. They are published only after the change they
//! describe was committed, and at least once: a subscriber that needs the data reads it from
//! the store. A subscriber that falls behind by more than the channel capacity gets
//! `RecvError::Lagged` and should re-read what it cares about.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::model::Event;
use crate::store::{Notification, Store};
use crate::with_timeout;

/// The notification topic of events (JSON [`EventEnvelope`]).
pub const EVENTS_TOPIC: &str = "channel_events";
/// The notification topic that wakes dispatchers when jobs were queued.
pub const JOBS_TOPIC: &str = "channel_jobs";
/// The default capacity of the in-process event channel.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// An event as sent to other processes: the event and the process that published it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The publishing process (its worker id), so it can skip its own events.
    pub origin: String,
    /// The event.
    pub event: Event,
}

/// Publishes events in process and across processes.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    store: Arc<dyn Store>,
    origin: String,
    timeout: Duration,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("origin", &self.origin)
            .field("subscribers", &self.tx.receiver_count())
            .finish_non_exhaustive()
    }
}

impl EventBus {
    /// A bus publishing to `store`'s notifications as process `origin`.
    pub fn new(
        store: Arc<dyn Store>,
        origin: impl Into<String>,
        capacity: usize,
        timeout: Duration,
    ) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx, store, origin: origin.into(), timeout }
    }

    /// A new subscription to every event published from now on (in this process, and from
    /// other processes once the runtime forwards store notifications).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Publishes an event that was committed: to local subscribers, then to other processes.
    /// A failed cross-process notification is logged, not returned: the change is committed
    /// and local subscribers have the event.
    pub async fn publish(&self, event: Event) {
        let _ = self.tx.send(event.clone());
        let envelope = EventEnvelope { origin: self.origin.clone(), event };
        let payload = match serde_json::to_string(&envelope) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not encode an event");
                return;
            }
        };
        let n = Notification { topic: EVENTS_TOPIC.to_owned(), payload };
        if let Err(e) = with_timeout("notify", self.timeout, self.store.notify(&n)).await {
            tracing::warn!(error = %e, "could not notify other processes of an event");
        }
    }

    /// Publishes several events in order.
    pub async fn publish_all(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            self.publish(e).await;
        }
    }

    /// Hands an event notification from another process to local subscribers; returns whether
    /// it was one (events of this process and other topics are skipped).
    pub fn forward_remote(&self, notification: &Notification) -> bool {
        if notification.topic != EVENTS_TOPIC {
            return false;
        }
        match serde_json::from_str::<EventEnvelope>(&notification.payload) {
            Ok(env) if env.origin != self.origin => {
                let _ = self.tx.send(env.event);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an undecodable event notification");
                false
            }
        }
    }
}
