//! channel-email against a real Dovecot and OpenSMTPD on loopback
//! (`channel_email::testing`, the same stack the integration tests use; needs root and
//! `dovecot-imapd dovecot-lmtpd opensmtpd`, which `scripts/test` installs).
//!
//! * `email_ingest_10k`: 10,000 messages of one mailbox, fetched by a bare async-imap
//!   `UID FETCH` loop, and ingested through `EmailChannel` -> `Engine::inbound` ->
//!   `SqlStore` (SQLite in a temporary file), one transaction per fetched batch.
//! * `email_push_latency`: SMTP submission (lettre -> OpenSMTPD -> LMTP -> Dovecot) to the
//!   engine's `MessageReceived` event, with the receiving channel in IDLE; p50/p99 printed.
//! * 1,000 idle accounts in this process, each in IDLE on its own connection: memory per
//!   account from `VmRSS` before and after (printed; not a timing).
//!
//! Run: `cargo bench -p channel-benches --bench email` (about 4 minutes; `EMAIL_BENCH=idle`
//! runs one part: `ingest`, `latency`, `idle`). Figures in `benches/README.md`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use channel_core::state::StateKey;
use channel_core::store::IngestOutcome;
use channel_core::{
    BlobStore, Channel, ChannelError, ConnectionState, Engine, Event, IdentityInfo, Inbound,
    InboundMessage, MessageId, NewAccount, PreparedSend, Store,
};
use channel_email::testing::{PrivateDovecot, User, account_config, fill_maildir, stack};
use channel_email::{EmailChannel, EmailConfig};
use channel_store::SqlStore;
use criterion::{Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const INGEST_MESSAGES: usize = 10_000;
const BATCH: usize = 500;
const LATENCY_SAMPLES: usize = 100;
const IDLE_ACCOUNTS: usize = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A realistic small message (about 1.3 KB): threads of ten messages from 200 senders.
fn message(i: usize, to: &str) -> Vec<u8> {
    let root = i - i % 10;
    let sender = root / 10 % 200;
    let refs = if i == root {
        String::new()
    } else {
        format!(
            "References: <m{root}@bench.example.org>\r\nIn-Reply-To: <m{root}@bench.example.org>\r\n"
        )
    };
    let body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor \
incididunt ut labore et dolore magna aliqua.\r\n"
        .repeat(8);
    format!(
        "From: \"Sender {sender}\" <sender{sender}@example.net>\r\nTo: {to}\r\nSubject: {}thread {root}\r\n\
Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <m{i}@bench.example.org>\r\n{refs}\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nmessage {i}\r\n{body}",
        if i == root { "" } else { "Re: " }
    )
    .into_bytes()
}

/// The bare loop: log in, EXAMINE, `UID FETCH` every message in batches of 500, nothing else.
async fn bare_fetch(port: u16, user: &User, expect: usize) -> Duration {
    let start = Instant::now();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut client = async_imap::Client::new(tcp);
    let _ = client.read_response().await.expect("greeting");
    let mut session =
        client.login(&user.address, &user.password).await.map_err(|(e, _)| e).expect("login");
    let mailbox = session.examine("INBOX").await.expect("examine");
    let last = mailbox.uid_next.expect("uidnext") - 1;
    let mut count = 0usize;
    let mut bytes = 0usize;
    let mut lo = 1u32;
    while lo <= last {
        let hi = (lo + BATCH as u32 - 1).min(last);
        let mut stream = session
            .uid_fetch(format!("{lo}:{hi}"), "(UID INTERNALDATE BODY.PEEK[])")
            .await
            .expect("fetch");
        while let Some(f) = stream.next().await {
            let f = f.expect("fetch item");
            bytes += f.body().map_or(0, <[u8]>::len);
            count += 1;
        }
        drop(stream);
        lo = hi + 1;
    }
    let elapsed = start.elapsed();
    assert_eq!(count, expect, "bare loop fetched {count} messages ({bytes} bytes)");
    let _ = session.logout().await;
    elapsed
}

/// Forwards to the engine's sink and counts what was stored.
struct Counting {
    inner: Arc<dyn Inbound>,
    delivered: AtomicUsize,
    target: usize,
    done: tokio::sync::Notify,
}

#[async_trait]
impl Inbound for Counting {
    async fn deliver(&self, message: InboundMessage) -> Result<IngestOutcome, ChannelError> {
        let r = self.inner.deliver(message).await?;
        self.count(1);
        Ok(r)
    }
    async fn deliver_batch(
        &self,
        messages: Vec<InboundMessage>,
    ) -> Result<Vec<IngestOutcome>, ChannelError> {
        let n = messages.len();
        let r = self.inner.deliver_batch(messages).await?;
        self.count(n);
        Ok(r)
    }
    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        self.inner.state_get(key).await
    }
    async fn state_put(&self, key: &str, value: &[u8]) -> Result<(), ChannelError> {
        self.inner.state_put(key, value).await
    }
    async fn state_delete(&self, key: &str) -> Result<(), ChannelError> {
        self.inner.state_delete(key).await
    }
    async fn report_state(&self, state: ConnectionState) {
        self.inner.report_state(state).await
    }
    fn alive(&self) {
        self.inner.alive()
    }
}

impl Counting {
    fn count(&self, n: usize) {
        if self.delivered.fetch_add(n, Ordering::SeqCst) + n >= self.target {
            self.done.notify_one();
        }
    }
}

/// Stores nothing: what the channel costs without a store behind it.
struct NullSink;

#[async_trait]
impl Inbound for NullSink {
    async fn deliver(&self, _message: InboundMessage) -> Result<IngestOutcome, ChannelError> {
        Ok(IngestOutcome {
            message_id: MessageId::new(),
            conversation_id: channel_core::ConversationId::new(),
            identity_id: channel_core::IdentityId::new(),
            disposition: channel_core::store::IngestDisposition::Stored,
            conversation_opened: false,
            conversation_reactivated: false,
        })
    }
    async fn state_get(&self, _key: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        Ok(None)
    }
    async fn state_put(&self, _key: &str, _value: &[u8]) -> Result<(), ChannelError> {
        Ok(())
    }
    async fn state_delete(&self, _key: &str) -> Result<(), ChannelError> {
        Ok(())
    }
    async fn report_state(&self, _state: ConnectionState) {}
    fn alive(&self) {}
}

/// An engine on a fresh SQLite file, and an email account in it.
async fn engine_on_sqlite(
    dir: &tempfile::TempDir,
    address: &str,
) -> (Engine, channel_core::AccountId) {
    let path = dir.path().join(format!("bench-{}.db", rand::random::<u64>()));
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::open_sqlite(path.to_str().expect("utf-8 path")).await.expect("sqlite store"),
    );
    let engine = Engine::builder(store.clone(), StateKey::generate())
        .blob_store(BlobStore::in_memory())
        .build()
        .expect("engine");
    let account = store
        .create_account(NewAccount::new(channel_email::KIND, address), engine.now())
        .await
        .expect("account");
    (engine, account.id)
}

/// The channel reads the whole mailbox into a fresh SQLite store; the time until the last
/// batch is committed.
async fn channel_ingest(
    config: &EmailConfig,
    address: &str,
    expect: usize,
    store: bool,
) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner: Arc<dyn Inbound> = if store {
        let (engine, account) = engine_on_sqlite(&dir, address).await;
        Arc::new(engine.account_sink(account))
    } else {
        Arc::new(NullSink)
    };
    let sink = Arc::new(Counting {
        inner,
        delivered: AtomicUsize::new(0),
        target: expect,
        done: tokio::sync::Notify::new(),
    });
    let channel = Arc::new(EmailChannel::new(config.clone()).expect("channel"));
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let task = {
        let (c, s, k) = (channel.clone(), sink.clone() as Arc<dyn Inbound>, cancel.clone());
        tokio::spawn(async move { c.run(s, k).await })
    };
    tokio::time::timeout(Duration::from_secs(120), sink.done.notified())
        .await
        .expect("all messages ingested");
    let elapsed = start.elapsed();
    cancel.cancel();
    task.await.expect("no panic").expect("channel ends cleanly");
    assert_eq!(sink.delivered.load(Ordering::SeqCst), expect);
    elapsed
}

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let st = stack();
    let user = st.user("bench-ingest");
    fill_maildir(&st.maildir(&user), (0..INGEST_MESSAGES).map(|i| message(i, &user.address)));
    // Dovecot indexes the new files on the first open: not part of either measurement.
    rt.block_on(bare_fetch(st.imap_port, &user, INGEST_MESSAGES));
    let config = st.config(&user).watch_sent(false).batch_size(BATCH);

    let bare: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let channel: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut group = c.benchmark_group("email_ingest_10k");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(INGEST_MESSAGES as u64));
    group.bench_function("bare_async_imap_uid_fetch", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (user, bare) = (user.clone(), bare.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = bare_fetch(st.imap_port, &user, INGEST_MESSAGES).await;
                    bare.lock().unwrap().push(t);
                    total += t;
                }
                total
            }
        })
    });
    group.bench_function("channel_engine_sqlite", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (config, address, channel) =
                (config.clone(), user.address.clone(), channel.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = channel_ingest(&config, &address, INGEST_MESSAGES, true).await;
                    channel.lock().unwrap().push(t);
                    total += t;
                }
                total
            }
        })
    });
    let null: Arc<Mutex<Vec<Duration>>> = Arc::default();
    group.bench_function("channel_no_store", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (config, address, null) = (config.clone(), user.address.clone(), null.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = channel_ingest(&config, &address, INGEST_MESSAGES, false).await;
                    null.lock().unwrap().push(t);
                    total += t;
                }
                total
            }
        })
    });
    group.finish();
    let rate = |v: &[Duration]| {
        let mean = v.iter().sum::<Duration>().as_secs_f64() / v.len().max(1) as f64;
        INGEST_MESSAGES as f64 / mean
    };
    let (b, ch, n) =
        (rate(&bare.lock().unwrap()), rate(&channel.lock().unwrap()), rate(&null.lock().unwrap()));
    println!(
        "email_ingest_10k: bare UID FETCH {b:.0} msg/s, channel -> engine -> SQLite {ch:.0} msg/s, \
ratio {:.1} % (target >= 70 %); channel without a store {n:.0} msg/s ({:.1} % of bare)",
        100.0 * ch / b,
        100.0 * n / b
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// A bare async-imap client in IDLE on the same mailbox: when Dovecot tells any client about
/// new mail (it waits 500 ms after the file appears before it does, see the README).
fn spawn_bare_idle(
    rt: &tokio::runtime::Runtime,
    port: u16,
    user: &User,
    seen: Arc<Mutex<Vec<Instant>>>,
) {
    let user = user.clone();
    rt.spawn(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let mut client = async_imap::Client::new(tcp);
        let _ = client.read_response().await.expect("greeting");
        let mut session =
            client.login(&user.address, &user.password).await.map_err(|(e, _)| e).expect("login");
        session.select("INBOX").await.expect("select");
        loop {
            let mut idle = session.idle();
            idle.init().await.expect("idle");
            let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(600));
            if let Ok(async_imap::extensions::idle::IdleResponse::NewData(_)) = wait.await {
                seen.lock().unwrap().push(Instant::now());
            }
            session = idle.done().await.expect("done");
        }
    });
}

fn push_latency(c: &mut Criterion) {
    let rt = runtime();
    // Channels hold lettre's SMTP pool, which needs a runtime to be created and dropped.
    let _guard = rt.enter();
    let st = stack();
    let (alice, bob) = (st.user("bench-alice"), st.user("bench-bob"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, bob_account) = rt.block_on(engine_on_sqlite(&dir, &bob.address));
    let mut events = engine.subscribe();
    let receiver = Arc::new(EmailChannel::new(st.config(&bob)).expect("channel"));
    let cancel = CancellationToken::new();
    let task = {
        let (r, s, k) = (
            receiver.clone(),
            Arc::new(engine.account_sink(bob_account)) as Arc<dyn Inbound>,
            cancel.clone(),
        );
        rt.spawn(async move { r.run(s, k).await })
    };
    let sender = Arc::new(EmailChannel::new(st.config(&alice).watch_sent(false)).expect("channel"));
    let latencies: Arc<Mutex<Vec<(Duration, Duration)>>> = Arc::default();
    let bare_seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    spawn_bare_idle(&rt, st.imap_port, &bob, bare_seen.clone());
    // Connected, caught up and in IDLE before the first sample.
    rt.block_on(async {
        loop {
            match events.recv().await {
                Ok(Event::AccountStateChanged { state: ConnectionState::Connected, .. }) => break,
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let events = Arc::new(tokio::sync::Mutex::new(events));
    let mut group = c.benchmark_group("email_push_latency");
    group
        .sample_size(LATENCY_SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    group.bench_function("smtp_submit_to_message_received_idle", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (sender, bob, events, latencies, bare_seen) =
                (sender.clone(), bob.clone(), events.clone(), latencies.clone(), bare_seen.clone());
            async move {
                let mut events = events.lock().await;
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let key = format!("<lat-{}@bench.example.org>", rand::random::<u64>());
                    let out = PreparedSend {
                        message_id: MessageId::new(),
                        client_key: key.clone(),
                        thread_key: key.clone(),
                        remote: IdentityInfo::new(&bob.address),
                        text: Some("latency probe".to_owned()),
                        html: None,
                        subject: None,
                        reply_to: None,
                        references: Vec::new(),
                        attachments: Vec::new(),
                    };
                    bare_seen.lock().unwrap().clear();
                    let start = Instant::now();
                    sender.send(&out).await.expect("submitted");
                    loop {
                        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                            Ok(Ok(Event::MessageReceived { account_id, .. }))
                                if account_id == bob_account =>
                            {
                                break;
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => panic!("events: {e}"),
                            Err(_) => panic!("no MessageReceived within 30 s"),
                        }
                    }
                    let t = start.elapsed();
                    // The bare client's wake-up for the same message (it may come just after).
                    let mut bare = None;
                    for _ in 0..200 {
                        if let Some(at) = bare_seen.lock().unwrap().first() {
                            bare = Some(at.duration_since(start));
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    latencies
                        .lock()
                        .unwrap()
                        .push((t, bare.expect("the bare IDLE client saw the message")));
                    total += t;
                }
                total
            }
        })
    });
    group.finish();
    cancel.cancel();
    rt.block_on(task).expect("no panic").expect("channel ends cleanly");
    let all = latencies.lock().unwrap();
    let last = &all[all.len().saturating_sub(LATENCY_SAMPLES)..];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(percentile(&v, 0.50)),
            ms(percentile(&v, 0.99)),
            ms(v.last().copied().unwrap_or_default())
        )
    };
    println!(
        "email_push_latency ({} samples): SMTP submission -> MessageReceived (channel -> engine -> SQLite): {} \
(targets: p50 <= 100 ms, p99 <= 500 ms)",
        last.len(),
        stats(last.iter().map(|l| l.0).collect())
    );
    println!(
        "email_push_latency: SMTP submission -> a bare async-imap IDLE client woken: {}",
        stats(last.iter().map(|l| l.1).collect())
    );
    println!(
        "email_push_latency: the channel's own part (its event minus the bare client's wake-up): {}",
        stats(last.iter().map(|l| l.0.saturating_sub(l.1)).collect())
    );
}

fn vm_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Keeps account state in memory and counts connected accounts.
struct IdleSink {
    state: Mutex<std::collections::HashMap<String, Vec<u8>>>,
    connected: Arc<AtomicUsize>,
}

#[async_trait]
impl Inbound for IdleSink {
    async fn deliver(&self, message: InboundMessage) -> Result<IngestOutcome, ChannelError> {
        Err(ChannelError::permanent(format!("no mail expected, got {}", message.provider_id)))
    }
    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        Ok(self.state.lock().unwrap().get(key).cloned())
    }
    async fn state_put(&self, key: &str, value: &[u8]) -> Result<(), ChannelError> {
        self.state.lock().unwrap().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn state_delete(&self, key: &str) -> Result<(), ChannelError> {
        self.state.lock().unwrap().remove(key);
        Ok(())
    }
    async fn report_state(&self, state: ConnectionState) {
        if state == ConnectionState::Connected {
            self.connected.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn alive(&self) {}
}

/// Dovecot serving 1,000 IDLE connections from few processes (one imap process per client
/// would be 1,000 processes and 1,000 inotify instances, above the default limit of 128).
const MANY_CLIENTS_CONF: &str = "
mail_max_userip_connections = 2000
default_process_limit = 2000
default_client_limit = 20000
service imap {
  service_count = 0
  client_limit = 1100
  process_limit = 4
  vsz_limit = 2G
}
service auth {
  client_limit = 4000
}
service anvil {
  client_limit = 4000
}
";

fn idle_accounts() {
    let rt = runtime();
    let _guard = rt.enter();
    let dovecot = PrivateDovecot::start(MANY_CLIENTS_CONF);
    let smtp_port = stack().smtp_port;
    let users = dovecot.users("bench-idle", IDLE_ACCOUNTS);
    let connected = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let before = vm_rss_kb();
    let start = Instant::now();
    let tasks: Vec<_> = rt.block_on(async {
        let mut tasks = Vec::with_capacity(users.len());
        for user in &users {
            let channel = EmailChannel::new(
                account_config(user, dovecot.imap_port, smtp_port).watch_sent(false),
            )
            .expect("channel");
            let sink: Arc<dyn Inbound> =
                Arc::new(IdleSink { state: Mutex::default(), connected: connected.clone() });
            let k = cancel.clone();
            tasks.push(tokio::spawn(async move { channel.run(sink, k).await }));
            // Logins a little apart, as a worker starting its accounts would.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while connected.load(Ordering::SeqCst) < IDLE_ACCOUNTS {
            assert!(
                Instant::now() < deadline,
                "only {} of {IDLE_ACCOUNTS} accounts connected",
                connected.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all_connected = start.elapsed();
        // Every loop goes from Connected through its catch-up into IDLE.
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "idle_accounts: {IDLE_ACCOUNTS} accounts connected in {:.1} s",
            all_connected.as_secs_f64()
        );
        tasks
    });
    let after = vm_rss_kb();
    let reconnects = connected.load(Ordering::SeqCst) - IDLE_ACCOUNTS;
    println!(
        "idle_accounts: VmRSS {before} KB -> {after} KB: {:.1} KB per idle account (target <= 200 KB); \
{reconnects} reconnects",
        (after.saturating_sub(before)) as f64 / IDLE_ACCOUNTS as f64
    );
    cancel.cancel();
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    // `EMAIL_BENCH=ingest,latency,idle` (the default) picks the parts to run.
    let parts = std::env::var("EMAIL_BENCH").unwrap_or_else(|_| "ingest,latency,idle".to_owned());
    let run = |part: &str| parts.split(',').any(|p| p.trim() == part);
    if run("ingest") {
        ingest(&mut c);
    }
    if run("latency") {
        push_latency(&mut c);
    }
    if run("idle") {
        idle_accounts();
    }
    c.final_summary();
}
