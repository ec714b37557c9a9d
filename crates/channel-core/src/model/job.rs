//! Jobs of the durable queue: outbound sends, history syncs, lifecycle sweeps.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{AccountId, JobId, MessageId, Timestamp, UnknownValue};

/// What a job does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobKind {
    /// Send one outbound message.
    Send,
    /// Fetch older history of an account or thread.
    HistorySync,
    /// Close idle and expired conversations of an account.
    LifecycleSweep,
}

impl JobKind {
    /// `send`, `history_sync` or `lifecycle_sweep`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobKind::Send => "send",
            JobKind::HistorySync => "history_sync",
            JobKind::LifecycleSweep => "lifecycle_sweep",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "send" => Ok(Self::Send),
            "history_sync" => Ok(Self::HistorySync),
            "lifecycle_sweep" => Ok(Self::LifecycleSweep),
            other => Err(UnknownValue { what: "job kind", value: other.to_owned() }),
        }
    }
}

/// Where a job is (the states of River and Oban).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Ready to be claimed once `run_at` has passed.
    Available,
    /// Claimed by a worker holding a lease.
    Running,
    /// Failed an attempt; available again at `run_at`.
    Retryable,
    /// Done.
    Completed,
    /// Dead letter: gave up after the last attempt, or failed permanently.
    Discarded,
    /// Cancelled by the service.
    Cancelled,
}

impl JobState {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Completed, discarded and cancelled jobs are final.
    pub fn is_final(&self) -> bool {
        matches!(self, JobState::Completed | JobState::Discarded | JobState::Cancelled)
    }
}

impl FromStr for JobState {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "available" => Ok(Self::Available),
            "running" => Ok(Self::Running),
            "retryable" => Ok(Self::Retryable),
            "completed" => Ok(Self::Completed),
            "discarded" => Ok(Self::Discarded),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(UnknownValue { what: "job state", value: other.to_owned() }),
        }
    }
}

/// A job of the durable queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// The account it works for, if any.
    pub account_id: Option<AccountId>,
    /// The message it sends (send jobs).
    pub message_id: Option<MessageId>,
    /// Arguments, as JSON.
    pub payload: serde_json::Value,
    /// At most one unfinished job per unique key.
    pub unique_key: Option<String>,
    /// Where it is.
    pub state: JobState,
    /// Attempts started so far (a snooze gives its attempt back).
    pub attempt: i32,
    /// Attempts allowed before the dead letter.
    pub max_attempts: i32,
    /// Not claimed before this time.
    pub run_at: Timestamp,
    /// The worker holding the lease while running.
    pub leased_by: Option<String>,
    /// When the lease runs out; an expired running job is rescued.
    pub lease_expires_at: Option<Timestamp>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What is needed to enqueue a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// The id to give it.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// The account it works for.
    pub account_id: Option<AccountId>,
    /// The message it sends.
    pub message_id: Option<MessageId>,
    /// Arguments.
    pub payload: serde_json::Value,
    /// Deduplication among unfinished jobs.
    pub unique_key: Option<String>,
    /// Not before.
    pub run_at: Timestamp,
    /// Attempts allowed (default 10).
    pub max_attempts: i32,
}

impl NewJob {
    /// The default number of attempts before the dead letter.
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 10;

    /// A job of `kind` that may run at `run_at`, with no account, no payload and the default
    /// number of attempts.
    pub fn new(kind: JobKind, run_at: Timestamp) -> Self {
        Self {
            id: JobId::new(),
            kind,
            account_id: None,
            message_id: None,
            payload: serde_json::Value::Null,
            unique_key: None,
            run_at,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// The result of an enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id: the new one, or the unfinished job that already had the unique key.
    pub job_id: JobId,
    /// False when a job with the same unique key was already unfinished.
    pub inserted: bool,
}

/// A claimed job, proof of the lease. Every later call for the job passes it back; the store
/// refuses it (lease lost) once the job was rescued and claimed again, so a stale worker
/// cannot overwrite a newer attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLease {
    /// The job as claimed.
    pub job: Job,
    /// The attempt number this lease is for (fencing token).
    pub attempt: i32,
    /// The worker that holds it.
    pub worker: String,
}

/// How an attempt ended, kept for audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Still running.
    Running,
    /// Completed.
    Completed,
    /// Failed; retried later.
    Retried,
    /// Rate limited; snoozed without spending the attempt.
    Snoozed,
    /// Failed for good: dead letter.
    Discarded,
    /// The lease ran out (a crashed or stuck worker) and the job was rescued.
    Rescued,
}

impl AttemptOutcome {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Retried => "retried",
            AttemptOutcome::Snoozed => "snoozed",
            AttemptOutcome::Discarded => "discarded",
            AttemptOutcome::Rescued => "rescued",
        }
    }
}

impl FromStr for AttemptOutcome {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(Self::Running),
            "completed" => Ok(Self::Completed),
            "retried" => Ok(Self::Retried),
            "snoozed" => Ok(Self::Snoozed),
            "discarded" => Ok(Self::Discarded),
            "rescued" => Ok(Self::Rescued),
            other => Err(UnknownValue { what: "attempt outcome", value: other.to_owned() }),
        }
    }
}

/// One attempt of a job, for audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAttempt {
    /// The job.
    pub job_id: JobId,
    /// The attempt number.
    pub attempt: i32,
    /// The worker.
    pub worker: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The error, if any.
    pub error: Option<String>,
}

/// What completing a send job does to its message, in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageOutcome {
    /// The provider accepted it under this id.
    Sent {
        /// The provider's id.
        provider_id: String,
        /// The provider's time.
        at: Timestamp,
    },
    /// The provider accepted it, but its id cannot be recorded on this message: another
    /// message of the account holds it for good (the inbound copy of a mail sent to the
    /// account's own address, say), or the store cannot keep it. The message becomes `Sent`
    /// without a provider id, its `error` holding `note` (why the id is not linked): what
    /// the provider delivered is never shown as failed.
    SentUnlinked {
        /// The provider's time.
        at: Timestamp,
        /// Why the provider's id is not recorded (names the id).
        note: String,
    },
    /// Gave up: the message becomes `Failed`.
    Failed {
        /// Why.
        error: String,
    },
}
