//! Test support: the real mail stack comes from `channel_email::testing` (feature `testing`,
//! shared with the benchmarks); here are the `Inbound` sink that records what the channel
//! delivers and the fault-injecting proxy.
#![allow(dead_code)]

pub mod corpus;
pub mod fault_proxy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use channel_core::store::{IngestDisposition, IngestOutcome};
use channel_core::{
    ChannelError, ConnectionState, ConversationId, IdentityId, Inbound, InboundMessage, MessageId,
};
#[allow(unused_imports)]
pub use channel_email::testing::*;
use tokio::time::Instant;

/// What the sink knows about one stored message.
#[derive(Clone, Debug)]
pub struct Stored {
    pub message: InboundMessage,
    pub conversation: ConversationId,
}

#[derive(Default)]
struct SinkState {
    by_provider_id: HashMap<String, Stored>,
    order: Vec<String>,
    deliveries: usize,
    duplicates: usize,
    state: HashMap<String, Vec<u8>>,
    conversations: HashMap<String, ConversationId>,
    states: Vec<ConnectionState>,
    /// Fail deliveries while this is > 0 (counts down).
    fail_next: usize,
}

/// An `Inbound` that stores in memory: dedup by provider id, cursors written with their
/// message, conversations found through references like the store does.
#[derive(Clone, Default)]
pub struct TestSink {
    inner: Arc<Mutex<SinkState>>,
    notify: Arc<tokio::sync::Notify>,
}

impl TestSink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn messages(&self) -> Vec<InboundMessage> {
        let s = self.inner.lock().unwrap();
        s.order.iter().map(|id| s.by_provider_id[id].message.clone()).collect()
    }

    pub fn stored(&self, provider_id: &str) -> Option<Stored> {
        self.inner.lock().unwrap().by_provider_id.get(provider_id).cloned()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().order.len()
    }

    /// Deliveries of a provider id that was already stored.
    pub fn duplicates(&self) -> usize {
        self.inner.lock().unwrap().duplicates
    }

    pub fn deliveries(&self) -> usize {
        self.inner.lock().unwrap().deliveries
    }

    pub fn state_value(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().unwrap().state.get(key).cloned()
    }

    pub fn set_state(&self, key: &str, value: &[u8]) {
        self.inner.lock().unwrap().state.insert(key.to_owned(), value.to_vec());
    }

    pub fn connection_states(&self) -> Vec<ConnectionState> {
        self.inner.lock().unwrap().states.clone()
    }

    /// Makes the next `n` deliveries fail (nothing stored).
    pub fn fail_next(&self, n: usize) {
        self.inner.lock().unwrap().fail_next = n;
    }

    /// Waits until `pred` holds, failing after `limit` (tokio time).
    pub async fn wait_until(&self, what: &str, limit: Duration, pred: impl Fn(&TestSink) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if pred(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                assert!(
                    pred(self),
                    "timed out after {limit:?} waiting for {what}; have {} messages; states {:?}",
                    self.count(),
                    self.connection_states()
                );
                return;
            }
        }
    }

    /// Waits until at least `n` distinct messages are stored.
    pub async fn wait_for_count(&self, n: usize, limit: Duration) {
        self.wait_until(&format!("{n} messages"), limit, |s| s.count() >= n).await
    }
}

#[async_trait]
impl Inbound for TestSink {
    async fn deliver(&self, message: InboundMessage) -> Result<IngestOutcome, ChannelError> {
        let outcome = {
            let mut s = self.inner.lock().unwrap();
            if s.fail_next > 0 {
                s.fail_next -= 1;
                return Err(ChannelError::transient("test sink told to fail"));
            }
            s.deliveries += 1;
            if let Some(c) = &message.cursor {
                s.state.insert(c.key.clone(), c.value.clone());
            }
            if let Some(existing) = s.by_provider_id.get(&message.provider_id) {
                let conversation = existing.conversation;
                s.duplicates += 1;
                IngestOutcome {
                    message_id: MessageId::new(),
                    conversation_id: conversation,
                    identity_id: IdentityId::new(),
                    disposition: IngestDisposition::Duplicate,
                    conversation_opened: false,
                    conversation_reactivated: false,
                }
            } else {
                // Like the store: reply_to, then references from last to first, then the thread key.
                let known = message
                    .reply_to
                    .iter()
                    .chain(message.references.iter().rev())
                    .find_map(|id| s.by_provider_id.get(id).map(|m| m.conversation));
                let conversation = known
                    .or_else(|| s.conversations.get(&message.thread_key).copied())
                    .unwrap_or_else(ConversationId::new);
                s.conversations.entry(message.thread_key.clone()).or_insert(conversation);
                s.order.push(message.provider_id.clone());
                s.by_provider_id.insert(
                    message.provider_id.clone(),
                    Stored { message: message.clone(), conversation },
                );
                IngestOutcome {
                    message_id: MessageId::new(),
                    conversation_id: conversation,
                    identity_id: IdentityId::new(),
                    disposition: IngestDisposition::Stored,
                    conversation_opened: known.is_none(),
                    conversation_reactivated: false,
                }
            }
        };
        self.notify.notify_waiters();
        Ok(outcome)
    }

    async fn known_provider_ids(
        &self,
        provider_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, ChannelError> {
        let s = self.inner.lock().unwrap();
        Ok(provider_ids.iter().filter(|id| s.by_provider_id.contains_key(*id)).cloned().collect())
    }

    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        Ok(self.inner.lock().unwrap().state.get(key).cloned())
    }

    async fn state_put(&self, key: &str, value: &[u8]) -> Result<(), ChannelError> {
        self.inner.lock().unwrap().state.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn state_delete(&self, key: &str) -> Result<(), ChannelError> {
        self.inner.lock().unwrap().state.remove(key);
        Ok(())
    }

    async fn report_state(&self, state: ConnectionState) {
        self.inner.lock().unwrap().states.push(state);
        self.notify.notify_waiters();
    }

    fn alive(&self) {}
}
