//! The durable job queue.
//!
//! Claims are fenced: every later call for a claimed job names the job, the attempt number
//! and the worker, and changes the job only while it is still `running` with exactly those.
//! A worker whose lease expired and whose job was rescued (or claimed again) gets
//! `LeaseLost` and writes nothing.

use std::time::Duration;

use channel_core::{
    AttemptOutcome, Enqueued, Job, JobAttempt, JobId, JobKind, JobLease, JobState, MessageOutcome,
    NewJob, StoreError, Timestamp,
};

use channel_core::feed::derive;
use channel_core::page::Position;

use crate::codec::{self, ATTEMPT_COLS, JOB_COLS, all, limit};
use crate::db::{Arg, Ex, Sql, Tx};
use crate::error::{Res, invalid};
use crate::feed;
use crate::limits::{self, MAX_PAYLOAD_BYTES};

const UNFINISHED: &str = "('available', 'running', 'retryable')";

pub(crate) fn check_max_attempts(n: i32) -> Res<()> {
    if n < 1 {
        return Err(invalid("max_attempts", format!("must be at least 1, not {n}")));
    }
    Ok(())
}

fn check_job(job: &NewJob) -> Res<String> {
    check_max_attempts(job.max_attempts)?;
    if let Some(k) = &job.unique_key {
        limits::key("unique_key", k)?;
    }
    let payload = codec::to_json("payload", &job.payload)?;
    limits::size("payload", payload.len(), MAX_PAYLOAD_BYTES)?;
    Ok(payload)
}

/// Inserts a new job (state `available`, attempt 0) after checking its references.
pub(crate) async fn insert_job(tx: &mut Tx, job: &NewJob, now: Timestamp) -> Res<()> {
    let payload = check_job(job)?;
    let id = job.id.to_string();
    if tx.fetch_optional("SELECT id FROM jobs WHERE id = ?", &[Arg::Text(&id)]).await?.is_some() {
        return Err(invalid("id", format!("job {} already exists", job.id)));
    }
    let account = job.account_id.map(|a| a.to_string());
    if let Some(a) = job.account_id {
        crate::ops::require_account(tx, a).await?;
    }
    let message = job.message_id.map(|m| m.to_string());
    tx.execute(
        &format!(
            "INSERT INTO jobs ({JOB_COLS}) VALUES (?, ?, ?, ?, ?, ?, 'available', 0, ?, ?, NULL, NULL, NULL, ?, ?)"
        ),
        &[
            Arg::Text(&id),
            Arg::Text(job.kind.as_str()),
            Arg::OptText(account.as_deref()),
            Arg::OptText(message.as_deref()),
            Arg::Text(&payload),
            Arg::OptText(job.unique_key.as_deref()),
            Arg::Int(i64::from(job.max_attempts)),
            Arg::Int(job.run_at.0),
            Arg::Int(now.0),
            Arg::Int(now.0),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn enqueue(tx: &mut Tx, job: &NewJob, now: Timestamp) -> Res<Enqueued> {
    check_job(job)?;
    if let Some(key) = &job.unique_key {
        let existing = tx
            .fetch_optional(
                &format!("SELECT id FROM jobs WHERE unique_key = ? AND state IN {UNFINISHED}"),
                &[Arg::Text(key)],
            )
            .await?;
        if let Some(row) = existing {
            return Ok(Enqueued { job_id: codec::job_id(&row, "id")?, inserted: false });
        }
    }
    insert_job(tx, job, now).await?;
    Ok(Enqueued { job_id: job.id, inserted: true })
}

fn kinds_list<'a>(q: &mut Sql<'a>, kinds: &'a [JobKind]) {
    let names: Vec<&'static str> = kinds.iter().map(JobKind::as_str).collect();
    q.in_list(&names);
}

/// A claim's preference ([`channel_core::ClaimPreference`]): the claiming worker's accounts
/// (as text) and the `run_at` at or before which any account's job may be taken.
pub(crate) struct Preference {
    pub(crate) accounts: Vec<String>,
    pub(crate) others_due: Timestamp,
}

impl Preference {
    /// The preference, unless it names too many accounts to fit in one statement.
    pub(crate) fn of(p: &channel_core::ClaimPreference<'_>, now: Timestamp) -> Option<Self> {
        (p.accounts.len() <= channel_core::ClaimPreference::MAX_ACCOUNTS).then(|| Self {
            accounts: p.accounts.iter().map(ToString::to_string).collect(),
            others_due: now.minus(p.others_after),
        })
    }
}

/// ` AND (account_id IS NULL OR run_at <= others_due OR account_id IN (...))`.
fn preferred<'a>(q: &mut Sql<'a>, prefer: Option<&'a Preference>, accounts: &[&'a str]) {
    let Some(p) = prefer else { return };
    q.push(" AND (account_id IS NULL OR run_at <= ").bind(p.others_due.0);
    if !accounts.is_empty() {
        q.push(" OR account_id IN ");
        q.in_list(accounts);
    }
    q.push(")");
}

/// Claims on SQLite: one `UPDATE ... RETURNING` and the attempt rows, in the caller's
/// `BEGIN IMMEDIATE` transaction.
pub(crate) async fn claim_sqlite(
    tx: &mut Tx,
    worker: &str,
    kinds: &[JobKind],
    n: usize,
    lease_ttl: Duration,
    now: Timestamp,
    prefer: Option<&Preference>,
) -> Res<Vec<JobLease>> {
    let accounts: Vec<&str> =
        prefer.map(|p| p.accounts.iter().map(String::as_str).collect()).unwrap_or_default();
    let expires = now.plus(lease_ttl).0;
    let mut q = Sql::new("UPDATE jobs SET state = 'running', attempt = attempt + 1, leased_by = ");
    q.bind(worker)
        .push(", lease_expires_at = ")
        .bind(expires)
        .push(", updated_at = ")
        .bind(now.0)
        .push(
            " WHERE id IN (SELECT id FROM jobs WHERE state IN ('available', 'retryable') AND run_at <= ",
        )
        .bind(now.0)
        .push(" AND kind IN ");
    kinds_list(&mut q, kinds);
    preferred(&mut q, prefer, &accounts);
    q.push(" ORDER BY run_at, id LIMIT ").bind(limit(n)).push(") RETURNING ").push(JOB_COLS);
    let rows = tx.fetch_all(&q.text, &q.args).await?;
    let mut jobs = all(rows, codec::job)?;
    jobs.sort_by_key(|j| (j.run_at, j.id));
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let mut inserts = Vec::new();
    for (chunk_ids, chunk_jobs) in ids.chunks(1000).zip(jobs.chunks(1000)) {
        let mut q = Sql::new(
            "INSERT INTO job_attempts (job_id, attempt, worker, started_at, outcome) VALUES ",
        );
        for (i, (id, job)) in chunk_ids.iter().zip(chunk_jobs).enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(id.as_str())
                .push(", ")
                .bind(i64::from(job.attempt))
                .push(", ")
                .bind(worker)
                .push(", ")
                .bind(now.0)
                .push(", 'running')");
        }
        inserts.push(q);
    }
    // The attempt rows and the commit in one call.
    tx.run_and_commit(&inserts).await?;
    Ok(jobs
        .into_iter()
        .map(|job| JobLease { attempt: job.attempt, worker: worker.to_owned(), job })
        .collect())
}

/// Claims on PostgreSQL: one statement that picks with `FOR UPDATE SKIP LOCKED`, marks the
/// jobs running and records the attempts.
#[cfg(feature = "postgres")]
pub(crate) async fn claim_pg(
    ex: Ex<'_>,
    worker: &str,
    kinds: &[JobKind],
    n: usize,
    lease_ttl: Duration,
    now: Timestamp,
    prefer: Option<&Preference>,
) -> Res<Vec<JobLease>> {
    let accounts: Vec<&str> =
        prefer.map(|p| p.accounts.iter().map(String::as_str).collect()).unwrap_or_default();
    let expires = now.plus(lease_ttl).0;
    let mut q = Sql::new(
        "WITH picked AS (SELECT id AS pid FROM jobs WHERE state IN ('available', 'retryable') AND run_at <= ",
    );
    q.bind(now.0).push(" AND kind IN ");
    kinds_list(&mut q, kinds);
    preferred(&mut q, prefer, &accounts);
    q.push(" ORDER BY run_at, id LIMIT ")
        .bind(limit(n))
        .push(" FOR UPDATE SKIP LOCKED), claimed AS (UPDATE jobs SET state = 'running', attempt = attempt + 1, leased_by = ")
        .bind(worker)
        .push(", lease_expires_at = ")
        .bind(expires)
        .push(", updated_at = ")
        .bind(now.0)
        .push(" FROM picked WHERE jobs.id = picked.pid RETURNING ")
        .push(&prefixed("jobs", JOB_COLS))
        .push("), audit AS (INSERT INTO job_attempts (job_id, attempt, worker, started_at, outcome) SELECT id, attempt, ")
        .bind(worker)
        .push(", ")
        .bind(now.0)
        .push(", 'running' FROM claimed) SELECT ")
        .push(JOB_COLS)
        .push(" FROM claimed ORDER BY run_at, id");
    let rows = ex.fetch_all(&q.text, &q.args).await?;
    let jobs = all(rows, codec::job)?;
    Ok(jobs
        .into_iter()
        .map(|job| JobLease { attempt: job.attempt, worker: worker.to_owned(), job })
        .collect())
}

#[cfg(feature = "postgres")]
fn prefixed(table: &str, cols: &str) -> String {
    cols.split(',').map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// How a claimed job's attempt ends.
pub(crate) struct Finish<'a> {
    pub(crate) state: JobState,
    pub(crate) outcome: channel_core::AttemptOutcome,
    pub(crate) error: Option<String>,
    /// New `run_at` (retry, snooze).
    pub(crate) run_at: Option<Timestamp>,
    /// Give the attempt back (snooze).
    pub(crate) refund: bool,
    /// Keep the job's `last_error` as it was (snooze).
    pub(crate) keep_last_error: bool,
    pub(crate) message: Option<&'a MessageOutcome>,
}

/// `LeaseLost` when the job exists (it moved on), else `NotFound`.
async fn lease_lost(tx: &mut Tx, lease: &JobLease) -> crate::error::Fail {
    stale_completion(tx.ex(), lease).await
}

/// The fenced `UPDATE jobs` of a finish, with `suffix` after its `WHERE`.
fn finish_job_sql<'a>(
    q: &mut Sql<'a>,
    id: &'a str,
    lease: &'a JobLease,
    f: &'a Finish<'_>,
    now: Timestamp,
) {
    q.push("UPDATE jobs SET state = ")
        .bind(f.state.as_str())
        .push(", leased_by = NULL, lease_expires_at = NULL, updated_at = ")
        .bind(now.0);
    if f.refund {
        q.push(", attempt = attempt - 1");
    }
    if let Some(t) = f.run_at {
        q.push(", run_at = ").bind(t.0);
    }
    if !f.keep_last_error {
        q.push(", last_error = ").bind(f.error.as_deref());
    }
    q.push(" WHERE id = ")
        .bind(id)
        .push(" AND attempt = ")
        .bind(i64::from(lease.attempt))
        .push(" AND state = 'running' AND leased_by = ")
        .bind(lease.worker.as_str());
}

/// The `UPDATE job_attempts` of a finish; `job` is an SQL expression for the job id.
fn finish_attempt_sql<'a>(
    q: &mut Sql<'a>,
    job: &'a str,
    job_is_sql: bool,
    lease: &'a JobLease,
    f: &'a Finish<'_>,
    now: Timestamp,
) {
    q.push("UPDATE job_attempts SET outcome = ")
        .bind(f.outcome.as_str())
        .push(", finished_at = ")
        .bind(now.0)
        .push(", error = ")
        .bind(f.error.as_deref());
    if job_is_sql {
        q.push(" WHERE job_id IN (").push(job).push(")");
    } else {
        q.push(" WHERE job_id = ").bind(job);
    }
    q.push(" AND attempt = ")
        .bind(i64::from(lease.attempt))
        .push(" AND worker = ")
        .bind(lease.worker.as_str())
        .push(" AND outcome = 'running'");
}

/// `UPDATE messages SET ...` for an outcome; the caller appends ` WHERE id ...` and then
/// [`outcome_where_tail`].
fn outcome_sql<'a>(q: &mut Sql<'a>, outcome: &'a MessageOutcome, error: &'a str, now: Timestamp) {
    match outcome {
        MessageOutcome::Sent { provider_id, at } => {
            q.push("UPDATE messages SET status = 'sent', provider_id = COALESCE(provider_id, ")
                .bind(provider_id.as_str())
                .push("), sent_at = ")
                .bind(at.0)
                .push(", error = NULL, updated_at = ")
                .bind(now.0);
        }
        MessageOutcome::SentUnlinked { at, .. } => {
            q.push("UPDATE messages SET status = 'sent', sent_at = ")
                .bind(at.0)
                .push(", error = ")
                .bind(error)
                .push(", updated_at = ")
                .bind(now.0);
        }
        MessageOutcome::Failed { .. } => {
            q.push("UPDATE messages SET status = 'failed', error = ")
                .bind(error)
                .push(", updated_at = ")
                .bind(now.0);
        }
    }
}

/// The end of an outcome's `WHERE`: a failure never downgrades a message the echo proved
/// sent already.
fn outcome_where_tail(q: &mut Sql<'_>, outcome: &MessageOutcome) {
    if matches!(outcome, MessageOutcome::Failed { .. }) {
        q.push(" AND status = 'pending'");
    }
}

/// `id = ? AND state = ? AND updated_at = ? AND leased_by IS NULL`: the job as this finish
/// left it (true only when the fenced update went through).
fn finished_job_cond<'a>(q: &mut Sql<'a>, id: &'a str, f: &Finish<'_>, now: Timestamp) {
    q.push("id = ")
        .bind(id)
        .push(" AND state = ")
        .bind(f.state.as_str())
        .push(" AND updated_at = ")
        .bind(now.0)
        .push(" AND leased_by IS NULL");
}

fn outcome_error(outcome: Option<&MessageOutcome>) -> String {
    match outcome {
        Some(
            MessageOutcome::Failed { error } | MessageOutcome::SentUnlinked { note: error, .. },
        ) => limits::error_text(error),
        _ => String::new(),
    }
}

/// A unique violation while applying a `Sent` outcome: its provider id belongs to another
/// message of the account.
fn provider_id_taken(e: &sqlx::Error) -> bool {
    crate::db::classify(e) == crate::db::DbFailure::Unique
}

fn provider_id_error(outcome: Option<&MessageOutcome>) -> crate::error::Fail {
    let id = match outcome {
        Some(MessageOutcome::Sent { provider_id, .. }) => provider_id.as_str(),
        _ => "",
    };
    invalid("provider_id", format!("`{id}` is already used by another message of the account"))
}

/// Ends the attempt of a fenced job and applies the message outcome (SQLite): the job, its
/// attempt row, the message and the `COMMIT` go to the writer in one call. The attempt and
/// message updates only apply when the fenced job update did, so a stale lease commits
/// nothing.
pub(crate) async fn finish_sqlite(
    tx: &mut Tx,
    lease: &JobLease,
    f: &Finish<'_>,
    now: Timestamp,
) -> Res<()> {
    let id = lease.job.id.to_string();
    let error = outcome_error(f.message);
    let events = attempt_events(lease, f, now)?;
    let mut job = Sql::new(String::new());
    finish_job_sql(&mut job, &id, lease, f, now);
    job.push(" RETURNING message_id");
    let mut attempt = Sql::new(String::new());
    finish_attempt_sql(&mut attempt, &id, false, lease, f, now);
    attempt.push(" AND EXISTS (SELECT 1 FROM jobs WHERE ");
    finished_job_cond(&mut attempt, &id, f, now);
    attempt.push(")");
    let mut stmts = vec![job, attempt];
    if let Some(outcome) = f.message {
        let mut msg = Sql::new(String::new());
        outcome_sql(&mut msg, outcome, &error, now);
        msg.push(" WHERE id = (SELECT message_id FROM jobs WHERE ");
        finished_job_cond(&mut msg, &id, f, now);
        msg.push(")");
        outcome_where_tail(&mut msg, outcome);
        stmts.push(msg);
    }
    if !events.is_empty() {
        let mut ev = Sql::new(String::new());
        feed::push_insert_where(&mut ev, &events, false);
        ev.push("EXISTS (SELECT 1 FROM jobs WHERE ");
        finished_job_cond(&mut ev, &id, f, now);
        ev.push(")");
        stmts.push(ev);
    }
    let rows = match tx.run_and_commit(&stmts).await {
        Ok(rows) => rows,
        Err(e) if f.message.is_some() && provider_id_taken(&e) => {
            return Err(provider_id_error(f.message));
        }
        Err(e) => return Err(e.into()),
    };
    if rows.is_empty() {
        return Err(lease_lost(tx, lease).await);
    }
    Ok(())
}

/// Ends the attempt of a fenced job and applies the message outcome in one statement
/// (PostgreSQL): atomic without a transaction round trip.
#[cfg(feature = "postgres")]
pub(crate) async fn finish_pg(
    store: &crate::SqlStore,
    lease: &JobLease,
    f: &Finish<'_>,
    now: Timestamp,
) -> Res<()> {
    let id = lease.job.id.to_string();
    let error = outcome_error(f.message);
    let events = attempt_events(lease, f, now)?;
    let mut q = Sql::new("WITH done AS (");
    finish_job_sql(&mut q, &id, lease, f, now);
    q.push(" RETURNING id, message_id), audit AS (");
    finish_attempt_sql(&mut q, "SELECT id FROM done", true, lease, f, now);
    q.push(")");
    if let Some(outcome) = f.message {
        q.push(", msg AS (");
        outcome_sql(&mut q, outcome, &error, now);
        q.push(" WHERE id IN (SELECT message_id FROM done)");
        outcome_where_tail(&mut q, outcome);
        q.push(")");
    }
    if !events.is_empty() {
        q.push(", ev AS (");
        feed::push_insert_where(&mut q, &events, true);
        q.push("EXISTS (SELECT 1 FROM done))");
    }
    q.push(" SELECT id FROM done");
    let mut tries = 0;
    loop {
        match store.pools().autocommit_writer().fetch_optional(&q.text, &q.args).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {
                return Err(
                    match store
                        .pools()
                        .reader()
                        .fetch_optional("SELECT id FROM jobs WHERE id = ?", &[Arg::Text(&id)])
                        .await?
                    {
                        Some(_) => StoreError::LeaseLost { what: format!("job {id}") }.into(),
                        None => StoreError::not_found("job", &id).into(),
                    },
                );
            }
            Err(e) if provider_id_taken(&e) => return Err(provider_id_error(f.message)),
            Err(e) => {
                let fail: crate::error::Fail = e.into();
                tries += 1;
                if !store.should_retry(&fail, tries).await {
                    return Err(fail);
                }
            }
        }
    }
}

/// The feed's rows of a finished attempt (see [`derive::send_attempt`]).
fn attempt_events(lease: &JobLease, f: &Finish<'_>, now: Timestamp) -> Res<Vec<feed::EventRow>> {
    feed::rows(&derive::send_attempt(&lease.job, lease.attempt, f.outcome, f.message), now)
}

pub(crate) fn check_outcome(outcome: Option<&MessageOutcome>) -> Res<()> {
    match outcome {
        Some(MessageOutcome::Sent { provider_id, .. }) => limits::key("provider_id", provider_id),
        Some(
            MessageOutcome::Failed { error } | MessageOutcome::SentUnlinked { note: error, .. },
        ) => limits::text("error", error, limits::MAX_TEXT_BYTES),
        None => Ok(()),
    }
}

pub(crate) async fn extend(
    tx: &mut Tx,
    lease: &JobLease,
    ttl: Duration,
    now: Timestamp,
) -> Res<()> {
    let id = lease.job.id.to_string();
    // `RETURNING`, not the count of changed rows: on SQLite the count of the first statement
    // of a transaction (sent with its `BEGIN`) can be the previous statement's.
    let extended = tx
        .fetch_optional(
            "UPDATE jobs SET lease_expires_at = ?, updated_at = ? \
             WHERE id = ? AND attempt = ? AND state = 'running' AND leased_by = ? RETURNING id",
            &[
                Arg::Int(now.plus(ttl).0),
                Arg::Int(now.0),
                Arg::Text(&id),
                Arg::Int(i64::from(lease.attempt)),
                Arg::Text(&lease.worker),
            ],
        )
        .await?;
    if extended.is_none() {
        return Err(lease_lost(tx, lease).await);
    }
    Ok(())
}

/// The error recorded on a rescued attempt.
const RESCUED: &str = "lease expired: the worker crashed or stalled";

pub(crate) async fn rescue_expired(tx: &mut Tx, now: Timestamp) -> Res<u64> {
    let rows = tx
        .fetch_all(
            "UPDATE jobs SET \
               state = CASE WHEN attempt < max_attempts THEN 'retryable' ELSE 'discarded' END, \
               run_at = CASE WHEN attempt < max_attempts THEN ? ELSE run_at END, \
               leased_by = NULL, lease_expires_at = NULL, last_error = ?, updated_at = ? \
             WHERE state = 'running' AND lease_expires_at < ? \
             RETURNING id, attempt, state, kind, message_id, account_id",
            &[Arg::Int(now.0), Arg::Text(RESCUED), Arg::Int(now.0), Arg::Int(now.0)],
        )
        .await?;
    let mut rescued = 0u64;
    for row in &rows {
        rescued += 1;
        let id = row.text("id")?;
        let attempt = row.int("attempt")?;
        tx.execute(
            "UPDATE job_attempts SET outcome = 'rescued', finished_at = ?, error = ? \
             WHERE job_id = ? AND attempt = ? AND outcome = 'running'",
            &[Arg::Int(now.0), Arg::Text(RESCUED), Arg::Text(&id), Arg::Int(attempt)],
        )
        .await?;
        let discarded = row.text("state")? == JobState::Discarded.as_str();
        let outcome = MessageOutcome::Failed { error: RESCUED.to_owned() };
        let message = row.opt_text("message_id")?;
        if let (true, Some(message)) = (discarded, &message) {
            let mut q = Sql::new(String::new());
            outcome_sql(&mut q, &outcome, RESCUED, now);
            q.push(" WHERE id = ").bind(message.as_str());
            outcome_where_tail(&mut q, &outcome);
            tx.execute(&q.text, &q.args).await?;
        }
        let send = row.text("kind")? == JobKind::Send.as_str();
        if let (true, Some(message), Some(account)) = (send, message, row.opt_text("account_id")?) {
            let parsed = (message.parse(), account.parse(), id.parse());
            let (Ok(message), Ok(account), Ok(job)) = parsed else {
                return Err(StoreError::Corrupt(format!("malformed ids of job {id}")).into());
            };
            let failed = discarded.then_some(&outcome);
            let events = derive::attempt_of(
                account,
                message,
                job,
                i32::try_from(attempt).unwrap_or(i32::MAX),
                AttemptOutcome::Rescued,
                failed,
            );
            feed::append(tx, &events, now).await?;
        }
    }
    Ok(rescued)
}

pub(crate) async fn cancel(tx: &mut Tx, id: JobId, now: Timestamp) -> Res<Job> {
    let ids = id.to_string();
    let row = tx
        .fetch_optional(
            &format!(
                "UPDATE jobs SET state = 'cancelled', updated_at = ? \
                 WHERE id = ? AND state IN ('available', 'retryable') RETURNING {JOB_COLS}"
            ),
            &[Arg::Int(now.0), Arg::Text(&ids)],
        )
        .await?;
    if let Some(row) = row {
        return Ok(codec::job(&row)?);
    }
    let job = job(tx.ex(), id).await?;
    Err(invalid("job", format!("job {id} is {} and cannot be cancelled", job.state.as_str())))
}

/// See `QueueStore::retry_job`.
pub(crate) async fn retry_discarded(tx: &mut Tx, id: JobId, now: Timestamp) -> Res<Job> {
    let ids = id.to_string();
    let row = tx
        .fetch_optional(
            &format!(
                "UPDATE jobs SET state = 'available', run_at = ?, updated_at = ?, \
                 max_attempts = CASE WHEN max_attempts > attempt THEN max_attempts ELSE attempt + 1 END \
                 WHERE id = ? AND state = 'discarded' RETURNING {JOB_COLS}"
            ),
            &[Arg::Int(now.0), Arg::Int(now.0), Arg::Text(&ids)],
        )
        .await?;
    let Some(row) = row else {
        let job = job(tx.ex(), id).await?;
        return Err(invalid(
            "job",
            format!("job {id} is {}: only a discarded job is retried", job.state.as_str()),
        ));
    };
    let job = codec::job(&row)?;
    if let (Some(message), Some(account)) = (job.message_id, job.account_id) {
        let m = message.to_string();
        let back = tx
            .fetch_optional(
                "UPDATE messages SET status = 'pending', updated_at = ? \
                 WHERE id = ? AND status = 'failed' RETURNING id",
                &[Arg::Int(now.0), Arg::Text(&m)],
            )
            .await?;
        if back.is_some() {
            let event = channel_core::Event::MessageStatusChanged {
                account_id: account,
                message_id: message,
                status: channel_core::MessageStatus::Pending,
            };
            feed::append(tx, &[event], now).await?;
        }
    }
    Ok(job)
}

pub(crate) async fn job(ex: Ex<'_>, id: JobId) -> Res<Job> {
    let ids = id.to_string();
    match ex
        .fetch_optional(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?"), &[Arg::Text(&ids)])
        .await?
    {
        Some(row) => Ok(codec::job(&row)?),
        None => Err(StoreError::not_found("job", id).into()),
    }
}

pub(crate) async fn attempts(ex: Ex<'_>, id: JobId) -> Res<Vec<JobAttempt>> {
    let ids = id.to_string();
    let rows = ex
        .fetch_all(
            &format!(
                "SELECT {ATTEMPT_COLS} FROM job_attempts WHERE job_id = ? ORDER BY started_at, seq"
            ),
            &[Arg::Text(&ids)],
        )
        .await?;
    Ok(all(rows, codec::attempt)?)
}

pub(crate) async fn jobs_before(
    ex: Ex<'_>,
    query: &channel_core::reads::JobQuery,
    before: Option<&Position>,
    n: usize,
) -> Res<Vec<Job>> {
    let acc = query.account.map(|a| a.to_string());
    let mut q = Sql::new(format!("SELECT {JOB_COLS} FROM jobs WHERE 1 = 1"));
    if let Some(s) = query.state {
        // A fixed name, not input: the planner can use the state's partial index.
        q.push(&format!(" AND state = '{}'", s.as_str()));
    }
    if let Some(a) = &acc {
        q.push(" AND account_id = ").bind(a.as_str());
    }
    if let Some(k) = &query.kind {
        q.push(" AND kind = ").bind(k.as_str());
    }
    if let Some(t) = query.created_since {
        q.push(" AND created_at >= ").bind(t.0);
    }
    if let Some(t) = query.created_until {
        q.push(" AND created_at < ").bind(t.0);
    }
    q.keyset_page("created_at", before, limit(n));
    Ok(all(ex.fetch_all(&q.text, &q.args).await?, codec::job)?)
}

pub(crate) async fn in_state(ex: Ex<'_>, state: JobState, n: usize) -> Res<Vec<Job>> {
    let rows = ex
        .fetch_all(
            // The state is written into the SQL (a fixed name, not input), so that the planner
            // can use the partial index of the state.
            &format!(
                "SELECT {JOB_COLS} FROM jobs WHERE state = '{}' ORDER BY created_at, id LIMIT ?",
                state.as_str()
            ),
            &[Arg::Int(limit(n))],
        )
        .await?;
    Ok(all(rows, codec::job)?)
}

pub(crate) async fn next_run_at(ex: Ex<'_>, kinds: &[JobKind]) -> Res<Option<Timestamp>> {
    if kinds.is_empty() {
        return Ok(None);
    }
    let mut q = Sql::new(
        "SELECT MIN(run_at) AS next FROM jobs WHERE state IN ('available', 'retryable') AND kind IN ",
    );
    kinds_list(&mut q, kinds);
    let row = ex.fetch_optional(&q.text, &q.args).await?;
    Ok(match row {
        Some(r) => r.opt_int("next")?.map(Timestamp),
        None => None,
    })
}

/// Due jobs per kind, with the oldest `run_at` (see `QueueStore::queue_depth`).
pub(crate) async fn queue_depth(ex: Ex<'_>, now: Timestamp) -> Res<Vec<channel_core::QueueDepth>> {
    let rows = ex
        .fetch_all(
            "SELECT kind, COUNT(*) AS due, MIN(run_at) AS oldest FROM jobs \
             WHERE state IN ('available', 'retryable') AND run_at <= ? GROUP BY kind ORDER BY kind",
            &[Arg::Int(now.0)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(channel_core::QueueDepth {
                kind: r.text("kind")?.parse().map_err(|_| {
                    StoreError::Corrupt(format!(
                        "unknown job kind `{}`",
                        r.text("kind").unwrap_or_default()
                    ))
                })?,
                due: u64::try_from(r.int("due")?).unwrap_or(0),
                oldest_run_at: Timestamp(r.int("oldest")?),
            })
        })
        .collect()
}

/// One completion of a group ([`crate::group_commit`]).
pub(crate) struct Completion {
    pub(crate) lease: JobLease,
    pub(crate) outcome: Option<MessageOutcome>,
    pub(crate) now: Timestamp,
}

impl Completion {
    /// What completing the job writes.
    pub(crate) fn finish(&self) -> Finish<'_> {
        Finish {
            state: JobState::Completed,
            outcome: channel_core::AttemptOutcome::Completed,
            error: None,
            run_at: None,
            refund: false,
            keep_last_error: true,
            message: self.outcome.as_ref(),
        }
    }
}

/// Completes several claimed jobs in one transaction: every job's fenced update, attempt row
/// and message outcome (SQLite: their statements and the `COMMIT` in one call; PostgreSQL:
/// one set-based statement, the caller commits). Returns, per completion and in order,
/// whether its fenced update went through (`false`: the lease was stale, nothing of it was
/// written). An error means nothing was committed.
pub(crate) async fn complete_group(tx: &mut Tx, group: &[&Completion]) -> Res<Vec<bool>> {
    let ids: Vec<String> = group.iter().map(|c| c.lease.job.id.to_string()).collect();
    let errors: Vec<String> = group.iter().map(|c| outcome_error(c.outcome.as_ref())).collect();
    let finishes: Vec<Finish<'_>> = group.iter().map(|c| c.finish()).collect();
    let events: Vec<Vec<feed::EventRow>> = group
        .iter()
        .zip(&finishes)
        .map(|(c, f)| attempt_events(&c.lease, f, c.now))
        .collect::<Res<_>>()?;
    if !tx.is_pg() {
        let mut stmts = Vec::with_capacity(group.len() * 4);
        for ((((c, id), f), error), events) in
            group.iter().zip(&ids).zip(&finishes).zip(&errors).zip(&events)
        {
            let mut job = Sql::new(String::new());
            finish_job_sql(&mut job, id, &c.lease, f, c.now);
            job.push(" RETURNING id");
            let mut attempt = Sql::new(String::new());
            finish_attempt_sql(&mut attempt, id, false, &c.lease, f, c.now);
            attempt.push(" AND EXISTS (SELECT 1 FROM jobs WHERE ");
            finished_job_cond(&mut attempt, id, f, c.now);
            attempt.push(")");
            stmts.push(job);
            stmts.push(attempt);
            if let Some(outcome) = f.message {
                let mut msg = Sql::new(String::new());
                outcome_sql(&mut msg, outcome, error, c.now);
                msg.push(" WHERE id = (SELECT message_id FROM jobs WHERE ");
                finished_job_cond(&mut msg, id, f, c.now);
                msg.push(")");
                outcome_where_tail(&mut msg, outcome);
                stmts.push(msg);
            }
            if !events.is_empty() {
                let mut ev = Sql::new(String::new());
                feed::push_insert_where(&mut ev, events, false);
                ev.push("EXISTS (SELECT 1 FROM jobs WHERE ");
                finished_job_cond(&mut ev, id, f, c.now);
                ev.push(")");
                stmts.push(ev);
            }
        }
        let rows = tx.run_and_commit(&stmts).await?;
        let mut done = std::collections::HashSet::with_capacity(rows.len());
        for row in rows {
            done.insert(row.text("id")?);
        }
        return Ok(ids.iter().map(|id| done.contains(id)).collect());
    }
    // PostgreSQL: the whole group in one statement, the completions as rows of a VALUES
    // list; the same fenced updates as `finish_pg`, set-based.
    let mut q = Sql::new(
        "WITH input (id, attempt, worker, now, kind, provider_id, sent_at, error) AS (VALUES ",
    );
    for (i, ((c, id), error)) in group.iter().zip(&ids).zip(&errors).enumerate() {
        if i > 0 {
            q.push(", ");
        }
        let (kind, provider_id, sent_at) = match &c.outcome {
            Some(MessageOutcome::Sent { provider_id, at }) => {
                ("sent", Some(provider_id.as_str()), Some(at.0))
            }
            Some(MessageOutcome::SentUnlinked { at, .. }) => ("sent", None, Some(at.0)),
            Some(MessageOutcome::Failed { .. }) => ("failed", None, None),
            None => ("none", None, None),
        };
        q.push("(")
            .bind(id.as_str())
            .push("::text, ")
            .bind(i64::from(c.lease.attempt))
            .push("::bigint, ")
            .bind(c.lease.worker.as_str())
            .push("::text, ")
            .bind(c.now.0)
            .push("::bigint, ")
            .bind(kind)
            .push("::text, ")
            .bind(provider_id)
            .push("::text, ")
            .bind(sent_at)
            .push("::bigint, ")
            .bind(error.as_str())
            .push("::text)");
    }
    q.push(
        "), done AS (UPDATE jobs AS j SET state = 'completed', leased_by = NULL, \
         lease_expires_at = NULL, updated_at = i.now FROM input AS i \
         WHERE j.id = i.id AND j.attempt = i.attempt AND j.state = 'running' \
         AND j.leased_by = i.worker RETURNING j.id, j.message_id), \
         audit AS (UPDATE job_attempts AS a SET outcome = 'completed', finished_at = i.now, \
         error = NULL FROM done AS d JOIN input AS i ON i.id = d.id \
         WHERE a.job_id = d.id AND a.attempt = i.attempt AND a.worker = i.worker \
         AND a.outcome = 'running'), \
         sent AS (UPDATE messages AS m SET status = 'sent', \
         provider_id = COALESCE(m.provider_id, i.provider_id), sent_at = i.sent_at, \
         error = NULLIF(i.error, ''), updated_at = i.now \
         FROM done AS d JOIN input AS i ON i.id = d.id \
         WHERE m.id = d.message_id AND i.kind = 'sent'), \
         failed AS (UPDATE messages AS m SET status = 'failed', error = i.error, \
         updated_at = i.now FROM done AS d JOIN input AS i ON i.id = d.id \
         WHERE m.id = d.message_id AND i.kind = 'failed' AND m.status = 'pending')",
    );
    // The feed's events of the completions that went through, in order.
    let tagged: Vec<(&str, i64, &feed::EventRow)> = ids
        .iter()
        .zip(&events)
        .flat_map(|(id, rows)| rows.iter().map(move |r| (id.as_str(), r)))
        .enumerate()
        .map(|(n, (id, r))| (id, n as i64, r))
        .collect();
    if !tagged.is_empty() {
        q.push(
            ", ev AS (INSERT INTO channel_events (at, payload) \
             SELECT e.column3, e.column4 FROM (VALUES ",
        );
        for (n, (id, ord, row)) in tagged.iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            q.push("(").bind(*id).push("::text, ").bind(*ord).push("::bigint, ");
            feed::push_row(&mut q, row, true);
            q.push(")");
        }
        q.push(") AS e JOIN done AS d ON d.id = e.column1 ORDER BY e.column2)");
    }
    q.push(" SELECT id FROM done");
    let rows = tx.fetch_all(&q.text, &q.args).await?;
    let mut done = std::collections::HashSet::with_capacity(rows.len());
    for row in rows {
        done.insert(row.text("id")?);
    }
    Ok(ids.iter().map(|id| done.contains(id)).collect())
}

/// Why a fenced update of a job did not go through: `LeaseLost` when the job exists (it
/// moved on), else `NotFound`.
pub(crate) async fn stale_completion(ex: Ex<'_>, lease: &JobLease) -> crate::error::Fail {
    let id = lease.job.id.to_string();
    match ex.fetch_optional("SELECT id FROM jobs WHERE id = ?", &[Arg::Text(&id)]).await {
        Ok(Some(_)) => StoreError::LeaseLost { what: format!("job {id}") }.into(),
        Ok(None) => StoreError::not_found("job", id).into(),
        Err(e) => e.into(),
    }
}
