//! Databases written by 0.1.0 stay readable: the fixtures in `tests/fixtures/0.1.0/` (a
//! SQLite file and a PostgreSQL dump, written by `examples/write_fixture.rs` of 0.1.0) are
//! opened with this version, migrated, and their data read back. A later version that cannot
//! read them breaks the databases of everyone who ran 0.1.0.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use channel_core::feed::{FeedPosition, FeedStore};
use channel_core::{
    AccountStore, ConversationStore, Direction, JobKind, JobState, MessageStatus, MessageStore,
    QueueStore,
};
use channel_store::SqlStore;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/0.1.0")
}

/// How many migrations this version has for a backend (`sqlite` or `postgres`).
fn migrations(backend: &str) -> i64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let files = std::fs::read_dir(&dir).expect("the migrations directory");
    files.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "sql")).count() as i64
}

/// Reads back everything `examples/write_fixture.rs` of 0.1.0 wrote.
async fn reads_back_what_0_1_0_wrote(store: &SqlStore) {
    let accounts = store.accounts().await.expect("accounts");
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let account = &accounts[0];
    assert_eq!(account.display_name, "Support");
    assert_eq!(account.kind.as_str(), "email");
    assert_eq!(account.config["smtp"]["port"], 587, "{}", account.config);
    let lifecycle = account.settings.lifecycle.expect("the account's lifecycle policy");
    assert_eq!(lifecycle.idle_after, Some(Duration::from_secs(3600)));
    let cursor = store.state_get(account.id, "email/cursor/INBOX").await.expect("state");
    assert_eq!(cursor.as_deref(), Some(&b"{\"uidvalidity\":7,\"uidnext\":4}"[..]));

    let conversations = store.conversations(account.id, None, 10).await.expect("conversations");
    assert_eq!(conversations.len(), 2, "{conversations:?}");

    let by_id = async |provider_id: &str| {
        store
            .message_by_provider_id(account.id, provider_id)
            .await
            .expect("lookup")
            .unwrap_or_else(|| panic!("the message {provider_id} of the fixture"))
    };
    let first = by_id("<1@alice.example>").await;
    assert_eq!(first.text.as_deref(), Some("Hello, my order is late."));
    assert_eq!(first.direction, Direction::Inbound);
    assert_eq!(first.attachments.len(), 1);
    assert_eq!(first.attachments[0].name.as_deref(), Some("order.pdf"));
    assert_eq!(first.defects.len(), 1);
    assert_eq!(first.defects[0].code, "unknown_charset");
    let alice = store.identity(first.identity_id).await.expect("alice");
    assert_eq!(alice.display_name.as_deref(), Some("Alice"));

    let edited = by_id("<2@alice.example>").await;
    assert_eq!(edited.text.as_deref(), Some("Order 1234, placed on Monday."));
    assert!(edited.edited_at.is_some());
    assert_eq!(edited.conversation_id, first.conversation_id, "one thread, one conversation");
    let deleted = by_id("<1@bob.example>").await;
    assert!(deleted.deleted_at.is_some());
    assert_eq!(deleted.text.as_deref(), Some("Please delete my account."), "content kept");

    let reply = by_id("<reply-1@support.example.org>").await;
    assert_eq!(reply.direction, Direction::Outbound);
    assert_eq!(reply.status, MessageStatus::Sent);
    assert_eq!(reply.subject.as_deref(), Some("Re: order"));
    assert_eq!(reply.conversation_id, first.conversation_id);

    let done = store.jobs_in_state(JobState::Completed, 10).await.expect("completed jobs");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].kind, JobKind::Send);
    assert_eq!(done[0].message_id, Some(reply.id));
    let waiting = store.jobs_in_state(JobState::Available, 10).await.expect("available jobs");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].kind, JobKind::HistorySync);
    assert_eq!(waiting[0].payload["limit"], 100);

    // On PostgreSQL the feed shows a change once no older transaction of the cluster is still
    // open (an autovacuum of the freshly restored tables can hold it back for a moment).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = loop {
        let events = store.feed_read(FeedPosition::START, 100).await.expect("the feed");
        if events.len() >= 6 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(events.len() >= 6, "the fixture's changes are in the feed: {events:?}");
    let consumers = store.feed_consumers().await.expect("consumers");
    assert!(consumers.iter().any(|c| c.name == "fixture-consumer"), "{consumers:?}");
}

#[tokio::test]
async fn a_sqlite_database_written_by_0_1_0_is_migrated_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.sqlite");
    std::fs::copy(fixtures().join("store.sqlite"), &path).expect("copy the fixture");
    let store = SqlStore::open_sqlite(path.to_str().expect("utf-8 path")).await.expect("open");
    reads_back_what_0_1_0_wrote(&store).await;
    store.close().await;

    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let applied: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .expect("migrations")
        .get(0);
    assert_eq!(applied, migrations("sqlite"), "every migration of this version is applied");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_dump_written_by_0_1_0_is_restored_migrated_and_reads_back() {
    use sqlx::{Connection, Row};
    let url = support::pg::fresh_database().await;
    let dump = std::fs::read_to_string(fixtures().join("store.pg.sql")).expect("the dump");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(dump)).execute(&mut conn).await.expect("restore the dump");
    let _ = conn.close().await;

    let store = SqlStore::connect_postgres(&url).await.expect("connect and migrate");
    reads_back_what_0_1_0_wrote(&store).await;
    store.close().await;

    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let applied: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .expect("migrations")
        .get(0);
    assert_eq!(applied, migrations("postgres"), "every migration of this version is applied");
}
