//! Rows to model values and back. Nothing read from the database is unwrapped: an unknown
//! enum value, a malformed id or JSON becomes [`StoreError::Corrupt`].

use std::str::FromStr;

use channel_core::{
    Account, AccountId, AccountSettings, Attachment, AttemptOutcome, ChannelKind, ConnectionState,
    ContactId, Conversation, ConversationId, ConversationStatus, Defect, Direction, Identity,
    IdentityId, Job, JobAttempt, JobId, JobKind, JobState, Lease, Message, MessageId,
    MessageStatus, Origin, StoreError, Timestamp,
};

use crate::db::Row;
use crate::error::corrupt;

pub(crate) const ACCOUNT_COLS: &str =
    "id, kind, display_name, config, enabled, connection, created_at, updated_at, settings";

pub(crate) const IDENTITY_COLS: &str = "id, account_id, address, display_name, username, \
     contact_id, merged_into, created_at, updated_at";

pub(crate) const CONVERSATION_COLS: &str = "id, account_id, thread_key, primary_identity, \
     contact_id, status, opened_at, last_activity_at, expires_at, closed_at, version";

/// The columns a conversation is read from: [`CONVERSATION_COLS`] (what an insert writes) and
/// its assignee.
pub(crate) const CONVERSATION_READ_COLS: &str = "id, account_id, thread_key, primary_identity, \
     contact_id, status, opened_at, last_activity_at, expires_at, closed_at, version, assignee";

pub(crate) const MESSAGE_COLS: &str = "id, account_id, conversation_id, identity_id, direction, \
     origin, provider_id, client_key, status, text, html, reply_to, attachments, parse_error, \
     error, sent_at, created_at, updated_at, defects, subject";

/// The columns a stored message is read from: [`MESSAGE_COLS`] (what an insert writes), the
/// time of its latest edit and the time it was deleted.
pub(crate) const MESSAGE_READ_COLS: &str = "id, account_id, conversation_id, identity_id, \
     direction, origin, provider_id, client_key, status, text, html, reply_to, attachments, \
     parse_error, error, sent_at, created_at, updated_at, defects, subject, edited_at, deleted_at";

pub(crate) const JOB_COLS: &str = "id, kind, account_id, message_id, payload, unique_key, state, \
     attempt, max_attempts, run_at, leased_by, lease_expires_at, last_error, created_at, \
     updated_at";

pub(crate) const ATTEMPT_COLS: &str =
    "job_id, attempt, worker, started_at, finished_at, outcome, error";

pub(crate) const LEASE_COLS: &str = "name, holder, term, expires_at";

fn id<T: FromStr>(what: &str, s: &str) -> Result<T, StoreError> {
    T::from_str(s).map_err(|_| corrupt(format!("malformed {what} id `{s}`")))
}

pub(crate) fn account_id(row: &Row, col: &str) -> Result<AccountId, StoreError> {
    id("account", &row.text(col)?)
}

pub(crate) fn identity_id(row: &Row, col: &str) -> Result<IdentityId, StoreError> {
    id("identity", &row.text(col)?)
}

pub(crate) fn conversation_id(row: &Row, col: &str) -> Result<ConversationId, StoreError> {
    id("conversation", &row.text(col)?)
}

pub(crate) fn message_id(row: &Row, col: &str) -> Result<MessageId, StoreError> {
    id("message", &row.text(col)?)
}

pub(crate) fn job_id(row: &Row, col: &str) -> Result<JobId, StoreError> {
    id("job", &row.text(col)?)
}

fn opt_id<T: FromStr>(what: &str, v: Option<String>) -> Result<Option<T>, StoreError> {
    v.map(|s| id(what, &s)).transpose()
}

fn ts(row: &Row, col: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp(row.int(col)?))
}

fn opt_ts(row: &Row, col: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(row.opt_int(col)?.map(Timestamp))
}

fn i32_col(row: &Row, col: &str) -> Result<i32, StoreError> {
    let v = row.int(col)?;
    i32::try_from(v).map_err(|_| corrupt(format!("column `{col}`: {v} is out of range")))
}

fn json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(format!("malformed {what}: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(
    what: &'static str,
    v: &T,
) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::InvalidInput {
        field: what,
        reason: format!("cannot be serialized: {e}"),
    })
}

pub(crate) fn account(row: &Row) -> Result<Account, StoreError> {
    Ok(Account {
        id: account_id(row, "id")?,
        kind: ChannelKind::stored(row.text("kind")?),
        display_name: row.text("display_name")?,
        config: json::<serde_json::Value>("account config", &row.text("config")?)?,
        enabled: row.boolean("enabled")?,
        connection: json::<ConnectionState>("connection state", &row.text("connection")?)?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        settings: json::<AccountSettings>("account settings", &row.text("settings")?)?,
    })
}

pub(crate) fn identity(row: &Row) -> Result<Identity, StoreError> {
    Ok(Identity {
        id: identity_id(row, "id")?,
        account_id: account_id(row, "account_id")?,
        address: row.text("address")?,
        display_name: row.opt_text("display_name")?,
        username: row.opt_text("username")?,
        contact_id: row.opt_text("contact_id")?.map(ContactId),
        merged_into: opt_id("identity", row.opt_text("merged_into")?)?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

pub(crate) fn conversation(row: &Row) -> Result<Conversation, StoreError> {
    Ok(Conversation {
        id: conversation_id(row, "id")?,
        account_id: account_id(row, "account_id")?,
        thread_key: row.text("thread_key")?,
        primary_identity: identity_id(row, "primary_identity")?,
        contact_id: row.opt_text("contact_id")?.map(ContactId),
        status: ConversationStatus::from_str(&row.text("status")?)?,
        opened_at: ts(row, "opened_at")?,
        last_activity_at: ts(row, "last_activity_at")?,
        expires_at: opt_ts(row, "expires_at")?,
        closed_at: opt_ts(row, "closed_at")?,
        version: row.int("version")?,
        assignee: row.opt_text("assignee")?,
    })
}

pub(crate) fn message(row: &Row) -> Result<Message, StoreError> {
    Ok(Message {
        id: message_id(row, "id")?,
        account_id: account_id(row, "account_id")?,
        conversation_id: conversation_id(row, "conversation_id")?,
        identity_id: identity_id(row, "identity_id")?,
        direction: Direction::from_str(&row.text("direction")?)?,
        origin: Origin::from_str(&row.text("origin")?)?,
        provider_id: row.opt_text("provider_id")?,
        client_key: row.opt_text("client_key")?,
        status: MessageStatus::from_str(&row.text("status")?)?,
        text: row.opt_text("text")?,
        html: row.opt_text("html")?,
        subject: row.opt_text("subject")?,
        reply_to: row.opt_text("reply_to")?,
        attachments: json::<Vec<Attachment>>("attachments", &row.text("attachments")?)?,
        parse_error: row.opt_text("parse_error")?,
        error: row.opt_text("error")?,
        sent_at: ts(row, "sent_at")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        edited_at: opt_ts(row, "edited_at")?,
        deleted_at: opt_ts(row, "deleted_at")?,
        defects: match row.opt_text("defects")? {
            Some(j) => json::<Vec<Defect>>("defects", &j)?,
            None => Vec::new(),
        },
    })
}

pub(crate) fn job(row: &Row) -> Result<Job, StoreError> {
    Ok(Job {
        id: job_id(row, "id")?,
        kind: JobKind::from_str(&row.text("kind")?)?,
        account_id: opt_id("account", row.opt_text("account_id")?)?,
        message_id: opt_id("message", row.opt_text("message_id")?)?,
        payload: json::<serde_json::Value>("job payload", &row.text("payload")?)?,
        unique_key: row.opt_text("unique_key")?,
        state: JobState::from_str(&row.text("state")?)?,
        attempt: i32_col(row, "attempt")?,
        max_attempts: i32_col(row, "max_attempts")?,
        run_at: ts(row, "run_at")?,
        leased_by: row.opt_text("leased_by")?,
        lease_expires_at: opt_ts(row, "lease_expires_at")?,
        last_error: row.opt_text("last_error")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

pub(crate) fn attempt(row: &Row) -> Result<JobAttempt, StoreError> {
    Ok(JobAttempt {
        job_id: job_id(row, "job_id")?,
        attempt: i32_col(row, "attempt")?,
        worker: row.text("worker")?,
        started_at: ts(row, "started_at")?,
        finished_at: opt_ts(row, "finished_at")?,
        outcome: AttemptOutcome::from_str(&row.text("outcome")?)?,
        error: row.opt_text("error")?,
    })
}

pub(crate) fn lease(row: &Row) -> Result<Lease, StoreError> {
    Ok(Lease {
        name: row.text("name")?,
        holder: row.text("holder")?,
        term: row.int("term")?,
        expires_at: ts(row, "expires_at")?,
    })
}

/// Decodes every row with `f`.
pub(crate) fn all<T>(
    rows: Vec<Row>,
    f: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

/// A `usize` limit as an SQL `LIMIT`.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
