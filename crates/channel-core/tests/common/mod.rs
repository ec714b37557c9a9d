//! Shared set-up of the engine tests: a MemoryStore, a MemoryChannel attached to one account,
//! and an engine on tokio's (paused) clock.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use channel_core::clock::TokioClock;
use channel_core::send_policy::AllowAll;
use channel_core::state::StateKey;
use channel_core::testing::{MemoryChannel, MemoryStore};
use channel_core::*;
use tokio::sync::broadcast;

/// The wall time the test clock starts at.
pub const START: Timestamp = Timestamp(1_700_000_000_000);

pub struct Harness {
    pub store: Arc<MemoryStore>,
    pub engine: Engine,
    pub channel: Arc<MemoryChannel>,
    pub account: Account,
    pub events: broadcast::Receiver<Event>,
}

pub async fn harness() -> Harness {
    harness_with(|b| b).await
}

pub async fn harness_with(configure: impl FnOnce(EngineBuilder) -> EngineBuilder) -> Harness {
    let store = Arc::new(MemoryStore::new());
    let builder = Engine::builder(store.clone(), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .clock(Arc::new(TokioClock::starting_at(START)))
        .send_policy(Arc::new(AllowAll));
    let engine = configure(builder).build().expect("engine");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "test"), engine.now())
        .await
        .expect("account");
    let channel = Arc::new(MemoryChannel::new());
    channel_core::testing::attach_channel(&engine, account.id, channel.clone());
    let events = engine.subscribe();
    Harness { store, engine, channel, account, events }
}

pub fn text(provider_id: &str, thread: &str, from: &str, body: &str) -> InboundMessage {
    InboundMessage::text(provider_id, thread, IdentityInfo::new(from), body, START)
}

pub fn reply(conversation: ConversationId, body: &str) -> OutboundMessage {
    OutboundMessage {
        conversation_id: conversation,
        text: Some(body.to_owned()),
        html: None,
        subject: None,
        idempotency_key: None,
        reply_to: None,
        attachments: vec![],
        label: "manual".to_owned(),
    }
}

impl Harness {
    /// Delivers a first inbound message and returns its conversation.
    pub async fn conversation(&self, thread: &str) -> ConversationId {
        self.engine
            .deliver(self.account.id, text(&format!("first-{thread}"), thread, "tg:42", "hello"))
            .await
            .expect("deliver")
            .conversation_id
    }

    /// Events published so far and not yet read.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    /// Waits (on the paused clock) for the first event matching `pred`.
    pub async fn wait_event(&mut self, pred: impl Fn(&Event) -> bool) -> Event {
        let wait = async {
            loop {
                match self.events.recv().await {
                    Ok(e) if pred(&e) => return e,
                    Ok(_) => {}
                    Err(e) => panic!("event channel: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(24 * 3600), wait)
            .await
            .expect("event within a day of test time")
    }

    pub async fn job_of(&self, message: MessageId) -> Job {
        let mut all = Vec::new();
        for state in [
            JobState::Available,
            JobState::Running,
            JobState::Retryable,
            JobState::Completed,
            JobState::Discarded,
            JobState::Cancelled,
        ] {
            all.extend(self.store.jobs_in_state(state, 1000).await.expect("jobs"));
        }
        all.into_iter().find(|j| j.message_id == Some(message)).expect("the message's job")
    }
}
