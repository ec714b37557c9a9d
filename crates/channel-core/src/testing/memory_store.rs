//! [`MemoryStore`]: the reference implementation of [`Store`], in memory.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc as StdArc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;

use crate::feed::*;
use crate::model::*;
use crate::page::Position;
use crate::store::*;
use crate::workers::*;

/// A complete [`Store`] in memory: one [`Mutex`] over plain collections, so every call is one
/// atomic step.
///
/// It is the reference implementation of the contract: the
/// [conformance suite](crate::testing::conformance) passes on it, and its behaviour is what
/// the SQL stores match. Use it in tests and examples; it keeps nothing across restarts.
///
/// ```
/// use channel_core::testing::MemoryStore;
/// use channel_core::{AccountStore, ChannelKind, NewAccount, Timestamp};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let account = store
///     .create_account(NewAccount::new(ChannelKind::from_static("memory"), "test"), Timestamp(1))
///     .await
///     .unwrap();
/// assert_eq!(store.accounts().await.unwrap(), vec![account]);
/// # });
/// ```
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    faults: Mutex<HashMap<&'static str, VecDeque<StoreError>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("accounts", &inner.accounts.len())
            .field("messages", &inner.messages.len())
            .field("jobs", &inner.jobs.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<AccountId, Account>,
    /// Removed accounts whose messages stay: neither listed nor found.
    removed: HashMap<AccountId, Account>,
    state: HashMap<(AccountId, String), Vec<u8>>,
    identities: HashMap<IdentityId, Identity>,
    identity_by_address: HashMap<(AccountId, String), IdentityId>,
    conversations: HashMap<ConversationId, Conversation>,
    messages: HashMap<MessageId, Message>,
    message_by_provider: HashMap<(AccountId, String), MessageId>,
    message_by_client_key: HashMap<(AccountId, String), MessageId>,
    jobs: HashMap<JobId, Job>,
    /// Attempt rows in insertion order per job.
    attempts: HashMap<JobId, Vec<JobAttempt>>,
    leases: HashMap<String, Lease>,
    /// The durable feed, in order.
    feed: Vec<FeedEvent>,
    /// The last event number handed out.
    feed_seq: i64,
    /// Everything up to here was pruned.
    feed_pruned: FeedPosition,
    consumers: BTreeMap<String, FeedConsumerInfo>,
    /// Worker rows and their liveness (alive while the registering guard lives).
    workers: BTreeMap<String, (WorkerInfo, Weak<()>)>,
}

/// Whether a row at `(at, id)` sorts before `p` in a newest-first listing.
/// A keyset page of `rows`: newest first by `key` (a time, then an id), only rows strictly
/// before `before` in that order, at most `limit`.
fn page_before<'a, T: Clone + 'a, I: Ord + ToString>(
    rows: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> (Timestamp, I),
    before: Option<&Position>,
    limit: usize,
) -> Vec<T> {
    let is_before = |(at, id): &(Timestamp, I)| match before {
        None => true,
        Some(p) => *at < p.at || (*at == p.at && id.to_string().as_str() < p.id.as_str()),
    };
    let mut out: Vec<T> = rows.filter(|r| is_before(&key(r))).cloned().collect();
    out.sort_by_key(|r| std::cmp::Reverse(key(r)));
    out.truncate(limit);
    out
}

fn no_nul(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.contains('\0') {
        Err(StoreError::InvalidInput { field, reason: "contains a NUL byte".to_owned() })
    } else {
        Ok(())
    }
}

fn no_nul_opt(field: &'static str, value: Option<&str>) -> Result<(), StoreError> {
    value.map_or(Ok(()), |v| no_nul(field, v))
}

fn check_attachments(attachments: &[Attachment]) -> Result<(), StoreError> {
    for a in attachments {
        no_nul_opt("attachment.name", a.name.as_deref())?;
        no_nul("attachment.mime_type", &a.mime_type)?;
        no_nul("attachment.sha256", &a.sha256)?;
        no_nul("attachment.blob_key", &a.blob_key)?;
    }
    Ok(())
}

/// Like the SQL stores, refuses what is over [`Limits::DEFAULT`](crate::validate::Limits).
fn within(field: &'static str, len: usize, max: usize) -> Result<(), StoreError> {
    if len > max {
        return Err(StoreError::InvalidInput {
            field,
            reason: format!("{len} is more than the limit of {max}"),
        });
    }
    Ok(())
}

fn check_inbound(m: &StoredInbound) -> Result<(), StoreError> {
    let l = crate::validate::Limits::DEFAULT;
    within("provider_id", m.provider_id.len(), l.id)?;
    within("thread_key", m.thread_key.len(), l.id)?;
    within("text", m.text.as_deref().map_or(0, str::len), l.text)?;
    within("html", m.html.as_deref().map_or(0, str::len), l.html)?;
    within("references", m.references.len(), l.references)?;
    within("attachments", m.attachments.len(), l.attachments)?;
    within("defects", m.defects.len(), l.defects)?;
    no_nul("provider_id", &m.provider_id)?;
    no_nul("thread_key", &m.thread_key)?;
    no_nul("remote.address", &m.remote.address)?;
    no_nul_opt("remote.display_name", m.remote.display_name.as_deref())?;
    no_nul_opt("remote.username", m.remote.username.as_deref())?;
    if let Origin::Service(label) = &m.origin {
        no_nul("origin", label)?;
    }
    no_nul_opt("client_key", m.client_key.as_deref())?;
    no_nul_opt("text", m.text.as_deref())?;
    no_nul_opt("html", m.html.as_deref())?;
    no_nul_opt("reply_to", m.reply_to.as_deref())?;
    for r in &m.references {
        no_nul("references", r)?;
    }
    check_attachments(&m.attachments)?;
    no_nul_opt("parse_error", m.parse_error.as_deref())?;
    if let Some(c) = &m.cursor {
        no_nul("cursor.key", &c.key)?;
    }
    Ok(())
}

fn lease_lost(lease: &JobLease) -> StoreError {
    StoreError::LeaseLost { what: format!("job {}", lease.job.id) }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next calls of `operation` fail with these errors, in order, before they
    /// touch any data (fault injection for tests: a database that is down, a timeout, a
    /// refusal). Then the operation works again.
    ///
    /// Operations with injectable faults: `account`, `set_connection_state`, `message`,
    /// `claim`, `complete`, `retry`, `snooze`, `discard`, `extend_job_lease`,
    /// `rescue_expired`, `job`, `jobs_in_state`, `acquire_lease`, `renew_lease`,
    /// `release_lease`.
    ///
    /// ```
    /// use channel_core::testing::MemoryStore;
    /// use channel_core::{AccountId, AccountStore, StoreError};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// store.fail_next("account", [StoreError::Unavailable("down".into())]);
    /// let id = AccountId::new();
    /// assert!(matches!(store.account(id).await, Err(StoreError::Unavailable(_))));
    /// assert!(matches!(store.account(id).await, Err(StoreError::NotFound { .. })));
    /// # });
    /// ```
    pub fn fail_next(&self, operation: &'static str, errors: impl IntoIterator<Item = StoreError>) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(operation)
            .or_default()
            .extend(errors);
    }

    /// Removes every fault still waiting (the database is back).
    pub fn clear_faults(&self) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The next injected fault of `operation`, if any.
    fn injected(&self, operation: &'static str) -> Result<(), StoreError> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        match faults.get_mut(operation).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave half a change behind: every method
        // validates before it mutates. So a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Appends events to the feed (under the store's lock: with the change they report).
    fn emit(&mut self, events: impl IntoIterator<Item = Event>, now: Timestamp) {
        for event in events {
            self.feed_seq += 1;
            let position = FeedPosition { tx: 0, seq: self.feed_seq };
            self.feed.push(FeedEvent { position, at: now, event });
        }
    }

    fn account_exists(&self, id: AccountId) -> Result<(), StoreError> {
        if self.accounts.contains_key(&id) {
            Ok(())
        } else {
            Err(StoreError::not_found("account", id))
        }
    }

    fn account_mut(&mut self, id: AccountId) -> Result<&mut Account, StoreError> {
        self.accounts.get_mut(&id).ok_or_else(|| StoreError::not_found("account", id))
    }

    /// Follows `merged_into` to the identity that is kept.
    fn resolve_identity(&self, mut id: IdentityId) -> IdentityId {
        // Bounded: a merge chain can't be longer than the number of identities.
        for _ in 0..=self.identities.len() {
            match self.identities.get(&id).and_then(|i| i.merged_into) {
                Some(next) => id = next,
                None => break,
            }
        }
        id
    }

    fn find_identity(&self, account: AccountId, address: &str) -> Option<IdentityId> {
        self.identity_by_address
            .get(&(account, address.to_owned()))
            .map(|id| self.resolve_identity(*id))
    }

    fn active_conversation(&self, account: AccountId, thread_key: &str) -> Option<ConversationId> {
        self.conversations
            .values()
            .find(|c| c.account_id == account && c.thread_key == thread_key && c.status.is_active())
            .map(|c| c.id)
    }

    fn latest_conversation(&self, account: AccountId, thread_key: &str) -> Option<ConversationId> {
        self.conversations
            .values()
            .filter(|c| c.account_id == account && c.thread_key == thread_key)
            .max_by_key(|c| (c.opened_at, c.id))
            .map(|c| c.id)
    }

    fn write_cursor(&mut self, account: AccountId, cursor: &Option<CursorUpdate>) {
        if let Some(c) = cursor {
            self.state.insert((account, c.key.clone()), c.value.clone());
        }
    }

    fn validate_ingest(&self, req: &IngestRequest) -> Result<(), StoreError> {
        self.account_exists(req.account_id)?;
        check_inbound(&req.message)
    }

    /// Ingests a validated request; cannot fail.
    fn apply_ingest(&mut self, req: IngestRequest) -> IngestOutcome {
        let account = req.account_id;
        let m = req.message;
        let now = req.now;

        // 1. A known provider id: a duplicate; only the cursor moves.
        if let Some(id) = self.message_by_provider.get(&(account, m.provider_id.clone())) {
            let existing = &self.messages[id];
            let outcome = IngestOutcome {
                message_id: existing.id,
                conversation_id: existing.conversation_id,
                identity_id: existing.identity_id,
                disposition: IngestDisposition::Duplicate,
                conversation_opened: false,
                conversation_reactivated: false,
            };
            self.write_cursor(account, &m.cursor);
            return outcome;
        }

        // 2. The echo of our own send: the pending message becomes sent. An echo of a message
        //    that already has its provider id is a duplicate.
        if m.direction == Direction::Outbound
            && let Some(key) = &m.client_key
            && let Some(id) = self.message_by_client_key.get(&(account, key.clone())).copied()
            && let Some(msg) = self.messages.get_mut(&id)
        {
            let disposition = if msg.provider_id.is_none() {
                msg.provider_id = Some(m.provider_id.clone());
                msg.status = MessageStatus::Sent;
                msg.error = None;
                msg.sent_at = m.sent_at;
                msg.updated_at = now;
                IngestDisposition::EchoMatched
            } else {
                IngestDisposition::Duplicate
            };
            let outcome = IngestOutcome {
                message_id: msg.id,
                conversation_id: msg.conversation_id,
                identity_id: msg.identity_id,
                disposition,
                conversation_opened: false,
                conversation_reactivated: false,
            };
            if disposition == IngestDisposition::EchoMatched {
                self.message_by_provider.insert((account, m.provider_id.clone()), id);
            }
            self.write_cursor(account, &m.cursor);
            return outcome;
        }

        // 3. The identity: found (following merges) or created unlinked.
        let identity_id = match self.find_identity(account, &m.remote.address) {
            Some(id) => {
                if let Some(identity) = self.identities.get_mut(&id) {
                    let mut changed = false;
                    if m.remote.display_name.is_some()
                        && identity.display_name != m.remote.display_name
                    {
                        identity.display_name = m.remote.display_name.clone();
                        changed = true;
                    }
                    if m.remote.username.is_some() && identity.username != m.remote.username {
                        identity.username = m.remote.username.clone();
                        changed = true;
                    }
                    if changed {
                        identity.updated_at = now;
                    }
                }
                id
            }
            None => {
                let id = req.new_identity_id;
                self.identities.insert(
                    id,
                    Identity {
                        id,
                        account_id: account,
                        address: m.remote.address.clone(),
                        display_name: m.remote.display_name.clone(),
                        username: m.remote.username.clone(),
                        contact_id: None,
                        merged_into: None,
                        created_at: now,
                        updated_at: now,
                    },
                );
                self.identity_by_address.insert((account, m.remote.address.clone()), id);
                id
            }
        };

        // 4. The thread: that of a known message replied to or referenced, else the key given.
        let referenced = m.reply_to.iter().chain(m.references.iter().rev());
        let thread_key = referenced
            .filter_map(|p| self.message_by_provider.get(&(account, p.clone())))
            .filter_map(|id| self.messages.get(id))
            .filter_map(|msg| self.conversations.get(&msg.conversation_id))
            .map(|c| c.thread_key.clone())
            .next()
            .unwrap_or_else(|| m.thread_key.clone());

        // 5. The conversation: the active one, a reopened closed one, or a new one.
        let mut opened = false;
        let mut reactivated = false;
        let conversation_id = match self.active_conversation(account, &thread_key) {
            Some(id) => {
                if let Some(c) = self.conversations.get_mut(&id)
                    && c.status == ConversationStatus::Idle
                {
                    c.status = ConversationStatus::Open;
                    reactivated = true;
                }
                id
            }
            None => {
                let reopen = match self.latest_conversation(account, &thread_key) {
                    Some(id)
                        if req.policy.on_closed == OnClosed::Reopen
                            && self.conversations[&id].status == ConversationStatus::Closed =>
                    {
                        Some(id)
                    }
                    _ => None,
                };
                match reopen {
                    Some(id) => {
                        if let Some(c) = self.conversations.get_mut(&id) {
                            c.status = ConversationStatus::Open;
                            c.closed_at = None;
                        }
                        reactivated = true;
                        id
                    }
                    None => {
                        let id = req.new_conversation_id;
                        let contact_id =
                            self.identities.get(&identity_id).and_then(|i| i.contact_id.clone());
                        self.conversations.insert(
                            id,
                            Conversation {
                                id,
                                account_id: account,
                                thread_key: thread_key.clone(),
                                primary_identity: identity_id,
                                contact_id,
                                status: ConversationStatus::Open,
                                opened_at: now,
                                last_activity_at: now,
                                expires_at: req.policy.expire_after.map(|d| now.plus(d)),
                                closed_at: None,
                                version: 0,
                                assignee: None,
                            },
                        );
                        opened = true;
                        id
                    }
                }
            }
        };
        if let Some(c) = self.conversations.get_mut(&conversation_id) {
            c.last_activity_at = c.last_activity_at.max(now);
            c.version += 1;
        }

        // 6. The message, and the cursor in the same step.
        let message_id = req.new_message_id;
        let status = MessageStatus::Sent;
        if let Some(key) = &m.client_key {
            self.message_by_client_key.entry((account, key.clone())).or_insert(message_id);
        }
        self.message_by_provider.insert((account, m.provider_id.clone()), message_id);
        self.messages.insert(
            message_id,
            Message {
                id: message_id,
                account_id: account,
                conversation_id,
                identity_id,
                direction: m.direction,
                origin: m.origin.clone(),
                provider_id: Some(m.provider_id.clone()),
                client_key: m.client_key.clone(),
                status,
                text: m.text.clone(),
                html: m.html.clone(),
                subject: None,
                reply_to: m.reply_to.clone(),
                attachments: m.attachments.clone(),
                parse_error: m.parse_error.clone(),
                defects: m.defects.clone(),
                error: None,
                sent_at: m.sent_at,
                created_at: now,
                updated_at: now,
                edited_at: None,
                deleted_at: None,
            },
        );
        self.write_cursor(account, &m.cursor);

        IngestOutcome {
            message_id,
            conversation_id,
            identity_id,
            disposition: IngestDisposition::Stored,
            conversation_opened: opened,
            conversation_reactivated: reactivated,
        }
    }

    /// The running job behind a lease, or `LeaseLost`.
    fn leased_job(&mut self, lease: &JobLease) -> Result<&mut Job, StoreError> {
        match self.jobs.get_mut(&lease.job.id) {
            Some(job)
                if job.state == JobState::Running
                    && job.attempt == lease.attempt
                    && job.leased_by.as_deref() == Some(lease.worker.as_str()) =>
            {
                Ok(job)
            }
            Some(_) => Err(lease_lost(lease)),
            None => Err(StoreError::not_found("job", lease.job.id)),
        }
    }

    /// Ends the running attempt row of `job`.
    fn finish_attempt(
        &mut self,
        job: JobId,
        attempt: i32,
        outcome: AttemptOutcome,
        error: Option<&str>,
        now: Timestamp,
    ) {
        if let Some(rows) = self.attempts.get_mut(&job)
            && let Some(row) = rows
                .iter_mut()
                .rev()
                .find(|r| r.attempt == attempt && r.outcome == AttemptOutcome::Running)
        {
            row.outcome = outcome;
            row.finished_at = Some(now);
            row.error = error.map(str::to_owned);
        }
    }

    /// Rescues claimed jobs (their worker stopped or hung): retryable at once, or discarded
    /// with their message failed when out of attempts.
    fn rescue(&mut self, expired: &[JobId], now: Timestamp) {
        let error = "lease expired: the worker stopped or hung";
        for id in expired {
            let Some(job) = self.jobs.get_mut(id) else { continue };
            let attempt = job.attempt;
            let exhausted = job.attempt >= job.max_attempts;
            job.leased_by = None;
            job.lease_expires_at = None;
            job.last_error = Some(error.to_owned());
            job.updated_at = now;
            if exhausted {
                job.state = JobState::Discarded;
            } else {
                job.state = JobState::Retryable;
                job.run_at = now;
            }
            let message = job.message_id;
            self.finish_attempt(*id, attempt, AttemptOutcome::Rescued, Some(error), now);
            let failed = exhausted.then(|| MessageOutcome::Failed { error: error.to_owned() });
            self.emit_attempt(*id, attempt, AttemptOutcome::Rescued, failed.as_ref(), now);
            if exhausted {
                self.apply_outcome(message, failed, now);
            }
        }
    }

    /// Applies an ingest and writes its events.
    fn ingest_and_emit(&mut self, req: IngestRequest) -> IngestOutcome {
        let (account, now, defects) = (req.account_id, req.now, req.message.defects.clone());
        let outcome = self.apply_ingest(req);
        self.emit(derive::ingest(account, &outcome, &defects), now);
        outcome
    }

    /// The feed's events of a send attempt that ended (see [`derive::send_attempt`]).
    fn emit_attempt(
        &mut self,
        job: JobId,
        attempt: i32,
        outcome: AttemptOutcome,
        message: Option<&MessageOutcome>,
        now: Timestamp,
    ) {
        if let Some(job) = self.jobs.get(&job) {
            let events = derive::send_attempt(job, attempt, outcome, message);
            self.emit(events, now);
        }
    }

    fn check_outcome(&self, job: &Job, outcome: Option<&MessageOutcome>) -> Result<(), StoreError> {
        match outcome {
            Some(MessageOutcome::Sent { provider_id, .. }) => {
                no_nul("provider_id", provider_id)?;
                if let (Some(account), Some(message)) = (job.account_id, job.message_id)
                    && let Some(other) =
                        self.message_by_provider.get(&(account, provider_id.clone()))
                    && *other != message
                {
                    return Err(StoreError::InvalidInput {
                        field: "provider_id",
                        reason: format!("already used by message {other}"),
                    });
                }
                Ok(())
            }
            Some(
                MessageOutcome::Failed { error } | MessageOutcome::SentUnlinked { note: error, .. },
            ) => no_nul("error", error),
            None => Ok(()),
        }
    }

    fn apply_outcome(
        &mut self,
        message: Option<MessageId>,
        outcome: Option<MessageOutcome>,
        now: Timestamp,
    ) {
        let (Some(id), Some(outcome)) = (message, outcome) else { return };
        let Some(msg) = self.messages.get_mut(&id) else { return };
        match outcome {
            MessageOutcome::Sent { provider_id, at } => {
                msg.status = MessageStatus::Sent;
                msg.error = None;
                msg.sent_at = at;
                msg.updated_at = now;
                if msg.provider_id.is_none() {
                    msg.provider_id = Some(provider_id.clone());
                    self.message_by_provider.insert((msg.account_id, provider_id), id);
                }
            }
            MessageOutcome::SentUnlinked { at, note } => {
                msg.status = MessageStatus::Sent;
                msg.error = Some(note);
                msg.sent_at = at;
                msg.updated_at = now;
            }
            MessageOutcome::Failed { error } => {
                // The echo may have proved it sent already; never downgrade that.
                if msg.status == MessageStatus::Pending {
                    msg.status = MessageStatus::Failed;
                    msg.error = Some(error);
                    msg.updated_at = now;
                }
            }
        }
    }
}

#[async_trait]
impl AccountStore for MemoryStore {
    async fn create_account(&self, new: NewAccount, now: Timestamp) -> Result<Account, StoreError> {
        no_nul("display_name", &new.display_name)?;
        let mut inner = self.lock();
        if inner.accounts.contains_key(&new.id) || inner.removed.contains_key(&new.id) {
            return Err(StoreError::InvalidInput {
                field: "id",
                reason: format!("account {} already exists (or was removed)", new.id),
            });
        }
        let account = Account {
            id: new.id,
            kind: new.kind,
            display_name: new.display_name,
            config: new.config,
            enabled: new.enabled,
            connection: ConnectionState::Connecting,
            created_at: now,
            updated_at: now,
            settings: new.settings,
        };
        inner.accounts.insert(account.id, account.clone());
        Ok(account)
    }

    async fn update_account(
        &self,
        id: AccountId,
        update: &AccountUpdate,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        no_nul_opt("display_name", update.display_name.as_deref())?;
        let mut inner = self.lock();
        let account = inner.account_mut(id)?;
        if let Some(name) = &update.display_name {
            account.display_name.clone_from(name);
        }
        if let Some(config) = &update.config {
            account.config = config.clone();
        }
        if let Some(settings) = update.settings {
            account.settings = settings;
        }
        account.updated_at = now;
        Ok(account.clone())
    }

    async fn remove_account(
        &self,
        id: AccountId,
        purge_messages: bool,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let mut account =
            inner.accounts.remove(&id).ok_or_else(|| StoreError::not_found("account", id))?;
        inner.state.retain(|(a, _), _| *a != id);
        inner.leases.remove(&Lease::account_name(id));
        if purge_messages {
            let gone: HashSet<MessageId> =
                inner.messages.values().filter(|m| m.account_id == id).map(|m| m.id).collect();
            let jobs: Vec<JobId> = inner
                .jobs
                .values()
                .filter(|j| {
                    j.account_id == Some(id) || j.message_id.is_some_and(|m| gone.contains(&m))
                })
                .map(|j| j.id)
                .collect();
            for job in jobs {
                inner.jobs.remove(&job);
                inner.attempts.remove(&job);
            }
            inner.messages.retain(|_, m| m.account_id != id);
            inner.message_by_provider.retain(|(a, _), _| *a != id);
            inner.message_by_client_key.retain(|(a, _), _| *a != id);
            inner.conversations.retain(|_, c| c.account_id != id);
            inner.identities.retain(|_, i| i.account_id != id);
            inner.identity_by_address.retain(|(a, _), _| *a != id);
            return Ok(());
        }
        const REMOVED: &str = "the account was removed before this message was sent";
        for job in inner.jobs.values_mut().filter(|j| j.account_id == Some(id)) {
            if matches!(job.state, JobState::Available | JobState::Running | JobState::Retryable) {
                job.state = JobState::Cancelled;
                job.leased_by = None;
                job.lease_expires_at = None;
                job.last_error = Some(REMOVED.to_owned());
                job.updated_at = now;
            }
        }
        for m in inner.messages.values_mut().filter(|m| m.account_id == id) {
            if m.status == MessageStatus::Pending {
                m.status = MessageStatus::Failed;
                m.error = Some(REMOVED.to_owned());
                m.updated_at = now;
            }
        }
        account.enabled = false;
        account.updated_at = now;
        inner.removed.insert(id, account);
        Ok(())
    }

    async fn account(&self, id: AccountId) -> Result<Account, StoreError> {
        self.injected("account")?;
        self.lock().accounts.get(&id).cloned().ok_or_else(|| StoreError::not_found("account", id))
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut all: Vec<Account> = self.lock().accounts.values().cloned().collect();
        all.sort_by_key(|a| (a.created_at, a.id));
        Ok(all)
    }

    async fn accounts_before(
        &self,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Account>, StoreError> {
        self.injected("accounts_before")?;
        let inner = self.lock();
        Ok(page_before(inner.accounts.values(), |a| (a.created_at, a.id), before, limit))
    }

    async fn set_account_enabled(
        &self,
        id: AccountId,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        let mut inner = self.lock();
        let account = inner.account_mut(id)?;
        account.enabled = enabled;
        account.updated_at = now;
        Ok(account.clone())
    }

    async fn set_connection_state(
        &self,
        id: AccountId,
        state: &ConnectionState,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        self.injected("set_connection_state")?;
        match state {
            ConnectionState::TransientDisconnect { reason }
            | ConnectionState::NeedsLogin { reason }
            | ConnectionState::Failed { reason } => no_nul("reason", reason)?,
            _ => {}
        }
        let mut inner = self.lock();
        let account = inner.account_mut(id)?;
        let changed = account.connection != *state;
        account.connection = state.clone();
        account.updated_at = now;
        let account = account.clone();
        if changed {
            inner.emit([Event::AccountStateChanged { account_id: id, state: state.clone() }], now);
        }
        Ok(account)
    }

    async fn state_get(
        &self,
        account: AccountId,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().state.get(&(account, key.to_owned())).cloned())
    }

    async fn state_put(
        &self,
        account: AccountId,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        no_nul("key", key)?;
        let mut inner = self.lock();
        inner.account_exists(account)?;
        inner.state.insert((account, key.to_owned()), value.to_vec());
        Ok(())
    }

    async fn state_delete(&self, account: AccountId, key: &str) -> Result<(), StoreError> {
        self.lock().state.remove(&(account, key.to_owned()));
        Ok(())
    }

    async fn state_clear(&self, account: AccountId) -> Result<(), StoreError> {
        self.lock().state.retain(|(a, _), _| *a != account);
        Ok(())
    }

    async fn state_entries(
        &self,
        account: AccountId,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let inner = self.lock();
        let mut entries: Vec<(String, Vec<u8>)> = inner
            .state
            .iter()
            .filter(|((a, _), _)| *a == account)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        entries.sort();
        Ok(entries)
    }

    async fn state_replace(
        &self,
        account: AccountId,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.state.get_mut(&(account, key.to_owned())) {
            Some(v) if v.as_slice() == expected => {
                *v = value.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl ConversationStore for MemoryStore {
    async fn identity(&self, id: IdentityId) -> Result<Identity, StoreError> {
        self.lock()
            .identities
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("identity", id))
    }

    async fn find_identity(
        &self,
        account: AccountId,
        address: &str,
    ) -> Result<Option<Identity>, StoreError> {
        let inner = self.lock();
        Ok(inner.find_identity(account, address).and_then(|id| inner.identities.get(&id).cloned()))
    }

    async fn identities(
        &self,
        account: AccountId,
        unlinked_only: bool,
    ) -> Result<Vec<Identity>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<Identity> = inner
            .identities
            .values()
            .filter(|i| i.account_id == account && i.merged_into.is_none())
            .filter(|i| !unlinked_only || i.contact_id.is_none())
            .cloned()
            .collect();
        out.sort_by_key(|i| (i.created_at, i.id));
        Ok(out)
    }

    async fn identities_before(
        &self,
        account: AccountId,
        unlinked_only: bool,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError> {
        let inner = self.lock();
        let rows = inner
            .identities
            .values()
            .filter(|i| i.account_id == account && i.merged_into.is_none())
            .filter(|i| !unlinked_only || i.contact_id.is_none());
        Ok(page_before(rows, |i| (i.created_at, i.id), before, limit))
    }

    async fn link_identity(
        &self,
        id: IdentityId,
        contact: Option<ContactId>,
        now: Timestamp,
    ) -> Result<Identity, StoreError> {
        if let Some(c) = &contact {
            no_nul("contact_id", c.as_str())?;
        }
        let mut inner = self.lock();
        let identity =
            inner.identities.get_mut(&id).ok_or_else(|| StoreError::not_found("identity", id))?;
        identity.contact_id = contact.clone();
        identity.updated_at = now;
        let identity = identity.clone();
        for c in inner.conversations.values_mut() {
            if c.primary_identity == id && c.status.is_active() {
                c.contact_id = contact.clone();
                c.version += 1;
            }
        }
        Ok(identity)
    }

    async fn merge_identities(
        &self,
        keep: IdentityId,
        merge: IdentityId,
        now: Timestamp,
    ) -> Result<Identity, StoreError> {
        let mut inner = self.lock();
        let kept = inner
            .identities
            .get(&keep)
            .cloned()
            .ok_or_else(|| StoreError::not_found("identity", keep))?;
        let merged = inner
            .identities
            .get(&merge)
            .cloned()
            .ok_or_else(|| StoreError::not_found("identity", merge))?;
        if keep == merge {
            return Err(StoreError::InvalidInput {
                field: "merge",
                reason: "an identity cannot be merged into itself".to_owned(),
            });
        }
        if kept.account_id != merged.account_id {
            return Err(StoreError::InvalidInput {
                field: "merge",
                reason: "identities of different accounts cannot be merged".to_owned(),
            });
        }
        if kept.merged_into.is_some() || merged.merged_into.is_some() {
            return Err(StoreError::InvalidInput {
                field: "merge",
                reason: "the identity was already merged".to_owned(),
            });
        }
        for c in inner.conversations.values_mut() {
            if c.primary_identity == merge {
                c.primary_identity = keep;
                c.version += 1;
            }
        }
        for m in inner.messages.values_mut() {
            if m.identity_id == merge {
                m.identity_id = keep;
                m.updated_at = now;
            }
        }
        if let Some(m) = inner.identities.get_mut(&merge) {
            m.merged_into = Some(keep);
            m.updated_at = now;
        }
        let k = inner
            .identities
            .get_mut(&keep)
            .ok_or_else(|| StoreError::not_found("identity", keep))?;
        if k.contact_id.is_none() {
            k.contact_id = merged.contact_id;
        }
        k.updated_at = now;
        Ok(k.clone())
    }

    async fn conversation(&self, id: ConversationId) -> Result<Conversation, StoreError> {
        self.lock()
            .conversations
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("conversation", id))
    }

    async fn conversations(
        &self,
        account: AccountId,
        status: Option<ConversationStatus>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<Conversation> = inner
            .conversations
            .values()
            .filter(|c| c.account_id == account && status.is_none_or(|s| c.status == s))
            .cloned()
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse((c.last_activity_at, c.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn conversations_before(
        &self,
        query: &crate::reads::ConversationQuery,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        let inner = self.lock();
        let rows = inner.conversations.values().filter(|c| query.matches(c));
        Ok(page_before(rows, |c| (c.last_activity_at, c.id), before, limit))
    }

    async fn active_conversation(
        &self,
        account: AccountId,
        thread_key: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .active_conversation(account, thread_key)
            .and_then(|id| inner.conversations.get(&id).cloned()))
    }

    async fn due_conversations(
        &self,
        account: AccountId,
        due: DueConversations,
    ) -> Result<Vec<Conversation>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<Conversation> = inner
            .conversations
            .values()
            .filter(|c| c.account_id == account && c.status.is_active())
            .filter(|c| {
                let idle = c.status == ConversationStatus::Open
                    && due.idle_before.is_some_and(|t| c.last_activity_at < t);
                let close = due.close_before.is_some_and(|t| c.last_activity_at < t);
                let expire = due.expire_before.is_some_and(|t| c.opened_at < t);
                idle || close || expire
            })
            .cloned()
            .collect();
        out.sort_by_key(|c| (c.last_activity_at, c.id));
        out.truncate(due.limit);
        Ok(out)
    }

    async fn set_conversation_status(
        &self,
        id: ConversationId,
        expected_version: i64,
        status: ConversationStatus,
        now: Timestamp,
    ) -> Result<Conversation, StoreError> {
        let mut inner = self.lock();
        let current = inner
            .conversations
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("conversation", id))?;
        if current.version != expected_version {
            return Err(StoreError::VersionConflict {
                what: "conversation",
                id: id.to_string(),
                expected: expected_version,
                actual: current.version,
            });
        }
        if status.is_active()
            && !current.status.is_active()
            && let Some(other) = inner.active_conversation(current.account_id, &current.thread_key)
        {
            return Err(StoreError::InvalidInput {
                field: "status",
                reason: format!("conversation {other} of the thread is active"),
            });
        }
        let c = inner
            .conversations
            .get_mut(&id)
            .ok_or_else(|| StoreError::not_found("conversation", id))?;
        c.status = status;
        c.closed_at = if status.is_active() { None } else { c.closed_at.or(Some(now)) };
        c.version += 1;
        let c = c.clone();
        let event = Event::ConversationStatusChanged {
            account_id: c.account_id,
            conversation_id: id,
            status,
        };
        inner.emit([event], now);
        Ok(c)
    }

    async fn set_assignee(
        &self,
        conversation: ConversationId,
        expected: Option<&str>,
        assignee: Option<&str>,
        now: Timestamp,
    ) -> Result<Conversation, StoreError> {
        self.injected("set_assignee")?;
        let mut inner = self.lock();
        let Some(c) = inner.conversations.get_mut(&conversation) else {
            return Err(StoreError::not_found("conversation", conversation));
        };
        if c.assignee.as_deref() != expected {
            return Err(StoreError::AssigneeChanged {
                id: conversation.to_string(),
                current: c.assignee.clone(),
            });
        }
        c.assignee = assignee.map(str::to_owned);
        c.version += 1;
        let c = c.clone();
        let event = Event::ConversationAssigned {
            account_id: c.account_id,
            conversation_id: conversation,
            assignee: c.assignee.clone(),
            previous: expected.map(str::to_owned),
        };
        inner.emit([event], now);
        Ok(c)
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn message(&self, id: MessageId) -> Result<Message, StoreError> {
        self.injected("message")?;
        self.lock().messages.get(&id).cloned().ok_or_else(|| StoreError::not_found("message", id))
    }

    async fn message_by_provider_id(
        &self,
        account: AccountId,
        provider_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .message_by_provider
            .get(&(account, provider_id.to_owned()))
            .and_then(|id| inner.messages.get(id).cloned()))
    }

    async fn apply_edit(
        &self,
        account: AccountId,
        edit: &InboundEdit,
        now: Timestamp,
    ) -> Result<Option<(Message, bool)>, StoreError> {
        no_nul("provider_id", &edit.provider_id)?;
        no_nul_opt("text", edit.text.as_deref())?;
        no_nul_opt("html", edit.html.as_deref())?;
        let mut inner = self.lock();
        let Some(id) = inner.message_by_provider.get(&(account, edit.provider_id.clone())).copied()
        else {
            return Ok(None);
        };
        let Some(m) = inner.messages.get_mut(&id) else { return Ok(None) };
        let newer = m.edited_at.is_none_or(|at| at < edit.edited_at);
        if newer {
            m.text = edit.text.clone();
            m.html = edit.html.clone();
            m.edited_at = Some(edit.edited_at);
            m.updated_at = now;
        }
        let m = m.clone();
        if newer {
            inner.emit([Event::MessageEdited { account_id: account, message_id: id }], now);
        }
        Ok(Some((m, newer)))
    }

    async fn apply_deletion(
        &self,
        account: AccountId,
        deletion: &InboundDeletion,
        now: Timestamp,
    ) -> Result<Vec<Message>, StoreError> {
        if deletion.provider_ids.len() > InboundDeletion::MAX_IDS {
            return Err(StoreError::InvalidInput {
                field: "provider_ids",
                reason: format!("more than {} ids", InboundDeletion::MAX_IDS),
            });
        }
        for id in &deletion.provider_ids {
            no_nul("provider_id", id)?;
        }
        let mut inner = self.lock();
        let mut changed = Vec::new();
        for p in &deletion.provider_ids {
            let Some(id) = inner.message_by_provider.get(&(account, p.clone())).copied() else {
                continue;
            };
            let Some(m) = inner.messages.get_mut(&id) else { continue };
            if m.deleted_at.is_none() {
                m.deleted_at = Some(deletion.deleted_at);
                m.updated_at = now;
                changed.push(m.clone());
            }
        }
        let events =
            changed.iter().map(|m| Event::MessageDeleted { account_id: account, message_id: m.id });
        let events: Vec<Event> = events.collect();
        inner.emit(events, now);
        Ok(changed)
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<Message> = inner
            .messages
            .values()
            .filter(|m| m.conversation_id == conversation)
            .cloned()
            .collect();
        out.sort_by_key(|m| (m.sent_at, m.id));
        out.truncate(limit);
        Ok(out)
    }

    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let inner = self.lock();
        let rows = inner.messages.values().filter(|m| m.conversation_id == conversation);
        Ok(page_before(rows, |m| (m.sent_at, m.id), before, limit))
    }

    async fn messages_with_defects(
        &self,
        account: AccountId,
        code: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<Message> = inner
            .messages
            .values()
            .filter(|m| m.account_id == account && !m.defects.is_empty())
            .filter(|m| code.is_none_or(|c| m.defects.iter().any(|d| d.code == c)))
            .cloned()
            .collect();
        out.sort_by_key(|m| std::cmp::Reverse((m.created_at, m.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError> {
        let mut inner = self.lock();
        inner.validate_ingest(&req)?;
        Ok(inner.ingest_and_emit(req))
    }

    async fn ingest_batch(&self, reqs: &[IngestRequest]) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut inner = self.lock();
        for req in reqs {
            inner.validate_ingest(req)?;
        }
        Ok(reqs.iter().map(|req| inner.ingest_and_emit(req.clone())).collect())
    }

    async fn enqueue_send(&self, req: SendRequest) -> Result<Message, StoreError> {
        no_nul("client_key", &req.client_key)?;
        no_nul_opt("text", req.text.as_deref())?;
        no_nul_opt("html", req.html.as_deref())?;
        no_nul_opt("reply_to", req.reply_to.as_deref())?;
        if let Origin::Service(label) = &req.origin {
            no_nul("origin", label)?;
        }
        check_attachments(&req.attachments)?;
        let mut inner = self.lock();
        let conversation = inner
            .conversations
            .get(&req.conversation_id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("conversation", req.conversation_id))?;
        let account = conversation.account_id;
        if inner.message_by_client_key.contains_key(&(account, req.client_key.clone())) {
            return Err(StoreError::InvalidInput {
                field: "client_key",
                reason: "already used by another message of the account".to_owned(),
            });
        }
        if inner.messages.contains_key(&req.message_id) || inner.jobs.contains_key(&req.job_id) {
            return Err(StoreError::InvalidInput {
                field: "id",
                reason: "message or job id already exists".to_owned(),
            });
        }
        let message = Message {
            id: req.message_id,
            account_id: account,
            conversation_id: conversation.id,
            identity_id: conversation.primary_identity,
            direction: Direction::Outbound,
            origin: req.origin,
            provider_id: None,
            client_key: Some(req.client_key.clone()),
            status: MessageStatus::Pending,
            text: req.text,
            html: req.html,
            subject: req.subject,
            reply_to: req.reply_to,
            attachments: req.attachments,
            parse_error: None,
            error: None,
            sent_at: req.now,
            created_at: req.now,
            updated_at: req.now,
            edited_at: None,
            deleted_at: None,
            defects: Vec::new(),
        };
        let job = Job {
            id: req.job_id,
            kind: JobKind::Send,
            account_id: Some(account),
            message_id: Some(req.message_id),
            payload: serde_json::Value::Null,
            unique_key: None,
            state: JobState::Available,
            attempt: 0,
            max_attempts: req.max_attempts,
            run_at: req.run_at,
            leased_by: None,
            lease_expires_at: None,
            last_error: None,
            created_at: req.now,
            updated_at: req.now,
        };
        inner.message_by_client_key.insert((account, req.client_key), message.id);
        inner.messages.insert(message.id, message.clone());
        inner.jobs.insert(job.id, job);
        if let Some(c) = inner.conversations.get_mut(&conversation.id) {
            c.last_activity_at = c.last_activity_at.max(req.now);
            c.version += 1;
        }
        inner.emit([derive::queued(&message)], req.now);
        Ok(message)
    }

    async fn merge_stray(
        &self,
        keep: MessageId,
        provider_id: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        self.injected("merge_stray")?;
        let mut inner = self.lock();
        let account = match inner.messages.get(&keep) {
            Some(m) => m.account_id,
            None => return Err(StoreError::not_found("message", keep)),
        };
        let key = (account, provider_id.to_owned());
        let Some(&holder) = inner.message_by_provider.get(&key) else {
            return Ok(None);
        };
        let outbound =
            inner.messages.get(&holder).is_some_and(|m| m.direction == Direction::Outbound);
        let referenced = inner.jobs.values().any(|j| j.message_id == Some(holder));
        if holder == keep || !outbound || referenced {
            return Ok(None);
        }
        if let Some(m) = inner.messages.remove(&holder) {
            inner.message_by_provider.remove(&key);
            if let Some(k) = m.client_key {
                let ck = (account, k);
                if inner.message_by_client_key.get(&ck) == Some(&holder) {
                    inner.message_by_client_key.remove(&ck);
                }
            }
        }
        let now = inner.messages.get(&keep).map_or(Timestamp(0), |m| m.updated_at);
        inner.emit([derive::merged(account, keep, holder)], now);
        Ok(Some(holder))
    }
}

#[async_trait]
impl QueueStore for MemoryStore {
    async fn enqueue(&self, job: NewJob, now: Timestamp) -> Result<Enqueued, StoreError> {
        no_nul_opt("unique_key", job.unique_key.as_deref())?;
        let mut inner = self.lock();
        if let Some(key) = &job.unique_key
            && let Some(existing) = inner
                .jobs
                .values()
                .find(|j| j.unique_key.as_ref() == Some(key) && !j.state.is_final())
        {
            return Ok(Enqueued { job_id: existing.id, inserted: false });
        }
        if inner.jobs.contains_key(&job.id) {
            return Err(StoreError::InvalidInput {
                field: "id",
                reason: format!("job {} already exists", job.id),
            });
        }
        if let Some(account) = job.account_id {
            inner.account_exists(account)?;
        }
        let id = job.id;
        inner.jobs.insert(
            id,
            Job {
                id,
                kind: job.kind,
                account_id: job.account_id,
                message_id: job.message_id,
                payload: job.payload,
                unique_key: job.unique_key,
                state: JobState::Available,
                attempt: 0,
                max_attempts: job.max_attempts,
                run_at: job.run_at,
                leased_by: None,
                lease_expires_at: None,
                last_error: None,
                created_at: now,
                updated_at: now,
            },
        );
        Ok(Enqueued { job_id: id, inserted: true })
    }

    async fn claim(
        &self,
        worker: &str,
        kinds: &[JobKind],
        limit: usize,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<Vec<JobLease>, StoreError> {
        self.claim_jobs(worker, kinds, limit, lease_ttl, now, None)
    }

    async fn claim_preferring(
        &self,
        worker: &str,
        kinds: &[JobKind],
        limit: usize,
        lease_ttl: Duration,
        now: Timestamp,
        prefer: crate::store::ClaimPreference<'_>,
    ) -> Result<Vec<JobLease>, StoreError> {
        let prefer = (prefer.accounts.len() <= crate::store::ClaimPreference::MAX_ACCOUNTS)
            .then_some(prefer);
        self.claim_jobs(worker, kinds, limit, lease_ttl, now, prefer)
    }

    async fn complete(
        &self,
        lease: &JobLease,
        outcome: Option<MessageOutcome>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.injected("complete")?;
        let mut inner = self.lock();
        let job = inner.leased_job(lease)?.clone();
        inner.check_outcome(&job, outcome.as_ref())?;
        if let Some(j) = inner.jobs.get_mut(&job.id) {
            j.state = JobState::Completed;
            j.leased_by = None;
            j.lease_expires_at = None;
            j.updated_at = now;
        }
        inner.finish_attempt(job.id, lease.attempt, AttemptOutcome::Completed, None, now);
        let completed = AttemptOutcome::Completed;
        inner.emit_attempt(job.id, lease.attempt, completed, outcome.as_ref(), now);
        inner.apply_outcome(job.message_id, outcome, now);
        Ok(())
    }

    async fn retry(
        &self,
        lease: &JobLease,
        error: &str,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.injected("retry")?;
        let error = error.replace('\0', "\u{FFFD}");
        let mut inner = self.lock();
        let job = inner.leased_job(lease)?;
        job.state = JobState::Retryable;
        job.run_at = run_at;
        job.leased_by = None;
        job.lease_expires_at = None;
        job.last_error = Some(error.clone());
        job.updated_at = now;
        inner.finish_attempt(
            lease.job.id,
            lease.attempt,
            AttemptOutcome::Retried,
            Some(&error),
            now,
        );
        inner.emit_attempt(lease.job.id, lease.attempt, AttemptOutcome::Retried, None, now);
        Ok(())
    }

    async fn snooze(
        &self,
        lease: &JobLease,
        run_at: Timestamp,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.injected("snooze")?;
        let reason = reason.replace('\0', "\u{FFFD}");
        let mut inner = self.lock();
        let job = inner.leased_job(lease)?;
        job.state = JobState::Available;
        job.attempt = job.attempt.saturating_sub(1).max(0);
        job.run_at = run_at;
        job.leased_by = None;
        job.lease_expires_at = None;
        job.updated_at = now;
        inner.finish_attempt(
            lease.job.id,
            lease.attempt,
            AttemptOutcome::Snoozed,
            Some(&reason),
            now,
        );
        inner.emit_attempt(lease.job.id, lease.attempt, AttemptOutcome::Snoozed, None, now);
        Ok(())
    }

    async fn discard(
        &self,
        lease: &JobLease,
        error: &str,
        outcome: Option<MessageOutcome>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.injected("discard")?;
        let error = error.replace('\0', "\u{FFFD}");
        let mut inner = self.lock();
        let job = inner.leased_job(lease)?.clone();
        inner.check_outcome(&job, outcome.as_ref())?;
        if let Some(j) = inner.jobs.get_mut(&job.id) {
            j.state = JobState::Discarded;
            j.leased_by = None;
            j.lease_expires_at = None;
            j.last_error = Some(error.clone());
            j.updated_at = now;
        }
        inner.finish_attempt(job.id, lease.attempt, AttemptOutcome::Discarded, Some(&error), now);
        let discarded = AttemptOutcome::Discarded;
        inner.emit_attempt(job.id, lease.attempt, discarded, outcome.as_ref(), now);
        inner.apply_outcome(job.message_id, outcome, now);
        Ok(())
    }

    async fn extend_job_lease(
        &self,
        lease: &JobLease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.injected("extend_job_lease")?;
        let mut inner = self.lock();
        let job = inner.leased_job(lease)?;
        job.lease_expires_at = Some(now.plus(ttl));
        job.updated_at = now;
        Ok(())
    }

    async fn rescue_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.injected("rescue_expired")?;
        let mut inner = self.lock();
        let expired: Vec<JobId> = inner
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running && j.lease_expires_at.is_some_and(|t| t < now))
            .map(|j| j.id)
            .collect();
        inner.rescue(&expired, now);
        Ok(expired.len() as u64)
    }

    async fn cancel_job(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let mut inner = self.lock();
        let job = inner.jobs.get_mut(&id).ok_or_else(|| StoreError::not_found("job", id))?;
        if job.state.is_final() || job.state == JobState::Running {
            return Err(StoreError::InvalidInput {
                field: "job",
                reason: format!("job {id} is {} and cannot be cancelled", job.state.as_str()),
            });
        }
        job.state = JobState::Cancelled;
        job.updated_at = now;
        Ok(job.clone())
    }

    async fn retry_job(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let mut inner = self.lock();
        let job = inner.jobs.get_mut(&id).ok_or_else(|| StoreError::not_found("job", id))?;
        if job.state != JobState::Discarded {
            return Err(StoreError::InvalidInput {
                field: "job",
                reason: format!(
                    "job {id} is {}: only a discarded job is retried",
                    job.state.as_str()
                ),
            });
        }
        job.state = JobState::Available;
        job.max_attempts = job.max_attempts.max(job.attempt + 1);
        job.run_at = now;
        job.updated_at = now;
        let job = job.clone();
        if let (Some(message), Some(account)) = (job.message_id, job.account_id)
            && let Some(m) = inner.messages.get_mut(&message)
            && m.status == MessageStatus::Failed
        {
            m.status = MessageStatus::Pending;
            m.updated_at = now;
            let event = Event::MessageStatusChanged {
                account_id: account,
                message_id: message,
                status: MessageStatus::Pending,
            };
            inner.emit([event], now);
        }
        Ok(job)
    }

    async fn job(&self, id: JobId) -> Result<Job, StoreError> {
        self.injected("job")?;
        self.lock().jobs.get(&id).cloned().ok_or_else(|| StoreError::not_found("job", id))
    }

    async fn job_attempts(&self, id: JobId) -> Result<Vec<JobAttempt>, StoreError> {
        Ok(self.lock().attempts.get(&id).cloned().unwrap_or_default())
    }

    async fn jobs_in_state(&self, state: JobState, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.injected("jobs_in_state")?;
        let inner = self.lock();
        let mut out: Vec<Job> = inner.jobs.values().filter(|j| j.state == state).cloned().collect();
        out.sort_by_key(|j| (j.created_at, j.id));
        out.truncate(limit);
        Ok(out)
    }

    async fn jobs_before(
        &self,
        query: &crate::reads::JobQuery,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let inner = self.lock();
        let rows = inner.jobs.values().filter(|j| query.matches(j));
        Ok(page_before(rows, |j| (j.created_at, j.id), before, limit))
    }

    async fn next_run_at(&self, kinds: &[JobKind]) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .lock()
            .jobs
            .values()
            .filter(|j| matches!(j.state, JobState::Available | JobState::Retryable))
            .filter(|j| kinds.contains(&j.kind))
            .map(|j| j.run_at)
            .min())
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>, StoreError> {
        self.injected("acquire_lease")?;
        no_nul("name", name)?;
        no_nul("holder", holder)?;
        let mut inner = self.lock();
        let expires_at = now.plus(ttl);
        let lease = match inner.leases.get(name) {
            None => Lease { name: name.to_owned(), holder: holder.to_owned(), term: 1, expires_at },
            Some(l) if l.holder == holder => Lease { expires_at, ..l.clone() },
            Some(l) if l.expires_at <= now => Lease {
                name: name.to_owned(),
                holder: holder.to_owned(),
                term: l.term + 1,
                expires_at,
            },
            Some(_) => return Ok(None),
        };
        inner.leases.insert(name.to_owned(), lease.clone());
        Ok(Some(lease))
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StoreError> {
        self.injected("renew_lease")?;
        let mut inner = self.lock();
        match inner.leases.get_mut(&lease.name) {
            Some(l) if l.holder == lease.holder && l.term == lease.term && l.expires_at > now => {
                l.expires_at = now.plus(ttl);
                Ok(l.clone())
            }
            _ => Err(StoreError::LeaseLost { what: lease.name.clone() }),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.injected("release_lease")?;
        let mut inner = self.lock();
        if let Some(l) = inner.leases.get_mut(&lease.name)
            && l.holder == lease.holder
            && l.term == lease.term
        {
            // Keep the row so the next holder's term is higher: only make it expired.
            l.expires_at = Timestamp(i64::MIN);
        }
        Ok(())
    }
}

impl Inner {
    /// A consumer registered now at `start`.
    fn new_consumer(&self, name: &str, start: ConsumerStart, now: Timestamp) -> FeedConsumerInfo {
        let position = match start {
            ConsumerStart::Beginning => self.feed_pruned,
            ConsumerStart::End => self.feed.last().map_or(self.feed_pruned, |e| e.position),
        };
        FeedConsumerInfo {
            name: name.to_owned(),
            position,
            registered_at: now,
            seen_at: now,
            expired: false,
        }
    }
}

fn consumer_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(StoreError::InvalidInput {
            field: "consumer",
            reason: "must be a name of 1 to 200 bytes".to_owned(),
        });
    }
    no_nul("consumer", name)
}

#[async_trait]
impl FeedStore for MemoryStore {
    async fn append_events(&self, events: &[Event], now: Timestamp) -> Result<(), StoreError> {
        self.injected("append_events")?;
        self.lock().emit(events.iter().cloned(), now);
        Ok(())
    }

    async fn feed_read(
        &self,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        self.injected("feed_read")?;
        let inner = self.lock();
        if after < inner.feed_pruned {
            return Err(StoreError::FeedCursorExpired { consumer: String::new() });
        }
        Ok(inner.feed.iter().filter(|e| e.position > after).take(limit).cloned().collect())
    }

    async fn feed_consumer(
        &self,
        name: &str,
        start: ConsumerStart,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError> {
        consumer_name(name)?;
        let mut inner = self.lock();
        let fresh = inner.new_consumer(name, start, now);
        let c = inner.consumers.entry(name.to_owned()).or_insert(fresh);
        if !c.expired {
            c.seen_at = now;
        }
        Ok(c.clone())
    }

    async fn feed_reset(
        &self,
        name: &str,
        start: ConsumerStart,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError> {
        consumer_name(name)?;
        let mut inner = self.lock();
        let fresh = inner.new_consumer(name, start, now);
        inner.consumers.insert(name.to_owned(), fresh.clone());
        Ok(fresh)
    }

    async fn feed_ack(
        &self,
        name: &str,
        position: FeedPosition,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError> {
        self.injected("feed_ack")?;
        let mut inner = self.lock();
        let c =
            inner.consumers.get_mut(name).ok_or_else(|| StoreError::not_found("consumer", name))?;
        if c.expired {
            return Err(StoreError::FeedCursorExpired { consumer: name.to_owned() });
        }
        c.position = c.position.max(position);
        c.seen_at = now;
        Ok(c.clone())
    }

    async fn feed_end(&self) -> Result<FeedPosition, StoreError> {
        let inner = self.lock();
        Ok(inner.feed.last().map_or(inner.feed_pruned, |e| e.position.max(inner.feed_pruned)))
    }

    async fn feed_consumers(&self) -> Result<Vec<FeedConsumerInfo>, StoreError> {
        Ok(self.lock().consumers.values().cloned().collect())
    }

    async fn feed_prune(
        &self,
        written_before: Timestamp,
        idle_before: Timestamp,
    ) -> Result<FeedPruned, StoreError> {
        let mut inner = self.lock();
        let mut pruned = FeedPruned::default();
        for c in inner.consumers.values_mut() {
            if !c.expired && c.seen_at < idle_before {
                c.expired = true;
                pruned.consumers += 1;
            }
        }
        let floor = inner.consumers.values().filter(|c| !c.expired).map(|c| c.position).min();
        let before = inner.feed.len();
        let mut last = inner.feed_pruned;
        inner.feed.retain(|e| {
            let gone = e.at < written_before && floor.is_none_or(|f| e.position <= f);
            if gone {
                last = last.max(e.position);
            }
            !gone
        });
        inner.feed_pruned = last;
        pruned.events = (before - inner.feed.len()) as u64;
        Ok(pruned)
    }
}

/// A worker's liveness in memory: alive while this lives.
#[derive(Debug)]
struct MemoryLiveness(#[allow(dead_code)] StdArc<()>);

impl Liveness for MemoryLiveness {
    fn is_held(&self) -> bool {
        true
    }
}

#[async_trait]
impl WorkerStore for MemoryStore {
    async fn register_worker(&self, worker: &WorkerInfo) -> Result<Box<dyn Liveness>, StoreError> {
        self.injected("register_worker")?;
        let mut inner = self.lock();
        if inner.workers.get(&worker.id).is_some_and(|(_, alive)| alive.strong_count() > 0) {
            return Err(StoreError::InvalidInput {
                field: "worker_id",
                reason: format!("worker `{}` is alive in another process", worker.id),
            });
        }
        let token = StdArc::new(());
        inner.workers.insert(worker.id.clone(), (worker.clone(), StdArc::downgrade(&token)));
        Ok(Box::new(MemoryLiveness(token)))
    }

    async fn beat(&self, worker: &WorkerInfo) -> Result<(), StoreError> {
        self.injected("beat")?;
        let mut inner = self.lock();
        match inner.workers.get_mut(&worker.id) {
            Some((row, _)) => {
                *row = WorkerInfo { started_at: row.started_at, ..worker.clone() };
                Ok(())
            }
            None => Err(StoreError::not_found("worker", &worker.id)),
        }
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .workers
            .values()
            .map(|(w, alive)| WorkerInfo { alive: alive.strong_count() > 0, ..w.clone() })
            .collect())
    }

    async fn take_over(&self, id: &str, now: Timestamp) -> Result<Option<Takeover>, StoreError> {
        self.injected("take_over")?;
        let mut inner = self.lock();
        match inner.workers.get(id) {
            Some((_, alive)) if alive.strong_count() == 0 => {}
            _ => return Ok(None),
        }
        inner.workers.remove(id);
        let mut taken = Takeover::default();
        for lease in inner.leases.values_mut().filter(|l| l.holder == id) {
            lease.expires_at = Timestamp(0);
            taken.leases += 1;
        }
        let claimed: Vec<JobId> = inner
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running && j.leased_by.as_deref() == Some(id))
            .map(|j| j.id)
            .collect();
        inner.rescue(&claimed, now);
        taken.jobs = claimed.len() as u64;
        Ok(Some(taken))
    }
}

impl MemoryStore {
    /// [`QueueStore::claim`], with the claiming worker's preference when given.
    fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[JobKind],
        limit: usize,
        lease_ttl: Duration,
        now: Timestamp,
        prefer: Option<crate::store::ClaimPreference<'_>>,
    ) -> Result<Vec<JobLease>, StoreError> {
        self.injected("claim")?;
        no_nul("worker", worker)?;
        let mut inner = self.lock();
        let takes = |j: &Job| match (prefer, j.account_id) {
            (Some(p), Some(a)) => p.accounts.contains(&a) || j.run_at <= now.minus(p.others_after),
            _ => true,
        };
        let mut due: Vec<(Timestamp, JobId)> = inner
            .jobs
            .values()
            .filter(|j| matches!(j.state, JobState::Available | JobState::Retryable))
            .filter(|j| j.run_at <= now && kinds.contains(&j.kind) && takes(j))
            .map(|j| (j.run_at, j.id))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut out = Vec::with_capacity(due.len());
        for (_, id) in due {
            let Some(job) = inner.jobs.get_mut(&id) else { continue };
            job.state = JobState::Running;
            job.attempt += 1;
            job.leased_by = Some(worker.to_owned());
            job.lease_expires_at = Some(now.plus(lease_ttl));
            job.updated_at = now;
            let lease =
                JobLease { job: job.clone(), attempt: job.attempt, worker: worker.to_owned() };
            inner.attempts.entry(id).or_default().push(JobAttempt {
                job_id: id,
                attempt: lease.attempt,
                worker: worker.to_owned(),
                started_at: now,
                finished_at: None,
                outcome: AttemptOutcome::Running,
                error: None,
            });
            out.push(lease);
        }
        Ok(out)
    }
}
