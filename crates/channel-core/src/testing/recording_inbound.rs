//! [`RecordingInbound`]: the one [`Inbound`] test double of the family, for testing a channel
//! without an engine. It stores like the engine does where a channel can tell: deduplicates
//! on the provider id, writes a message's cursor with it, finds a message's conversation
//! through `reply_to`, then `references` (last first), then its thread key, applies edits and
//! deletions of stored messages, and keeps the account state and the reported connection
//! states. Deliveries can be made to fail, to test that a channel fetches them again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::channel::{ChannelError, Inbound};
use crate::model::{
    ConnectionState, ConversationId, IdentityId, InboundDeletion, InboundEdit, InboundMessage,
    MessageId,
};
use crate::store::{IngestDisposition, IngestOutcome};

/// A message as the double stored it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The message as delivered (with later edits applied).
    pub message: InboundMessage,
    /// The id the double gave it.
    pub id: MessageId,
    /// The conversation the double put it in.
    pub conversation: ConversationId,
}

#[derive(Default)]
struct Inner {
    by_provider_id: HashMap<String, Recorded>,
    /// Provider ids in the order they were first stored.
    order: Vec<String>,
    conversations: HashMap<String, ConversationId>,
    deliveries: usize,
    duplicates: usize,
    edits: Vec<InboundEdit>,
    deleted: Vec<String>,
    state: HashMap<String, Vec<u8>>,
    states: Vec<ConnectionState>,
    pass_before_failing: usize,
    fail_deliveries: usize,
}

/// An [`Inbound`] that records what a channel delivers, for testing a channel without an
/// engine. It stores like the engine does where a channel can tell: deduplicates on the
/// provider id, writes a message's cursor with it, finds a message's conversation through
/// `reply_to`, then `references` (last first), then its thread key, applies edits and
/// deletions of stored messages, and keeps the account state and the reported connection
/// states. Deliveries can be made to fail, to test that a channel fetches them again.
///
/// ```
/// use channel_core::testing::RecordingInbound;
/// use channel_core::{IdentityInfo, Inbound, InboundMessage, IngestDisposition, Timestamp};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let inbound = RecordingInbound::new();
/// let hello = InboundMessage::text("m-1", "chat", IdentityInfo::new("tg:1"), "hello", Timestamp(0));
/// assert_eq!(inbound.deliver(hello.clone()).await.unwrap().disposition, IngestDisposition::Stored);
/// assert_eq!(inbound.deliver(hello).await.unwrap().disposition, IngestDisposition::Duplicate);
/// assert_eq!((inbound.message_count(), inbound.duplicates()), (1, 1));
/// # });
/// ```
#[derive(Default)]
pub struct RecordingInbound {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl std::fmt::Debug for RecordingInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingInbound")
            .field("messages", &self.message_count())
            .finish_non_exhaustive()
    }
}

impl RecordingInbound {
    /// An empty double.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The distinct messages stored, in the order they were first stored.
    pub fn messages(&self) -> Vec<InboundMessage> {
        let inner = self.lock();
        inner.order.iter().map(|id| inner.by_provider_id[id].message.clone()).collect()
    }

    /// The stored message with this provider id.
    pub fn stored(&self, provider_id: &str) -> Option<Recorded> {
        self.lock().by_provider_id.get(provider_id).cloned()
    }

    /// How many distinct messages are stored.
    pub fn message_count(&self) -> usize {
        self.lock().order.len()
    }

    /// Deliveries of a provider id already stored.
    pub fn duplicates(&self) -> usize {
        self.lock().duplicates
    }

    /// Deliveries that did not fail (stored or duplicate).
    pub fn deliveries(&self) -> usize {
        self.lock().deliveries
    }

    /// The edits applied to stored messages.
    pub fn edits(&self) -> Vec<InboundEdit> {
        self.lock().edits.clone()
    }

    /// The provider ids of the stored messages marked deleted.
    pub fn deleted(&self) -> Vec<String> {
        self.lock().deleted.clone()
    }

    /// A value of the account state.
    pub fn state(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().state.get(key).cloned()
    }

    /// Sets a value of the account state (as a stored cursor or session would be).
    pub fn set_state(&self, key: &str, value: &[u8]) {
        self.lock().state.insert(key.to_owned(), value.to_vec());
    }

    /// The connection states reported, in order.
    pub fn connection_states(&self) -> Vec<ConnectionState> {
        self.lock().states.clone()
    }

    /// Makes the next `n` deliveries fail (nothing is stored, no cursor moves).
    pub fn fail_next_deliveries(&self, n: usize) {
        self.fail_deliveries_after(0, n);
    }

    /// Lets `ok` deliveries through, then makes `n` fail.
    pub fn fail_deliveries_after(&self, ok: usize, n: usize) {
        let mut inner = self.lock();
        inner.pass_before_failing = ok;
        inner.fail_deliveries = n;
    }

    /// Waits until `check` holds, at most `timeout` (tokio time); whether it holds.
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

    /// Waits until at least `n` distinct messages are stored; whether they are.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.message_count() >= n).await
    }

    /// Waits until a reported connection state matches `pred`; whether one did.
    pub async fn wait_for_state(
        &self,
        timeout: Duration,
        pred: impl Fn(&ConnectionState) -> bool,
    ) -> bool {
        self.wait_until(timeout, |s| s.connection_states().iter().any(&pred)).await
    }

    /// Waits until `check` holds, panicking after `timeout` with `what` and what the double
    /// holds.
    pub async fn expect_within(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Self) -> bool,
    ) {
        if !self.wait_until(timeout, &check).await {
            panic!(
                "timed out after {timeout:?} waiting for {what}; have {} messages; states {:?}",
                self.message_count(),
                self.connection_states()
            );
        }
    }

    /// Waits until at least `n` distinct messages are stored, panicking after `timeout`.
    pub async fn expect_messages(&self, n: usize, timeout: Duration) {
        self.expect_within(&format!("{n} messages"), timeout, |s| s.message_count() >= n).await
    }

    fn outcome(
        id: MessageId,
        conversation: ConversationId,
        disposition: IngestDisposition,
        opened: bool,
    ) -> IngestOutcome {
        IngestOutcome {
            message_id: id,
            conversation_id: conversation,
            identity_id: IdentityId::new(),
            disposition,
            conversation_opened: opened,
            conversation_reactivated: false,
        }
    }
}

#[async_trait]
impl Inbound for RecordingInbound {
    async fn deliver(&self, message: InboundMessage) -> Result<IngestOutcome, ChannelError> {
        let outcome = {
            let mut inner = self.lock();
            if inner.fail_deliveries > 0 {
                if inner.pass_before_failing > 0 {
                    inner.pass_before_failing -= 1;
                } else {
                    inner.fail_deliveries -= 1;
                    return Err(ChannelError::transient("the test double was told to fail"));
                }
            }
            inner.deliveries += 1;
            if let Some(cursor) = &message.cursor {
                inner.state.insert(cursor.key.clone(), cursor.value.clone());
            }
            if let Some(known) = inner.by_provider_id.get(&message.provider_id) {
                let (id, conversation) = (known.id, known.conversation);
                inner.duplicates += 1;
                Self::outcome(id, conversation, IngestDisposition::Duplicate, false)
            } else {
                let replied = message
                    .reply_to
                    .iter()
                    .chain(message.references.iter().rev())
                    .find_map(|id| inner.by_provider_id.get(id).map(|m| m.conversation));
                let threaded =
                    replied.or_else(|| inner.conversations.get(&message.thread_key).copied());
                let conversation = threaded.unwrap_or_else(ConversationId::new);
                inner.conversations.entry(message.thread_key.clone()).or_insert(conversation);
                let id = MessageId::new();
                let disposition = if message.client_key.is_some() {
                    IngestDisposition::EchoMatched
                } else {
                    IngestDisposition::Stored
                };
                inner.order.push(message.provider_id.clone());
                let provider_id = message.provider_id.clone();
                inner.by_provider_id.insert(provider_id, Recorded { message, id, conversation });
                Self::outcome(id, conversation, disposition, threaded.is_none())
            }
        };
        self.changed.notify_waiters();
        Ok(outcome)
    }

    async fn known_provider_ids(
        &self,
        provider_ids: &[String],
    ) -> Result<HashSet<String>, ChannelError> {
        let inner = self.lock();
        Ok(provider_ids
            .iter()
            .filter(|id| inner.by_provider_id.contains_key(*id))
            .cloned()
            .collect())
    }

    async fn edited(&self, edit: InboundEdit) -> Result<Option<MessageId>, ChannelError> {
        let id = {
            let mut inner = self.lock();
            let Some(stored) = inner.by_provider_id.get_mut(&edit.provider_id) else {
                return Ok(None);
            };
            stored.message.text.clone_from(&edit.text);
            stored.message.html.clone_from(&edit.html);
            let id = stored.id;
            inner.edits.push(edit);
            id
        };
        self.changed.notify_waiters();
        Ok(Some(id))
    }

    async fn deleted(&self, deletion: InboundDeletion) -> Result<Vec<MessageId>, ChannelError> {
        let marked = {
            let mut inner = self.lock();
            let mut marked = Vec::new();
            for p in deletion.provider_ids {
                if let Some(id) = inner.by_provider_id.get(&p).map(|m| m.id)
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
