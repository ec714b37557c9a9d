//! Accounts, account state, identities, conversations, messages (reads and sends) and leases.

use std::time::Duration;

use channel_core::{
    Account, AccountId, AccountUpdate, ConnectionState, ContactId, Conversation, ConversationId,
    ConversationStatus, DueConversations, Event, Identity, IdentityId, Lease, Message, MessageId,
    MessageStatus, NewAccount, SendRequest, StoreError, Timestamp,
};

use channel_core::feed::derive;

use crate::codec::{self, all, limit};
use crate::db::{Arg, Ex, Sql, Tx};
use crate::error::{Res, invalid};
use crate::feed;
use crate::limits::{
    self, MAX_CONNECTION_STATE_BYTES, MAX_HTML_BYTES, MAX_NAME_BYTES, MAX_TEXT_BYTES,
};
use channel_core::page::Position;

// ----- accounts -----

pub(crate) async fn account_in(ex: Ex<'_>, id: AccountId) -> Res<Option<Account>> {
    let sql =
        format!("SELECT {} FROM accounts WHERE id = ? AND removed_at IS NULL", codec::ACCOUNT_COLS);
    let id = id.to_string();
    match ex.fetch_optional(&sql, &[Arg::Text(&id)]).await? {
        Some(row) => Ok(Some(codec::account(&row)?)),
        None => Ok(None),
    }
}

pub(crate) async fn account(ex: Ex<'_>, id: AccountId) -> Res<Account> {
    account_in(ex, id).await?.ok_or_else(|| StoreError::not_found("account", id).into())
}

pub(crate) async fn account_exists(tx: &mut Tx, id: AccountId) -> Res<bool> {
    let id = id.to_string();
    Ok(tx
        .fetch_optional(
            "SELECT id FROM accounts WHERE id = ? AND removed_at IS NULL",
            &[Arg::Text(&id)],
        )
        .await?
        .is_some())
}

pub(crate) async fn require_account(tx: &mut Tx, id: AccountId) -> Res<()> {
    if account_exists(tx, id).await? {
        Ok(())
    } else {
        Err(StoreError::not_found("account", id).into())
    }
}

pub(crate) async fn create_account(tx: &mut Tx, new: &NewAccount, now: Timestamp) -> Res<Account> {
    limits::text("display_name", &new.display_name, MAX_NAME_BYTES)?;
    let taken = new.id.to_string();
    if tx
        .fetch_optional("SELECT id FROM accounts WHERE id = ?", &[Arg::Text(&taken)])
        .await?
        .is_some()
    {
        return Err(invalid("id", format!("account {} already exists (or was removed)", new.id)));
    }
    let account = Account {
        id: new.id,
        kind: new.kind.clone(),
        display_name: new.display_name.clone(),
        config: new.config.clone(),
        enabled: new.enabled,
        connection: ConnectionState::Connecting,
        created_at: now,
        updated_at: now,
        settings: new.settings,
    };
    let connection = codec::to_json("connection", &account.connection)?;
    let config = codec::to_json("config", &account.config)?;
    limits::size("config", config.len(), limits::MAX_CONNECTION_STATE_BYTES)?;
    let settings = codec::to_json("settings", &account.settings)?;
    let id = account.id.to_string();
    tx.execute(
        "INSERT INTO accounts (id, kind, display_name, config, enabled, connection, created_at, \
         updated_at, settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &[
            Arg::Text(&id),
            Arg::Text(account.kind.as_str()),
            Arg::Text(&account.display_name),
            Arg::Text(&config),
            Arg::Bool(account.enabled),
            Arg::Text(&connection),
            Arg::Int(now.0),
            Arg::Int(now.0),
            Arg::Text(&settings),
        ],
    )
    .await?;
    Ok(account)
}

pub(crate) async fn accounts(ex: Ex<'_>) -> Res<Vec<Account>> {
    let sql = format!(
        "SELECT {} FROM accounts WHERE removed_at IS NULL ORDER BY created_at, id",
        codec::ACCOUNT_COLS
    );
    Ok(all(ex.fetch_all(&sql, &[]).await?, codec::account)?)
}

pub(crate) async fn accounts_before(
    ex: Ex<'_>,
    before: Option<&Position>,
    n: usize,
) -> Res<Vec<Account>> {
    let mut q =
        Sql::new(format!("SELECT {} FROM accounts WHERE removed_at IS NULL", codec::ACCOUNT_COLS));
    q.keyset_page("created_at", before, limit(n));
    Ok(all(ex.fetch_all(&q.text, &q.args).await?, codec::account)?)
}

pub(crate) async fn set_account_enabled(
    tx: &mut Tx,
    id: AccountId,
    enabled: bool,
    now: Timestamp,
) -> Res<Account> {
    let sql = format!(
        "UPDATE accounts SET enabled = ?, updated_at = ? WHERE id = ? AND removed_at IS NULL \
         RETURNING {}",
        codec::ACCOUNT_COLS
    );
    let ids = id.to_string();
    match tx.fetch_optional(&sql, &[Arg::Bool(enabled), Arg::Int(now.0), Arg::Text(&ids)]).await? {
        Some(row) => Ok(codec::account(&row)?),
        None => Err(StoreError::not_found("account", id).into()),
    }
}

pub(crate) async fn set_connection_state(
    tx: &mut Tx,
    id: AccountId,
    state: &ConnectionState,
    now: Timestamp,
) -> Res<Account> {
    match state {
        ConnectionState::TransientDisconnect { reason }
        | ConnectionState::NeedsLogin { reason }
        | ConnectionState::Failed { reason } => {
            limits::text("reason", reason, MAX_CONNECTION_STATE_BYTES)?
        }
        _ => {}
    }
    let json = codec::to_json("connection", state)?;
    limits::size("connection", json.len(), MAX_CONNECTION_STATE_BYTES)?;
    let sql = format!(
        "UPDATE accounts SET connection = ?, updated_at = ? WHERE id = ? AND removed_at IS NULL \
         RETURNING {}",
        codec::ACCOUNT_COLS
    );
    let ids = id.to_string();
    let before = tx
        .fetch_optional("SELECT connection FROM accounts WHERE id = ?", &[Arg::Text(&ids)])
        .await?
        .map(|row| row.text("connection"))
        .transpose()?;
    let Some(row) =
        tx.fetch_optional(&sql, &[Arg::Text(&json), Arg::Int(now.0), Arg::Text(&ids)]).await?
    else {
        return Err(StoreError::not_found("account", id).into());
    };
    let account = codec::account(&row)?;
    if before.as_deref() != Some(json.as_str()) {
        let event = Event::AccountStateChanged { account_id: id, state: state.clone() };
        feed::append(tx, &[event], now).await?;
    }
    Ok(account)
}

pub(crate) async fn update_account(
    tx: &mut Tx,
    id: AccountId,
    update: &AccountUpdate,
    now: Timestamp,
) -> Res<Account> {
    if let Some(name) = &update.display_name {
        limits::text("display_name", name, MAX_NAME_BYTES)?;
    }
    let config = match &update.config {
        Some(c) => {
            let json = codec::to_json("config", c)?;
            limits::size("config", json.len(), limits::MAX_CONNECTION_STATE_BYTES)?;
            Some(json)
        }
        None => None,
    };
    let settings = match &update.settings {
        Some(s) => Some(codec::to_json("settings", s)?),
        None => None,
    };
    let sql = format!(
        "UPDATE accounts SET display_name = COALESCE(?, display_name), \
         config = COALESCE(?, config), settings = COALESCE(?, settings), updated_at = ? \
         WHERE id = ? AND removed_at IS NULL RETURNING {}",
        codec::ACCOUNT_COLS
    );
    let ids = id.to_string();
    let args = [
        Arg::OptText(update.display_name.as_deref()),
        Arg::OptText(config.as_deref()),
        Arg::OptText(settings.as_deref()),
        Arg::Int(now.0),
        Arg::Text(&ids),
    ];
    match tx.fetch_optional(&sql, &args).await? {
        Some(row) => Ok(codec::account(&row)?),
        None => Err(StoreError::not_found("account", id).into()),
    }
}

/// The error of a send that was pending when its account was removed.
const ACCOUNT_REMOVED: &str = "the account was removed before this message was sent";

pub(crate) async fn remove_account(
    tx: &mut Tx,
    id: AccountId,
    purge_messages: bool,
    now: Timestamp,
) -> Res<()> {
    let ids = id.to_string();
    let account = [Arg::Text(&ids)];
    let removed = tx
        .fetch_optional(
            "UPDATE accounts SET removed_at = ?, enabled = ?, updated_at = ? \
             WHERE id = ? AND removed_at IS NULL RETURNING id",
            &[Arg::Int(now.0), Arg::Bool(false), Arg::Int(now.0), Arg::Text(&ids)],
        )
        .await?;
    if removed.is_none() {
        return Err(StoreError::not_found("account", id).into());
    }
    tx.execute("DELETE FROM account_state WHERE account_id = ?", &account).await?;
    let lease = Lease::account_name(id);
    tx.execute("DELETE FROM leases WHERE name = ?", &[Arg::Text(&lease)]).await?;
    if purge_messages {
        let jobs = "SELECT id FROM jobs WHERE account_id = ? OR message_id IN \
                    (SELECT id FROM messages WHERE account_id = ?)";
        let twice = [Arg::Text(&ids), Arg::Text(&ids)];
        tx.execute(&format!("DELETE FROM job_attempts WHERE job_id IN ({jobs})"), &twice).await?;
        tx.execute(&format!("DELETE FROM jobs WHERE id IN ({jobs})"), &twice).await?;
        tx.execute("DELETE FROM messages WHERE account_id = ?", &account).await?;
        tx.execute("DELETE FROM conversations WHERE account_id = ?", &account).await?;
        tx.execute("UPDATE identities SET merged_into = NULL WHERE account_id = ?", &account)
            .await?;
        tx.execute("DELETE FROM identities WHERE account_id = ?", &account).await?;
        tx.execute("DELETE FROM accounts WHERE id = ?", &account).await?;
        return Ok(());
    }
    tx.execute(
        "UPDATE jobs SET state = 'cancelled', leased_by = NULL, lease_expires_at = NULL, \
         last_error = ?, updated_at = ? \
         WHERE account_id = ? AND state IN ('available', 'running', 'retryable')",
        &[Arg::Text(ACCOUNT_REMOVED), Arg::Int(now.0), Arg::Text(&ids)],
    )
    .await?;
    tx.execute(
        "UPDATE messages SET status = 'failed', error = ?, updated_at = ? \
         WHERE account_id = ? AND status = 'pending'",
        &[Arg::Text(ACCOUNT_REMOVED), Arg::Int(now.0), Arg::Text(&ids)],
    )
    .await?;
    Ok(())
}

// ----- account state -----

pub(crate) async fn state_get(ex: Ex<'_>, account: AccountId, key: &str) -> Res<Option<Vec<u8>>> {
    let id = account.to_string();
    let row = ex
        .fetch_optional(
            "SELECT value FROM account_state WHERE account_id = ? AND key = ?",
            &[Arg::Text(&id), Arg::Text(key)],
        )
        .await?;
    Ok(match row {
        Some(r) => Some(r.blob("value")?),
        None => None,
    })
}

pub(crate) fn check_state_key(key: &str) -> Res<()> {
    limits::key("key", key)
}

pub(crate) async fn state_put(tx: &mut Tx, account: AccountId, key: &str, value: &[u8]) -> Res<()> {
    check_state_key(key)?;
    limits::size("value", value.len(), limits::MAX_STATE_VALUE_BYTES)?;
    require_account(tx, account).await?;
    let id = account.to_string();
    tx.execute(
        "INSERT INTO account_state (account_id, key, value) VALUES (?, ?, ?) \
         ON CONFLICT (account_id, key) DO UPDATE SET value = excluded.value",
        &[Arg::Text(&id), Arg::Text(key), Arg::Blob(value)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn state_delete(tx: &mut Tx, account: AccountId, key: &str) -> Res<()> {
    let id = account.to_string();
    tx.execute(
        "DELETE FROM account_state WHERE account_id = ? AND key = ?",
        &[Arg::Text(&id), Arg::Text(key)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn state_entries(ex: Ex<'_>, account: AccountId) -> Res<Vec<(String, Vec<u8>)>> {
    let id = account.to_string();
    let rows = ex
        .fetch_all(
            "SELECT key, value FROM account_state WHERE account_id = ? ORDER BY key",
            &[Arg::Text(&id)],
        )
        .await?;
    rows.iter().map(|r| Ok((r.text("key")?, r.blob("value")?))).collect()
}

pub(crate) async fn state_replace(
    tx: &mut Tx,
    account: AccountId,
    key: &str,
    expected: &[u8],
    value: &[u8],
) -> Res<bool> {
    limits::size("value", value.len(), limits::MAX_STATE_VALUE_BYTES)?;
    let id = account.to_string();
    let changed = tx
        .fetch_optional(
            "UPDATE account_state SET value = ? WHERE account_id = ? AND key = ? AND value = ? \
             RETURNING key",
            &[Arg::Blob(value), Arg::Text(&id), Arg::Text(key), Arg::Blob(expected)],
        )
        .await?;
    Ok(changed.is_some())
}

pub(crate) async fn state_clear(tx: &mut Tx, account: AccountId) -> Res<()> {
    let id = account.to_string();
    tx.execute("DELETE FROM account_state WHERE account_id = ?", &[Arg::Text(&id)]).await?;
    Ok(())
}

// ----- identities -----

pub(crate) async fn identity_in(ex: Ex<'_>, id: IdentityId) -> Res<Option<Identity>> {
    let sql = format!("SELECT {} FROM identities WHERE id = ?", codec::IDENTITY_COLS);
    let id = id.to_string();
    match ex.fetch_optional(&sql, &[Arg::Text(&id)]).await? {
        Some(row) => Ok(Some(codec::identity(&row)?)),
        None => Ok(None),
    }
}

pub(crate) async fn identity(ex: Ex<'_>, id: IdentityId) -> Res<Identity> {
    identity_in(ex, id).await?.ok_or_else(|| StoreError::not_found("identity", id).into())
}

/// How many merges a lookup follows before it calls the data corrupt (a cycle).
pub(crate) const MAX_MERGE_DEPTH: usize = 64;

pub(crate) async fn find_identity(
    pools: &crate::db::Pools,
    account: AccountId,
    address: &str,
) -> Res<Option<Identity>> {
    let sql = format!(
        "SELECT {} FROM identities WHERE account_id = ? AND address = ?",
        codec::IDENTITY_COLS
    );
    let acc = account.to_string();
    let Some(row) =
        pools.reader().fetch_optional(&sql, &[Arg::Text(&acc), Arg::Text(address)]).await?
    else {
        return Ok(None);
    };
    let mut identity = codec::identity(&row)?;
    for _ in 0..MAX_MERGE_DEPTH {
        let Some(next) = identity.merged_into else {
            return Ok(Some(identity));
        };
        identity = match identity_in(pools.reader(), next).await? {
            Some(i) => i,
            None => {
                return Err(StoreError::Corrupt(format!(
                    "identity {} is merged into {next}, which does not exist",
                    identity.id
                ))
                .into());
            }
        };
    }
    Err(StoreError::Corrupt(format!("identity merges of `{address}` form a cycle")).into())
}

pub(crate) async fn identities(
    ex: Ex<'_>,
    account: AccountId,
    unlinked_only: bool,
) -> Res<Vec<Identity>> {
    let sql = format!(
        "SELECT {} FROM identities WHERE account_id = ? AND merged_into IS NULL {} \
         ORDER BY created_at, id",
        codec::IDENTITY_COLS,
        if unlinked_only { "AND contact_id IS NULL" } else { "" }
    );
    let acc = account.to_string();
    Ok(all(ex.fetch_all(&sql, &[Arg::Text(&acc)]).await?, codec::identity)?)
}

pub(crate) async fn identities_before(
    ex: Ex<'_>,
    account: AccountId,
    unlinked_only: bool,
    before: Option<&Position>,
    n: usize,
) -> Res<Vec<Identity>> {
    let acc = account.to_string();
    let mut q = Sql::new(format!(
        "SELECT {} FROM identities WHERE merged_into IS NULL AND account_id = ",
        codec::IDENTITY_COLS
    ));
    q.bind(acc.as_str());
    if unlinked_only {
        q.push(" AND contact_id IS NULL");
    }
    q.keyset_page("created_at", before, limit(n));
    Ok(all(ex.fetch_all(&q.text, &q.args).await?, codec::identity)?)
}

pub(crate) async fn link_identity(
    tx: &mut Tx,
    id: IdentityId,
    contact: Option<&ContactId>,
    now: Timestamp,
) -> Res<Identity> {
    if let Some(c) = contact {
        limits::key("contact", c.as_str())?;
    }
    let contact = contact.map(|c| c.as_str());
    let ids = id.to_string();
    let sql = format!(
        "UPDATE identities SET contact_id = ?, updated_at = ? WHERE id = ? RETURNING {}",
        codec::IDENTITY_COLS
    );
    let Some(row) =
        tx.fetch_optional(&sql, &[Arg::OptText(contact), Arg::Int(now.0), Arg::Text(&ids)]).await?
    else {
        return Err(StoreError::not_found("identity", id).into());
    };
    let identity = codec::identity(&row)?;
    tx.execute(
        "UPDATE conversations SET contact_id = ?, version = version + 1 \
         WHERE primary_identity = ? AND status IN ('open', 'idle')",
        &[Arg::OptText(contact), Arg::Text(&ids)],
    )
    .await?;
    Ok(identity)
}

pub(crate) async fn merge_identities(
    tx: &mut Tx,
    keep: IdentityId,
    merge: IdentityId,
    now: Timestamp,
) -> Res<Identity> {
    let keep_row = identity(tx.ex(), keep).await?;
    let merge_row = identity(tx.ex(), merge).await?;
    if keep == merge {
        return Err(invalid("merge", "cannot merge an identity into itself"));
    }
    if keep_row.account_id != merge_row.account_id {
        return Err(invalid("merge", "identities of different accounts cannot be merged"));
    }
    if let Some(target) = keep_row.merged_into {
        return Err(invalid("keep", format!("identity {keep} is itself merged into {target}")));
    }
    if let Some(target) = merge_row.merged_into {
        return Err(invalid("merge", format!("identity {merge} is already merged into {target}")));
    }
    let (k, m) = (keep.to_string(), merge.to_string());
    tx.execute(
        "UPDATE conversations SET primary_identity = ?, version = version + 1 WHERE primary_identity = ?",
        &[Arg::Text(&k), Arg::Text(&m)],
    )
    .await?;
    tx.execute(
        "UPDATE messages SET identity_id = ?, updated_at = ? WHERE identity_id = ?",
        &[Arg::Text(&k), Arg::Int(now.0), Arg::Text(&m)],
    )
    .await?;
    tx.execute(
        "UPDATE identities SET merged_into = ?, updated_at = ? WHERE id = ?",
        &[Arg::Text(&k), Arg::Int(now.0), Arg::Text(&m)],
    )
    .await?;
    let contact = keep_row.contact_id.clone().or(merge_row.contact_id.clone());
    let sql = format!(
        "UPDATE identities SET contact_id = ?, updated_at = ? WHERE id = ? RETURNING {}",
        codec::IDENTITY_COLS
    );
    let row = tx
        .fetch_optional(
            &sql,
            &[Arg::OptText(contact.as_ref().map(|c| c.as_str())), Arg::Int(now.0), Arg::Text(&k)],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("identity", keep))?;
    Ok(codec::identity(&row)?)
}

// ----- conversations -----

/// See [`ConversationStore::set_assignee`](channel_core::ConversationStore::set_assignee).
pub(crate) async fn set_assignee(
    tx: &mut Tx,
    id: ConversationId,
    expected: Option<&str>,
    assignee: Option<&str>,
    now: Timestamp,
) -> Res<Conversation> {
    if let Some(a) = assignee {
        limits::key("assignee", a)?;
    }
    let Some(current) = conversation_in(tx.ex(), id, true).await? else {
        return Err(StoreError::not_found("conversation", id).into());
    };
    if current.assignee.as_deref() != expected {
        return Err(
            StoreError::AssigneeChanged { id: id.to_string(), current: current.assignee }.into()
        );
    }
    let sql = format!(
        "UPDATE conversations SET assignee = ?, version = version + 1 WHERE id = ? RETURNING {}",
        codec::CONVERSATION_READ_COLS
    );
    let id_s = id.to_string();
    let Some(row) = tx.fetch_optional(&sql, &[Arg::OptText(assignee), Arg::Text(&id_s)]).await?
    else {
        return Err(StoreError::not_found("conversation", id).into());
    };
    let updated = codec::conversation(&row)?;
    let event = Event::ConversationAssigned {
        account_id: updated.account_id,
        conversation_id: id,
        assignee: updated.assignee.clone(),
        previous: expected.map(str::to_owned),
    };
    feed::append(tx, &[event], now).await?;
    Ok(updated)
}

pub(crate) async fn conversation_in(
    ex: Ex<'_>,
    id: ConversationId,
    lock: bool,
) -> Res<Option<Conversation>> {
    let sql = format!(
        "SELECT {} FROM conversations WHERE id = ?{}",
        codec::CONVERSATION_READ_COLS,
        if lock && ex.is_pg() { " FOR UPDATE" } else { "" }
    );
    let id = id.to_string();
    match ex.fetch_optional(&sql, &[Arg::Text(&id)]).await? {
        Some(row) => Ok(Some(codec::conversation(&row)?)),
        None => Ok(None),
    }
}

pub(crate) async fn conversation(ex: Ex<'_>, id: ConversationId) -> Res<Conversation> {
    conversation_in(ex, id, false)
        .await?
        .ok_or_else(|| StoreError::not_found("conversation", id).into())
}

pub(crate) async fn conversations(
    ex: Ex<'_>,
    account: AccountId,
    status: Option<ConversationStatus>,
    n: usize,
) -> Res<Vec<Conversation>> {
    let acc = account.to_string();
    let mut q = Sql::new(format!(
        "SELECT {} FROM conversations WHERE account_id = ",
        codec::CONVERSATION_READ_COLS
    ));
    q.bind(acc.as_str());
    if let Some(s) = status {
        q.push(" AND status = ").bind(s.as_str());
    }
    q.push(" ORDER BY last_activity_at DESC, id DESC LIMIT ").bind(limit(n));
    Ok(all(ex.fetch_all(&q.text, &q.args).await?, codec::conversation)?)
}

pub(crate) async fn conversations_before(
    ex: Ex<'_>,
    query: &channel_core::reads::ConversationQuery,
    before: Option<&Position>,
    n: usize,
) -> Res<Vec<Conversation>> {
    let (status, acc) = (query.status, query.account.map(|a| a.to_string()));
    let mut q = Sql::new(format!(
        "SELECT {} FROM conversations WHERE 1 = 1",
        codec::CONVERSATION_READ_COLS
    ));
    if let Some(a) = &acc {
        q.push(" AND account_id = ").bind(a.as_str());
    }
    if let Some(s) = status {
        q.push(" AND status = ").bind(s.as_str());
    }
    if let Some(a) = &query.assignee {
        q.push(" AND assignee = ").bind(a.as_str());
    }
    if query.unassigned {
        q.push(" AND assignee IS NULL");
    }
    if query.unlinked {
        q.push(" AND contact_id IS NULL");
    }
    q.keyset_page("last_activity_at", before, limit(n));
    Ok(all(ex.fetch_all(&q.text, &q.args).await?, codec::conversation)?)
}

pub(crate) async fn active_conversation(
    ex: Ex<'_>,
    account: AccountId,
    thread_key: &str,
) -> Res<Option<Conversation>> {
    let sql = format!(
        "SELECT {} FROM conversations WHERE account_id = ? AND thread_key = ? \
         AND status IN ('open', 'idle')",
        codec::CONVERSATION_READ_COLS
    );
    let acc = account.to_string();
    match ex.fetch_optional(&sql, &[Arg::Text(&acc), Arg::Text(thread_key)]).await? {
        Some(row) => Ok(Some(codec::conversation(&row)?)),
        None => Ok(None),
    }
}

pub(crate) async fn due_conversations(
    ex: Ex<'_>,
    account: AccountId,
    due: &DueConversations,
) -> Res<Vec<Conversation>> {
    if due.limit == 0
        || (due.idle_before.is_none() && due.close_before.is_none() && due.expire_before.is_none())
    {
        return Ok(Vec::new());
    }
    let acc = account.to_string();
    let mut q = Sql::new(format!(
        "SELECT {} FROM conversations WHERE account_id = ",
        codec::CONVERSATION_READ_COLS
    ));
    q.bind(acc.as_str()).push(" AND status IN ('open', 'idle') AND (");
    let mut first = true;
    let mut or = |q: &mut Sql<'_>| {
        if !first {
            q.push(" OR ");
        }
        first = false;
    };
    if let Some(t) = due.idle_before {
        or(&mut q);
        q.push("(status = 'open' AND last_activity_at < ").bind(t.0).push(")");
    }
    if let Some(t) = due.close_before {
        or(&mut q);
        q.push("last_activity_at < ").bind(t.0);
    }
    if let Some(t) = due.expire_before {
        or(&mut q);
        q.push("opened_at < ").bind(t.0);
    }
    q.push(") ORDER BY last_activity_at, id LIMIT ").bind(limit(due.limit));
    Ok(all(ex.fetch_all(&q.text, &q.args).await?, codec::conversation)?)
}

pub(crate) async fn set_conversation_status(
    tx: &mut Tx,
    id: ConversationId,
    expected_version: i64,
    status: ConversationStatus,
    now: Timestamp,
) -> Res<Conversation> {
    let Some(current) = conversation_in(tx.ex(), id, true).await? else {
        return Err(StoreError::not_found("conversation", id).into());
    };
    if current.version != expected_version {
        return Err(StoreError::VersionConflict {
            what: "conversation",
            id: id.to_string(),
            expected: expected_version,
            actual: current.version,
        }
        .into());
    }
    if status.is_active()
        && !current.status.is_active()
        && let Some(other) =
            active_conversation(tx.ex(), current.account_id, &current.thread_key).await?
    {
        return Err(invalid(
            "status",
            format!("conversation {} of the same thread is active", other.id),
        ));
    }
    let closed_at = if status.is_active() {
        None
    } else if current.status.is_active() {
        Some(now.0)
    } else {
        current.closed_at.map(|t| t.0).or(Some(now.0))
    };
    let sql = format!(
        "UPDATE conversations SET status = ?, closed_at = ?, version = version + 1 \
         WHERE id = ? AND version = ? RETURNING {}",
        codec::CONVERSATION_READ_COLS
    );
    let ids = id.to_string();
    let row = tx
        .fetch_optional(
            &sql,
            &[
                Arg::Text(status.as_str()),
                Arg::OptInt(closed_at),
                Arg::Text(&ids),
                Arg::Int(expected_version),
            ],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("conversation", id))?;
    let updated = codec::conversation(&row)?;
    let event = Event::ConversationStatusChanged {
        account_id: updated.account_id,
        conversation_id: id,
        status,
    };
    feed::append(tx, &[event], now).await?;
    Ok(updated)
}

// ----- messages -----

pub(crate) async fn message_in(ex: Ex<'_>, id: MessageId) -> Res<Option<Message>> {
    let sql = format!("SELECT {} FROM messages WHERE id = ?", codec::MESSAGE_READ_COLS);
    let id = id.to_string();
    match ex.fetch_optional(&sql, &[Arg::Text(&id)]).await? {
        Some(row) => Ok(Some(codec::message(&row)?)),
        None => Ok(None),
    }
}

pub(crate) async fn message(ex: Ex<'_>, id: MessageId) -> Res<Message> {
    message_in(ex, id).await?.ok_or_else(|| StoreError::not_found("message", id).into())
}

/// See [`MessageStore::merge_stray`](channel_core::MessageStore::merge_stray).
pub(crate) async fn merge_stray(
    tx: &mut Tx,
    keep: MessageId,
    provider_id: &str,
) -> Res<Option<MessageId>> {
    let keep_s = keep.to_string();
    let Some(row) = tx
        .fetch_optional(
            "SELECT account_id, updated_at FROM messages WHERE id = ?",
            &[Arg::Text(&keep_s)],
        )
        .await?
    else {
        return Err(StoreError::not_found("message", keep).into());
    };
    let account = row.text("account_id")?;
    let holder = tx
        .fetch_optional(
            "SELECT id FROM messages WHERE account_id = ? AND provider_id = ? \
             AND direction = 'outbound' AND id <> ? \
             AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.message_id = messages.id)",
            &[Arg::Text(&account), Arg::Text(provider_id), Arg::Text(&keep_s)],
        )
        .await?;
    let Some(holder) = holder else { return Ok(None) };
    let holder_id = holder.text("id")?;
    tx.execute("DELETE FROM messages WHERE id = ?", &[Arg::Text(&holder_id)]).await?;
    let removed: MessageId = holder_id
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("malformed message id `{holder_id}`")))?;
    let account: AccountId = account
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("malformed account id `{account}`")))?;
    let at = Timestamp(row.int("updated_at")?);
    feed::append(tx, &[derive::merged(account, keep, removed)], at).await?;
    Ok(Some(removed))
}

pub(crate) async fn message_by_provider_id(
    ex: Ex<'_>,
    account: AccountId,
    provider_id: &str,
) -> Res<Option<Message>> {
    let sql = format!(
        "SELECT {} FROM messages WHERE account_id = ? AND provider_id = ?",
        codec::MESSAGE_READ_COLS
    );
    let acc = account.to_string();
    match ex.fetch_optional(&sql, &[Arg::Text(&acc), Arg::Text(provider_id)]).await? {
        Some(row) => Ok(Some(codec::message(&row)?)),
        None => Ok(None),
    }
}

/// Applies an edit (see `MessageStore::apply_edit`): one fenced `UPDATE` that only an edit newer than
/// the stored one passes, then the message as stored.
pub(crate) async fn apply_edit(
    tx: &mut crate::db::Tx,
    account: AccountId,
    edit: &channel_core::InboundEdit,
    now: Timestamp,
) -> Res<Option<(Message, bool)>> {
    crate::limits::key("provider_id", &edit.provider_id)?;
    crate::limits::opt_text("text", edit.text.as_deref(), MAX_TEXT_BYTES)?;
    crate::limits::opt_text("html", edit.html.as_deref(), MAX_HTML_BYTES)?;
    let acc = account.to_string();
    // `RETURNING` rather than the count of changed rows: on SQLite the count after the
    // `BEGIN` sent with this statement is the previous statement's.
    let changed = tx
        .fetch_optional(
            "UPDATE messages SET text = ?, html = ?, edited_at = ?, updated_at = ? \
             WHERE account_id = ? AND provider_id = ? AND (edited_at IS NULL OR edited_at < ?) \
             RETURNING id",
            &[
                Arg::from(edit.text.as_deref()),
                Arg::from(edit.html.as_deref()),
                Arg::Int(edit.edited_at.0),
                Arg::Int(now.0),
                Arg::Text(&acc),
                Arg::Text(&edit.provider_id),
                Arg::Int(edit.edited_at.0),
            ],
        )
        .await?
        .is_some();
    let sql = format!(
        "SELECT {} FROM messages WHERE account_id = ? AND provider_id = ?",
        codec::MESSAGE_READ_COLS
    );
    let Some(row) =
        tx.fetch_optional(&sql, &[Arg::Text(&acc), Arg::Text(&edit.provider_id)]).await?
    else {
        return Ok(None);
    };
    let message = codec::message(&row)?;
    if changed {
        let event = Event::MessageEdited { account_id: account, message_id: message.id };
        feed::append(tx, &[event], now).await?;
    }
    Ok(Some((message, changed)))
}

/// Applies a deletion (see `MessageStore::apply_deletion`): one `UPDATE ... RETURNING` over the ids
/// (at most `InboundDeletion::MAX_IDS`), only rows not marked deleted yet.
pub(crate) async fn apply_deletion(
    tx: &mut crate::db::Tx,
    account: AccountId,
    deletion: &channel_core::InboundDeletion,
    now: Timestamp,
) -> Res<Vec<Message>> {
    crate::limits::count(
        "provider_ids",
        deletion.provider_ids.len(),
        channel_core::InboundDeletion::MAX_IDS,
    )?;
    for id in &deletion.provider_ids {
        crate::limits::key("provider_id", id)?;
    }
    if deletion.provider_ids.is_empty() {
        return Ok(Vec::new());
    }
    let acc = account.to_string();
    let ids: Vec<&str> = deletion.provider_ids.iter().map(String::as_str).collect();
    let mut q = crate::db::Sql::new("UPDATE messages SET deleted_at = ");
    q.bind(deletion.deleted_at.0)
        .push(", updated_at = ")
        .bind(now.0)
        .push(" WHERE account_id = ")
        .bind(acc.as_str())
        .push(" AND deleted_at IS NULL AND provider_id IN ")
        .in_list(&ids)
        .push(&format!(" RETURNING {}", codec::MESSAGE_READ_COLS));
    let deleted = all(tx.fetch_all(&q.text, &q.args).await?, codec::message)?;
    let events: Vec<Event> = deleted
        .iter()
        .map(|m| Event::MessageDeleted { account_id: account, message_id: m.id })
        .collect();
    feed::append(tx, &events, now).await?;
    Ok(deleted)
}

pub(crate) async fn messages(
    ex: Ex<'_>,
    conversation: ConversationId,
    n: usize,
) -> Res<Vec<Message>> {
    let sql = format!(
        "SELECT {} FROM messages WHERE conversation_id = ? ORDER BY sent_at, id LIMIT ?",
        codec::MESSAGE_READ_COLS
    );
    let id = conversation.to_string();
    Ok(all(ex.fetch_all(&sql, &[Arg::Text(&id), Arg::Int(limit(n))]).await?, codec::message)?)
}

pub(crate) async fn messages_before(
    ex: Ex<'_>,
    conversation: ConversationId,
    before: Option<&Position>,
    n: usize,
) -> Res<Vec<Message>> {
    let id = conversation.to_string();
    let mut q = Sql::new(format!(
        "SELECT {} FROM messages WHERE conversation_id = ",
        codec::MESSAGE_READ_COLS
    ));
    q.bind(id.as_str());
    q.keyset_page("sent_at", before, limit(n));
    Ok(all(ex.fetch_all(&q.text, &q.args).await?, codec::message)?)
}

/// The account's messages stored with defects, newest first; with `code`, only those with a
/// defect of that code.
pub(crate) async fn messages_with_defects(
    ex: Ex<'_>,
    account: AccountId,
    code: Option<&str>,
    n: usize,
) -> Res<Vec<Message>> {
    let id = account.to_string();
    let cols = codec::MESSAGE_READ_COLS;
    let Some(code) = code else {
        let sql = format!(
            "SELECT {cols} FROM messages WHERE account_id = ? AND defects IS NOT NULL \
             ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        return Ok(all(
            ex.fetch_all(&sql, &[Arg::Text(&id), Arg::Int(limit(n))]).await?,
            codec::message,
        )?);
    };
    // The JSON holds `"code":"<code>"`; LIKE narrows, the exact match is checked below.
    let escaped: String = code
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let pattern = format!("%\"code\":\"{escaped}\"%");
    let sql = format!(
        "SELECT {cols} FROM messages WHERE account_id = ? AND defects IS NOT NULL \
         AND defects LIKE ? ESCAPE '\\' ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    let rows =
        ex.fetch_all(&sql, &[Arg::Text(&id), Arg::Text(&pattern), Arg::Int(limit(n))]).await?;
    let messages = all(rows, codec::message)?;
    Ok(messages.into_iter().filter(|m| m.defects.iter().any(|d| d.code == code)).collect())
}

/// Checks the defects of a message and returns them as JSON (`None` when there are none).
pub(crate) fn check_defects(defects: &[channel_core::Defect]) -> Res<Option<String>> {
    if defects.is_empty() {
        return Ok(None);
    }
    limits::count("defects", defects.len(), channel_core::validate::Limits::DEFAULT.defects)?;
    let json = codec::to_json("defects", &defects)?;
    limits::size("defects", json.len(), limits::MAX_DEFECTS_BYTES)?;
    if json.contains("\\u0000") {
        return Err(invalid("defects", "contains a NUL byte"));
    }
    Ok(Some(json))
}

/// Checks the stored attachments of a message.
pub(crate) fn check_attachments(attachments: &[channel_core::Attachment]) -> Res<String> {
    limits::count("attachments", attachments.len(), limits::MAX_ATTACHMENTS)?;
    for a in attachments {
        limits::opt_text("attachments.name", a.name.as_deref(), MAX_NAME_BYTES)?;
        limits::text("attachments.mime_type", &a.mime_type, MAX_NAME_BYTES)?;
        limits::text("attachments.sha256", &a.sha256, MAX_NAME_BYTES)?;
        limits::text("attachments.blob_key", &a.blob_key, limits::MAX_KEY_BYTES)?;
    }
    Ok(codec::to_json("attachments", &attachments)?)
}

pub(crate) async fn enqueue_send(tx: &mut Tx, req: &SendRequest) -> Res<Message> {
    limits::key("client_key", &req.client_key)?;
    limits::opt_text("text", req.text.as_deref(), MAX_TEXT_BYTES)?;
    limits::opt_text("html", req.html.as_deref(), MAX_HTML_BYTES)?;
    limits::opt_text("subject", req.subject.as_deref(), MAX_NAME_BYTES)?;
    limits::opt_text("reply_to", req.reply_to.as_deref(), limits::MAX_KEY_BYTES)?;
    let origin = req.origin.to_stored();
    limits::text("origin", &origin, MAX_NAME_BYTES)?;
    let attachments = check_attachments(&req.attachments)?;
    crate::queue::check_max_attempts(req.max_attempts)?;
    let Some(conv) = conversation_in(tx.ex(), req.conversation_id, true).await? else {
        return Err(StoreError::not_found("conversation", req.conversation_id).into());
    };
    if message_in(tx.ex(), req.message_id).await?.is_some() {
        return Err(invalid("message_id", format!("message {} already exists", req.message_id)));
    }
    let account = conv.account_id.to_string();
    if tx
        .fetch_optional(
            "SELECT id FROM messages WHERE account_id = ? AND client_key = ?",
            &[Arg::Text(&account), Arg::Text(&req.client_key)],
        )
        .await?
        .is_some()
    {
        return Err(invalid("client_key", "already used by another message of the account"));
    }
    let message = Message {
        id: req.message_id,
        account_id: conv.account_id,
        conversation_id: conv.id,
        identity_id: conv.primary_identity,
        direction: channel_core::Direction::Outbound,
        origin: req.origin.clone(),
        provider_id: None,
        client_key: Some(req.client_key.clone()),
        status: MessageStatus::Pending,
        text: req.text.clone(),
        html: req.html.clone(),
        subject: req.subject.clone(),
        reply_to: req.reply_to.clone(),
        attachments: req.attachments.clone(),
        parse_error: None,
        error: None,
        sent_at: req.now,
        created_at: req.now,
        updated_at: req.now,
        edited_at: None,
        deleted_at: None,
        defects: Vec::new(),
    };
    let row = MsgRow {
        id: message.id.to_string(),
        account: message.account_id.to_string(),
        conversation: message.conversation_id.to_string(),
        identity: message.identity_id.to_string(),
        direction: message.direction.as_str(),
        origin,
        provider_id: None,
        client_key: Some(&req.client_key),
        status: MessageStatus::Pending.as_str(),
        text: req.text.as_deref(),
        html: req.html.as_deref(),
        reply_to: req.reply_to.as_deref(),
        attachments,
        parse_error: None,
        sent_at: req.now.0,
        now: req.now.0,
        defects: None,
        subject: req.subject.as_deref(),
    };
    let mut q = Sql::new(format!("INSERT INTO messages ({}) VALUES ", codec::MESSAGE_COLS));
    row.push(&mut q);
    tx.execute(&q.text, &q.args).await?;
    let job = channel_core::NewJob {
        id: req.job_id,
        kind: channel_core::JobKind::Send,
        account_id: Some(conv.account_id),
        message_id: Some(req.message_id),
        payload: serde_json::Value::Null,
        unique_key: None,
        run_at: req.run_at,
        max_attempts: req.max_attempts,
    };
    crate::queue::insert_job(tx, &job, req.now).await?;
    let conv_id = conv.id.to_string();
    tx.execute(
        "UPDATE conversations SET last_activity_at = ?, version = version + 1 WHERE id = ?",
        &[Arg::Int(conv.last_activity_at.0.max(req.now.0)), Arg::Text(&conv_id)],
    )
    .await?;
    feed::append(tx, &[derive::queued(&message)], req.now).await?;
    Ok(message)
}

/// A message row to insert, borrowing its texts.
pub(crate) struct MsgRow<'a> {
    pub(crate) id: String,
    pub(crate) account: String,
    pub(crate) conversation: String,
    pub(crate) identity: String,
    pub(crate) direction: &'static str,
    pub(crate) origin: String,
    pub(crate) provider_id: Option<&'a str>,
    pub(crate) client_key: Option<&'a str>,
    pub(crate) status: &'static str,
    pub(crate) text: Option<&'a str>,
    pub(crate) html: Option<&'a str>,
    pub(crate) reply_to: Option<&'a str>,
    pub(crate) attachments: String,
    pub(crate) parse_error: Option<&'a str>,
    pub(crate) sent_at: i64,
    pub(crate) now: i64,
    /// The defects as JSON, `None` for a message stored as delivered.
    pub(crate) defects: Option<String>,
    /// The subject of a send.
    pub(crate) subject: Option<&'a str>,
}

impl<'a> MsgRow<'a> {
    /// Appends `(?, ..., ?)` in [`codec::MESSAGE_COLS`] order.
    pub(crate) fn push(&'a self, q: &mut Sql<'a>) {
        q.push("(")
            .bind(self.id.as_str())
            .push(", ")
            .bind(self.account.as_str())
            .push(", ")
            .bind(self.conversation.as_str())
            .push(", ")
            .bind(self.identity.as_str())
            .push(", ")
            .bind(self.direction)
            .push(", ")
            .bind(self.origin.as_str())
            .push(", ")
            .bind(self.provider_id)
            .push(", ")
            .bind(self.client_key)
            .push(", ")
            .bind(self.status)
            .push(", ")
            .bind(self.text)
            .push(", ")
            .bind(self.html)
            .push(", ")
            .bind(self.reply_to)
            .push(", ")
            .bind(self.attachments.as_str())
            .push(", ")
            .bind(self.parse_error)
            .push(", NULL, ")
            .bind(self.sent_at)
            .push(", ")
            .bind(self.now)
            .push(", ")
            .bind(self.now)
            .push(", ")
            .bind(self.defects.as_deref())
            .push(", ")
            .bind(self.subject)
            .push(")");
    }
}

// ----- leases -----

pub(crate) fn check_lease_names(name: &str, holder: &str) -> Res<()> {
    limits::key("name", name)?;
    limits::key("holder", holder)
}

pub(crate) async fn acquire_lease(
    ex: Ex<'_>,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: Timestamp,
) -> Res<Option<Lease>> {
    check_lease_names(name, holder)?;
    let expires = now.plus(ttl).0;
    let sql = format!(
        "INSERT INTO leases (name, holder, term, expires_at) VALUES (?, ?, 1, ?) \
         ON CONFLICT (name) DO UPDATE SET \
           term = CASE WHEN leases.holder = excluded.holder THEN leases.term ELSE leases.term + 1 END, \
           holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder OR leases.expires_at <= ? \
         RETURNING {}",
        codec::LEASE_COLS
    );
    let row = ex
        .fetch_optional(
            &sql,
            &[Arg::Text(name), Arg::Text(holder), Arg::Int(expires), Arg::Int(now.0)],
        )
        .await?;
    Ok(match row {
        Some(r) => Some(codec::lease(&r)?),
        None => None,
    })
}

pub(crate) async fn renew_lease(
    ex: Ex<'_>,
    lease: &Lease,
    ttl: Duration,
    now: Timestamp,
) -> Res<Lease> {
    let sql = format!(
        "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND term = ? AND expires_at > ? \
         RETURNING {}",
        codec::LEASE_COLS
    );
    let row = ex
        .fetch_optional(
            &sql,
            &[
                Arg::Int(now.plus(ttl).0),
                Arg::Text(&lease.name),
                Arg::Text(&lease.holder),
                Arg::Int(lease.term),
                Arg::Int(now.0),
            ],
        )
        .await?;
    match row {
        Some(r) => Ok(codec::lease(&r)?),
        None => Err(StoreError::LeaseLost { what: lease.name.clone() }.into()),
    }
}

pub(crate) async fn release_lease(ex: Ex<'_>, lease: &Lease) -> Res<()> {
    ex.execute(
        "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND term = ?",
        &[
            Arg::Int(i64::MIN),
            Arg::Text(&lease.name),
            Arg::Text(&lease.holder),
            Arg::Int(lease.term),
        ],
    )
    .await?;
    Ok(())
}
