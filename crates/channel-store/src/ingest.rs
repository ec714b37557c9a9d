//! Ingest: idempotent storage of inbound messages, one by one or a batch in one transaction.
//!
//! A batch is handled as a unit of work: everything the rules need (existing messages by
//! provider id, pending sends by client key, identities, the conversations of the threads) is
//! read with a few set-based queries, the rules of [`IngestRequest`] run in memory, in
//! order, and the changes are written back with multi-row statements. Inside one transaction
//! this gives the same result as ingesting the messages one by one.
//!
//! On SQLite the transaction holds the write lock from its start (`BEGIN IMMEDIATE`), so what
//! was read stays true. On PostgreSQL the conversations of the threads are locked
//! (`FOR UPDATE`); a concurrent transaction that stored the same message, identity or
//! conversation first makes an insert fail on a unique constraint, and the whole transaction
//! runs again and finds the winner's rows.

use std::collections::{HashMap, HashSet};

use channel_core::{
    AccountId, Conversation, ConversationId, ConversationStatus, Direction, Identity, IdentityId,
    IngestDisposition, IngestOutcome, IngestRequest, MessageId, MessageStatus, OnClosed,
    StoreError,
};

use channel_core::feed::derive;

use crate::codec::{self, CONVERSATION_COLS, IDENTITY_COLS};
use crate::db::{Sql, Tx};
use crate::error::{Fail, Res, invalid};
use crate::feed;
use crate::limits::{
    self, MAX_HTML_BYTES, MAX_KEY_BYTES, MAX_NAME_BYTES, MAX_PARSE_ERROR_BYTES, MAX_TEXT_BYTES,
};
use crate::ops::{self, MAX_MERGE_DEPTH, MsgRow};

/// Values per `IN (...)` list.
const IN_CHUNK: usize = 512;
/// Rows per multi-row statement (20 values per message row: 10,000, well below SQLite's
/// 32,766 and PostgreSQL's 65,535 parameters).
const INSERT_CHUNK: usize = 500;

fn validate(req: &IngestRequest) -> Res<()> {
    let m = &req.message;
    limits::key("provider_id", &m.provider_id)?;
    limits::key("thread_key", &m.thread_key)?;
    limits::key("remote.address", &m.remote.address)?;
    limits::opt_text("remote.display_name", m.remote.display_name.as_deref(), MAX_NAME_BYTES)?;
    limits::opt_text("remote.username", m.remote.username.as_deref(), MAX_NAME_BYTES)?;
    if let Some(k) = &m.client_key {
        limits::key("client_key", k)?;
    }
    limits::opt_text("text", m.text.as_deref(), MAX_TEXT_BYTES)?;
    limits::opt_text("html", m.html.as_deref(), MAX_HTML_BYTES)?;
    limits::opt_text("reply_to", m.reply_to.as_deref(), MAX_KEY_BYTES)?;
    limits::count("references", m.references.len(), limits::MAX_REFERENCES)?;
    for r in &m.references {
        limits::text("references", r, MAX_KEY_BYTES)?;
    }
    limits::opt_text("parse_error", m.parse_error.as_deref(), MAX_PARSE_ERROR_BYTES)?;
    ops::check_defects(&m.defects)?;
    limits::text("origin", &m.origin.to_stored(), MAX_NAME_BYTES)?;
    if let Some(c) = &m.cursor {
        limits::key("cursor.key", &c.key)?;
        limits::size("cursor.value", c.value.len(), limits::MAX_STATE_VALUE_BYTES)?;
    }
    Ok(())
}

/// What is known of a stored message.
#[derive(Clone, Copy)]
struct MsgRef {
    id: MessageId,
    conversation: ConversationId,
    identity: IdentityId,
}

struct Conv {
    conv: Conversation,
    /// The status as read (a new one: as created); the row's status is written back only
    /// when it changed.
    read_status: ConversationStatus,
    /// Not in the database yet.
    new: bool,
    /// Changed since it was read.
    dirty: bool,
}

type Key = (AccountId, String);

#[derive(Default)]
struct Work {
    /// Messages by (account, provider id): read, or stored by this batch.
    by_provider: HashMap<Key, MsgRef>,
    /// Messages by (account, client key), the first stored one, with whether it has a
    /// provider id yet.
    by_client_key: HashMap<Key, (MsgRef, bool)>,
    /// Existing identities whose names changed.
    renamed: Vec<IdentityId>,
    /// Identities by id.
    identities: HashMap<IdentityId, Identity>,
    /// Identity ids by (account, address), before following merges.
    by_address: HashMap<Key, IdentityId>,
    conversations: HashMap<ConversationId, Conv>,
    /// The active conversation of each (account, thread key).
    active: HashMap<Key, ConversationId>,
    /// The latest opened conversation of each (account, thread key).
    latest: HashMap<Key, ConversationId>,
    new_identities: Vec<IdentityId>,
    new_conversations: Vec<ConversationId>,
    /// Indexes into the request slice of messages to insert, with their conversation and
    /// identity.
    new_messages: Vec<(usize, ConversationId, IdentityId)>,
    /// Pending sends matched by an echo: (message, index of the request).
    echoes: Vec<(MessageId, usize)>,
    /// Latest cursor per (account, key), in first-write order.
    cursors: Vec<(AccountId, usize)>,
    cursor_index: HashMap<Key, usize>,
}

/// Runs a batch in the open transaction.
pub(crate) async fn ingest_batch(
    tx: &mut Tx,
    reqs: &[IngestRequest],
    with_events: bool,
) -> Res<Vec<IngestOutcome>> {
    if reqs.len() > limits::MAX_BATCH {
        return Err(invalid(
            "batch",
            format!("{} messages is more than the limit of {}", reqs.len(), limits::MAX_BATCH),
        ));
    }
    for r in reqs {
        validate(r)?;
    }
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    let mut w = Work::default();
    prefetch(tx, reqs, &mut w).await?;
    let mut out = Vec::with_capacity(reqs.len());
    for (i, req) in reqs.iter().enumerate() {
        out.push(apply(&mut w, i, req)?);
    }
    flush(tx, reqs, &w, if with_events { &out } else { &[] }).await?;
    Ok(out)
}

/// Groups `(account, value)` pairs by account, without duplicates.
fn group<'a>(pairs: impl Iterator<Item = (AccountId, &'a str)>) -> Vec<(AccountId, Vec<&'a str>)> {
    let mut index: HashMap<AccountId, usize> = HashMap::new();
    let mut seen: HashSet<(AccountId, &'a str)> = HashSet::new();
    let mut out: Vec<(AccountId, Vec<&'a str>)> = Vec::new();
    for (a, v) in pairs {
        if !seen.insert((a, v)) {
            continue;
        }
        let i = *index.entry(a).or_insert_with(|| {
            out.push((a, Vec::new()));
            out.len() - 1
        });
        out[i].1.push(v);
    }
    out
}

/// Wraps `inner` (a `SELECT` of `cols`) so that the whole result comes back as one JSON array
/// of arrays in one row: a batch reads hundreds of rows, and one value is far cheaper to hand
/// over than hundreds of rows.
fn packed<'a>(pg: bool, cols: &str, inner: Sql<'a>) -> Sql<'a> {
    let text = if pg {
        format!(
            "SELECT COALESCE(json_agg(json_build_array({cols})), '[]')::text AS j FROM ({}) AS s",
            inner.text
        )
    } else {
        format!("SELECT json_group_array(json_array({cols})) AS j FROM ({})", inner.text)
    };
    Sql { text, args: inner.args }
}

/// Runs a [`packed`] query and decodes its rows.
async fn fetch_packed<T: serde::de::DeserializeOwned>(tx: &mut Tx, q: &Sql<'_>) -> Res<Vec<T>> {
    let Some(row) = tx.fetch_optional(&q.text, &q.args).await? else {
        return Ok(Vec::new());
    };
    let json = row.opt_text("j")?.unwrap_or_else(|| "[]".to_owned());
    serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("unexpected row in the store: {e}")).into())
}

fn parse_id<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt(format!("malformed {what} id `{s}`")))
}

type IdentityRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn identity_from(r: IdentityRow) -> Result<Identity, StoreError> {
    Ok(Identity {
        id: parse_id("identity", &r.0)?,
        account_id: parse_id("account", &r.1)?,
        address: r.2,
        display_name: r.3,
        username: r.4,
        contact_id: r.5.map(channel_core::ContactId),
        merged_into: r.6.map(|m| parse_id("identity", &m)).transpose()?,
        created_at: channel_core::Timestamp(r.7),
        updated_at: channel_core::Timestamp(r.8),
    })
}

type ConversationRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
);

fn conversation_from(r: ConversationRow) -> Result<Conversation, StoreError> {
    use channel_core::Timestamp;
    Ok(Conversation {
        id: parse_id("conversation", &r.0)?,
        account_id: parse_id("account", &r.1)?,
        thread_key: r.2,
        primary_identity: parse_id("identity", &r.3)?,
        contact_id: r.4.map(channel_core::ContactId),
        status: r.5.parse::<ConversationStatus>()?,
        opened_at: Timestamp(r.6),
        last_activity_at: Timestamp(r.7),
        expires_at: r.8.map(Timestamp),
        closed_at: r.9.map(Timestamp),
        version: r.10,
        // Not part of the packed read; ingest never writes it back.
        assignee: None,
    })
}

async fn prefetch(tx: &mut Tx, reqs: &[IngestRequest], w: &mut Work) -> Res<()> {
    let pg = tx.is_pg();

    // 1. The accounts exist.
    let account_ids: Vec<String> = {
        let mut seen = HashSet::new();
        reqs.iter()
            .filter(|r| seen.insert(r.account_id))
            .map(|r| r.account_id.to_string())
            .collect()
    };
    let mut found: HashSet<String> = HashSet::new();
    for chunk in account_ids.chunks(IN_CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let mut q = Sql::new("SELECT id FROM accounts WHERE id IN ");
        q.in_list(&refs);
        for row in tx.fetch_all(&q.text, &q.args).await? {
            found.insert(row.text("id")?);
        }
    }
    if let Some(missing) = account_ids.iter().find(|a| !found.contains(*a)) {
        return Err(StoreError::not_found("account", missing).into());
    }

    // 2. Messages by provider id: the messages themselves (duplicates) and those they refer
    //    to (threading).
    let references: HashSet<(AccountId, &str)> = reqs
        .iter()
        .flat_map(|r| {
            r.message
                .reply_to
                .iter()
                .chain(r.message.references.iter())
                .map(move |p| (r.account_id, p.as_str()))
        })
        .collect();
    let provider_groups = group(reqs.iter().flat_map(|r| {
        std::iter::once((r.account_id, r.message.provider_id.as_str())).chain(
            r.message
                .reply_to
                .iter()
                .chain(r.message.references.iter())
                .map(move |p| (r.account_id, p.as_str())),
        )
    }));
    let mut referenced_conversations: Vec<String> = Vec::new();
    for (account, values) in &provider_groups {
        let acc = account.to_string();
        for chunk in values.chunks(IN_CHUNK) {
            let mut inner = Sql::new(
                "SELECT id, conversation_id, identity_id, provider_id FROM messages WHERE account_id = ",
            );
            inner.bind(acc.as_str()).push(" AND provider_id IN ").in_list(chunk);
            let q = packed(pg, "id, conversation_id, identity_id, provider_id", inner);
            let rows: Vec<(String, String, String, String)> = fetch_packed(tx, &q).await?;
            for (id, conversation, identity, provider_id) in rows {
                let m = MsgRef {
                    id: parse_id("message", &id)?,
                    conversation: parse_id("conversation", &conversation)?,
                    identity: parse_id("identity", &identity)?,
                };
                if references.contains(&(*account, provider_id.as_str())) {
                    referenced_conversations.push(m.conversation.to_string());
                }
                w.by_provider.insert((*account, provider_id), m);
            }
        }
    }

    // 3. Messages by client key (echoes of our own sends).
    let key_groups = group(
        reqs.iter()
            .filter(|r| r.message.direction == Direction::Outbound)
            .filter_map(|r| r.message.client_key.as_deref().map(|k| (r.account_id, k))),
    );
    for (account, values) in &key_groups {
        let acc = account.to_string();
        for chunk in values.chunks(IN_CHUNK) {
            let mut q = Sql::new(
                "SELECT id, conversation_id, identity_id, client_key, provider_id FROM messages \
                 WHERE account_id = ",
            );
            q.bind(acc.as_str())
                .push(" AND client_key IN ")
                .in_list(chunk)
                .push(" ORDER BY created_at, id");
            for row in tx.fetch_all(&q.text, &q.args).await? {
                let m = MsgRef {
                    id: codec::message_id(&row, "id")?,
                    conversation: codec::conversation_id(&row, "conversation_id")?,
                    identity: codec::identity_id(&row, "identity_id")?,
                };
                let has_provider_id = row.opt_text("provider_id")?.is_some();
                w.by_client_key
                    .entry((*account, row.text("client_key")?))
                    .or_insert((m, has_provider_id));
            }
        }
    }

    // 4. Identities by address, following merges.
    let address_groups =
        group(reqs.iter().map(|r| (r.account_id, r.message.remote.address.as_str())));
    for (account, values) in &address_groups {
        let acc = account.to_string();
        for chunk in values.chunks(IN_CHUNK) {
            let mut inner =
                Sql::new(format!("SELECT {IDENTITY_COLS} FROM identities WHERE account_id = "));
            inner.bind(acc.as_str()).push(" AND address IN ").in_list(chunk);
            let q = packed(pg, IDENTITY_COLS, inner);
            let rows: Vec<IdentityRow> = fetch_packed(tx, &q).await?;
            for r in rows {
                let identity = identity_from(r)?;
                w.by_address.insert((identity.account_id, identity.address.clone()), identity.id);
                w.identities.insert(identity.id, identity);
            }
        }
    }
    for _ in 0..MAX_MERGE_DEPTH {
        let missing: Vec<String> = w
            .identities
            .values()
            .filter_map(|i| i.merged_into)
            .filter(|t| !w.identities.contains_key(t))
            .map(|t| t.to_string())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            break;
        }
        for chunk in missing.chunks(IN_CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let mut q = Sql::new(format!("SELECT {IDENTITY_COLS} FROM identities WHERE id IN "));
            q.in_list(&refs);
            let rows = tx.fetch_all(&q.text, &q.args).await?;
            if rows.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "identities are merged into missing identities: {}",
                    refs.join(", ")
                ))
                .into());
            }
            for row in rows {
                let identity = codec::identity(&row)?;
                w.identities.insert(identity.id, identity);
            }
        }
    }

    // 5. The conversations of referenced messages, for their thread keys.
    let mut threads: Vec<(AccountId, &str)> =
        reqs.iter().map(|r| (r.account_id, r.message.thread_key.as_str())).collect();
    let mut extra_threads: Vec<(AccountId, String)> = Vec::new();
    referenced_conversations.sort();
    referenced_conversations.dedup();
    for chunk in referenced_conversations.chunks(IN_CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let mut q = Sql::new(format!(
            "SELECT {} FROM conversations WHERE id IN ",
            codec::CONVERSATION_READ_COLS
        ));
        q.in_list(&refs);
        for row in tx.fetch_all(&q.text, &q.args).await? {
            let c = codec::conversation(&row)?;
            extra_threads.push((c.account_id, c.thread_key.clone()));
            w.conversations
                .insert(c.id, Conv { read_status: c.status, conv: c, new: false, dirty: false });
        }
    }
    threads.extend(extra_threads.iter().map(|(a, t)| (*a, t.as_str())));

    // 6. The active and the latest conversation of every thread, locked on PostgreSQL.
    for (account, values) in group(threads.into_iter()) {
        let acc = account.to_string();
        for chunk in values.chunks(IN_CHUNK) {
            let mut inner = Sql::new(format!(
                "SELECT {CONVERSATION_COLS} FROM conversations c WHERE c.account_id = "
            ));
            inner.bind(acc.as_str()).push(" AND c.thread_key IN ").in_list(chunk).push(
                " AND (c.status IN ('open', 'idle') OR c.id = (SELECT c2.id FROM conversations c2 \
                     WHERE c2.account_id = c.account_id AND c2.thread_key = c.thread_key \
                     ORDER BY c2.opened_at DESC, c2.id DESC LIMIT 1))",
            );
            if pg {
                inner.push(" FOR UPDATE");
            }
            let q = packed(pg, CONVERSATION_COLS, inner);
            let packed_rows: Vec<ConversationRow> = fetch_packed(tx, &q).await?;
            let rows =
                packed_rows.into_iter().map(conversation_from).collect::<Result<Vec<_>, _>>()?;
            for c in rows {
                let key = (c.account_id, c.thread_key.clone());
                if c.status.is_active() {
                    w.active.insert(key.clone(), c.id);
                }
                let newer = match w.latest.get(&key).and_then(|id| w.conversations.get(id)) {
                    Some(prev) => (c.opened_at, c.id) > (prev.conv.opened_at, prev.conv.id),
                    None => true,
                };
                if newer {
                    w.latest.insert(key, c.id);
                }
                // Rows read again here are the locked, current version.
                w.conversations.insert(
                    c.id,
                    Conv { read_status: c.status, conv: c, new: false, dirty: false },
                );
            }
        }
    }
    Ok(())
}

/// The identity for `(account, address)` after following merges.
fn resolve_identity(w: &Work, account: AccountId, address: &str) -> Res<Option<IdentityId>> {
    let Some(mut id) = w.by_address.get(&(account, address.to_owned())).copied() else {
        return Ok(None);
    };
    for _ in 0..MAX_MERGE_DEPTH {
        match w.identities.get(&id).and_then(|i| i.merged_into) {
            Some(next) => id = next,
            None => return Ok(Some(id)),
        }
    }
    Err(StoreError::Corrupt(format!("identity merges of `{address}` form a cycle")).into())
}

fn record_cursor(w: &mut Work, i: usize, req: &IngestRequest) {
    if let Some(c) = &req.message.cursor {
        let key = (req.account_id, c.key.clone());
        match w.cursor_index.get(&key) {
            Some(&slot) => w.cursors[slot] = (req.account_id, i),
            None => {
                w.cursor_index.insert(key, w.cursors.len());
                w.cursors.push((req.account_id, i));
            }
        }
    }
}

/// The rules of one message, on the unit of work.
fn apply(w: &mut Work, i: usize, req: &IngestRequest) -> Res<IngestOutcome> {
    let m = &req.message;
    let account = req.account_id;
    let now = req.now;

    // A duplicate: nothing changes but the cursor.
    if let Some(existing) = w.by_provider.get(&(account, m.provider_id.clone())).copied() {
        record_cursor(w, i, req);
        return Ok(IngestOutcome {
            message_id: existing.id,
            conversation_id: existing.conversation,
            identity_id: existing.identity,
            disposition: IngestDisposition::Duplicate,
            conversation_opened: false,
            conversation_reactivated: false,
        });
    }

    // The echo of our own send: the pending message becomes sent; the echo of a message
    // that has its provider id already is a duplicate.
    if m.direction == Direction::Outbound
        && let Some(key) = &m.client_key
        && let Some(entry) = w.by_client_key.get_mut(&(account, key.clone()))
    {
        let (known, has_provider_id) = *entry;
        let disposition = if has_provider_id {
            IngestDisposition::Duplicate
        } else {
            entry.1 = true;
            w.echoes.push((known.id, i));
            w.by_provider.insert((account, m.provider_id.clone()), known);
            IngestDisposition::EchoMatched
        };
        record_cursor(w, i, req);
        return Ok(IngestOutcome {
            message_id: known.id,
            conversation_id: known.conversation,
            identity_id: known.identity,
            disposition,
            conversation_opened: false,
            conversation_reactivated: false,
        });
    }

    // The identity.
    let identity_id = match resolve_identity(w, account, &m.remote.address)? {
        Some(id) => {
            // Names the provider shows now replace the stored ones.
            if let Some(identity) = w.identities.get_mut(&id) {
                let mut changed = false;
                if m.remote.display_name.is_some() && identity.display_name != m.remote.display_name
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
                    if !w.new_identities.contains(&id) && !w.renamed.contains(&id) {
                        w.renamed.push(id);
                    }
                }
            }
            id
        }
        None => {
            let identity = Identity {
                id: req.new_identity_id,
                account_id: account,
                address: m.remote.address.clone(),
                display_name: m.remote.display_name.clone(),
                username: m.remote.username.clone(),
                contact_id: None,
                merged_into: None,
                created_at: now,
                updated_at: now,
            };
            if w.identities.contains_key(&identity.id) {
                return Err(invalid(
                    "new_identity_id",
                    format!("identity {} already exists with another address", identity.id),
                ));
            }
            w.by_address.insert((account, identity.address.clone()), identity.id);
            w.identities.insert(identity.id, identity);
            w.new_identities.push(req.new_identity_id);
            req.new_identity_id
        }
    };

    // The thread: a known message among reply_to and references (nearest first), else the
    // message's own thread key.
    let mut thread = m.thread_key.clone();
    for candidate in m.reply_to.iter().chain(m.references.iter().rev()) {
        if let Some(known) = w.by_provider.get(&(account, candidate.clone()))
            && let Some(c) = w.conversations.get(&known.conversation)
        {
            thread = c.conv.thread_key.clone();
            break;
        }
    }
    let key = (account, thread.clone());

    // The conversation: the active one, a reopened closed one, or a new one.
    let mut opened = false;
    let mut reactivated = false;
    let conversation_id = match w.active.get(&key).copied() {
        Some(id) => {
            let c = w
                .conversations
                .get_mut(&id)
                .ok_or_else(|| StoreError::Corrupt(format!("conversation {id} vanished")))?;
            if c.conv.status == ConversationStatus::Idle {
                c.conv.status = ConversationStatus::Open;
                reactivated = true;
            }
            id
        }
        None => {
            let reopen = match (req.policy.on_closed, w.latest.get(&key)) {
                (OnClosed::Reopen, Some(latest)) => w
                    .conversations
                    .get(latest)
                    .is_some_and(|c| c.conv.status == ConversationStatus::Closed),
                _ => false,
            };
            if reopen {
                let id = w.latest.get(&key).copied().ok_or_else(|| {
                    StoreError::Corrupt("latest conversation vanished".to_owned())
                })?;
                if let Some(c) = w.conversations.get_mut(&id) {
                    c.conv.status = ConversationStatus::Open;
                    c.conv.closed_at = None;
                }
                reactivated = true;
                w.active.insert(key.clone(), id);
                id
            } else {
                let id = req.new_conversation_id;
                if w.conversations.contains_key(&id) {
                    return Err(invalid(
                        "new_conversation_id",
                        format!("conversation {id} already exists"),
                    ));
                }
                let contact_id = w.identities.get(&identity_id).and_then(|i| i.contact_id.clone());
                let conv = Conversation {
                    id,
                    account_id: account,
                    thread_key: thread.clone(),
                    primary_identity: identity_id,
                    contact_id,
                    status: ConversationStatus::Open,
                    opened_at: now,
                    last_activity_at: now,
                    expires_at: req.policy.expire_after.map(|d| now.plus(d)),
                    closed_at: None,
                    version: 0,
                    assignee: None,
                };
                w.conversations
                    .insert(id, Conv { read_status: conv.status, conv, new: true, dirty: true });
                w.new_conversations.push(id);
                w.active.insert(key.clone(), id);
                w.latest.insert(key.clone(), id);
                opened = true;
                id
            }
        }
    };
    if let Some(c) = w.conversations.get_mut(&conversation_id) {
        c.conv.last_activity_at = c.conv.last_activity_at.max(now);
        c.conv.version += 1;
        c.dirty = true;
    }

    // The message.
    w.new_messages.push((i, conversation_id, identity_id));
    let stored =
        MsgRef { id: req.new_message_id, conversation: conversation_id, identity: identity_id };
    w.by_provider.insert((account, m.provider_id.clone()), stored);
    if let Some(key) = &m.client_key {
        w.by_client_key.entry((account, key.clone())).or_insert((stored, true));
    }
    record_cursor(w, i, req);
    Ok(IngestOutcome {
        message_id: req.new_message_id,
        conversation_id,
        identity_id,
        disposition: IngestDisposition::Stored,
        conversation_opened: opened,
        conversation_reactivated: reactivated,
    })
}

/// Writes the unit of work back and commits: on SQLite every statement and the `COMMIT` go
/// to the writer in one call.
async fn flush(tx: &mut Tx, reqs: &[IngestRequest], w: &Work, out: &[IngestOutcome]) -> Res<()> {
    // Owned strings the statements borrow.
    let identities: Vec<(&Identity, String, String)> = w
        .new_identities
        .iter()
        .filter_map(|id| w.identities.get(id))
        .map(|i| (i, i.id.to_string(), i.account_id.to_string()))
        .collect();
    let renamed: Vec<(&Identity, String)> = w
        .renamed
        .iter()
        .filter_map(|id| w.identities.get(id))
        .map(|i| (i, i.id.to_string()))
        .collect();
    let conversations: Vec<(&Conversation, [String; 3])> = w
        .new_conversations
        .iter()
        .filter_map(|id| w.conversations.get(id))
        .map(|c| {
            let ids = [
                c.conv.id.to_string(),
                c.conv.account_id.to_string(),
                c.conv.primary_identity.to_string(),
            ];
            (&c.conv, ids)
        })
        .collect();
    // Changed conversations; most only moved their activity and version, which leaves the
    // indexes on their status (the one active conversation per thread) untouched.
    let mut changed: Vec<&Conv> = w.conversations.values().filter(|c| c.dirty && !c.new).collect();
    changed.sort_by_key(|c| c.conv.id);
    let (status_changed, activity_only): (Vec<_>, Vec<_>) = changed
        .into_iter()
        .map(|c| (&c.conv, c.conv.id.to_string(), c.conv.status != c.read_status))
        .partition(|(_, _, status)| *status);
    let rows: Vec<MsgRow<'_>> = w
        .new_messages
        .iter()
        .map(|&(i, conversation, identity)| {
            let req = &reqs[i];
            let m = &req.message;
            Ok(MsgRow {
                id: req.new_message_id.to_string(),
                account: req.account_id.to_string(),
                conversation: conversation.to_string(),
                identity: identity.to_string(),
                direction: m.direction.as_str(),
                origin: m.origin.to_stored(),
                provider_id: Some(m.provider_id.as_str()),
                client_key: m.client_key.as_deref(),
                status: MessageStatus::Sent.as_str(),
                text: m.text.as_deref(),
                html: m.html.as_deref(),
                reply_to: m.reply_to.as_deref(),
                attachments: if m.attachments.is_empty() {
                    "[]".to_owned()
                } else {
                    ops::check_attachments(&m.attachments)?
                },
                parse_error: m.parse_error.as_deref(),
                sent_at: m.sent_at.0,
                now: req.now.0,
                defects: ops::check_defects(&m.defects)?,
                subject: None,
            })
        })
        .collect::<Result<_, Fail>>()?;
    let echoes: Vec<(String, &IngestRequest)> =
        w.echoes.iter().map(|&(message, i)| (message.to_string(), &reqs[i])).collect();
    let cursors: Vec<(String, &channel_core::CursorUpdate)> = w
        .cursors
        .iter()
        .filter_map(|&(account, i)| {
            reqs[i].message.cursor.as_ref().map(|c| (account.to_string(), c))
        })
        .collect();

    // The feed's events, written with the change (`out` is empty when a benchmark measures
    // ingest without them).
    let mut events = Vec::new();
    for (req, o) in reqs.iter().zip(out) {
        let derived = derive::ingest(req.account_id, o, &req.message.defects);
        events.extend(feed::rows(&derived, req.now)?);
    }

    let mut stmts: Vec<Sql<'_>> = Vec::new();

    // Identities (before the conversations and messages that refer to them).
    for chunk in identities.chunks(INSERT_CHUNK) {
        let mut q = Sql::new(format!("INSERT INTO identities ({IDENTITY_COLS}) VALUES "));
        for (n, (i, id, acc)) in chunk.iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(id.as_str())
                .push(", ")
                .bind(acc.as_str())
                .push(", ")
                .bind(i.address.as_str())
                .push(", ")
                .bind(i.display_name.as_deref())
                .push(", ")
                .bind(i.username.as_deref())
                .push(", NULL, NULL, ")
                .bind(i.created_at.0)
                .push(", ")
                .bind(i.updated_at.0)
                .push(")");
        }
        stmts.push(q);
    }

    // Identities whose names changed.
    for (i, id) in &renamed {
        let mut q = Sql::new("UPDATE identities SET display_name = ");
        q.bind(i.display_name.as_deref())
            .push(", username = ")
            .bind(i.username.as_deref())
            .push(", updated_at = ")
            .bind(i.updated_at.0)
            .push(" WHERE id = ")
            .bind(id.as_str());
        stmts.push(q);
    }

    // New conversations, with their final state.
    for chunk in conversations.chunks(INSERT_CHUNK) {
        let mut q = Sql::new(format!("INSERT INTO conversations ({CONVERSATION_COLS}) VALUES "));
        for (n, (c, ids)) in chunk.iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(ids[0].as_str())
                .push(", ")
                .bind(ids[1].as_str())
                .push(", ")
                .bind(c.thread_key.as_str())
                .push(", ")
                .bind(ids[2].as_str())
                .push(", ")
                .bind(c.contact_id.as_ref().map(|c| c.as_str()))
                .push(", ")
                .bind(c.status.as_str())
                .push(", ")
                .bind(c.opened_at.0)
                .push(", ")
                .bind(c.last_activity_at.0)
                .push(", ")
                .bind(c.expires_at.map(|t| t.0))
                .push(", ")
                .bind(c.closed_at.map(|t| t.0))
                .push(", ")
                .bind(c.version)
                .push(")");
        }
        stmts.push(q);
    }

    // Changed conversations: one statement per chunk (the columns of a VALUES list are named
    // column1, column2, ... on both SQLite and PostgreSQL).
    for (list, sets) in [
        (
            &status_changed,
            "status = v.column2, last_activity_at = v.column3, closed_at = v.column4, \
             version = v.column5",
        ),
        (&activity_only, "last_activity_at = v.column3, version = v.column5"),
    ] {
        for chunk in list.chunks(INSERT_CHUNK) {
            let mut q = Sql::new(format!("UPDATE conversations SET {sets} FROM (VALUES "));
            for (n, (c, id, _)) in chunk.iter().enumerate() {
                if n > 0 {
                    q.push(", ");
                }
                q.push("(")
                    .bind(id.as_str())
                    .push(", ")
                    .bind(c.status.as_str())
                    .push(", ")
                    .bind(c.last_activity_at.0)
                    .push(", ")
                    .bind(c.closed_at.map(|t| t.0))
                    .push(", ")
                    .bind(c.version)
                    .push(")");
            }
            q.push(") AS v WHERE conversations.id = v.column1");
            stmts.push(q);
        }
    }

    // Messages.
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut q = Sql::new(format!("INSERT INTO messages ({}) VALUES ", codec::MESSAGE_COLS));
        for (n, row) in chunk.iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            row.push(&mut q);
        }
        stmts.push(q);
    }

    // Echoes of our own sends: the only statements that return rows, one each.
    for (id, req) in &echoes {
        let mut q = Sql::new("UPDATE messages SET status = 'sent', provider_id = ");
        q.bind(req.message.provider_id.as_str())
            .push(", error = NULL, sent_at = ")
            .bind(req.message.sent_at.0)
            .push(", updated_at = ")
            .bind(req.now.0)
            .push(" WHERE id = ")
            .bind(id.as_str())
            .push(" AND provider_id IS NULL RETURNING id");
        stmts.push(q);
    }

    // Cursors.
    for (acc, c) in &cursors {
        let mut q = Sql::new("INSERT INTO account_state (account_id, key, value) VALUES (");
        q.bind(acc.as_str())
            .push(", ")
            .bind(c.key.as_str())
            .push(", ")
            .bind(c.value.as_slice())
            .push(") ON CONFLICT (account_id, key) DO UPDATE SET value = excluded.value");
        stmts.push(q);
    }

    stmts.extend(feed::inserts(&events));

    let returned = tx.run_and_commit(&stmts).await?;
    if returned.len() != echoes.len() {
        // Only possible on PostgreSQL, before the commit: a concurrent writer gave the
        // message its provider id first. Run the transaction again.
        return Err(Fail::Race("a pending message changed concurrently".to_owned()));
    }
    Ok(())
}
