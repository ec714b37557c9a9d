//! The channel conformance suite on `TelegramChannel`: the real grammers client against the
//! loopback MTProto server, one server (one account) per case, talking with one user.
#![cfg(feature = "testing")]

mod support;
use support::fast_config;

use std::sync::Arc;

use async_trait::async_trait;
use channel_core::testing::RecordingInbound;
use channel_core::testing::channel_conformance::{
    self as conformance, ChannelUnderTest, PeerCopy, SendDedup, Written,
};
use channel_core::{Channel, IdentityInfo, MessageId, PreparedSend};
use channel_telegram::TelegramChannel;
use channel_telegram::provider::random_id_for;
use channel_telegram::session::{SESSION_KEY, UPDATES_KEY};
use channel_telegram::testing::loopback::{LoopbackServer, TestPeer, TestUser, WorldMessage};
use grammers_tl_types::{self as tl, Identifiable};

const PEER_ID: i64 = 2001;

/// A logged-in account on its own loopback server, and the user `Peer` (@peer) it talks to.
struct TelegramAccount {
    server: LoopbackServer,
    peer: TestUser,
    channel: Arc<TelegramChannel>,
}

impl TelegramAccount {
    async fn new() -> Self {
        let server = LoopbackServer::start().await.expect("the loopback server starts");
        let peer = server.add_user(PEER_ID, "Peer", Some("peer"));
        Self { server, peer, channel: Arc::new(TelegramChannel::new(fast_config())) }
    }

    /// A private-chat message as the channel delivers it: its bare id, in the chat's thread.
    fn written(&self, m: &WorldMessage) -> Written {
        Written {
            provider_id: m.id.to_string(),
            thread_key: PEER_ID.to_string(),
            remote: format!("tg:{PEER_ID}"),
        }
    }
}

#[async_trait]
impl ChannelUnderTest for TelegramAccount {
    fn channel(&self) -> Arc<dyn Channel> {
        self.channel.clone()
    }

    fn restarted(&self) -> Arc<dyn Channel> {
        Arc::new(TelegramChannel::new(fast_config()))
    }

    /// The account's state holds the server's logged-in session.
    fn new_inbound(&self) -> RecordingInbound {
        let inbound = RecordingInbound::new();
        inbound.set_state(SESSION_KEY, &self.server.stored_session().to_bytes());
        inbound
    }

    /// A fresh account starts from the update state of its first connection, which the
    /// channel stores before it processes any update: from then on nothing is missed.
    async fn until_listening(&self, inbound: &RecordingInbound) {
        inbound
            .expect_within("the first update state", self.patience(), |s| {
                s.state(UPDATES_KEY).is_some()
            })
            .await;
    }

    /// Stored by the server and pushed to the connected client, if any (a stopped channel
    /// finds it in the difference).
    async fn peer_writes(&self, text: &str) -> Written {
        self.written(&self.server.incoming(self.peer.id, text))
    }

    async fn owner_writes_elsewhere(&self, text: &str) -> Written {
        self.written(&self.server.outgoing_from_other_app(self.peer.id, text))
    }

    /// The owner's messages in the private chat, as the server holds them (the peer reads
    /// the same messages).
    async fn peer_copies(&self) -> Vec<PeerCopy> {
        self.server
            .messages()
            .into_iter()
            .filter(|m| m.out && m.peer == TestPeer::User(self.peer.id))
            .map(|m| PeerCopy { id: m.id.to_string(), text: Some(m.text) })
            .collect()
    }

    fn prepared_send(&self, text: &str) -> PreparedSend {
        let message_id = MessageId::new();
        let mut remote = IdentityInfo::new(format!("tg:{PEER_ID}"));
        remote.username = Some("peer".to_owned());
        PreparedSend {
            message_id,
            client_key: random_id_for(message_id),
            thread_key: PEER_ID.to_string(),
            remote,
            text: Some(text.to_owned()),
            html: None,
            subject: None,
            reply_to: None,
            references: Vec::new(),
            attachments: Vec::new(),
        }
    }

    /// Telegram stores one message per `random_id` (the key) and answers a repeat with it.
    fn send_dedup(&self) -> SendDedup {
        SendDedup::OneCopy
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery() {
    conformance::delivery(&TelegramAccount::new().await).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_resumption() {
    conformance::cursor_resumption(&TelegramAccount::new().await).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_matching() {
    conformance::echo_matching(&TelegramAccount::new().await).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_idempotency() {
    let account = TelegramAccount::new().await;
    conformance::send_idempotency(&account).await.expect_held();
    // The second send reached the server with the first one's random_id: deduplicated
    // there, not spared by the channel.
    let random_ids: Vec<i64> = account
        .server
        .requests_of(tl::functions::messages::SendMessage::CONSTRUCTOR_ID)
        .iter()
        .filter_map(|r| r.decode::<tl::functions::messages::SendMessage>())
        .map(|s| s.random_id)
        .collect();
    assert_eq!(random_ids.len(), 2, "both sends went to Telegram");
    assert_eq!(random_ids[0], random_ids[1], "with one random_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits() {
    conformance::history_limits(&TelegramAccount::new().await).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation() {
    conformance::cancellation(&TelegramAccount::new().await).await.expect_held();
}
