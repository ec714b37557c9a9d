//! `kill -9` proof of worker liveness: a worker process that dies holding its accounts and a
//! claimed send is taken over through its liveness lock (a file lock beside SQLite, an
//! advisory lock on PostgreSQL), not through time. Leases and the job lease last 10 minutes
//! here, so the restarted worker could not take the accounts or the send before they ran out
//! unless the dead worker's lock was seen free: it takes them at once, and the send goes out.
//! Worker processes are this test binary started again as a child running [`worker_process`].

mod support;

use support::process::{Worker, open};

use std::sync::Arc;
use std::time::{Duration, Instant};

use channel_core::runtime::{Runtime, StaticChannels};
use channel_core::state::StateKey;
use channel_core::testing::{MemoryChannel, SendScript};
use channel_core::{
    AccountId, AttemptOutcome, BlobStore, ChannelKind, Engine, IdentityInfo, InboundMessage,
    MessageStatus, NewAccount, OutboundMessage, Timestamp,
};
use channel_store::SqlStore;

const ACCOUNTS: usize = 5;
/// Far longer than the test may take: only the liveness lock can free them in time.
const LONG: Duration = Duration::from_secs(600);
const WORKER_ENV: &str = "WORKER_TAKEOVER_WORKER";

fn engine(store: SqlStore, worker: &str) -> Engine {
    Engine::builder(Arc::new(store), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .worker_id(worker.to_owned())
        .leases(LONG, Duration::from_millis(200))
        .job_lease_ttl(LONG)
        .poll_interval(Duration::from_millis(200))
        .build()
        .expect("engine")
}

async fn a_dead_worker_is_taken_over_through_its_lock(store: &str, engine: Engine) {
    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        let new = NewAccount::new(ChannelKind::from_static("memory"), format!("a{n}"));
        accounts.push(engine.store().create_account(new, engine.now()).await.expect("account").id);
    }
    let hello = InboundMessage::text("m-1", "chat", IdentityInfo::new("tg:1"), "hi", Timestamp(1));
    let conversation = engine.deliver(accounts[0], hello).await.expect("deliver").conversation_id;

    let mut first = Worker::start(WORKER_ENV, &format!("first true {store}"));
    first.wait_for(&format!("held {ACCOUNTS}")).await;
    let message =
        engine.send(None, OutboundMessage::text(conversation, "reply")).await.expect("send");
    first.wait_for("sending").await;
    // Killed holding every account and the claimed send.
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");

    let restarted = Instant::now();
    let mut second = Worker::start(WORKER_ENV, &format!("second false {store}"));
    second.wait_for(&format!("held {ACCOUNTS}")).await;
    let took = restarted.elapsed();
    let sent = async {
        loop {
            let m = engine.message(message).await.expect("message");
            if m.status == MessageStatus::Sent {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(support::process::WAIT, sent).await.expect("the rescued send goes out");
    let jobs = engine
        .jobs(&channel_core::reads::JobQuery::all(), channel_core::page::PageRequest::first(10))
        .await
        .expect("jobs")
        .items;
    assert_eq!(jobs.len(), 1);
    let attempts = engine.job_attempts(jobs[0].id).await.expect("attempts");
    let outcomes: Vec<AttemptOutcome> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes.first(), Some(&AttemptOutcome::Rescued), "{outcomes:?}");
    assert_eq!(outcomes.last(), Some(&AttemptOutcome::Completed), "{outcomes:?}");
    assert!(took < LONG / 10, "taken over through the lock, not by waiting: {took:?}");
    println!("{store}: accounts held again {took:?} after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_killed_worker_is_taken_over_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, path) = support::sqlite_in(&dir).await;
    let path = path.to_str().expect("utf-8 path").to_owned();
    a_dead_worker_is_taken_over_through_its_lock(&path, engine(store, "test")).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_worker_is_taken_over_at_once() {
    let url = support::pg::fresh_database().await;
    a_dead_worker_is_taken_over_through_its_lock(&url, engine(open(&url).await, "test")).await;
}

/// The worker process (with `WORKER_TAKEOVER_WORKER` set; without it it returns at once):
/// runs every account on a `MemoryChannel` (whose sends hang, for the first worker), prints
/// `held <n>` when it holds `n` accounts and `sending` when a send is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the takeover tests' worker process, started by them"]
async fn worker_process() {
    let Ok(env) = std::env::var(WORKER_ENV) else { return };
    let mut parts = env.splitn(3, ' ');
    let (name, hang, store) = (
        parts.next().expect("name"),
        parts.next().expect("hang") == "true",
        parts.next().expect("store"),
    );
    let engine = engine(open(store).await, name);
    let accounts: Vec<AccountId> = engine
        .accounts(channel_core::page::PageRequest::first(100))
        .await
        .expect("accounts")
        .items
        .into_iter()
        .map(|a| a.id)
        .collect();
    let mut channels = StaticChannels::new();
    let mut all = Vec::new();
    for a in &accounts {
        let channel = Arc::new(MemoryChannel::new());
        if hang {
            channel.script_sends([SendScript::Hang]);
        }
        all.push(Arc::clone(&channel));
        channels = channels.with(*a, channel);
    }
    let runtime = Runtime::builder(engine, Arc::new(channels)).start().await.expect("runtime");
    println!("\nready");
    let mut said = 0;
    let mut sending = false;
    loop {
        let held = accounts.iter().filter(|a| runtime.holds_account(**a)).count();
        if held != said {
            println!("held {held}");
            said = held;
        }
        if !sending && all.iter().any(|c| !c.sends().is_empty()) {
            println!("sending");
            sending = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
