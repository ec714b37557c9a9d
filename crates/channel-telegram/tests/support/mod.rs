//! Helpers shared by the channel tests: a running `TelegramChannel` against the loopback
//! server, on a `RecordingInbound` holding the server's session.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use channel_core::testing::RecordingInbound;
use channel_core::{Channel, ChannelError, ConnectionState, IdentityInfo, PreparedSend};
use channel_telegram::session::SESSION_KEY;
use channel_telegram::testing::loopback::LoopbackServer;
use channel_telegram::{TelegramChannel, TelegramConfig};
use grammers_tl_types::{self as tl, Identifiable};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);
pub const GET_STATE: u32 = tl::functions::updates::GetState::CONSTRUCTOR_ID;
pub const GET_DIFFERENCE: u32 = tl::functions::updates::GetDifference::CONSTRUCTOR_ID;

/// Short liveness settings so that stalls are found in well under a second.
pub fn fast_config() -> TelegramConfig {
    TelegramConfig::new(4242)
        .ping_interval(Duration::from_millis(200))
        .ping_deadline(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(800))
        .sync_interval(Duration::from_millis(100))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .send_timeout(Duration::from_secs(3))
}

/// A channel running in its own task.
pub struct Running {
    pub channel: Arc<TelegramChannel>,
    pub cancel: CancellationToken,
    pub task: JoinHandle<Result<(), ChannelError>>,
}

impl Running {
    /// Cancels the channel and returns how `run` ended.
    pub async fn stop(self) -> Result<(), ChannelError> {
        self.cancel.cancel();
        self.task.await.expect("run does not panic")
    }

    /// Cancels the channel and asserts that `run` ended cleanly.
    pub async fn stop_cleanly(self) {
        self.stop().await.expect("run ends cleanly");
    }
}

/// A sink holding the server's logged-in session.
pub fn account(server: &LoopbackServer) -> Arc<RecordingInbound> {
    let inbound = Arc::new(RecordingInbound::new());
    inbound.set_state(SESSION_KEY, &server.stored_session().to_bytes());
    inbound
}

/// Runs `channel` on `inbound`.
pub async fn run_with(inbound: &Arc<RecordingInbound>, channel: TelegramChannel) -> Running {
    let channel = Arc::new(channel);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let channel = Arc::clone(&channel);
        let inbound: Arc<dyn channel_core::Inbound> = inbound.clone();
        let cancel = cancel.clone();
        async move { channel.run(inbound, cancel).await }
    });
    Running { channel, cancel, task }
}

/// Runs a channel with [`fast_config`] on `inbound`.
pub async fn run(inbound: &Arc<RecordingInbound>) -> Running {
    run_with(inbound, TelegramChannel::new(fast_config())).await
}

/// Runs the channel and waits until its update stream listens (a first connection asks for
/// the state, a later one for the difference).
pub async fn connected_with(
    server: &LoopbackServer,
    inbound: &Arc<RecordingInbound>,
    channel: TelegramChannel,
) -> Running {
    let state_before = server.requests_of(GET_STATE).len();
    let diff_before = server.requests_of(GET_DIFFERENCE).len();
    let r = run_with(inbound, channel).await;
    assert!(
        inbound.wait_for_state(WAIT, |s| *s == ConnectionState::Connected).await,
        "connected: {:?}",
        inbound.connection_states()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.requests_of(GET_STATE).len() == state_before
        && server.requests_of(GET_DIFFERENCE).len() == diff_before
    {
        assert!(tokio::time::Instant::now() < deadline, "the update stream never started");
        server.wait_for_requests(GET_STATE, state_before + 1, Duration::from_millis(50)).await;
    }
    r
}

/// [`connected_with`] a channel with [`fast_config`].
pub async fn connected(server: &LoopbackServer, inbound: &Arc<RecordingInbound>) -> Running {
    connected_with(server, inbound, TelegramChannel::new(fast_config())).await
}

/// A text message to send into `thread_key`.
pub fn outgoing(thread_key: &str, key: &str, text: &str) -> PreparedSend {
    PreparedSend {
        message_id: channel_core::MessageId::new(),
        client_key: key.to_owned(),
        thread_key: thread_key.to_owned(),
        remote: IdentityInfo::new(format!("tg:{thread_key}")),
        text: Some(text.to_owned()),
        html: None,
        subject: None,
        reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
    }
}
