//! `inbox run` with a Telegram account on the loopback MTProto server, against a bare grammers
//! client on the same server, in one run (issue 16):
//!
//! 1. **Update → SSE.** The server pushes a person's message (`updates` with its user) to every
//!    connection at once: the worker's channel (grammers, ingest into SQLite, the event feed)
//!    and a bare grammers client. Measured from the push to the worker's `message_received`
//!    on an open `GET /api/v1/events` stream read by reqwest over real HTTP, and to the bare
//!    client's update stream yielding `Update::NewMessage` of that text. Target: the SSE p99
//!    at most 25 ms.
//! 2. **API send → server.** `POST /api/v1/conversations/{id}/messages` (answered 202, then
//!    the dispatcher claims the job, the send policy, `Channel::send`), against a bare
//!    grammers `Client::send_message` to the same person, interleaved (which goes first
//!    alternates). Each is measured from the start of the call to the moment the loopback
//!    server sees the `messages.sendMessage` with that text (a rule of the server that passes
//!    every request on to its world). Target: the API's p50 at most 10 ms.
//!
//! The account's send rates are raised for the bench (`AccountSettings::send_rates`, 1 ms,
//! bursts of 1,000): the defaults (20 a minute, one every 3 s per chat) would hold sends back
//! on purpose.
//!
//! Run: `cargo bench -p channel-benches --bench inbox_telegram` (about a minute once built;
//! `INBOX_BENCH_SAMPLES` sets the samples of each part, 1,000 by default).

#[path = "support/inbox.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use channel_core::{AccountSettings, AccountUpdate, Rate, SendRates};
use channel_telegram::testing::loopback::LoopbackServer;
use grammers_client::Client;
use grammers_client::update::Update;
use grammers_mtsender::{SenderPool, UpdatesConfiguration};
use grammers_session::storages::MemorySession;
use grammers_tl_types::{self as tl, Identifiable};
use reqwest::Method;
use serde_json::json;
use support::{API_HASH, API_ID, Api, CODE, ms, percentile};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const PHONE: &str = "+15550100";
const PERSON: i64 = 3001;

/// Receives until `want` holds for an item; the instant it was stamped with.
async fn until<T>(
    rx: &mut mpsc::UnboundedReceiver<(T, Instant)>,
    what: &str,
    mut want: impl FnMut(&T) -> bool,
) -> Instant {
    let found = async {
        loop {
            let (item, at) = rx.recv().await.expect("the sender is alive");
            if want(&item) {
                return at;
            }
        }
    };
    tokio::time::timeout(WAIT, found).await.unwrap_or_else(|_| panic!("no {what} in {WAIT:?}"))
}

fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>) {
    while rx.try_recv().is_ok() {}
}

/// Reads server-sent events from `response` for ever, each event's name stamped on arrival.
async fn read_events(
    mut response: reqwest::Response,
    tx: mpsc::UnboundedSender<(String, Instant)>,
) {
    let mut text = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let at = Instant::now();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if let Some(name) = block.lines().find_map(|l| l.strip_prefix("event:")) {
                let _ = tx.send((name.trim().to_owned(), at));
            }
        }
    }
}

struct Figures {
    samples: Vec<Duration>,
}

impl Figures {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self { samples }
    }
    fn p(&self, p: f64) -> Duration {
        percentile(&self.samples, p)
    }
    fn row(&self) -> String {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(self.p(0.50)),
            ms(self.p(0.99)),
            ms(*self.samples.last().expect("samples"))
        )
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn main() {
    let samples: usize =
        std::env::var("INBOX_BENCH_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(samples));
}

async fn run(samples: usize) {
    let server = LoopbackServer::start().await.expect("loopback server");
    server.require_login();
    server.add_phone_login(PHONE, CODE, None);
    server.set_api_credentials(API_ID, API_HASH);
    let person = server.add_user(PERSON, "Grace", Some("grace"));
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = support::worker(dir.path()).await;
    let api = Api::of(&worker);

    // The account, added and logged in over HTTP (the server's key handed over first).
    let (dc, address) = server.data_centre();
    let id = api.add_telegram_account("bench", dc, address).await;
    let account = id.parse().expect("an account id");
    server
        .provision_auth_key(&worker.runtime.engine().account_state(account))
        .await
        .expect("auth key");
    api.login(&id, PHONE).await;
    api.wait_connected(std::slice::from_ref(&id), WAIT).await;
    let rates = SendRates {
        per_account: Rate::every(Duration::from_millis(1)).burst(1_000),
        per_chat: Rate::every(Duration::from_millis(1)).burst(1_000),
    };
    let settings = AccountSettings::default().with_send_rates(rates);
    worker
        .runtime
        .update_account(account, AccountUpdate::default().settings(settings))
        .await
        .expect("send rates");

    // The bare grammers client: the server's session, its update stream read as a grammers
    // program reads it.
    let get_state = tl::functions::updates::GetState::CONSTRUCTOR_ID;
    let states = server.requests_of(get_state).len();
    let pool = SenderPool::new(Arc::new(MemorySession::from(server.session_data())), API_ID);
    let raw = Client::new(pool.handle.clone());
    tokio::spawn(pool.runner.run());
    let mut updates = raw
        .stream_updates(pool.updates, UpdatesConfiguration { catch_up: false })
        .await
        .expect("raw update stream");
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        while let Ok(update) = updates.next().await {
            if let Update::NewMessage(m) = update
                && !m.outgoing()
            {
                let _ = raw_tx.send((m.text().to_owned(), Instant::now()));
            }
        }
    });
    raw.invoke(&tl::functions::Ping { ping_id: 1 }).await.expect("raw client connects");
    assert!(server.wait_for_requests(get_state, states + 1, WAIT).await, "raw getState");

    // The event stream, read continuously.
    let response = api
        .http
        .get(format!("{}/events", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("events");
    assert_eq!(response.status().as_u16(), 200);
    let (sse_tx, mut sse_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(read_events(response, sse_tx));

    // Sends the server sees, stamped when it sees them (before its world answers).
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    server.on(Some(tl::functions::messages::SendMessage::CONSTRUCTOR_ID), move |request| {
        let at = Instant::now();
        if let Some(send) = request.decode::<tl::functions::messages::SendMessage>() {
            let _ = seen_tx.send((send.message, at));
        }
        None
    });

    // A first message: the conversation exists, both readers are warm.
    server.incoming(PERSON, "warm-up");
    until(&mut raw_rx, "warm-up update", |t| t == "warm-up").await;
    until(&mut sse_rx, "first message_received", |e| e == "message_received").await;
    let page = api.get(&format!("/conversations?account={id}")).await;
    let conversation = page["items"][0]["id"].as_str().expect("a conversation").to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 1. Update → SSE, and → the bare client's update stream, from the same pushes.
    let (mut to_sse, mut to_raw) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..samples {
        drain(&mut raw_rx);
        drain(&mut sse_rx);
        let text = format!("update {i}");
        let t0 = Instant::now();
        server.incoming(PERSON, &text);
        let raw_at = until(&mut raw_rx, "raw update", |t| *t == text).await;
        let sse_at = until(&mut sse_rx, "message_received", |e| e == "message_received").await;
        to_raw.push(raw_at - t0);
        to_sse.push(sse_at - t0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!("update -> SSE: {samples} pushes in {:.1?}", started.elapsed());
    let (sse, bare) = (Figures::new(to_sse), Figures::new(to_raw));

    // 2. API send → server, against a bare grammers send_message, interleaved.
    let peer = tl::types::InputPeerUser { user_id: person.id, access_hash: person.access_hash };
    let path = format!("/conversations/{conversation}/messages");
    let (mut api_sends, mut raw_sends, mut accepted) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..samples {
        for api_turn in [i % 2 == 0, i % 2 != 0] {
            drain(&mut seen_rx);
            if api_turn {
                let text = format!("api {i}");
                let body = json!({ "text": text, "idempotency_key": format!("bench-{i}") });
                let t0 = Instant::now();
                let (status, answer) = api.call(Method::POST, &path, Some(body)).await;
                accepted.push(t0.elapsed());
                assert_eq!(status, 202, "{answer}");
                let at = until(&mut seen_rx, "the API's send", |t| *t == text).await;
                api_sends.push(at - t0);
            } else {
                let text = format!("raw {i}");
                let t0 = Instant::now();
                raw.send_message(peer.clone(), text.as_str()).await.expect("raw send");
                let at = until(&mut seen_rx, "the raw send", |t| *t == text).await;
                raw_sends.push(at - t0);
            }
            // What follows a send (the answer, the echo, `Sent` committed) settles.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    println!("API send -> server: {samples} of each in {:.1?}", started.elapsed());
    let (api_send, raw_send, accepted) =
        (Figures::new(api_sends), Figures::new(raw_sends), Figures::new(accepted));

    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("\n{date}, {samples} samples each\n");
    println!("| path | measured | target |");
    println!("| --- | --- | --- |");
    println!(
        "| loopback update -> `message_received` on `/api/v1/events` (inbox) | {} | p99 <= 25 ms: **{}** |",
        sse.row(),
        verdict(sse.p(0.99) <= Duration::from_millis(25))
    );
    println!("| same push -> bare grammers update stream yields it | {} | |", bare.row());
    println!(
        "| inbox's own part (SSE p50 / p99 minus bare) | {:.3} / {:.3} ms | |",
        ms(sse.p(0.50)) - ms(bare.p(0.50)),
        ms(sse.p(0.99)) - ms(bare.p(0.99))
    );
    println!(
        "| `POST /api/v1/conversations/{{id}}/messages` -> server sees `messages.sendMessage` | {} | p50 <= 10 ms: **{}** |",
        api_send.row(),
        verdict(api_send.p(0.50) <= Duration::from_millis(10))
    );
    println!("| bare grammers `send_message` -> server sees it | {} | |", raw_send.row());
    println!("| the POST's own answer (202) | {} | |", accepted.row());

    drop(raw);
    worker.shutdown().await;
}
