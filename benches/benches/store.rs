//! channel-store benchmarks.
//!
//! * `store/sqlite_ingest_10k`: `MessageStore::ingest_batch` of 10,000 fresh messages (20 batches of
//!   500, 1,000 threads, 500 senders) into a fresh SQLite store, next to
//!   `store/sqlite_raw_insert_store_schema_10k`: the same rows (the identities, conversations
//!   and messages ingest creates) written by raw batched sqlx `INSERT`s (one multi-row
//!   statement per table and batch, one transaction per batch) into the store's own tables,
//!   with their indexes and foreign keys. Targets: ingest at least 50 % of that raw insert,
//!   and at least 20,000 messages/s. For context, `store/sqlite_raw_insert_10k` writes the
//!   message rows alone into a plain table with a primary key and nothing else: the upper
//!   bound of any SQLite write of these rows, which no store that keeps "never stored twice"
//!   (a unique index on the provider id) and lists a conversation in order (an index on the
//!   conversation) can approach: `store/sqlite_raw_insert_promise_indexes_10k` is that plain
//!   table with just those two indexes. The summary prints every ratio.
//! * `store/sqlite_queue_5k`: claim (batches of 100) and complete 5,000 jobs on SQLite
//!   (target: at least 5,000 jobs/s); `..._dispatcher_style` completes each claimed batch
//!   concurrently, as the engine's dispatcher does.
//! * `store/postgres_queue_4_workers_10k`: 4 concurrent workers claim (batches of 50) and
//!   complete 10,000 jobs on PostgreSQL (target: at least 5,000 jobs/s); every run asserts
//!   that no job was claimed twice. `..._async_commit`: the same with the store's
//!   `synchronous_commit(false)` (commits do not wait for the WAL flush).
//!   `..._dispatcher_style`: durable, but each worker completes its claimed batch
//!   concurrently, as the engine's dispatcher does (it runs a claimed batch's jobs at once),
//!   over 16 connections, so that commits share WAL flushes. Needs
//!   `TEST_DATABASE_URL`; skipped without it.
//!
//! After the criterion output, 15 interleaved rounds of ingest and the raw insert into the
//! store's tables give the ingest/raw ratio (the median of the rounds' ratios); then a summary
//! prints the median rates and the verdicts.
//!
//! Run: `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p channel-benches --bench store`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use channel_core::{
    AccountId, AccountStore, ChannelKind, ConversationId, Direction, IdentityId, IdentityInfo,
    IngestRequest, JobKind, LifecyclePolicy, MessageId, MessageStore, NewAccount, NewJob, Origin,
    QueueStore, StoredInbound, Timestamp,
};
use channel_store::SqlStore;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Executor, QueryBuilder, Sqlite};
use tokio::runtime::Runtime;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const INGEST_MESSAGES: usize = 10_000;
const INGEST_BATCH: usize = 500;
const SQLITE_JOBS: usize = 5_000;
const SQLITE_CLAIM_BATCH: usize = 100;
const PG_JOBS: usize = 10_000;
const PG_WORKERS: usize = 4;
const PG_CLAIM_BATCH: usize = 50;
const PG_DURABLE: &str = "postgres_queue_4_workers_10k";
const PG_ASYNC_COMMIT: &str = "postgres_queue_4_workers_10k_async_commit";
const PG_DISPATCHER: &str = "postgres_queue_4_workers_10k_dispatcher_style";
const SQLITE_DISPATCHER: &str = "sqlite_queue_5k_dispatcher_style";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Rates measured in the timed sections, per benchmark: items per second.
static FIGURES: Mutex<BTreeMap<&'static str, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(name: &'static str, items: usize, took: Duration) {
    let rate = items as f64 / took.as_secs_f64();
    FIGURES.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_default().push(rate);
}

fn median(name: &str) -> Option<f64> {
    let figures = FIGURES.lock().unwrap_or_else(|e| e.into_inner());
    let mut v = figures.get(name)?.clone();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

// ----- ingest -----

fn ingest_requests(account: AccountId) -> Vec<Vec<IngestRequest>> {
    let text = "Hello, this is a message of about a hundred bytes, like a short chat line or a mail preview.";
    (0..INGEST_MESSAGES)
        .collect::<Vec<_>>()
        .chunks(INGEST_BATCH)
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
                        provider_id: format!(
                            "<{n}.{}@mail.example.org>",
                            account.as_uuid().simple()
                        ),
                        thread_key: format!("thread-{}", n % 1000),
                        remote: IdentityInfo::new(format!("sender{}@example.org", n % 500)),
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

async fn ingest_once() -> Duration {
    let store = SqlStore::open_sqlite_temporary().await.expect("store");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("email"), "bench"), T0)
        .await
        .expect("account")
        .id;
    let batches = ingest_requests(account);
    let start = Instant::now();
    for batch in batches {
        store.ingest_batch(&batch).await.expect("ingest_batch");
    }
    let took = start.elapsed();
    record("sqlite_ingest_10k", INGEST_MESSAGES, took);
    took
}

/// One multi-row `INSERT` of a batch's message rows into `table` (the store's `messages`
/// columns); `ids` holds each row's id, account, conversation and identity.
async fn insert_messages(
    tx: &mut sqlx::SqliteConnection,
    table: &str,
    batch: &[IngestRequest],
    ids: &[[String; 4]],
) {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "INSERT INTO {table} (id, account_id, conversation_id, identity_id, direction, origin, \
         provider_id, client_key, status, text, html, reply_to, attachments, parse_error, error, \
         sent_at, created_at, updated_at) "
    ));
    q.push_values(batch.iter().zip(ids), |mut b, (r, ids)| {
        let m = &r.message;
        b.push_bind(ids[0].as_str())
            .push_bind(ids[1].as_str())
            .push_bind(ids[2].as_str())
            .push_bind(ids[3].as_str())
            .push_bind("inbound")
            .push_bind("remote")
            .push_bind(m.provider_id.as_str())
            .push_bind(None::<&str>)
            .push_bind("sent")
            .push_bind(m.text.as_deref())
            .push_bind(None::<&str>)
            .push_bind(None::<&str>)
            .push_bind("[]")
            .push_bind(None::<&str>)
            .push_bind(None::<&str>)
            .push_bind(m.sent_at.0)
            .push_bind(r.now.0)
            .push_bind(r.now.0);
    });
    q.build().execute(tx).await.expect("insert messages");
}

/// Name of the raw insert into a table with only the indexes the store's promises need.
const RAW_PROMISE_INDEXES: &str = "sqlite_raw_insert_promise_indexes_10k";

/// The same message rows, written raw into a plain table; with `promise_indexes`, the table
/// also has the two indexes no store of these rows can do without: the unique provider id
/// ("never stored twice") and a conversation's messages in order.
async fn raw_insert_once(promise_indexes: bool) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // The same settings as the store's connections.
        .pragma("cache_size", "-32768")
        .pragma("temp_store", "memory")
        .pragma("wal_autocheckpoint", "8000");
    let pool =
        SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("pool");
    pool.execute(
        "CREATE TABLE raw_messages (id TEXT PRIMARY KEY NOT NULL, account_id TEXT NOT NULL, \
         conversation_id TEXT NOT NULL, identity_id TEXT NOT NULL, direction TEXT NOT NULL, \
         origin TEXT NOT NULL, provider_id TEXT, client_key TEXT, status TEXT NOT NULL, text TEXT, \
         html TEXT, reply_to TEXT, attachments TEXT NOT NULL, parse_error TEXT, error TEXT, \
         sent_at INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
    )
    .await
    .expect("create table");
    if promise_indexes {
        pool.execute(
            "CREATE UNIQUE INDEX raw_messages_provider_id ON raw_messages (account_id, provider_id) \
             WHERE provider_id IS NOT NULL; \
             CREATE INDEX raw_messages_conversation ON raw_messages (conversation_id, sent_at, id)",
        )
        .await
        .expect("create indexes");
    }
    let account = AccountId::new();
    let batches = ingest_requests(account);
    // One conversation per thread and one identity per sender, as ingest makes them.
    let mut conversation_of: std::collections::HashMap<String, String> = Default::default();
    let mut identity_of: std::collections::HashMap<String, String> = Default::default();
    let start = Instant::now();
    for batch in &batches {
        let mut conn = pool.acquire().await.expect("connection");
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin");
        let rows: Vec<[String; 4]> = batch
            .iter()
            .map(|r| {
                let m = &r.message;
                [
                    r.new_message_id.to_string(),
                    r.account_id.to_string(),
                    conversation_of
                        .entry(m.thread_key.clone())
                        .or_insert_with(|| r.new_conversation_id.to_string())
                        .clone(),
                    identity_of
                        .entry(m.remote.address.clone())
                        .or_insert_with(|| r.new_identity_id.to_string())
                        .clone(),
                ]
            })
            .collect();
        insert_messages(&mut tx, "raw_messages", batch, &rows).await;
        tx.commit().await.expect("commit");
    }
    let took = start.elapsed();
    record(
        if promise_indexes { RAW_PROMISE_INDEXES } else { "sqlite_raw_insert_10k" },
        INGEST_MESSAGES,
        took,
    );
    pool.close().await;
    took
}

/// The same rows that ingest writes (the identities, the conversations and the messages),
/// written raw by batched sqlx `INSERT`s into the store's own tables, with their indexes and
/// foreign keys: what the writes alone cost, without ingest's reads, rules and updates.
async fn raw_insert_store_schema_once() -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("schema.db");
    let account = {
        let store = SqlStore::open_sqlite(path.to_str().expect("utf-8 path")).await.expect("store");
        let id = store
            .create_account(NewAccount::new(ChannelKind::from_static("email"), "bench"), T0)
            .await
            .expect("account")
            .id;
        store.close().await;
        id
    };
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .pragma("cache_size", "-32768")
        .pragma("temp_store", "memory")
        .pragma("wal_autocheckpoint", "8000");
    let pool =
        SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("pool");
    let batches = ingest_requests(account);
    let account_text = account.to_string();
    let mut identities: HashSet<String> = HashSet::new();
    let mut identity_of: std::collections::HashMap<String, String> = Default::default();
    let mut conversation_of: std::collections::HashMap<String, String> = Default::default();
    let start = Instant::now();
    for batch in &batches {
        let mut conn = pool.acquire().await.expect("connection");
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin");
        // The rows ingest would create: an identity per new address, a conversation per new
        // thread, a message per request.
        let mut new_identities: Vec<(String, &str, i64)> = Vec::new();
        let mut new_conversations: Vec<(String, &str, String, i64)> = Vec::new();
        let mut messages: Vec<[String; 3]> = Vec::new();
        for r in batch {
            let m = &r.message;
            let identity = identity_of
                .entry(m.remote.address.clone())
                .or_insert_with(|| {
                    let id = r.new_identity_id.to_string();
                    if identities.insert(id.clone()) {
                        new_identities.push((id.clone(), m.remote.address.as_str(), r.now.0));
                    }
                    id
                })
                .clone();
            let conversation = conversation_of
                .entry(m.thread_key.clone())
                .or_insert_with(|| {
                    let id = r.new_conversation_id.to_string();
                    new_conversations.push((
                        id.clone(),
                        m.thread_key.as_str(),
                        identity.clone(),
                        r.now.0,
                    ));
                    id
                })
                .clone();
            messages.push([r.new_message_id.to_string(), conversation, identity]);
        }
        if !new_identities.is_empty() {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO identities (id, account_id, address, display_name, username, \
                 contact_id, merged_into, created_at, updated_at) ",
            );
            q.push_values(&new_identities, |mut b, (id, address, now)| {
                b.push_bind(id.as_str())
                    .push_bind(account_text.as_str())
                    .push_bind(*address)
                    .push_bind(None::<&str>)
                    .push_bind(None::<&str>)
                    .push_bind(None::<&str>)
                    .push_bind(None::<&str>)
                    .push_bind(*now)
                    .push_bind(*now);
            });
            q.build().execute(&mut *tx).await.expect("insert identities");
        }
        if !new_conversations.is_empty() {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO conversations (id, account_id, thread_key, primary_identity, \
                 contact_id, status, opened_at, last_activity_at, expires_at, closed_at, version) ",
            );
            q.push_values(&new_conversations, |mut b, (id, thread, identity, now)| {
                b.push_bind(id.as_str())
                    .push_bind(account_text.as_str())
                    .push_bind(*thread)
                    .push_bind(identity.as_str())
                    .push_bind(None::<&str>)
                    .push_bind("open")
                    .push_bind(*now)
                    .push_bind(*now)
                    .push_bind(None::<i64>)
                    .push_bind(None::<i64>)
                    .push_bind(0_i64);
            });
            q.build().execute(&mut *tx).await.expect("insert conversations");
        }
        let rows: Vec<[String; 4]> = messages
            .into_iter()
            .map(|[id, conversation, identity]| [id, account_text.clone(), conversation, identity])
            .collect();
        insert_messages(&mut tx, "messages", batch, &rows).await;
        tx.commit().await.expect("commit");
    }
    let took = start.elapsed();
    record("sqlite_raw_insert_store_schema_10k", INGEST_MESSAGES, took);
    pool.close().await;
    took
}

/// Benchmarks `run`, one call per iteration; each call measures and returns its own time
/// (setup such as creating a database stays outside it).
fn bench_runs<F, Fut>(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, name: &str, run: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let run = &run;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run().await;
                }
                total
            }
        })
    });
}

fn ingest(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("store");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(INGEST_MESSAGES as u64));
    bench_runs(&mut group, rt, "sqlite_ingest_10k", ingest_once);
    bench_runs(&mut group, rt, "sqlite_raw_insert_10k", || raw_insert_once(false));
    bench_runs(&mut group, rt, RAW_PROMISE_INDEXES, || raw_insert_once(true));
    bench_runs(&mut group, rt, "sqlite_raw_insert_store_schema_10k", || {
        raw_insert_store_schema_once()
    });
    group.finish();
}

// ----- queue -----

/// Claims in batches and completes each batch's jobs either one after the other or, as the
/// engine's dispatcher does (it runs a claimed batch's jobs concurrently), all at once.
async fn sqlite_queue_run(concurrent: bool) -> Duration {
    let store = SqlStore::open_sqlite_temporary().await.expect("store");
    for n in 0..SQLITE_JOBS {
        store
            .enqueue(NewJob::new(JobKind::HistorySync, Timestamp(T0.0 + n as i64)), T0)
            .await
            .expect("enqueue");
    }
    let now = Timestamp(T0.0 + 1_000_000);
    let start = Instant::now();
    let mut done = 0;
    loop {
        let leases = store
            .claim(
                "worker",
                &[JobKind::HistorySync],
                SQLITE_CLAIM_BATCH,
                Duration::from_secs(60),
                now,
            )
            .await
            .expect("claim");
        if leases.is_empty() {
            break;
        }
        if concurrent {
            for r in
                futures::future::join_all(leases.iter().map(|l| store.complete(l, None, now))).await
            {
                r.expect("complete");
            }
        } else {
            for lease in &leases {
                store.complete(lease, None, now).await.expect("complete");
            }
        }
        done += leases.len();
    }
    let took = start.elapsed();
    assert_eq!(done, SQLITE_JOBS);
    record(if concurrent { SQLITE_DISPATCHER } else { "sqlite_queue_5k" }, SQLITE_JOBS, took);
    took
}

fn sqlite_queue(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("store");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(SQLITE_JOBS as u64));
    bench_runs(&mut group, rt, "sqlite_queue_5k", || sqlite_queue_run(false));
    bench_runs(&mut group, rt, SQLITE_DISPATCHER, || sqlite_queue_run(true));
    group.finish();
}

/// A fresh database on the server of `TEST_DATABASE_URL`, and the URL of the server.
async fn pg_database(server: &str) -> (String, String) {
    let mut admin =
        sqlx::PgConnection::connect(server).await.expect("connect to TEST_DATABASE_URL");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = format!("test_{secs}_{}", uuid::Uuid::new_v4().simple());
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
    (format!("{}/{name}{query}", &base[..path]), name)
}

async fn pg_fill(store_url: &str) {
    let mut conn = sqlx::PgConnection::connect(store_url).await.expect("connect");
    conn.execute("TRUNCATE job_attempts, jobs").await.expect("truncate");
    let sql = format!(
        "INSERT INTO jobs (id, kind, account_id, message_id, payload, unique_key, state, attempt, \
         max_attempts, run_at, leased_by, lease_expires_at, last_error, created_at, updated_at) \
         SELECT gen_random_uuid()::text, 'history_sync', NULL, NULL, 'null', NULL, 'available', 0, 10, \
         {t0} + n, NULL, NULL, NULL, {t0}, {t0} FROM generate_series(1, {PG_JOBS}) AS n",
        t0 = T0.0
    );
    conn.execute(sqlx::AssertSqlSafe(sql)).await.expect("fill jobs");
    conn.execute("VACUUM ANALYZE jobs").await.ok();
    conn.close().await.ok();
}

async fn pg_queue_once(
    store: &SqlStore,
    url: &str,
    name: &'static str,
    concurrent: bool,
) -> Duration {
    pg_fill(url).await;
    let now = Timestamp(T0.0 + 1_000_000);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..PG_WORKERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut mine = Vec::new();
            loop {
                let leases = store
                    .claim(
                        &worker,
                        &[JobKind::HistorySync],
                        PG_CLAIM_BATCH,
                        Duration::from_secs(60),
                        now,
                    )
                    .await
                    .expect("claim");
                if leases.is_empty() {
                    break;
                }
                if concurrent {
                    let done = futures::future::join_all(
                        leases.iter().map(|l| store.complete(l, None, now)),
                    )
                    .await;
                    for r in done {
                        r.expect("complete");
                    }
                } else {
                    for lease in &leases {
                        store.complete(lease, None, now).await.expect("complete");
                    }
                }
                mine.extend(leases.iter().map(|l| l.job.id));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.expect("worker") {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    let took = start.elapsed();
    assert_eq!(seen.len(), PG_JOBS, "every job claimed exactly once");
    record(name, PG_JOBS, took);
    took
}

fn pg_queue(c: &mut Criterion, rt: &Runtime) {
    let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("store/postgres_queue_*: skipped, TEST_DATABASE_URL is not set");
        return;
    };
    let (url, db) = rt.block_on(pg_database(&server));
    for (name, synchronous_commit, concurrent) in
        [(PG_DURABLE, true, false), (PG_ASYNC_COMMIT, false, false), (PG_DISPATCHER, true, true)]
    {
        let store = Arc::new(rt.block_on(async {
            SqlStore::builder()
                .max_connections(if concurrent { 16 } else { 8 })
                .listen(false)
                .synchronous_commit(synchronous_commit)
                .connect_postgres(&url)
                .await
                .expect("store")
        }));
        let mut group = c.benchmark_group("store");
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(10))
            .throughput(Throughput::Elements(PG_JOBS as u64));
        bench_runs(&mut group, rt, name, || pg_queue_once(&store, &url, name, concurrent));
        group.finish();
        rt.block_on(store.close());
    }
    rt.block_on(async {
        if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                )))
                .await
                .ok();
        }
    });
}

/// Prints the medians and the verdicts; `ingest_ratio` is the interleaved ingest/raw ratio.
fn summary(ingest_ratio: Option<f64>) {
    let line = |name: &str, unit: &str| match median(name) {
        Some(r) => println!("  {name:<32} {r:>12.0} {unit}/s (median of {} runs)", runs(name)),
        None => println!("  {name:<32} not run"),
    };
    println!("\nchannel-store summary");
    line("sqlite_ingest_10k", "messages");
    line("sqlite_raw_insert_store_schema_10k", "messages");
    if let (Some(ingest), Some(raw), Some(ratio)) =
        (median("sqlite_ingest_10k"), median("sqlite_raw_insert_store_schema_10k"), ingest_ratio)
    {
        println!(
            "  ingest / raw insert of the same rows = {:.0} %, median of {RATIO_ROUNDS} interleaved rounds \
             (target >= 50 %: {}; {:.0} % from the two medians above), ingest >= 20,000 messages/s: {}",
            ratio * 100.0,
            verdict(ratio >= 0.5),
            ingest / raw * 100.0,
            verdict(ingest >= 20_000.0)
        );
    }
    line("sqlite_raw_insert_10k", "messages");
    line(RAW_PROMISE_INDEXES, "messages");
    if let (Some(ingest), Some(plain), Some(schema), Some(promise)) = (
        median("sqlite_ingest_10k"),
        median("sqlite_raw_insert_10k"),
        median("sqlite_raw_insert_store_schema_10k"),
        median(RAW_PROMISE_INDEXES),
    ) {
        println!(
            "  context, against the plain table: ingest {:.0} %, raw into the store's tables {:.0} %, \
             raw into a table with only the unique provider id and the conversation index {:.0} %",
            ingest / plain * 100.0,
            schema / plain * 100.0,
            promise / plain * 100.0
        );
    }
    line("sqlite_queue_5k", "jobs");
    if let Some(r) = median("sqlite_queue_5k") {
        println!("  sqlite queue >= 5,000 jobs/s: {}", verdict(r >= 5_000.0));
    }
    line(SQLITE_DISPATCHER, "jobs");
    if let Some(r) = median(SQLITE_DISPATCHER) {
        println!(
            "  sqlite queue, batches completed concurrently >= 5,000 jobs/s: {}",
            verdict(r >= 5_000.0)
        );
    }
    line(PG_DURABLE, "jobs");
    if let Some(r) = median(PG_DURABLE) {
        println!(
            "  postgres queue (synchronous_commit on) >= 5,000 jobs/s: {} (no double claims: asserted)",
            verdict(r >= 5_000.0)
        );
    }
    line(PG_DISPATCHER, "jobs");
    if let Some(r) = median(PG_DISPATCHER) {
        println!(
            "  postgres queue (synchronous_commit on, batches completed concurrently, 16 connections) >= 5,000 jobs/s: {} (no double claims: asserted)",
            verdict(r >= 5_000.0)
        );
    }
    line(PG_ASYNC_COMMIT, "jobs");
    if let Some(r) = median(PG_ASYNC_COMMIT) {
        println!(
            "  postgres queue (synchronous_commit off) >= 5,000 jobs/s: {} (no double claims: asserted)",
            verdict(r >= 5_000.0)
        );
    }
}

fn runs(name: &str) -> usize {
    FIGURES.lock().unwrap_or_else(|e| e.into_inner()).get(name).map_or(0, Vec::len)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Rounds of the interleaved ingest/raw comparison.
const RATIO_ROUNDS: usize = 15;

/// The ingest/raw ratio as the median of [`RATIO_ROUNDS`] rounds, each running ingest and the
/// raw insert into the store's tables once, back to back (which one first alternates), so
/// that both sides of every ratio see the same machine: the medians of the two criterion
/// benchmarks, measured a minute apart, move with whatever else the shared machine runs.
/// Runs only when criterion ran both benchmarks (not filtered out).
fn interleaved_ingest_ratio(rt: &Runtime) -> Option<f64> {
    median("sqlite_ingest_10k")?;
    median("sqlite_raw_insert_store_schema_10k")?;
    let mut ratios: Vec<f64> = rt.block_on(async {
        let mut ratios = Vec::with_capacity(RATIO_ROUNDS);
        for round in 0..RATIO_ROUNDS {
            let (ingest, raw) = if round % 2 == 0 {
                let ingest = ingest_once().await;
                (ingest, raw_insert_store_schema_once().await)
            } else {
                let raw = raw_insert_store_schema_once().await;
                (ingest_once().await, raw)
            };
            // Rates are messages per second: ingest / raw = raw time / ingest time.
            ratios.push(raw.as_secs_f64() / ingest.as_secs_f64());
        }
        ratios
    });
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied()
}

fn main() {
    let rt = runtime();
    let mut c = Criterion::default().configure_from_args();
    ingest(&mut c, &rt);
    sqlite_queue(&mut c, &rt);
    pg_queue(&mut c, &rt);
    c.final_summary();
    let ratio = interleaved_ingest_ratio(&rt);
    summary(ratio);
}
