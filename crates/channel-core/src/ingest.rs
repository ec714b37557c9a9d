//! Ingest: what channels deliver is validated, its attachments stored, its cursor sealed, and
//! then it is committed with [`MessageStore::ingest`](crate::MessageStore::ingest); events follow the commit.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::channel::{ChannelError, Inbound};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::*;
use crate::store::{IngestDisposition, IngestOutcome, IngestRequest, StoreError, StoredInbound};
use crate::validate;

impl Engine {
    /// Stores a message a channel received for `account`, and returns after the commit.
    ///
    /// In order: the message is degraded where it must be (see [`validate::degrade_inbound`]:
    /// nothing a provider delivers is refused as a whole; what was changed is listed in the
    /// message's defects), its attachments go to the blob store, its cursor is sealed, and
    /// [`MessageStore::ingest_batch`](crate::MessageStore::ingest_batch) commits message and cursor together under the database timeout.
    /// If the store refuses the message even so, a placeholder row takes its place (see
    /// [`defect::PLACEHOLDER`](crate::defect::PLACEHOLDER)) so that the account goes on. Only
    /// then are the events published. Delivering the same provider id again is harmless: the
    /// store reports a duplicate and only the cursor moves.
    ///
    /// The only refusals are a cursor the channel made wrongly ([`EngineError::Invalid`]) and
    /// an unknown account; a failure of the store itself is returned as it is, and nothing is
    /// stored degraded because of it: retry the call.
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
    /// let account = store.create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now()).await.unwrap();
    /// let msg = InboundMessage::text("m1", "chat", IdentityInfo::new("tg:1"), "hi", engine.now());
    /// let first = engine.deliver(account.id, msg.clone()).await.unwrap();
    /// let again = engine.deliver(account.id, msg).await.unwrap();
    /// assert_eq!(again.disposition, IngestDisposition::Duplicate);
    /// assert_eq!(again.message_id, first.message_id);
    ///
    /// // A NUL byte, which PostgreSQL cannot store, is replaced and flagged, not refused.
    /// let odd = InboundMessage::text("m2", "chat", IdentityInfo::new("tg:1"), "a\0b", engine.now());
    /// let out = engine.deliver(account.id, odd).await.unwrap();
    /// let stored = store.message(out.message_id).await.unwrap();
    /// assert_eq!(stored.text.as_deref(), Some("a\u{FFFD}b"));
    /// assert_eq!(stored.defects[0].code, defect::NUL_REPLACED);
    /// # });
    /// ```
    ///
    /// [`MessageStore::ingest_batch`](crate::MessageStore::ingest_batch): crate::MessageStore::ingest_batch
    pub async fn deliver(
        &self,
        account: AccountId,
        message: InboundMessage,
    ) -> Result<IngestOutcome, EngineError> {
        let mut outcomes = self.deliver_batch(account, vec![message]).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Corrupt("ingest returned no outcome".to_owned()).into())
    }

    /// Stores a fetched batch in order, in one store call (one transaction on SQL stores),
    /// with the same rules as [`Engine::deliver`]. A message the store refuses never holds
    /// the batch hostage: the batch is then stored message by message, the refused one
    /// replaced by a placeholder, in order, and every cursor moves.
    pub async fn deliver_batch(
        &self,
        account: AccountId,
        messages: Vec<InboundMessage>,
    ) -> Result<Vec<IngestOutcome>, EngineError> {
        let limits = &self.inner.config.limits;
        let blob_max = self.inner.blobs.max_size();
        let mut degraded = Vec::with_capacity(messages.len());
        for m in messages {
            if let Some(c) = &m.cursor {
                validate::check_cursor(c, limits)?;
            }
            let m = validate::degrade_inbound(m, limits, blob_max);
            validate::check_inbound(&m, limits)?;
            degraded.push(m);
        }
        if degraded.is_empty() {
            return Ok(Vec::new());
        }
        self.require_account(account).await?;
        let mut reqs = Vec::with_capacity(degraded.len());
        for m in degraded {
            reqs.push(self.prepare(account, m).await?);
        }
        let outcomes = match self.db("ingest_batch", self.inner.store.ingest_batch(&reqs)).await {
            Ok(outcomes) => outcomes,
            Err(StoreError::InvalidInput { field, reason }) => {
                tracing::warn!(
                    %account, field, %reason,
                    "the store refused a message of a batch; storing it message by message"
                );
                self.ingest_each(&mut reqs).await?
            }
            Err(e) => return Err(e.into()),
        };
        for (o, req) in outcomes.iter().zip(&reqs) {
            self.publish_ingest(account, o, &req.message.defects).await;
        }
        Ok(outcomes)
    }

    /// Stores `reqs` one by one, replacing each one the store refuses by a placeholder (in
    /// `reqs` too, so that the events name its defects).
    async fn ingest_each(
        &self,
        reqs: &mut [IngestRequest],
    ) -> Result<Vec<IngestOutcome>, EngineError> {
        let mut outcomes = Vec::with_capacity(reqs.len());
        for req in reqs.iter_mut() {
            let mut tries = 0;
            let outcome = loop {
                let call = self.inner.store.ingest_batch(std::slice::from_ref(req));
                match self.db("ingest", call).await {
                    Ok(mut o) => {
                        break o.pop().ok_or_else(|| {
                            StoreError::Corrupt("ingest returned no outcome".to_owned())
                        })?;
                    }
                    Err(StoreError::InvalidInput { field, reason }) if tries < 2 => {
                        tracing::warn!(
                            account = %req.account_id, field, %reason,
                            "the store refused a message; storing a placeholder in its place"
                        );
                        *req = placeholder(req, field, &reason, tries == 1);
                        tries += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// The sink through which a channel delivers for `account`.
    pub fn account_sink(&self, account: AccountId) -> AccountSink {
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
                defects: m.defects,
                sent_at: m.sent_at,
                cursor,
            },
            policy: self.lifecycle_of(&self.account_settings(account).await?),
            now: self.now(),
        })
    }

    /// Applies an edit a channel received for `account` (see [`MessageStore::apply_edit`](crate::MessageStore::apply_edit)) and,
    /// when it changed the message, publishes [`Event::MessageEdited`]. Returns the edited
    /// message's id, `None` when the message is not stored (an edit of a message from before
    /// the account was connected, say). Applying an edit twice changes nothing.
    ///
    /// [`MessageStore::apply_edit`](crate::MessageStore::apply_edit): crate::MessageStore::apply_edit
    pub async fn edit(
        &self,
        account: AccountId,
        edit: InboundEdit,
    ) -> Result<Option<MessageId>, EngineError> {
        let (edit, defects) = validate::degrade_edit(edit, &self.inner.config.limits);
        if !defects.is_empty() {
            let codes: Vec<&str> = defects.iter().map(|d| d.code.as_str()).collect();
            tracing::warn!(%account, ?codes, "an edit was degraded to be stored");
        }
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

    /// Applies a deletion a channel received for `account` (see [`MessageStore::apply_deletion`](crate::MessageStore::apply_deletion))
    /// and publishes [`Event::MessageDeleted`] for each message it marked. Returns their ids;
    /// ids of messages that are not stored, or already marked deleted, are passed over, so
    /// applying a deletion twice changes nothing and publishes nothing the second time.
    ///
    /// [`MessageStore::apply_deletion`](crate::MessageStore::apply_deletion): crate::MessageStore::apply_deletion
    pub async fn delete(
        &self,
        account: AccountId,
        deletion: InboundDeletion,
    ) -> Result<Vec<MessageId>, EngineError> {
        let deletion = validate::degrade_deletion(deletion, &self.inner.config.limits);
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

    async fn publish_ingest(&self, account: AccountId, o: &IngestOutcome, defects: &[Defect]) {
        let disposition = match o.disposition {
            IngestDisposition::Stored => "stored",
            IngestDisposition::Duplicate => "duplicate",
            IngestDisposition::EchoMatched => "echo_matched",
        };
        metrics::counter!("channel_ingest_total", "disposition" => disposition).increment(1);
        if o.disposition == IngestDisposition::Stored {
            metrics::counter!("channel_messages_ingested_total", "account" => account.to_string())
                .increment(1);
            for d in defects {
                metrics::counter!("channel_message_defects_total", "code" => d.code.clone())
                    .increment(1);
            }
        }
        let events = crate::feed::derive::ingest(account, o, defects);
        self.inner.events.publish_all(events).await;
    }
}

/// A placeholder for a message the store refused: its provider id, thread, sender,
/// direction, client key, time and cursor, the reason in `parse_error`, its raw form (a
/// `message/rfc822` attachment) if it had one, and its defects plus
/// [`defect::PLACEHOLDER`]. `minimal` drops everything but ids (shortened), the cursor and
/// the time, for a store that refused the first placeholder too.
fn placeholder(req: &IngestRequest, field: &str, reason: &str, minimal: bool) -> IngestRequest {
    let m = &req.message;
    let mut defects = m.defects.clone();
    if !defects.iter().any(|d| d.code == defect::PLACEHOLDER) {
        defects.push(Defect::new(defect::PLACEHOLDER).field(field));
    }
    let why = format!("the store refused the message ({field}: {reason}); this is a placeholder");
    let why = validate::DecodedText::from_string(why).text;
    let why = validate::truncate_utf8(&why, validate::Limits::DEFAULT.parse_error).to_owned();
    let message = if minimal {
        StoredInbound {
            provider_id: validate::shortened_id(&m.provider_id),
            thread_key: validate::shortened_id(&m.thread_key),
            remote: IdentityInfo::new(validate::UNKNOWN_ADDRESS),
            direction: m.direction,
            origin: m.origin.clone(),
            client_key: m.client_key.as_deref().map(validate::shortened_id),
            text: None,
            html: None,
            reply_to: None,
            references: Vec::new(),
            attachments: Vec::new(),
            parse_error: Some(why),
            defects: vec![Defect::new(defect::PLACEHOLDER).field(field)],
            sent_at: m.sent_at,
            cursor: m.cursor.clone(),
        }
    } else {
        StoredInbound {
            provider_id: m.provider_id.clone(),
            thread_key: m.thread_key.clone(),
            remote: m.remote.clone(),
            direction: m.direction,
            origin: m.origin.clone(),
            client_key: m.client_key.clone(),
            text: None,
            html: None,
            reply_to: None,
            references: Vec::new(),
            attachments: m
                .attachments
                .iter()
                .filter(|a| a.mime_type == "message/rfc822")
                .take(1)
                .cloned()
                .collect(),
            parse_error: Some(why),
            defects,
            sent_at: m.sent_at,
            cursor: m.cursor.clone(),
        }
    };
    IngestRequest {
        account_id: req.account_id,
        new_message_id: req.new_message_id,
        new_identity_id: req.new_identity_id,
        new_conversation_id: req.new_conversation_id,
        message,
        policy: req.policy,
        now: req.now,
    }
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
