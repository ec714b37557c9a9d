//! `kill -9` proof: an idempotent send holds across a worker process killed between the
//! service's call and its return. Worker processes (this test binary started again as a
//! child running [`worker_process`]) call `Engine::send` with the keys `reply-0..reply-29`,
//! each worker from `reply-0` again, over and over, and are SIGKILLed at random moments, most
//! of them inside a call (many inside the first calls of a new key). Afterwards the store
//! (SQLite; PostgreSQL too) holds exactly one outbound message per key and no other, with the
//! id derived for the key (every id printed for it, and what a further call returns), exactly
//! one send job per message, and the same key with other content is `IdempotencyConflict`.

mod support;

use support::process::{Worker, open};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use channel_core::state::StateKey;
use channel_core::{
    BlobStore, ChannelKind, ConversationId, Direction, Engine, EngineError, IdentityInfo,
    InboundMessage, JobKind, JobState, MessageId, NewAccount, OutboundMessage,
};
use channel_store::SqlStore;

const KEYS: usize = 30;
const KILLS: usize = 60;
/// `<conversation id> <SQLite path or PostgreSQL URL>`, for the worker process.
const WORKER_ENV: &str = "IDEMPOTENT_KILL_WORKER";

fn engine(store: SqlStore) -> Engine {
    Engine::builder(Arc::new(store), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .build()
        .expect("engine")
}

/// The send of `key`, with the same content in every process.
fn send(conversation: ConversationId, key: &str) -> OutboundMessage {
    OutboundMessage::text(conversation, format!("the answer for {key}")).idempotency_key(key)
}

async fn survives_kills(store: &str, engine: Engine) {
    let started = Instant::now();
    let account = NewAccount::new(ChannelKind::from_static("memory"), "a");
    let account = engine.store().create_account(account, engine.now()).await.expect("account");
    let hello =
        InboundMessage::text("m-1", "chat", IdentityInfo::new("tg:1"), "hello", engine.now());
    let conversation = engine.deliver(account.id, hello).await.expect("deliver").conversation_id;
    let outbound = || async {
        let all = engine.store().messages(conversation, 10_000).await.expect("messages");
        all.into_iter().filter(|m| m.direction == Direction::Outbound).collect::<Vec<_>>()
    };
    let seed = std::time::UNIX_EPOCH.elapsed().expect("clock").as_nanos() as u64;
    let mut rng = support::differential::Rng::new(seed);
    // The ids printed for each key; kills inside a call, inside the first calls of a key (no
    // id printed yet), and after the commit of a new key and before its call returned.
    let mut printed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut mid_call, mut new_key_calls, mut unanswered_commits, mut committed) = (0, 0, 0, 0);
    let mut window = 2_000;
    for round in 0..=KILLS {
        let mut worker = Worker::start(WORKER_ENV, &format!("{conversation} {store}"));
        worker.wait_for("ready").await;
        // First, every other kill a random 0 to `window` µs into the first call of the next
        // new key (`window` follows the length of those calls), the others after a random
        // number of returns; then kills at a random moment (0-30 ms) or after a random number
        // of returns. The last worker goes through every key, and half again.
        let (frontier, new_keys) = (printed.len(), round < KILLS / 2 && round % 2 == 0);
        let (returns, pause_us) = match round {
            _ if round == KILLS => (KEYS * 3 / 2, 0),
            _ if new_keys => (frontier, rng.below(window + 1)),
            _ if round < KILLS / 2 => (rng.below(frontier as u64 + 1) as usize, 0),
            _ if round % 2 == 0 => (0, rng.below(30_001)),
            _ => (rng.below(KEYS as u64 * 3 / 2) as usize, 0),
        };
        for _ in 0..returns {
            worker.wait_for("sent ").await;
        }
        let pause = Duration::from_micros(pause_us);
        tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await.expect("pause");
        let mut last_call = None;
        for line in worker.kill().await {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["send", key] => last_call = Some(key.to_owned()),
                ["sent", key, id] => {
                    printed.entry(key.to_owned()).or_default().insert(id.to_owned());
                    last_call = None;
                }
                _ => {}
            }
        }
        mid_call += usize::from(last_call.is_some());
        new_key_calls += usize::from(last_call.is_some_and(|k| !printed.contains_key(&k)));
        // Keys are first committed in order: when this worker committed new ones and the last
        // has no id printed, it was killed after that commit and before the call returned.
        let now_committed = outbound().await.len();
        unanswered_commits += usize::from(now_committed > committed.max(printed.len()));
        committed = now_committed;
        if new_keys {
            window = match printed.len() - frontier {
                0 => (window * 3 / 2).min(30_000),
                1 => window,
                _ => (window / 2).max(200),
            };
        }
    }
    let crash_time = started.elapsed();

    let before = outbound().await;
    let mut ids: HashMap<MessageId, String> = HashMap::new();
    for key in (0..KEYS).map(|n| format!("reply-{n}")) {
        let id = engine.send(None, send(conversation, &key)).await.expect("the same send again");
        let seen = printed.get(&key).unwrap_or_else(|| panic!("no worker answered {key}"));
        assert_eq!(seen, &BTreeSet::from([id.to_string()]), "the ids printed for {key}");
        let stored = engine.store().message(id).await.expect("the key's message is stored");
        assert_eq!(stored.text, send(conversation, &key).text, "the content of {key}");
        let other = OutboundMessage::text(conversation, "other").idempotency_key(&key);
        let conflict = engine.send(None, other).await;
        assert!(
            matches!(conflict, Err(EngineError::IdempotencyConflict { message, .. }) if message == id),
            "{key} with other content: {conflict:?}"
        );
        assert!(ids.insert(id, key).is_none(), "two keys with one id");
    }
    assert_eq!(printed.len(), KEYS, "only reply-0..reply-{}: {:?}", KEYS - 1, printed.keys());
    let after = outbound().await;
    assert_eq!(before, after, "the test's own sends queued nothing");
    assert_eq!(after.len(), KEYS, "one message per key: {after:#?}");
    let stray: Vec<_> = after.iter().filter(|m| !ids.contains_key(&m.id)).collect();
    assert!(stray.is_empty(), "messages of no key: {stray:#?}");
    let mut jobs: HashMap<Option<MessageId>, usize> = HashMap::new();
    for state in ["available", "running", "retryable", "completed", "discarded", "cancelled"] {
        let state: JobState = state.parse().expect("a job state");
        for job in engine.store().jobs_in_state(state, 10_000).await.expect("jobs") {
            assert_eq!(job.kind, JobKind::Send, "{job:?}");
            *jobs.entry(job.message_id).or_default() += 1;
        }
    }
    let expected: HashMap<_, _> = ids.keys().map(|&id| (Some(id), 1)).collect();
    assert_eq!(jobs, expected, "one send job per message");
    println!(
        "{store}: {} kills in {crash_time:.1?} (seed {seed}), {mid_call} inside a call \
         ({new_key_calls} in a new key's call, {unanswered_commits} after its commit)",
        KILLS + 1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_idempotent_sends_hold_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, path) = support::sqlite_in(&dir).await;
    survives_kills(path.to_str().expect("utf-8 path"), engine(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_idempotent_sends_hold_across_kill_9() {
    let url = support::pg::fresh_database().await;
    survives_kills(&url, engine(open(&url).await)).await;
}

/// The worker process, run when a test above starts this test binary again as a child (with
/// `IDEMPOTENT_KILL_WORKER` set; without it it returns at once): sends `reply-0..reply-29` with their keys, over and over, until it is killed,
/// printing `send <key>` before each call and `sent <key> <message id>` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the kill tests' worker process, started by them"]
async fn worker_process() {
    let Ok(worker) = std::env::var(WORKER_ENV) else { return };
    let (conversation, store) = worker.split_once(' ').expect("conversation and store");
    let conversation: ConversationId = conversation.parse().expect("a conversation id");
    let engine = engine(open(store).await);
    // The harness printed `test worker_process ... ` without a line end: end it.
    println!("\nready");
    loop {
        for key in (0..KEYS).map(|n| format!("reply-{n}")) {
            println!("send {key}");
            let id = engine.send(None, send(conversation, &key)).await.expect("send");
            println!("sent {key} {id}");
        }
    }
}
