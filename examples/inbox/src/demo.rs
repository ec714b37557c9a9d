//! `inbox demo`: the worker of `inbox run`, with a Telegram account on the loopback MTProto
//! server (channel-telegram's, in this process) and simulated people who write in and read
//! the answers, so that a newcomer sees the real path (grammers, the store, the queue, the
//! durable feed, the HTTP API) with nothing to configure. It prints the API's address and
//! token, and runs until Ctrl-C, or for `--for`; then a summary read back from the store.
//!
//! For the web console (and its browser tests), the demo also has a second Telegram account,
//! on a loopback server of its own, that waits to be logged in: with a QR code, or with its
//! phone number, code and two-step password (both ask for the password, as Telegram does for
//! an account that has one). And it reads commands from its standard input, one a line:
//!
//! - `scan`: the owner of the second account scans the QR code the console shows (as the
//!   Telegram app on their phone would);
//! - `fail`: the next two sends to Frank fail: the first with a server error (retried), the
//!   second with a permanent refusal (the send goes to the dead letter; a retry from there
//!   sends it);
//! - `stall`: the demo's auto-reply loop hangs once; the watchdog finds it silent and
//!   restarts it;
//! - `check TEXT`: says whether the loopback server holds a message TEXT sent by the account,
//!   and to whom (the text is what you typed: nothing of the store is printed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use channel_core::feed::ConsumerStart;
use channel_core::page::PageRequest;
use channel_core::provider::LoginInput;
use channel_core::reads::ConversationQuery;
use channel_core::{Direction, Engine, Event, MessageStatus, NewAccount, OutboundMessage};
use channel_telegram::testing::loopback::{LoopbackServer, Reply};
use channel_watchdog::{LoopContext, LoopSpec};
use inbox::worker::{WorkerOptions, start};

use crate::error::{Error, ResultExt};

const API_ID: i32 = 4242;
const API_HASH: &str = "inbox-demo-app-hash";
const PHONE: &str = "+15550100";
const CODE: &str = "12345";
/// The second account's phone number and two-step password (its code is [`CODE`]).
const SALES_PHONE: &str = "+15550199";
const SALES_PASSWORD: &str = "demo password";
const PEOPLE: [(i64, &str); 4] = [(2001, "Carol"), (2002, "Dan"), (2003, "Erin"), (FRANK, "Frank")];
/// The person whose sends fail after the `fail` command.
const FRANK: i64 = 2004;
/// How long the auto-reply loop may be silent before the watchdog restarts it.
const AUTO_REPLY_SILENCE: Duration = Duration::from_secs(3);
const LINES: [&str; 4] = [
    "Hello, is anyone there?",
    "My order has not arrived yet.",
    "Thanks, that helps!",
    "One more question about the invoice.",
];

/// The demo's options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the API listens.
    pub listen: std::net::SocketAddr,
    /// Stop after this long (`None`: at Ctrl-C).
    pub run_for: Option<Duration>,
    /// The data directory (made fresh: the loopback server's world is new every run).
    pub data_dir: std::path::PathBuf,
}

/// Runs the demo.
pub async fn run(options: DemoOptions) -> Result<(), Error> {
    let server = Arc::new(
        LoopbackServer::start().await.context("cannot start the loopback MTProto server")?,
    );
    server.require_login();
    server.add_phone_login(PHONE, CODE, None);
    server.set_api_credentials(API_ID, API_HASH);
    for (id, name) in PEOPLE {
        server.add_user(id, name, Some(&name.to_lowercase()));
    }
    if options.data_dir.exists() {
        std::fs::remove_dir_all(&options.data_dir)
            .context(format!("cannot clear {}", options.data_dir.display()))?;
    }
    let worker = start(WorkerOptions {
        data_dir: options.data_dir.clone(),
        database_url: None,
        listen: options.listen,
        telegram: Some(inbox::config::TelegramApp::new(API_ID, API_HASH)),
        ..WorkerOptions::default()
    })
    .await
    .map_err(Error::msg)?;
    let engine = worker.runtime.engine().clone();

    // The Telegram account, added and logged in through the runtime as `inbox run` does
    // through its API (the loopback server hands over its auth key first: it cannot run
    // Telegram's key exchange).
    let (dc, address) = server.data_centre();
    let config = serde_json::json!({ "data_centres": { dc.to_string(): address.to_string() } });
    let new =
        NewAccount::new(channel_telegram::KIND, "support (loopback Telegram)").with_config(config);
    let account = worker.runtime.add_account(new).await.context("cannot add the demo account")?.id;
    server
        .provision_auth_key(&engine.account_state(account))
        .await
        .context("cannot hand over the loopback server's key")?;
    let phone = LoginInput::none().with("phone", PHONE);
    worker.runtime.login_step(account, "phone", phone).await.context("login: phone")?;
    let code = LoginInput::none().with("code", CODE);
    worker.runtime.login_step(account, "phone", code).await.context("login: code")?;

    // The second account: on a loopback server of its own, waiting for a login.
    let qr_server =
        Arc::new(LoopbackServer::start().await.context("cannot start the second loopback server")?);
    qr_server.require_login();
    qr_server.add_phone_login(SALES_PHONE, CODE, Some(SALES_PASSWORD));
    qr_server.set_api_credentials(API_ID, API_HASH);
    let (dc, address) = qr_server.data_centre();
    let config = serde_json::json!({ "data_centres": { dc.to_string(): address.to_string() } });
    let new = NewAccount::new(channel_telegram::KIND, "sales (loopback Telegram, logged out)")
        .with_config(config);
    let qr_account =
        worker.runtime.add_account(new).await.context("cannot add the QR demo account")?.id;
    qr_server
        .provision_auth_key(&engine.account_state(qr_account))
        .await
        .context("cannot hand over the second loopback server's key")?;

    println!(
        "inbox demo: a Telegram account on the loopback MTProto server, {} people writing in.\n\
         API: http://{}/api/v1   token: {}\n\
         console: http://{}/console/ (sign in with the token)\n\
         try: curl -s -H 'Authorization: Bearer {}' http://{}/api/v1/conversations\n\
         the second account (sales) logs in with a QR code, or with phone {SALES_PHONE}, code \
         {CODE} and password `{SALES_PASSWORD}`.\n\
         type here: `scan` (its QR code is scanned), `fail` (the next two sends to Frank fail), \
         `stall` (the auto-reply loop hangs once), `check TEXT`. Ctrl-C stops it.",
        PEOPLE.len(),
        worker.addr,
        worker.token,
        worker.addr,
        worker.token,
        worker.addr
    );

    let stall = Arc::new(AtomicBool::new(false));
    let replies = {
        let engine = engine.clone();
        let stall = stall.clone();
        worker
            .runtime
            .watchdog()
            .register(
                LoopSpec::new("demo-auto-reply", move |ctx| {
                    auto_reply(engine.clone(), stall.clone(), ctx)
                })
                .max_silence(AUTO_REPLY_SILENCE)
                .grace(Duration::from_millis(200)),
            )
            .map_err(|e| Error::msg(format!("cannot start the auto-reply loop: {e}")))?
    };
    let commands = tokio::spawn(commands(server.clone(), qr_server.clone(), stall));
    let started = Instant::now();
    let mut written = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1500));
    let stop = async {
        match options.run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                let (id, name) = PEOPLE[written % PEOPLE.len()];
                let line = LINES[(written / PEOPLE.len()) % LINES.len()];
                server.incoming(id, line);
                tracing::info!(person = name, "writes in");
                written += 1;
            }
        }
    }
    commands.abort();
    drop(replies);
    let answered = server.messages().iter().filter(|m| m.out).count();
    println!(
        "\n== after {:.0?}: {written} messages written in, {answered} answers read by the people ==",
        started.elapsed()
    );
    summary(&engine).await?;
    worker.shutdown().await;
    Ok(())
}

/// The commands typed on standard input (see the module's documentation); none when it is
/// closed.
async fn commands(
    server: Arc<LoopbackServer>,
    qr_server: Arc<LoopbackServer>,
    stall: Arc<AtomicBool>,
) {
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    // Standard input is read by a thread of its own (a blocking read); it ends at EOF.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        match line.trim() {
            "scan" => {
                if qr_server.accept_qr_login() {
                    println!("scan: the QR code was scanned; the next poll of the login logs in");
                } else {
                    println!("scan: no QR code was shown yet (start the `qr` login first)");
                }
            }
            "fail" => {
                server.fail_sends_to(
                    FRANK,
                    vec![
                        Reply::rpc_error(500, "INTERNAL_SERVER_ERROR"),
                        Reply::rpc_error(403, "USER_PRIVACY_RESTRICTED"),
                    ],
                );
                println!("fail: the next two sends to Frank fail");
            }
            "stall" => {
                stall.store(true, Ordering::SeqCst);
                println!("stall: the auto-reply loop hangs once");
            }
            "" => {}
            other => match other.strip_prefix("check ") {
                Some(text) => {
                    let to = server.messages().into_iter().find(|m| m.out && m.text == text);
                    let to = to.and_then(|m| match m.peer {
                        channel_telegram::testing::loopback::TestPeer::User(id) => server.user(id),
                        _ => None,
                    });
                    let to = to.map(|u| u.first_name);
                    match to {
                        Some(name) => println!("check: the loopback server holds it, to {name}"),
                        None => println!("check: the loopback server does not hold it"),
                    }
                }
                None => println!("unknown command `{other}`: scan, fail, stall or check TEXT"),
            },
        }
    }
}

/// Answers every message people send, once, through the durable feed (as `examples/service`),
/// as a loop under the watchdog: it pings every cycle, and hangs (silent) once when `stall` is
/// set, so that the watchdog restarts it.
async fn auto_reply(
    engine: Engine,
    stall: Arc<AtomicBool>,
    ctx: LoopContext,
) -> channel_watchdog::LoopResult {
    auto_reply_run(engine, stall, ctx).await.map_err(|e| e.to_string().into())
}

async fn auto_reply_run(
    engine: Engine,
    stall: Arc<AtomicBool>,
    ctx: LoopContext,
) -> Result<(), Error> {
    let mut feed = engine
        .feed_consumer("demo-auto-reply", ConsumerStart::Beginning)
        .await
        .context("cannot read the event feed")?;
    loop {
        ctx.ping();
        if stall.swap(false, Ordering::SeqCst) {
            tracing::warn!("the auto-reply loop hangs (the `stall` command)");
            std::future::pending::<()>().await;
        }
        let events = tokio::select! {
            () = ctx.cancelled() => return Ok(()),
            batch = tokio::time::timeout(Duration::from_secs(1), feed.next_batch(100)) => match batch {
                Ok(events) => events.context("the event feed failed")?,
                Err(_) => continue,
            },
        };
        for e in &events {
            if let Event::MessageReceived { conversation_id, message_id, .. } = e.event {
                let message = engine.message(message_id).await.context("cannot read a message")?;
                if message.direction == Direction::Inbound {
                    let reply = OutboundMessage::text(conversation_id, "Thanks, we are on it.")
                        .label("demo-auto-reply")
                        .reply_to(message.provider_id)
                        .idempotency_key(format!("demo-{message_id}"));
                    engine.send(None, reply).await.context("cannot queue a reply")?;
                }
            }
        }
        if let Some(last) = events.last() {
            feed.ack(last.position).await.context("cannot acknowledge events")?;
        }
    }
}

/// Prints what the store holds.
async fn summary(engine: &Engine) -> Result<(), Error> {
    let conversations = engine
        .conversations(&ConversationQuery::all(), PageRequest::first(500))
        .await
        .context("cannot read the conversations")?
        .items;
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for c in &conversations {
        let page =
            engine.messages(c.id, PageRequest::first(500)).await.context("cannot read messages")?;
        for m in page.items {
            let direction = if m.direction == Direction::Inbound { "inbound" } else { "outbound" };
            let status = match m.status {
                MessageStatus::Pending => "pending",
                MessageStatus::Sent => "sent",
                MessageStatus::Failed => "failed",
                _ => "other",
            };
            *counts.entry((direction, status)).or_default() += 1;
        }
    }
    println!("conversations: {}", conversations.len());
    for ((direction, status), n) in counts {
        println!("  {direction:<8} {status:<8} {n}");
    }
    Ok(())
}
