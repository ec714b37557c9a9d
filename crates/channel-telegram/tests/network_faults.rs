//! Promises 2, 3 and 4 on Telegram under network faults: the real grammers client talks to the
//! loopback MTProto server through a proxy that resets connections, blackholes them, cuts the
//! server's replies in the middle and delays them (`support/fault_proxy.rs`), at least 200
//! times, while people write in and the account answers each message through the engine's
//! durable queue (channel-core's runtime on SQLite). Once the network heals: every incoming
//! message is stored exactly once, every reply is final (`Sent`, with the id Telegram gave it)
//! and Telegram holds exactly one copy of each reply.
//!
//! The faults are drawn from a seed, printed at the start; `NETWORK_FAULTS_SEED=<seed>` draws
//! the same faults again (their timing against the traffic still varies from run to run).
#![cfg(feature = "testing")]

#[path = "support/fault_proxy.rs"]
mod fault_proxy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use channel_core::retry::RetryPolicy;
use channel_core::runtime::{Runtime, StaticChannels};
use channel_core::send_policy::RateLimitPolicy;
use channel_core::state::StateKey;
use channel_core::{
    AccountId, Backoff, BlobStore, Direction, Engine, MessageStatus, NewAccount, Origin,
    OutboundMessage, Rate, Store,
};
use channel_store::SqlStore;
use channel_telegram::session::{SESSION_KEY, UPDATES_KEY};
use channel_telegram::testing::loopback::{LoopbackServer, TestUser};
use channel_telegram::{TelegramChannel, TelegramConfig};
use fault_proxy::{FaultPlan, FaultProxy};
use grammers_tl_types::{self as tl, Identifiable};
use tokio::time::Instant;

const SEND: u32 = tl::functions::messages::SendMessage::CONSTRUCTOR_ID;
/// Faults to inject before the network heals.
const FAULTS: usize = 220;
/// The longest the faulty phase may take.
const FAULTY_PHASE: Duration = Duration::from_secs(150);
/// The longest everything may take to settle once the network healed.
const SETTLE: Duration = Duration::from_secs(60);

/// What the server and the store say about the incoming messages and their replies.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    /// Messages people wrote (the server's record).
    incoming: usize,
    /// Incoming messages not stored.
    not_stored: usize,
    /// Incoming messages stored more than once.
    stored_twice: usize,
    /// Inbound rows that are no message people wrote.
    stray_inbound: usize,
    /// Incoming messages the server holds no reply to.
    lost: usize,
    /// Incoming messages the server holds more than one reply to (also: one reply text held
    /// twice).
    duplicated: usize,
    /// Replies not final yet (`Pending`, `Sending`).
    not_final: usize,
    /// Replies stored `Failed`.
    failed: usize,
    /// Replies `Sent` without the id the server gave them.
    wrong_id: usize,
    /// Outbound rows that are not the one reply of an incoming message (an echo stored as
    /// another app's message, a second reply).
    stray_outbound: usize,
}

impl Report {
    fn settled(&self) -> bool {
        *self == Report { incoming: self.incoming, ..Report::default() }
    }
}

async fn report(server: &LoopbackServer, store: &dyn Store, account: AccountId) -> Report {
    let world = server.messages();
    let incoming: Vec<_> = world.iter().filter(|m| !m.out).collect();
    let mut replies: HashMap<i32, Vec<i32>> = HashMap::new();
    let mut texts: HashMap<&str, usize> = HashMap::new();
    for m in world.iter().filter(|m| m.out) {
        if let Some(to) = m.reply_to {
            replies.entry(to).or_default().push(m.id);
        }
        *texts.entry(m.text.as_str()).or_default() += 1;
    }
    let mut stored = Vec::new();
    for c in store.conversations(account, None, 10_000).await.expect("conversations") {
        stored.extend(store.messages(c.id, 100_000).await.expect("messages"));
    }
    let mut r = Report { incoming: incoming.len(), ..Report::default() };
    let mut inbound: HashMap<&str, usize> = HashMap::new();
    for s in stored.iter().filter(|s| s.direction == Direction::Inbound) {
        *inbound.entry(s.provider_id.as_deref().unwrap_or_default()).or_default() += 1;
    }
    let written: HashSet<String> = incoming.iter().map(|m| m.id.to_string()).collect();
    r.stray_inbound = inbound.keys().filter(|pid| !written.contains(**pid)).count();
    r.duplicated = texts.values().filter(|n| **n > 1).count();
    for m in &incoming {
        let pid = m.id.to_string();
        match inbound.get(pid.as_str()).copied().unwrap_or(0) {
            0 => r.not_stored += 1,
            1 => {}
            _ => r.stored_twice += 1,
        }
        let sent = replies.get(&m.id).map_or(&[][..], Vec::as_slice);
        r.lost += usize::from(sent.is_empty());
        r.duplicated += usize::from(sent.len() > 1);
        let rows: Vec<_> = stored
            .iter()
            .filter(|s| s.direction == Direction::Outbound && s.reply_to.as_deref() == Some(&pid))
            .collect();
        match rows.as_slice() {
            [] => r.not_final += 1,
            [one] => match one.status {
                MessageStatus::Sent => {
                    r.wrong_id += usize::from(
                        one.provider_id != sent.first().map(i32::to_string) || sent.len() != 1,
                    );
                }
                MessageStatus::Failed => r.failed += 1,
                _ => r.not_final += 1,
            },
            [..] => r.stray_outbound += rows.len() - 1,
        }
    }
    r.stray_outbound += stored
        .iter()
        .filter(|s| s.direction == Direction::Outbound)
        .filter(|s| s.origin == Origin::OtherApp || s.reply_to.is_none())
        .count();
    r
}

/// Answers every incoming message once, through the engine's queue: it looks at what is
/// stored and queues a reply ("re: <text>", as a reply to it) for each incoming message that
/// has none.
async fn answer_everyone(engine: Engine, account: AccountId) {
    let store = Arc::clone(engine.store());
    let mut answered = HashSet::new();
    loop {
        if let Ok(conversations) = store.conversations(account, None, 10_000).await {
            for c in conversations {
                let Ok(messages) = store.messages(c.id, 100_000).await else { continue };
                for m in &messages {
                    let Some(pid) = m.provider_id.as_deref() else { continue };
                    if m.direction != Direction::Inbound || answered.contains(pid) {
                        continue;
                    }
                    let has_reply = messages.iter().any(|r| {
                        r.direction == Direction::Outbound && r.reply_to.as_deref() == Some(pid)
                    });
                    if !has_reply {
                        let reply = OutboundMessage {
                            conversation_id: c.id,
                            text: Some(format!("re: {}", m.text.as_deref().unwrap_or_default())),
                            html: None,
                            subject: None,
                            idempotency_key: None,
                            reply_to: Some(pid.to_owned()),
                            attachments: Vec::new(),
                            label: "auto_reply".to_owned(),
                        };
                        if engine.send(Some(account), reply).await.is_err() {
                            continue;
                        }
                    }
                    answered.insert(pid.to_owned());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One Telegram account of the engine, behind its own faulty network: its own loopback
/// server (the account's Telegram), the proxy in front of it and the people who write to it.
struct Line {
    server: Arc<LoopbackServer>,
    proxy: FaultProxy,
    account: AccountId,
    channel: Arc<TelegramChannel>,
}

impl Line {
    /// Sets up account `n`; its proxy's faults are drawn from `seed`. With
    /// `duplicate_is_error`, its server answers a send it has seen with `RANDOM_ID_DUPLICATE`
    /// (as Telegram may) instead of the message sent before.
    async fn start(engine: &Engine, n: u64, seed: u64, duplicate_is_error: bool) -> Self {
        let server = Arc::new(LoopbackServer::start().await.unwrap());
        server.answer_duplicate_sends_with_error(duplicate_is_error);
        let proxy = FaultProxy::start(server.addr(), seed, FaultPlan::default()).await;
        let account = engine
            .store()
            .create_account(
                NewAccount::new(channel_telegram::KIND, format!("faults {n}")),
                engine.now(),
            )
            .await
            .unwrap()
            .id;
        let state = engine.account_state(account);
        state.put(SESSION_KEY, &server.stored_session().to_bytes()).await.unwrap();
        // Short liveness settings: a blackhole is found by the ping within 300 ms.
        let (dc, _) = server.data_centre();
        let config = TelegramConfig::new(4242)
            .ping_interval(Duration::from_millis(100))
            .ping_deadline(Duration::from_millis(200))
            .connect_timeout(Duration::from_secs(1))
            .sync_interval(Duration::from_millis(100))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
            .send_timeout(Duration::from_millis(1500))
            .resolve_timeout(Duration::from_millis(1500))
            .data_centre(dc, proxy.addr());
        Self { server, proxy, account, channel: Arc::new(TelegramChannel::new(config)) }
    }

    /// Waits until the account's first connection stored its update state: messages written
    /// before are history, not updates (as at Telegram).
    async fn wait_until_listening(&self, engine: &Engine, deadline: Instant) {
        let state = engine.account_state(self.account);
        while state.get(UPDATES_KEY).await.unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "never connected: {}",
                self.proxy.counts().summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// People write all along, about ten messages a second in all, some as short updates,
    /// until `writing` is cleared; returns how many they wrote.
    fn write_in(&self, writing: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
        let server = Arc::clone(&self.server);
        let people: Vec<TestUser> =
            (0..PEOPLE).map(|i| server.add_user(3001 + i, &format!("Person {i}"), None)).collect();
        tokio::spawn(async move {
            let mut n = 0usize;
            while writing.load(Ordering::SeqCst) {
                let who = &people[n % people.len()];
                let text = format!("message {n}");
                if n.is_multiple_of(3) {
                    server.incoming_short(who.id, &text);
                } else {
                    server.incoming(who.id, &text);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        })
    }
}

/// People writing to each account.
const PEOPLE: i64 = 4;

fn faults(lines: &[Line]) -> usize {
    lines.iter().map(|l| l.proxy.counts().total()).sum()
}

fn summary(lines: &[Line]) -> String {
    lines.iter().map(|l| l.proxy.counts().summary()).collect::<Vec<_>>().join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_200_network_faults_nothing_is_lost_nothing_is_stored_or_sent_twice_and_every_reply_is_sent()
 {
    let seed = std::env::var("NETWORK_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("network faults: seed {seed} (NETWORK_FAULTS_SEED={seed} draws the same faults)");
    let started = Instant::now();

    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite_temporary().await.unwrap());
    // Loose limits, so that the replies keep up with the traffic; short retries, so that the
    // faults do not leave a reply waiting for long. A send fails on a fault at most a few
    // times in a row: the attempts are many so that none is given up on.
    let policy = RateLimitPolicy::new(
        Rate::per_minute(6000).burst(100),
        Rate::every(Duration::from_millis(50)).burst(20),
    );
    let retry = RetryPolicy {
        max_attempts: 50,
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        jitter: true,
    };
    let engine = Engine::builder(Arc::clone(&store), StateKey::from_bytes([7; 32]))
        .send_policy(Arc::new(policy))
        .blob_store(BlobStore::in_memory())
        .send_timeout(Duration::from_secs(2))
        .history_timeout(Duration::from_secs(2))
        .job_lease_ttl(Duration::from_secs(4))
        .rescue_interval(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(200))
        .retry(retry)
        .build()
        .unwrap();
    // Two accounts: Telegram answers a repeated send of the first with the message sent
    // before, of the second with RANDOM_ID_DUPLICATE.
    let lines = vec![
        Line::start(&engine, 1, seed, false).await,
        Line::start(&engine, 2, seed.wrapping_add(1), true).await,
    ];
    let channels = lines.iter().fold(StaticChannels::new(), |c, l| {
        c.with(l.account, Arc::clone(&l.channel) as Arc<dyn channel_core::Channel>)
    });
    let runtime = Runtime::builder(engine.clone(), Arc::new(channels)).start().await.unwrap();
    let repliers: Vec<_> =
        lines.iter().map(|l| tokio::spawn(answer_everyone(engine.clone(), l.account))).collect();

    let deadline = Instant::now() + FAULTY_PHASE;
    for line in &lines {
        line.wait_until_listening(&engine, deadline).await;
    }
    let writing = Arc::new(AtomicBool::new(true));
    let traffic: Vec<_> = lines.iter().map(|l| l.write_in(Arc::clone(&writing))).collect();
    let mut last_print = Instant::now();
    while faults(&lines) < FAULTS {
        assert!(Instant::now() < deadline, "only {}", summary(&lines));
        if last_print.elapsed() > Duration::from_secs(10) {
            println!("{:.0?}: {}", started.elapsed(), summary(&lines));
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writing.store(false, Ordering::SeqCst);
    let mut written = Vec::new();
    for t in traffic {
        written.push(t.await.unwrap());
    }
    for line in &lines {
        line.proxy.heal();
    }
    let faulty_phase = started.elapsed();

    // The network is healed: everything settles.
    let deadline = Instant::now() + SETTLE;
    let reports = loop {
        let mut reports = Vec::new();
        for line in &lines {
            reports.push(report(&line.server, store.as_ref(), line.account).await);
        }
        let blackholes_over = lines.iter().all(|l| {
            let c = l.proxy.counts();
            c.blackholes_noticed() == c.blackholes()
        });
        if (reports.iter().all(Report::settled) && blackholes_over) || Instant::now() > deadline {
            break reports;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let settle_time = started.elapsed() - faulty_phase;
    for r in repliers {
        r.abort();
    }
    let _ = runtime.shutdown().await;

    println!("network faults: {} faults in all", faults(&lines));
    for ((line, r), written) in lines.iter().zip(&reports).zip(&written) {
        let counts = line.proxy.counts();
        let sends = line.server.requests_of(SEND);
        let random_ids: HashSet<i64> = sends
            .iter()
            .filter_map(|r| r.decode::<tl::functions::messages::SendMessage>())
            .map(|s| s.random_id)
            .collect();
        let replies = line.server.messages().iter().filter(|m| m.out).count();
        println!("network faults: account {}: {}", line.account, counts.summary());
        println!(
            "network faults: account {}: {written} messages written by {PEOPLE} people, {} \
             stored, {replies} replies at the server ({} sendMessage requests for {} \
             random_ids), {} lost, {} duplicated at the recipient, {} not stored, {} stored \
             twice, {} not final, {} failed",
            line.account,
            r.incoming - r.not_stored,
            sends.len(),
            random_ids.len(),
            r.lost,
            r.duplicated,
            r.not_stored,
            r.stored_twice,
            r.not_final,
            r.failed,
        );
        assert_eq!(r.incoming, *written, "the server holds every message written");
        assert!(r.settled(), "seed {seed}: {r:?}");
        assert_eq!(replies, *written, "one reply each at the server");
        assert_eq!(
            counts.blackholes_noticed(),
            counts.blackholes(),
            "the client gives up on every blackholed connection: {}",
            counts.summary()
        );
    }
    println!(
        "network faults: faults for {faulty_phase:.1?}, settled {settle_time:.1?} later (seed {seed})"
    );
    let sum = |f: fn(&fault_proxy::FaultCounts) -> usize| {
        lines.iter().map(|l| f(l.proxy.counts())).sum::<usize>()
    };
    assert!(faults(&lines) >= 200, "{}", summary(&lines));
    for (kind, n) in [
        ("resets", sum(fault_proxy::FaultCounts::resets)),
        ("blackholes", sum(fault_proxy::FaultCounts::blackholes)),
        ("cuts", sum(fault_proxy::FaultCounts::cuts)),
        ("delays", sum(fault_proxy::FaultCounts::delays)),
    ] {
        assert!(n >= 20, "too few {kind}: {}", summary(&lines));
    }
}
