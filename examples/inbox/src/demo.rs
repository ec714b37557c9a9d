//! `inbox demo`: the worker of `inbox run`, with a Telegram account on the loopback MTProto
//! server (channel-telegram's, in this process) and simulated people who write in and read
//! the answers, so that a newcomer sees the real path (grammers, the store, the queue, the
//! durable feed, the HTTP API) with nothing to configure. It prints the API's address and
//! token, and runs until Ctrl-C, or for `--for`; then a summary read back from the store.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use channel_core::feed::ConsumerStart;
use channel_core::page::PageRequest;
use channel_core::provider::LoginInput;
use channel_core::reads::ConversationQuery;
use channel_core::{Direction, Engine, Event, MessageStatus, NewAccount, OutboundMessage};
use channel_telegram::testing::loopback::LoopbackServer;
use inbox::worker::{WorkerOptions, start};

use crate::error::{Error, ResultExt};

const API_ID: i32 = 4242;
const API_HASH: &str = "inbox-demo-app-hash";
const PHONE: &str = "+15550100";
const CODE: &str = "12345";
const PEOPLE: [(i64, &str); 3] = [(2001, "Carol"), (2002, "Dan"), (2003, "Erin")];
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
    let server =
        LoopbackServer::start().await.context("cannot start the loopback MTProto server")?;
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
        telegram: Some((API_ID, API_HASH.to_owned())),
        worker_id: None,
        metrics_behind_token: false,
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

    println!(
        "inbox demo: a Telegram account on the loopback MTProto server, {} people writing in.\n\
         API: http://{}/api/v1   token: {}\n\
         try: curl -s -H 'Authorization: Bearer {}' http://{}/api/v1/conversations\n\
         Ctrl-C stops it.",
        PEOPLE.len(),
        worker.addr,
        worker.token,
        worker.token,
        worker.addr
    );

    let replies = tokio::spawn(auto_reply(engine.clone()));
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
    replies.abort();
    let answered = server.messages().iter().filter(|m| m.out).count();
    println!(
        "\n== after {:.0?}: {written} messages written in, {answered} answers read by the people ==",
        started.elapsed()
    );
    summary(&engine).await?;
    worker.shutdown().await;
    Ok(())
}

/// Answers every message people send, once, through the durable feed (as `examples/service`).
async fn auto_reply(engine: Engine) -> Result<(), Error> {
    let mut feed = engine
        .feed_consumer("demo-auto-reply", ConsumerStart::Beginning)
        .await
        .context("cannot read the event feed")?;
    loop {
        let events = feed.next_batch(100).await.context("the event feed failed")?;
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
