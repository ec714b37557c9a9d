//! The service of `src/lib.rs` (an email account on the real Dovecot and OpenSMTPD, answering
//! every mail through the durable feed) killed with `kill -9` every 2 to 10 s and restarted at
//! once, while mail keeps arriving: every mail is stored once and answered once, and the
//! time from a mail to its answer stays short across the kills (printed: a restarted worker
//! takes its account back through its dead predecessor's liveness lock, and the send that
//! predecessor had claimed, at once). The service runs in child processes: this test binary
//! started again running [`service_process`].
//!
//! `CRASH_KILLS` sets the number of kills (default 10; the run by hand: 61).

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use channel_core::feed::ConsumerStart;
use channel_core::provider::LoginInput;
use channel_core::state::StateKey;
use channel_core::{
    AccountSettings, BlobStore, Direction, Engine, Event, NewAccount, Rate, SendRates,
};
use channel_email::testing::{imap_append, raw_mail, stack};
use channel_store::SqlStore;
use channel_telegram::TelegramProvider;

const KEY: [u8; 32] = [9; 32];
const WORKER_ENV: &str = "SERVICE_CRASH_WORKER";
/// One mail every this long.
const MAIL_EVERY: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(120);

fn start_service(dir: &std::path::Path) -> Child {
    let exe = std::env::current_exe().expect("the test binary has a path");
    Command::new(exe)
        .args(["--ignored", "--exact", "service_process", "--nocapture", "--test-threads=1"])
        .env(WORKER_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the service starts")
}

/// The service process, killed when dropped (also when the test fails).
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator for the kill schedule (printed seed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mail_is_answered_once_across_kill_9_of_the_service() {
    let kills: usize = std::env::var("CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(10);
    let st = stack();
    let (alice, bob) = (st.user("crash-alice"), st.user("crash-bob"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serde_json::to_value(st.account_config(&bob)).expect("config");
    std::fs::write(dir.path().join("account.json"), config.to_string()).expect("write config");
    std::fs::write(dir.path().join("password"), &bob.password).expect("write password");

    let mut service = Service(start_service(dir.path()));
    // The observer: this process reads the same store and its feed.
    let ready = Instant::now() + WAIT;
    while !dir.path().join("ready").exists() {
        assert!(Instant::now() < ready, "the service never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = dir.path().join("service.db");
    let store = SqlStore::open_sqlite(&path.to_string_lossy()).await.expect("open the store");
    let engine = Engine::builder(Arc::new(store), StateKey::from_bytes(KEY))
        .blob_store(BlobStore::in_memory())
        .feed_poll_interval(Duration::from_millis(50))
        .build()
        .expect("engine");
    let mut feed = engine.feed_consumer("observer", ConsumerStart::Beginning).await.expect("feed");

    let seed = std::time::UNIX_EPOCH.elapsed().expect("clock").as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut appended: HashMap<String, Instant> = HashMap::new();
    let mut answered: BTreeMap<String, Duration> = BTreeMap::new();
    let mut next_mail = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_secs(2 + rng.below(9));
    let mut killed = 0;
    let mut sent_mails = 0usize;
    let deadline_after_kills = loop {
        let now = Instant::now();
        if killed < kills && now >= next_kill {
            service.0.kill().expect("SIGKILL");
            service.0.wait().expect("reaped");
            killed += 1;
            service = Service(start_service(dir.path()));
            next_kill = Instant::now() + Duration::from_secs(2 + rng.below(9));
        }
        if killed < kills && now >= next_mail {
            let id = format!("<crash-{sent_mails}@example.org>");
            // Each its own conversation (one subject would thread them all into one chat,
            // held to the per-chat send rate).
            let subject = format!("Question {sent_mails}");
            let mail = raw_mail(&alice.address, &bob.address, &id, &subject, "Hello?");
            imap_append(st.imap_port, &bob, "INBOX", &mail).await;
            appended.insert(id, Instant::now());
            sent_mails += 1;
            next_mail += MAIL_EVERY;
        }
        observe(&engine, &mut feed, &appended, &mut answered).await;
        if killed == kills {
            break Instant::now() + WAIT;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while answered.len() < appended.len() {
        assert!(
            Instant::now() < deadline_after_kills,
            "unanswered: {} of {}",
            appended.len() - answered.len(),
            appended.len()
        );
        observe(&engine, &mut feed, &appended, &mut answered).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(service);

    // In the store: each mail once, each answered once.
    let mut inbound: HashMap<String, usize> = HashMap::new();
    let mut replies: HashMap<String, usize> = HashMap::new();
    let mut conversations = Vec::new();
    let mut page = channel_core::page::PageRequest::first(500);
    loop {
        let query = channel_core::reads::ConversationQuery::all();
        let got = engine.conversations(&query, page).await.expect("conversations");
        conversations.extend(got.items);
        match got.next {
            Some(next) => page = channel_core::page::PageRequest::after(500, next),
            None => break,
        }
    }
    for c in conversations {
        let first = channel_core::page::PageRequest::first(500);
        let page = engine.messages(c.id, first).await.expect("messages");
        for m in page.items {
            match m.direction {
                Direction::Inbound => {
                    *inbound.entry(m.provider_id.unwrap_or_default()).or_default() += 1
                }
                Direction::Outbound => {
                    *replies.entry(m.reply_to.unwrap_or_default()).or_default() += 1
                }
            }
        }
    }
    assert_eq!(inbound.len(), appended.len(), "every mail stored");
    assert!(inbound.values().all(|&n| n == 1), "no mail stored twice");
    assert_eq!(replies.len(), appended.len(), "every mail answered");
    assert!(replies.values().all(|&n| n == 1), "no mail answered twice: {replies:?}");
    let mut latencies: Vec<Duration> = answered.values().copied().collect();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = *latencies.last().expect("some mail");
    println!(
        "{kills} kills, {} mails, each answered once; mail to answer: median {median:.2?}, worst {worst:.2?} (seed {seed})",
        appended.len()
    );
}

/// Reads the feed: each answer's `MessageSent` gives the time from its mail.
async fn observe(
    engine: &Engine,
    feed: &mut channel_core::feed::FeedConsumer,
    appended: &HashMap<String, Instant>,
    answered: &mut BTreeMap<String, Duration>,
) {
    let events = feed.poll(1000).await.expect("feed");
    for e in &events {
        if let Event::MessageSent { message_id, .. } = e.event {
            let reply = engine.message(message_id).await.expect("message");
            if let Some(to) = reply.reply_to
                && let Some(at) = appended.get(&to)
            {
                answered.entry(to).or_insert_with(|| at.elapsed());
            }
        }
    }
    if let Some(last) = events.last() {
        feed.ack(last.position).await.expect("ack");
    }
}

/// The service, as a child process (with `SERVICE_CRASH_WORKER` set to its directory;
/// without it it returns at once): starts, adds and logs in the account the first time, and
/// answers every mail through `service_example::auto_reply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the crash test's service process, started by it"]
async fn service_process() {
    let Ok(dir) = std::env::var(WORKER_ENV) else { return };
    let dir = std::path::PathBuf::from(dir);
    let runtime = service_example::start(&dir, StateKey::from_bytes(KEY), TelegramProvider::new())
        .await
        .expect("start");
    let accounts = runtime.accounts().await.expect("accounts");
    if accounts.is_empty() {
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("account.json")).expect("config"),
        )
        .expect("json");
        let password = std::fs::read_to_string(dir.join("password")).expect("password");
        // The test mails faster than the default 20 sends a minute per account.
        let rates = SendRates {
            per_account: Rate::per_minute(600).burst(20),
            per_chat: Rate::per_minute(60).burst(3),
        };
        let new = NewAccount::new(channel_email::KIND, "support")
            .with_config(config)
            .with_settings(AccountSettings::default().with_send_rates(rates));
        let account = runtime.add_account(new).await.expect("add").id;
        let input = LoginInput::none().with("password", password);
        runtime.login_step(account, "password", input).await.expect("login");
    }
    std::fs::write(dir.join("ready"), b"").expect("ready");
    service_example::auto_reply(runtime.engine().clone()).await.expect("auto-reply");
}
