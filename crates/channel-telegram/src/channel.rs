//! [`TelegramChannel`]: receive, send and history for one Telegram account.

use std::future::Future;
use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use channel_core::{
    Backoff, Capabilities, Channel, ChannelError, ChannelKind, ConnectionState, HistoryRequest,
    Inbound, InboundMessage, PreparedSend, SendReceipt, Timestamp,
};
use futures::FutureExt;
use grammers_client::Client;
use grammers_mtsender::{
    ConnectionParams, InvocationError, RetryContext, RetryPolicy, SenderPool, SenderPoolHandle,
    UpdatesConfiguration,
};
use grammers_session::Session;
use grammers_session::types::{PeerAuth, PeerId, PeerKind, PeerRef};
use grammers_tl_types as tl;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::address;
use crate::changes;
use crate::config::TelegramConfig;
use crate::echoes::Echoes;
use crate::error::classify;
use crate::mapping::{self, NameTable};
use crate::media;
use crate::outbox::{self, Outbox};
use crate::session::AccountSession;

/// Retries an I/O error once, at once, on a new connection (safe for sends: the body, and so
/// the `random_id`, is the same), and never sleeps on a flood wait: that goes to the engine
/// as [`ChannelError::RateLimited`].
pub(crate) struct RetryIoOnce;

impl RetryPolicy for RetryIoOnce {
    fn should_retry(&self, ctx: &RetryContext) -> ControlFlow<(), Duration> {
        match ctx.error {
            InvocationError::Io(_) if ctx.fail_count.get() <= 1 => {
                ControlFlow::Continue(Duration::from_millis(100))
            }
            _ => ControlFlow::Break(()),
        }
    }
}

/// What a live connection offers to `send` and `fetch_history`.
#[derive(Clone)]
struct Live {
    client: Client,
    session: Arc<AccountSession>,
}

/// Why one connection ended.
enum Exit {
    /// Cancelled: stop.
    Cancelled,
    /// Reconnect after a backoff (stall, lost connection, a failed delivery).
    Reconnect(String),
    /// Give up and tell the supervisor.
    Fatal(ChannelError),
}

/// Stops the sender pool of one connection when dropped: `quit` for a clean stop, and an
/// abort, because a runner stuck connecting to a blackholed address never reads `quit`.
pub(crate) struct PoolGuard {
    pub(crate) handle: SenderPoolHandle,
    pub(crate) runner: JoinHandle<()>,
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        self.handle.quit();
        self.runner.abort();
    }
}

/// At most this many updates are taken from grammers at once.
const MAX_GROUP: usize = 10_000;

type PingFuture = Pin<Box<dyn Future<Output = Result<(), ChannelError>> + Send>>;

/// A Telegram account as a [`Channel`].
///
/// [`Channel::run`] loads the session from the account state (see [`crate::session`]),
/// connects, catches up from the stored update state, and delivers new messages (incoming,
/// and outgoing ones sent from the owner's other apps) with the update state as their cursor.
/// A ping every 30 s with a 10 s deadline detects stalls; the connection is then rebuilt and
/// caught up. [`Channel::send`] uses `messages.sendMessage` (or `messages.sendMedia` after an
/// upload, for an attachment read from [`TelegramChannel::with_blobs`]) with a `random_id`
/// derived from the message's `client_key`, so a retry never sends twice.
///
/// ```no_run
/// use std::sync::Arc;
/// use channel_core::Channel;
/// use channel_telegram::{TelegramChannel, TelegramConfig};
///
/// # async fn demo(inbound: Arc<dyn channel_core::Inbound>) -> Result<(), channel_core::ChannelError> {
/// let channel = TelegramChannel::new(TelegramConfig::new(12345));
/// let cancel = tokio_util::sync::CancellationToken::new();
/// // Normally the engine runs it under its supervisor.
/// channel.run(inbound, cancel).await?;
/// # Ok(()) }
/// ```
pub struct TelegramChannel {
    config: TelegramConfig,
    blobs: Option<Arc<channel_core::BlobStore>>,
    live: Mutex<Option<Live>>,
    reporter: Mutex<Option<Arc<dyn Inbound>>>,
    echoes: Echoes,
    outbox: Outbox,
}

impl TelegramChannel {
    /// A channel with this configuration. It connects when run.
    pub fn new(config: TelegramConfig) -> Self {
        Self {
            config,
            blobs: None,
            live: Mutex::new(None),
            reporter: Mutex::new(None),
            echoes: Echoes::default(),
            outbox: Outbox::default(),
        }
    }

    /// Where the bytes of outgoing attachments are read from (the engine's blob store).
    /// Without it, a send with an attachment is refused as permanent.
    pub fn with_blobs(mut self, blobs: Arc<channel_core::BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// Whether a connection is up (sends can go out).
    pub fn is_connected(&self) -> bool {
        self.live_slot().is_some()
    }

    fn live_slot(&self) -> Option<Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_live(&self, live: Option<Live>) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = live;
    }

    fn live(&self) -> Result<Live, ChannelError> {
        self.live_slot().ok_or_else(|| ChannelError::transient("not connected".to_owned()))
    }

    async fn report_needs_login(&self, reason: &str) {
        let reporter = self.reporter.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(r) = reporter {
            r.report_state(ConnectionState::NeedsLogin { reason: reason.to_owned() }).await;
        }
    }

    /// Classifies an error of a call, reporting needs-login when the session is gone.
    async fn fail(&self, e: &InvocationError) -> ChannelError {
        let err = classify(e);
        if let ChannelError::NeedsLogin(reason) = &err {
            self.report_needs_login(&reason.report()).await;
            self.set_live(None);
        }
        err
    }

    /// The peer's reference (id and access hash) from the peer cache; when it is not there,
    /// looked up at Telegram — by `username` (what the store knows of the identity), then in
    /// the account's dialogs — and cached and stored. A failed look-up (network, timeout) is
    /// retryable; only a peer that none of them knows is [`ChannelError::Permanent`].
    async fn resolve(
        &self,
        live: &Live,
        peer: PeerId,
        username: Option<&str>,
    ) -> Result<PeerRef, ChannelError> {
        if let Some(found) = self.cached_ref(live, peer).await? {
            return Ok(found);
        }
        // Basic groups need no access hash.
        if peer.kind() == PeerKind::Chat {
            return Ok(PeerRef { id: peer, auth: PeerAuth::default() });
        }
        let limit = self.config.resolve_timeout;
        let looked_up = tokio::time::timeout(limit, self.look_up(live, peer, username))
            .await
            .map_err(|_| ChannelError::Timeout {
                operation: "telegram.look_up_peer".to_owned(),
                after: limit,
            })?;
        looked_up?;
        live.session.persist_learned_peers().await?;
        match self.cached_ref(live, peer).await? {
            Some(found) => Ok(found),
            None => Err(ChannelError::permanent(format!(
                "unknown Telegram peer {}: not in the session's peer cache, {}not among the                  account's dialogs; it must write first, or be named by its username",
                address::dialog_id(peer),
                match username {
                    Some(u) => format!("username @{u} names someone else or no one, "),
                    None => String::new(),
                }
            ))),
        }
    }

    async fn cached_ref(&self, live: &Live, peer: PeerId) -> Result<Option<PeerRef>, ChannelError> {
        if !live.session.knows_peer(peer) {
            return Ok(None);
        }
        live.session.peer_ref(peer).await.map_err(|e| ChannelError::transient(e.to_string()))
    }

    /// Asks Telegram for `peer`: `contacts.resolveUsername` when a username is known, then
    /// `messages.getDialogs` (at most 5 pages of 100). What the answers name is cached.
    async fn look_up(
        &self,
        live: &Live,
        peer: PeerId,
        username: Option<&str>,
    ) -> Result<(), ChannelError> {
        let session = &live.session;
        if let Some(username) =
            username.map(|u| u.trim_start_matches('@')).filter(|u| !u.is_empty())
        {
            let call = tl::functions::contacts::ResolveUsername {
                username: username.to_owned(),
                referer: None,
            };
            match live.client.invoke(&call).await {
                Ok(tl::enums::contacts::ResolvedPeer::Peer(r)) => {
                    session.learn(&r.users, &r.chats);
                    if session.knows_peer(peer) {
                        return Ok(());
                    }
                }
                // Not (or no longer) that username: the dialogs may still know the peer.
                Err(InvocationError::Rpc(rpc)) if (400..500).contains(&rpc.code) => {
                    tracing::info!(error = %rpc.name, "Telegram username look-up failed");
                }
                Err(e) => return Err(self.fail(&e).await),
            }
        }
        let mut offset_date = 0;
        let mut offset_id = 0;
        let mut offset_peer = tl::enums::InputPeer::Empty;
        for _ in 0..5 {
            let call = tl::functions::messages::GetDialogs {
                exclude_pinned: false,
                folder_id: None,
                offset_date,
                offset_id,
                offset_peer: offset_peer.clone(),
                limit: 100,
                hash: 0,
            };
            let (dialogs, messages, users, chats, complete) = match live.client.invoke(&call).await
            {
                Ok(tl::enums::messages::Dialogs::Dialogs(d)) => {
                    (d.dialogs, d.messages, d.users, d.chats, true)
                }
                Ok(tl::enums::messages::Dialogs::Slice(d)) => {
                    let got = d.dialogs.len();
                    (d.dialogs, d.messages, d.users, d.chats, got < 100)
                }
                Ok(tl::enums::messages::Dialogs::NotModified(_)) => return Ok(()),
                Err(e) => return Err(self.fail(&e).await),
            };
            session.learn(&users, &chats);
            if session.knows_peer(peer) || complete {
                return Ok(());
            }
            // The next page starts after the last dialog of this one.
            let Some(tl::enums::Dialog::Dialog(last)) = dialogs.last() else { return Ok(()) };
            let Some(last_peer) = mapping::peer_id(&last.peer) else { return Ok(()) };
            let Some(last_ref) = session
                .peer_ref(last_peer)
                .await
                .map_err(|e| ChannelError::transient(e.to_string()))?
            else {
                return Ok(());
            };
            offset_id = last.top_message;
            offset_date = messages
                .iter()
                .find_map(|m| match m {
                    tl::enums::Message::Message(m)
                        if m.id == last.top_message
                            && mapping::peer_id(&m.peer_id) == Some(last_peer) =>
                    {
                        Some(m.date)
                    }
                    _ => None,
                })
                .unwrap_or(0);
            offset_peer = last_ref.into();
        }
        Ok(())
    }

    /// Replays the edits and deletions of every channel in the committed update state from
    /// its committed pts (see [`changes`]). A channel no longer in the peer cache, or one
    /// Telegram refuses (left, banned), is skipped; a passing failure fails the connect.
    async fn replay_channel_changes(
        &self,
        inbound: &Arc<dyn Inbound>,
        live: &Live,
    ) -> Result<(), ChannelError> {
        for c in live.session.committed_updates().channels {
            let Some(peer) = PeerId::channel(c.id) else { continue };
            let replay = async {
                let peer_ref = self.resolve(live, peer, None).await?;
                let input = tl::enums::InputChannel::from(&peer_ref);
                let timeout = self.config.send_timeout;
                changes::replay_channel(&live.client, inbound.as_ref(), input, c.pts, timeout).await
            };
            match replay.await {
                Ok(()) => {}
                // Not in the peer cache, left, banned, or gone: nothing to replay; others go on.
                Err(ChannelError::Permanent(e)) => {
                    tracing::warn!(error = %e, "cannot replay a channel's edits and deletions");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn connect_and_receive(
        &self,
        inbound: &Arc<dyn Inbound>,
        cancel: &CancellationToken,
        connected: &mut bool,
    ) -> Exit {
        let session = match AccountSession::load(Arc::clone(inbound)).await {
            Ok(s) => {
                s.pin_data_centres(&self.config.data_centres, self.config.home_dc);
                Arc::new(s)
            }
            Err(e) => return Exit::Fatal(e.into()),
        };
        if let Err(e) = self.outbox.load(inbound.as_ref()).await {
            return Exit::Reconnect(format!("sends in flight: {e}"));
        }
        if session.me().is_none() {
            return Exit::Fatal(ChannelError::needs_login(
                "the login was not completed".to_owned(),
            ));
        }
        let params = ConnectionParams {
            retry_policy: Box::new(RetryIoOnce),
            updates_channel_capacity: NonZeroUsize::new(self.config.updates_capacity)
                .unwrap_or(NonZeroUsize::MIN),
            ..Default::default()
        };
        let pool = SenderPool::with_configuration(Arc::clone(&session), self.config.api_id, params);
        let client = Client::new(pool.handle.clone());
        let mut guard =
            PoolGuard { handle: pool.handle.thin.clone(), runner: tokio::spawn(pool.runner.run()) };
        let live = Live { client: client.clone(), session: Arc::clone(&session) };
        let connection = live.clone();

        // First contact: connect and initConnection under the connect limit.
        match ping(&client, self.config.connect_timeout).await {
            Ok(()) => {}
            Err(ChannelError::NeedsLogin(r)) => return Exit::Fatal(ChannelError::NeedsLogin(r)),
            Err(e) => return Exit::Reconnect(format!("connect: {e}")),
        }
        self.set_live(Some(live));
        *connected = true;
        inbound.report_state(ConnectionState::Connected).await;

        // Before grammers' own catch-up: the edits and deletions in channels while away,
        // which grammers drops (see `changes`).
        match self.replay_channel_changes(inbound, &connection).await {
            Ok(()) => {}
            Err(ChannelError::NeedsLogin(r)) => return Exit::Fatal(ChannelError::NeedsLogin(r)),
            Err(e) => return Exit::Reconnect(format!("channel changes: {e}")),
        }

        let mut stream = match client
            .stream_updates(pool.updates, UpdatesConfiguration { catch_up: true })
            .await
        {
            Ok(s) => s,
            Err(e) => return Exit::Reconnect(format!("updates: {e}")),
        };

        let mut ping_timer = tokio::time::interval(self.config.ping_interval);
        ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping_timer.reset();
        let mut sync_timer = tokio::time::interval(self.config.sync_interval);
        sync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sync_timer.reset();
        let mut ping_in_flight: Option<PingFuture> = None;
        // Whether the last read took everything grammers held (see `reconcile_gap`).
        let mut drained = true;

        loop {
            inbound.alive();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let _ = session.save_updates_if_changed().await;
                    let _ = session.save_peers_if_changed().await;
                    return Exit::Cancelled;
                }
                ended = &mut guard.runner => {
                    return match ended {
                        Err(e) if e.is_panic() => Exit::Fatal(ChannelError::transient(
                            "grammers' sender pool panicked".to_owned(),
                        )),
                        _ => Exit::Reconnect("grammers' sender pool stopped".to_owned()),
                    };
                }
                result = ping_in_flight.as_mut().map_or_else(
                    || futures::future::Either::Left(futures::future::pending()),
                    futures::future::Either::Right,
                ) => {
                    ping_in_flight = None;
                    match result {
                        Ok(()) => {}
                        Err(ChannelError::NeedsLogin(r)) => {
                            return Exit::Fatal(ChannelError::NeedsLogin(r));
                        }
                        Err(e) => return Exit::Reconnect(format!("stalled: {e}")),
                    }
                }
                _ = ping_timer.tick() => {
                    if ping_in_flight.is_none() {
                        let client = client.clone();
                        let deadline = self.config.ping_deadline;
                        ping_in_flight = Some(Box::pin(async move { ping(&client, deadline).await }));
                    }
                }
                _ = sync_timer.tick() => {
                    // grammers' state is only comparable with ours when its buffers are empty.
                    let gap_check = if drained {
                        self.reconcile_gap(inbound, &connection, &stream).await
                    } else {
                        Ok(())
                    };
                    if let Err(e) = gap_check {
                        return match e {
                            ChannelError::NeedsLogin(r) => Exit::Fatal(ChannelError::NeedsLogin(r)),
                            e => Exit::Reconnect(format!("reconciliation failed: {e}")),
                        };
                    }
                    if let Err(e) = session.save_updates_if_changed().await {
                        tracing::warn!(error = %e, "could not store the Telegram update state");
                    }
                    if let Err(e) = session.save_peers_if_changed().await {
                        tracing::warn!(error = %e, "could not store the Telegram peer cache");
                    }
                }
                next = AssertUnwindSafe(stream.next_raw()).catch_unwind() => {
                    let next = match next {
                        Ok(n) => n,
                        Err(_) => return Exit::Fatal(ChannelError::transient(
                            "grammers panicked while reading updates".to_owned(),
                        )),
                    };
                    match next {
                        Ok(first) => {
                            // Everything grammers already holds (the rest of a difference)
                            // goes as one group, so that a difference's final state is only
                            // committed with its last message.
                            let mut group = vec![first];
                            while group.len() < MAX_GROUP {
                                match AssertUnwindSafe(stream.next_raw()).catch_unwind().now_or_never() {
                                    Some(Ok(Ok(item))) => group.push(item),
                                    Some(Err(_)) => return Exit::Fatal(ChannelError::transient(
                                        "grammers panicked while reading updates".to_owned(),
                                    )),
                                    // Nothing more at once; an error shows again on the next read.
                                    _ => break,
                                }
                            }
                            drained = group.len() < MAX_GROUP;
                            if let Err(e) = self.on_group(inbound, &connection, group).await {
                                return Exit::Reconnect(format!("delivery failed: {e}"));
                            }
                        }
                        Err(e) => match classify(&e) {
                            ChannelError::NeedsLogin(r) => return Exit::Fatal(ChannelError::NeedsLogin(r)),
                            _ if matches!(e, InvocationError::Dropped(_)) => {
                                return Exit::Reconnect(format!("updates: {e}"));
                            }
                            // A failed getDifference or similar: grammers keeps its state and
                            // tries again; the loop goes on.
                            _ => tracing::warn!(error = %e, "Telegram update error"),
                        },
                    }
                }
            }
        }
    }

    /// Delivers a group of updates in order. An update whose state a later one of the group
    /// shares (the messages of one difference all carry its final state) goes without a
    /// cursor: the state is committed with the last of them, so a failed delivery in the
    /// middle resumes before the whole difference.
    async fn on_group(
        &self,
        inbound: &Arc<dyn Inbound>,
        live: &Live,
        group: Vec<(
            tl::enums::Update,
            grammers_session::updates::State,
            grammers_client::peer::PeerMap,
        )>,
    ) -> Result<(), ChannelError> {
        let mut later = std::collections::BTreeSet::new();
        let mut defer = vec![false; group.len()];
        for (i, (_, state, _)) in group.iter().enumerate().rev() {
            if let Some(b) = state.message_box {
                defer[i] = !later.insert(b);
            }
        }
        for ((update, state, peers), defer) in group.into_iter().zip(defer) {
            inbound.alive();
            self.on_update(inbound, live, update, &state, &peers, defer).await?;
        }
        Ok(())
    }

    /// After a `differenceTooLong` (or anything else that makes grammers skip updates), its
    /// state runs ahead of what was delivered: fetch the recently active chats from their
    /// last delivered message with `messages.getHistory`, deliver what is new, and only then
    /// move the cursor past the gap. A failure leaves the cursor where it was, so the next
    /// connection finds the same gap again.
    async fn reconcile_gap(
        &self,
        inbound: &Arc<dyn Inbound>,
        live: &Live,
        stream: &grammers_client::client::UpdateStream,
    ) -> Result<(), ChannelError> {
        if let Err(e) = stream.sync_update_state().await {
            tracing::warn!(error = %e, "could not read grammers' update state");
            return Ok(());
        }
        let Some(gap) = live.session.gap() else {
            return Ok(());
        };
        tracing::warn!(
            common = gap.common,
            channels = gap.channels.len(),
            "Telegram skipped updates; reconciling recently active chats"
        );
        for (dialog, last_id) in live.session.recent_chats() {
            let Some(peer) = PeerId::from_bot_api_dialog_id(dialog) else {
                continue;
            };
            let affected = match peer.kind() {
                PeerKind::Channel => peer.bare_id().is_some_and(|id| gap.channels.contains(&id)),
                _ => gap.common,
            };
            if !affected {
                continue;
            }
            let peer_ref = match self.resolve(live, peer, None).await {
                Ok(r) => r,
                Err(ChannelError::Permanent(e)) => {
                    tracing::warn!(error = %e, "cannot reconcile a chat");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut missed =
                self.history_raw(live, peer_ref, 0, last_id, HistoryRequest::MAX_LIMIT).await?;
            missed.reverse();
            live.session.persist_learned_peers().await?;
            for (message, raw) in missed {
                inbound.alive();
                let message = self.with_media(inbound, &live.client, &raw, message).await?;
                if let Some(id) = address::message_id(&message.provider_id) {
                    live.session.note_message(dialog, id);
                }
                let key = message.client_key.clone();
                inbound.deliver(message).await?;
                self.echo_delivered(inbound.as_ref(), key.as_deref()).await;
            }
        }
        live.session.close_gap(&gap);
        live.session.save_updates_if_changed().await?;
        Ok(())
    }

    /// Up to `limit` messages of a chat, newest first, older than `offset_id` (0: from the
    /// newest) and newer than `min_id`, deduplicated; our own sends carry their client key.
    async fn history(
        &self,
        live: &Live,
        peer_ref: PeerRef,
        offset_id: i32,
        min_id: i32,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, ChannelError> {
        Ok(self
            .history_raw(live, peer_ref, offset_id, min_id, limit)
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .collect())
    }

    /// Like `history`, with each message's raw form (for its media).
    async fn history_raw(
        &self,
        live: &Live,
        peer_ref: PeerRef,
        mut offset_id: i32,
        min_id: i32,
        limit: usize,
    ) -> Result<Vec<(InboundMessage, tl::enums::Message)>, ChannelError> {
        let mut out: Vec<(InboundMessage, tl::enums::Message)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while out.len() < limit {
            let page = (limit - out.len()).min(100);
            let call = tl::functions::messages::GetHistory {
                peer: peer_ref.into(),
                offset_id,
                offset_date: 0,
                add_offset: 0,
                limit: i32::try_from(page).unwrap_or(100),
                max_id: 0,
                min_id,
                hash: 0,
            };
            let t = self.config.send_timeout;
            let answer = match tokio::time::timeout(t, live.client.invoke(&call)).await {
                Err(_) => {
                    return Err(ChannelError::Timeout {
                        operation: "telegram.get_history".to_owned(),
                        after: t,
                    });
                }
                Ok(Err(e)) => return Err(self.fail(&e).await),
                Ok(Ok(a)) => a,
            };
            let (messages, users, chats) = match answer {
                tl::enums::messages::Messages::Messages(m) => (m.messages, m.users, m.chats),
                tl::enums::messages::Messages::Slice(m) => (m.messages, m.users, m.chats),
                tl::enums::messages::Messages::ChannelMessages(m) => (m.messages, m.users, m.chats),
                tl::enums::messages::Messages::NotModified(_) => break,
            };
            let names = NameTable::from_tl(&users, &chats);
            live.session.learn(&users, &chats);
            let got = messages.len();
            let mut lowest = offset_id;
            for m in &messages {
                let id = match m {
                    tl::enums::Message::Message(raw) => raw.id,
                    _ => 0,
                };
                if id != 0 && (lowest == 0 || id < lowest) {
                    lowest = id;
                }
                if let Some(mapped) = self.map_message(m, &names)
                    && seen.insert(mapped.provider_id.clone())
                    && out.len() < limit
                {
                    out.push((mapped, m.clone()));
                }
            }
            if got < page || lowest == offset_id {
                break;
            }
            offset_id = lowest;
        }
        Ok(out)
    }

    /// Telegram answered `RANDOM_ID_DUPLICATE`: an earlier attempt of this message went
    /// through (its answer was lost). Find it — by the `updateMessageID` seen for its
    /// `random_id`, or among the chat's latest messages (ours, same text and reply, not
    /// claimed by another send) — and answer with its receipt. Not found yet: transient, so
    /// the engine asks again later instead of failing a message that was sent.
    async fn already_sent(
        &self,
        live: &Live,
        peer: PeerId,
        peer_ref: PeerRef,
        message: &PreparedSend,
        random_id: i64,
    ) -> Result<SendReceipt, ChannelError> {
        let known = self.echoes.sent_id(random_id);
        let recent = self.history(live, peer_ref, 0, 0, 50).await?;
        let found = recent.iter().find(|m| {
            let id = address::message_id(&m.provider_id);
            match known {
                Some(k) => id == Some(k),
                None => {
                    m.direction == channel_core::Direction::Outbound
                        && m.text.as_deref() == message.text.as_deref()
                        && m.reply_to == message.reply_to
                        && m.client_key.as_deref().is_none_or(|k| k == message.client_key)
                }
            }
        });
        let (id, at) = match (found, known) {
            (Some(m), _) => (address::message_id(&m.provider_id).unwrap_or(0), m.sent_at),
            (None, Some(id)) => (id, Timestamp::now()),
            (None, None) => {
                return Err(ChannelError::transient(
                    "RANDOM_ID_DUPLICATE: the message was sent but is not visible yet".to_owned(),
                ));
            }
        };
        self.echoes.message_id(random_id, id);
        Ok(SendReceipt { provider_id: address::provider_id(peer, id), at })
    }

    /// Downloads the photo or document of `raw` into `mapped` under the size-scaled media
    /// limit. Not for the echo of our own send (the engine has its bytes). A file over the
    /// download limit, or one Telegram refuses (a 4xx), goes without its bytes, with a
    /// warning; a timeout or a passing failure fails the delivery, so the message is fetched
    /// again.
    async fn with_media(
        &self,
        inbound: &Arc<dyn Inbound>,
        client: &Client,
        raw: &tl::enums::Message,
        mut mapped: InboundMessage,
    ) -> Result<InboundMessage, ChannelError> {
        let tl::enums::Message::Message(m) = raw else {
            return Ok(mapped);
        };
        if mapped.client_key.is_some() {
            return Ok(mapped);
        }
        let Some(file) = m.media.as_ref().and_then(media::Incoming::from_raw) else {
            return Ok(mapped);
        };
        if file.size > self.config.max_download_size {
            tracing::warn!(
                size = file.size,
                provider_id = %mapped.provider_id,
                "Telegram attachment over the download limit: delivered without its bytes"
            );
            return Ok(mapped);
        }
        let limit = self.config.media_timeout_for(file.size);
        // Each part tells the watchdog the loop is alive: a large file takes longer than its
        // silence limit.
        match tokio::time::timeout(limit, file.download(client, || inbound.alive())).await {
            Err(_) => Err(ChannelError::Timeout {
                operation: "telegram.download_media".to_owned(),
                after: limit,
            }),
            Ok(Ok(data)) => {
                mapped.attachments.push(channel_core::AttachmentData {
                    name: file.name,
                    mime_type: file.mime_type,
                    data: data.into(),
                });
                Ok(mapped)
            }
            Ok(Err(InvocationError::Rpc(rpc))) if (400..500).contains(&rpc.code) => {
                tracing::warn!(
                    error = %rpc.name,
                    provider_id = %mapped.provider_id,
                    "Telegram refused an attachment: delivered without its bytes"
                );
                Ok(mapped)
            }
            Ok(Err(e)) => Err(classify(&e)),
        }
    }

    /// The client key of `message` when it is the echo of one of our sends: known by its
    /// `updateMessageID` in this process.
    fn echo_key(&self, message: &tl::enums::Message) -> Option<String> {
        let (chat, id) = mapping::message_key(message)?;
        self.echoes.client_key(address::dialog_id(chat), id)
    }

    /// Maps a message; an outgoing one is the echo of our send when its `updateMessageID`
    /// was seen, or when it matches a send an earlier process left in flight (see
    /// [`outbox`]).
    fn map_message(
        &self,
        message: &tl::enums::Message,
        names: &dyn mapping::Names,
    ) -> Option<InboundMessage> {
        let mut mapped = mapping::inbound_message(message, names, self.echo_key(message))?;
        if mapped.direction == channel_core::Direction::Outbound
            && mapped.client_key.is_none()
            && let Some((chat, id)) = mapping::message_key(message)
        {
            let digest = outbox::digest(mapped.text.as_deref(), mapped.reply_to.as_deref());
            let date = mapped.sent_at.as_millis() / 1000;
            mapped.client_key =
                self.outbox.orphan_echo(address::dialog_id(chat), id, &digest, date);
            if mapped.client_key.is_some() {
                tracing::info!(
                    provider_id = %mapped.provider_id,
                    "the echo of a send left in flight by an earlier process"
                );
            }
        }
        Some(mapped)
    }

    /// After the echo of our send (`client_key`) was delivered: its send is no longer in
    /// flight. A failure to write that is only logged (the entry expires).
    async fn echo_delivered(&self, inbound: &dyn Inbound, client_key: Option<&str>) {
        if let Some(key) = client_key
            && let Err(e) = self.outbox.done(inbound, key).await
        {
            tracing::warn!(error = %e, "could not update the Telegram sends in flight");
        }
    }

    async fn on_update(
        &self,
        inbound: &Arc<dyn Inbound>,
        live: &Live,
        update: tl::enums::Update,
        state: &grammers_session::updates::State,
        peers: &grammers_client::peer::PeerMap,
        defer: bool,
    ) -> Result<(), ChannelError> {
        // Edits and deletions are applied before the update state that covers them can be
        // saved; applying one again after a restart changes nothing.
        changes::apply(inbound.as_ref(), &update).await?;
        let message = match &update {
            tl::enums::Update::MessageId(u) => {
                self.echoes.message_id(u.random_id, u.id);
                None
            }
            tl::enums::Update::NewMessage(u) => Some(&u.message),
            tl::enums::Update::NewChannelMessage(u) => Some(&u.message),
            _ => None,
        };
        let mapped = message.and_then(|m| self.map_message(m, peers));
        let mapped = match (mapped, message) {
            (Some(mapped), Some(raw)) => {
                Some(self.with_media(inbound, &live.client, raw, mapped).await?)
            }
            (mapped, _) => mapped,
        };
        let session = &live.session;
        session.store_initial_updates().await?;
        if let Some(message) = &mapped
            && let Some(chat) = address::parse_peer(&message.thread_key)
            && let Some(id) = address::message_id(&message.provider_id)
        {
            session.note_message(address::dialog_id(chat), id);
        }
        // What a reply needs (the peers this update taught) is stored before the message
        // that will be answered.
        session.persist_learned_peers().await?;
        let cursor = (!defer).then(|| session.advance(state));
        if let Some(mut message) = mapped {
            message.cursor = cursor.clone();
            let key = message.client_key.clone();
            inbound.deliver(message).await?;
            if cursor.is_some() {
                session.updates_committed();
            }
            self.echo_delivered(inbound.as_ref(), key.as_deref()).await;
        }
        Ok(())
    }
}

async fn ping(client: &Client, deadline: Duration) -> Result<(), ChannelError> {
    let ping_id: i64 = rand::random();
    match tokio::time::timeout(deadline, client.invoke(&tl::functions::Ping { ping_id })).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => {
            Err(ChannelError::Timeout { operation: "telegram.ping".to_owned(), after: deadline })
        }
    }
}

/// Telegram's answer to a `random_id` it has seen: the message was sent before.
fn is_random_id_duplicate(e: &InvocationError) -> bool {
    matches!(e, InvocationError::Rpc(rpc) if rpc.name == "RANDOM_ID_DUPLICATE")
}

/// The id and date of our message in the answer to `messages.sendMessage`.
fn sent_message(updates: &tl::enums::Updates, random_id: i64) -> Option<(i32, i32)> {
    let from_list = |list: &[tl::enums::Update], date: i32| {
        let by_random = list.iter().find_map(|u| match u {
            tl::enums::Update::MessageId(m) if m.random_id == random_id => Some(m.id),
            _ => None,
        });
        let new = list.iter().find_map(|u| match u {
            tl::enums::Update::NewMessage(tl::types::UpdateNewMessage {
                message: tl::enums::Message::Message(m),
                ..
            })
            | tl::enums::Update::NewChannelMessage(tl::types::UpdateNewChannelMessage {
                message: tl::enums::Message::Message(m),
                ..
            }) if m.out && by_random.is_none_or(|id| id == m.id) => Some((m.id, m.date)),
            _ => None,
        });
        new.or(by_random.map(|id| (id, date)))
    };
    match updates {
        tl::enums::Updates::UpdateShortSentMessage(s) => Some((s.id, s.date)),
        tl::enums::Updates::Updates(u) => from_list(&u.updates, u.date),
        tl::enums::Updates::Combined(u) => from_list(&u.updates, u.date),
        tl::enums::Updates::UpdateShort(u) => from_list(std::slice::from_ref(&u.update), u.date),
        _ => None,
    }
}

#[async_trait]
impl Channel for TelegramChannel {
    fn kind(&self) -> ChannelKind {
        crate::KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn run(
        &self,
        inbound: Arc<dyn Inbound>,
        cancel: CancellationToken,
    ) -> Result<(), ChannelError> {
        *self.reporter.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&inbound));
        let backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        let mut failures = 0;
        loop {
            inbound.report_state(ConnectionState::Connecting).await;
            let mut connected = false;
            let exit = self.connect_and_receive(&inbound, &cancel, &mut connected).await;
            self.set_live(None);
            match exit {
                Exit::Cancelled => return Ok(()),
                Exit::Fatal(e) => {
                    let state = match &e {
                        ChannelError::NeedsLogin(r) => {
                            ConnectionState::NeedsLogin { reason: r.report() }
                        }
                        ChannelError::Permanent(r) => {
                            ConnectionState::Failed { reason: r.report() }
                        }
                        other => ConnectionState::TransientDisconnect { reason: other.to_string() },
                    };
                    inbound.report_state(state).await;
                    return Err(e);
                }
                Exit::Reconnect(reason) => {
                    tracing::info!(%reason, "Telegram connection lost; reconnecting");
                    inbound.report_state(ConnectionState::TransientDisconnect { reason }).await;
                    if connected {
                        failures = 0;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff.delay(failures).max(backoff.initial())) => {}
                    }
                    failures += 1;
                }
            }
        }
    }

    async fn send(&self, message: &PreparedSend) -> Result<SendReceipt, ChannelError> {
        let attachment = match message.attachments.as_slice() {
            [] => None,
            [one] => Some(one),
            _ => {
                return Err(ChannelError::InvalidInput(
                    "a Telegram message carries at most one attachment".to_owned(),
                ));
            }
        };
        let text = message.text.as_deref().filter(|t| !t.trim().is_empty());
        match (attachment, text) {
            (None, None) => {
                return Err(ChannelError::InvalidInput("a Telegram message needs text".to_owned()));
            }
            (None, Some(t)) if t.chars().count() > 4096 => {
                return Err(ChannelError::InvalidInput(
                    "text longer than 4096 characters".to_owned(),
                ));
            }
            (Some(_), Some(t)) if t.chars().count() > media::CAPTION_MAX => {
                return Err(ChannelError::InvalidInput(format!(
                    "a caption longer than {} characters",
                    media::CAPTION_MAX
                )));
            }
            _ => {}
        }
        if let Some(a) = attachment {
            media::check(a, self.config.max_upload_size)?;
        }
        let peer = address::parse_peer(&message.thread_key)
            .or_else(|| address::parse_peer(&message.remote.address))
            .ok_or_else(|| {
                ChannelError::InvalidInput(format!("not a Telegram chat: {}", message.thread_key))
            })?;
        let reply_to = match message.reply_to.as_deref() {
            Some(id) => Some(address::message_id(id).ok_or_else(|| {
                ChannelError::InvalidInput(format!("not a Telegram message id: {id}"))
            })?),
            None => None,
        };
        let live = self.live()?;
        let username = match peer.kind() {
            PeerKind::User => message.remote.username.as_deref(),
            _ => None,
        };
        let peer_ref = self.resolve(&live, peer, username).await?;
        let random_id = address::random_id(&message.client_key);
        // Recorded before it goes out: the echo is still ours after a crash (see `outbox`).
        let state = live.session.state();
        self.outbox
            .record(
                state.as_ref(),
                random_id,
                &message.client_key,
                address::dialog_id(peer),
                outbox::digest(text, message.reply_to.as_deref()),
                Timestamp::now().as_millis() / 1000,
            )
            .await?;
        self.echoes.sending(random_id, &message.client_key, address::dialog_id(peer));
        let reply_to = reply_to.map(|id| {
            tl::types::InputReplyToMessage {
                reply_to_msg_id: id,
                top_msg_id: None,
                reply_to_peer_id: None,
                quote_text: None,
                quote_entities: None,
                quote_offset: None,
                monoforum_peer_id: None,
                todo_item_id: None,
                poll_option: None,
            }
            .into()
        });
        let answer = match attachment {
            None => {
                let request = tl::functions::messages::SendMessage {
                    no_webpage: false,
                    silent: false,
                    background: false,
                    clear_draft: false,
                    noforwards: false,
                    update_stickersets_order: false,
                    invert_media: false,
                    allow_paid_floodskip: false,
                    peer: peer_ref.into(),
                    reply_to,
                    message: text.unwrap_or_default().to_owned(),
                    random_id,
                    reply_markup: None,
                    entities: None,
                    schedule_date: None,
                    schedule_repeat_period: None,
                    send_as: None,
                    quick_reply_shortcut: None,
                    effect: None,
                    allow_paid_stars: None,
                    suggested_post: None,
                    rich_message: None,
                };
                let limit = self.config.send_timeout;
                tokio::time::timeout(limit, live.client.invoke(&request)).await.map_err(|_| {
                    ChannelError::Timeout {
                        operation: "telegram.send_message".to_owned(),
                        after: limit,
                    }
                })?
            }
            Some(a) => {
                // Read, upload and send under one limit scaled by the size.
                let blobs = self.blobs.clone().ok_or_else(|| {
                    ChannelError::permanent(
                        "attachments need a blob store (TelegramChannel::with_blobs)".to_owned(),
                    )
                })?;
                let limit = self.config.media_timeout_for(a.size);
                let upload_and_send = async {
                    let data = media::read(&blobs, a).await.map_err(Ok::<_, InvocationError>)?;
                    let media =
                        media::upload(&live.client, random_id, a, &data).await.map_err(Err)?;
                    let request = tl::functions::messages::SendMedia {
                        silent: false,
                        background: false,
                        clear_draft: false,
                        noforwards: false,
                        update_stickersets_order: false,
                        invert_media: false,
                        allow_paid_floodskip: false,
                        peer: peer_ref.into(),
                        reply_to,
                        media,
                        message: text.unwrap_or_default().to_owned(),
                        random_id,
                        reply_markup: None,
                        entities: None,
                        schedule_date: None,
                        schedule_repeat_period: None,
                        send_as: None,
                        quick_reply_shortcut: None,
                        effect: None,
                        allow_paid_stars: None,
                        suggested_post: None,
                    };
                    live.client.invoke(&request).await.map_err(Err)
                };
                match tokio::time::timeout(limit, upload_and_send).await {
                    Err(_) => {
                        return Err(ChannelError::Timeout {
                            operation: "telegram.send_media".to_owned(),
                            after: limit,
                        });
                    }
                    Ok(Err(Ok(read_failed))) => return Err(read_failed),
                    Ok(Err(Err(e))) => Err(e),
                    Ok(Ok(u)) => Ok(u),
                }
            }
        };
        let updates = match answer {
            Err(e) if is_random_id_duplicate(&e) => {
                return self.already_sent(&live, peer, peer_ref, message, random_id).await;
            }
            Err(e) => {
                let err = self.fail(&e).await;
                if matches!(err, ChannelError::Permanent(_)) {
                    // Refused: nothing went out, nothing will echo.
                    self.echo_delivered(state.as_ref(), Some(&message.client_key)).await;
                }
                return Err(err);
            }
            Ok(u) => u,
        };
        let (id, date) = sent_message(&updates, random_id).ok_or_else(|| {
            ChannelError::transient("Telegram's answer did not name the sent message".to_owned())
        })?;
        self.echoes.message_id(random_id, id);
        Ok(SendReceipt {
            provider_id: address::provider_id(peer, id),
            at: Timestamp::from_unix_seconds(i64::from(date)),
        })
    }

    async fn fetch_history(
        &self,
        request: &HistoryRequest,
    ) -> Result<Vec<InboundMessage>, ChannelError> {
        let key = request.thread_key.as_deref().ok_or_else(|| {
            ChannelError::InvalidInput("Telegram history is fetched per chat".to_owned())
        })?;
        let peer = address::parse_peer(key)
            .ok_or_else(|| ChannelError::InvalidInput(format!("not a Telegram chat: {key}")))?;
        let msg_id = |id: &Option<String>| -> Result<i32, ChannelError> {
            match id.as_deref() {
                None => Ok(0),
                Some(id) => address::message_id(id).ok_or_else(|| {
                    ChannelError::InvalidInput(format!("not a Telegram message id: {id}"))
                }),
            }
        };
        let offset_id = msg_id(&request.before)?;
        let min_id = msg_id(&request.after)?;
        let limit = request.page_size();
        let live = self.live()?;
        let peer_ref = self.resolve(&live, peer, None).await?;
        let found = self.history(&live, peer_ref, offset_id, min_id, limit).await?;
        // The engine stores what is returned: what a reply needs goes first.
        live.session.persist_learned_peers().await?;
        Ok(found)
    }
}
