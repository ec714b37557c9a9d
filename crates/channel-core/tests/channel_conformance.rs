//! The channel conformance suite on the in-memory channel: `MemoryChannel` playing a provider
//! whose server is the channel's own queue, and which files every accepted send as an
//! outgoing copy, as a provider with outgoing capture does.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use channel_core::testing::MemoryChannel;
use channel_core::testing::channel_conformance::{
    self as conformance, ChannelUnderTest, PeerCopy, SendDedup, Written,
};
use channel_core::{
    Capabilities, Channel, ChannelError, ChannelKind, Direction, HistoryRequest, IdentityInfo,
    Inbound, InboundMessage, MessageId, PreparedSend, SendReceipt, Timestamp,
};
use tokio_util::sync::CancellationToken;

const PEER: &str = "mem:peer";
const THREAD: &str = "chat-peer";

/// A `MemoryChannel` whose accepted sends come back as outgoing copies through `run` (its
/// script is the default: every send is accepted as `mem-<client_key>`).
struct Echoing {
    inner: Arc<MemoryChannel>,
}

#[async_trait]
impl Channel for Echoing {
    fn kind(&self) -> ChannelKind {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn run(
        &self,
        inbound: Arc<dyn Inbound>,
        cancel: CancellationToken,
    ) -> Result<(), ChannelError> {
        self.inner.run(inbound, cancel).await
    }

    async fn send(&self, message: &PreparedSend) -> Result<SendReceipt, ChannelError> {
        let receipt = self.inner.send(message).await?;
        if self.inner.capabilities().outgoing_capture {
            let mut copy = InboundMessage::text(
                receipt.provider_id.clone(),
                message.thread_key.clone(),
                message.remote.clone(),
                message.text.clone().unwrap_or_default(),
                receipt.at,
            );
            copy.direction = Direction::Outbound;
            copy.client_key = Some(message.client_key.clone());
            self.inner.push_inbound(copy);
        }
        Ok(receipt)
    }

    async fn fetch_history(
        &self,
        request: &HistoryRequest,
    ) -> Result<Vec<InboundMessage>, ChannelError> {
        self.inner.fetch_history(request).await
    }
}

/// One account on a `MemoryChannel`, talking with `mem:peer` in `chat-peer`.
struct MemoryAccount {
    memory: Arc<MemoryChannel>,
    channel: Arc<dyn Channel>,
    /// What the "server" holds for history, oldest first.
    history: Mutex<Vec<InboundMessage>>,
}

impl MemoryAccount {
    fn new() -> Self {
        Self::with(MemoryChannel::new())
    }

    fn with(channel: MemoryChannel) -> Self {
        let memory = Arc::new(channel);
        let channel = Arc::new(Echoing { inner: Arc::clone(&memory) });
        Self { memory, channel, history: Mutex::new(Vec::new()) }
    }

    fn write(&self, message: InboundMessage) -> Written {
        let written = Written {
            provider_id: message.provider_id.clone(),
            thread_key: message.thread_key.clone(),
            remote: message.remote.address.clone(),
        };
        let mut history = self.history.lock().unwrap();
        history.push(message.clone());
        self.memory.set_history(history.clone());
        self.memory.push_inbound(message);
        written
    }
}

#[async_trait]
impl ChannelUnderTest for MemoryAccount {
    fn channel(&self) -> Arc<dyn Channel> {
        Arc::clone(&self.channel)
    }

    async fn peer_writes(&self, text: &str) -> Written {
        let id = format!("peer-{}", MessageId::new());
        self.write(InboundMessage::text(
            id,
            THREAD,
            IdentityInfo::new(PEER),
            text,
            Timestamp::now(),
        ))
    }

    async fn owner_writes_elsewhere(&self, text: &str) -> Written {
        let id = format!("phone-{}", MessageId::new());
        let mut m =
            InboundMessage::text(id, THREAD, IdentityInfo::new(PEER), text, Timestamp::now());
        m.direction = Direction::Outbound;
        self.write(m)
    }

    /// Every send the channel accepted is a copy at the peer, under the id it was accepted
    /// with (`mem-<client_key>`, the same on every attempt).
    async fn peer_copies(&self) -> Vec<PeerCopy> {
        self.memory
            .sends()
            .into_iter()
            .filter(|s| s.thread_key == THREAD)
            .map(|s| PeerCopy { id: format!("mem-{}", s.client_key), text: s.text })
            .collect()
    }

    fn prepared_send(&self, text: &str) -> PreparedSend {
        let message_id = MessageId::new();
        PreparedSend {
            message_id,
            client_key: message_id.to_string(),
            thread_key: THREAD.to_owned(),
            remote: IdentityInfo::new(PEER),
            text: Some(text.to_owned()),
            html: None,
            subject: None,
            reply_to: None,
            references: Vec::new(),
            attachments: Vec::new(),
        }
    }

    /// The memory channel answers every attempt with the same id, as a provider that
    /// deduplicates would, but records (delivers) each one.
    fn send_dedup(&self) -> SendDedup {
        SendDedup::SameId
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery() {
    conformance::delivery(&MemoryAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_resumption() {
    conformance::cursor_resumption(&MemoryAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_matching() {
    conformance::echo_matching(&MemoryAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_matching_is_skipped_without_outgoing_capture_and_says_so() {
    let caps = Capabilities::none().history(true);
    let account = MemoryAccount::with(MemoryChannel::new().with_capabilities(caps));
    conformance::echo_matching(&account).await.expect_skipped("outgoing_capture");
    assert!(account.memory.sends().is_empty(), "nothing was sent by a skipped case");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_idempotency() {
    conformance::send_idempotency(&MemoryAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits() {
    conformance::history_limits(&MemoryAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_is_skipped_without_history_and_says_so() {
    let caps = Capabilities::none().outgoing_capture(true);
    let account = MemoryAccount::with(MemoryChannel::new().with_capabilities(caps));
    conformance::history_limits(&account).await.expect_skipped("history");
    assert!(account.memory.history_requests().is_empty(), "no history was asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation() {
    conformance::cancellation(&MemoryAccount::new()).await.expect_held();
}
