//! `kill -9` proof: a worker process (this test binary started again as a child running
//! [`worker_process`]: one account through channel-core's runtime on SQLite, answering each
//! incoming message once) is killed at the
//! worst moments while the loopback server — in this test's process, a process of its own
//! for the worker — keeps its state. Each time, every reply ends `Sent` exactly once as the
//! server sees it, with Telegram's id, and the store holds no stray row.
#![cfg(feature = "testing")]

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use channel_core::{Direction, MessageStatus, Origin, Store};
use channel_store::SqlStore;
use channel_telegram::testing::loopback::{LoopbackServer, Reply, TestPeer, TestUser};
use grammers_tl_types::{self as tl, Identifiable};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const SEND: u32 = tl::functions::messages::SendMessage::CONSTRUCTOR_ID;
const GET_STATE: u32 = tl::functions::updates::GetState::CONSTRUCTOR_ID;
const SETTLE: Duration = Duration::from_secs(60);

/// One worker process and the lines it prints.
struct Worker {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Worker {
    fn start(dir: &Path, reply: bool) -> Self {
        let exe = std::env::current_exe().expect("the test binary has a path");
        let mut child = Command::new(exe)
            .args(["--ignored", "--exact", "worker_process", "--nocapture", "--test-threads=1"])
            .env("CRASH_WORKER_DB", dir.join("worker.db"))
            .env("CRASH_WORKER_SESSION", dir.join("session.json"))
            .env("CRASH_WORKER_REPLY", if reply { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the worker starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Waits for a printed line.
    async fn wait_for_line(&mut self, line: &str) {
        let wait = async {
            while let Some(l) = self.lines.recv().await {
                if l == line {
                    return;
                }
            }
            panic!("the worker ended before printing {line:?}");
        };
        tokio::time::timeout(SETTLE, wait).await.expect("the worker printed it in time");
    }

    /// `kill -9`.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        let _ = self.child.wait().await;
    }
}

/// Starts the first worker of a test and waits until it listens for updates (a message
/// sent before the account's first connection is before its update state, as at Telegram).
async fn first_worker(server: &LoopbackServer, dir: &Path, reply: bool) -> Worker {
    let worker = Worker::start(dir, reply);
    assert!(server.wait_for_requests(GET_STATE, 1, SETTLE).await, "the worker connected");
    worker
}

/// A test directory with the session the worker starts from.
fn setup(server: &LoopbackServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("session.json"), server.stored_session().to_bytes()).unwrap();
    dir
}

/// What the server and the store say about the replies.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    incoming: usize,
    /// Incoming messages that the server holds no reply to.
    lost: usize,
    /// Incoming messages that the server holds more than one reply to.
    duplicated: usize,
    /// Replies stored `Failed`.
    failed: usize,
    /// Replies not (yet) `Sent` with the id the server gave them.
    not_sent: usize,
    /// Outbound rows that are not the one reply of an incoming message (a reply's echo
    /// stored as another app's message, a second reply).
    stray: usize,
}

async fn report(server: &LoopbackServer, store: &dyn Store) -> Report {
    let world = server.messages();
    let incoming: Vec<_> = world.iter().filter(|m| !m.out).collect();
    let mut replies: HashMap<i32, Vec<i32>> = HashMap::new();
    for m in world.iter().filter(|m| m.out) {
        if let Some(to) = m.reply_to {
            replies.entry(to).or_default().push(m.id);
        }
    }
    let mut r = Report { incoming: incoming.len(), ..Report::default() };
    let mut stored = Vec::new();
    for account in store.accounts().await.unwrap() {
        for c in store.conversations(account.id, None, 10_000).await.unwrap() {
            stored.extend(store.messages(c.id, 10_000).await.unwrap());
        }
    }
    for m in &incoming {
        let sent = replies.get(&m.id).map_or(0, Vec::len);
        r.lost += usize::from(sent == 0);
        r.duplicated += usize::from(sent > 1);
        let pid = m.id.to_string();
        let rows: Vec<_> = stored
            .iter()
            .filter(|s| s.direction == Direction::Outbound && s.reply_to.as_deref() == Some(&pid))
            .collect();
        let server_id = replies.get(&m.id).and_then(|ids| ids.first()).map(i32::to_string);
        match rows.as_slice() {
            [one] => {
                r.failed += usize::from(one.status == MessageStatus::Failed);
                r.not_sent +=
                    usize::from(one.status != MessageStatus::Sent || one.provider_id != server_id);
            }
            [] => r.not_sent += 1,
            [..] => r.stray += rows.len() - 1,
        }
    }
    r.stray += stored
        .iter()
        .filter(|s| s.direction == Direction::Outbound)
        .filter(|s| s.origin == Origin::OtherApp || s.reply_to.is_none())
        .count();
    r
}

/// Waits until every incoming message has its one reply, sent and recorded, and returns the
/// report (the last one seen, if that never happens).
async fn settled(server: &LoopbackServer, dir: &Path) -> Report {
    let store = SqlStore::open_sqlite(dir.join("worker.db").to_str().unwrap()).await.unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let r = report(server, &store).await;
        let done = r.lost == 0 && r.not_sent == 0 && r.failed == 0;
        if done || tokio::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn clean(incoming: usize) -> Report {
    Report { incoming, ..Report::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_an_incoming_message_is_stored_and_before_its_reply_the_reply_goes_once() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let dir = setup(&server);
    let mut worker = first_worker(&server, dir.path(), false).await;
    let m = server.incoming(alice.id, "hello");
    worker.wait_for_line(&format!("stored {}", m.id)).await;
    worker.kill().await;

    // Alice is known only from that message, and she does not write again.
    let worker = Worker::start(dir.path(), true);
    assert_eq!(settled(&server, dir.path()).await, clean(1));
    worker.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_telegram_holds_the_reply_unanswered_the_reply_goes_once() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let dir = setup(&server);
    server.reply_once(SEND, Reply::NoReply);
    let worker = first_worker(&server, dir.path(), true).await;
    server.incoming(alice.id, "hello");
    assert!(server.wait_for_requests(SEND, 1, SETTLE).await);
    worker.kill().await;
    assert_eq!(server.messages().iter().filter(|m| m.out).count(), 0, "not sent yet");

    let worker = Worker::start(dir.path(), true);
    assert_eq!(settled(&server, dir.path()).await, clean(1));
    worker.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_telegram_accepted_the_reply_and_before_the_commit_the_reply_is_sent_once() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let dir = setup(&server);
    server.reply_once(SEND, Reply::ProcessThenHold);
    let worker = first_worker(&server, dir.path(), true).await;
    server.incoming(alice.id, "hello");
    assert!(server.wait_for_requests(SEND, 1, SETTLE).await);
    assert_eq!(server.messages().iter().filter(|m| m.out).count(), 1, "Telegram has it");
    worker.kill().await;

    // The restarted worker gets the reply through catch-up before its job runs again.
    let worker = Worker::start(dir.path(), true);
    assert_eq!(settled(&server, dir.path()).await, clean(1));
    worker.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_of_thirty_kills_loses_duplicates_and_fails_no_reply() {
    const KILLS: usize = 30;
    let server = Arc::new(LoopbackServer::start().await.unwrap());
    let people: Vec<TestUser> =
        (0..4).map(|i| server.add_user(3001 + i, &format!("Person {i}"), None)).collect();
    let dir = setup(&server);
    // The account's first connection, which stores its update state with a first message.
    let mut worker = first_worker(&server, dir.path(), true).await;
    let first = server.incoming(people[0].id, "first");
    worker.wait_for_line(&format!("stored {}", first.id)).await;
    worker.kill().await;
    // People write all along, 4 messages a second in all.
    let traffic = tokio::spawn({
        let server = Arc::clone(&server);
        async move {
            for n in 0.. {
                let who = &people[n % people.len()];
                server.incoming(who.id, &format!("message {n}"));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let started = tokio::time::Instant::now();
    for _ in 0..KILLS {
        let worker = Worker::start(dir.path(), true);
        let life = Duration::from_millis(rand::random_range(300..2500));
        tokio::time::sleep(life).await;
        worker.kill().await;
    }
    traffic.abort();
    let crash_time = started.elapsed();
    let worker = Worker::start(dir.path(), true);
    let r = settled(&server, dir.path()).await;
    worker.kill().await;
    let sends = server.requests_of(SEND).len();
    let out = server.messages().iter().filter(|m| m.out).count();
    let chats = server
        .messages()
        .iter()
        .filter(|m| !m.out)
        .map(|m| m.peer)
        .collect::<std::collections::HashSet<TestPeer>>()
        .len();
    println!(
        "crash run: {KILLS} kills in {crash_time:.1?}, {} incoming messages from {chats} people, \
         {out} replies at the server ({sends} sendMessage requests), {} lost, {} duplicated, \
         {} failed, {} not sent, {} stray rows",
        r.incoming, r.lost, r.duplicated, r.failed, r.not_sent, r.stray
    );
    assert!(r.incoming >= 30, "{r:?}");
    assert_eq!(r, clean(r.incoming));
}

/// The worker process, run when a test above starts this test binary again as a child (with
/// `CRASH_WORKER_DB` and `CRASH_WORKER_SESSION` set; without them it returns at once): one
/// Telegram account through channel-core's runtime on SQLite, answering every incoming
/// message once ("re: <text>", as a reply to it), until it is killed.
///
/// The auto-reply is idempotent across crashes: it does not react to events, it looks at what
/// is stored (every 100 ms) and queues a reply for each incoming message that has none. The
/// reply and its job are committed together, so a crash never queues one twice. It prints
/// `stored <provider id>` when it first sees an incoming message stored, and
/// `queued <provider id>` when it queued its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the crash tests' worker process, started by them"]
async fn worker_process() {
    let (Ok(db), Ok(session)) =
        (std::env::var("CRASH_WORKER_DB"), std::env::var("CRASH_WORKER_SESSION"))
    else {
        return;
    };
    // The test harness has printed `test worker_process ... ` without a line end: end it, so
    // that the worker's own lines stand alone.
    println!();
    run_worker(db, session).await.expect("the worker runs until it is killed");
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn run_worker(db: String, session: String) -> Result<(), Error> {
    use channel_core::runtime::{Runtime, StaticChannels};
    use channel_core::send_policy::{RateLimitPolicy, StorePolicyMemory};
    use channel_core::state::StateKey;
    use channel_core::{Engine, NewAccount, OutboundMessage, Rate, Timestamp};
    use channel_telegram::session::SESSION_KEY;
    use channel_telegram::{TelegramChannel, TelegramConfig};
    use std::collections::HashSet;

    let reply = std::env::var("CRASH_WORKER_REPLY").map_or(true, |v| v != "0");
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(&db).await?);
    // Looser than the default limits, so that the replies keep up with the test's traffic;
    // kept in the store like the default's.
    let policy = RateLimitPolicy::new(
        Rate::per_minute(600).burst(20),
        Rate::every(Duration::from_millis(500)).burst(5),
    )
    .remembered_in(Arc::new(StorePolicyMemory::new(Arc::clone(&store))));
    let engine = Engine::builder(Arc::clone(&store), StateKey::from_bytes([7; 32]))
        .send_policy(Arc::new(policy))
        .provider(Arc::new(channel_telegram::TelegramProvider::new()))
        .blob_dir(std::path::Path::new(&db).with_extension("blobs"))
        .worker_id("crash-worker".to_owned())
        .send_timeout(Duration::from_secs(2))
        .history_timeout(Duration::from_secs(2))
        .job_lease_ttl(Duration::from_secs(4))
        .rescue_interval(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(200))
        .build()?;
    let account = match store.accounts().await?.into_iter().next() {
        Some(a) => a,
        None => {
            let a = store
                .create_account(
                    NewAccount::new(channel_telegram::KIND, "crash test"),
                    Timestamp::now(),
                )
                .await?;
            let bytes = std::fs::read(&session)?;
            engine.account_state(a.id).put(SESSION_KEY, &bytes).await?;
            a
        }
    };
    let config = TelegramConfig::new(4242)
        .send_timeout(Duration::from_millis(1500))
        .connect_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    let channels = StaticChannels::new().with(account.id, Arc::new(TelegramChannel::new(config)));
    // Killed, never stopped: the runtime is kept alive until then.
    let _runtime = Runtime::builder(engine.clone(), Arc::new(channels)).start().await?;

    let mut seen = HashSet::new();
    loop {
        for c in store.conversations(account.id, None, 1000).await? {
            let messages = store.messages(c.id, 1000).await?;
            for m in &messages {
                let Some(pid) = m.provider_id.as_deref() else { continue };
                if m.direction != Direction::Inbound {
                    continue;
                }
                if seen.insert(pid.to_owned()) {
                    println!("stored {pid}");
                }
                let answered = messages.iter().any(|r| {
                    r.direction == Direction::Outbound && r.reply_to.as_deref() == Some(pid)
                });
                if reply && !answered {
                    let text = format!("re: {}", m.text.as_deref().unwrap_or_default());
                    engine
                        .send(
                            Some(account.id),
                            OutboundMessage {
                                conversation_id: c.id,
                                text: Some(text),
                                html: None,
                                subject: None,
                                idempotency_key: None,
                                reply_to: Some(pid.to_owned()),
                                attachments: Vec::new(),
                                label: "auto_reply".to_owned(),
                            },
                        )
                        .await?;
                    println!("queued {pid}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
