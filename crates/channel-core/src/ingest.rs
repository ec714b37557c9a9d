//! Ingest: what channels deliver is validated, its attachments stored, its cursor sealed, and
//! then it is committed with [`Store::ingest`](crate::Store::ingest); events follow the commit.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::channel::{ChannelError, Inbound};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::*;
use crate::store::{IngestDisposition, IngestOutcome, IngestRequest, StoredInbound};
use crate::validate;

impl Engine {
    /// Stores a message a channel received for `account`, and returns after the commit.
    ///
    /// In order: the message is validated (nothing is written for invalid input), its
    /// attachments go to the blob store, its cursor is sealed, and [`Store::ingest`] commits
    /// message and cursor together under the database timeout. Only then are the events
    /// published. Delivering the same provider id again is harmless: the store reports a
    /// duplicate and only the cursor moves.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use channel_core::{*, testing::MemoryStore, state::StateKey};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let store = Arc::new(MemoryStore::new());
    /// let engine = Engine::builder(store.clone(), StateKey::generate())
    ///     .blob_store(BlobStore::in_memory())
    ///     .build()
    ///     .unwrap();
    /// let account = store.create_account(NewAccount::new(ChannelKind::Memory, "a"), engine.now()).await.unwrap();
    /// let msg = InboundMessage::text("m1", "chat", IdentityInfo::new("tg:1"), "hi", engine.now());
    /// let first = engine.deliver(account.id, msg.clone()).await.unwrap();
    /// let again = engine.deliver(account.id, msg).await.unwrap();
    /// assert_eq!(again.disposition, IngestDisposition::Duplicate);
    /// assert_eq!(again.message_id, first.message_id);
    /// # });
    /// ```
    ///
    /// [`Store::ingest`]: crate::Store::ingest
    pub async fn deliver(
        &self,
        account: AccountId,
        message: InboundMessage,
    ) -> Result<IngestOutcome, EngineError> {
        validate::check_inbound(&message, &self.inner.config.limits)?;
        self.require_account(account).await?;
        let req = self.prepare(account, message).await?;
        let outcome = self.db("ingest", self.inner.store.ingest(req)).await?;
        self.publish_ingest(account, &outcome).await;
        Ok(outcome)
    }

    /// Stores a fetched batch in order, in one store call (one transaction on SQL stores).
    /// Every message is validated before anything is written.
    pub async fn deliver_batch(
        &self,
        account: AccountId,
        messages: Vec<InboundMessage>,
    ) -> Result<Vec<IngestOutcome>, EngineError> {
        for m in &messages {
            validate::check_inbound(m, &self.inner.config.limits)?;
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        self.require_account(account).await?;
        let mut reqs = Vec::with_capacity(messages.len());
        for m in messages {
            reqs.push(self.prepare(account, m).await?);
        }
        let outcomes = self.db("ingest_batch", self.inner.store.ingest_batch(reqs)).await?;
        for o in &outcomes {
            self.publish_ingest(account, o).await;
        }
        Ok(outcomes)
    }

    /// The sink through which a channel delivers for `account`.
    pub fn inbound(&self, account: AccountId) -> AccountSink {
        AccountSink { engine: self.clone(), account, alive: None }
    }

    /// Stores attachments (skipped for a known provider id) and seals the cursor.
    async fn prepare(
        &self,
        account: AccountId,
        m: InboundMessage,
    ) -> Result<IngestRequest, EngineError> {
        let known = if m.attachments.is_empty() {
            false
        } else {
            self.db(
                "message_by_provider_id",
                self.inner.store.message_by_provider_id(account, &m.provider_id),
            )
            .await?
            .is_some()
        };
        let mut attachments = Vec::with_capacity(m.attachments.len());
        if !known {
            for a in &m.attachments {
                attachments.push(self.inner.blobs.put_attachment(a).await?);
            }
        }
        let cursor = match m.cursor {
            Some(c) => {
                let value = self.inner.cipher.seal(account, &c.key, &c.value)?;
                Some(CursorUpdate { key: c.key, value })
            }
            None => None,
        };
        let origin = match m.direction {
            Direction::Inbound => Origin::Remote,
            Direction::Outbound => Origin::OtherApp,
        };
        Ok(IngestRequest {
            account_id: account,
            new_message_id: MessageId::new(),
            new_identity_id: IdentityId::new(),
            new_conversation_id: ConversationId::new(),
            message: StoredInbound {
                provider_id: m.provider_id,
                thread_key: m.thread_key,
                remote: m.remote,
                direction: m.direction,
                origin,
                client_key: m.client_key,
                text: m.text,
                html: m.html,
                reply_to: m.reply_to,
                references: m.references,
                attachments,
                parse_error: m.parse_error,
                sent_at: m.sent_at,
                cursor,
            },
            policy: self.lifecycle_policy(account),
            now: self.now(),
        })
    }

    /// Applies an edit a channel received for `account` (see [`Store::apply_edit`]) and,
    /// when it changed the message, publishes [`Event::MessageEdited`]. Returns the edited
    /// message's id, `None` when the message is not stored (an edit of a message from before
    /// the account was connected, say). Applying an edit twice changes nothing.
    ///
    /// [`Store::apply_edit`]: crate::Store::apply_edit
    pub async fn edit(
        &self,
        account: AccountId,
        edit: InboundEdit,
    ) -> Result<Option<MessageId>, EngineError> {
        validate::check_edit(&edit, &self.inner.config.limits)?;
        self.require_account(account).await?;
        let now = self.now();
        let Some((message, changed)) =
            self.db("apply_edit", self.inner.store.apply_edit(account, &edit, now)).await?
        else {
            return Ok(None);
        };
        if changed {
            self.inner
                .events
                .publish(Event::MessageEdited { account_id: account, message_id: message.id })
                .await;
        }
        Ok(Some(message.id))
    }

    /// Applies a deletion a channel received for `account` (see [`Store::apply_deletion`])
    /// and publishes [`Event::MessageDeleted`] for each message it marked. Returns their ids;
    /// ids of messages that are not stored, or already marked deleted, are passed over, so
    /// applying a deletion twice changes nothing and publishes nothing the second time.
    ///
    /// [`Store::apply_deletion`]: crate::Store::apply_deletion
    pub async fn delete(
        &self,
        account: AccountId,
        deletion: InboundDeletion,
    ) -> Result<Vec<MessageId>, EngineError> {
        validate::check_deletion(&deletion, &self.inner.config.limits)?;
        self.require_account(account).await?;
        if deletion.provider_ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let changed = self
            .db("apply_deletion", self.inner.store.apply_deletion(account, &deletion, now))
            .await?;
        let mut ids = Vec::with_capacity(changed.len());
        for m in changed {
            self.inner
                .events
                .publish(Event::MessageDeleted { account_id: account, message_id: m.id })
                .await;
            ids.push(m.id);
        }
        Ok(ids)
    }

    async fn publish_ingest(&self, account: AccountId, o: &IngestOutcome) {
        let disposition = match o.disposition {
            IngestDisposition::Stored => "stored",
            IngestDisposition::Duplicate => "duplicate",
            IngestDisposition::EchoMatched => "echo_matched",
        };
        metrics::counter!("channel_ingest_total", "disposition" => disposition).increment(1);
        let events = ingest_events(account, o);
        self.inner.events.publish_all(events).await;
    }
}

/// The events an ingest outcome publishes.
pub(crate) fn ingest_events(account: AccountId, o: &IngestOutcome) -> Vec<Event> {
    let mut events = Vec::new();
    match o.disposition {
        IngestDisposition::Stored => {
            if o.conversation_opened {
                events.push(Event::ConversationOpened {
                    account_id: account,
                    conversation_id: o.conversation_id,
                });
            }
            if o.conversation_reactivated {
                events.push(Event::ConversationStatusChanged {
                    account_id: account,
                    conversation_id: o.conversation_id,
                    status: ConversationStatus::Open,
                });
            }
            events.push(Event::MessageReceived {
                account_id: account,
                conversation_id: o.conversation_id,
                message_id: o.message_id,
            });
        }
        IngestDisposition::EchoMatched => {
            events.push(Event::MessageSent { account_id: account, message_id: o.message_id });
        }
        IngestDisposition::Duplicate => {}
    }
    events
}

/// The [`Inbound`] sink of one account: what the engine hands a channel's `run`.
#[derive(Clone)]
pub struct AccountSink {
    engine: Engine,
    account: AccountId,
    alive: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for AccountSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSink").field("account", &self.account).finish_non_exhaustive()
    }
}

impl AccountSink {
    /// Calls `alive` on every [`Inbound::alive`] (the runtime passes the watchdog's ping).
    pub fn with_alive(mut self, alive: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.alive = Some(alive);
        self
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.account
    }
}

#[async_trait]
impl Inbound for AccountSink {
    async fn deliver(&self, message: InboundMessage) -> Result<IngestOutcome, ChannelError> {
        Ok(self.engine.deliver(self.account, message).await?)
    }

    async fn deliver_batch(
        &self,
        messages: Vec<InboundMessage>,
    ) -> Result<Vec<IngestOutcome>, ChannelError> {
        Ok(self.engine.deliver_batch(self.account, messages).await?)
    }

    async fn known_provider_ids(
        &self,
        provider_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, ChannelError> {
        if provider_ids.len() > crate::KNOWN_IDS_LIMIT {
            return Err(ChannelError::InvalidInput(format!(
                "{} provider ids in one call, more than {}",
                provider_ids.len(),
                crate::KNOWN_IDS_LIMIT
            )));
        }
        let mut known = std::collections::HashSet::new();
        for id in provider_ids {
            if known.contains(id) {
                continue;
            }
            let found = self
                .engine
                .db(
                    "message_by_provider_id",
                    self.engine.store().message_by_provider_id(self.account, id),
                )
                .await
                .map_err(EngineError::from)?;
            if found.is_some() {
                known.insert(id.clone());
            }
        }
        Ok(known)
    }

    async fn edited(&self, edit: InboundEdit) -> Result<Option<MessageId>, ChannelError> {
        Ok(self.engine.edit(self.account, edit).await?)
    }

    async fn deleted(&self, deletion: InboundDeletion) -> Result<Vec<MessageId>, ChannelError> {
        Ok(self.engine.delete(self.account, deletion).await?)
    }

    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        use secrecy::ExposeSecret;
        let value =
            self.engine.account_state(self.account).get(key).await.map_err(EngineError::from)?;
        Ok(value.map(|v| v.expose_secret().to_vec()))
    }

    async fn state_put(&self, key: &str, value: &[u8]) -> Result<(), ChannelError> {
        let limits = &self.engine.config().limits;
        let cursor = CursorUpdate { key: key.to_owned(), value: Vec::new() };
        validate::check_cursor(&cursor, limits).map_err(EngineError::from)?;
        if value.len() > limits.state_value {
            return Err(ChannelError::InvalidInput(format!(
                "state value of {} bytes is larger than {}",
                value.len(),
                limits.state_value
            )));
        }
        Ok(self
            .engine
            .account_state(self.account)
            .put(key, value)
            .await
            .map_err(EngineError::from)?)
    }

    async fn state_delete(&self, key: &str) -> Result<(), ChannelError> {
        Ok(self.engine.account_state(self.account).delete(key).await.map_err(EngineError::from)?)
    }

    async fn report_state(&self, state: ConnectionState) {
        if let Err(e) = self.engine.report_state(self.account, state).await {
            tracing::warn!(account = %self.account, error = %e, "could not record the connection state");
        }
    }

    fn alive(&self) {
        if let Some(f) = &self.alive {
            f();
        }
    }
}
