//! [`MemoryInbound`]: an [`Inbound`] for tests, deduplicating on the provider id and keeping
//! the account state in a map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use channel_core::{
    ChannelError, ConnectionState, ConversationId, IdentityId, Inbound, InboundMessage,
    IngestDisposition, IngestOutcome, MessageId,
};
use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    messages: Vec<InboundMessage>,
    ids: HashMap<String, MessageId>,
    state: HashMap<String, Vec<u8>>,
    states: Vec<ConnectionState>,
    fail_deliveries: usize,
    pass_before_failing: usize,
    duplicates: usize,
    edits: Vec<channel_core::InboundEdit>,
    /// Provider ids marked deleted, in the order they were marked, each once.
    deleted: Vec<String>,
}

/// An in-memory [`Inbound`]: stores each provider id once (like the engine's ingest),
/// applies the cursor of each message with it, and records connection states.
#[derive(Default)]
pub struct MemoryInbound {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl MemoryInbound {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Presets a value of the account state.
    pub fn set_state(&self, key: &str, value: &[u8]) {
        self.lock().state.insert(key.to_owned(), value.to_vec());
    }

    /// A value of the account state.
    pub fn state(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().state.get(key).cloned()
    }

    /// The messages stored, in order, each provider id once.
    pub fn messages(&self) -> Vec<InboundMessage> {
        self.lock().messages.clone()
    }

    /// The edits applied to stored messages, in order (the messages carry the new text).
    pub fn edits(&self) -> Vec<channel_core::InboundEdit> {
        self.lock().edits.clone()
    }

    /// The provider ids of stored messages marked deleted, in order, each once (a repeated
    /// deletion changes nothing, as in the engine).
    pub fn deleted(&self) -> Vec<String> {
        self.lock().deleted.clone()
    }

    /// How many messages are stored (without copying them).
    pub fn message_count(&self) -> usize {
        self.lock().messages.len()
    }

    /// How many deliveries were duplicates of a stored provider id.
    pub fn duplicates(&self) -> usize {
        self.lock().duplicates
    }

    /// The connection states reported, in order.
    pub fn states(&self) -> Vec<ConnectionState> {
        self.lock().states.clone()
    }

    /// Makes the next `n` deliveries fail (nothing stored), like a store outage.
    pub fn fail_next_deliveries(&self, n: usize) {
        self.fail_deliveries_after(0, n);
    }

    /// Lets `ok` deliveries through, then makes the `n` after them fail.
    pub fn fail_deliveries_after(&self, ok: usize, n: usize) {
        let mut inner = self.lock();
        inner.pass_before_failing = ok;
        inner.fail_deliveries = n;
    }

    /// Waits until `check` holds; false after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, check: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if check(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(self);
            }
        }
    }

    /// Waits until at least `n` messages are stored.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.message_count() >= n).await
    }

    /// Waits until a reported state satisfies `pred`.
    pub async fn wait_for_state(
        &self,
        timeout: Duration,
        pred: impl Fn(&ConnectionState) -> bool,
    ) -> bool {
        self.wait_until(timeout, |s| s.states().iter().any(&pred)).await
    }
}

#[async_trait]
impl Inbound for MemoryInbound {
    async fn deliver(&self, message: InboundMessage) -> Result<IngestOutcome, ChannelError> {
        let outcome = {
            let mut inner = self.lock();
            if inner.fail_deliveries > 0 && inner.pass_before_failing > 0 {
                inner.pass_before_failing -= 1;
            } else if inner.fail_deliveries > 0 {
                inner.fail_deliveries -= 1;
                return Err(ChannelError::transient("test store outage".to_owned()));
            }
            if let Some(cursor) = &message.cursor {
                inner.state.insert(cursor.key.clone(), cursor.value.clone());
            }
            let (message_id, disposition) = match inner.ids.get(&message.provider_id).copied() {
                Some(id) => {
                    inner.duplicates += 1;
                    (id, IngestDisposition::Duplicate)
                }
                None => {
                    let id = MessageId::new();
                    inner.ids.insert(message.provider_id.clone(), id);
                    let d = if message.client_key.is_some() {
                        IngestDisposition::EchoMatched
                    } else {
                        IngestDisposition::Stored
                    };
                    inner.messages.push(message);
                    (id, d)
                }
            };
            IngestOutcome {
                message_id,
                conversation_id: ConversationId::new(),
                identity_id: IdentityId::new(),
                disposition,
                conversation_opened: false,
                conversation_reactivated: false,
            }
        };
        self.changed.notify_waiters();
        Ok(outcome)
    }

    async fn edited(
        &self,
        edit: channel_core::InboundEdit,
    ) -> Result<Option<MessageId>, ChannelError> {
        let id = {
            let mut inner = self.lock();
            let Some(id) = inner.ids.get(&edit.provider_id).copied() else { return Ok(None) };
            inner.edits.push(edit.clone());
            if let Some(m) = inner.messages.iter_mut().find(|m| m.provider_id == edit.provider_id) {
                m.text = edit.text;
                m.html = edit.html;
            }
            id
        };
        self.changed.notify_waiters();
        Ok(Some(id))
    }

    async fn deleted(
        &self,
        deletion: channel_core::InboundDeletion,
    ) -> Result<Vec<MessageId>, ChannelError> {
        let marked = {
            let mut inner = self.lock();
            let mut marked = Vec::new();
            for p in deletion.provider_ids {
                if let Some(id) = inner.ids.get(&p).copied()
                    && !inner.deleted.contains(&p)
                {
                    inner.deleted.push(p);
                    marked.push(id);
                }
            }
            marked
        };
        self.changed.notify_waiters();
        Ok(marked)
    }

    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        Ok(self.state(key))
    }

    async fn state_put(&self, key: &str, value: &[u8]) -> Result<(), ChannelError> {
        self.set_state(key, value);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn state_delete(&self, key: &str) -> Result<(), ChannelError> {
        self.lock().state.remove(key);
        Ok(())
    }

    async fn report_state(&self, state: ConnectionState) {
        self.lock().states.push(state);
        self.changed.notify_waiters();
    }

    fn alive(&self) {}
}
