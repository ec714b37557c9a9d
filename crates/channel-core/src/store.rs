//! The `Store` contract: persistence of accounts, identities, conversations, messages, the
//! durable job queue, leases and the raw account state.
//!
//! A store is a transactional backend. Every method that changes more than one row does so
//! atomically: it either commits all of it or nothing. Times are passed in (`now`) so that the
//! engine, not the database clock, decides them. Implementations: [`MemoryStore`] (behind the
//! `testing` feature) and `channel_store::SqlStore` (SQLite, PostgreSQL). The conformance suite
//! in [`testing::conformance`](crate::testing) checks every promise on any implementation.
//!
//! [`MemoryStore`]: crate::testing::MemoryStore

use std::time::Duration;

use async_trait::async_trait;

use crate::feed::FeedStore;
use crate::model::*;
use crate::page::Position;
use crate::workers::WorkerStore;

/// Why a store call failed, and what the caller should do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The conversation's assignee is no longer the one the caller expected (another
    /// operator claimed it first): re-read and decide again.
    #[error("conversation {id} is assigned to {}", current.as_deref().unwrap_or("nobody"))]
    AssigneeChanged {
        /// The conversation.
        id: String,
        /// Who it is assigned to now.
        current: Option<String>,
    },
    /// The row does not exist: check the id.
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked up (`account`, `message`, ...).
        what: &'static str,
        /// The id that was not found.
        id: String,
    },
    /// A compare-and-set lost: the row changed since it was read. Re-read and decide again.
    #[error("{what} {id} changed concurrently (expected version {expected}, found {actual})")]
    VersionConflict {
        /// What was updated.
        what: &'static str,
        /// Its id.
        id: String,
        /// The version the caller read.
        expected: i64,
        /// The version found.
        actual: i64,
    },
    /// The job's lease was lost (it expired and the job was rescued or claimed again), or the
    /// named lease has a new holder: stop working on it; nothing was written.
    #[error("lease lost on {what}: another worker owns it now")]
    LeaseLost {
        /// The job id or lease name.
        what: String,
    },
    /// The input cannot be stored as given (too long, a NUL byte, an inconsistent reference).
    /// Fix the input; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The database did not answer in time: retry later.
    #[error("database operation `{operation}` timed out after {after:?}")]
    Timeout {
        /// The operation.
        operation: &'static str,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// The database is unreachable or busy: retry later with backoff.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (an unknown value from a newer version, a corrupt
    /// row): needs an operator.
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    /// A feed consumer's cursor is behind what the feed still keeps: it was unregistered for
    /// idleness, or events after its position were pruned. Events were lost to it: rebuild
    /// what it derives from the store, then register it again
    /// ([`FeedStore::feed_reset`]).
    #[error(
        "the feed cursor of `{consumer}` expired: events after it were pruned; rebuild from the store, then reset the consumer"
    )]
    FeedCursorExpired {
        /// The consumer (empty for a read by position only).
        consumer: String,
    },
    /// Any other backend error.
    #[error("store backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Timeout { .. } | StoreError::Unavailable(_))
    }

    /// A `NotFound` for `what` with `id`.
    pub fn not_found(what: &'static str, id: impl std::fmt::Display) -> Self {
        StoreError::NotFound { what, id: id.to_string() }
    }
}

impl From<UnknownValue> for StoreError {
    fn from(e: UnknownValue) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// One inbound message to store, with everything decided that the store cannot decide itself.
///
/// The store, in one transaction: returns the existing message if `provider_id` is known for
/// the account (a duplicate); else, for outbound messages carrying a `client_key`, updates the
/// pending message with that key (the echo of our own send: status `Sent`, provider id set);
/// else gets or creates the identity (unlinked; a merged identity resolves to the one it was
/// merged into), finds the thread (a known message among `reply_to` and `references` gives
/// its conversation's thread, else `thread_key`), finds its active conversation or opens one
/// (`policy.on_closed` decides between reopening the latest closed one and opening a new one;
/// expired ones are never reopened), inserts the message, bumps the conversation's activity
/// and version, and writes `cursor` into the account state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestRequest {
    /// The account.
    pub account_id: AccountId,
    /// Id for the message if it is new.
    pub new_message_id: MessageId,
    /// Id for the identity if it is new.
    pub new_identity_id: IdentityId,
    /// Id for the conversation if one is opened.
    pub new_conversation_id: ConversationId,
    /// The message (attachment bytes already in the blob store).
    pub message: StoredInbound,
    /// The account's lifecycle policy (reopen or start new; expiry of a new conversation).
    pub policy: LifecyclePolicy,
    /// The time of the commit.
    pub now: Timestamp,
}

/// An [`InboundMessage`] whose attachments are already in the blob store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredInbound {
    /// The provider's id, unique per account.
    pub provider_id: String,
    /// The thread key.
    pub thread_key: String,
    /// The remote party.
    pub remote: IdentityInfo,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Who wrote it: `Remote` for inbound, `OtherApp` for the owner's other clients.
    pub origin: Origin,
    /// Our idempotency key, on the echo of our own send.
    pub client_key: Option<String>,
    /// Plain text.
    pub text: Option<String>,
    /// HTML.
    pub html: Option<String>,
    /// Provider id of the message replied to.
    pub reply_to: Option<String>,
    /// Earlier provider ids of the thread.
    pub references: Vec<String>,
    /// Stored attachments.
    pub attachments: Vec<Attachment>,
    /// Parse error, if any.
    pub parse_error: Option<String>,
    /// What was wrong with the message, or changed to store it.
    pub defects: Vec<Defect>,
    /// The provider's time.
    pub sent_at: Timestamp,
    /// The cursor to advance in the same commit (value already sealed).
    pub cursor: Option<CursorUpdate>,
}

/// What [`MessageStore::ingest`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestDisposition {
    /// A new message was stored.
    Stored,
    /// The provider id was already stored: nothing changed but the cursor.
    Duplicate,
    /// The echo of our own pending send: that message is now `Sent`.
    EchoMatched,
}

/// The result of [`MessageStore::ingest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The stored (or existing) message.
    pub message_id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The remote identity.
    pub identity_id: IdentityId,
    /// What happened.
    pub disposition: IngestDisposition,
    /// Whether a conversation was opened for it.
    pub conversation_opened: bool,
    /// Whether a closed conversation was reopened, or an idle one became open again.
    pub conversation_reactivated: bool,
}

/// An outbound message to queue: a `Pending` message and its send job, in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRequest {
    /// Id of the new message.
    pub message_id: MessageId,
    /// Id of its send job.
    pub job_id: JobId,
    /// The conversation (its account and primary identity are used).
    pub conversation_id: ConversationId,
    /// Who wrote it (normally `Origin::Service(label)`).
    pub origin: Origin,
    /// Our idempotency key (email Message-ID, Telegram random_id), recorded before the first
    /// attempt.
    pub client_key: String,
    /// Plain text.
    pub text: Option<String>,
    /// HTML.
    pub html: Option<String>,
    /// The subject (email).
    pub subject: Option<String>,
    /// Provider id of the message replied to.
    pub reply_to: Option<String>,
    /// Stored attachments.
    pub attachments: Vec<Attachment>,
    /// Attempts allowed for the send job.
    pub max_attempts: i32,
    /// When the job may first run.
    pub run_at: Timestamp,
    /// The time of the commit.
    pub now: Timestamp,
}

/// Thresholds for finding conversations that the lifecycle sweep should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueConversations {
    /// Open conversations with last activity before this become idle.
    pub idle_before: Option<Timestamp>,
    /// Active conversations with last activity before this are closed.
    pub close_before: Option<Timestamp>,
    /// Active conversations opened before this expire.
    pub expire_before: Option<Timestamp>,
    /// At most this many.
    pub limit: usize,
}

/// A cross-process notification (PostgreSQL `LISTEN/NOTIFY`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The topic (for example `channel_events`, `channel_jobs`).
    pub topic: String,
    /// The payload (JSON, ids only).
    pub payload: String,
}

/// Persistence of everything in the model, the contract a backend implements: the five
/// traits below, [`FeedStore`] and
/// [`WorkerStore`], split by concern (each operation that must
/// be atomic across concerns, such as ingest or queuing a send, sits with the concern it
/// writes first; each writes the [`Event`]s of its change to the feed in the same
/// transaction). `Store` is implemented for every type that implements all seven, and is
/// what the engine holds (`Arc<dyn Store>`). See the module documentation for the rules every implementation keeps.
pub trait Store:
    AccountStore + ConversationStore + MessageStore + QueueStore + LeaseStore + FeedStore + WorkerStore
{
}

impl<T> Store for T where
    T: AccountStore
        + ConversationStore
        + MessageStore
        + QueueStore
        + LeaseStore
        + FeedStore
        + WorkerStore
{
}

/// Accounts and their encrypted state (the values are sealed by the core before they get
/// here).
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account (connection state `Connecting`).
    async fn create_account(&self, new: NewAccount, now: Timestamp) -> Result<Account, StoreError>;
    /// The account, or `NotFound` (also for a removed account).
    async fn account(&self, id: AccountId) -> Result<Account, StoreError>;
    /// All accounts (not removed ones), oldest first.
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Accounts (not removed ones) newest first (by creation, then id, both descending),
    /// only those before `before` when given, at most `limit` (keyset pagination).
    async fn accounts_before(
        &self,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Account>, StoreError>;
    /// Applies the fields given in `update` (the caller checked a new configuration).
    /// `NotFound` for an unknown or removed account.
    async fn update_account(
        &self,
        id: AccountId,
        update: &AccountUpdate,
        now: Timestamp,
    ) -> Result<Account, StoreError>;
    /// Removes an account, atomically: its state, its lease and its unfinished jobs go (a
    /// pending send ends `Failed`, naming the removal), and it is no longer listed or found.
    /// Its identities, conversations and messages stay, still readable, unless
    /// `purge_messages`, which deletes them and every job of the account too. `NotFound` for
    /// an unknown or already removed account.
    async fn remove_account(
        &self,
        id: AccountId,
        purge_messages: bool,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Enables or disables an account.
    async fn set_account_enabled(
        &self,
        id: AccountId,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Account, StoreError>;
    /// Records the connection state a channel reported.
    async fn set_connection_state(
        &self,
        id: AccountId,
        state: &ConnectionState,
        now: Timestamp,
    ) -> Result<Account, StoreError>;
    /// A value of the account's state.
    async fn state_get(&self, account: AccountId, key: &str)
    -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a value of the account's state.
    async fn state_put(
        &self,
        account: AccountId,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError>;
    /// Removes a value.
    async fn state_delete(&self, account: AccountId, key: &str) -> Result<(), StoreError>;
    /// Removes every value of the account (sign-out).
    async fn state_clear(&self, account: AccountId) -> Result<(), StoreError>;
    /// Every value of the account's state, by slot (for re-encrypting them under a new key).
    async fn state_entries(&self, account: AccountId)
    -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Replaces a value only if it is still `expected` (compare-and-set); returns whether it
    /// did. A value written meanwhile is never overwritten.
    async fn state_replace(
        &self,
        account: AccountId,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError>;
}

/// Identities, conversations and their lifecycle, and the assignment of conversations.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// The identity, or `NotFound`.
    async fn identity(&self, id: IdentityId) -> Result<Identity, StoreError>;
    /// The identity with this address on the account (following merges), if any.
    async fn find_identity(
        &self,
        account: AccountId,
        address: &str,
    ) -> Result<Option<Identity>, StoreError>;
    /// The account's identities (not merged ones), optionally only the unlinked ones.
    async fn identities(
        &self,
        account: AccountId,
        unlinked_only: bool,
    ) -> Result<Vec<Identity>, StoreError>;
    /// The account's identities (not merged ones) newest first (by creation, then id, both
    /// descending), optionally only the unlinked ones, only those before `before` when given,
    /// at most `limit` (keyset pagination).
    async fn identities_before(
        &self,
        account: AccountId,
        unlinked_only: bool,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError>;
    /// Links the identity to a contact (`None` unlinks it). Active conversations whose primary
    /// identity it is take the contact too.
    async fn link_identity(
        &self,
        id: IdentityId,
        contact: Option<ContactId>,
        now: Timestamp,
    ) -> Result<Identity, StoreError>;
    /// Merges `merge` into `keep` (two identities of one person on the same account):
    /// conversations and messages move to `keep`, `merge` records `merged_into`, and lookups of
    /// its address find `keep`. `keep` takes `merge`'s contact if it had none.
    async fn merge_identities(
        &self,
        keep: IdentityId,
        merge: IdentityId,
        now: Timestamp,
    ) -> Result<Identity, StoreError>;
    /// The conversation, or `NotFound`.
    async fn conversation(&self, id: ConversationId) -> Result<Conversation, StoreError>;
    /// The account's conversations, newest activity first, optionally of one status.
    async fn conversations(
        &self,
        account: AccountId,
        status: Option<ConversationStatus>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError>;
    /// Conversations newest activity first (by `last_activity_at`, then id, both descending),
    /// those `query` matches ([`ConversationQuery::matches`](crate::reads::ConversationQuery::matches)),
    /// only those before `before` when given, at most `limit` (keyset pagination).
    async fn conversations_before(
        &self,
        query: &crate::reads::ConversationQuery,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError>;
    /// The active (open or idle) conversation of a thread, if any. There is at most one.
    async fn active_conversation(
        &self,
        account: AccountId,
        thread_key: &str,
    ) -> Result<Option<Conversation>, StoreError>;
    /// Active conversations of the account that a sweep with these thresholds would change.
    async fn due_conversations(
        &self,
        account: AccountId,
        due: DueConversations,
    ) -> Result<Vec<Conversation>, StoreError>;
    /// Compare-and-set of a conversation's status: succeeds only while its version is still
    /// `expected_version`, then bumps the version. Reactivating (to open) is refused with
    /// `InvalidInput` when another conversation of the thread is active.
    async fn set_conversation_status(
        &self,
        id: ConversationId,
        expected_version: i64,
        status: ConversationStatus,
        now: Timestamp,
    ) -> Result<Conversation, StoreError>;
    /// Sets a conversation's assignee if it is `expected` now (compare-and-set, so that two
    /// operators never both get it), bumping its version; returns it as stored afterwards.
    /// [`StoreError::AssigneeChanged`] names the current assignee when it is not `expected`;
    /// `NotFound` for an unknown conversation.
    async fn set_assignee(
        &self,
        conversation: ConversationId,
        expected: Option<&str>,
        assignee: Option<&str>,
        now: Timestamp,
    ) -> Result<Conversation, StoreError>;
}

/// Messages: ingest (which also gets or creates the identity and the conversation and
/// moves the provider's cursor, atomically), edits, deletions, and queuing a send (the
/// message and its job together).
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// The message, or `NotFound`.
    async fn message(&self, id: MessageId) -> Result<Message, StoreError>;
    /// The message with this provider id on the account, if any.
    async fn message_by_provider_id(
        &self,
        account: AccountId,
        provider_id: &str,
    ) -> Result<Option<Message>, StoreError>;
    /// The conversation's messages, oldest first (by `sent_at`, then id), at most `limit`.
    async fn messages(
        &self,
        conversation: ConversationId,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// The conversation's messages newest first (by `sent_at`, then id, both descending),
    /// only those before `before` when given, at most `limit` (keyset pagination).
    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// The account's messages that were stored degraded (with [`defects`](Message::defects)),
    /// newest first (by the time they were stored, then id), at most `limit`; with `code`,
    /// only those with a defect of that code (such as
    /// [`defect::TEXT_TRUNCATED`]).
    async fn messages_with_defects(
        &self,
        account: AccountId,
        code: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// Applies a provider's edit to the message with `edit.provider_id`: new text and HTML,
    /// `edited_at` set. An edit not newer than the stored one changes nothing. Returns the
    /// message as stored afterwards and whether this edit changed it; `None` when the account
    /// has no such message.
    async fn apply_edit(
        &self,
        account: AccountId,
        edit: &InboundEdit,
        now: Timestamp,
    ) -> Result<Option<(Message, bool)>, StoreError>;
    /// Marks the account's messages with `deletion.provider_ids` deleted at
    /// `deletion.deleted_at`, in one transaction, keeping their content. Returns the messages
    /// this changed, as stored afterwards; unknown ids and messages already marked deleted are
    /// passed over, so the same deletion again returns nothing.
    async fn apply_deletion(
        &self,
        account: AccountId,
        deletion: &InboundDeletion,
        now: Timestamp,
    ) -> Result<Vec<Message>, StoreError>;
    /// Stores an inbound message (see [`IngestRequest`]). Idempotent on the provider id, also
    /// under concurrent calls with the same message.
    async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError>;
    /// Stores several inbound messages (a fetched batch), in order, with the same per-message
    /// rules as [`MessageStore::ingest`]. SQL stores do it in one transaction (all or nothing). The
    /// default runs them one by one: a failure leaves the earlier ones stored, which is
    /// harmless because ingest is idempotent; the caller retries the batch.
    ///
    /// The requests are borrowed so that a caller still has them when the store refuses one
    /// ([`StoreError::InvalidInput`]): the engine then stores the batch message by message
    /// and puts a placeholder in place of the refused one.
    async fn ingest_batch(&self, reqs: &[IngestRequest]) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut out = Vec::with_capacity(reqs.len());
        for req in reqs {
            out.push(self.ingest(req.clone()).await?);
        }
        Ok(out)
    }
    /// Queues an outbound message: a `Pending` message and its `Send` job in one transaction.
    async fn enqueue_send(&self, req: SendRequest) -> Result<Message, StoreError>;
    /// Makes one row of a send and its stray copy: when another *outbound* message of
    /// `keep`'s account already holds `provider_id` (the echo of the send, or the owner's
    /// capture of it, stored before the send was recorded, as after a crash), that message is
    /// removed so that `keep` can take the id with [`QueueStore::complete`]. Returns the removed
    /// message's id. Returns `None` and changes nothing when no such message exists, when
    /// the holder is `keep` itself, is inbound (a real conflict, never merged away), or is
    /// referenced by a job. `NotFound` if `keep` does not exist.
    async fn merge_stray(
        &self,
        keep: MessageId,
        provider_id: &str,
    ) -> Result<Option<MessageId>, StoreError>;
}

/// Which due jobs a worker takes first ([`QueueStore::claim_preferring`]): those of the
/// accounts whose channels run in it, so that a send goes to the worker that can send it
/// instead of being claimed and put back by the others.
#[derive(Clone, Copy, Debug)]
pub struct ClaimPreference<'a> {
    /// The accounts whose channels run in the claiming worker: their jobs are taken as soon as
    /// they are due.
    pub accounts: &'a [AccountId],
    /// How long a job of any other account must have been due before this worker takes it
    /// (its own worker has had its chance; a job whose account runs nowhere is still handled).
    pub others_after: Duration,
}

impl ClaimPreference<'_> {
    /// More accounts than this and the preference is not applied (the claim takes any due
    /// job): a longer list would not fit in one statement everywhere.
    pub const MAX_ACCOUNTS: usize = 1000;
}

/// The durable job queue: claims fenced by leases, outcomes applied with the job atomically,
/// the audit of attempts and the dead letter.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Enqueues a job; with a unique key already held by an unfinished job, returns that job
    /// instead (`inserted: false`).
    async fn enqueue(&self, job: NewJob, now: Timestamp) -> Result<Enqueued, StoreError>;
    /// Claims up to `limit` jobs of these kinds whose `run_at` has passed (available or
    /// retryable), oldest `run_at` first: each becomes `Running` with the next attempt number,
    /// leased to `worker` until `now + lease_ttl`, and an attempt row is recorded. No job is
    /// ever handed to two workers.
    async fn claim(
        &self,
        worker: &str,
        kinds: &[JobKind],
        limit: usize,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<Vec<JobLease>, StoreError>;
    /// [`claim`](Self::claim), except that a job of an account outside `prefer.accounts` is
    /// taken only once it has been due for `prefer.others_after` (jobs without an account as
    /// soon as they are due). Among the jobs it may take, the oldest `run_at` first, as
    /// `claim`. The default ignores the preference; with more than
    /// [`ClaimPreference::MAX_ACCOUNTS`] accounts the stores of this workspace do too.
    async fn claim_preferring(
        &self,
        worker: &str,
        kinds: &[JobKind],
        limit: usize,
        lease_ttl: Duration,
        now: Timestamp,
        prefer: ClaimPreference<'_>,
    ) -> Result<Vec<JobLease>, StoreError> {
        let _ = prefer;
        self.claim(worker, kinds, limit, lease_ttl, now).await
    }
    /// Completes a claimed job and applies the message outcome, atomically. `LeaseLost` if the
    /// lease is stale.
    async fn complete(
        &self,
        lease: &JobLease,
        outcome: Option<MessageOutcome>,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Ends the attempt with an error; the job is retryable at `run_at`.
    async fn retry(
        &self,
        lease: &JobLease,
        error: &str,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Puts the job back until `run_at` without spending the attempt (rate limits).
    async fn snooze(
        &self,
        lease: &JobLease,
        run_at: Timestamp,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Moves the job to the dead-letter state and applies the message outcome, atomically.
    async fn discard(
        &self,
        lease: &JobLease,
        error: &str,
        outcome: Option<MessageOutcome>,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Extends a running job's lease (for long jobs). `LeaseLost` if it is stale.
    async fn extend_job_lease(
        &self,
        lease: &JobLease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Rescues running jobs whose lease expired before `now`: retryable at `now` when attempts
    /// remain, else discarded (a send job's message then becomes `Failed`). Returns how many.
    async fn rescue_expired(&self, now: Timestamp) -> Result<u64, StoreError>;
    /// Cancels an unfinished, unclaimed job.
    async fn cancel_job(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError>;
    /// Takes a job out of the dead letter: a discarded job becomes available at `now` with
    /// one more attempt allowed, its last error kept; a send job's `Failed` message becomes
    /// `Pending` again (`MessageStatusChanged` in the feed). `InvalidInput` for a job that is
    /// not discarded.
    async fn retry_job(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError>;
    /// The job, or `NotFound`.
    async fn job(&self, id: JobId) -> Result<Job, StoreError>;
    /// The job's attempts, first first.
    async fn job_attempts(&self, id: JobId) -> Result<Vec<JobAttempt>, StoreError>;
    /// Jobs in a state (for example the dead letter: `Discarded`), oldest first.
    async fn jobs_in_state(&self, state: JobState, limit: usize) -> Result<Vec<Job>, StoreError>;
    /// Jobs newest first (by creation time, then id, both descending), those `query`
    /// matches ([`JobQuery::matches`](crate::reads::JobQuery::matches)), only those before
    /// `before` when given, at most `limit` (keyset pagination).
    async fn jobs_before(
        &self,
        query: &crate::reads::JobQuery,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError>;
    /// The earliest `run_at` among claimable jobs of these kinds, so a dispatcher can sleep
    /// until then.
    async fn next_run_at(&self, kinds: &[JobKind]) -> Result<Option<Timestamp>, StoreError>;
    /// Jobs due at `now` (claimable: available or retryable, `run_at` passed), per kind, with
    /// the `run_at` of the oldest: the queue's depth and age, for metrics. The default pages
    /// through [`jobs_before`](Self::jobs_before); a backend answers with one query.
    async fn queue_depth(&self, now: Timestamp) -> Result<Vec<QueueDepth>, StoreError> {
        let mut out: Vec<QueueDepth> = Vec::new();
        for state in [JobState::Available, JobState::Retryable] {
            let mut before: Option<Position> = None;
            loop {
                let query = crate::reads::JobQuery::all().state(state);
                let page = self.jobs_before(&query, before.as_ref(), 500).await?;
                let Some(last) = page.last() else { break };
                before = Some(Position { at: last.created_at, id: last.id.to_string() });
                for job in page.iter().filter(|j| j.run_at <= now) {
                    match out.iter_mut().find(|d| d.kind == job.kind) {
                        Some(d) => {
                            d.due += 1;
                            d.oldest_run_at = d.oldest_run_at.min(job.run_at);
                        }
                        None => out.push(QueueDepth {
                            kind: job.kind.clone(),
                            due: 1,
                            oldest_run_at: job.run_at,
                        }),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The jobs of one kind due now ([`QueueStore::queue_depth`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    /// The kind.
    pub kind: JobKind,
    /// How many are due.
    pub due: u64,
    /// When the oldest of them became due.
    pub oldest_run_at: Timestamp,
}

/// Named leases (the leader, each account) and cross-process notifications.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the named lease for `holder` if it is free, expired or already held by `holder`
    /// (then renewed, same term). A new holder gets term + 1. `None` if someone else holds it.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>, StoreError>;
    /// Renews a held lease; `LeaseLost` if the holder or term changed or it expired.
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StoreError>;
    /// Gives a lease up (no-op if it was lost).
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Sends a notification to every process on the same database. Stores without such a
    /// mechanism (memory, SQLite) do nothing: in-process wake-ups already cover them.
    async fn notify(&self, _notification: &Notification) -> Result<(), StoreError> {
        Ok(())
    }
    /// A stream of notifications from other processes, if the store has them.
    fn notifications(&self) -> Option<tokio::sync::broadcast::Receiver<Notification>> {
        None
    }
}
