//! A worker process for the crash tests (`tests/crash_process.rs`): one Telegram account,
//! run through channel-core's runtime on SQLite, answering every incoming message once
//! ("re: <text>", as a reply to it). Meant to be killed with `kill -9` at any moment.
//!
//! ```text
//! crash_worker <sqlite file> <session file>
//! ```
//!
//! The session file holds the loopback server's `StoredSession` (JSON); it is written into
//! the account state when the database has no account yet. With `CRASH_WORKER_REPLY=0` the
//! worker stores what arrives and answers nothing.
//!
//! The auto-reply is idempotent across crashes: it does not react to events, it looks at what
//! is stored (every 100 ms) and queues a reply for each incoming message that has none. The
//! reply and its job are committed together, so a crash never queues one twice.
//!
//! Prints `stored <provider id>` when it first sees an incoming message stored, and
//! `queued <provider id>` when it queued its reply.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use channel_core::runtime::{Runtime, StaticChannels};
use channel_core::send_policy::{RateLimitPolicy, StorePolicyMemory};
use channel_core::state::StateKey;
use channel_core::{Direction, Engine, NewAccount, OutboundMessage, Store, Timestamp};
use channel_store::SqlStore;
use channel_telegram::session::SESSION_KEY;
use channel_telegram::{TelegramChannel, TelegramConfig};
use governor::Quota;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(db), Some(session)) = (args.next(), args.next()) else {
        return Err("usage: crash_worker <sqlite file> <session file>".into());
    };
    let reply = std::env::var("CRASH_WORKER_REPLY").map_or(true, |v| v != "0");
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(&db).await?);
    // Looser than the default limits, so that the replies keep up with the test's traffic;
    // kept in the store like the default's.
    let per_minute = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    let policy = RateLimitPolicy::new(
        Quota::per_minute(per_minute(600)).allow_burst(per_minute(20)),
        Quota::per_second(per_minute(2)).allow_burst(per_minute(5)),
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
