//! `impl Store for SqlStore`: every call under its named time limit.

use std::time::Duration;

use async_trait::async_trait;
use channel_core::{
    Account, AccountId, AccountStore, AccountUpdate, AttemptOutcome, ConnectionState, ContactId,
    Conversation, ConversationId, ConversationStatus, ConversationStore, DueConversations,
    Enqueued, Identity, IdentityId, IngestOutcome, IngestRequest, Job, JobAttempt, JobId, JobKind,
    JobLease, JobState, Lease, LeaseStore, Message, MessageId, MessageOutcome, MessageStore,
    NewAccount, NewJob, Notification, QueueStore, SendRequest, StoreError, Timestamp,
};

use channel_core::page::Position;

use crate::queue::{self, Completion, Finish};
use crate::{SqlStore, ingest, limits, ops, write_tx};

impl SqlStore {
    /// Completes one job in a transaction of its own (see [`crate::group_commit`]).
    pub(crate) async fn finish_completion(&self, c: &Completion) -> crate::error::Res<()> {
        self.finish(&c.lease, &c.finish(), c.now).await
    }

    async fn finish(
        &self,
        lease: &JobLease,
        finish: &Finish<'_>,
        now: Timestamp,
    ) -> crate::error::Res<()> {
        #[cfg(feature = "postgres")]
        if self.is_pg() {
            return queue::finish_pg(self, lease, finish, now).await;
        }
        write_tx!(self, |tx| queue::finish_sqlite(tx, lease, finish, now).await?)
    }
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_account(&self, new: NewAccount, now: Timestamp) -> Result<Account, StoreError> {
        self.run("create_account", async {
            write_tx!(self, |tx| ops::create_account(tx, &new, now).await?)
        })
        .await
    }

    async fn account(&self, id: AccountId) -> Result<Account, StoreError> {
        self.run("account", ops::account(self.pools().reader(), id)).await
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.run("accounts", ops::accounts(self.pools().reader())).await
    }

    async fn accounts_before(
        &self,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Account>, StoreError> {
        self.run("accounts_before", ops::accounts_before(self.pools().reader(), before, limit))
            .await
    }

    async fn update_account(
        &self,
        id: AccountId,
        update: &AccountUpdate,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        self.run("update_account", async {
            write_tx!(self, |tx| ops::update_account(tx, id, update, now).await?)
        })
        .await
    }

    async fn remove_account(
        &self,
        id: AccountId,
        purge_messages: bool,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.run("remove_account", async {
            write_tx!(self, |tx| ops::remove_account(tx, id, purge_messages, now).await?)
        })
        .await
    }

    async fn set_account_enabled(
        &self,
        id: AccountId,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        self.run("set_account_enabled", async {
            write_tx!(self, |tx| ops::set_account_enabled(tx, id, enabled, now).await?)
        })
        .await
    }

    async fn set_connection_state(
        &self,
        id: AccountId,
        state: &ConnectionState,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        self.run("set_connection_state", async {
            write_tx!(self, |tx| ops::set_connection_state(tx, id, state, now).await?)
        })
        .await
    }

    async fn state_get(
        &self,
        account: AccountId,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.run("state_get", ops::state_get(self.pools().reader(), account, key)).await
    }

    async fn state_put(
        &self,
        account: AccountId,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.run("state_put", async {
            write_tx!(self, |tx| ops::state_put(tx, account, key, value).await?)
        })
        .await
    }

    async fn state_delete(&self, account: AccountId, key: &str) -> Result<(), StoreError> {
        self.run("state_delete", async {
            write_tx!(self, |tx| ops::state_delete(tx, account, key).await?)
        })
        .await
    }

    async fn state_clear(&self, account: AccountId) -> Result<(), StoreError> {
        self.run("state_clear", async {
            write_tx!(self, |tx| ops::state_clear(tx, account).await?)
        })
        .await
    }

    async fn state_entries(
        &self,
        account: AccountId,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.run("state_entries", ops::state_entries(self.pools().reader(), account)).await
    }

    async fn state_replace(
        &self,
        account: AccountId,
        key: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        self.run("state_replace", async {
            write_tx!(self, |tx| ops::state_replace(tx, account, key, expected, value).await?)
        })
        .await
    }
}

#[async_trait]
impl ConversationStore for SqlStore {
    async fn identity(&self, id: IdentityId) -> Result<Identity, StoreError> {
        self.run("identity", ops::identity(self.pools().reader(), id)).await
    }

    async fn find_identity(
        &self,
        account: AccountId,
        address: &str,
    ) -> Result<Option<Identity>, StoreError> {
        self.run("find_identity", ops::find_identity(self.pools(), account, address)).await
    }

    async fn identities(
        &self,
        account: AccountId,
        unlinked_only: bool,
    ) -> Result<Vec<Identity>, StoreError> {
        self.run("identities", ops::identities(self.pools().reader(), account, unlinked_only)).await
    }

    async fn identities_before(
        &self,
        account: AccountId,
        unlinked_only: bool,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError> {
        let read =
            ops::identities_before(self.pools().reader(), account, unlinked_only, before, limit);
        self.run("identities_before", read).await
    }

    async fn link_identity(
        &self,
        id: IdentityId,
        contact: Option<ContactId>,
        now: Timestamp,
    ) -> Result<Identity, StoreError> {
        self.run("link_identity", async {
            write_tx!(self, |tx| ops::link_identity(tx, id, contact.as_ref(), now).await?)
        })
        .await
    }

    async fn merge_identities(
        &self,
        keep: IdentityId,
        merge: IdentityId,
        now: Timestamp,
    ) -> Result<Identity, StoreError> {
        self.run("merge_identities", async {
            write_tx!(self, |tx| ops::merge_identities(tx, keep, merge, now).await?)
        })
        .await
    }

    async fn conversation(&self, id: ConversationId) -> Result<Conversation, StoreError> {
        self.run("conversation", ops::conversation(self.pools().reader(), id)).await
    }

    async fn conversations(
        &self,
        account: AccountId,
        status: Option<ConversationStatus>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.run("conversations", ops::conversations(self.pools().reader(), account, status, limit))
            .await
    }

    async fn conversations_before(
        &self,
        query: &channel_core::reads::ConversationQuery,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        let read = ops::conversations_before(self.pools().reader(), query, before, limit);
        self.run("conversations_before", read).await
    }

    async fn active_conversation(
        &self,
        account: AccountId,
        thread_key: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        self.run(
            "active_conversation",
            ops::active_conversation(self.pools().reader(), account, thread_key),
        )
        .await
    }

    async fn due_conversations(
        &self,
        account: AccountId,
        due: DueConversations,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.run("due_conversations", ops::due_conversations(self.pools().reader(), account, &due))
            .await
    }

    async fn set_conversation_status(
        &self,
        id: ConversationId,
        expected_version: i64,
        status: ConversationStatus,
        now: Timestamp,
    ) -> Result<Conversation, StoreError> {
        self.run("set_conversation_status", async {
            write_tx!(self, |tx| ops::set_conversation_status(
                tx,
                id,
                expected_version,
                status,
                now
            )
            .await?)
        })
        .await
    }

    async fn set_assignee(
        &self,
        conversation: ConversationId,
        expected: Option<&str>,
        assignee: Option<&str>,
        now: Timestamp,
    ) -> Result<Conversation, StoreError> {
        self.run("set_assignee", async {
            write_tx!(self, |tx| ops::set_assignee(tx, conversation, expected, assignee, now)
                .await?)
        })
        .await
    }
}

#[async_trait]
impl MessageStore for SqlStore {
    async fn message(&self, id: MessageId) -> Result<Message, StoreError> {
        self.run("message", ops::message(self.pools().reader(), id)).await
    }

    async fn message_by_provider_id(
        &self,
        account: AccountId,
        provider_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        self.run(
            "message_by_provider_id",
            ops::message_by_provider_id(self.pools().reader(), account, provider_id),
        )
        .await
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.run("messages", ops::messages(self.pools().reader(), conversation, limit)).await
    }

    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let read = ops::messages_before(self.pools().reader(), conversation, before, limit);
        self.run("messages_before", read).await
    }

    async fn messages_with_defects(
        &self,
        account: AccountId,
        code: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.run(
            "messages_with_defects",
            ops::messages_with_defects(self.pools().reader(), account, code, limit),
        )
        .await
    }

    async fn apply_edit(
        &self,
        account: AccountId,
        edit: &channel_core::InboundEdit,
        now: Timestamp,
    ) -> Result<Option<(Message, bool)>, StoreError> {
        self.run("apply_edit", async {
            write_tx!(self, |tx| ops::apply_edit(tx, account, edit, now).await?)
        })
        .await
    }

    async fn apply_deletion(
        &self,
        account: AccountId,
        deletion: &channel_core::InboundDeletion,
        now: Timestamp,
    ) -> Result<Vec<Message>, StoreError> {
        self.run("apply_deletion", async {
            write_tx!(self, |tx| ops::apply_deletion(tx, account, deletion, now).await?)
        })
        .await
    }

    async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError> {
        let reqs = [req];
        let mut out = self
            .run("ingest", async {
                write_tx!(self, |tx| ingest::ingest_batch(tx, &reqs, self.ingest_events()).await?)
            })
            .await?;
        out.pop().ok_or_else(|| StoreError::Corrupt("ingest returned no outcome".to_owned()))
    }

    async fn ingest_batch(&self, reqs: &[IngestRequest]) -> Result<Vec<IngestOutcome>, StoreError> {
        self.run("ingest_batch", async {
            write_tx!(self, |tx| ingest::ingest_batch(tx, reqs, self.ingest_events()).await?)
        })
        .await
    }

    async fn enqueue_send(&self, req: SendRequest) -> Result<Message, StoreError> {
        self.run("enqueue_send", async { write_tx!(self, |tx| ops::enqueue_send(tx, &req).await?) })
            .await
    }

    async fn merge_stray(
        &self,
        keep: MessageId,
        provider_id: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        self.run("merge_stray", async {
            write_tx!(self, |tx| ops::merge_stray(tx, keep, provider_id).await?)
        })
        .await
    }
}

impl SqlStore {
    /// [`QueueStore::claim`], with the claiming worker's preference when given.
    async fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[JobKind],
        limit: usize,
        lease_ttl: Duration,
        now: Timestamp,
        prefer: Option<&queue::Preference>,
    ) -> Result<Vec<JobLease>, StoreError> {
        self.run("claim", async {
            limits::key("worker", worker)?;
            if kinds.is_empty() || limit == 0 {
                return Ok(Vec::new());
            }
            #[cfg(feature = "postgres")]
            if self.is_pg() {
                return queue::claim_pg(
                    self.pools().autocommit_writer(),
                    worker,
                    kinds,
                    limit,
                    lease_ttl,
                    now,
                    prefer,
                )
                .await;
            }
            write_tx!(self, |tx| queue::claim_sqlite(
                tx, worker, kinds, limit, lease_ttl, now, prefer
            )
            .await?)
        })
        .await
    }
}

#[async_trait]
impl QueueStore for SqlStore {
    async fn enqueue(&self, job: NewJob, now: Timestamp) -> Result<Enqueued, StoreError> {
        self.run("enqueue", async { write_tx!(self, |tx| queue::enqueue(tx, &job, now).await?) })
            .await
    }

    async fn claim(
        &self,
        worker: &str,
        kinds: &[JobKind],
        limit: usize,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<Vec<JobLease>, StoreError> {
        self.claim_jobs(worker, kinds, limit, lease_ttl, now, None).await
    }

    async fn claim_preferring(
        &self,
        worker: &str,
        kinds: &[JobKind],
        limit: usize,
        lease_ttl: Duration,
        now: Timestamp,
        prefer: channel_core::ClaimPreference<'_>,
    ) -> Result<Vec<JobLease>, StoreError> {
        let prefer = queue::Preference::of(&prefer, now);
        self.claim_jobs(worker, kinds, limit, lease_ttl, now, prefer.as_ref()).await
    }

    async fn complete(
        &self,
        lease: &JobLease,
        outcome: Option<MessageOutcome>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.run("complete", async {
            queue::check_outcome(outcome.as_ref())?;
            let completion = Completion { lease: lease.clone(), outcome, now };
            self.inner.group_commit.complete(self, completion).await
        })
        .await
    }

    async fn retry(
        &self,
        lease: &JobLease,
        error: &str,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.run("retry", async {
            let finish = Finish {
                state: JobState::Retryable,
                outcome: AttemptOutcome::Retried,
                error: Some(limits::error_text(error)),
                run_at: Some(run_at),
                refund: false,
                keep_last_error: false,
                message: None,
            };
            self.finish(lease, &finish, now).await
        })
        .await
    }

    async fn snooze(
        &self,
        lease: &JobLease,
        run_at: Timestamp,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.run("snooze", async {
            let finish = Finish {
                state: JobState::Available,
                outcome: AttemptOutcome::Snoozed,
                error: Some(limits::error_text(reason)),
                run_at: Some(run_at),
                refund: true,
                keep_last_error: true,
                message: None,
            };
            self.finish(lease, &finish, now).await
        })
        .await
    }

    async fn discard(
        &self,
        lease: &JobLease,
        error: &str,
        outcome: Option<MessageOutcome>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.run("discard", async {
            queue::check_outcome(outcome.as_ref())?;
            let finish = Finish {
                state: JobState::Discarded,
                outcome: AttemptOutcome::Discarded,
                error: Some(limits::error_text(error)),
                run_at: None,
                refund: false,
                keep_last_error: false,
                message: outcome.as_ref(),
            };
            self.finish(lease, &finish, now).await
        })
        .await
    }

    async fn extend_job_lease(
        &self,
        lease: &JobLease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.run("extend_job_lease", async {
            write_tx!(self, |tx| queue::extend(tx, lease, ttl, now).await?)
        })
        .await
    }

    async fn rescue_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.run("rescue_expired", async {
            write_tx!(self, |tx| queue::rescue_expired(tx, now).await?)
        })
        .await
    }

    async fn cancel_job(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.run("cancel_job", async { write_tx!(self, |tx| queue::cancel(tx, id, now).await?) })
            .await
    }

    async fn job(&self, id: JobId) -> Result<Job, StoreError> {
        self.run("job", queue::job(self.pools().reader(), id)).await
    }

    async fn job_attempts(&self, id: JobId) -> Result<Vec<JobAttempt>, StoreError> {
        self.run("job_attempts", queue::attempts(self.pools().reader(), id)).await
    }

    async fn jobs_in_state(&self, state: JobState, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.run("jobs_in_state", queue::in_state(self.pools().reader(), state, limit)).await
    }

    async fn jobs_before(
        &self,
        query: &channel_core::reads::JobQuery,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let read = queue::jobs_before(self.pools().reader(), query, before, limit);
        self.run("jobs_before", read).await
    }

    async fn retry_job(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.run("retry_job", async {
            write_tx!(self, |tx| queue::retry_discarded(tx, id, now).await?)
        })
        .await
    }

    async fn queue_depth(
        &self,
        now: Timestamp,
    ) -> Result<Vec<channel_core::QueueDepth>, StoreError> {
        self.run("queue_depth", queue::queue_depth(self.pools().reader(), now)).await
    }

    async fn next_run_at(&self, kinds: &[JobKind]) -> Result<Option<Timestamp>, StoreError> {
        self.run("next_run_at", queue::next_run_at(self.pools().reader(), kinds)).await
    }
}

#[async_trait]
impl LeaseStore for SqlStore {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>, StoreError> {
        self.run(
            "acquire_lease",
            ops::acquire_lease(self.pools().autocommit_writer(), name, holder, ttl, now),
        )
        .await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StoreError> {
        self.run("renew_lease", ops::renew_lease(self.pools().autocommit_writer(), lease, ttl, now))
            .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.run("release_lease", ops::release_lease(self.pools().autocommit_writer(), lease)).await
    }

    async fn notify(&self, notification: &Notification) -> Result<(), StoreError> {
        #[cfg(feature = "postgres")]
        if self.is_pg() {
            return self
                .run("notify", async {
                    limits::key("topic", &notification.topic)?;
                    limits::text("payload", &notification.payload, 8000)?;
                    self.pools()
                        .autocommit_writer()
                        .execute(
                            "SELECT pg_notify(?, ?)",
                            &[
                                crate::db::Arg::Text(&notification.topic),
                                crate::db::Arg::Text(&notification.payload),
                            ],
                        )
                        .await?;
                    Ok(())
                })
                .await;
        }
        let _ = notification;
        Ok(())
    }

    fn notifications(&self) -> Option<tokio::sync::broadcast::Receiver<Notification>> {
        #[cfg(feature = "postgres")]
        if let Some(hub) = &self.inner.hub {
            return Some(hub.subscribe());
        }
        None
    }
}
