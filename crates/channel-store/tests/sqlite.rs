//! Focused tests of the SQLite store: opening, limits, error mapping, atomicity, and a
//! differential check against the reference `MemoryStore`.

mod support;

use std::time::Duration;

use channel_core::{
    AccountId, ChannelKind, ConversationId, Direction, IdentityId, IdentityInfo, IngestDisposition,
    IngestRequest, JobKind, LifecyclePolicy, MessageId, NewAccount, NewJob, Origin, StoreError,
    StoredInbound, Timestamp,
};
use channel_core::{AccountStore, ConversationStore, LeaseStore, MessageStore, QueueStore};
use channel_store::{Backend, SqlStore, limits};
use sqlx::{Connection, Executor, SqliteConnection};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn inbound(provider_id: &str, thread: &str, from: &str, text: &str) -> StoredInbound {
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
        sent_at: T0,
        cursor: None,
    }
}

fn request(account: AccountId, message: StoredInbound) -> IngestRequest {
    IngestRequest {
        account_id: account,
        new_message_id: MessageId::new(),
        new_identity_id: IdentityId::new(),
        new_conversation_id: ConversationId::new(),
        message,
        policy: LifecyclePolicy::default(),
        now: T0,
    }
}

async fn account(store: &SqlStore) -> AccountId {
    store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "acc"), T0)
        .await
        .expect("account")
        .id
}

fn is_invalid(e: &StoreError) -> bool {
    matches!(e, StoreError::InvalidInput { .. })
}

#[tokio::test]
async fn reopening_a_file_keeps_the_data_and_migrating_again_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, path) = support::sqlite_in(&dir).await;
    assert_eq!(store.backend(), Backend::Sqlite);
    let id = account(&store).await;
    store.migrate().await.expect("migrate again");
    store.close().await;
    drop(store);

    let url = format!("sqlite://{}", path.display());
    let again = SqlStore::open_sqlite(&url).await.expect("reopen by URL");
    assert_eq!(again.account(id).await.expect("account").display_name, "acc");
    again.ping().await.expect("ping");
}

#[tokio::test]
async fn over_long_and_nul_inputs_are_refused_and_nothing_is_written() {
    let store = support::sqlite().await;
    let a = account(&store).await;
    let long_id = "x".repeat(limits::MAX_KEY_BYTES + 1);
    let err = store.ingest(request(a, inbound(&long_id, "t", "alice", "hi"))).await;
    assert!(err.as_ref().is_err_and(is_invalid), "{err:?}");
    let mut nul_name = inbound("p1", "t", "alice", "hi");
    nul_name.remote = IdentityInfo::new("alice").with_display_name("Al\0ice");
    let err = store.ingest(request(a, nul_name)).await;
    assert!(err.as_ref().is_err_and(is_invalid), "{err:?}");
    let err =
        store.create_account(NewAccount::new(ChannelKind::from_static("memory"), "a\0b"), T0).await;
    assert!(err.as_ref().is_err_and(is_invalid), "{err:?}");
    let err = store.state_put(a, "k\0", b"v").await;
    assert!(err.as_ref().is_err_and(is_invalid), "{err:?}");
    let err = store.acquire_lease(&long_id, "me", Duration::from_secs(1), T0).await;
    assert!(err.as_ref().is_err_and(is_invalid), "{err:?}");
    let mut job = NewJob::new(JobKind::HistorySync, T0);
    job.payload = serde_json::Value::String("y".repeat(limits::MAX_PAYLOAD_BYTES + 1));
    let err = store.enqueue(job, T0).await;
    assert!(err.as_ref().is_err_and(is_invalid), "{err:?}");

    assert!(store.identities(a, false).await.expect("identities").is_empty());
    assert!(store.conversations(a, None, 10).await.expect("conversations").is_empty());
    assert_eq!(store.accounts().await.expect("accounts").len(), 1);
    assert!(store.next_run_at(&[JobKind::HistorySync]).await.expect("next").is_none());
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let store = support::sqlite().await;
    let a = account(&store).await;
    let good = request(a, inbound("p1", "t", "alice", "one"));
    let unknown = request(AccountId::new(), inbound("p2", "t", "bob", "two"));
    let err = store.ingest_batch(&[good.clone(), unknown]).await;
    assert!(matches!(err, Err(StoreError::NotFound { what: "account", .. })), "{err:?}");
    let bad = request(a, inbound("p3", "t", "carol", "th\0ree"));
    let err = store.ingest_batch(&[good.clone(), bad]).await;
    assert!(err.as_ref().is_err_and(is_invalid), "{err:?}");
    assert!(store.message_by_provider_id(a, "p1").await.expect("lookup").is_none());
    assert!(store.identities(a, false).await.expect("identities").is_empty());

    // A new message id that is already taken fails at the insert: rolled back as a whole.
    let first = store.ingest(good).await.expect("ingest");
    let mut reused = request(a, inbound("p4", "other", "dave", "four"));
    reused.new_message_id = first.message_id;
    let err = store.ingest_batch(&[request(a, inbound("p5", "t", "erin", "five")), reused]).await;
    assert!(err.as_ref().is_err_and(is_invalid), "{err:?}");
    assert!(store.message_by_provider_id(a, "p5").await.expect("lookup").is_none());
    assert!(store.find_identity(a, "erin").await.expect("lookup").is_none());
    assert!(store.active_conversation(a, "other").await.expect("lookup").is_none());
}

#[tokio::test]
async fn unknown_stored_values_are_corrupt_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, path) = support::sqlite_in(&dir).await;
    let a = account(&store).await;
    let out = store.ingest(request(a, inbound("p1", "t", "alice", "hi"))).await.expect("ingest");

    let mut raw =
        SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("raw");
    raw.execute("PRAGMA foreign_keys = OFF").await.expect("pragma");
    raw.execute("UPDATE messages SET status = 'teleported'").await.expect("tamper");
    raw.execute("UPDATE accounts SET connection = '{\"state\":\"on_mars\"}'")
        .await
        .expect("tamper");
    raw.execute("UPDATE conversations SET primary_identity = 'not-a-uuid'").await.expect("tamper");
    raw.close().await.ok();

    let err = store.message(out.message_id).await;
    assert!(matches!(err, Err(StoreError::Corrupt(_))), "{err:?}");
    let err = store.account(a).await;
    assert!(matches!(err, Err(StoreError::Corrupt(_))), "{err:?}");
    let err = store.conversations(a, None, 10).await;
    assert!(matches!(err, Err(StoreError::Corrupt(_))), "{err:?}");
}

#[tokio::test]
async fn a_call_blocked_past_the_limit_is_a_named_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, path) = support::sqlite_in(&dir).await;
    let a = account(&store).await;
    drop(store);
    let store = SqlStore::builder()
        .operation_timeout(Duration::from_millis(300))
        .busy_timeout(Duration::from_secs(30))
        .open_sqlite(path.to_str().expect("path"))
        .await
        .expect("open");

    // Another process holds the write lock.
    let mut other =
        SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("raw");
    other.execute("BEGIN IMMEDIATE").await.expect("lock");
    let err = store.state_put(a, "k", b"v").await;
    match err {
        Err(StoreError::Timeout { operation, after }) => {
            assert_eq!(operation, "state_put");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err_is_transient(&store.state_put(a, "k", b"v").await));
    // Reads are not blocked by a writer in WAL mode.
    store.account(a).await.expect("read while locked");
    other.execute("ROLLBACK").await.expect("unlock");
    store.state_put(a, "k", b"v").await.expect("write after the lock is gone");
    assert_eq!(store.state_get(a, "k").await.expect("get"), Some(b"v".to_vec()));
}

fn err_is_transient(r: &Result<(), StoreError>) -> bool {
    r.as_ref().is_err_and(StoreError::is_transient)
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let store = support::sqlite().await;
    let a = account(&store).await;
    store.close().await;
    let err = store.account(a).await;
    assert!(matches!(err, Err(StoreError::Unavailable(_))), "{err:?}");
    let err = store.state_put(a, "k", b"v").await;
    assert!(matches!(err, Err(StoreError::Unavailable(_))), "{err:?}");
}

#[tokio::test]
async fn in_memory_urls_get_a_private_temporary_file() {
    let store = SqlStore::open_sqlite("sqlite::memory:").await.expect("open");
    let a = account(&store).await;
    let out = store.ingest(request(a, inbound("p1", "t", "alice", "hi"))).await.expect("ingest");
    assert_eq!(out.disposition, IngestDisposition::Stored);
    // The readers see what the writer wrote: one database, not one per connection.
    assert_eq!(store.messages(out.conversation_id, 10).await.expect("messages").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clones_ingest_each_message_once() {
    let store = support::sqlite().await;
    let a = account(&store).await;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut stored = 0;
            for n in 0..50 {
                let mut m =
                    inbound(&format!("p{n}"), &format!("t{}", n % 5), &format!("a{}", n % 7), "x");
                m.sent_at = Timestamp(T0.0 + n);
                let out = store.ingest(request(a, m)).await.expect("ingest");
                if out.disposition == IngestDisposition::Stored {
                    stored += 1;
                }
                let _ = worker;
            }
            stored
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert_eq!(total, 50);
    assert_eq!(store.conversations(a, None, 100).await.expect("conversations").len(), 5);
    assert_eq!(store.identities(a, false).await.expect("identities").len(), 7);
}

#[tokio::test]
async fn batches_match_the_reference_store() {
    for seed in [1, 7, 42, 2024] {
        let store = support::sqlite().await;
        support::differential::check_against_memory(&store, seed, 400).await;
    }
}

#[tokio::test]
async fn a_big_batch_is_stored_in_one_go() {
    let store = support::sqlite().await;
    let a = account(&store).await;
    let reqs: Vec<IngestRequest> = (0..3000)
        .map(|n| {
            request(
                a,
                inbound(&format!("p{n}"), &format!("t{}", n % 300), &format!("a{}", n % 100), "x"),
            )
        })
        .collect();
    let out = store.ingest_batch(&reqs).await.expect("batch");
    assert_eq!(out.iter().filter(|o| o.conversation_opened).count(), 300);
    let again = store.ingest_batch(&reqs).await.expect("batch again");
    assert!(again.iter().all(|o| o.disposition == IngestDisposition::Duplicate));
    let too_many = vec![request(a, inbound("p", "t", "a", "x")); limits::MAX_BATCH + 1];
    assert!(store.ingest_batch(&too_many).await.as_ref().is_err_and(is_invalid));
}

/// A full database (here capped with `PRAGMA max_page_count`, as a small full disk would be)
/// refuses the write with a clear, transient error and writes nothing of it; the file stays
/// intact; when space comes back the same write succeeds and work goes on, nothing lost.
#[tokio::test]
async fn a_full_database_refuses_writes_clearly_and_resumes_when_space_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("full.db");
    let store = SqlStore::open_sqlite(path.to_str().expect("path")).await.expect("open");
    let a = account(&store).await;
    // Room for a few more pages only.
    let mut c = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let (now,): (i64,) = sqlx::query_as("PRAGMA page_count").fetch_one(&mut c).await.unwrap();
    store.sqlite_set_max_pages(u32::try_from(now + 8).unwrap()).await.expect("cap");
    let body = "x".repeat(3000);
    let mut stored = 0;
    let refused = loop {
        let m = inbound(&format!("full-{stored}"), &format!("t{stored}"), "alice", &body);
        match store.ingest(request(a, m)).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 1000, "the cap never filled");
    };
    let text = refused.to_string();
    assert!(refused.is_transient(), "a full disk is worth trying again: {text}");
    assert!(text.contains("full") && text.contains("free disk space"), "{text}");
    assert!(text.contains("nothing of this operation was written"), "{text}");
    assert!(stored > 0, "some messages fit before the cap");

    // Nothing of the refused write is there, and the file is intact.
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM messages").fetch_one(&mut c).await.unwrap();
    assert_eq!(n, stored);
    let (check,): (String,) =
        sqlx::query_as("PRAGMA integrity_check").fetch_one(&mut c).await.unwrap();
    assert_eq!(check, "ok");

    // Space comes back: the refused message and the ones after it are stored, once each.
    store.sqlite_set_max_pages(1_073_741_823).await.expect("uncap");
    for k in stored..stored + 5 {
        let m = inbound(&format!("full-{k}"), &format!("t{k}"), "alice", &body);
        let out = store.ingest(request(a, m)).await.expect("stored once there is room");
        assert_eq!(out.disposition, IngestDisposition::Stored);
    }
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM messages").fetch_one(&mut c).await.unwrap();
    assert_eq!(n, stored + 5);
    let (check,): (String,) =
        sqlx::query_as("PRAGMA integrity_check").fetch_one(&mut c).await.unwrap();
    assert_eq!(check, "ok");
}
