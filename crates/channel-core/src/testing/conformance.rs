//! The [`Store`] conformance suite: every promise of the contract, written once, run against
//! every implementation.
//!
//! Each function takes a fresh, empty store and panics when the store breaks a promise. The
//! [`store_conformance_tests!`](crate::store_conformance_tests) macro turns the whole suite into
//! one `#[tokio::test]` per function:
//!
//! ```no_run
//! // in tests/conformance_sqlite.rs of a store crate
//! use std::sync::Arc;
//! use channel_core::Store;
//! # mod my_store {
//! #     pub async fn connect_fresh() -> channel_core::testing::MemoryStore {
//! #         channel_core::testing::MemoryStore::new()
//! #     }
//! # }
//!
//! async fn make_store() -> Arc<dyn Store> {
//!     Arc::new(my_store::connect_fresh().await)
//! }
//!
//! channel_core::store_conformance_tests!(make_store);
//! # fn main() {}
//! ```
//!
//! The crate using the macro needs `tokio` with the `macros` and `rt-multi-thread` features
//! among its dev-dependencies (the tests run on four worker threads so that the concurrency
//! checks really race).
//!
//! The functions use fixed times around [`T0`] (the store is always given `now`), a few
//! dozen calls each, and at most a few hundred for the concurrency checks, so the suite stays
//! cheap on a real database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::model::*;
use crate::store::*;

mod dead_letter;
mod feed;
mod workers;
pub use dead_letter::*;
pub use feed::*;
pub use workers::*;

/// The fixed "now" the suite starts from (2023-11-14T22:13:20Z).
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

/// `T0` plus `secs` seconds.
pub fn at(secs: i64) -> Timestamp {
    Timestamp(T0.0 + secs * 1000)
}

// ----- helpers -----

async fn new_account(store: &dyn Store, name: &str, now: Timestamp) -> Account {
    store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), name), now)
        .await
        .expect("create_account")
}

/// A plain inbound message.
fn inbound(
    provider_id: &str,
    thread: &str,
    from: &str,
    text: &str,
    sent_at: Timestamp,
) -> StoredInbound {
    StoredInbound {
        provider_id: provider_id.to_owned(),
        thread_key: thread.to_owned(),
        remote: IdentityInfo::new(from),
        direction: Direction::Inbound,
        origin: Origin::Remote,
        client_key: None,
        text: Some(text.to_owned()),
        html: None,
        reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
        parse_error: None,
        defects: Vec::new(),
        sent_at,
        cursor: None,
    }
}

fn request(
    account: AccountId,
    message: StoredInbound,
    policy: LifecyclePolicy,
    now: Timestamp,
) -> IngestRequest {
    IngestRequest {
        account_id: account,
        new_message_id: MessageId::new(),
        new_identity_id: IdentityId::new(),
        new_conversation_id: ConversationId::new(),
        message,
        policy,
        now,
    }
}

async fn ingest(
    store: &dyn Store,
    account: AccountId,
    message: StoredInbound,
    now: Timestamp,
) -> IngestOutcome {
    store.ingest(request(account, message, LifecyclePolicy::default(), now)).await.expect("ingest")
}

fn send_request(
    conversation: ConversationId,
    client_key: &str,
    max_attempts: i32,
    now: Timestamp,
) -> SendRequest {
    SendRequest {
        message_id: MessageId::new(),
        job_id: JobId::new(),
        conversation_id: conversation,
        origin: Origin::Service("test".to_owned()),
        client_key: client_key.to_owned(),
        text: Some("hello from the service".to_owned()),
        html: None,
        subject: Some("Re: hello".to_owned()),
        reply_to: None,
        attachments: Vec::new(),
        max_attempts,
        run_at: now,
        now,
    }
}

/// An account with one conversation (thread `t`) and a queued send in it; returns the
/// account, the conversation, the pending message and its job id.
async fn queued_send(
    store: &dyn Store,
    max_attempts: i32,
) -> (Account, ConversationId, Message, JobId) {
    let account = new_account(store, "acc", T0).await;
    let opened = ingest(store, account.id, inbound("in-1", "t", "alice", "hi", T0), T0).await;
    let req = send_request(opened.conversation_id, "ck-1", max_attempts, at(1));
    let job_id = req.job_id;
    let message = store.enqueue_send(req).await.expect("enqueue_send");
    (account, opened.conversation_id, message, job_id)
}

async fn claim_one(store: &dyn Store, worker: &str, ttl_secs: u64, now: Timestamp) -> JobLease {
    let mut leases = store
        .claim(worker, &[JobKind::Send], 1, Duration::from_secs(ttl_secs), now)
        .await
        .expect("claim");
    assert_eq!(leases.len(), 1, "claim at {now} should hand out exactly one due job");
    leases.remove(0)
}

fn history_job(run_at: Timestamp) -> NewJob {
    NewJob::new(JobKind::HistorySync, run_at)
}

fn is_not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound { .. })
}

fn is_invalid(e: &StoreError) -> bool {
    matches!(e, StoreError::InvalidInput { .. })
}

fn is_lease_lost(e: &StoreError) -> bool {
    matches!(e, StoreError::LeaseLost { .. })
}

async fn active_in_thread(
    store: &dyn Store,
    account: AccountId,
    thread: &str,
) -> Vec<Conversation> {
    store
        .conversations(account, None, 10_000)
        .await
        .expect("conversations")
        .into_iter()
        .filter(|c| c.thread_key == thread && c.status.is_active())
        .collect()
}

fn ids<T, I: Ord + Copy>(items: &[T], f: impl Fn(&T) -> I) -> Vec<I> {
    let mut v: Vec<I> = items.iter().map(f).collect();
    v.sort();
    v
}

// ----- accounts -----

/// Accounts are created `Connecting`, listed oldest first, enabled/disabled, and keep the
/// connection state reported; unknown ids are `NotFound`; a second account with the same id is
/// refused.
pub async fn accounts_crud_and_connection_state(store: Arc<dyn Store>) {
    let store = &*store;
    let a = new_account(store, "first", T0).await;
    let b = new_account(store, "second", at(1)).await;
    assert_eq!(a.connection, ConnectionState::Connecting);
    assert!(a.enabled);
    assert_eq!(a.display_name, "first");
    assert_eq!(a.kind, ChannelKind::from_static("memory"));
    assert_eq!((a.created_at, a.updated_at), (T0, T0));
    assert_eq!(store.account(a.id).await.expect("account"), a);
    assert_eq!(store.accounts().await.expect("accounts"), vec![a.clone(), b.clone()]);

    let disabled = store.set_account_enabled(a.id, false, at(2)).await.expect("disable");
    assert!(!disabled.enabled);
    assert_eq!(disabled.updated_at, at(2));
    assert_eq!(store.account(a.id).await.expect("account"), disabled);

    let state = ConnectionState::NeedsLogin { reason: "session revoked".to_owned() };
    let updated = store.set_connection_state(a.id, &state, at(3)).await.expect("set state");
    assert_eq!(updated.connection, state);
    assert_eq!(store.account(a.id).await.expect("account").connection, state);
    assert_eq!(store.account(b.id).await.expect("account"), b, "other accounts are untouched");
    // Every state, with its reason, is kept as it was set.
    for (n, state) in [
        ConnectionState::Connected,
        ConnectionState::TransientDisconnect { reason: "connection reset".to_owned() },
        ConnectionState::LoggedOut,
        ConnectionState::Failed { reason: "unknown host".to_owned() },
        ConnectionState::Connecting,
    ]
    .into_iter()
    .enumerate()
    {
        let updated =
            store.set_connection_state(b.id, &state, at(10 + n as i64)).await.expect("set state");
        assert_eq!(updated.connection, state);
        assert_eq!(store.account(b.id).await.expect("account").connection, state);
    }

    let unknown = AccountId::new();
    assert!(is_not_found(&store.account(unknown).await.expect_err("unknown account")));
    assert!(is_not_found(
        &store.set_account_enabled(unknown, true, at(4)).await.expect_err("unknown")
    ));
    assert!(is_not_found(
        &store
            .set_connection_state(unknown, &ConnectionState::Connected, at(4))
            .await
            .expect_err("unknown")
    ));

    let dup = NewAccount {
        id: a.id,
        kind: ChannelKind::from_static("email"),
        display_name: "dup".into(),
        config: serde_json::Value::Null,
        enabled: true,
        settings: AccountSettings::default(),
    };
    assert!(store.create_account(dup, at(5)).await.is_err(), "an existing account id is refused");
    assert_eq!(store.accounts().await.expect("accounts").len(), 2);

    // A provider's configuration round-trips, and a kind no process here knows lists fine.
    let config = serde_json::json!({"imap": {"host": "mail.example.org", "port": 993}, "folders": ["INBOX"]});
    let other = NewAccount::new(ChannelKind::from_static("carrier-pigeon"), "coo")
        .with_config(config.clone());
    let other = store.create_account(other, at(6)).await.expect("an unknown kind is stored");
    let listed = store.accounts().await.expect("accounts still list");
    let found = listed.iter().find(|x| x.id == other.id).expect("listed");
    assert_eq!((found.kind.as_str(), &found.config), ("carrier-pigeon", &config));
    assert_eq!(store.account(a.id).await.expect("account").config, serde_json::Value::Null);
}

/// Account state values are put, overwritten, read, deleted and cleared per account, byte for
/// byte; writing to an unknown account is `NotFound`.
pub async fn account_state_put_get_delete_clear(store: Arc<dyn Store>) {
    let store = &*store;
    let a = new_account(store, "a", T0).await;
    let b = new_account(store, "b", T0).await;
    let binary: Vec<u8> = (0..=255u8).collect();

    assert_eq!(store.state_get(a.id, "session").await.expect("get"), None);
    store.state_put(a.id, "session", &binary).await.expect("put");
    store.state_put(a.id, "cursor:inbox", b"42").await.expect("put");
    store.state_put(a.id, "empty", b"").await.expect("put empty");
    store.state_put(b.id, "session", b"other account").await.expect("put");
    assert_eq!(store.state_get(a.id, "session").await.expect("get"), Some(binary.clone()));
    assert_eq!(store.state_get(a.id, "empty").await.expect("get"), Some(Vec::new()));

    store.state_put(a.id, "cursor:inbox", b"43").await.expect("overwrite");
    assert_eq!(store.state_get(a.id, "cursor:inbox").await.expect("get"), Some(b"43".to_vec()));

    store.state_delete(a.id, "cursor:inbox").await.expect("delete");
    assert_eq!(store.state_get(a.id, "cursor:inbox").await.expect("get"), None);
    store.state_delete(a.id, "never-set").await.expect("deleting a missing key is fine");

    store.state_clear(a.id).await.expect("clear");
    assert_eq!(store.state_get(a.id, "session").await.expect("get"), None);
    assert_eq!(store.state_get(a.id, "empty").await.expect("get"), None);
    assert_eq!(
        store.state_get(b.id, "session").await.expect("get"),
        Some(b"other account".to_vec()),
        "clearing one account leaves the others"
    );

    let err = store.state_put(AccountId::new(), "k", b"v").await.expect_err("unknown account");
    assert!(is_not_found(&err), "unknown account: {err:?}");
}

/// An update replaces only the fields given, and settings round-trip; a removed account is
/// neither listed nor found, its state, lease and unfinished sends go (a pending message
/// fails), and its messages stay readable unless purged, which deletes them and the account.
pub async fn accounts_update_and_remove_keeping_or_purging_messages(store: Arc<dyn Store>) {
    let store = &*store;
    let (account, conversation, pending, job) = queued_send(store, 10).await;
    let settings = AccountSettings::default()
        .with_lifecycle(LifecyclePolicy {
            idle_after: Some(Duration::from_secs(60)),
            ..LifecyclePolicy::default()
        })
        .with_send_rates(SendRates {
            per_account: Rate::per_minute(10).burst(2),
            per_chat: Rate::every(Duration::from_secs(5)),
        });
    let config = serde_json::json!({"host": "mail.example.org"});
    let update = AccountUpdate::default().config(config.clone()).settings(settings);
    let updated = store.update_account(account.id, &update, at(2)).await.expect("update");
    assert_eq!((&updated.config, updated.settings), (&config, settings));
    assert_eq!(updated.display_name, account.display_name, "fields not given are kept");
    let renamed = AccountUpdate::default().display_name("renamed");
    let renamed = store.update_account(account.id, &renamed, at(3)).await.expect("rename");
    assert_eq!((renamed.display_name.as_str(), renamed.settings), ("renamed", settings));
    assert_eq!(store.account(account.id).await.expect("account"), renamed);

    store.state_put(account.id, "session", b"s").await.expect("put");
    let lease = Lease::account_name(account.id);
    assert!(
        store
            .acquire_lease(&lease, "w", Duration::from_secs(60), at(3))
            .await
            .expect("lease")
            .is_some()
    );
    store.remove_account(account.id, false, at(4)).await.expect("remove");
    assert!(is_not_found(&store.account(account.id).await.expect_err("removed")));
    assert!(store.accounts().await.expect("accounts").iter().all(|a| a.id != account.id));
    assert_eq!(store.state_get(account.id, "session").await.expect("get"), None);
    assert!(store.state_put(account.id, "session", b"s").await.is_err(), "no state comes back");
    assert!(
        store
            .acquire_lease(&lease, "x", Duration::from_secs(60), at(4))
            .await
            .expect("lease")
            .is_some(),
        "its lease is gone"
    );
    let kept = store.messages(conversation, 10).await.expect("messages");
    assert_eq!(kept.len(), 2, "its messages stay");
    let failed = store.message(pending.id).await.expect("message");
    assert_eq!(failed.status, MessageStatus::Failed, "a pending send cannot go any more");
    assert_eq!(store.job(job).await.expect("job").state, JobState::Cancelled);
    assert!(
        store
            .claim("w", &[JobKind::Send], 10, Duration::from_secs(60), at(5))
            .await
            .expect("claim")
            .is_empty()
    );
    let again = store.remove_account(account.id, false, at(5)).await;
    assert!(matches!(again, Err(StoreError::NotFound { .. })), "{again:?}");
    assert!(is_not_found(
        &store.update_account(account.id, &update, at(5)).await.expect_err("removed")
    ));

    // Purged: the messages, conversations, identities and jobs go too.
    let other = new_account(store, "other", at(6)).await;
    let opened = ingest(store, other.id, inbound("o-1", "t", "bob", "hi", at(6)), at(6)).await;
    let req = send_request(opened.conversation_id, "ck-o", 3, at(6));
    let send_job = req.job_id;
    store.enqueue_send(req).await.expect("enqueue");
    store.remove_account(other.id, true, at(7)).await.expect("purge");
    assert!(is_not_found(&store.message(opened.message_id).await.expect_err("purged")));
    assert!(is_not_found(&store.conversation(opened.conversation_id).await.expect_err("purged")));
    assert!(is_not_found(&store.job(send_job).await.expect_err("purged")));
    assert_eq!(store.message_by_provider_id(other.id, "o-1").await.expect("lookup"), None);
    assert_eq!(store.messages(conversation, 10).await.expect("messages").len(), 2, "others stay");
}

/// The account's state lists by slot, and a replace is a compare-and-set: it applies only
/// while the value is still the expected one.
pub async fn account_state_lists_and_replaces_by_compare_and_set(store: Arc<dyn Store>) {
    let store = &*store;
    let a = new_account(store, "a", T0).await;
    let b = new_account(store, "b", T0).await;
    store.state_put(a.id, "session", b"s1").await.expect("put");
    store.state_put(a.id, "cursor", b"c1").await.expect("put");
    store.state_put(b.id, "session", b"other").await.expect("put");
    let entries = store.state_entries(a.id).await.expect("entries");
    assert_eq!(
        entries,
        vec![("cursor".to_owned(), b"c1".to_vec()), ("session".to_owned(), b"s1".to_vec())]
    );
    assert!(store.state_replace(a.id, "session", b"s1", b"s2").await.expect("replace"));
    assert!(
        !store.state_replace(a.id, "session", b"s1", b"stale").await.expect("replace"),
        "a value changed meanwhile is never overwritten"
    );
    assert!(!store.state_replace(a.id, "missing", b"", b"v").await.expect("replace"));
    assert_eq!(store.state_get(a.id, "session").await.expect("get"), Some(b"s2".to_vec()));
    assert_eq!(store.state_get(a.id, "missing").await.expect("get"), None);
    assert_eq!(store.state_entries(b.id).await.expect("entries").len(), 1);
    assert!(store.state_entries(AccountId::new()).await.expect("entries").is_empty());
}

// ----- ingest, identities, conversations -----

/// A first message creates an unlinked identity and opens a conversation; the message is
/// stored as given; the next message of the thread joins that conversation.
pub async fn ingest_stores_message_with_unlinked_identity_and_open_conversation(
    store: Arc<dyn Store>,
) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let mut msg = inbound("p-1", "chat-1", "tg:100", "hello", at(-60));
    msg.remote = IdentityInfo::new("tg:100").with_display_name("Alice").with_username("alice");
    msg.html = Some("<p>hello</p>".to_owned());
    msg.attachments = vec![Attachment {
        name: Some("a.txt".to_owned()),
        mime_type: "text/plain".to_owned(),
        size: 3,
        sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_owned(),
        blob_key: "sha256/ba/ba7816bf".to_owned(),
    }];
    let policy =
        LifecyclePolicy { expire_after: Some(Duration::from_secs(3600)), ..Default::default() };
    let req = request(account.id, msg.clone(), policy, T0);
    let given = (req.new_message_id, req.new_identity_id, req.new_conversation_id);
    let out = store.ingest(req).await.expect("ingest");
    assert_eq!(out.disposition, IngestDisposition::Stored);
    assert!(out.conversation_opened && !out.conversation_reactivated);
    assert_eq!(
        (out.message_id, out.identity_id, out.conversation_id),
        given,
        "the given ids are used"
    );

    let stored = store.message(out.message_id).await.expect("message");
    assert_eq!(stored.account_id, account.id);
    assert_eq!(stored.conversation_id, out.conversation_id);
    assert_eq!(stored.identity_id, out.identity_id);
    assert_eq!(stored.direction, Direction::Inbound);
    assert_eq!(stored.origin, Origin::Remote);
    assert_eq!(stored.provider_id.as_deref(), Some("p-1"));
    assert_eq!(stored.client_key, None);
    assert_eq!(stored.status, MessageStatus::Sent);
    assert_eq!(stored.text, msg.text);
    assert_eq!(stored.html, msg.html);
    assert_eq!(stored.attachments, msg.attachments);
    assert_eq!(stored.parse_error, None);
    assert_eq!(stored.sent_at, at(-60));
    assert_eq!(stored.created_at, T0);
    assert_eq!(
        store.message_by_provider_id(account.id, "p-1").await.expect("lookup"),
        Some(stored.clone())
    );
    assert_eq!(store.message_by_provider_id(account.id, "p-2").await.expect("lookup"), None);

    let identity = store.identity(out.identity_id).await.expect("identity");
    assert!(identity.is_unlinked(), "a new identity is unlinked");
    assert_eq!(identity.address, "tg:100");
    assert_eq!(identity.display_name.as_deref(), Some("Alice"));
    assert_eq!(identity.username.as_deref(), Some("alice"));
    assert_eq!(identity.merged_into, None);
    assert_eq!(
        store.find_identity(account.id, "tg:100").await.expect("find"),
        Some(identity.clone())
    );
    assert_eq!(store.find_identity(account.id, "tg:999").await.expect("find"), None);
    assert_eq!(
        store.identities(account.id, true).await.expect("identities"),
        vec![identity.clone()]
    );

    let conversation = store.conversation(out.conversation_id).await.expect("conversation");
    assert_eq!(conversation.thread_key, "chat-1");
    assert_eq!(conversation.status, ConversationStatus::Open);
    assert_eq!(conversation.primary_identity, identity.id);
    assert_eq!(conversation.contact_id, None);
    assert_eq!(conversation.opened_at, T0);
    assert_eq!(conversation.last_activity_at, T0);
    assert_eq!(conversation.expires_at, Some(at(3600)), "expiry comes from the policy");
    assert_eq!(conversation.closed_at, None);
    assert_eq!(
        store.active_conversation(account.id, "chat-1").await.expect("active"),
        Some(conversation.clone())
    );
    assert_eq!(store.active_conversation(account.id, "chat-2").await.expect("active"), None);

    let second =
        ingest(store, account.id, inbound("p-2", "chat-1", "tg:100", "again", at(-30)), at(10))
            .await;
    assert_eq!(second.disposition, IngestDisposition::Stored);
    assert_eq!(
        second.conversation_id, conversation.id,
        "the thread's active conversation is reused"
    );
    assert_eq!(second.identity_id, identity.id, "the identity is found again");
    assert!(!second.conversation_opened && !second.conversation_reactivated);
    let after = store.conversation(conversation.id).await.expect("conversation");
    assert_eq!(after.last_activity_at, at(10), "a message bumps the activity");
    assert!(after.version > conversation.version, "a message bumps the version");
    let listed = store.messages(conversation.id, 10).await.expect("messages");
    assert_eq!(ids(&listed, |m| m.id), ids(&[out.message_id, second.message_id], |m| *m));
    assert_eq!(store.identities(account.id, false).await.expect("identities").len(), 1);
}

/// Strings are stored faithfully whatever they contain, except NUL bytes, which are refused
/// with `InvalidInput` in the text or the thread key; an unknown account is `NotFound`; a
/// refused ingest writes nothing at all (no message, identity, conversation or cursor).
pub async fn ingest_rejects_bad_input_and_writes_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let cursor = |v: &[u8]| Some(CursorUpdate { key: "cursor".to_owned(), value: v.to_vec() });

    let mut nul_text = inbound("p-nul", "chat", "alice", "a\0b", T0);
    nul_text.cursor = cursor(b"1");
    let err = store.ingest(request(account.id, nul_text, LifecyclePolicy::default(), T0)).await;
    assert!(err.as_ref().is_err_and(is_invalid), "NUL in text: {err:?}");

    let mut nul_thread = inbound("p-nul2", "ch\0at", "alice", "fine", T0);
    nul_thread.cursor = cursor(b"2");
    let err = store.ingest(request(account.id, nul_thread, LifecyclePolicy::default(), T0)).await;
    assert!(err.as_ref().is_err_and(is_invalid), "NUL in thread key: {err:?}");

    let mut unknown = inbound("p-unknown", "chat", "alice", "fine", T0);
    unknown.cursor = cursor(b"3");
    let err =
        store.ingest(request(AccountId::new(), unknown, LifecyclePolicy::default(), T0)).await;
    assert!(err.as_ref().is_err_and(is_not_found), "unknown account: {err:?}");

    assert_eq!(store.message_by_provider_id(account.id, "p-nul").await.expect("lookup"), None);
    assert_eq!(store.message_by_provider_id(account.id, "p-nul2").await.expect("lookup"), None);
    assert!(store.identities(account.id, false).await.expect("identities").is_empty());
    assert!(store.conversations(account.id, None, 10).await.expect("conversations").is_empty());
    assert_eq!(store.state_get(account.id, "cursor").await.expect("state"), None);

    let odd = "emoji 🦀, RTL \u{202E}abc, combining e\u{301}, replacement \u{FFFD}, CRLF\r\n, \
               quotes '\"; DROP TABLE messages; --, backslash \\ and tab\t";
    let long = "x".repeat(100_000);
    let out = ingest(
        store,
        account.id,
        inbound("p-odd", "thread 'quoted' 🦀", "a@b.example", odd, T0),
        T0,
    )
    .await;
    assert_eq!(store.message(out.message_id).await.expect("message").text.as_deref(), Some(odd));
    let out = ingest(store, account.id, inbound("p-long", "chat", "alice", &long, T0), T0).await;
    assert_eq!(store.message(out.message_id).await.expect("message").text, Some(long));
    let conv = store.active_conversation(account.id, "thread 'quoted' 🦀").await.expect("active");
    assert!(conv.is_some(), "unusual thread keys are stored faithfully");
}

/// A provider id seen before is a duplicate: the existing message's ids come back, nothing
/// changes but the cursor.
pub async fn ingest_duplicate_returns_existing_and_moves_only_the_cursor(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let mut first = inbound("p-1", "chat", "alice", "original", T0);
    first.cursor = Some(CursorUpdate { key: "cursor".to_owned(), value: b"1".to_vec() });
    let out = ingest(store, account.id, first, T0).await;
    let before = store.conversation(out.conversation_id).await.expect("conversation");

    let mut again = inbound("p-1", "chat", "alice", "changed text", at(5));
    again.cursor = Some(CursorUpdate { key: "cursor".to_owned(), value: b"2".to_vec() });
    let dup = ingest(store, account.id, again, at(5)).await;
    assert_eq!(dup.disposition, IngestDisposition::Duplicate);
    assert_eq!(
        (dup.message_id, dup.conversation_id, dup.identity_id),
        (out.message_id, out.conversation_id, out.identity_id)
    );
    assert!(!dup.conversation_opened && !dup.conversation_reactivated);
    assert_eq!(
        store.message(out.message_id).await.expect("message").text.as_deref(),
        Some("original")
    );
    assert_eq!(store.conversation(out.conversation_id).await.expect("conversation"), before);
    assert_eq!(store.state_get(account.id, "cursor").await.expect("state"), Some(b"2".to_vec()));

    let other = new_account(store, "other", T0).await;
    let elsewhere = ingest(store, other.id, inbound("p-1", "chat", "alice", "x", T0), T0).await;
    assert_eq!(
        elsewhere.disposition,
        IngestDisposition::Stored,
        "provider ids are unique per account only"
    );
}

/// The same message delivered 100 times from 8 tasks at once is stored once: one `Stored`,
/// the rest `Duplicate` with the same ids; one identity, one conversation.
pub async fn ingest_same_message_concurrently_is_stored_once(store: Arc<dyn Store>) {
    let account = new_account(&*store, "acc", T0).await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(&store);
        let count = if task < 4 { 13 } else { 12 };
        tasks.push(tokio::spawn(async move {
            let mut outs = Vec::new();
            for _ in 0..count {
                let msg = inbound("p-race", "chat", "alice", "once", T0);
                let out = store
                    .ingest(request(account.id, msg, LifecyclePolicy::default(), T0))
                    .await
                    .expect("a concurrent duplicate delivery must not fail");
                outs.push(out);
            }
            outs
        }));
    }
    let mut outs = Vec::new();
    for t in tasks {
        outs.extend(t.await.expect("task"));
    }
    assert_eq!(outs.len(), 100);
    let stored = outs.iter().filter(|o| o.disposition == IngestDisposition::Stored).count();
    assert_eq!(stored, 1, "exactly one delivery stores the message");
    assert!(outs.iter().all(
        |o| o.message_id == outs[0].message_id && o.conversation_id == outs[0].conversation_id
    ));
    assert_eq!(outs.iter().filter(|o| o.conversation_opened).count(), 1);
    let conversations = store.conversations(account.id, None, 10).await.expect("conversations");
    assert_eq!(conversations.len(), 1);
    assert_eq!(store.messages(conversations[0].id, 10).await.expect("messages").len(), 1);
    assert_eq!(store.identities(account.id, false).await.expect("identities").len(), 1);
}

/// Distinct first messages of a new thread racing each other open one conversation.
pub async fn concurrent_first_messages_open_one_conversation(store: Arc<dyn Store>) {
    let account = new_account(&*store, "acc", T0).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let msg = inbound(&format!("p-{i}"), "new-thread", "alice", "hi", T0);
            store
                .ingest(request(account.id, msg, LifecyclePolicy::default(), T0))
                .await
                .expect("ingest")
        }));
    }
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.expect("task"));
    }
    assert!(outs.iter().all(|o| o.disposition == IngestDisposition::Stored));
    assert!(
        outs.iter().all(|o| o.conversation_id == outs[0].conversation_id),
        "one conversation for the thread"
    );
    assert_eq!(outs.iter().filter(|o| o.conversation_opened).count(), 1);
    assert_eq!(
        store.identities(account.id, false).await.expect("identities").len(),
        1,
        "one identity"
    );
    assert_eq!(store.messages(outs[0].conversation_id, 100).await.expect("messages").len(), 8);
}

/// The echo of our own send (outbound, carrying our client key) turns the pending message into
/// `Sent` with the provider id instead of storing a second message; a second echo is a
/// duplicate; the owner's message from another app is stored as a new outbound message.
pub async fn echo_of_own_send_updates_the_pending_message(store: Arc<dyn Store>) {
    let store = &*store;
    let (account, conversation, pending, _job) = queued_send(store, 10).await;
    assert_eq!(pending.status, MessageStatus::Pending);
    assert_eq!(pending.direction, Direction::Outbound);
    assert_eq!(pending.provider_id, None);
    assert_eq!(pending.client_key.as_deref(), Some("ck-1"));

    let mut echo = inbound("p-echo", "t", "alice", "hello from the service", at(2));
    echo.direction = Direction::Outbound;
    echo.origin = Origin::OtherApp;
    echo.client_key = Some("ck-1".to_owned());
    let out = ingest(store, account.id, echo.clone(), at(2)).await;
    assert_eq!(out.disposition, IngestDisposition::EchoMatched);
    assert_eq!(out.message_id, pending.id);
    assert_eq!(out.conversation_id, conversation);
    let sent = store.message(pending.id).await.expect("message");
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(sent.provider_id.as_deref(), Some("p-echo"));
    assert_eq!(sent.origin, Origin::Service("test".to_owned()), "the echo keeps our origin");
    assert_eq!(
        store.message_by_provider_id(account.id, "p-echo").await.expect("lookup").map(|m| m.id),
        Some(pending.id)
    );
    assert_eq!(
        store.messages(conversation, 10).await.expect("messages").len(),
        2,
        "no second message"
    );

    let again = ingest(store, account.id, echo, at(3)).await;
    assert_eq!(again.disposition, IngestDisposition::Duplicate);
    assert_eq!(again.message_id, pending.id);

    let mut other_app = inbound("p-phone", "t", "alice", "typed on the phone", at(4));
    other_app.direction = Direction::Outbound;
    other_app.origin = Origin::OtherApp;
    let out = ingest(store, account.id, other_app, at(4)).await;
    assert_eq!(out.disposition, IngestDisposition::Stored);
    assert_eq!(out.conversation_id, conversation);
    let stored = store.message(out.message_id).await.expect("message");
    assert_eq!((stored.direction, stored.origin), (Direction::Outbound, Origin::OtherApp));
    assert_eq!(store.messages(conversation, 10).await.expect("messages").len(), 3);
}

/// A stray outbound copy of a send (its echo stored without our client key, as after a
/// crash) is merged away so that the send can take the provider id; an inbound holder, the
/// send itself, or a missing holder change nothing.
pub async fn a_stray_copy_of_a_send_is_merged_and_nothing_else_ever_is(store: Arc<dyn Store>) {
    let store = &*store;
    let (account, conversation, pending, _job) = queued_send(store, 10).await;
    let mut stray = inbound("p-stray", "t", "alice", "hello from the service", at(2));
    stray.direction = Direction::Outbound;
    stray.origin = Origin::OtherApp;
    let stray = ingest(store, account.id, stray, at(2)).await;
    assert_eq!(stray.disposition, IngestDisposition::Stored, "stored as the owner's message");

    assert_eq!(store.merge_stray(pending.id, "in-1").await.expect("merge"), None, "inbound");
    assert_eq!(store.merge_stray(pending.id, "nobody").await.expect("merge"), None, "missing");
    assert!(store.message_by_provider_id(account.id, "in-1").await.expect("lookup").is_some());
    let unknown = store.merge_stray(MessageId::new(), "p-stray").await;
    assert!(matches!(unknown, Err(StoreError::NotFound { .. })), "{unknown:?}");

    let removed = store.merge_stray(pending.id, "p-stray").await.expect("merge");
    assert_eq!(removed, Some(stray.message_id));
    assert!(matches!(store.message(stray.message_id).await, Err(StoreError::NotFound { .. })));
    let lease = claim_one(store, "w", 60, at(3)).await;
    let sent = MessageOutcome::Sent { provider_id: "p-stray".to_owned(), at: at(3) };
    store.complete(&lease, Some(sent), at(3)).await.expect("the send takes the id");
    let kept = store.message_by_provider_id(account.id, "p-stray").await.expect("lookup");
    let kept = kept.expect("one row holds the id");
    assert_eq!((kept.id, kept.status), (pending.id, MessageStatus::Sent));
    assert_eq!(store.messages(conversation, 10).await.expect("messages").len(), 2, "one row");
    assert_eq!(store.merge_stray(pending.id, "p-stray").await.expect("again"), None, "itself");
}

/// A send whose provider id an inbound message holds (mail sent to the account's own
/// address) completes `Sent` without the id, with its note; the inbound row keeps the id.
pub async fn a_send_whose_id_is_held_inbound_ends_sent_without_it(store: Arc<dyn Store>) {
    let store = &*store;
    let (account, _conversation, pending, _job) = queued_send(store, 10).await;
    let lease = claim_one(store, "w", 60, at(3)).await;
    let taken = MessageOutcome::Sent { provider_id: "in-1".to_owned(), at: at(3) };
    let refused = store.complete(&lease, Some(taken), at(3)).await;
    assert!(matches!(refused, Err(StoreError::InvalidInput { .. })), "{refused:?}");
    let note = "sent, but its provider id `in-1` is held by an inbound message".to_owned();
    let unlinked = MessageOutcome::SentUnlinked { at: at(3), note: note.clone() };
    store.complete(&lease, Some(unlinked), at(4)).await.expect("complete unlinked");
    let m = store.message(pending.id).await.expect("message");
    assert_eq!((m.status, m.provider_id, m.error), (MessageStatus::Sent, None, Some(note)));
    assert_eq!(m.sent_at, at(3));
    let holder = store.message_by_provider_id(account.id, "in-1").await.expect("lookup");
    assert_eq!(holder.expect("the inbound row keeps it").direction, Direction::Inbound);
}

/// A reply (by `reply_to` or `references`) to a known message joins that message's
/// conversation even under another thread key; unknown references fall back to the key.
pub async fn reply_joins_the_conversation_of_the_message_it_answers(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let first =
        ingest(store, account.id, inbound("<m1@x>", "<m1@x>", "a@x", "question", T0), T0).await;

    let mut by_reply = inbound("<m2@x>", "<other@x>", "a@x", "reply", at(1));
    by_reply.reply_to = Some("<m1@x>".to_owned());
    let out = ingest(store, account.id, by_reply, at(1)).await;
    assert_eq!(out.conversation_id, first.conversation_id, "reply_to finds the conversation");

    let mut by_refs = inbound("<m3@x>", "<another@x>", "b@x", "cc reply", at(2));
    by_refs.references =
        vec!["<unknown@x>".to_owned(), "<m1@x>".to_owned(), "<unknown2@x>".to_owned()];
    let out = ingest(store, account.id, by_refs, at(2)).await;
    assert_eq!(out.conversation_id, first.conversation_id, "references find the conversation");

    let mut unknown = inbound("<m4@x>", "<fresh@x>", "a@x", "new topic", at(3));
    unknown.reply_to = Some("<never-seen@x>".to_owned());
    let out = ingest(store, account.id, unknown, at(3)).await;
    assert_ne!(out.conversation_id, first.conversation_id);
    assert!(out.conversation_opened);
    let fresh = store.conversation(out.conversation_id).await.expect("conversation");
    assert_eq!(fresh.thread_key, "<fresh@x>");
}

/// The cursor is written in the same commit as the message, and not at all when the ingest
/// fails.
pub async fn cursor_is_written_with_the_message_and_not_on_failure(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let mut msg = inbound("p-1", "chat", "alice", "hi", T0);
    msg.cursor = Some(CursorUpdate { key: "imap:INBOX".to_owned(), value: b"sealed-1".to_vec() });
    ingest(store, account.id, msg, T0).await;
    assert_eq!(
        store.state_get(account.id, "imap:INBOX").await.expect("state"),
        Some(b"sealed-1".to_vec())
    );

    let mut bad = inbound("p-2", "chat", "alice", "bad \0 text", at(1));
    bad.cursor = Some(CursorUpdate { key: "imap:INBOX".to_owned(), value: b"sealed-2".to_vec() });
    assert!(
        store.ingest(request(account.id, bad, LifecyclePolicy::default(), at(1))).await.is_err()
    );
    assert_eq!(
        store.state_get(account.id, "imap:INBOX").await.expect("state"),
        Some(b"sealed-1".to_vec()),
        "a failed ingest does not advance the cursor"
    );
    assert_eq!(store.message_by_provider_id(account.id, "p-2").await.expect("lookup"), None);
}

/// Defects round-trip as they were given, and [`MessageStore::messages_with_defects`] lists the
/// degraded messages of one account, newest first, filtered by code; a store refuses more
/// defects than the limit.
pub async fn defects_round_trip_and_degraded_messages_are_listed_by_code(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "a", T0).await;
    let other = new_account(store, "b", T0).await;
    let cut = crate::Defect::new(crate::defect::TEXT_TRUNCATED).field("text").size(9).limit(4);
    let left_out = crate::Defect::new(crate::defect::ATTACHMENT_TOO_LARGE)
        .field("attachments[0]")
        .size(99)
        .limit(10)
        .left_out(Some("a_b%.pdf".into()), "application/pdf");
    let own = crate::Defect::new("missing_boundary");
    let mut m1 = inbound("p-1", "chat", "alice", "cut", at(1));
    m1.defects = vec![cut.clone(), left_out.clone()];
    let m2 = inbound("p-2", "chat", "alice", "fine", at(2));
    let mut m3 = inbound("p-3", "chat", "alice", "own", at(3));
    m3.defects = vec![own.clone()];
    let mut m4 = inbound("p-4", "chat", "alice", "other account", at(4));
    m4.defects = vec![cut.clone()];
    let o1 = ingest(store, account.id, m1, at(1)).await;
    let o2 = ingest(store, account.id, m2, at(2)).await;
    let o3 = ingest(store, account.id, m3, at(3)).await;
    ingest(store, other.id, m4, at(4)).await;

    let stored = store.message(o1.message_id).await.expect("message");
    assert_eq!(stored.defects, vec![cut, left_out], "defects round-trip");
    assert!(store.message(o2.message_id).await.expect("message").defects.is_empty());

    let ids = |list: Vec<Message>| list.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let all = store.messages_with_defects(account.id, None, 10).await.expect("list");
    assert_eq!(ids(all), vec![o3.message_id, o1.message_id], "newest first, this account's");
    let cut_only = store
        .messages_with_defects(account.id, Some(crate::defect::TEXT_TRUNCATED), 10)
        .await
        .expect("list");
    assert_eq!(ids(cut_only), vec![o1.message_id]);
    let own_only =
        store.messages_with_defects(account.id, Some("missing_boundary"), 10).await.expect("list");
    assert_eq!(ids(own_only), vec![o3.message_id]);
    let like_chars =
        store.messages_with_defects(account.id, Some("text%truncated"), 10).await.expect("list");
    assert!(like_chars.is_empty(), "a code is matched exactly, not as a pattern");
    let limited = store.messages_with_defects(account.id, None, 1).await.expect("list");
    assert_eq!(ids(limited), vec![o3.message_id]);

    let mut too_many = inbound("p-5", "chat", "alice", "many", at(5));
    too_many.defects =
        (0..=crate::validate::Limits::DEFAULT.defects).map(|_| crate::Defect::new("x")).collect();
    let refused =
        store.ingest(request(account.id, too_many, LifecyclePolicy::default(), at(5))).await;
    assert!(matches!(refused, Err(StoreError::InvalidInput { .. })), "{refused:?}");
}

/// A conversation's assignee is set by compare-and-set: of operators claiming at once exactly
/// one gets it; releasing or transferring needs the current holder; ingest keeps it.
pub async fn assignment_is_compare_and_set_and_survives_ingest(store: Arc<dyn Store>) {
    let account = new_account(&*store, "a", T0).await;
    let first =
        ingest(&*store, account.id, inbound("p-1", "chat", "alice", "hi", at(1)), at(1)).await;
    let id = first.conversation_id;
    let version = store.conversation(id).await.expect("conversation").version;

    let claims = (0..10).map(|i| {
        let store = Arc::clone(&store);
        async move { store.set_assignee(id, None, Some(&format!("op-{i}")), at(2)).await }
    });
    let results = futures::future::join_all(claims).await;
    let winners: Vec<&Conversation> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one operator gets it: {results:?}");
    let holder = winners[0].assignee.clone().expect("assigned");
    assert_eq!(winners[0].version, version + 1, "the version moves");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, StoreError::AssigneeChanged { current, .. } if current.as_deref() == Some(holder.as_str())),
                "the losers are told who has it: {e:?}"
            );
        }
    }

    let wrong = store.set_assignee(id, Some("somebody-else"), None, at(3)).await;
    assert!(matches!(wrong, Err(StoreError::AssigneeChanged { .. })), "{wrong:?}");
    let moved =
        store.set_assignee(id, Some(&holder), Some("op-boss"), at(3)).await.expect("transfer");
    assert_eq!(moved.assignee.as_deref(), Some("op-boss"));

    ingest(&*store, account.id, inbound("p-2", "chat", "alice", "still there?", at(4)), at(4))
        .await;
    let read = store.conversation(id).await.expect("conversation");
    assert_eq!(read.assignee.as_deref(), Some("op-boss"), "a new message keeps the assignee");
    let listed = store.conversations(account.id, None, 10).await.expect("list");
    assert_eq!(listed[0].assignee.as_deref(), Some("op-boss"));

    let released = store.set_assignee(id, Some("op-boss"), None, at(5)).await.expect("release");
    assert_eq!(released.assignee, None);
    let unknown = store.set_assignee(ConversationId::new(), None, Some("x"), at(6)).await;
    assert!(matches!(unknown, Err(StoreError::NotFound { .. })), "{unknown:?}");
}

/// A batch is ingested in order with the per-message rules (duplicates, also within the
/// batch); a refused batch can be retried and then stores each message once.
pub async fn ingest_batch_in_order_with_dedup(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let req = |p: &str, text: &str| {
        request(
            account.id,
            inbound(p, "chat", "alice", text, T0),
            LifecyclePolicy::default(),
            at(1),
        )
    };
    let first = ingest(store, account.id, inbound("p-1", "chat", "alice", "one", T0), T0).await;

    let outs = store
        .ingest_batch(&[
            req("p-2", "two"),
            req("p-1", "one"),
            req("p-3", "three"),
            req("p-2", "two"),
        ])
        .await
        .expect("batch");
    let dispositions: Vec<_> = outs.iter().map(|o| o.disposition).collect();
    use IngestDisposition::{Duplicate, Stored};
    assert_eq!(dispositions, vec![Stored, Duplicate, Stored, Duplicate]);
    assert_eq!(outs[1].message_id, first.message_id);
    assert_eq!(
        outs[3].message_id, outs[0].message_id,
        "a duplicate within the batch finds the first"
    );
    assert_eq!(store.messages(first.conversation_id, 10).await.expect("messages").len(), 3);

    let bad =
        store.ingest_batch(&[req("p-4", "four"), req("p-5", "fi\0ve"), req("p-6", "six")]).await;
    assert!(bad.is_err(), "a batch with a bad message fails");
    assert!(
        store.message_by_provider_id(account.id, "p-6").await.expect("lookup").is_none(),
        "nothing after the bad one"
    );
    let outs = store
        .ingest_batch(&[req("p-4", "four"), req("p-5", "five"), req("p-6", "six")])
        .await
        .expect("retried batch");
    assert_eq!(outs.len(), 3);
    assert_eq!(
        store.messages(first.conversation_id, 10).await.expect("messages").len(),
        6,
        "each stored once"
    );
}

/// Linking sets the contact (and that of the identity's active conversations), unlinking
/// clears it; merging moves conversations and messages to the kept identity, lookups of the
/// merged address find the kept one, and the kept one takes the contact if it had none.
pub async fn identity_link_unlink_and_merge(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let a = ingest(store, account.id, inbound("p-1", "thread-a", "alice@x", "hi", T0), T0).await;
    let b = ingest(store, account.id, inbound("p-2", "thread-b", "alice@work", "hi", T0), T0).await;
    assert_ne!(a.identity_id, b.identity_id);

    let contact = ContactId::new("crm-42");
    let linked =
        store.link_identity(a.identity_id, Some(contact.clone()), at(1)).await.expect("link");
    assert_eq!(linked.contact_id, Some(contact.clone()));
    assert!(!linked.is_unlinked());
    assert_eq!(store.identity(a.identity_id).await.expect("identity"), linked);
    assert_eq!(
        ids(&store.identities(account.id, true).await.expect("identities"), |i| i.id),
        vec![b.identity_id]
    );
    assert_eq!(
        store.conversation(a.conversation_id).await.expect("conv").contact_id,
        Some(contact.clone())
    );

    let unlinked = store.link_identity(a.identity_id, None, at(2)).await.expect("unlink");
    assert!(unlinked.is_unlinked());
    assert_eq!(store.identities(account.id, true).await.expect("identities").len(), 2);

    let other = ContactId::new("crm-7");
    store.link_identity(b.identity_id, Some(other.clone()), at(3)).await.expect("link b");
    let kept = store.merge_identities(a.identity_id, b.identity_id, at(4)).await.expect("merge");
    assert_eq!(kept.id, a.identity_id);
    assert_eq!(kept.contact_id, Some(other), "the kept identity takes the merged one's contact");
    let merged = store.identity(b.identity_id).await.expect("merged identity is still readable");
    assert_eq!(merged.merged_into, Some(a.identity_id));
    assert_eq!(
        store.find_identity(account.id, "alice@work").await.expect("find").map(|i| i.id),
        Some(a.identity_id)
    );
    assert_eq!(
        ids(&store.identities(account.id, false).await.expect("identities"), |i| i.id),
        vec![a.identity_id]
    );
    assert_eq!(
        store.conversation(b.conversation_id).await.expect("conv").primary_identity,
        a.identity_id
    );
    assert_eq!(store.message(b.message_id).await.expect("message").identity_id, a.identity_id);

    let later =
        ingest(store, account.id, inbound("p-3", "thread-c", "alice@work", "new", at(5)), at(5))
            .await;
    assert_eq!(later.identity_id, a.identity_id, "a merged address resolves to the kept identity");

    let err =
        store.merge_identities(a.identity_id, a.identity_id, at(6)).await.expect_err("self merge");
    assert!(is_invalid(&err), "merging into itself: {err:?}");
    let err = store.link_identity(IdentityId::new(), None, at(6)).await.expect_err("unknown");
    assert!(is_not_found(&err));
    let err =
        store.merge_identities(a.identity_id, IdentityId::new(), at(6)).await.expect_err("unknown");
    assert!(is_not_found(&err));
}

/// Messages of a conversation are listed oldest first by provider time, at most `limit`;
/// conversations newest activity first, optionally of one status.
pub async fn listings_are_ordered_and_limited(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let m2 = ingest(store, account.id, inbound("p-2", "chat", "alice", "2", at(-20)), T0).await;
    let m3 = ingest(store, account.id, inbound("p-3", "chat", "alice", "3", at(-10)), at(1)).await;
    let m1 = ingest(store, account.id, inbound("p-1", "chat", "alice", "1", at(-30)), at(2)).await;
    let listed = store.messages(m1.conversation_id, 10).await.expect("messages");
    let order: Vec<MessageId> = listed.iter().map(|m| m.id).collect();
    assert_eq!(order, vec![m1.message_id, m2.message_id, m3.message_id]);
    assert_eq!(store.messages(m1.conversation_id, 2).await.expect("messages").len(), 2);

    let other = ingest(store, account.id, inbound("p-4", "chat-2", "bob", "b", T0), at(10)).await;
    let convs = store.conversations(account.id, None, 10).await.expect("conversations");
    assert_eq!(
        convs.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![other.conversation_id, m1.conversation_id]
    );
    assert_eq!(store.conversations(account.id, None, 1).await.expect("conversations").len(), 1);
    let c = store.conversation(m1.conversation_id).await.expect("conv");
    store
        .set_conversation_status(c.id, c.version, ConversationStatus::Closed, at(11))
        .await
        .expect("close");
    let closed = store
        .conversations(account.id, Some(ConversationStatus::Closed), 10)
        .await
        .expect("closed");
    assert_eq!(closed.iter().map(|c| c.id).collect::<Vec<_>>(), vec![m1.conversation_id]);
    let open =
        store.conversations(account.id, Some(ConversationStatus::Open), 10).await.expect("open");
    assert_eq!(open.iter().map(|c| c.id).collect::<Vec<_>>(), vec![other.conversation_id]);
    let err = store.conversation(ConversationId::new()).await.expect_err("unknown");
    assert!(is_not_found(&err));
    let err = store.message(MessageId::new()).await.expect_err("unknown");
    assert!(is_not_found(&err));
}

/// Keyset listings go newest first and resume strictly before a position: same-time rows are
/// ordered by id, and a row stored between two pages never repeats or shifts a row.
pub async fn keyset_listings_page_newest_first_without_repeats_or_gaps(store: Arc<dyn Store>) {
    use crate::page::Position;
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let mut ids = Vec::new();
    let mut conversation = None;
    // Two messages share each second: the id breaks the tie.
    for n in 0..6 {
        let m = inbound(&format!("p-{n}"), "chat", "alice", "x", at(n / 2));
        let out = ingest(store, account.id, m, at(10 + n)).await;
        conversation = Some(out.conversation_id);
        ids.push(out.message_id);
    }
    let conversation = conversation.expect("a conversation");
    let position = |m: &Message| Position { at: m.sent_at, id: m.id.to_string() };
    let first = store.messages_before(conversation, None, 4).await.expect("page 1");
    let mut expected: Vec<Message> = store.messages(conversation, 10).await.expect("all");
    expected.reverse();
    assert_eq!(first, expected[..4].to_vec(), "newest first, ties by id descending");
    // A newer message arrives between the pages: the next page is not shifted by it.
    ingest(store, account.id, inbound("p-new", "chat", "alice", "y", at(100)), at(20)).await;
    let after = position(first.last().expect("a row"));
    let second = store.messages_before(conversation, Some(&after), 4).await.expect("page 2");
    assert_eq!(second, expected[4..].to_vec(), "the rest, none repeated, none skipped");
    let last = position(second.last().expect("a row"));
    assert!(store.messages_before(conversation, Some(&last), 4).await.expect("end").is_empty());

    let other = new_account(store, "other", T0).await;
    let o = ingest(store, other.id, inbound("o-1", "t", "bob", "z", at(1)), at(30)).await;
    let q = crate::reads::ConversationQuery::all;
    let all = store.conversations_before(&q(), None, 10).await.expect("all accounts");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, o.conversation_id, "newest activity first");
    let mine = store.conversations_before(&q().account(account.id), None, 10).await.expect("one");
    assert_eq!(mine.iter().map(|c| c.id).collect::<Vec<_>>(), vec![conversation]);
    let p = Position { at: all[0].last_activity_at, id: all[0].id.to_string() };
    let rest = store.conversations_before(&q(), Some(&p), 10).await.expect("after");
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), vec![conversation]);
    let closed = store
        .conversations_before(&q().status(ConversationStatus::Closed), None, 10)
        .await
        .expect("closed");
    assert!(closed.is_empty());
    // By assignee, unassigned, and unlinked (no contact yet).
    store.set_assignee(conversation, None, Some("ana"), at(40)).await.expect("claim");
    let ids = |v: Vec<Conversation>| v.iter().map(|c| c.id).collect::<Vec<_>>();
    let ana = store.conversations_before(&q().assignee("ana"), None, 10).await.expect("ana");
    assert_eq!(ids(ana), vec![conversation]);
    let nobody = store.conversations_before(&q().unassigned(), None, 10).await.expect("nobody");
    assert_eq!(ids(nobody), vec![o.conversation_id]);
    let bob = all[0].primary_identity;
    store.link_identity(bob, Some(ContactId::new("crm-1")), at(41)).await.expect("link");
    let new = store.conversations_before(&q().unlinked(), None, 10).await.expect("unlinked");
    assert_eq!(ids(new), vec![conversation], "the linked person's conversation is not new");
}

/// Jobs list newest first by creation, filtered by state, account, kind and creation time,
/// resuming strictly before a position.
pub async fn jobs_page_newest_first_by_state_and_account(store: Arc<dyn Store>) {
    use crate::page::Position;
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let mut created = Vec::new();
    for n in 0..5 {
        let job = NewJob { account_id: Some(account.id), ..history_job(at(n)) };
        let id = job.id;
        store.enqueue(job, at(n)).await.expect("enqueue");
        created.push(id);
    }
    let other = store.enqueue(history_job(at(9)), at(9)).await.expect("enqueue");
    let q = crate::reads::JobQuery::all;
    let all = store.jobs_before(&q(), None, 10).await.expect("all");
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].id, other.job_id, "newest first");
    let mine = store.jobs_before(&q().account(account.id), None, 2).await.expect("page 1");
    assert_eq!(mine.iter().map(|j| j.id).collect::<Vec<_>>(), vec![created[4], created[3]]);
    let p = Position { at: mine[1].created_at, id: mine[1].id.to_string() };
    let rest = store.jobs_before(&q().account(account.id), Some(&p), 10).await.expect("page 2");
    assert_eq!(
        rest.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![created[2], created[1], created[0]]
    );
    let available = store.jobs_before(&q().state(JobState::Available), None, 10).await;
    assert_eq!(available.expect("available").len(), 6);
    let dead = store.jobs_before(&q().state(JobState::Discarded), None, 10).await;
    assert!(dead.expect("dead letter").is_empty());
    // By kind and by creation time, `[since, until)`.
    let sends = store.jobs_before(&q().kind(JobKind::Send), None, 10).await.expect("sends");
    assert!(sends.is_empty(), "only history syncs were queued");
    let syncs = store.jobs_before(&q().kind(JobKind::HistorySync), None, 10).await;
    assert_eq!(syncs.expect("syncs").len(), 6);
    let window = q().account(account.id).created(Some(at(1)), Some(at(3)));
    let between = store.jobs_before(&window, None, 10).await.expect("window");
    assert_eq!(between.iter().map(|j| j.id).collect::<Vec<_>>(), vec![created[2], created[1]]);
    let since = store.jobs_before(&q().created(Some(at(4)), None), None, 10).await;
    assert_eq!(
        since.expect("since").iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![other.job_id, created[4]]
    );
}

/// Accounts list newest first, removed ones never, resuming strictly before a position.
pub async fn accounts_page_newest_first_without_removed_ones(store: Arc<dyn Store>) {
    use crate::page::Position;
    let store = &*store;
    let a = new_account(store, "a", at(1)).await;
    let b = new_account(store, "b", at(2)).await;
    let c = new_account(store, "c", at(3)).await;
    store.remove_account(b.id, false, at(4)).await.expect("remove");
    let all = store.accounts_before(None, 10).await.expect("all");
    assert_eq!(all.iter().map(|x| x.id).collect::<Vec<_>>(), vec![c.id, a.id]);
    let p = Position { at: c.created_at, id: c.id.to_string() };
    let rest = store.accounts_before(Some(&p), 10).await.expect("after");
    assert_eq!(rest.iter().map(|x| x.id).collect::<Vec<_>>(), vec![a.id]);
    assert_eq!(store.accounts_before(None, 1).await.expect("one").len(), 1);
}

/// Identities list newest first, the unlinked ones alone on request, merged ones never,
/// resuming strictly before a position.
pub async fn identities_page_newest_first_without_merged_ones(store: Arc<dyn Store>) {
    use crate::page::Position;
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let mut ids = Vec::new();
    for (n, who) in ["ann", "ben", "cid", "dan"].iter().enumerate() {
        let sec = i64::try_from(n).unwrap_or(0);
        let m = inbound(&format!("p-{who}"), who, who, "hi", at(sec));
        ids.push(ingest(store, account.id, m, at(sec)).await.identity_id);
    }
    store.link_identity(ids[1], Some(ContactId("c-1".to_owned())), at(10)).await.expect("link");
    store.merge_identities(ids[0], ids[3], at(11)).await.expect("merge");
    let all = store.identities_before(account.id, false, None, 10).await.expect("all");
    assert_eq!(all.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[2], ids[1], ids[0]]);
    let p = Position { at: all[0].created_at, id: all[0].id.to_string() };
    let rest = store.identities_before(account.id, false, Some(&p), 1).await.expect("page 2");
    assert_eq!(rest.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[1]]);
    let unlinked = store.identities_before(account.id, true, None, 10).await.expect("unlinked");
    assert_eq!(unlinked.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[2], ids[0]]);
}

/// A status change is a compare-and-set on the version: it succeeds with the version read,
/// bumps it, and fails with `VersionConflict` once anything changed the conversation.
pub async fn conversation_status_is_compare_and_set(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let out = ingest(store, account.id, inbound("p-1", "chat", "alice", "hi", T0), T0).await;
    let read = store.conversation(out.conversation_id).await.expect("conv");

    let idle = store
        .set_conversation_status(read.id, read.version, ConversationStatus::Idle, at(1))
        .await
        .expect("idle");
    assert_eq!(idle.status, ConversationStatus::Idle);
    assert!(idle.version > read.version);
    assert_eq!(idle.closed_at, None);
    let err = store
        .set_conversation_status(read.id, read.version, ConversationStatus::Closed, at(2))
        .await
        .expect_err("stale version");
    assert!(matches!(err, StoreError::VersionConflict { .. }), "stale version: {err:?}");
    assert_eq!(
        store.conversation(read.id).await.expect("conv"),
        idle,
        "a lost CAS changes nothing"
    );

    ingest(store, account.id, inbound("p-2", "chat", "alice", "hi", at(3)), at(3)).await;
    let err = store
        .set_conversation_status(read.id, idle.version, ConversationStatus::Closed, at(4))
        .await
        .expect_err("a message came in meanwhile");
    assert!(matches!(err, StoreError::VersionConflict { .. }));

    let fresh = store.conversation(read.id).await.expect("conv");
    assert_eq!(fresh.status, ConversationStatus::Open);
    let closed = store
        .set_conversation_status(read.id, fresh.version, ConversationStatus::Closed, at(5))
        .await
        .expect("close");
    assert_eq!(closed.status, ConversationStatus::Closed);
    assert_eq!(closed.closed_at, Some(at(5)));
    assert_eq!(store.active_conversation(account.id, "chat").await.expect("active"), None);
    let err = store
        .set_conversation_status(ConversationId::new(), 0, ConversationStatus::Closed, at(6))
        .await
        .expect_err("unknown");
    assert!(is_not_found(&err));
}

/// A sweep racing an inbound message never leaves two active conversations for one thread:
/// either the close loses its compare-and-set and the conversation stays open with the
/// message, or it wins and the message opens the next conversation (or reopens, per policy).
pub async fn sweep_racing_inbound_never_leaves_two_active_conversations(store: Arc<dyn Store>) {
    let account = new_account(&*store, "acc", T0).await;
    for round in 0..24 {
        let thread = format!("race-{round}");
        let policy = LifecyclePolicy {
            on_closed: if round % 2 == 0 { OnClosed::StartNew } else { OnClosed::Reopen },
            ..Default::default()
        };
        let first = store
            .ingest(request(
                account.id,
                inbound(&format!("{thread}-a"), &thread, "alice", "a", T0),
                policy,
                T0,
            ))
            .await
            .expect("ingest");
        let read = store.conversation(first.conversation_id).await.expect("conv");

        let sweeper = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .set_conversation_status(
                        read.id,
                        read.version,
                        ConversationStatus::Closed,
                        at(10),
                    )
                    .await
            })
        };
        let inbound_task = {
            let store = Arc::clone(&store);
            let msg = inbound(&format!("{thread}-b"), &thread, "alice", "b", at(10));
            tokio::spawn(
                async move { store.ingest(request(account.id, msg, policy, at(10))).await },
            )
        };
        let swept = sweeper.await.expect("task");
        let second = inbound_task.await.expect("task").expect("the message is stored either way");
        if let Err(e) = &swept {
            assert!(
                matches!(e, StoreError::VersionConflict { .. }),
                "the sweep may only lose its CAS: {e:?}"
            );
        }
        let active = active_in_thread(&*store, account.id, &thread).await;
        assert_eq!(
            active.len(),
            1,
            "round {round}: exactly one active conversation, got {active:?}"
        );
        assert_eq!(
            active[0].id, second.conversation_id,
            "the new message is in the active conversation"
        );
    }
}

/// After a close, a new message starts the next conversation (`StartNew`) or reopens the
/// closed one (`Reopen`); an expired conversation is never reopened; an idle one becomes open
/// again; reopening by hand is refused while another conversation of the thread is active.
pub async fn closed_conversations_start_new_or_reopen_per_policy(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let start_new = LifecyclePolicy::default();
    let reopen = LifecyclePolicy { on_closed: OnClosed::Reopen, ..Default::default() };
    let close = |c: Conversation, s: ConversationStatus| async move {
        store.set_conversation_status(c.id, c.version, s, at(5)).await.expect("status")
    };
    let ingest_with = |p: &str, thread: &str, policy: LifecyclePolicy, now: Timestamp| {
        let req = request(account.id, inbound(p, thread, "alice", "x", now), policy, now);
        async move { store.ingest(req).await.expect("ingest") }
    };

    // StartNew
    let a1 = ingest_with("a1", "A", start_new, T0).await;
    let closed =
        close(store.conversation(a1.conversation_id).await.expect("c"), ConversationStatus::Closed)
            .await;
    let a2 = ingest_with("a2", "A", start_new, at(10)).await;
    assert_ne!(a2.conversation_id, a1.conversation_id, "StartNew opens the next conversation");
    assert!(a2.conversation_opened && !a2.conversation_reactivated);
    assert_eq!(
        store.conversation(a1.conversation_id).await.expect("c").status,
        ConversationStatus::Closed
    );
    let err = store
        .set_conversation_status(closed.id, closed.version, ConversationStatus::Open, at(11))
        .await
        .expect_err("another conversation of the thread is active");
    assert!(is_invalid(&err), "reopen while another is active: {err:?}");
    assert_eq!(
        store.conversation(a1.conversation_id).await.expect("c").status,
        ConversationStatus::Closed
    );

    // Reopen
    let b1 = ingest_with("b1", "B", reopen, T0).await;
    close(store.conversation(b1.conversation_id).await.expect("c"), ConversationStatus::Closed)
        .await;
    let b2 = ingest_with("b2", "B", reopen, at(10)).await;
    assert_eq!(b2.conversation_id, b1.conversation_id, "Reopen reopens the closed conversation");
    assert!(b2.conversation_reactivated && !b2.conversation_opened);
    let reopened = store.conversation(b1.conversation_id).await.expect("c");
    assert_eq!(reopened.status, ConversationStatus::Open);
    assert_eq!(reopened.closed_at, None);

    // Expired is never reopened
    let c1 = ingest_with("c1", "C", reopen, T0).await;
    close(store.conversation(c1.conversation_id).await.expect("c"), ConversationStatus::Expired)
        .await;
    let c2 = ingest_with("c2", "C", reopen, at(10)).await;
    assert_ne!(c2.conversation_id, c1.conversation_id, "an expired conversation is never reopened");
    assert!(c2.conversation_opened);
    assert_eq!(
        store.conversation(c1.conversation_id).await.expect("c").status,
        ConversationStatus::Expired
    );

    // Idle becomes open again
    let d1 = ingest_with("d1", "D", start_new, T0).await;
    close(store.conversation(d1.conversation_id).await.expect("c"), ConversationStatus::Idle).await;
    let d2 = ingest_with("d2", "D", start_new, at(10)).await;
    assert_eq!(d2.conversation_id, d1.conversation_id);
    assert!(d2.conversation_reactivated && !d2.conversation_opened);
    assert_eq!(
        store.conversation(d1.conversation_id).await.expect("c").status,
        ConversationStatus::Open
    );

    for thread in ["A", "B", "C", "D"] {
        assert_eq!(active_in_thread(store, account.id, thread).await.len(), 1, "thread {thread}");
    }
}

/// `due_conversations` selects active conversations by the thresholds: open ones idle since
/// before `idle_before`, active ones idle since before `close_before`, active ones opened
/// before `expire_before`; never closed ones or other accounts; at most `limit`.
pub async fn due_conversations_thresholds(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let other = new_account(store, "other", T0).await;
    let old =
        ingest(store, account.id, inbound("p-old", "old", "a", "x", T0), T0).await.conversation_id;
    let mid = ingest(store, account.id, inbound("p-mid", "mid", "b", "x", at(100)), at(100))
        .await
        .conversation_id;
    let new = ingest(store, account.id, inbound("p-new", "new", "c", "x", at(200)), at(200))
        .await
        .conversation_id;
    let gone = ingest(store, account.id, inbound("p-gone", "gone", "d", "x", T0), T0)
        .await
        .conversation_id;
    ingest(store, other.id, inbound("p-other", "old", "a", "x", T0), T0).await;
    // `mid` was opened early but is active lately.
    ingest(store, account.id, inbound("p-mid2", "mid", "b", "x", at(150)), at(150)).await;
    let g = store.conversation(gone).await.expect("c");
    store
        .set_conversation_status(gone, g.version, ConversationStatus::Closed, at(1))
        .await
        .expect("close");
    let o = store.conversation(old).await.expect("c");
    store
        .set_conversation_status(old, o.version, ConversationStatus::Idle, at(2))
        .await
        .expect("idle");

    let due = |idle: Option<i64>, close: Option<i64>, expire: Option<i64>, limit: usize| {
        DueConversations {
            idle_before: idle.map(at),
            close_before: close.map(at),
            expire_before: expire.map(at),
            limit,
        }
    };
    let found = |d: DueConversations| async move {
        let v = store.due_conversations(account.id, d).await.expect("due");
        ids(&v, |c| c.id)
    };
    let sorted = |mut v: Vec<ConversationId>| {
        v.sort();
        v
    };

    assert_eq!(found(due(None, None, None, 100)).await, Vec::<ConversationId>::new());
    assert_eq!(
        found(due(Some(160), None, None, 100)).await,
        sorted(vec![mid]),
        "idle: open ones only"
    );
    assert_eq!(found(due(Some(300), None, None, 100)).await, sorted(vec![mid, new]));
    assert_eq!(
        found(due(None, Some(50), None, 100)).await,
        sorted(vec![old]),
        "close: idle ones too"
    );
    assert_eq!(found(due(None, Some(300), None, 100)).await, sorted(vec![old, mid, new]));
    assert_eq!(
        found(due(None, None, Some(120), 100)).await,
        sorted(vec![old, mid]),
        "expire: by opening time"
    );
    assert_eq!(
        found(due(Some(160), Some(50), None, 100)).await,
        sorted(vec![old, mid]),
        "thresholds combine"
    );
    assert_eq!(found(due(None, Some(300), None, 2)).await.len(), 2, "limit");
}

// ----- the job queue -----

/// `enqueue_send` writes a pending outbound message in the conversation and its send job;
/// an unknown conversation is `NotFound` and a reused client key is refused, writing nothing.
pub async fn enqueue_send_queues_pending_message_and_job(store: Arc<dyn Store>) {
    let store = &*store;
    let (account, conversation, pending, job_id) = queued_send(store, 7).await;
    let c = store.conversation(conversation).await.expect("conv");
    assert_eq!(pending.account_id, account.id);
    assert_eq!(pending.conversation_id, conversation);
    assert_eq!(pending.identity_id, c.primary_identity);
    assert_eq!(pending.status, MessageStatus::Pending);
    assert_eq!(pending.origin, Origin::Service("test".to_owned()));
    assert_eq!(pending.text.as_deref(), Some("hello from the service"));
    assert_eq!(store.message(pending.id).await.expect("message"), pending);

    let job = store.job(job_id).await.expect("job");
    assert_eq!(job.kind, JobKind::Send);
    assert_eq!(job.state, JobState::Available);
    assert_eq!(job.attempt, 0);
    assert_eq!(job.max_attempts, 7);
    assert_eq!(job.account_id, Some(account.id));
    assert_eq!(job.message_id, Some(pending.id));
    assert_eq!(job.run_at, at(1));
    assert_eq!(job.leased_by, None);

    let err = store
        .enqueue_send(send_request(ConversationId::new(), "ck-2", 10, at(2)))
        .await
        .expect_err("unknown");
    assert!(is_not_found(&err), "unknown conversation: {err:?}");
    let dup = send_request(conversation, "ck-1", 10, at(2));
    let dup_job = dup.job_id;
    assert!(store.enqueue_send(dup).await.is_err(), "a client key is used once per account");
    assert!(is_not_found(&store.job(dup_job).await.expect_err("no job written")));
    let mut nul = send_request(conversation, "ck-3", 10, at(2));
    nul.text = Some("a\0b".to_owned());
    assert!(store.enqueue_send(nul).await.is_err_and(|e| is_invalid(&e)), "NUL in text");
    assert_eq!(store.jobs_in_state(JobState::Available, 10).await.expect("jobs").len(), 1);
    assert_eq!(store.messages(conversation, 10).await.expect("messages").len(), 2);
}

/// A unique key held by an unfinished job returns that job; once it is finished the key is
/// free again; jobs without a key are never deduplicated.
pub async fn enqueue_unique_key_deduplicates_unfinished_jobs(store: Arc<dyn Store>) {
    let store = &*store;
    let mut first = history_job(T0);
    first.unique_key = Some("sync:acc".to_owned());
    let a = store.enqueue(first.clone(), T0).await.expect("enqueue");
    assert!(a.inserted);
    assert_eq!(a.job_id, first.id);

    let mut second = history_job(T0);
    second.unique_key = Some("sync:acc".to_owned());
    let b = store.enqueue(second.clone(), at(1)).await.expect("enqueue");
    assert_eq!(b, Enqueued { job_id: a.job_id, inserted: false });
    assert!(is_not_found(&store.job(second.id).await.expect_err("not inserted")));

    let lease = store
        .claim("w", &[JobKind::HistorySync], 10, Duration::from_secs(30), at(2))
        .await
        .expect("claim");
    assert_eq!(lease.len(), 1);
    let c = store.enqueue(second.clone(), at(3)).await.expect("enqueue");
    assert!(!c.inserted, "a running job still holds its key");
    store.complete(&lease[0], None, at(4)).await.expect("complete");
    let d = store.enqueue(second.clone(), at(5)).await.expect("enqueue");
    assert_eq!(d, Enqueued { job_id: second.id, inserted: true }, "a finished job frees its key");

    let x = store.enqueue(history_job(T0), T0).await.expect("enqueue");
    let y = store.enqueue(history_job(T0), T0).await.expect("enqueue");
    assert!(x.inserted && y.inserted && x.job_id != y.job_id);
}

/// `claim` takes due jobs of the asked kinds, oldest `run_at` first, at most `limit`: each
/// becomes `Running` with the next attempt, leased to the worker until `now + ttl`; running
/// jobs are not claimed again.
pub async fn claim_takes_due_jobs_of_the_kinds_oldest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let j10 = history_job(at(10));
    let j5 = history_job(at(5));
    let j100 = history_job(at(100));
    let sweep = NewJob::new(JobKind::LifecycleSweep, at(0));
    for j in [&j10, &j5, &j100, &sweep] {
        store.enqueue(j.clone(), T0).await.expect("enqueue");
    }
    let ttl = Duration::from_secs(30);
    let leases = store.claim("w1", &[JobKind::HistorySync], 10, ttl, at(20)).await.expect("claim");
    assert_eq!(
        leases.iter().map(|l| l.job.id).collect::<Vec<_>>(),
        vec![j5.id, j10.id],
        "due ones, oldest first"
    );
    for l in &leases {
        assert_eq!(l.attempt, 1);
        assert_eq!(l.worker, "w1");
        assert_eq!(l.job.state, JobState::Running);
        assert_eq!(l.job.attempt, 1);
        assert_eq!(l.job.leased_by.as_deref(), Some("w1"));
        assert_eq!(l.job.lease_expires_at, Some(at(50)));
        assert_eq!(store.job(l.job.id).await.expect("job"), l.job);
    }
    assert!(
        store
            .claim("w2", &[JobKind::HistorySync], 10, ttl, at(20))
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        store.claim("w2", &[JobKind::Send], 10, ttl, at(200)).await.expect("claim").is_empty(),
        "kinds filter"
    );
    let two = store
        .claim("w2", &[JobKind::HistorySync, JobKind::LifecycleSweep], 1, ttl, at(200))
        .await
        .expect("claim");
    assert_eq!(
        two.iter().map(|l| l.job.id).collect::<Vec<_>>(),
        vec![sweep.id],
        "limit, oldest first"
    );
    assert!(
        store
            .claim("w2", &[JobKind::HistorySync], 0, ttl, at(200))
            .await
            .expect("claim")
            .is_empty()
    );
}

/// `claim_preferring` takes the jobs of the worker's own accounts as soon as they are due, and
/// jobs without an account; a job of another account only once it has been due for
/// `others_after`, oldest first among what it may take.
pub async fn claim_preferring_takes_the_workers_own_accounts_first(store: Arc<dyn Store>) {
    use crate::store::ClaimPreference;
    let store = &*store;
    let (mine, theirs) =
        (new_account(store, "mine", T0).await, new_account(store, "theirs", T0).await);
    let their_old = NewJob { account_id: Some(theirs.id), ..history_job(at(1)) };
    let their_new = NewJob { account_id: Some(theirs.id), ..history_job(at(8)) };
    let my_job = NewJob { account_id: Some(mine.id), ..history_job(at(9)) };
    let nobodys = history_job(at(9));
    for j in [&their_old, &their_new, &my_job, &nobodys] {
        store.enqueue(j.clone(), T0).await.expect("enqueue");
    }
    let ttl = Duration::from_secs(30);
    let prefer = ClaimPreference { accounts: &[mine.id], others_after: Duration::from_secs(5) };
    let kinds = [JobKind::HistorySync];
    let leases =
        store.claim_preferring("w1", &kinds, 10, ttl, at(10), prefer).await.expect("claim");
    let mut got: Vec<JobId> = leases.iter().map(|l| l.job.id).collect();
    got.sort();
    let mut want = vec![their_old.id, my_job.id, nobodys.id];
    want.sort();
    assert_eq!(
        got, want,
        "its own, nobody's, and another's due for 9 s; not another's due for 2 s"
    );
    assert!(
        store
            .claim_preferring("w1", &kinds, 10, ttl, at(12), prefer)
            .await
            .expect("claim")
            .is_empty(),
        "another's job due for 4 s waits"
    );
    let later = store.claim_preferring("w1", &kinds, 10, ttl, at(13), prefer).await.expect("claim");
    assert_eq!(later.iter().map(|l| l.job.id).collect::<Vec<_>>(), vec![their_new.id]);
    // Its own account's worker takes it at once.
    let again = NewJob { account_id: Some(theirs.id), ..history_job(at(20)) };
    store.enqueue(again.clone(), T0).await.expect("enqueue");
    let theirs_first = ClaimPreference { accounts: &[theirs.id], ..prefer };
    let got =
        store.claim_preferring("w2", &kinds, 10, ttl, at(20), theirs_first).await.expect("claim");
    assert_eq!(got.iter().map(|l| l.job.id).collect::<Vec<_>>(), vec![again.id]);
}

/// Concurrent claimers never get the same job: 48 jobs, 6 workers claiming in small batches
/// at once; every job is handed out exactly once.
pub async fn concurrent_claimers_never_share_a_job(store: Arc<dyn Store>) {
    for _ in 0..48 {
        store.enqueue(history_job(T0), T0).await.expect("enqueue");
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim(&worker, &[JobKind::HistorySync], 3, Duration::from_secs(60), at(1))
                    .await
                    .expect("claim");
                if got.is_empty() {
                    break;
                }
                mine.extend(got);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let distinct: HashSet<JobId> = all.iter().map(|l| l.job.id).collect();
    assert_eq!(all.len(), 48, "every job claimed once, none twice");
    assert_eq!(distinct.len(), 48);
    for l in &all {
        store.complete(l, None, at(2)).await.expect("each holder completes its own job");
    }
    assert_eq!(store.jobs_in_state(JobState::Completed, 100).await.expect("jobs").len(), 48);
}

/// `complete` finishes the job and marks its message `Sent` with the provider id, atomically;
/// completing again is `LeaseLost`.
pub async fn complete_marks_job_completed_and_message_sent(store: Arc<dyn Store>) {
    let store = &*store;
    let (account, _conv, pending, job_id) = queued_send(store, 10).await;
    let lease = claim_one(store, "w1", 30, at(2)).await;
    assert_eq!(lease.job.id, job_id);
    assert_eq!(store.message(pending.id).await.expect("message").status, MessageStatus::Pending);
    store
        .complete(
            &lease,
            Some(MessageOutcome::Sent { provider_id: "p-out".to_owned(), at: at(3) }),
            at(4),
        )
        .await
        .expect("complete");
    let job = store.job(job_id).await.expect("job");
    assert_eq!(job.state, JobState::Completed);
    let sent = store.message(pending.id).await.expect("message");
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(sent.provider_id.as_deref(), Some("p-out"));
    assert_eq!(
        store.message_by_provider_id(account.id, "p-out").await.expect("lookup").map(|m| m.id),
        Some(pending.id)
    );
    let attempts = store.job_attempts(job_id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].attempt, attempts[0].outcome), (1, AttemptOutcome::Completed));
    assert_eq!(attempts[0].finished_at, Some(at(4)));
    let err = store.complete(&lease, None, at(5)).await.expect_err("already completed");
    assert!(is_lease_lost(&err), "second complete: {err:?}");
    assert!(
        store
            .claim("w2", &[JobKind::Send], 10, Duration::from_secs(30), at(100))
            .await
            .expect("claim")
            .is_empty()
    );
}

/// An edit replaces a stored message's text and marks it edited; the same edit again or an
/// older one changes nothing; an edit of a message that is not stored is `None`; bad input
/// is refused and changes nothing.
pub async fn edits_replace_the_text_and_mark_the_message_edited(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let out = ingest(store, account.id, inbound("in-1", "t", "alice", "hi", T0), T0).await;
    let edit = |provider_id: &str, text: &str, secs: i64| InboundEdit {
        provider_id: provider_id.to_owned(),
        text: Some(text.to_owned()),
        html: None,
        edited_at: at(secs),
    };
    let (m, changed) = store
        .apply_edit(account.id, &edit("in-1", "hi, edited", 10), at(11))
        .await
        .expect("apply_edit")
        .expect("the message is stored");
    assert!(changed);
    assert_eq!(m.id, out.message_id);
    let stored = store.message(out.message_id).await.expect("message");
    assert_eq!(stored.text.as_deref(), Some("hi, edited"));
    assert_eq!(stored.edited_at, Some(at(10)));
    assert_eq!(stored.updated_at, at(11));
    assert_eq!(stored.status, MessageStatus::Sent, "an edit changes the text only");

    let (_, again) = store
        .apply_edit(account.id, &edit("in-1", "hi, edited", 10), at(12))
        .await
        .expect("apply_edit")
        .expect("stored");
    assert!(!again, "the same edit twice changes nothing");
    let (m, older) = store
        .apply_edit(account.id, &edit("in-1", "stale", 5), at(13))
        .await
        .expect("apply_edit")
        .expect("stored");
    assert!(!older, "an older edit changes nothing");
    assert_eq!(m.text.as_deref(), Some("hi, edited"));

    assert!(
        store
            .apply_edit(account.id, &edit("unknown", "x", 20), at(20))
            .await
            .expect("ok")
            .is_none()
    );
    let err = store
        .apply_edit(account.id, &edit("in-1", "bad\0", 30), at(30))
        .await
        .expect_err("a NUL byte is refused");
    assert!(is_invalid(&err), "{err:?}");
    let stored = store.message(out.message_id).await.expect("message");
    assert_eq!(stored.text.as_deref(), Some("hi, edited"), "bad input changed nothing");
    assert_eq!(stored.edited_at, Some(at(10)));
}

/// A deletion marks the stored messages it names deleted and keeps their content; unknown
/// ids, messages already deleted, another account's messages and a repeat are passed over;
/// bad input is refused and marks nothing.
pub async fn deletions_mark_stored_messages_deleted_once(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let other = new_account(store, "other", T0).await;
    let a = ingest(store, account.id, inbound("m-1", "t", "alice", "one", T0), T0).await;
    let b = ingest(store, account.id, inbound("m-2", "t", "alice", "two", T0), T0).await;
    let c = ingest(store, account.id, inbound("m-3", "t", "alice", "three", T0), T0).await;
    let foreign = ingest(store, other.id, inbound("m-1", "t", "bob", "theirs", T0), T0).await;
    let deletion = |ids: &[&str], secs: i64| InboundDeletion {
        provider_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        deleted_at: at(secs),
    };

    let changed = store
        .apply_deletion(account.id, &deletion(&["m-1", "unknown", "m-2"], 10), at(11))
        .await
        .expect("apply_deletion");
    let mut ids: Vec<MessageId> = changed.iter().map(|m| m.id).collect();
    ids.sort();
    let mut want = vec![a.message_id, b.message_id];
    want.sort();
    assert_eq!(ids, want, "the two stored messages, not the unknown id");
    assert!(changed.iter().all(|m| m.deleted_at == Some(at(10))));
    let stored = store.message(a.message_id).await.expect("message");
    assert_eq!(stored.deleted_at, Some(at(10)));
    assert_eq!(stored.updated_at, at(11));
    assert_eq!(stored.text.as_deref(), Some("one"), "the content is kept");
    assert_eq!(store.message(c.message_id).await.expect("message").deleted_at, None);
    assert_eq!(
        store.message(foreign.message_id).await.expect("message").deleted_at,
        None,
        "another account's message with the same provider id is not touched"
    );

    let again = store
        .apply_deletion(account.id, &deletion(&["m-1", "m-2"], 20), at(21))
        .await
        .expect("apply_deletion");
    assert!(again.is_empty(), "a repeat changes nothing: {again:?}");
    assert_eq!(store.message(a.message_id).await.expect("message").deleted_at, Some(at(10)));

    let err = store
        .apply_deletion(account.id, &deletion(&["m-3", "bad\0"], 30), at(30))
        .await
        .expect_err("a NUL byte is refused");
    assert!(is_invalid(&err), "{err:?}");
    let too_many: Vec<String> = (0..=InboundDeletion::MAX_IDS).map(|i| format!("id-{i}")).collect();
    let err = store
        .apply_deletion(
            account.id,
            &InboundDeletion { provider_ids: too_many, deleted_at: at(31) },
            at(31),
        )
        .await
        .expect_err("too many ids are refused");
    assert!(is_invalid(&err), "{err:?}");
    assert_eq!(
        store.message(c.message_id).await.expect("message").deleted_at,
        None,
        "bad input marked nothing"
    );
    assert!(
        store.apply_deletion(account.id, &deletion(&[], 40), at(40)).await.expect("ok").is_empty()
    );
}

/// Completions of a claimed batch that arrive at once (as the engine's dispatcher makes
/// them) each get their own answer: a stale lease is `LeaseLost` for its job alone, a provider
/// id that another message holds fails that completion alone, and every other job is
/// completed with its message sent.
pub async fn concurrent_completions_each_get_their_own_answer(store: Arc<dyn Store>) {
    let account = new_account(&*store, "acc", T0).await;
    let opened = ingest(&*store, account.id, inbound("in-1", "t", "alice", "hi", T0), T0).await;
    let mut messages = Vec::new();
    for i in 0..40 {
        let req = send_request(opened.conversation_id, &format!("ck-{i}"), 10, at(1));
        messages.push(store.enqueue_send(req).await.expect("enqueue_send"));
    }
    let history: Vec<JobId> = {
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids.push(store.enqueue(history_job(at(1)), at(1)).await.expect("enqueue").job_id);
        }
        ids
    };
    let kinds = [JobKind::Send, JobKind::HistorySync];
    let leases =
        store.claim("w1", &kinds, 80, Duration::from_secs(60), at(2)).await.expect("claim");
    assert_eq!(leases.len(), 80);
    let by_message: HashMap<MessageId, usize> =
        messages.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    // Two rounds: everything but the twins (stale leases among them), then the twins.
    let is_twin = |lease: &JobLease| lease.job.message_id.is_some_and(|m| by_message[&m] <= 1);
    let (mut twins, mut others): (Vec<JobLease>, Vec<JobLease>) =
        leases.into_iter().partition(is_twin);
    // The second round starts with another send, so that the twins arrive together while it
    // commits (a store that groups completions then groups the twins).
    let lead = others.iter().position(|l| l.job.message_id.is_some()).expect("a send job");
    twins.insert(0, others.remove(lead));
    let complete_all = |leases: Vec<JobLease>| {
        leases.into_iter().map(|mut lease| {
            let store = Arc::clone(&store);
            let outcome = lease.job.message_id.map(|m| {
                let i = by_message[&m];
                // Messages 0 and 1 claim the same provider id: only one can have it.
                let provider_id = if i <= 1 { "p-shared".to_owned() } else { format!("p-{i}") };
                MessageOutcome::Sent { provider_id, at: at(3) }
            });
            // Every tenth job is completed with a stale lease (an attempt it does not hold).
            let stale =
                history.iter().position(|h| *h == lease.job.id).is_some_and(|p| p % 10 == 0);
            if stale {
                lease.attempt += 1;
            }
            async move { (lease.job.id, stale, store.complete(&lease, outcome, at(4)).await) }
        })
    };
    let mut results = futures::future::join_all(complete_all(others)).await;
    results.extend(futures::future::join_all(complete_all(twins)).await);
    let mut shared_ok = 0;
    for (job_id, stale, result) in &results {
        let job = store.job(*job_id).await.expect("job");
        if *stale {
            let err = result.as_ref().expect_err("a stale lease completes nothing");
            assert!(is_lease_lost(err), "stale lease: {err:?}");
            assert_eq!(job.state, JobState::Running, "the stale completion wrote nothing");
            continue;
        }
        let message = job.message_id.map(|m| by_message[&m]);
        match (message, result) {
            (Some(i), Err(err)) if i <= 1 => {
                assert!(is_invalid(err), "the losing twin: {err:?}");
                assert_eq!(job.state, JobState::Running, "the failed completion wrote nothing");
            }
            (_, Ok(())) => {
                assert_eq!(job.state, JobState::Completed);
                if let Some(i) = message {
                    let m = store.message(messages[i].id).await.expect("message");
                    assert_eq!(m.status, MessageStatus::Sent);
                    if i <= 1 {
                        shared_ok += 1;
                        assert_eq!(m.provider_id.as_deref(), Some("p-shared"));
                    } else {
                        assert_eq!(m.provider_id, Some(format!("p-{i}")));
                    }
                }
                let attempts = store.job_attempts(*job_id).await.expect("attempts");
                assert_eq!(attempts.last().map(|a| a.outcome), Some(AttemptOutcome::Completed));
            }
            (_, Err(err)) => panic!("job {job_id} failed to complete: {err:?}"),
        }
    }
    assert_eq!(shared_ok, 1, "exactly one of the twins got the shared provider id");
    assert_eq!(results.iter().filter(|(_, stale, _)| *stale).count(), 4);
}

/// `retry` ends the attempt with the error and makes the job claimable at `run_at` with the
/// next attempt number; the message stays pending.
pub async fn retry_makes_job_claimable_later_with_the_next_attempt(store: Arc<dyn Store>) {
    let store = &*store;
    let (_account, _conv, pending, job_id) = queued_send(store, 10).await;
    let lease = claim_one(store, "w1", 30, at(2)).await;
    store.retry(&lease, "connection reset", at(60), at(3)).await.expect("retry");
    let job = store.job(job_id).await.expect("job");
    assert_eq!(job.state, JobState::Retryable);
    assert_eq!(job.run_at, at(60));
    assert_eq!(job.attempt, 1);
    assert_eq!(job.last_error.as_deref(), Some("connection reset"));
    assert_eq!(job.leased_by, None);
    assert_eq!(store.message(pending.id).await.expect("message").status, MessageStatus::Pending);
    assert_eq!(store.next_run_at(&[JobKind::Send]).await.expect("next"), Some(at(60)));
    assert!(
        store
            .claim("w1", &[JobKind::Send], 1, Duration::from_secs(30), at(30))
            .await
            .expect("claim")
            .is_empty()
    );
    let again = claim_one(store, "w2", 30, at(60)).await;
    assert_eq!(again.attempt, 2);
    let err = store.retry(&lease, "late", at(90), at(61)).await.expect_err("old lease");
    assert!(is_lease_lost(&err));
}

/// `snooze` puts the job back until `run_at` without spending the attempt: the next claim has
/// the same attempt number.
pub async fn snooze_does_not_spend_the_attempt(store: Arc<dyn Store>) {
    let store = &*store;
    let (_account, _conv, _pending, job_id) = queued_send(store, 10).await;
    let lease = claim_one(store, "w1", 30, at(2)).await;
    assert_eq!(lease.attempt, 1);
    store.snooze(&lease, at(40), "rate limited for 38s", at(3)).await.expect("snooze");
    let job = store.job(job_id).await.expect("job");
    assert_eq!(job.attempt, 0, "the attempt is given back");
    assert!(
        matches!(job.state, JobState::Available | JobState::Retryable),
        "claimable later: {:?}",
        job.state
    );
    assert_eq!(job.run_at, at(40));
    assert!(
        store
            .claim("w1", &[JobKind::Send], 1, Duration::from_secs(30), at(39))
            .await
            .expect("claim")
            .is_empty()
    );
    let again = claim_one(store, "w1", 30, at(40)).await;
    assert_eq!(again.attempt, 1, "the same attempt number again");
}

/// `discard` moves the job to the dead letter and fails its message, atomically.
pub async fn discard_dead_letters_the_job_and_fails_the_message(store: Arc<dyn Store>) {
    let store = &*store;
    let (_account, _conv, pending, job_id) = queued_send(store, 10).await;
    let lease = claim_one(store, "w1", 30, at(2)).await;
    store
        .discard(
            &lease,
            "unknown recipient",
            Some(MessageOutcome::Failed { error: "unknown recipient".to_owned() }),
            at(3),
        )
        .await
        .expect("discard");
    let job = store.job(job_id).await.expect("job");
    assert_eq!(job.state, JobState::Discarded);
    assert_eq!(job.last_error.as_deref(), Some("unknown recipient"));
    assert_eq!(
        store
            .jobs_in_state(JobState::Discarded, 10)
            .await
            .expect("dead letter")
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        vec![job_id]
    );
    let failed = store.message(pending.id).await.expect("message");
    assert_eq!(failed.status, MessageStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("unknown recipient"));
    let attempts = store.job_attempts(job_id).await.expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        vec![AttemptOutcome::Discarded]
    );
    assert!(is_lease_lost(&store.discard(&lease, "again", None, at(4)).await.expect_err("twice")));
}

/// A crash between claim and complete leaves the job to be rescued and done once: the stale
/// lease can neither complete, retry, snooze, discard nor extend (`LeaseLost`); the rescued
/// job is claimed again with the next attempt and completed once.
pub async fn crash_between_claim_and_complete_is_rescued_and_done_once(store: Arc<dyn Store>) {
    let store = &*store;
    let (_account, _conv, pending, job_id) = queued_send(store, 10).await;
    let stale = claim_one(store, "w1", 30, at(2)).await;
    assert_eq!(
        store.rescue_expired(at(20)).await.expect("rescue"),
        0,
        "a live lease is not rescued"
    );
    assert_eq!(store.rescue_expired(at(40)).await.expect("rescue"), 1);
    let job = store.job(job_id).await.expect("job");
    assert_eq!(job.state, JobState::Retryable);
    assert_eq!(job.leased_by, None);

    let sent = |p: &str| Some(MessageOutcome::Sent { provider_id: p.to_owned(), at: at(41) });
    let err = store.complete(&stale, sent("p-stale"), at(41)).await.expect_err("stale");
    assert!(is_lease_lost(&err), "stale complete after rescue: {err:?}");
    assert_eq!(
        store.message(pending.id).await.expect("message").status,
        MessageStatus::Pending,
        "nothing written"
    );

    // The restarted process may even use the same worker name: the attempt number fences.
    let fresh = claim_one(store, "w1", 30, at(41)).await;
    assert_eq!(fresh.attempt, 2);
    assert!(is_lease_lost(
        &store.complete(&stale, sent("p-stale"), at(42)).await.expect_err("stale")
    ));
    assert!(is_lease_lost(&store.retry(&stale, "x", at(50), at(42)).await.expect_err("stale")));
    assert!(is_lease_lost(&store.snooze(&stale, at(50), "x", at(42)).await.expect_err("stale")));
    assert!(is_lease_lost(&store.discard(&stale, "x", None, at(42)).await.expect_err("stale")));
    assert!(is_lease_lost(
        &store.extend_job_lease(&stale, Duration::from_secs(30), at(42)).await.expect_err("stale")
    ));

    store.complete(&fresh, sent("p-fresh"), at(43)).await.expect("complete");
    let message = store.message(pending.id).await.expect("message");
    assert_eq!(message.status, MessageStatus::Sent);
    assert_eq!(message.provider_id.as_deref(), Some("p-fresh"));
    assert_eq!(store.job(job_id).await.expect("job").state, JobState::Completed);
    let outcomes: Vec<_> = store
        .job_attempts(job_id)
        .await
        .expect("attempts")
        .iter()
        .map(|a| (a.attempt, a.outcome))
        .collect();
    assert_eq!(outcomes, vec![(1, AttemptOutcome::Rescued), (2, AttemptOutcome::Completed)]);
    assert!(is_lease_lost(&store.complete(&fresh, None, at(44)).await.expect_err("done once")));
}

/// A rescued job with no attempts left is discarded and its message fails.
pub async fn rescue_of_an_exhausted_job_discards_it_and_fails_the_message(store: Arc<dyn Store>) {
    let store = &*store;
    let (_account, _conv, pending, job_id) = queued_send(store, 1).await;
    let _lease = claim_one(store, "w1", 30, at(2)).await;
    assert_eq!(store.rescue_expired(at(33)).await.expect("rescue"), 1);
    let job = store.job(job_id).await.expect("job");
    assert_eq!(job.state, JobState::Discarded);
    assert_eq!(store.message(pending.id).await.expect("message").status, MessageStatus::Failed);
    assert!(
        store
            .claim("w2", &[JobKind::Send], 1, Duration::from_secs(30), at(100))
            .await
            .expect("claim")
            .is_empty()
    );
    let attempts = store.job_attempts(job_id).await.expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        vec![AttemptOutcome::Rescued]
    );
}

/// Every attempt leaves an audit row, first first, with worker, times, outcome and error; a
/// snoozed attempt keeps its row and the next claim records another with the same number.
pub async fn attempts_are_audited(store: Arc<dyn Store>) {
    let store = &*store;
    let (_account, _conv, _pending, job_id) = queued_send(store, 10).await;
    let l1 = claim_one(store, "w1", 30, at(2)).await;
    store.retry(&l1, "timeout", at(10), at(3)).await.expect("retry");
    let l2 = claim_one(store, "w2", 30, at(10)).await;
    store.snooze(&l2, at(20), "rate limited", at(11)).await.expect("snooze");
    let l3 = claim_one(store, "w3", 30, at(20)).await;
    let running = store.job_attempts(job_id).await.expect("attempts");
    assert_eq!(
        running.last().map(|a| (a.attempt, a.outcome, a.finished_at)),
        Some((2, AttemptOutcome::Running, None))
    );
    store
        .discard(
            &l3,
            "rejected",
            Some(MessageOutcome::Failed { error: "rejected".to_owned() }),
            at(21),
        )
        .await
        .expect("discard");

    let rows = store.job_attempts(job_id).await.expect("attempts");
    let summary: Vec<_> = rows
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.worker.as_str(),
                a.started_at,
                a.finished_at,
                a.outcome,
                a.error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "w1", at(2), Some(at(3)), AttemptOutcome::Retried, Some("timeout")),
            (2, "w2", at(10), Some(at(11)), AttemptOutcome::Snoozed, Some("rate limited")),
            (2, "w3", at(20), Some(at(21)), AttemptOutcome::Discarded, Some("rejected")),
        ]
    );
    assert!(rows.iter().all(|a| a.job_id == job_id));
    assert!(store.job_attempts(JobId::new()).await.expect("attempts of an unknown job").is_empty());
}

/// The queue's depth: the jobs due now per kind (available or retryable, `run_at` passed)
/// with the oldest `run_at`; running, future and finished jobs are not counted.
pub async fn queue_depth_counts_due_jobs_per_kind(store: Arc<dyn Store>) {
    let store = &*store;
    let (_account, conversation, _pending, _job) = queued_send(store, 10).await;
    store.enqueue_send(send_request(conversation, "ck-2", 10, at(5))).await.expect("enqueue");
    store.enqueue_send(send_request(conversation, "ck-3", 10, at(50))).await.expect("future");
    store.enqueue(history_job(at(3)), at(0)).await.expect("history");
    let depth = store.queue_depth(at(10)).await.expect("depth");
    let send = depth.iter().find(|d| d.kind == JobKind::Send).expect("sends due");
    assert_eq!((send.due, send.oldest_run_at), (2, at(1)));
    let history = depth.iter().find(|d| d.kind == JobKind::HistorySync).expect("history due");
    assert_eq!((history.due, history.oldest_run_at), (1, at(3)));
    claim_one(store, "w", 30, at(10)).await;
    let depth = store.queue_depth(at(10)).await.expect("depth");
    let send = depth.iter().find(|d| d.kind == JobKind::Send).expect("sends due");
    assert_eq!((send.due, send.oldest_run_at), (1, at(5)), "the claimed one is running");
    assert!(store.queue_depth(at(0)).await.expect("depth").is_empty(), "nothing due yet");
}

/// `next_run_at` is the earliest `run_at` among claimable jobs of the kinds (not running or
/// finished ones).
pub async fn next_run_at_is_the_earliest_claimable_job(store: Arc<dyn Store>) {
    let store = &*store;
    let kinds = [JobKind::HistorySync];
    assert_eq!(store.next_run_at(&kinds).await.expect("next"), None);
    store.enqueue(history_job(at(50)), T0).await.expect("enqueue");
    store.enqueue(history_job(at(20)), T0).await.expect("enqueue");
    store.enqueue(NewJob::new(JobKind::LifecycleSweep, at(5)), T0).await.expect("enqueue");
    assert_eq!(store.next_run_at(&kinds).await.expect("next"), Some(at(20)));
    assert_eq!(
        store.next_run_at(&[JobKind::HistorySync, JobKind::LifecycleSweep]).await.expect("next"),
        Some(at(5))
    );
    assert_eq!(store.next_run_at(&[JobKind::Send]).await.expect("next"), None);
    let lease = store.claim("w", &kinds, 1, Duration::from_secs(30), at(20)).await.expect("claim");
    assert_eq!(lease.len(), 1);
    assert_eq!(
        store.next_run_at(&kinds).await.expect("next"),
        Some(at(50)),
        "running jobs are not waiting"
    );
    store.complete(&lease[0], None, at(21)).await.expect("complete");
    assert_eq!(store.next_run_at(&kinds).await.expect("next"), Some(at(50)));
}

/// An extended lease is not rescued before its new expiry; an unclaimed job can be cancelled
/// (and is then never claimed), a running or finished one cannot; an unknown one is `NotFound`.
pub async fn extend_and_cancel_jobs(store: Arc<dyn Store>) {
    let store = &*store;
    let long = history_job(T0);
    store.enqueue(long.clone(), T0).await.expect("enqueue");
    let lease = store
        .claim("w", &[JobKind::HistorySync], 1, Duration::from_secs(30), T0)
        .await
        .expect("claim");
    store.extend_job_lease(&lease[0], Duration::from_secs(60), at(20)).await.expect("extend");
    assert_eq!(store.job(long.id).await.expect("job").lease_expires_at, Some(at(80)));
    assert_eq!(store.rescue_expired(at(40)).await.expect("rescue"), 0, "extended lease is live");
    let err = store.cancel_job(long.id, at(41)).await.expect_err("running");
    assert!(is_invalid(&err), "cancel running: {err:?}");
    store.complete(&lease[0], None, at(42)).await.expect("complete");
    assert!(store.cancel_job(long.id, at(43)).await.is_err(), "a finished job cannot be cancelled");

    let waiting = history_job(at(10));
    store.enqueue(waiting.clone(), T0).await.expect("enqueue");
    let cancelled = store.cancel_job(waiting.id, at(1)).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(
        store
            .claim("w", &[JobKind::HistorySync], 10, Duration::from_secs(30), at(100))
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(store.next_run_at(&[JobKind::HistorySync]).await.expect("next"), None);
    assert!(is_not_found(&store.cancel_job(JobId::new(), at(1)).await.expect_err("unknown")));
    assert!(is_not_found(&store.job(JobId::new()).await.expect_err("unknown")));

    // A stale lease is refused an extension, also right after another write.
    let rescued = history_job(at(200));
    store.enqueue(rescued.clone(), at(200)).await.expect("enqueue");
    let old = store
        .claim("w1", &[JobKind::HistorySync], 1, Duration::from_secs(10), at(200))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(store.rescue_expired(at(300)).await.expect("rescue"), 1);
    let new = store
        .claim("w2", &[JobKind::HistorySync], 1, Duration::from_secs(60), at(301))
        .await
        .expect("claim");
    assert_eq!(new.len(), 1);
    store.enqueue(history_job(at(400)), at(302)).await.expect("a write just before");
    let err = store
        .extend_job_lease(&old, Duration::from_secs(60), at(303))
        .await
        .expect_err("the rescued worker's lease is stale");
    assert!(is_lease_lost(&err), "{err:?}");
    assert_eq!(store.job(rescued.id).await.expect("job").leased_by.as_deref(), Some("w2"));
}

// ----- leases -----

/// Named leases: one holder at a time; the holder renews (same term); after expiry a new
/// holder gets term + 1 and the old holder's renew is `LeaseLost`; release frees it for the
/// next holder (higher term); a stale release does nothing; concurrent acquirers get one
/// winner.
pub async fn leases_are_exclusive_fenced_and_renewable(store: Arc<dyn Store>) {
    let ttl = Duration::from_secs(15);
    let s = &*store;
    let a =
        s.acquire_lease(Lease::LEADER, "proc-a", ttl, T0).await.expect("acquire").expect("free");
    assert_eq!(
        (a.name.as_str(), a.holder.as_str(), a.expires_at),
        (Lease::LEADER, "proc-a", at(15))
    );
    assert_eq!(
        s.acquire_lease(Lease::LEADER, "proc-b", ttl, at(5)).await.expect("acquire"),
        None,
        "held"
    );
    let a2 =
        s.acquire_lease(Lease::LEADER, "proc-a", ttl, at(5)).await.expect("acquire").expect("own");
    assert_eq!(
        (a2.term, a2.expires_at),
        (a.term, at(20)),
        "the holder re-acquiring renews, same term"
    );
    let a3 = s.renew_lease(&a2, ttl, at(10)).await.expect("renew");
    assert_eq!((a3.term, a3.expires_at), (a.term, at(25)));

    let b = s
        .acquire_lease(Lease::LEADER, "proc-b", ttl, at(26))
        .await
        .expect("acquire")
        .expect("expired");
    assert_eq!(b.term, a.term + 1, "a new holder gets a higher term");
    let err = s.renew_lease(&a3, ttl, at(27)).await.expect_err("stale holder");
    assert!(is_lease_lost(&err), "renew by the old holder: {err:?}");

    s.release_lease(&a3).await.expect("a stale release is a no-op");
    assert_eq!(
        s.acquire_lease(Lease::LEADER, "proc-c", ttl, at(28)).await.expect("acquire"),
        None,
        "b still holds it"
    );
    s.release_lease(&b).await.expect("release");
    let c = s
        .acquire_lease(Lease::LEADER, "proc-c", ttl, at(29))
        .await
        .expect("acquire")
        .expect("released");
    assert!(c.term > b.term, "the term never goes back");

    let name = Lease::account_name(AccountId::new());
    let x = s.acquire_lease(&name, "proc-a", ttl, T0).await.expect("acquire").expect("free");
    let err = s.renew_lease(&x, ttl, at(16)).await.expect_err("expired");
    assert!(is_lease_lost(&err), "renewing an expired lease: {err:?}");

    let contested = Lease::account_name(AccountId::new());
    let mut tasks = Vec::new();
    for p in 0..8 {
        let store = Arc::clone(&store);
        let name = contested.clone();
        tasks.push(tokio::spawn(async move {
            store.acquire_lease(&name, &format!("proc-{p}"), ttl, T0).await.expect("acquire")
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.expect("task"));
    }
    assert_eq!(winners.len(), 1, "one of eight concurrent acquirers wins: {winners:?}");
    let counts: HashMap<i64, usize> = winners.iter().fold(HashMap::new(), |mut m, l| {
        *m.entry(l.term).or_default() += 1;
        m
    });
    assert_eq!(counts.len(), 1);
}

// ----- the macro -----

/// Expands into one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per function
/// of the [`conformance`](crate::testing::conformance) suite, each calling a store factory for a
/// fresh, empty store.
///
/// Give it the path of an `async fn() -> Arc<dyn Store>`, or define the factory inline:
///
/// ```no_run
/// # mod support {
/// #     pub async fn fresh_sqlite_store() -> std::sync::Arc<dyn channel_core::Store> {
/// #         std::sync::Arc::new(channel_core::testing::MemoryStore::new())
/// #     }
/// # }
/// mod with_a_path {
///     channel_core::store_conformance_tests!(crate::support::fresh_sqlite_store);
/// }
///
/// // or
/// mod with_an_inline_factory {
///     channel_core::store_conformance_tests!(
///         async fn make_store() -> std::sync::Arc<dyn channel_core::Store> {
///             std::sync::Arc::new(channel_core::testing::MemoryStore::new())
///         }
///     );
/// }
/// # fn main() {}
/// ```
///
/// The calling crate needs `tokio` (features `macros`, `rt-multi-thread`) as a
/// dev-dependency. Wrap the invocation in a `mod` to run the suite against several stores in
/// one test file.
#[macro_export]
macro_rules! store_conformance_tests {
    ($(#[$meta:meta])* $vis:vis async fn $factory:ident() -> $ret:ty $body:block) => {
        $(#[$meta])* $vis async fn $factory() -> $ret $body
        $crate::store_conformance_tests!($factory);
    };
    ($factory:path) => {
        $crate::__store_conformance_cases!(
            $factory;
            accounts_crud_and_connection_state,
            accounts_update_and_remove_keeping_or_purging_messages,
            account_state_put_get_delete_clear,
            account_state_lists_and_replaces_by_compare_and_set,
            ingest_stores_message_with_unlinked_identity_and_open_conversation,
            ingest_rejects_bad_input_and_writes_nothing,
            ingest_duplicate_returns_existing_and_moves_only_the_cursor,
            ingest_same_message_concurrently_is_stored_once,
            concurrent_first_messages_open_one_conversation,
            echo_of_own_send_updates_the_pending_message,
            a_stray_copy_of_a_send_is_merged_and_nothing_else_ever_is,
            a_send_whose_id_is_held_inbound_ends_sent_without_it,
            reply_joins_the_conversation_of_the_message_it_answers,
            cursor_is_written_with_the_message_and_not_on_failure,
            ingest_batch_in_order_with_dedup,
            defects_round_trip_and_degraded_messages_are_listed_by_code,
            assignment_is_compare_and_set_and_survives_ingest,
            identity_link_unlink_and_merge,
            listings_are_ordered_and_limited,
            keyset_listings_page_newest_first_without_repeats_or_gaps,
            jobs_page_newest_first_by_state_and_account,
            identities_page_newest_first_without_merged_ones,
            accounts_page_newest_first_without_removed_ones,
            conversation_status_is_compare_and_set,
            sweep_racing_inbound_never_leaves_two_active_conversations,
            closed_conversations_start_new_or_reopen_per_policy,
            due_conversations_thresholds,
            enqueue_send_queues_pending_message_and_job,
            enqueue_unique_key_deduplicates_unfinished_jobs,
            claim_takes_due_jobs_of_the_kinds_oldest_first,
            claim_preferring_takes_the_workers_own_accounts_first,
            concurrent_claimers_never_share_a_job,
            complete_marks_job_completed_and_message_sent,
            concurrent_completions_each_get_their_own_answer,
            edits_replace_the_text_and_mark_the_message_edited,
            deletions_mark_stored_messages_deleted_once,
            retry_makes_job_claimable_later_with_the_next_attempt,
            snooze_does_not_spend_the_attempt,
            discard_dead_letters_the_job_and_fails_the_message,
            crash_between_claim_and_complete_is_rescued_and_done_once,
            rescue_of_an_exhausted_job_discards_it_and_fails_the_message,
            attempts_are_audited,
            next_run_at_is_the_earliest_claimable_job,
            queue_depth_counts_due_jobs_per_kind,
            a_discarded_job_is_retried_out_of_the_dead_letter,
            extend_and_cancel_jobs,
            leases_are_exclusive_fenced_and_renewable,
            every_change_writes_its_events_with_it_in_order,
            a_change_that_fails_or_changes_nothing_writes_no_event,
            feed_consumers_resume_after_their_acknowledgement,
            feed_prune_keeps_what_consumers_need_and_expires_idle_ones,
            workers_are_alive_while_their_lock_is_held,
            a_dead_workers_leases_and_jobs_are_taken_over_at_once,
        );
    };
}

/// Implementation detail of [`store_conformance_tests!`](crate::store_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store: ::std::sync::Arc<dyn $crate::Store> = $factory().await;
                $crate::testing::conformance::$case(store).await;
            }
        )*
    };
}
