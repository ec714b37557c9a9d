//! Focused tests of the PostgreSQL store: notifications, races between processes (two
//! stores with their own pools on one database), error mapping, and a differential check
//! against the reference `MemoryStore`. Needs `TEST_DATABASE_URL`.
#![cfg(feature = "postgres")]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use channel_core::{
    AccountId, ChannelKind, ConversationId, Direction, IdentityId, IdentityInfo, IngestDisposition,
    IngestRequest, JobKind, LifecyclePolicy, MessageId, NewAccount, NewJob, Notification, Origin,
    StoreError, StoredInbound, Timestamp,
};
use channel_core::{AccountStore, ConversationStore, LeaseStore, MessageStore, QueueStore};
use channel_store::{Backend, SqlStore};
use sqlx::{Connection, Executor, PgConnection, Row};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn inbound(provider_id: &str, thread: &str, from: &str) -> StoredInbound {
    StoredInbound {
        provider_id: provider_id.to_owned(),
        thread_key: thread.to_owned(),
        remote: IdentityInfo::new(from),
        direction: Direction::Inbound,
        origin: Origin::Remote,
        client_key: None,
        text: Some("hello".to_owned()),
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

/// Two stores on one fresh database: two "processes".
async fn two_processes() -> (SqlStore, SqlStore, String) {
    let url = support::pg::fresh_database().await;
    let a = SqlStore::builder().max_connections(6).connect_postgres(&url).await.expect("store a");
    let b = SqlStore::builder().max_connections(6).connect_postgres(&url).await.expect("store b");
    (a, b, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_reach_every_process_and_stop_with_the_store() {
    let (a, b, url) = two_processes().await;
    assert_eq!(a.backend(), Backend::Postgres);
    let mut rx_a = a.notifications().expect("postgres has notifications");
    let mut rx_b = b.notifications().expect("postgres has notifications");
    let n = Notification { topic: "channel_jobs".into(), payload: r#"{"job":"x"}"#.into() };
    a.notify(&n).await.expect("notify");
    let got = tokio::time::timeout(Duration::from_secs(5), rx_b.recv()).await.expect("in time");
    assert_eq!(got.expect("received"), n);
    let got = tokio::time::timeout(Duration::from_secs(5), rx_a.recv()).await.expect("in time");
    assert_eq!(got.expect("received"), n);
    let events = Notification { topic: "channel_events".into(), payload: "{}".into() };
    b.notify(&events).await.expect("notify");
    let got = tokio::time::timeout(Duration::from_secs(5), rx_a.recv()).await.expect("in time");
    assert_eq!(got.expect("received"), events);
    // Topics nobody listens to are not delivered; bad topics are refused.
    assert!(
        a.notify(&Notification { topic: "a\0b".into(), payload: String::new() }).await.is_err()
    );

    // Dropping the stores stops their listeners.
    let db = url.rsplit('/').next().unwrap_or_default().to_owned();
    drop((a, b, rx_a, rx_b));
    let mut admin = PgConnection::connect(&support::pg::server_url()).await.expect("admin");
    let mut listening = i64::MAX;
    for _ in 0..50 {
        let row = admin
            .fetch_one(
                sqlx::query("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE '%LISTEN%'")
                    .bind(&db),
            )
            .await
            .expect("pg_stat_activity");
        listening = row.get::<i64, _>(0);
        if listening == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listening, 0, "listener connections remain after the store was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_store_each_message_once_and_open_one_conversation() {
    let (a, b, _) = two_processes().await;
    let account = a
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "acc"), T0)
        .await
        .expect("account")
        .id;
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let store = if worker % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut stored = Vec::new();
            for n in 0..30 {
                // Everyone delivers the same 30 messages, in different orders, in 3 threads,
                // from different senders; some as batches.
                let n = (n + worker * 7) % 30;
                let req = request(
                    account,
                    inbound(&format!("p{n}"), &format!("t{}", n % 3), &format!("s{}", n % 4)),
                );
                let out = if n % 5 == 0 {
                    let other =
                        request(account, inbound(&format!("p{}", (n + 1) % 30), "t1", "s1"));
                    store.ingest_batch(&[req, other]).await.expect("batch").remove(0)
                } else {
                    store.ingest(req).await.expect("ingest")
                };
                if out.disposition == IngestDisposition::Stored {
                    stored.push(out.message_id);
                }
            }
            stored
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.extend(t.await.expect("task"));
    }
    let convs = a.conversations(account, None, 100).await.expect("conversations");
    assert_eq!(convs.len(), 3, "one conversation per thread: {convs:#?}");
    assert_eq!(a.identities(account, false).await.expect("identities").len(), 4);
    let mut total = 0;
    for c in &convs {
        total += a.messages(c.id, 1000).await.expect("messages").len();
    }
    assert_eq!(total, 30, "every message stored exactly once");
    assert!(ids.len() <= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claimers_in_two_processes_never_share_a_job() {
    let (a, b, _) = two_processes().await;
    for n in 0..200 {
        a.enqueue(NewJob::new(JobKind::HistorySync, Timestamp(T0.0 + n)), T0)
            .await
            .expect("enqueue");
    }
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let store = if worker % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let leases = store
                    .claim(
                        &format!("w{worker}"),
                        &[JobKind::HistorySync],
                        7,
                        Duration::from_secs(60),
                        Timestamp(T0.0 + 1000),
                    )
                    .await
                    .expect("claim");
                if leases.is_empty() {
                    break;
                }
                for l in leases {
                    store.complete(&l, None, Timestamp(T0.0 + 1000)).await.expect("complete");
                    mine.push(l.job.id);
                }
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.expect("task") {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 200);
}

#[tokio::test]
async fn unknown_stored_values_are_corrupt_but_an_unknown_provider_kind_is_read_as_it_is() {
    let url = support::pg::fresh_database().await;
    let store = SqlStore::connect_postgres(&url).await.expect("store");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "acc"), T0)
        .await
        .expect("account")
        .id;
    let job = store.enqueue(NewJob::new(JobKind::Send, T0), T0).await.expect("enqueue").job_id;
    let mut raw = PgConnection::connect(&url).await.expect("raw");
    raw.execute("UPDATE accounts SET kind = 'carrier_pigeon'").await.expect("tamper");
    raw.execute("UPDATE jobs SET state = 'levitating'").await.expect("tamper");
    // A provider kind is an open name: an account of a provider this version does not
    // know is read as it is, so that listing and lease-taking go on.
    let read = store.account(account).await.expect("an unknown kind is not corrupt");
    assert_eq!(read.kind.as_str(), "carrier_pigeon");
    assert_eq!(store.accounts().await.expect("accounts").len(), 1);
    let err = store.job(job).await;
    assert!(matches!(err, Err(StoreError::Corrupt(_))), "{err:?}");
}

#[tokio::test]
async fn a_call_blocked_past_the_limit_is_a_named_timeout() {
    let url = support::pg::fresh_database().await;
    let store = SqlStore::builder()
        .operation_timeout(Duration::from_millis(300))
        .connect_postgres(&url)
        .await
        .expect("store");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "acc"), T0)
        .await
        .expect("account")
        .id;
    let mut other = PgConnection::connect(&url).await.expect("raw");
    other.execute("BEGIN").await.expect("begin");
    other.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    let err = store.account(account).await;
    assert!(matches!(err, Err(StoreError::Timeout { operation: "account", .. })), "{err:?}");
    other.execute("ROLLBACK").await.expect("rollback");
    // The pool recovers: the cancelled call's connection is not left in a bad state.
    let mut ok = false;
    for _ in 0..20 {
        if store.account(account).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the store works again once the lock is gone");
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let err = SqlStore::builder()
        .operation_timeout(Duration::from_secs(3))
        .connect_postgres("postgres://nobody@127.0.0.1:1/none")
        .await;
    assert!(
        matches!(err, Err(StoreError::Unavailable(_)) | Err(StoreError::Timeout { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn batches_match_the_reference_store() {
    for seed in [3, 11] {
        let store = support::pg::store().await;
        support::differential::check_against_memory(&store, seed, 250).await;
    }
}
