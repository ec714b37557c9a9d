//! What every job handler shares: ending a claimed job (a stale lease is logged and left to
//! its new owner) and classifying channel errors into retry, snooze or give up.

use std::sync::Arc;
use std::time::Duration;

use crate::channel::{Channel, ChannelError};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::*;
use crate::store::StoreError;

/// A claimed job being worked on.
#[derive(Debug)]
pub(crate) struct JobRun {
    pub(crate) lease: JobLease,
}

/// `LeaseLost` means another worker owns the job now: nothing was written, nothing to do.
fn settle(
    lease: &JobLease,
    what: &'static str,
    r: Result<(), StoreError>,
) -> Result<(), StoreError> {
    let outcome = match &r {
        Ok(()) => what,
        Err(StoreError::LeaseLost { .. }) => "lease_lost",
        Err(_) => "store_error",
    };
    metrics::counter!("channel_jobs_total", "kind" => lease.job.kind.as_str(), "outcome" => outcome).increment(1);
    match r {
        Err(StoreError::LeaseLost { .. }) => {
            tracing::info!(job = %lease.job.id, attempt = lease.attempt, "lease lost before {what}: the job was rescued");
            Ok(())
        }
        other => other,
    }
}

impl JobRun {
    /// The job's message, for logs (`-` when it has none).
    fn message_label(&self) -> String {
        self.lease.job.message_id.map_or_else(|| "-".to_owned(), |m| m.to_string())
    }

    pub(crate) async fn complete(
        &self,
        e: &Engine,
        outcome: Option<MessageOutcome>,
    ) -> Result<(), StoreError> {
        settle(&self.lease, "complete", self.try_complete(e, outcome).await)
    }

    /// `QueueStore::complete` under the database timeout, without settling: the caller sees
    /// `LeaseLost` and counts the outcome itself (with [`JobRun::count`]).
    pub(crate) async fn try_complete(
        &self,
        e: &Engine,
        outcome: Option<MessageOutcome>,
    ) -> Result<(), StoreError> {
        let now = e.now();
        e.db("complete", e.inner.store.complete(&self.lease, outcome, now)).await
    }

    /// Counts an outcome of this job in `channel_jobs_total`.
    pub(crate) fn count(&self, outcome: &'static str) {
        metrics::counter!("channel_jobs_total", "kind" => self.lease.job.kind.as_str(), "outcome" => outcome).increment(1);
    }

    /// Ends the attempt with an error; the job runs again at `run_at`. `class` names the
    /// kind of failure for logs and metrics (`transient`, `timeout`, `store`, ...): the error
    /// text goes only to the store's audit.
    pub(crate) async fn retry(
        &self,
        e: &Engine,
        error: &str,
        class: &'static str,
        run_at: Timestamp,
    ) -> Result<(), StoreError> {
        let now = e.now();
        let r = e.db("retry", e.inner.store.retry(&self.lease, error, run_at, now)).await;
        let applied = r.is_ok();
        settle(&self.lease, "retry", r)?;
        if applied {
            let job = &self.lease.job;
            tracing::warn!(
                job = %job.id,
                kind = %job.kind,
                message = %self.message_label(),
                attempt = self.lease.attempt,
                max_attempts = job.max_attempts,
                next_run = %run_at,
                in_ms = u64::try_from(run_at.since(now).as_millis()).unwrap_or(u64::MAX),
                class,
                "job attempt failed; retrying"
            );
            metrics::counter!("channel_job_retries_total", "kind" => job.kind.as_str(), "class" => class).increment(1);
        }
        e.wake_dispatcher();
        Ok(())
    }

    /// Puts the job back until `run_at` without spending the attempt. `class` names why
    /// (`rate_limited`, `needs_login`, `send_policy`, ...) for logs and metrics.
    pub(crate) async fn snooze(
        &self,
        e: &Engine,
        run_at: Timestamp,
        reason: &str,
        class: &'static str,
    ) -> Result<(), StoreError> {
        let now = e.now();
        let r = e.db("snooze", e.inner.store.snooze(&self.lease, run_at, reason, now)).await;
        let applied = r.is_ok();
        settle(&self.lease, "snooze", r)?;
        if applied {
            let job = &self.lease.job;
            tracing::info!(
                job = %job.id,
                kind = %job.kind,
                message = %self.message_label(),
                attempt = self.lease.attempt,
                next_run = %run_at,
                in_ms = u64::try_from(run_at.since(now).as_millis()).unwrap_or(u64::MAX),
                class,
                "job snoozed without spending its attempt"
            );
            metrics::counter!("channel_job_snoozes_total", "kind" => job.kind.as_str(), "class" => class).increment(1);
        }
        e.wake_dispatcher();
        Ok(())
    }

    pub(crate) async fn discard(
        &self,
        e: &Engine,
        error: &str,
        outcome: Option<MessageOutcome>,
    ) -> Result<(), StoreError> {
        self.discard_applied(e, error, outcome).await.map(|_| ())
    }

    /// Moves the job to the dead letter; `Ok(false)` when the lease was lost (nothing
    /// written, the new owner decides).
    pub(crate) async fn discard_applied(
        &self,
        e: &Engine,
        error: &str,
        outcome: Option<MessageOutcome>,
    ) -> Result<bool, StoreError> {
        let now = e.now();
        let r = e.db("discard", e.inner.store.discard(&self.lease, error, outcome, now)).await;
        let applied = r.is_ok();
        settle(&self.lease, "discard", r)?;
        if applied {
            let job = &self.lease.job;
            tracing::warn!(
                job = %job.id,
                kind = %job.kind,
                message = %self.message_label(),
                attempt = self.lease.attempt,
                error,
                "job discarded (dead letter)"
            );
            metrics::counter!("channel_jobs_discarded_total", "kind" => job.kind.as_str())
                .increment(1);
        }
        Ok(applied)
    }

    /// Retries with backoff, or returns the final error when this was the last attempt.
    pub(crate) async fn retry_or_give_up(
        &self,
        e: &Engine,
        error: &str,
        class: &'static str,
    ) -> Result<Option<String>, StoreError> {
        let attempt = self.lease.attempt;
        if attempt >= self.lease.job.max_attempts {
            return Ok(Some(format!("gave up after {attempt} attempts: {error}")));
        }
        let delay = e.inner.config.retry.delay(attempt);
        self.retry(e, error, class, e.now().plus(delay)).await?;
        Ok(None)
    }
}

/// The channel a job can use, or the job was snoozed.
pub(crate) enum ReadyChannel {
    Ready(Arc<dyn Channel>),
    Snoozed,
}

/// How many running jobs [`Engine::rescue_expired_jobs`] looks at before a rescue, to find
/// the send jobs whose messages the rescue fails.
pub(crate) const RESCUE_SCAN_LIMIT: usize = 10_000;

impl Engine {
    /// Rescues the jobs of crashed or hung workers (`QueueStore::rescue_expired`): retryable at
    /// once while attempts remain, else discarded. For each send job the rescue discarded,
    /// its message is now `Failed` and `MessageStatusChanged { Failed }` is published. The
    /// runtime's leader calls it every `rescue_interval`; returns how many jobs were rescued.
    ///
    /// The store's rescue does not say which jobs it rescued, so the expired running jobs are
    /// read first (`jobs_in_state(Running)`, at most 10 000 of them, oldest first) and looked at
    /// again afterwards.
    pub async fn rescue_expired_jobs(&self) -> Result<u64, EngineError> {
        let store = &self.inner.store;
        let now = self.now();
        let expired: Vec<Job> = match self
            .db("jobs_in_state", store.jobs_in_state(JobState::Running, RESCUE_SCAN_LIMIT))
            .await
        {
            Ok(jobs) => {
                jobs.into_iter().filter(|j| j.lease_expires_at.is_some_and(|t| t < now)).collect()
            }
            Err(e) => {
                // Rescue anyway: a missing event is better than a stuck job.
                tracing::warn!(error = %e, "could not list running jobs before the rescue");
                Vec::new()
            }
        };
        let n = self.db("rescue_expired", store.rescue_expired(now)).await?;
        if n == 0 {
            return Ok(0);
        }
        metrics::counter!("channel_jobs_rescued_total").increment(n);
        tracing::warn!(jobs = n, "rescued jobs of stopped or hung workers");
        for j in expired {
            let after = match self.db("job", store.job(j.id)).await {
                Ok(after) => after,
                Err(e) => {
                    tracing::warn!(job = %j.id, error = %e, "could not read a rescued job");
                    continue;
                }
            };
            let rescued = after.state != JobState::Running || after.attempt != j.attempt;
            if !rescued {
                continue;
            }
            tracing::info!(job = %j.id, kind = %j.kind, attempt = j.attempt, state = after.state.as_str(), "job rescued");
            if after.state == JobState::Discarded {
                metrics::counter!("channel_jobs_discarded_total", "kind" => j.kind.as_str())
                    .increment(1);
                if let (Some(account), Some(message)) = (j.account_id, j.message_id) {
                    self.publish_if_failed(account, message).await;
                }
            }
        }
        self.announce_jobs("rescued").await;
        Ok(n)
    }

    /// The account's channel in this process; else the job waits: long when the account is
    /// disabled or needs a login, briefly when another process connects it.
    pub(crate) async fn ready_channel(
        &self,
        run: &JobRun,
        account: AccountId,
    ) -> Result<ReadyChannel, StoreError> {
        if let Some(c) = self.channel(account) {
            return Ok(ReadyChannel::Ready(c));
        }
        let acc = self.db("account", self.inner.store.account(account)).await?;
        let now = self.now();
        if !acc.enabled || acc.connection.action() != UserAction::None {
            let reason = format!(
                "account is {}",
                if acc.enabled { acc.connection.name() } else { "disabled" }
            );
            run.snooze(
                self,
                now.plus(self.inner.config.needs_login_snooze),
                &reason,
                "account_unavailable",
            )
            .await?;
        } else {
            let base = self.inner.config.elsewhere_snooze;
            let jitter = Duration::from_millis(rand::random_range(
                0..=u64::try_from(base.as_millis() / 2).unwrap_or(0),
            ));
            run.snooze(
                self,
                now.plus(base + jitter),
                "account not connected in this process",
                "account_elsewhere",
            )
            .await?;
        }
        Ok(ReadyChannel::Snoozed)
    }

    /// Handles a channel error of a job: snoozes (rate limit, login needed, shutdown) or
    /// retries with backoff, returning `None`; or returns the error to fail the job with
    /// (permanent, invalid input, last attempt).
    pub(crate) async fn classify(
        &self,
        run: &JobRun,
        account: AccountId,
        error: ChannelError,
    ) -> Result<Option<String>, StoreError> {
        let now = self.now();
        match error {
            ChannelError::RateLimited { retry_after } => {
                run.snooze(self, now.plus(retry_after), &error.to_string(), "rate_limited").await?;
                Ok(None)
            }
            ChannelError::NeedsLogin(reason) => {
                let msg = format!("the account needs a new login: {reason}");
                if let Err(e) = self
                    .report_state(account, ConnectionState::NeedsLogin { reason: reason.report() })
                    .await
                {
                    tracing::warn!(%account, error = %e, "could not record the connection state");
                }
                run.snooze(
                    self,
                    now.plus(self.inner.config.needs_login_snooze),
                    &msg,
                    "needs_login",
                )
                .await?;
                Ok(None)
            }
            ChannelError::Cancelled => {
                run.snooze(
                    self,
                    now.plus(Duration::from_secs(1)),
                    "cancelled (shutdown)",
                    "cancelled",
                )
                .await?;
                Ok(None)
            }
            ChannelError::Permanent(_) | ChannelError::InvalidInput(_) => {
                Ok(Some(error.to_string()))
            }
            ChannelError::Transient(_) => {
                run.retry_or_give_up(self, &error.to_string(), "transient").await
            }
            ChannelError::Timeout { .. } => {
                run.retry_or_give_up(self, &error.to_string(), "timeout").await
            }
        }
    }
}
