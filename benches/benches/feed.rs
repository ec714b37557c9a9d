//! The durable event feed's cost, as ratios measured in interleaved rounds of one run:
//!
//! * `ingest with the feed / ingest without it`: `MessageStore::ingest_batch` of 5,000 fresh
//!   messages (10 batches of 500, 500 threads) into a fresh store, writing its events (a
//!   conversation opened and a message received per new thread, a message received per
//!   message: 5,500 events) against the same store with ingest's events left out
//!   (`SqlStoreOptions::ingest_events(false)`, for benchmarks only). Target: at least 90 %, on
//!   SQLite and on PostgreSQL.
//! * `feed read / raw SELECT`: a consumer reading those 5,500 events from the start in pages
//!   of 500 (`FeedStore::feed_read`: the rows, then each event decoded from its JSON) against a
//!   raw sqlx `SELECT` of the same rows in the same pages (decoded into plain tuples). Target:
//!   at least 50 %, on SQLite and on PostgreSQL.
//!
//! PostgreSQL needs `TEST_DATABASE_URL`; without it only SQLite runs.
//!
//! Run: `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p channel-benches --bench feed`.

use std::time::{Duration, Instant};

use channel_core::feed::{FeedPosition, FeedStore};
use channel_core::{
    AccountId, AccountStore, ChannelKind, ConversationId, Direction, IdentityId, IdentityInfo,
    IngestRequest, LifecyclePolicy, MessageId, MessageStore, NewAccount, Origin, StoredInbound,
    Timestamp,
};
use channel_store::{SqlStore, SqlStoreOptions};
use sqlx::{Connection, Executor, Row};
use tokio::runtime::Runtime;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const MESSAGES: usize = 5_000;
const BATCH: usize = 500;
const THREADS: usize = 500;
const PAGE: usize = 500;
const ROUNDS: usize = 9;

fn requests(account: AccountId) -> Vec<Vec<IngestRequest>> {
    let text = "Hello, this is a message of about a hundred bytes, like a short chat line.";
    (0..MESSAGES)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            let now = Timestamp(T0.0 + b as i64 * 1000);
            chunk
                .iter()
                .map(|&n| IngestRequest {
                    account_id: account,
                    new_message_id: MessageId::new(),
                    new_identity_id: IdentityId::new(),
                    new_conversation_id: ConversationId::new(),
                    message: StoredInbound {
                        provider_id: format!("<{n}.{}@example.org>", account.as_uuid().simple()),
                        thread_key: format!("thread-{}", n % THREADS),
                        remote: IdentityInfo::new(format!("sender{}@example.org", n % THREADS)),
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
                        sent_at: Timestamp(T0.0 + n as i64),
                        cursor: None,
                    },
                    policy: LifecyclePolicy::default(),
                    now,
                })
                .collect()
        })
        .collect()
}

/// Where a fresh store is opened: SQLite, or a fresh PostgreSQL database on this server.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Sqlite,
    Postgres(&'a str),
}

async fn fresh_pg_database(server: &str) -> String {
    let mut admin = sqlx::PgConnection::connect(server).await.expect("connect");
    let name = format!("bench_feed_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .expect("create database");
    admin.close().await.ok();
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path = base[scheme_end..].find('/').map(|i| scheme_end + i).unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..path])
}

async fn open(backend: Backend<'_>, events: bool) -> (SqlStore, Option<String>) {
    let options = SqlStoreOptions::default().ingest_events(events);
    match backend {
        Backend::Sqlite => (options.open_sqlite_temporary().await.expect("sqlite"), None),
        Backend::Postgres(server) => {
            let url = fresh_pg_database(server).await;
            (options.connect_postgres(&url).await.expect("postgres"), Some(url))
        }
    }
}

/// Ingests the messages into a fresh store; returns the time and the store.
async fn ingest(backend: Backend<'_>, events: bool) -> (Duration, SqlStore, Option<String>) {
    let (store, url) = open(backend, events).await;
    let new = NewAccount::new(ChannelKind::from_static("email"), "bench");
    let account = store.create_account(new, T0).await.expect("account").id;
    let batches = requests(account);
    let start = Instant::now();
    for batch in &batches {
        store.ingest_batch(batch).await.expect("ingest_batch");
    }
    (start.elapsed(), store, url)
}

/// Reads the whole feed in pages through the store.
async fn read_feed(store: &SqlStore) -> (Duration, usize) {
    let start = Instant::now();
    let (mut after, mut n) = (FeedPosition::START, 0);
    loop {
        let page = store.feed_read(after, PAGE).await.expect("feed_read");
        let Some(last) = page.last() else { break };
        after = last.position;
        n += page.len();
    }
    (start.elapsed(), n)
}

/// The same rows in the same pages through raw sqlx.
async fn read_raw(backend: Backend<'_>, store_path: &str) -> (Duration, usize) {
    macro_rules! pages {
        ($conn:expr, $sql:expr) => {{
            let start = Instant::now();
            let (mut tx, mut seq, mut n) = (0i64, 0i64, 0usize);
            loop {
                let rows = sqlx::query($sql)
                    .bind(tx)
                    .bind(seq)
                    .bind(PAGE as i64)
                    .fetch_all(&mut $conn)
                    .await
                    .expect("select");
                let Some(last) = rows.last() else { break };
                let decoded: Vec<(i64, i64, i64, String)> = rows
                    .iter()
                    .map(|r| (r.get("tx"), r.get("seq"), r.get("at"), r.get("payload")))
                    .collect();
                (tx, seq) = (last.get("tx"), last.get("seq"));
                n += decoded.len();
            }
            (start.elapsed(), n)
        }};
    }
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{store_path}"))
                .await
                .expect("connect");
            pages!(
                conn,
                "SELECT tx, seq, at, payload FROM channel_events WHERE (tx, seq) > (?, ?) \
                 ORDER BY seq LIMIT ?"
            )
        }
        Backend::Postgres(_) => {
            let mut conn = sqlx::PgConnection::connect(store_path).await.expect("connect");
            pages!(
                conn,
                "SELECT tx, seq, at, payload FROM channel_events WHERE (tx, seq) > ($1, $2) \
                 ORDER BY tx, seq LIMIT $3"
            )
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved rounds: ingest with and without the feed (alternating which goes first), and
/// the feed read against the raw read of the store just filled.
async fn measure(backend: Backend<'_>, name: &str) -> (f64, f64) {
    let (mut ingest_ratios, mut read_ratios) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let with_first = round % 2 == 0;
        let (with, without) = if with_first {
            let with = ingest(backend, true).await;
            (with, ingest(backend, false).await)
        } else {
            let without = ingest(backend, false).await;
            (ingest(backend, true).await, without)
        };
        ingest_ratios.push(without.0.as_secs_f64() / with.0.as_secs_f64());
        let (store, url) = (with.1, with.2);
        let path = match &url {
            Some(u) => u.clone(),
            None => sqlite_path(&store),
        };
        let (feed_took, feed_n) = read_feed(&store).await;
        let (raw_took, raw_n) = read_raw(backend, &path).await;
        assert_eq!(feed_n, raw_n, "the same rows");
        assert_eq!(
            feed_n,
            MESSAGES + THREADS,
            "a message received per message, a conversation per thread"
        );
        read_ratios.push(raw_took.as_secs_f64() / feed_took.as_secs_f64());
        println!(
            "{name} round {round}: ingest with feed {:.0} msg/s, without {:.0} msg/s; feed read {:.0} events/s, raw {:.0} rows/s",
            MESSAGES as f64 / with.0.as_secs_f64(),
            MESSAGES as f64 / without.0.as_secs_f64(),
            feed_n as f64 / feed_took.as_secs_f64(),
            raw_n as f64 / raw_took.as_secs_f64(),
        );
    }
    (median(ingest_ratios), median(read_ratios))
}

/// The SQLite file behind a temporary store, found through its own database list.
fn sqlite_path(store: &SqlStore) -> String {
    store.database_path().expect("a SQLite file").to_string_lossy().into_owned()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    let rt = Runtime::new().expect("runtime");
    let mut lines = Vec::new();
    let sqlite = rt.block_on(measure(Backend::Sqlite, "sqlite"));
    lines.push(("SQLite", sqlite));
    let server = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty());
    if let Some(server) = &server {
        let pg = rt.block_on(measure(Backend::Postgres(server), "postgres"));
        lines.push(("PostgreSQL", pg));
    } else {
        println!("TEST_DATABASE_URL is not set: PostgreSQL skipped");
    }
    println!(
        "\n| backend | ingest with the feed / without (target >= 0.90) | feed read / raw SELECT (target >= 0.50) |"
    );
    println!("| --- | --- | --- |");
    for (backend, (ingest, read)) in lines {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "| {backend} | {ingest:.2}: {} | {read:.2}: {} |",
            verdict(ingest >= 0.90),
            verdict(read >= 0.50)
        );
    }
}
