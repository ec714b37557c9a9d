//! The dispatcher: claims jobs of the durable queue (sends, history syncs, lifecycle sweeps)
//! with a lease and runs them.
//!
//! It wakes when this process queues a job (an in-process `Notify`), when another process
//! does (the store's `channel_jobs` notifications, forwarded by the runtime), when the
//! earliest waiting job's `run_at` comes, and at the latest every `poll_interval`.

use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::jobs::JobRun;
use crate::model::*;
use crate::store::ClaimPreference;

/// The job kinds the dispatcher runs.
pub const DISPATCHED_KINDS: [JobKind; 3] =
    [JobKind::Send, JobKind::HistorySync, JobKind::LifecycleSweep];

/// Claims and runs jobs.
///
/// ```
/// # use std::sync::Arc;
/// # use channel_core::{*, testing::{MemoryStore, MemoryChannel}, state::StateKey, dispatcher::Dispatcher};
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// # let store = Arc::new(MemoryStore::new());
/// # let engine = Engine::builder(store.clone(), StateKey::generate()).blob_store(BlobStore::in_memory()).build().unwrap();
/// # let account = store.create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now()).await.unwrap();
/// let channel = Arc::new(MemoryChannel::new());
/// testing::attach_channel(&engine, account.id, channel.clone()); // the runtime does this
/// # let msg = InboundMessage::text("m1", "chat", IdentityInfo::new("tg:1"), "hi", engine.now());
/// # let conversation = engine.deliver(account.id, msg).await.unwrap().conversation_id;
/// let id = engine
///     .send(None, OutboundMessage {
///         conversation_id: conversation,
///         text: Some("hello".into()),
///         html: None,
///         subject: None,
///         idempotency_key: None,
///         reply_to: None,
///         attachments: vec![],
///         label: "manual".into(),
///     })
///     .await
///     .unwrap();
/// Dispatcher::new(engine.clone()).run_once().await.unwrap();
/// assert_eq!(store.message(id).await.unwrap().status, MessageStatus::Sent);
/// assert_eq!(channel.sends().len(), 1);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Dispatcher {
    engine: Engine,
}

impl Dispatcher {
    /// A dispatcher for `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// Claims one batch of due jobs and runs them concurrently to their end; returns how
    /// many were claimed.
    pub async fn run_once(&self) -> Result<usize, EngineError> {
        let e = &self.engine;
        let cfg = e.config();
        let now = e.now();
        // This worker's accounts first: a send claimed by a worker without the account's
        // channel is only put back, and with several workers that was most of them.
        let mine = e.attached_accounts();
        let prefer = ClaimPreference { accounts: &mine, others_after: cfg.others_claim_after };
        let claim = e.store().claim_preferring(
            &cfg.worker_id,
            &DISPATCHED_KINDS,
            cfg.claim_batch,
            cfg.job_lease_ttl,
            now,
            prefer,
        );
        let leases = e.db("claim", claim).await?;
        let n = leases.len();
        join_all(leases.into_iter().map(|lease| self.run_job(JobRun { lease }))).await;
        Ok(n)
    }

    async fn run_job(&self, run: JobRun) {
        let e = &self.engine;
        let result = match run.lease.job.kind {
            JobKind::Send => e.run_send_job(&run).await,
            JobKind::HistorySync => e.run_history_job(&run).await,
            JobKind::LifecycleSweep => e.run_sweep_job(&run).await,
        };
        if let Err(err) = result {
            // The store failed while the job was ours, before anything irrevocable happened
            // (after a successful send the handler records it itself and never comes here):
            // put it back with backoff. If the store fails that too (an outage), keep trying
            // in the background until it answers or the job's lease runs out (then the
            // rescuer takes it): a short outage delays the job by the outage, not by the
            // lease.
            let job = &run.lease.job;
            tracing::warn!(job = %job.id, kind = %job.kind, error = %err, "job failed on a store error");
            let error = err.to_string();
            if let Err(e2) = put_back(e, &run, &error).await {
                tracing::warn!(job = %run.lease.job.id, error = %e2, "could not put the job back; trying again until the store answers");
                tokio::spawn(put_back_until_the_store_answers(e.clone(), run, error));
            }
        }
    }

    /// How long to sleep before looking at the queue again.
    async fn idle_wait(&self) -> Duration {
        let e = &self.engine;
        let poll = e.config().poll_interval;
        match e.db("next_run_at", e.store().next_run_at(&DISPATCHED_KINDS)).await {
            Ok(Some(t)) => t.since(e.now()).min(poll),
            Ok(None) => poll,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the queue");
                poll.min(Duration::from_secs(5))
            }
        }
    }

    /// Runs until `cancel` fires. Jobs in flight finish (each bounded by its timeout) before
    /// it returns. `alive` is called every cycle (the watchdog's ping).
    pub async fn run(&self, cancel: CancellationToken, alive: impl Fn() + Send + Sync) {
        let wake = &self.engine.inner.wake;
        while !cancel.is_cancelled() {
            alive();
            let notified = wake.notified();
            let claimed = match self.run_once().await {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming jobs failed");
                    0
                }
            };
            if claimed >= self.engine.config().claim_batch {
                continue;
            }
            let wait = self.idle_wait().await;
            if wait.is_zero() {
                // A job became due between the claim and now, or a job of another worker's
                // account is due but not ours to take yet: look again, without spinning.
                let again = self.engine.config().others_claim_after.min(Duration::from_millis(250));
                tokio::time::sleep(again.max(Duration::from_millis(10))).await;
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Puts a job that failed on a store error back with backoff, or in the dead letter after its
/// last attempt (its message then `Failed`). `Err` only when the store fails again.
async fn put_back(e: &Engine, run: &JobRun, error: &str) -> Result<(), crate::store::StoreError> {
    let job = &run.lease.job;
    match run.retry_or_give_up(e, error, "store").await? {
        None => Ok(()),
        Some(final_error) => {
            let outcome =
                job.message_id.map(|_| MessageOutcome::Failed { error: final_error.clone() });
            if run.discard_applied(e, &final_error, outcome).await?
                && let (Some(account_id), Some(message_id)) = (job.account_id, job.message_id)
            {
                e.publish_if_failed(account_id, message_id).await;
            }
            Ok(())
        }
    }
}

/// [`put_back`] again every 1 s, 2 s, 4 s, ... (at most 15 s apart) until the store takes it,
/// the lease is lost, or the job's lease runs out (the rescuer's turn).
async fn put_back_until_the_store_answers(e: Engine, run: JobRun, error: String) {
    let expires = run.lease.job.lease_expires_at;
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(15));
        if expires.is_some_and(|t| e.now() >= t) {
            return;
        }
        match put_back(&e, &run, &error).await {
            Ok(()) | Err(crate::store::StoreError::LeaseLost { .. }) => return,
            Err(e2) => {
                tracing::debug!(job = %run.lease.job.id, error = %e2, "the store still fails")
            }
        }
    }
}
