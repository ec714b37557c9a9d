//! The simulated world around the worker: people who write to the demo account, and the
//! service's auto-responder that answers every new conversation.
//!
//! The provider ids are stable (`alice-1`, `bob-1`, ...), so a second run delivers the same
//! messages again and the store recognises them as duplicates. Only Alice's visit carries the
//! run number (`alice-visit-2`): she comes back on every run, and because her earlier
//! conversation was closed by the lifecycle sweep, she starts a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use channel_core::testing::{MemoryChannel, SendScript};
use channel_core::{
    AccountId, AttachmentData, ContactId, ConversationId, Engine, Event, IdentityInfo,
    InboundMessage, IngestDisposition, IngestOutcome, OutboundMessage,
};
use channel_watchdog::{LoopContext, LoopResult, LoopSpec};
use tokio::sync::broadcast;

use crate::error::{Error, ResultExt};
use crate::short;

/// How the demo makes the channel fail the auto-reply to one person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The first attempt fails with a transient error; the dispatcher retries and it is sent.
    TransientOnce,
    /// The provider refuses it for good: the message is `Failed`, its job in the dead letter.
    Permanent,
}

impl Fault {
    /// What the channel does on the attempts of the auto-reply, ending with acceptance under
    /// `provider_id` when the fault is not permanent.
    fn script(self, provider_id: String) -> Vec<SendScript> {
        match self {
            Fault::TransientOnce => vec![
                SendScript::Transient("network unreachable (scripted)".into()),
                SendScript::OkWithId(provider_id),
            ],
            Fault::Permanent => {
                vec![SendScript::Permanent(
                    "the recipient does not accept messages (scripted)".into(),
                )]
            }
        }
    }

    /// How many `Channel::send` calls the auto-reply takes.
    fn attempts(self) -> usize {
        match self {
            Fault::TransientOnce => 2,
            Fault::Permanent => 1,
        }
    }
}

/// Someone who writes to the demo account.
#[derive(Clone, Copy, Debug)]
pub struct Person {
    /// A short name for the log.
    pub name: &'static str,
    /// The name the provider shows.
    pub display_name: &'static str,
    /// The channel address (Telegram-style user id).
    pub address: &'static str,
    /// The chat.
    pub thread: &'static str,
    /// What happens to the auto-reply to them.
    pub fault: Option<Fault>,
}

const ALICE: Person = Person {
    name: "alice",
    display_name: "Alice Martin",
    address: "tg:1001",
    thread: "chat-1001",
    fault: None,
};
const BOB: Person = Person {
    name: "bob",
    display_name: "Bob Okafor",
    address: "tg:1002",
    thread: "chat-1002",
    fault: None,
};
const DAVE: Person = Person {
    name: "dave",
    display_name: "Dave Lind",
    address: "tg:1004",
    thread: "chat-1004",
    fault: Some(Fault::Permanent),
};
const CAROL: Person = Person {
    name: "carol",
    display_name: "Carol Diaz",
    address: "tg:1003",
    thread: "chat-1003",
    fault: Some(Fault::TransientOnce),
};

/// Everyone in the simulation.
pub const PEOPLE: [Person; 4] = [ALICE, BOB, DAVE, CAROL];

/// The faults still to inject, by address: each is used once, for the first auto-reply to
/// that person.
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<Mutex<HashMap<&'static str, Fault>>>);

impl Faults {
    /// The faults of [`PEOPLE`].
    pub fn planned() -> Self {
        let map = PEOPLE.iter().filter_map(|p| p.fault.map(|f| (p.address, f))).collect();
        Self(Arc::new(Mutex::new(map)))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<&'static str, Fault>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, address: &str) -> Option<Fault> {
        self.lock().remove(address)
    }
}

/// The auto-responder as a loop supervised by the runtime's watchdog: it pings every cycle
/// and is restarted if it fails or falls silent. `first` is subscribed before the runtime
/// starts, so its first run misses no event; a restarted run subscribes afresh.
pub fn autoresponder(
    engine: Engine,
    channel: Arc<MemoryChannel>,
    faults: Faults,
    first: broadcast::Receiver<Event>,
) -> LoopSpec {
    let first = Mutex::new(Some(first));
    LoopSpec::new("autoresponder", move |ctx| {
        let events = first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| engine.subscribe());
        answer_new_conversations(engine.clone(), Arc::clone(&channel), faults.clone(), events, ctx)
    })
    .max_silence(Duration::from_secs(30))
}

async fn answer_new_conversations(
    engine: Engine,
    channel: Arc<MemoryChannel>,
    faults: Faults,
    mut events: broadcast::Receiver<Event>,
    ctx: LoopContext,
) -> LoopResult {
    use broadcast::error::RecvError;
    loop {
        ctx.ping();
        let event = tokio::select! {
            () = ctx.cancelled() => return Ok(()),
            event = events.recv() => event,
            () = tokio::time::sleep(Duration::from_secs(5)) => continue,
        };
        match event {
            Ok(Event::ConversationOpened { account_id, conversation_id }) => {
                if let Err(e) =
                    answer(&engine, &channel, &faults, account_id, conversation_id).await
                {
                    tracing::warn!(
                        parent: None,
                        conversation = %short(conversation_id),
                        error = %e,
                        "could not queue the auto-reply"
                    );
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(parent: None, missed, "the auto-responder fell behind; some events were missed");
            }
            Err(RecvError::Closed) => return Err("the engine's event channel closed".into()),
        }
    }
}

/// Queues the auto-reply in a new conversation through `engine.send` (label `autoreply`).
async fn answer(
    engine: &Engine,
    channel: &MemoryChannel,
    faults: &Faults,
    account: AccountId,
    conversation_id: ConversationId,
) -> Result<(), Error> {
    let store = engine.store();
    let conversation =
        store.conversation(conversation_id).await.context("cannot read the conversation")?;
    let person = store
        .identity(conversation.primary_identity)
        .await
        .context("cannot read who opened the conversation")?;
    let opening = store.messages(conversation_id, 1).await.context("cannot read the messages")?;
    // The provider id the channel reports for the sent reply. `MemoryChannel` would number its
    // sends `mem-1`, `mem-2`, ... afresh in every process, which collides with the ids stored
    // by an earlier run; a unique id per send is what a real provider gives.
    let provider_id = format!("mem-{:016x}", rand::random::<u64>());
    match faults.take(&person.address) {
        Some(fault) => {
            tracing::info!(
                parent: None,
                conversation = %short(conversation_id),
                ?fault,
                "scripting the channel to fail this auto-reply"
            );
            channel.script_sends(fault.script(provider_id));
        }
        None => channel.script_sends([SendScript::OkWithId(provider_id)]),
    }
    let greeting = match &person.display_name {
        Some(name) => format!("Hello {name}!"),
        None => "Hello!".to_owned(),
    };
    let message = engine
        .send(
            Some(account),
            OutboundMessage {
                conversation_id,
                text: Some(format!("{greeting} Thanks for writing; someone will answer shortly.")),
                html: None,
                subject: None,
                idempotency_key: None,
                reply_to: opening.first().and_then(|m| m.provider_id.clone()),
                attachments: vec![],
                label: "autoreply".into(),
            },
        )
        .await
        .context("engine.send failed")?;
    tracing::info!(
        parent: None,
        conversation = %short(conversation_id),
        reply = %short(message),
        "auto-reply queued (pending until the dispatcher sends it)"
    );
    Ok(())
}

/// Delivers the simulated messages through the channel, one person after the other.
pub async fn run_traffic(
    engine: Engine,
    channel: Arc<MemoryChannel>,
    account: AccountId,
    run: u64,
) -> Result<(), Error> {
    let mut traffic = Traffic { engine, channel, delivered: 0 };
    let pause = || tokio::time::sleep(Duration::from_millis(300));

    let hello = traffic.text(&ALICE, "alice-1", "Hi! Is my order 1042 on its way?");
    let alice = traffic.say(&ALICE, hello, 2).await?;
    if let Some(outcome) = alice {
        traffic.link_to_contact(&ALICE, outcome, "crm-contact-1042").await?;
    }
    pause().await;

    let mut invoice =
        traffic.text(&BOB, "bob-1", "The invoice is attached; it shows the wrong address.");
    invoice.attachments.push(AttachmentData {
        name: Some("invoice-2291.pdf".into()),
        mime_type: "application/pdf".into(),
        data: Bytes::from_static(b"%PDF-1.4\n% a tiny stand-in for an invoice\n%%EOF\n"),
    });
    traffic.say(&BOB, invoice, 2).await?;
    let more = traffic.text(&BOB, "bob-2", "It should be 12 Harbour Street.");
    traffic.say(&BOB, more, 1).await?;
    pause().await;

    let dave = traffic.text(&DAVE, "dave-1", "Please call me back.");
    traffic.say(&DAVE, dave, 1).await?;
    pause().await;

    let carol = traffic.text(&CAROL, "carol-1", "Do you ship to Norway?");
    traffic.say(&CAROL, carol, 2).await?;

    // Alice comes back. On the first run her conversation went idle meanwhile and opens
    // again; on later runs the last one was closed, so a new conversation starts.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let visit = traffic.text(&ALICE, &format!("alice-visit-{run}"), "Me again: any news?");
    traffic.say(&ALICE, visit, 1).await?;

    tracing::info!(
        account = %short(account),
        "traffic done; now quiet until the lifecycle sweep idles and closes the conversations"
    );
    Ok(())
}

struct Traffic {
    engine: Engine,
    channel: Arc<MemoryChannel>,
    /// Deliveries made by the channel so far, as counted by `MemoryChannel::deliveries`.
    delivered: usize,
}

impl Traffic {
    fn text(&self, who: &Person, provider_id: &str, text: &str) -> InboundMessage {
        let from = IdentityInfo::new(who.address).with_display_name(who.display_name);
        InboundMessage::text(provider_id, who.thread, from, text, self.engine.now())
    }

    /// Has the channel deliver `message` `times` times, logs what ingest made of each
    /// delivery, and, when it opened a conversation, waits until the auto-reply was handed to
    /// the channel (so that the failure scripted for one reply is not taken by another).
    /// Returns the outcome of the first delivery.
    async fn say(
        &mut self,
        who: &Person,
        message: InboundMessage,
        times: usize,
    ) -> Result<Option<IngestOutcome>, Error> {
        let provider_id = message.provider_id.clone();
        let sends_before = self.channel.sends().len();
        for _ in 0..times {
            self.channel.push_inbound(message.clone());
        }
        self.delivered += times;
        let deliveries = tokio::time::timeout(
            Duration::from_secs(5),
            self.channel.wait_for_deliveries(self.delivered),
        )
        .await
        .map_err(|_| Error::msg("the channel did not deliver the messages within 5 s"))?;
        let mine = &deliveries[self.delivered - times..self.delivered];
        for (i, result) in mine.iter().enumerate() {
            match result {
                Ok(o) => tracing::info!(
                    from = who.name,
                    provider_id,
                    delivery = format!("{}/{times}", i + 1),
                    message_id = %short(o.message_id),
                    "{}",
                    describe(o)
                ),
                Err(e) => {
                    tracing::warn!(from = who.name, provider_id, error = %e, "delivery failed")
                }
            }
        }
        let first = mine.first().and_then(|r| r.as_ref().ok()).copied();
        if first.is_some_and(|o| o.conversation_opened) {
            let attempts = who.fault.map_or(1, Fault::attempts);
            let wait = self.channel.wait_for_sends(sends_before + attempts);
            if tokio::time::timeout(Duration::from_secs(5), wait).await.is_err() {
                tracing::warn!(from = who.name, "the auto-reply was not sent within 5 s");
            }
        }
        Ok(first)
    }

    /// What the service does once it knows who someone is: links their identity to its
    /// own contact record (identities start unlinked).
    async fn link_to_contact(
        &self,
        who: &Person,
        outcome: IngestOutcome,
        contact: &str,
    ) -> Result<(), Error> {
        let store = self.engine.store();
        let identity =
            store.identity(outcome.identity_id).await.context("cannot read the identity")?;
        if identity.is_unlinked() {
            store
                .link_identity(identity.id, Some(ContactId::new(contact)), self.engine.now())
                .await
                .context("cannot link the identity")?;
            tracing::info!(
                from = who.name,
                identity = %short(identity.id),
                contact,
                "the service recognised a customer: identity linked to its contact"
            );
        }
        Ok(())
    }
}

fn describe(o: &IngestOutcome) -> &'static str {
    match o.disposition {
        IngestDisposition::Duplicate => "duplicate: already stored, nothing written",
        IngestDisposition::EchoMatched => "echo of our own send: pending message marked sent",
        IngestDisposition::Stored if o.conversation_opened => "stored; opened a conversation",
        IngestDisposition::Stored if o.conversation_reactivated => {
            "stored; the conversation is open again"
        }
        IngestDisposition::Stored => "stored in the open conversation",
    }
}
