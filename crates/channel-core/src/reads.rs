//! The application's reads through the engine: under the engine's database timeout, newest
//! first, one [`Page`] at a time (keyset pagination, [`crate::page`]).

use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::{
    Account, AccountId, ContactId, Conversation, ConversationId, ConversationStatus, Identity,
    IdentityId, Job, JobAttempt, JobId, JobKind, JobState, Message, MessageId, Timestamp,
};
use crate::page::{Page, PageRequest, Position};

/// Which conversations [`Engine::conversations`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConversationQuery {
    /// Only this account's (all accounts' when `None`).
    pub account: Option<AccountId>,
    /// Only those in this status.
    pub status: Option<ConversationStatus>,
    /// Only those this operator claimed.
    pub assignee: Option<String>,
    /// Only those no operator claimed.
    pub unassigned: bool,
    /// Only those no contact is linked to yet (the "new" people).
    pub unlinked: bool,
}

impl ConversationQuery {
    /// Every conversation.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only this account's.
    pub fn account(mut self, account: AccountId) -> Self {
        self.account = Some(account);
        self
    }

    /// Only those in this status.
    pub fn status(mut self, status: ConversationStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only those `operator` claimed.
    pub fn assignee(mut self, operator: impl Into<String>) -> Self {
        self.assignee = Some(operator.into());
        self
    }

    /// Only those no operator claimed.
    pub fn unassigned(mut self) -> Self {
        self.unassigned = true;
        self
    }

    /// Only those no contact is linked to yet.
    pub fn unlinked(mut self) -> Self {
        self.unlinked = true;
        self
    }

    /// Whether `c` is one of those listed (what every store's `conversations_before`
    /// filters by).
    pub fn matches(&self, c: &Conversation) -> bool {
        self.account.is_none_or(|a| c.account_id == a)
            && self.status.is_none_or(|s| c.status == s)
            && self.assignee.as_deref().is_none_or(|a| c.assignee.as_deref() == Some(a))
            && (!self.unassigned || c.assignee.is_none())
            && (!self.unlinked || c.contact_id.is_none())
    }
}

/// Which jobs [`Engine::jobs`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobQuery {
    /// Only jobs in this state (`Discarded`: the dead letter).
    pub state: Option<JobState>,
    /// Only this account's.
    pub account: Option<AccountId>,
    /// Only jobs of this kind (`Send`: an account's sends).
    pub kind: Option<JobKind>,
    /// Only jobs created at or after this time.
    pub created_since: Option<Timestamp>,
    /// Only jobs created before this time.
    pub created_until: Option<Timestamp>,
}

impl JobQuery {
    /// Every job.
    pub fn all() -> Self {
        Self::default()
    }

    /// The dead letter: jobs discarded after their last attempt.
    pub fn dead_letter() -> Self {
        Self::all().state(JobState::Discarded)
    }

    /// Only jobs in this state.
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only this account's.
    pub fn account(mut self, account: AccountId) -> Self {
        self.account = Some(account);
        self
    }

    /// Only jobs of this kind.
    pub fn kind(mut self, kind: JobKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only jobs created in `[since, until)`; either end may be left open.
    pub fn created(mut self, since: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        self.created_since = since;
        self.created_until = until;
        self
    }

    /// Whether `job` is one of those listed (what every store's `jobs_before` filters by).
    pub fn matches(&self, job: &Job) -> bool {
        self.state.is_none_or(|s| job.state == s)
            && self.account.is_none_or(|a| job.account_id == Some(a))
            && self.kind.as_ref().is_none_or(|k| &job.kind == k)
            && self.created_since.is_none_or(|t| job.created_at >= t)
            && self.created_until.is_none_or(|t| job.created_at < t)
    }
}

impl Engine {
    /// A page of a conversation's messages, newest first (by the provider's time, then id).
    /// Pass the page's `next` token to read further back; rows stored meanwhile never shift
    /// a page.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use channel_core::{*, page::PageRequest, testing::MemoryStore, state::StateKey};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// # let store = Arc::new(MemoryStore::new());
    /// # let engine = Engine::builder(store.clone(), StateKey::generate()).blob_store(BlobStore::in_memory()).build().unwrap();
    /// # let account = store.create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now()).await.unwrap();
    /// # let mut conversation = None;
    /// for n in 0..5 {
    ///     let msg = InboundMessage::text(format!("m{n}"), "chat", IdentityInfo::new("tg:1"), "hi", Timestamp(n));
    ///     conversation = Some(engine.deliver(account.id, msg).await.unwrap().conversation_id);
    /// }
    /// let conversation = conversation.unwrap();
    /// let first = engine.messages(conversation, PageRequest::first(2)).await.unwrap();
    /// assert_eq!(first.items.iter().map(|m| m.sent_at.0).collect::<Vec<_>>(), [4, 3]);
    /// let second = engine.messages(conversation, PageRequest::after(2, first.next.unwrap())).await.unwrap();
    /// assert_eq!(second.items.iter().map(|m| m.sent_at.0).collect::<Vec<_>>(), [2, 1]);
    /// # });
    /// ```
    pub async fn messages(
        &self,
        conversation: ConversationId,
        page: PageRequest,
    ) -> Result<Page<Message>, EngineError> {
        let size = page.size();
        let before = page.after.as_ref().map(|t| t.position());
        let read = self.store().messages_before(conversation, before, size + 1);
        let rows = self.db("messages_before", read).await?;
        Ok(Page::from_rows(rows, size, |m| Position { at: m.sent_at, id: m.id.to_string() }))
    }

    /// A page of conversations, newest activity first; filter by account and status with
    /// [`ConversationQuery`].
    pub async fn conversations(
        &self,
        query: &ConversationQuery,
        page: PageRequest,
    ) -> Result<Page<Conversation>, EngineError> {
        let size = page.size();
        let before = page.after.as_ref().map(|t| t.position());
        let read = self.store().conversations_before(query, before, size + 1);
        let rows = self.db("conversations_before", read).await?;
        Ok(Page::from_rows(rows, size, |c| Position {
            at: c.last_activity_at,
            id: c.id.to_string(),
        }))
    }

    /// A page of jobs (sends, history syncs, sweeps), newest first; the dead letter with
    /// [`JobQuery::dead_letter`].
    pub async fn jobs(
        &self,
        query: &JobQuery,
        page: PageRequest,
    ) -> Result<Page<Job>, EngineError> {
        let size = page.size();
        let before = page.after.as_ref().map(|t| t.position());
        let read = self.store().jobs_before(query, before, size + 1);
        let rows = self.db("jobs_before", read).await?;
        Ok(Page::from_rows(rows, size, |j| Position { at: j.created_at, id: j.id.to_string() }))
    }

    /// The audit of one job: every attempt, first first (at most its `max_attempts`).
    pub async fn job_attempts(&self, job: JobId) -> Result<Vec<JobAttempt>, EngineError> {
        Ok(self.db("job_attempts", self.store().job_attempts(job)).await?)
    }

    /// A page of an account's identities (the people it talks to), newest first; with
    /// `unlinked_only`, only those no contact is linked to yet (the "new" ones).
    pub async fn identities(
        &self,
        account: AccountId,
        unlinked_only: bool,
        page: PageRequest,
    ) -> Result<Page<Identity>, EngineError> {
        let size = page.size();
        let before = page.after.as_ref().map(|t| t.position());
        let read = self.store().identities_before(account, unlinked_only, before, size + 1);
        let rows = self.db("identities_before", read).await?;
        Ok(Page::from_rows(rows, size, |i| Position { at: i.created_at, id: i.id.to_string() }))
    }

    /// A page of the accounts (not removed ones), newest first, each with its connection
    /// state as last reported.
    pub async fn accounts(&self, page: PageRequest) -> Result<Page<Account>, EngineError> {
        let size = page.size();
        let before = page.after.as_ref().map(|t| t.position());
        let rows =
            self.db("accounts_before", self.store().accounts_before(before, size + 1)).await?;
        Ok(Page::from_rows(rows, size, |a| Position { at: a.created_at, id: a.id.to_string() }))
    }

    /// One message, by id.
    pub async fn message(&self, id: MessageId) -> Result<Message, EngineError> {
        Ok(self.db("message", self.store().message(id)).await?)
    }

    /// One conversation, by id.
    pub async fn conversation(&self, id: ConversationId) -> Result<Conversation, EngineError> {
        Ok(self.db("conversation", self.store().conversation(id)).await?)
    }

    /// One account, by id, with its connection state as last reported.
    pub async fn account(&self, id: AccountId) -> Result<Account, EngineError> {
        Ok(self.db("account", self.store().account(id)).await?)
    }

    /// One job, by id (its attempts: [`job_attempts`](Self::job_attempts)).
    pub async fn job(&self, id: JobId) -> Result<Job, EngineError> {
        Ok(self.db("job", self.store().job(id)).await?)
    }

    /// Every worker process on the store, each with whether it is alive now (see
    /// [`workers`](crate::workers)).
    pub async fn workers(&self) -> Result<Vec<crate::workers::WorkerInfo>, EngineError> {
        Ok(self.db("workers", self.store().workers()).await?)
    }

    /// Links an identity to a contact of the service (`None` unlinks it).
    pub async fn link_identity(
        &self,
        identity: IdentityId,
        contact: Option<ContactId>,
    ) -> Result<Identity, EngineError> {
        let now = self.now();
        Ok(self.db("link_identity", self.store().link_identity(identity, contact, now)).await?)
    }

    /// Merges `merge` into `keep`: two identities of one person on the same account (see
    /// [`ConversationStore::merge_identities`](crate::ConversationStore::merge_identities)).
    pub async fn merge_identities(
        &self,
        keep: IdentityId,
        merge: IdentityId,
    ) -> Result<Identity, EngineError> {
        let now = self.now();
        Ok(self.db("merge_identities", self.store().merge_identities(keep, merge, now)).await?)
    }

    /// Takes a job out of the dead letter (see
    /// [`QueueStore::retry_job`](crate::QueueStore::retry_job)) and wakes the dispatcher.
    pub async fn retry_job(&self, job: JobId) -> Result<Job, EngineError> {
        let now = self.now();
        let job = self.db("retry_job", self.store().retry_job(job, now)).await?;
        self.wake_dispatcher();
        Ok(job)
    }
}
