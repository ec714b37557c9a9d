//! `kill -9` proof of the durable event feed: a service that answers every received message
//! through the feed (consumer `auto-reply`, each reply sent with an idempotency key derived
//! from the message) makes exactly one reply per message although its worker processes are
//! killed at random moments, some of them between reading an event and acknowledging it
//! (that event is read again by the next worker). Messages keep arriving between the kills.
//! Worker processes are this test binary started again as a child running [`worker_process`].

mod support;

use support::process::{Worker, open};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use channel_core::feed::ConsumerStart;
use channel_core::state::StateKey;
use channel_core::{
    BlobStore, ChannelKind, ConversationId, Direction, Engine, Event, IdentityInfo, InboundMessage,
    NewAccount, OutboundMessage, Timestamp,
};
use channel_store::SqlStore;

/// Messages delivered before the first worker, and after each kill.
const FIRST: usize = 10;
const PER_ROUND: usize = 3;
const KILLS: usize = 12;
const WORKER_ENV: &str = "FEED_KILL_WORKER";

fn engine(store: SqlStore) -> Engine {
    Engine::builder(Arc::new(store), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .feed_poll_interval(Duration::from_millis(50))
        .build()
        .expect("engine")
}

/// The reply to the message with provider id `provider_id`: the same in every process.
fn reply(conversation: ConversationId, provider_id: &str) -> OutboundMessage {
    OutboundMessage::text(conversation, format!("thanks for {provider_id}"))
        .idempotency_key(format!("reply-{provider_id}"))
}

/// Delivers `n` more messages in one chat; returns its conversation.
async fn deliver(
    engine: &Engine,
    account: channel_core::AccountId,
    delivered: &mut usize,
    n: usize,
) -> ConversationId {
    let mut conversation = None;
    for _ in 0..n {
        let id = format!("in-{delivered}");
        let at = Timestamp(*delivered as i64);
        let m = InboundMessage::text(&id, "chat", IdentityInfo::new("tg:1"), "hello", at);
        conversation = Some(engine.deliver(account, m).await.expect("deliver").conversation_id);
        *delivered += 1;
    }
    conversation.expect("at least one message")
}

async fn one_reply_per_message_across_kills(store: &str, engine: Engine) {
    let account = NewAccount::new(ChannelKind::from_static("memory"), "a");
    let account = engine.store().create_account(account, engine.now()).await.expect("account");
    let mut delivered = 0usize;
    let conversation = deliver(&engine, account.id, &mut delivered, FIRST).await;
    let seed = std::time::UNIX_EPOCH.elapsed().expect("clock").as_nanos() as u64;
    let mut rng = support::differential::Rng::new(seed);
    // Positions each worker read, and those it acknowledged.
    let mut read_by: Vec<BTreeSet<String>> = Vec::new();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut killed_before_ack = 0;
    for round in 0..=KILLS {
        let mut worker = Worker::start(WORKER_ENV, store);
        worker.wait_for("ready").await;
        if round == KILLS {
            // The last worker answers everything: wait until it is idle after the last message.
            loop {
                let line = worker.wait_for("idle ").await;
                if line == format!("idle {delivered}") {
                    break;
                }
            }
        } else if round % 2 == 0 {
            // Between reading an event and acknowledging it.
            worker.wait_for("read ").await;
        } else {
            let pause = Duration::from_micros(rng.below(40_000));
            tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await.expect("pause");
        }
        let lines = worker.kill().await;
        let mut read = BTreeSet::new();
        let mut unacked = BTreeSet::new();
        for line in &lines {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["read", position] => {
                    read.insert(position.to_owned());
                    unacked.insert(position.to_owned());
                }
                ["acked", through] => {
                    acked.insert(through.to_owned());
                    unacked.clear();
                }
                _ => {}
            }
        }
        if round % 2 == 0 && round < KILLS {
            assert!(!unacked.is_empty(), "killed between read and ack: {lines:?}");
            killed_before_ack += 1;
        }
        // What a killed worker read and did not acknowledge, the next one reads again.
        read_by.push(read);
        if round < KILLS {
            deliver(&engine, account.id, &mut delivered, PER_ROUND).await;
        }
    }
    let redelivered: usize = read_by.windows(2).map(|w| w[0].intersection(&w[1]).count()).sum();
    assert!(redelivered > 0, "some events were read again after a kill before their ack");

    let all = engine.store().messages(conversation, 100_000).await.expect("messages");
    let inbound: BTreeSet<String> = all
        .iter()
        .filter(|m| m.direction == Direction::Inbound)
        .filter_map(|m| m.provider_id.clone())
        .collect();
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    for m in all.iter().filter(|m| m.direction == Direction::Outbound) {
        let text = m.text.clone().unwrap_or_default();
        let to = text.strip_prefix("thanks for ").unwrap_or(&text).to_owned();
        *replies.entry(to).or_default() += 1;
    }
    assert_eq!(inbound.len(), delivered);
    let expected: BTreeMap<String, usize> = inbound.iter().map(|p| (p.clone(), 1)).collect();
    assert_eq!(replies, expected, "exactly one reply per received message");
    println!(
        "{store}: {} workers, {KILLS} kills ({killed_before_ack} between a read and its ack), \
         {delivered} messages, {redelivered} events read again (seed {seed})",
        KILLS + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_feed_reactions_happen_once_per_message_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, path) = support::sqlite_in(&dir).await;
    one_reply_per_message_across_kills(path.to_str().expect("utf-8 path"), engine(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_reactions_happen_once_per_message_across_kill_9() {
    let url = support::pg::fresh_database().await;
    one_reply_per_message_across_kills(&url, engine(open(&url).await)).await;
}

/// The worker process (with `FEED_KILL_WORKER` set; without it it returns at once): reads
/// the feed as consumer `auto-reply` and answers each received message, printing
/// `read <position>` before, `replied <provider id>` after each reply, `acked <position>`
/// after each acknowledgement and `idle <n>` (replies sent so far in all) when it caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the feed kill tests' worker process, started by them"]
async fn worker_process() {
    let Ok(store) = std::env::var(WORKER_ENV) else { return };
    let engine = engine(open(&store).await);
    let mut feed =
        engine.feed_consumer("auto-reply", ConsumerStart::Beginning).await.expect("consumer");
    println!("\nready");
    loop {
        let batch = feed.poll(4).await.expect("read the feed");
        if batch.is_empty() {
            let replies = engine
                .jobs(
                    &channel_core::reads::JobQuery::all(),
                    channel_core::page::PageRequest::first(1000),
                )
                .await
                .expect("jobs")
                .items
                .len();
            println!("idle {replies}");
            feed.next_batch(1).await.expect("wait");
            feed.rewind();
            continue;
        }
        for e in &batch {
            println!("read {}", e.position);
            if let Event::MessageReceived { conversation_id, message_id, .. } = e.event {
                let message = engine.message(message_id).await.expect("message");
                if message.direction == Direction::Inbound {
                    let provider_id = message.provider_id.expect("a provider id");
                    engine.send(None, reply(conversation_id, &provider_id)).await.expect("send");
                    println!("replied {provider_id}");
                }
            }
        }
        let last = batch.last().expect("not empty").position;
        feed.ack(last).await.expect("ack");
        println!("acked {last}");
    }
}
