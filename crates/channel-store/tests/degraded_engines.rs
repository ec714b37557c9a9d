//! Promise 5 through the engine on the SQL stores: a message the store refuses leaves a
//! placeholder and the batch goes on (SQLite and PostgreSQL); a failure of the store itself
//! in the middle of a batch stores nothing degraded and the batch is retried whole
//! (PostgreSQL, its connections cut by the server while the batch waits).

mod support;

use std::sync::Arc;

use channel_core::state::StateKey;
use channel_core::validate::Limits;
use channel_core::{
    AccountId, BlobStore, ChannelKind, CursorUpdate, Engine, EngineError, IdentityInfo,
    InboundMessage, IngestDisposition, NewAccount, Timestamp, defect,
};
use channel_store::SqlStore;

/// An engine that lets texts up to 8 MiB through, beyond what the stores hold (1 MiB), and
/// an email account on it.
async fn engine(store: SqlStore) -> (Engine, AccountId) {
    let engine = Engine::builder(Arc::new(store), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .limits(Limits { text: 8 << 20, ..Limits::DEFAULT })
        .build()
        .expect("engine");
    let account = engine
        .store()
        .create_account(NewAccount::new(ChannelKind::from_static("email"), "a"), engine.now())
        .await
        .expect("account")
        .id;
    (engine, account)
}

fn text(id: &str, body: &str, cursor: u8) -> InboundMessage {
    let mut m = InboundMessage::text(
        id,
        "chat",
        IdentityInfo::new("alice@example.org"),
        body,
        Timestamp(1_700_000_000_000 + i64::from(cursor)),
    );
    m.cursor = Some(CursorUpdate { key: "imap:INBOX".into(), value: vec![cursor] });
    m
}

async fn a_refused_message_leaves_a_placeholder_and_the_batch_goes_on(store: SqlStore) {
    let (engine, account) = engine(store).await;
    let huge = "z".repeat(2 << 20);
    let batch =
        vec![text("<1@x>", "before", 1), text("<2@x>", &huge, 2), text("<3@x>", "after", 3)];
    let outs = engine.deliver_batch(account, batch).await.expect("the batch is stored");
    let store = engine.store();
    let placeholder = store.message(outs[1].message_id).await.expect("placeholder");
    assert_eq!(placeholder.provider_id.as_deref(), Some("<2@x>"));
    assert_eq!(placeholder.text, None);
    assert!(placeholder.defects.iter().any(|d| d.code == defect::PLACEHOLDER));
    let texts: Vec<Option<String>> = store
        .messages(outs[0].conversation_id, 10)
        .await
        .expect("messages")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, [Some("before".to_owned()), None, Some("after".to_owned())]);
    let cursor = engine.account_state(account).get("imap:INBOX").await.expect("state");
    let cursor = secrecy::ExposeSecret::expose_secret(&cursor.expect("cursor")).to_vec();
    assert_eq!(cursor, vec![3u8], "the cursor moved past every message");

    let again = engine.deliver(account, text("<2@x>", &huge, 2)).await.expect("again");
    assert_eq!(again.disposition, IngestDisposition::Duplicate, "fetched again: stored once");
    let listed =
        store.messages_with_defects(account, Some(defect::PLACEHOLDER), 10).await.expect("listed");
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn sqlite_a_refused_message_leaves_a_placeholder_and_the_batch_goes_on() {
    a_refused_message_leaves_a_placeholder_and_the_batch_goes_on(support::sqlite().await).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_refused_message_leaves_a_placeholder_and_the_batch_goes_on() {
    a_refused_message_leaves_a_placeholder_and_the_batch_goes_on(support::pg::store().await).await;
}

/// The batch writes its identity, conversation and messages, then waits for the account
/// state (locked by another session) to write its cursor; the server then cuts every
/// connection of the store. Nothing of the batch is stored, nothing degraded, and the same
/// batch delivered again once the database is back is stored whole.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_store_failure_mid_batch_stores_nothing_degraded_and_the_batch_is_retried_whole()
{
    use sqlx::{Connection, Executor, PgConnection, Row};

    let url = support::pg::fresh_database().await;
    let store = SqlStore::builder().max_connections(4).connect_postgres(&url).await.expect("store");
    let (engine, account) = engine(store).await;
    let batch: Vec<InboundMessage> = vec![
        text("<1@x>", "one", 1),
        text("<2@x>", "two \0 with a NUL byte", 2),
        text("<3@x>", "three", 3),
    ];

    let mut locker = PgConnection::connect(&url).await.expect("locker");
    locker.execute("BEGIN").await.expect("begin");
    locker.execute("LOCK TABLE account_state IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    let delivering = {
        let (engine, batch) = (engine.clone(), batch.clone());
        tokio::spawn(async move { engine.deliver_batch(account, batch).await })
    };
    let mut admin = PgConnection::connect(&url).await.expect("admin");
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n: i64 = admin.fetch_one(waiting).await.expect("activity").get(0);
        if n > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the batch never reached the cursor");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND wait_event_type = 'Lock'",
        )
        .await
        .expect("terminate");
    let failed = delivering.await.expect("task");
    match &failed {
        Err(e @ EngineError::Store(_)) => assert!(e.is_transient(), "retry later: {e}"),
        other => panic!("a cut connection is a store failure, not {other:?}"),
    }
    locker.execute("ROLLBACK").await.expect("unlock");

    let store = engine.store();
    // A connection the server cut may be handed out once more and fail: transient, as a
    // channel sees it; it retries.
    for _ in 0..5 {
        match store.message_by_provider_id(account, "<1@x>").await {
            Err(e) if e.is_transient() => continue,
            _ => break,
        }
    }
    for id in ["<1@x>", "<2@x>", "<3@x>"] {
        let found = store.message_by_provider_id(account, id).await.expect("lookup");
        assert!(found.is_none(), "{id}: nothing of the failed batch is stored");
    }
    assert!(store.messages_with_defects(account, None, 10).await.expect("list").is_empty());

    let outs = engine.deliver_batch(account, batch).await.expect("retried whole");
    assert!(outs.iter().all(|o| o.disposition == IngestDisposition::Stored));
    let degraded = store.messages_with_defects(account, None, 10).await.expect("list");
    let codes: Vec<Vec<String>> =
        degraded.iter().map(|m| m.defects.iter().map(|d| d.code.clone()).collect()).collect();
    assert_eq!(codes, vec![vec![defect::NUL_REPLACED.to_owned()]], "only its own defect");
}
