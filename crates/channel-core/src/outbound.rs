//! Outbound messages: [`Engine::send`] queues them durably; the dispatcher runs their send
//! jobs through the send policy and the account's channel.

use std::sync::Arc;
use std::time::Duration;

use crate::channel::{Channel, ChannelError, PreparedSend, SendReceipt};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::jobs::{JobRun, ReadyChannel};
use crate::model::*;
use crate::send_policy::{SendContext, SendDecision};
use crate::store::{SendRequest, StoreError};
use crate::validate;

/// How the `error` note of a `Sent` message starts when the provider accepted it but the
/// store refused its provider id for good (another message of the account holds it, such as
/// the inbound copy of a mail sent to the account's own address): the message is `Sent`
/// without a provider id, the recipient did get it, and the engine never sends it again.
pub const SENT_BUT_NOT_RECORDED: &str = "sent, but its provider id is not recorded";

/// A short class of a store error, for logs and metrics.
pub(crate) fn store_error_class(e: &StoreError) -> &'static str {
    match e {
        StoreError::Timeout { .. } => "store_timeout",
        StoreError::Unavailable(_) => "store_unavailable",
        StoreError::LeaseLost { .. } => "lease_lost",
        StoreError::InvalidInput { .. } => "store_invalid_input",
        StoreError::NotFound { .. } => "store_not_found",
        StoreError::VersionConflict { .. } => "store_conflict",
        StoreError::Corrupt(_) => "store_corrupt",
        _ => "store_backend",
    }
}

/// The message id of a send with the service's idempotency `key` in `account`: the same
/// account and key always give the same id (a UUID made from their SHA-256), so the message
/// itself records the key for as long as it exists.
fn idempotent_message_id(account: AccountId, key: &str) -> MessageId {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"channel-core idempotency key\0");
    h.update(account.as_uuid().as_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    MessageId(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

impl Engine {
    /// Our idempotency key for a new send from `account`: its provider's
    /// [`Provider::client_key`](crate::provider::Provider::client_key), or the message id
    /// when this process has no provider of the account's kind (register the provider in
    /// every process that queues sends; a provider that checks the form of its keys refuses
    /// such a send for good).
    pub fn client_key(&self, account: &Account, message_id: MessageId) -> String {
        match self.provider(&account.kind) {
            Some(p) => p.client_key(account, message_id),
            None => message_id.to_string(),
        }
    }

    /// Queues an outbound message and returns its id at once.
    ///
    /// The message (status `Pending`, with its client key) and its send job are committed
    /// together; then the dispatcher is woken, here and (through the store's notifications) in
    /// other processes. When `account` is given, the conversation must belong to it.
    ///
    /// Attachments for an account whose channel, attached in this process, cannot send media
    /// are refused with [`EngineError::Unsupported`] and nothing is queued; a send queued
    /// while such a channel runs elsewhere ends `Failed` when its job runs there, never sent
    /// without its attachments.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use channel_core::{*, testing::MemoryStore, state::StateKey};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// # let store = Arc::new(MemoryStore::new());
    /// # let engine = Engine::builder(store.clone(), StateKey::generate()).blob_store(BlobStore::in_memory()).build().unwrap();
    /// # let account = store.create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now()).await.unwrap();
    /// # let msg = InboundMessage::text("m1", "chat", IdentityInfo::new("tg:1"), "hi", engine.now());
    /// let conversation = engine.deliver(account.id, msg).await.unwrap().conversation_id;
    /// let reply = OutboundMessage {
    ///     conversation_id: conversation,
    ///     text: Some("hello!".into()),
    ///     html: None,
    ///     subject: None,
    ///     idempotency_key: None,
    ///     reply_to: None,
    ///     attachments: vec![],
    ///     label: "manual".into(),
    /// };
    /// let id = engine.send(Some(account.id), reply).await.unwrap();
    /// assert_eq!(store.message(id).await.unwrap().status, MessageStatus::Pending);
    /// # });
    /// ```
    pub async fn send(
        &self,
        account: Option<AccountId>,
        message: OutboundMessage,
    ) -> Result<MessageId, EngineError> {
        validate::check_outbound(&message, &self.inner.config.limits)?;
        let conversation = match self
            .db("conversation", self.inner.store.conversation(message.conversation_id))
            .await
        {
            Ok(c) => c,
            Err(StoreError::NotFound { .. }) => {
                return Err(EngineError::UnknownConversation(message.conversation_id));
            }
            Err(e) => return Err(e.into()),
        };
        if account.is_some_and(|a| a != conversation.account_id) {
            return Err(EngineError::UnknownConversation(message.conversation_id));
        }
        let account = self.db("account", self.inner.store.account(conversation.account_id)).await?;
        if !message.attachments.is_empty()
            && self.channel(account.id).is_some_and(|c| !c.capabilities().media)
        {
            return Err(EngineError::Unsupported { account: account.id, capability: "media" });
        }
        let message_id = match &message.idempotency_key {
            Some(key) => {
                let id = idempotent_message_id(account.id, key);
                if let Some(existing) = self.existing_send(id, key, &message).await? {
                    return Ok(existing);
                }
                id
            }
            None => MessageId::new(),
        };
        let mut attachments = Vec::with_capacity(message.attachments.len());
        for a in &message.attachments {
            attachments.push(self.inner.blobs.put_attachment(a).await?);
        }
        let now = self.now();
        let req = SendRequest {
            message_id,
            job_id: JobId::new(),
            conversation_id: conversation.id,
            origin: Origin::Service(message.label.clone()),
            client_key: self.client_key(&account, message_id),
            text: message.text.clone(),
            html: message.html.clone(),
            subject: message.subject.clone(),
            reply_to: message.reply_to.clone(),
            attachments,
            max_attempts: self.inner.config.retry.max_attempts,
            run_at: now,
            now,
        };
        match self.db("enqueue_send", self.inner.store.enqueue_send(req)).await {
            Ok(_) => {}
            // The same key raced in from another call: its message stands.
            Err(StoreError::InvalidInput { .. })
                if let Some(key) = &message.idempotency_key
                    && let Some(existing) =
                        self.existing_send(message_id, key, &message).await? =>
            {
                return Ok(existing);
            }
            Err(e) => return Err(e.into()),
        }
        self.announce_jobs("send").await;
        Ok(message_id)
    }

    /// The message a send with idempotency `key` already queued as `id`, if any: `Ok(None)`
    /// when there is none, [`EngineError::IdempotencyConflict`] when its content differs.
    async fn existing_send(
        &self,
        id: MessageId,
        key: &str,
        message: &OutboundMessage,
    ) -> Result<Option<MessageId>, EngineError> {
        let stored = match self.db("message", self.inner.store.message(id)).await {
            Ok(m) => m,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let hashes: Vec<String> = message
            .attachments
            .iter()
            .map(|a| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&a.data)))
            .collect();
        let same = stored.conversation_id == message.conversation_id
            && stored.text == message.text
            && stored.html == message.html
            && stored.subject == message.subject
            && stored.reply_to == message.reply_to
            && stored.origin == Origin::Service(message.label.clone())
            && stored.attachments.iter().map(|a| &a.sha256).eq(hashes.iter());
        if same {
            Ok(Some(id))
        } else {
            Err(EngineError::IdempotencyConflict { key: key.to_owned(), message: id })
        }
    }

    /// Runs one claimed send job to its end (sent, retried, snoozed or failed).
    pub(crate) async fn run_send_job(&self, run: &JobRun) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let Some(message_id) = run.lease.job.message_id else {
            return run.discard(self, "send job without a message", None).await;
        };
        let message = match self.db("message", store.message(message_id)).await {
            Ok(m) => m,
            Err(StoreError::NotFound { .. }) => {
                return run.discard(self, "the message no longer exists", None).await;
            }
            Err(e) => return Err(e),
        };
        if message.status != MessageStatus::Pending {
            // The provider's echo proved it sent already.
            return run.complete(self, None).await;
        }
        let channel = match self.ready_channel(run, message.account_id).await? {
            ReadyChannel::Ready(c) => c,
            ReadyChannel::Snoozed => return Ok(()),
        };
        if !message.attachments.is_empty() && !channel.capabilities().media {
            // Sending the text alone would silently drop what the user attached.
            let reason = "the account's channel cannot send attachments (its capabilities have \
                          no media)";
            return self.fail_message(run, &message, reason).await;
        }
        let conversation =
            self.db("conversation", store.conversation(message.conversation_id)).await?;
        let identity = self.db("identity", store.identity(message.identity_id)).await?;

        let settings = match self.account_settings(message.account_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(message = %message_id, error = %e, "the account's settings could not be read; holding the send back");
                let later = self.now().plus(Duration::from_secs(1));
                return run.snooze(self, later, "account settings unavailable", "settings").await;
            }
        };
        let ctx = SendContext {
            account_id: message.account_id,
            kind: channel.kind(),
            thread_key: &conversation.thread_key,
            message_id,
            attempt: run.lease.attempt,
            now: self.now(),
            rates: settings.send_rates,
        };
        match self.inner.send_policy.check(&ctx).await {
            SendDecision::Allow => {}
            SendDecision::DelayUntil(t) => {
                return run.snooze(self, t, "held back by the send policy", "send_policy").await;
            }
            SendDecision::Reject(reason) => {
                let reason = format!("refused by the send policy: {reason}");
                return self.fail_message(run, &message, &reason).await;
            }
        }

        let references = self
            .db("messages", store.messages(conversation.id, 100))
            .await?
            .into_iter()
            .filter(|m| m.id != message.id)
            .filter_map(|m| m.provider_id)
            .collect();
        let outgoing = PreparedSend {
            message_id,
            client_key: message.client_key.clone().unwrap_or_else(|| message_id.to_string()),
            thread_key: conversation.thread_key.clone(),
            remote: IdentityInfo {
                address: identity.address,
                display_name: identity.display_name,
                username: identity.username,
            },
            text: message.text.clone(),
            html: message.html.clone(),
            subject: message.subject.clone(),
            reply_to: message.reply_to.clone(),
            references,
            attachments: message.attachments.clone(),
        };
        match self.call_send(&channel, &outgoing).await {
            Ok(receipt) => {
                // From here on the message is out: whatever the store does, never send again.
                self.record_sent(run, &message, receipt).await;
                Ok(())
            }
            Err(e) => self.send_failed(run, &message, e).await,
        }
    }

    /// The outcome of a send the provider accepted under an id the store refuses: `Sent`,
    /// without the id.
    fn not_recorded(
        &self,
        job: &Job,
        message: &Message,
        receipt: &SendReceipt,
        err: &StoreError,
    ) -> MessageOutcome {
        let note = format!(
            "{SENT_BUT_NOT_RECORDED}: the provider accepted it as `{}`, but the store refused that id ({err}); it is not sent again",
            receipt.provider_id.replace('\0', "\u{FFFD}")
        );
        tracing::error!(
            job = %job.id,
            message = %message.id,
            error = %err,
            "sent, but the store refused the provider id: recording the message sent without it"
        );
        MessageOutcome::SentUnlinked { at: receipt.at, note }
    }

    /// Records a send the provider accepted, and never calls the channel again for it.
    ///
    /// * The `Sent` outcome (with the provider id) is retried with backoff (100 ms doubling
    ///   to 5 s) for up to one `job_lease_ttl` while the store fails transiently, extending the
    ///   job's lease so that it is not rescued meanwhile.
    /// * If the provider id is already held by an outbound copy of this send (its echo or
    ///   the owner's capture, stored before the send was recorded, as after a crash), the two
    ///   become one row ([`MessageStore::merge_stray`](crate::MessageStore::merge_stray)): the copy is
    ///   removed, the message ends `Sent` with the id, and `MessageMerged { kept, removed }`
    ///   is published before `MessageSent`.
    /// * If the store refuses it for good (`InvalidInput`: the provider id is held by an
    ///   inbound message of the account or cannot be stored), the job is completed with the
    ///   message `Sent` without a provider id ([`MessageOutcome::SentUnlinked`]), its `error`
    ///   note starting with [`SENT_BUT_NOT_RECORDED`] and naming the id: delivered mail is
    ///   never shown as failed, and nothing is re-driven. `MessageSent` is published.
    /// * If the lease is lost, or the store stays unavailable past the window, the job is
    ///   left to the rescuer; its next attempt calls the channel again **with the same client
    ///   key**, which the provider deduplicates (Telegram `random_id`, email Message-ID), so
    ///   the recipient still gets one message, but the channel is called twice. That residual
    ///   case needs a store that is down longer than a job lease.
    async fn record_sent(&self, run: &JobRun, message: &Message, receipt: SendReceipt) {
        let store = &self.inner.store;
        let cfg = &self.inner.config;
        let job = &run.lease.job;
        let started = self.now();
        let deadline = started.plus(cfg.job_lease_ttl);
        let mut lease_until = job.lease_expires_at.unwrap_or(started);
        let mut outcome =
            MessageOutcome::Sent { provider_id: receipt.provider_id.clone(), at: receipt.at };
        let mut refused = false;
        let mut merge_tried = false;
        let mut merged: Option<MessageId> = None;
        let backoff = crate::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut delay = backoff.ceiling(0);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match run.try_complete(self, Some(outcome.clone())).await {
                Ok(()) => {
                    run.count("complete");
                    metrics::counter!("channel_messages_sent_total").increment(1);
                    let latency = self.now().since(message.created_at).as_secs_f64();
                    metrics::histogram!("channel_send_latency_seconds").record(latency);
                    if refused {
                        run.count("sent_not_recorded");
                    } else if tries > 1 && merged.is_none() {
                        tracing::info!(job = %job.id, message = %message.id, tries, "the send was recorded after store failures");
                    }
                    if let Some(removed) = merged {
                        metrics::counter!("channel_messages_merged_total").increment(1);
                        let event = Event::MessageMerged {
                            account_id: message.account_id,
                            kept: message.id,
                            removed,
                        };
                        self.inner.events.publish(event).await;
                    }
                    let event = Event::MessageSent {
                        account_id: message.account_id,
                        message_id: message.id,
                    };
                    self.inner.events.publish(event).await;
                    return;
                }
                Err(StoreError::LeaseLost { .. }) => {
                    // An earlier try that timed out may have committed after all.
                    if tries > 1
                        && let Ok(m) = self.db("message", store.message(message.id)).await
                        && m.status == MessageStatus::Sent
                    {
                        run.count("complete");
                        metrics::counter!("channel_messages_sent_total").increment(1);
                        let event = Event::MessageSent {
                            account_id: message.account_id,
                            message_id: message.id,
                        };
                        self.inner.events.publish(event).await;
                        return;
                    }
                    run.count("lease_lost");
                    tracing::warn!(
                        job = %job.id,
                        message = %message.id,
                        attempt = run.lease.attempt,
                        "sent, but the job's lease was lost before the send was recorded: its next attempt calls the channel again with the same client key, which the provider deduplicates"
                    );
                    return;
                }
                Err(err @ StoreError::InvalidInput { .. }) if !merge_tried && !refused => {
                    // The id may be held by a stray copy of this very send (its echo, stored
                    // before the send was recorded): make them one row and record again.
                    merge_tried = true;
                    let merge = store.merge_stray(message.id, &receipt.provider_id);
                    match self.db("merge_stray", merge).await {
                        Ok(Some(removed)) => {
                            tracing::info!(
                                job = %job.id,
                                message = %message.id,
                                %removed,
                                "the provider's id was held by a stray copy of this send: merged"
                            );
                            merged = Some(removed);
                        }
                        Ok(None) => {
                            refused = true;
                            outcome = self.not_recorded(job, message, &receipt, &err);
                        }
                        Err(e) => {
                            tracing::warn!(job = %job.id, message = %message.id, error = %e, "could not merge a stray copy of the send; recording again");
                            merge_tried = false;
                        }
                    }
                }
                Err(err @ (StoreError::InvalidInput { .. } | StoreError::NotFound { .. })) => {
                    if refused || matches!(err, StoreError::NotFound { .. }) {
                        // Even the fallback was refused, or the job is gone: nothing left to
                        // record; at least never send again from here.
                        run.count("store_error");
                        tracing::error!(job = %job.id, message = %message.id, error = %err, "sent, but the store refused to record it; the job stays as it is");
                        return;
                    }
                    refused = true;
                    outcome = self.not_recorded(job, message, &receipt, &err);
                }
                Err(err) => {
                    let now = self.now();
                    if now >= deadline {
                        run.count("store_error");
                        tracing::error!(
                            job = %job.id,
                            message = %message.id,
                            error = %err,
                            tries,
                            "sent, but the store did not record it within a job lease: the job will be rescued and its next attempt calls the channel again with the same client key, which the provider deduplicates"
                        );
                        return;
                    }
                    // Keep the job ours while we wait for the store.
                    if lease_until.since(now) < delay + cfg.db_timeout * 2 {
                        let extend = store.extend_job_lease(&run.lease, cfg.job_lease_ttl, now);
                        match self.db("extend_job_lease", extend).await {
                            Ok(()) => lease_until = now.plus(cfg.job_lease_ttl),
                            Err(StoreError::LeaseLost { .. }) => {
                                run.count("lease_lost");
                                tracing::warn!(job = %job.id, message = %message.id, "sent, but the job's lease was lost before the send was recorded: its next attempt calls the channel again with the same client key, which the provider deduplicates");
                                return;
                            }
                            Err(e) => {
                                tracing::debug!(job = %job.id, error = %e, "could not extend the job's lease")
                            }
                        }
                    }
                    tracing::warn!(
                        job = %job.id,
                        message = %message.id,
                        attempt = run.lease.attempt,
                        tries,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        class = store_error_class(&err),
                        "sent, but recording it failed; retrying the record (never the send)"
                    );
                    metrics::counter!("channel_send_record_retries_total").increment(1);
                    tokio::time::sleep(delay.min(deadline.since(now))).await;
                    delay = backoff.ceiling(tries);
                }
            }
        }
    }

    async fn call_send(
        &self,
        channel: &Arc<dyn Channel>,
        m: &PreparedSend,
    ) -> Result<crate::SendReceipt, ChannelError> {
        let after = self.inner.config.send_timeout;
        match tokio::time::timeout(after, channel.send(m)).await {
            Ok(r) => r,
            Err(_) => Err(ChannelError::Timeout { operation: "send".to_owned(), after }),
        }
    }

    /// Publishes `MessageStatusChanged { Failed }` if the message is failed now (after a store
    /// call that may have failed it, such as a discard or a rescue).
    pub(crate) async fn publish_if_failed(&self, account_id: AccountId, message_id: MessageId) {
        match self.db("message", self.inner.store.message(message_id)).await {
            Ok(m) if m.status == MessageStatus::Failed => {
                self.inner
                    .events
                    .publish(Event::MessageStatusChanged {
                        account_id,
                        message_id,
                        status: MessageStatus::Failed,
                    })
                    .await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(message = %message_id, error = %e, "could not read a failed message; its status event is not published")
            }
        }
    }

    async fn send_failed(
        &self,
        run: &JobRun,
        message: &Message,
        e: ChannelError,
    ) -> Result<(), StoreError> {
        match self.classify(run, message.account_id, e).await? {
            Some(error) => self.fail_message(run, message, &error).await,
            None => Ok(()),
        }
    }

    /// Discards the job and fails its message, publishing the status change.
    async fn fail_message(
        &self,
        run: &JobRun,
        message: &Message,
        error: &str,
    ) -> Result<(), StoreError> {
        let outcome = Some(MessageOutcome::Failed { error: error.to_owned() });
        if !run.discard_applied(self, error, outcome).await? {
            return Ok(());
        }
        self.inner
            .events
            .publish(Event::MessageStatusChanged {
                account_id: message.account_id,
                message_id: message.id,
                status: MessageStatus::Failed,
            })
            .await;
        Ok(())
    }
}
