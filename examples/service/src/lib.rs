//! The production wiring of the channel crates, as a service writes it: the SQLite store, the
//! engine, the runtime with the email and Telegram providers, and an auto-reply to every
//! message people send. Accounts are added and logged in through the runtime
//! (`Runtime::add_account`, `Runtime::login_step`), as `tests/two_accounts.rs` does with an
//! email account on a real Dovecot and OpenSMTPD and a Telegram account on the loopback
//! MTProto server. The repository's README shows this file.

use std::path::Path;
use std::sync::Arc;

use channel_core::feed::ConsumerStart;
use channel_core::runtime::Runtime;
use channel_core::state::StateKey;
use channel_core::{Direction, Engine, Event, OutboundMessage};
use channel_email::EmailProvider;
use channel_store::SqlStore;
use channel_telegram::TelegramProvider;

/// Any error, for `?`.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Opens the store in `dir` and starts the runtime with both providers.
pub async fn start(
    dir: &Path,
    key: StateKey,
    telegram: TelegramProvider,
) -> Result<Runtime, Error> {
    let store = SqlStore::open_sqlite(&dir.join("service.db").to_string_lossy()).await?;
    let engine = Engine::builder(Arc::new(store), key).blob_dir(dir.join("blobs")).build()?;
    let runtime = Runtime::with_providers(engine)
        .provider(Arc::new(EmailProvider::new()))
        .provider(Arc::new(telegram))
        .start()
        .await?;
    Ok(runtime)
}

/// Answers every message people send, in its conversation, exactly once: it reads the
/// durable event feed as consumer `auto-reply` (after a crash it reads on from its last
/// acknowledgement) and sends each reply with an idempotency key derived from the message, so
/// an event read again is answered again by the same reply, never by a second one.
pub async fn auto_reply(engine: Engine) -> Result<(), Error> {
    let mut feed = engine.feed_consumer("auto-reply", ConsumerStart::Beginning).await?;
    loop {
        let events = feed.next_batch(100).await?;
        for e in &events {
            if let Event::MessageReceived { conversation_id, message_id, .. } = e.event {
                let message = engine.message(message_id).await?;
                if message.direction == Direction::Inbound {
                    let reply =
                        OutboundMessage::text(conversation_id, "Thank you, we will answer soon.")
                            .label("autoreply")
                            .reply_to(message.provider_id)
                            .idempotency_key(format!("autoreply-{message_id}"));
                    engine.send(None, reply).await?;
                }
            }
        }
        if let Some(last) = events.last() {
            feed.ack(last.position).await?;
        }
    }
}
