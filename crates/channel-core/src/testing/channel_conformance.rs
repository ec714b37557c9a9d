//! The [`Channel`] conformance suite: the promises every provider's channel keeps, written
//! once, run by every provider against its real (or loopback) servers.
//!
//! A provider's test implements [`ChannelUnderTest`] for one fresh account that has one peer
//! (another person it talks to), and calls one function of this module per promise, each in
//! its own `#[tokio::test]` named after it:
//!
//! | function | promise |
//! | --- | --- |
//! | [`delivery`] | what the peer writes arrives through [`Channel::run`] |
//! | [`cursor_resumption`] | a run after a stop resumes where the last one ended |
//! | [`echo_matching`] | the copy of a send the channel sees again carries the receipt's id |
//! | [`send_idempotency`] | the same send twice is one message at the recipient |
//! | [`history_limits`] | a history page holds the newest messages, at most the page size |
//! | [`cancellation`] | `run` returns soon after its token is cancelled |
//!
//! Each function panics when the channel breaks the promise, and otherwise returns a
//! [`Verdict`]: [`Verdict::Held`], or [`Verdict::Skipped`] naming the capability the channel
//! lacks (only [`echo_matching`] and [`history_limits`] depend on one). The caller asserts on
//! it ([`Verdict::expect_held`], [`Verdict::expect_skipped`]), so that a case skipped for lack
//! of a capability never passes silently:
//!
//! ```no_run
//! // in tests/channel_conformance.rs of a provider crate
//! use channel_core::testing::channel_conformance::{self as conformance, ChannelUnderTest};
//! # use channel_core::testing::channel_conformance::{PeerCopy, SendDedup, Written};
//! # struct MyAccount;
//! # #[async_trait::async_trait]
//! # impl ChannelUnderTest for MyAccount {
//! #     fn channel(&self) -> std::sync::Arc<dyn channel_core::Channel> { todo!() }
//! #     async fn peer_writes(&self, _: &str) -> Written { todo!() }
//! #     async fn owner_writes_elsewhere(&self, _: &str) -> Written { todo!() }
//! #     async fn peer_copies(&self) -> Vec<PeerCopy> { todo!() }
//! #     fn prepared_send(&self, _: &str) -> channel_core::PreparedSend { todo!() }
//! #     fn send_dedup(&self) -> SendDedup { todo!() }
//! # }
//! # async fn fresh_account() -> MyAccount { MyAccount }
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn delivery() {
//!     conformance::delivery(&fresh_account().await).await.expect_held();
//! }
//! # fn main() {}
//! ```
//!
//! The functions run the channel on a [`RecordingInbound`] (its state is the account's state:
//! the cursor a run leaves is there for the next one) and wait for what they expect under
//! [`ChannelUnderTest::patience`]: they never sleep to let something happen. A bound that
//! passes fails the case with what the sink holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::channel::{Channel, ChannelError, HistoryRequest, PreparedSend, SendReceipt};
use crate::model::{Direction, InboundMessage};
use crate::testing::RecordingInbound;

/// How long `run` may take to return once its token is cancelled.
pub const STOP_WITHIN: Duration = Duration::from_secs(5);

/// What a case found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "assert on the verdict: a skipped case must not pass silently"]
pub enum Verdict {
    /// The channel kept the promise.
    Held,
    /// The case did not run: the channel's [`Capabilities`](crate::Capabilities) lack what
    /// it checks.
    Skipped {
        /// The missing capability (the field of [`Capabilities`](crate::Capabilities)).
        capability: &'static str,
    },
}

impl Verdict {
    /// Panics unless the case ran and the promise held.
    pub fn expect_held(self) {
        assert_eq!(self, Verdict::Held, "the case was expected to run");
    }

    /// Panics unless the case was skipped for lack of `capability`.
    pub fn expect_skipped(self, capability: &str) {
        assert!(
            matches!(&self, Verdict::Skipped { capability: c } if *c == capability),
            "expected the case to be skipped for lack of `{capability}`, got {self:?}"
        );
    }
}

/// A message written on the account's conversation with the peer (by the peer, or by the
/// owner from another client), as the channel is expected to deliver it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The provider id the channel delivers it under.
    pub provider_id: String,
    /// The thread key the channel delivers it under.
    pub thread_key: String,
    /// The remote party's address as the channel reports it (`IdentityInfo::address`): the
    /// peer, sender or recipient.
    pub remote: String,
}

/// One copy of a message of the account as the peer holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCopy {
    /// The id the copy carries (email: its Message-ID; Telegram: the message id).
    pub id: String,
    /// Its text, as the peer sees it.
    pub text: Option<String>,
}

/// What a provider promises when the same [`PreparedSend`] (the same `client_key`) is sent
/// twice: what [`send_idempotency`] asserts at the recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendDedup {
    /// The provider deduplicates on the key (Telegram's `random_id`): the recipient holds
    /// one copy. The provider has stored a message when `send` returns, so the recipient's
    /// copies are counted once both sends have returned.
    OneCopy,
    /// The provider may deliver every send, but each copy carries the same id, the one of
    /// the receipt (email: the Message-ID is derived from the key), so the recipient's mail
    /// program and our engine see one message. The case waits until a copy of each accepted
    /// send has arrived, then asserts that they all carry that one id.
    SameId,
}

/// One fresh account of a provider with one peer: what the conformance functions need to
/// drive it. Make a new one for every case.
#[async_trait]
pub trait ChannelUnderTest: Send + Sync {
    /// The account's channel. Every call returns the same channel; `run` may be called on it
    /// again after an earlier run returned.
    fn channel(&self) -> Arc<dyn Channel>;

    /// The channel a restarted process would make for the account (a new instance that
    /// knows only the account's state). By default [`ChannelUnderTest::channel`].
    fn restarted(&self) -> Arc<dyn Channel> {
        self.channel()
    }

    /// An empty sink holding the account's state as it is before the channel's first run
    /// (a stored session, say). By default an empty [`RecordingInbound`].
    fn new_inbound(&self) -> RecordingInbound {
        RecordingInbound::new()
    }

    /// Returns once the run just started on `inbound` has its starting point: what is
    /// written from then on reaches it. A fresh account may start from "now" (Telegram's
    /// first connection takes the server's update state: what was written before is history,
    /// not news). By default, once a run has reported
    /// [`ConnectionState::Connected`](crate::ConnectionState::Connected) to `inbound`.
    async fn until_listening(&self, inbound: &RecordingInbound) {
        inbound
            .expect_within("the channel to connect", self.patience(), |s| {
                s.connection_states().contains(&crate::ConnectionState::Connected)
            })
            .await;
    }

    /// The peer writes `text` to the account. Returns once the provider holds the message
    /// (a catch-up of the account would find it), with how the channel is expected to
    /// deliver it.
    async fn peer_writes(&self, text: &str) -> Written;

    /// The owner writes `text` to the peer from another client (a phone; another mail program
    /// that files it in Sent). Called only when the channel declares `outgoing_capture`.
    /// Returns once the provider holds it.
    async fn owner_writes_elsewhere(&self, text: &str) -> Written;

    /// Every copy of the account's messages the peer holds now, one entry per copy (two
    /// deliveries of one email are two entries).
    async fn peer_copies(&self) -> Vec<PeerCopy>;

    /// A message with `text` to the peer, as the engine prepares it, with a fresh client key
    /// of the provider's form (see [`Provider::client_key`](crate::provider::Provider::client_key)).
    fn prepared_send(&self, text: &str) -> PreparedSend;

    /// What the provider promises when a send is repeated with the same key.
    fn send_dedup(&self) -> SendDedup;

    /// The thread to ask history for so that the page covers the peer's messages `written`.
    /// By default their thread key when they share one, else the whole account (`None`).
    fn history_thread(&self, written: &[Written]) -> Option<String> {
        let first = written.first()?;
        written.iter().all(|w| w.thread_key == first.thread_key).then(|| first.thread_key.clone())
    }

    /// How long a message may take to arrive, or a send to be answered (default 20 s).
    fn patience(&self) -> Duration {
        Duration::from_secs(20)
    }
}

// ----- helpers -----

/// A text no other case or run writes.
fn unique(label: &str) -> String {
    format!("{label} {}", uuid::Uuid::new_v4().simple())
}

/// Text compared as a person reads it (mail adds a line break).
fn same_text(message: Option<&str>, text: &str) -> bool {
    message.is_some_and(|m| m.trim() == text.trim())
}

/// A run of the channel in its own task.
struct Running {
    cancel: CancellationToken,
    task: JoinHandle<Result<(), ChannelError>>,
}

impl Running {
    fn start(channel: Arc<dyn Channel>, inbound: &Arc<RecordingInbound>) -> Self {
        Self::start_with(channel, inbound, CancellationToken::new())
    }

    fn start_with(
        channel: Arc<dyn Channel>,
        inbound: &Arc<RecordingInbound>,
        cancel: CancellationToken,
    ) -> Self {
        let sink: Arc<dyn crate::Inbound> = inbound.clone();
        let token = cancel.clone();
        let task = tokio::spawn(async move { channel.run(sink, token).await });
        Self { cancel, task }
    }

    /// Cancels the run and asserts that it returns `Ok` within [`STOP_WITHIN`].
    async fn stop(self, when: &str) {
        self.cancel.cancel();
        let started = tokio::time::Instant::now();
        let ended = tokio::time::timeout(STOP_WITHIN, self.task).await.unwrap_or_else(|_| {
            panic!("`run` did not return within {STOP_WITHIN:?} of its cancellation {when}")
        });
        let result = ended.unwrap_or_else(|e| panic!("`run` panicked {when}: {e}"));
        assert_eq!(result, Ok(()), "`run` cancelled {when} returns Ok");
        tracing::debug!(elapsed = ?started.elapsed(), when, "run stopped");
    }
}

/// Waits until the sink holds `written`, panicking after the harness's patience.
async fn expect_stored(
    harness: &(impl ChannelUnderTest + ?Sized),
    inbound: &RecordingInbound,
    id: &str,
    what: &str,
) -> InboundMessage {
    inbound
        .expect_within(&format!("{what} (provider id {id})"), harness.patience(), |s| {
            s.stored(id).is_some()
        })
        .await;
    inbound.stored(id).map(|r| r.message).unwrap_or_else(|| panic!("{what} was stored"))
}

/// Once the run listens, the peer writes a first message and the channel delivers it: the account now
/// knows the peer (Telegram needs the peer's access hash to send), and the run is live.
async fn hear_from_peer(
    harness: &(impl ChannelUnderTest + ?Sized),
    inbound: &RecordingInbound,
) -> Written {
    harness.until_listening(inbound).await;
    let written = harness.peer_writes(&unique("hello from the peer")).await;
    expect_stored(harness, inbound, &written.provider_id, "the peer's first message").await;
    written
}

/// Sends under the harness's patience.
async fn send(
    harness: &(impl ChannelUnderTest + ?Sized),
    channel: &dyn Channel,
    message: &PreparedSend,
    what: &str,
) -> SendReceipt {
    match tokio::time::timeout(harness.patience(), channel.send(message)).await {
        Ok(Ok(receipt)) => receipt,
        Ok(Err(e)) => panic!("{what} failed: {e:?}"),
        Err(_) => panic!("{what} was not answered within {:?}", harness.patience()),
    }
}

// ----- the cases -----

/// **Delivery.** A message the peer writes arrives through [`Channel::run`] into the sink:
/// under the provider id and thread key the harness names, with its text, inbound, from the
/// peer's address, delivered once. Then `run` stops cleanly on cancellation.
pub async fn delivery(harness: &(impl ChannelUnderTest + ?Sized)) -> Verdict {
    let inbound = Arc::new(harness.new_inbound());
    let run = Running::start(harness.channel(), &inbound);
    harness.until_listening(&inbound).await;
    let text = unique("delivered");
    let written = harness.peer_writes(&text).await;
    let m = expect_stored(harness, &inbound, &written.provider_id, "the peer's message").await;
    run.stop("after a delivery").await;

    assert!(same_text(m.text.as_deref(), &text), "its text: {:?}, wrote {text:?}", m.text);
    assert_eq!(m.direction, Direction::Inbound, "the peer's message is inbound");
    assert_eq!(m.remote.address, written.remote, "the sender's identity");
    assert!(!m.thread_key.is_empty(), "a thread key");
    assert_eq!(m.thread_key, written.thread_key, "the thread key");
    assert_eq!(m.client_key, None, "the peer's message carries no key of ours");
    assert_eq!(inbound.duplicates(), 0, "delivered once");
    Verdict::Held
}

/// **Cursor resumption.** Run, receive m1, cancel; the peer writes m2 while nothing runs;
/// run again (on [`ChannelUnderTest::restarted`]) with the same sink, which holds the
/// account state the first run left (its cursor): m2 arrives, then m3 written while the
/// second run is live, and m1 is never delivered again (no duplicate delivery at all).
pub async fn cursor_resumption(harness: &(impl ChannelUnderTest + ?Sized)) -> Verdict {
    let inbound = Arc::new(harness.new_inbound());
    let first = Running::start(harness.channel(), &inbound);
    harness.until_listening(&inbound).await;
    let m1 = harness.peer_writes(&unique("m1 before the stop")).await;
    expect_stored(harness, &inbound, &m1.provider_id, "m1").await;
    first.stop("after m1").await;

    let m2 = harness.peer_writes(&unique("m2 while stopped")).await;
    let second = Running::start(harness.restarted(), &inbound);
    expect_stored(harness, &inbound, &m2.provider_id, "m2, written while the channel was stopped")
        .await;
    // m3 arrives after the catch-up: a copy of m1 fetched again would have come before it.
    let m3 = harness.peer_writes(&unique("m3 after the restart")).await;
    expect_stored(harness, &inbound, &m3.provider_id, "m3, written after the restart").await;
    second.stop("after the catch-up").await;

    let ids: Vec<String> = inbound.messages().into_iter().map(|m| m.provider_id).collect();
    assert_eq!(ids, [m1.provider_id, m2.provider_id, m3.provider_id], "each once, in order");
    assert_eq!(inbound.duplicates(), 0, "nothing delivered again after the restart");
    assert_eq!(inbound.deliveries(), 3, "three deliveries in all");
    Verdict::Held
}

/// **Echo matching** (needs `outgoing_capture`). The engine stores a send once because the
/// copy of it the channel sees again (the Sent folder, Telegram's own outgoing update) is
/// recognised: it is delivered **outbound**, under **the receipt's provider id** (a
/// duplicate once the send is recorded, else merged with it), and carries **our client key
/// or none** (a key of ours marks it as the echo of that pending send; any other key would
/// mismatch). Its text is the one sent, and it is one message (one provider id). A message
/// the owner writes from another client is delivered outbound too, under another id and
/// without our key, so the engine stores it as the owner's own message.
pub async fn echo_matching(harness: &(impl ChannelUnderTest + ?Sized)) -> Verdict {
    let channel = harness.channel();
    if !channel.capabilities().outgoing_capture {
        return Verdict::Skipped { capability: "outgoing_capture" };
    }
    let inbound = Arc::new(harness.new_inbound());
    let run = Running::start(Arc::clone(&channel), &inbound);
    hear_from_peer(harness, &inbound).await;

    let text = unique("sent by the service");
    let message = harness.prepared_send(&text);
    let receipt = send(harness, &*channel, &message, "the send").await;
    assert!(!receipt.provider_id.is_empty(), "the receipt names the sent message");
    let echo = expect_stored(harness, &inbound, &receipt.provider_id, "the copy of our send").await;
    assert_eq!(echo.direction, Direction::Outbound, "the copy of our send is outbound");
    assert!(
        echo.client_key.as_deref().is_none_or(|k| k == message.client_key),
        "the copy carries our client key {:?} or none, not {:?}",
        message.client_key,
        echo.client_key
    );
    assert!(same_text(echo.text.as_deref(), &text), "its text: {:?}", echo.text);

    let other = unique("typed on another client");
    let written = harness.owner_writes_elsewhere(&other).await;
    let theirs =
        expect_stored(harness, &inbound, &written.provider_id, "the owner's other-client message")
            .await;
    run.stop("after the echoes").await;

    assert_eq!(theirs.direction, Direction::Outbound, "the owner's message is outbound");
    assert_ne!(theirs.provider_id, receipt.provider_id, "another message, another id");
    assert_ne!(theirs.client_key.as_deref(), Some(message.client_key.as_str()), "not ours");
    assert_eq!(theirs.remote.address, written.remote, "addressed to the peer");
    assert!(same_text(theirs.text.as_deref(), &other), "its text: {:?}", theirs.text);
    // The other-client message came after our copy: a second copy under another id would
    // have come before it.
    let copies: Vec<String> = inbound
        .messages()
        .into_iter()
        .filter(|m| same_text(m.text.as_deref(), &text))
        .map(|m| m.provider_id)
        .collect();
    assert_eq!(copies, [receipt.provider_id], "our send is seen under one id");
    Verdict::Held
}

/// **Send idempotency.** The same [`PreparedSend`] (same client key) sent twice, as the
/// engine retries after a lost answer: both sends are accepted under the same provider id,
/// and the recipient holds one message: one copy ([`SendDedup::OneCopy`]), or copies that all
/// carry the receipt's id ([`SendDedup::SameId`]), as the provider promises.
pub async fn send_idempotency(harness: &(impl ChannelUnderTest + ?Sized)) -> Verdict {
    let channel = harness.channel();
    let inbound = Arc::new(harness.new_inbound());
    let run = Running::start(Arc::clone(&channel), &inbound);
    hear_from_peer(harness, &inbound).await;

    let text = unique("sent twice");
    let message = harness.prepared_send(&text);
    let first = send(harness, &*channel, &message, "the first send").await;
    let second = send(harness, &*channel, &message, "the same send again").await;
    assert_eq!(first.provider_id, second.provider_id, "one provider id for both sends");

    let ours = |copies: Vec<PeerCopy>| -> Vec<PeerCopy> {
        copies.into_iter().filter(|c| same_text(c.text.as_deref(), &text)).collect()
    };
    let dedup = harness.send_dedup();
    let wanted = match dedup {
        SendDedup::OneCopy => 1,
        SendDedup::SameId => 2,
    };
    let deadline = tokio::time::Instant::now() + harness.patience();
    let copies = loop {
        let copies = ours(harness.peer_copies().await);
        if copies.len() >= wanted || tokio::time::Instant::now() >= deadline {
            break copies;
        }
        // Polling the peer's mailbox: the copies are on their way through the provider.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    run.stop("after the sends").await;

    match dedup {
        SendDedup::OneCopy => {
            assert_eq!(copies.len(), 1, "the provider deduplicated the second send: {copies:?}");
        }
        SendDedup::SameId => {
            assert!(!copies.is_empty(), "no copy reached the peer within {:?}", harness.patience());
            let ids: HashSet<&str> = copies.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(
                ids,
                HashSet::from([first.provider_id.as_str()]),
                "every copy carries the receipt's id: {copies:?}"
            );
        }
    }
    Verdict::Held
}

/// **History limits** (needs `history`). The peer writes five messages; a page of
/// `limit: 3` holds exactly the newest three of them (in any order), none carrying a
/// cursor (history moves none); a `limit` above [`HistoryRequest::MAX_LIMIT`] is not refused
/// but read as [`HistoryRequest::page_size`] says (at most `MAX_LIMIT`: here all five), and
/// `limit: 0` means [`HistoryRequest::DEFAULT_LIMIT`] (here all five).
pub async fn history_limits(harness: &(impl ChannelUnderTest + ?Sized)) -> Verdict {
    let channel = harness.channel();
    if !channel.capabilities().history {
        return Verdict::Skipped { capability: "history" };
    }
    let inbound = Arc::new(harness.new_inbound());
    let run = Running::start(Arc::clone(&channel), &inbound);
    harness.until_listening(&inbound).await;
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(harness.peer_writes(&unique(&format!("history {i}"))).await);
    }
    for w in &written {
        expect_stored(harness, &inbound, &w.provider_id, "a message of the history").await;
    }
    let thread_key = harness.history_thread(&written);
    let fetch = |limit: usize| {
        let request =
            HistoryRequest { thread_key: thread_key.clone(), limit, ..Default::default() };
        let channel = Arc::clone(&channel);
        async move {
            match tokio::time::timeout(harness.patience(), channel.fetch_history(&request)).await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => panic!("fetch_history(limit {limit}) failed: {e:?}"),
                Err(_) => panic!("fetch_history(limit {limit}) took over {:?}", harness.patience()),
            }
        }
    };
    let ids = |page: &[InboundMessage]| -> Vec<String> {
        page.iter().map(|m| m.provider_id.clone()).collect()
    };
    let all: HashSet<String> = written.iter().map(|w| w.provider_id.clone()).collect();

    let page = fetch(3).await;
    let got: HashSet<String> = ids(&page).into_iter().collect();
    let newest: HashSet<String> = written[2..].iter().map(|w| w.provider_id.clone()).collect();
    assert_eq!(page.len(), 3, "a page of 3: {:?}", ids(&page));
    assert_eq!(got, newest, "the newest three");
    assert!(page.iter().all(|m| m.cursor.is_none()), "history moves no cursor");

    for (limit, what) in [
        (HistoryRequest::MAX_LIMIT * 20, "a limit above MAX_LIMIT"),
        (HistoryRequest::MAX_LIMIT + 1, "MAX_LIMIT + 1"),
        (0, "limit 0 (the default page)"),
    ] {
        let page = fetch(limit).await;
        let request = HistoryRequest { limit, ..Default::default() };
        assert!(page.len() <= request.page_size(), "{what}: {} messages", page.len());
        let got: HashSet<String> = ids(&page).into_iter().collect();
        assert!(all.is_subset(&got), "{what}: every message of five, got {:?}", ids(&page));
    }
    run.stop("after the history").await;
    Verdict::Held
}

/// **Cancellation.** `run` returns `Ok` within [`STOP_WITHIN`] of its token's cancellation:
/// with a token cancelled before the run starts, cancelled while it connects (at once after
/// the start), and cancelled while it waits for messages after a delivery.
pub async fn cancellation(harness: &(impl ChannelUnderTest + ?Sized)) -> Verdict {
    let inbound = Arc::new(harness.new_inbound());
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    Running::start_with(harness.channel(), &inbound, cancelled).stop("before it started").await;

    Running::start(harness.channel(), &inbound).stop("while connecting").await;

    let run = Running::start(harness.channel(), &inbound);
    hear_from_peer(harness, &inbound).await;
    run.stop("while waiting for messages").await;
    Verdict::Held
}
