//! History syncs: a job on the durable queue fetches older messages through the account's
//! channel and ingests them, deduplicated by provider id.

use serde::{Deserialize, Serialize};

use crate::channel::{ChannelError, HistoryRequest};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::jobs::{JobRun, ReadyChannel};
use crate::model::*;
use crate::store::{IngestDisposition, StoreError};
use crate::validate;

/// The payload of a `HistorySync` job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySyncArgs {
    /// One thread, or the whole account.
    pub thread_key: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Only messages before this provider id.
    pub before: Option<String>,
    /// Only messages after this provider id.
    pub after: Option<String>,
}

/// What a history page did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryReport {
    /// Messages fetched.
    pub fetched: usize,
    /// Newly stored.
    pub stored: usize,
    /// Already stored (deduplicated).
    pub duplicates: usize,
    /// Skipped because the engine refused them (invalid input).
    pub skipped: usize,
}

impl Engine {
    /// Queues a history sync for `account`. The page size is clamped to the configured maximum
    /// (500) and defaults to 100. The same request while one is unfinished returns that job.
    /// When the account's channel is attached in this process and its capabilities have no
    /// history, nothing is queued: [`EngineError::Unsupported`]. A job queued while the
    /// channel ran elsewhere is discarded by the worker whose channel cannot fetch history.
    pub async fn request_history(
        &self,
        account: AccountId,
        request: HistoryRequest,
    ) -> Result<JobId, EngineError> {
        self.require_account(account).await?;
        if let Some(channel) = self.channel(account)
            && !channel.capabilities().history
        {
            return Err(EngineError::Unsupported { account, capability: "history" });
        }
        let cfg = &self.inner.config;
        let limit =
            if request.limit == 0 { cfg.history_limit } else { request.limit.min(cfg.history_max) };
        for (field, v) in [
            ("thread_key", &request.thread_key),
            ("before", &request.before),
            ("after", &request.after),
        ] {
            if let Some(v) = v {
                validate::check_str(field, v, cfg.limits.id, true)?;
            }
        }
        let args = HistorySyncArgs {
            thread_key: request.thread_key,
            limit,
            before: request.before,
            after: request.after,
        };
        let unique = format!(
            "history:{account}:{}:{}:{}",
            args.thread_key.as_deref().unwrap_or("*"),
            args.before.as_deref().unwrap_or(""),
            args.after.as_deref().unwrap_or("")
        );
        let now = self.now();
        let job = NewJob {
            id: JobId::new(),
            kind: JobKind::HistorySync,
            account_id: Some(account),
            message_id: None,
            payload: serde_json::to_value(&args).map_err(|e| EngineError::Config(e.to_string()))?,
            unique_key: Some(unique),
            run_at: now,
            max_attempts: cfg.retry.max_attempts,
        };
        let enqueued = self.db("enqueue", self.inner.store.enqueue(job, now)).await?;
        self.announce_jobs("history_sync").await;
        Ok(enqueued.job_id)
    }

    /// Runs one claimed history job.
    pub(crate) async fn run_history_job(&self, run: &JobRun) -> Result<(), StoreError> {
        let job = &run.lease.job;
        let Some(account) = job.account_id else {
            return run.discard(self, "history job without an account", None).await;
        };
        let args: HistorySyncArgs = match serde_json::from_value(job.payload.clone()) {
            Ok(a) => a,
            Err(e) => {
                return run.discard(self, &format!("bad history job payload: {e}"), None).await;
            }
        };
        let channel = match self.ready_channel(run, account).await? {
            ReadyChannel::Ready(c) => c,
            ReadyChannel::Snoozed => return Ok(()),
        };
        if !channel.capabilities().history {
            let reason = "the account's channel does not fetch history (its capabilities)";
            return run.discard(self, reason, None).await;
        }
        let request = HistoryRequest {
            thread_key: args.thread_key,
            limit: args.limit.clamp(1, self.inner.config.history_max),
            before: args.before,
            after: args.after,
        };
        let after = self.inner.config.history_timeout;
        let fetched = match tokio::time::timeout(after, channel.fetch_history(&request)).await {
            Ok(Ok(messages)) => messages,
            Ok(Err(e)) => return self.history_failed(run, account, e).await,
            Err(_) => {
                let e = ChannelError::Timeout { operation: "fetch_history".to_owned(), after };
                return self.history_failed(run, account, e).await;
            }
        };
        // The fetch may have taken a while: keep the job ours while ingesting.
        let now = self.now();
        let ttl = self.inner.config.job_lease_ttl;
        match self
            .db("extend_job_lease", self.inner.store.extend_job_lease(&run.lease, ttl, now))
            .await
        {
            Err(StoreError::LeaseLost { .. }) => return Ok(()),
            other => other?,
        }
        match self.ingest_history(account, fetched).await {
            Ok(report) => {
                tracing::info!(%account, ?report, "history page ingested");
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                let event = Event::HistorySynced {
                    account_id: account,
                    job_id: job.id,
                    fetched: count(report.fetched),
                    stored: count(report.stored),
                };
                self.record_events(vec![event]).await;
                run.complete(self, None).await
            }
            Err(e) if e.is_transient() => {
                match run.retry_or_give_up(self, &e.to_string(), "store").await? {
                    Some(error) => run.discard(self, &error, None).await,
                    None => Ok(()),
                }
            }
            Err(e) => run.discard(self, &e.to_string(), None).await,
        }
    }

    /// Ingests a fetched page: invalid messages are skipped (and counted), the rest stored in
    /// one batch, deduplicated.
    pub async fn ingest_history(
        &self,
        account: AccountId,
        messages: Vec<InboundMessage>,
    ) -> Result<HistoryReport, EngineError> {
        let mut report = HistoryReport { fetched: messages.len(), ..Default::default() };
        let limits = &self.inner.config.limits;
        let valid: Vec<InboundMessage> = messages
            .into_iter()
            .filter(|m| match validate::check_inbound(m, limits) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(%account, error = %e, "skipping an invalid history message");
                    report.skipped += 1;
                    false
                }
            })
            .collect();
        for o in self.deliver_batch(account, valid).await? {
            match o.disposition {
                IngestDisposition::Stored => report.stored += 1,
                IngestDisposition::Duplicate | IngestDisposition::EchoMatched => {
                    report.duplicates += 1
                }
            }
        }
        Ok(report)
    }

    async fn history_failed(
        &self,
        run: &JobRun,
        account: AccountId,
        e: ChannelError,
    ) -> Result<(), StoreError> {
        match self.classify(run, account, e).await? {
            Some(error) => run.discard(self, &error, None).await,
            None => Ok(()),
        }
    }
}
