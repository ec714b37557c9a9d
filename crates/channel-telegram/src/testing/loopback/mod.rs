//! A loopback MTProto server: the real wire protocol, a scripted Telegram behind it.
//!
//! A grammers client whose session holds a DC option pointing at `127.0.0.1:PORT` with the
//! server's preset auth key skips the RSA/DH key exchange and speaks the MTProto 2.0 encrypted
//! layer directly (the `Full` transport, AES-IGE with keys from `msg_key`). The server answers
//! `invokeWithLayer(initConnection(help.getConfig))`, `updates.getState`,
//! `updates.getDifference`, `updates.getChannelDifference`, `messages.sendMessage` and
//! `messages.sendMedia` (deduplicated on `random_id`), `messages.getHistory`,
//! `messages.getDialogs`, `contacts.resolveUsername`, `users.getUsers` and pings from a small in-memory account (the *world*: users, basic
//! groups, supergroups and broadcast channels with their own `pts`), pushes updates, and lets
//! a test script replies, rpc errors and faults.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use channel_telegram::testing::loopback::{LoopbackServer, Reply};
//! use grammers_tl_types::{functions, Identifiable};
//!
//! let server = LoopbackServer::start().await?;
//! let alice = server.add_user(2001, "Alice", Some("alice"));
//! // The next send answers FLOOD_WAIT_7; later ones are answered by the world.
//! server.reply_once(functions::messages::SendMessage::CONSTRUCTOR_ID, Reply::flood_wait(7));
//! server.incoming(alice.id, "hello"); // stored and pushed to connected clients
//!
//! // A supergroup: its messages carry their author and advance the channel's own pts.
//! let team = server.add_channel(5001, "Team", true);
//! server.channel_message(team.id, Some(alice.id), "hello team");
//! # Ok(()) }
//! ```

mod connection;
mod srp;
pub use srp::TEST_PASSWORD;
mod tl_build;
mod wire;
mod world;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use grammers_session::SessionData;
use grammers_session::types::{DcOption, PeerId, PeerInfo};
use grammers_tl_types as tl;
use tl::{Identifiable, Serializable};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use connection::{Connection, Outgoing};
use world::World;
pub use world::{TestChannel, TestPeer, TestUser, WorldMedia, WorldMessage};

/// How the loopback server answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Let the world answer (the default for anything without a rule).
    Default,
    /// This serialized result (see [`Reply::ok`]).
    Result(Vec<u8>),
    /// An `rpc_error`.
    RpcError {
        /// The error code (420 for flood waits, 401 for authorization errors).
        code: i32,
        /// The message, such as `FLOOD_WAIT_7`.
        message: String,
    },
    /// Swallow the request: it is never answered.
    NoReply,
    /// Close the connection instead of answering.
    DropConnection,
    /// Let the world process the request (a send is stored), then close the connection
    /// before the answer goes out: the client cannot know whether it worked.
    ProcessThenDrop,
    /// Let the world process the request (a send is stored), then never answer it: the
    /// client waits, as when Telegram accepted a message and the answer is still on its way.
    ProcessThenHold,
    /// Answer with the inner reply after a delay.
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    /// A result value.
    pub fn ok<T: Serializable>(value: &T) -> Self {
        Reply::Result(value.to_bytes())
    }

    /// An `rpc_error`.
    pub fn rpc_error(code: i32, message: impl Into<String>) -> Self {
        Reply::RpcError { code, message: message.into() }
    }

    /// `420 FLOOD_WAIT_<seconds>`.
    pub fn flood_wait(seconds: u32) -> Self {
        Reply::rpc_error(420, format!("FLOOD_WAIT_{seconds}"))
    }

    /// `401 AUTH_KEY_UNREGISTERED`.
    pub fn auth_key_unregistered() -> Self {
        Reply::rpc_error(401, "AUTH_KEY_UNREGISTERED")
    }
}

/// A fault the whole server shows, on existing and new connections.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Normal operation.
    #[default]
    None,
    /// Accept and read everything, answer nothing (pings included), push nothing.
    Blackhole,
    /// Stop reading and writing, keep the sockets open: a peer that vanished.
    HalfOpen,
    /// Answer everything after this delay.
    Delay(Duration),
    /// Accept connections and close them at once.
    RefuseConnections,
}

/// A request the server received, after `invokeWithLayer`/`initConnection` were stripped.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The constructor id of the query.
    pub constructor_id: u32,
    /// Its TL name, such as `messages.sendMessage`.
    pub name: &'static str,
    /// The serialized query, constructor id included.
    pub body: Vec<u8>,
    /// The client's message id.
    pub msg_id: i64,
    /// Which connection it came on (counted from 1).
    pub connection: u64,
    /// The api_id of the `initConnection` that wrapped it, if any.
    pub api_id: Option<i32>,
}

impl RecordedRequest {
    /// Decodes the query as `T` (a `grammers_tl_types::functions` type).
    pub fn decode<T: tl::Deserializable>(&self) -> Option<T> {
        T::from_bytes(self.body.get(4..)?).ok()
    }
}

type Handler = Arc<dyn Fn(&RecordedRequest) -> Option<Reply> + Send + Sync>;

struct Rule {
    constructor_id: Option<u32>,
    remaining: Option<usize>,
    handler: Handler,
}

/// [`LoopbackServer::provision_auth_key`] for a server in another process (the
/// `loopback-server` program): stores the auth key `auth_key` of data centre `dc_id` in an
/// account's state, not logged in, as Telegram's key exchange would at a login's first
/// connection.
pub async fn provision_auth_key(
    state: &channel_core::state::AccountState,
    dc_id: i32,
    auth_key: [u8; 256],
) -> Result<(), channel_core::state::StateError> {
    let unreachable = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    let session = crate::session::StoredSession {
        version: 1,
        home_dc: dc_id,
        dcs: vec![crate::session::StoredDc {
            id: dc_id,
            ipv4: unreachable,
            ipv6: SocketAddrV6::new(unreachable.ip().to_ipv6_mapped(), 0, 0, 0),
            auth_key: Some(hex::encode(auth_key)),
        }],
        me: None,
    };
    state.put(crate::session::SESSION_KEY, &session.to_bytes()).await
}

/// One connection the server accepted: who connected, when, and when it closed. A process
/// running the server can tell from these that an account was never connected from two
/// clients at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// The connection's number on this server (from 1).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// When it was accepted.
    pub opened: std::time::SystemTime,
    /// When it closed (`None`: open).
    pub closed: Option<std::time::SystemTime>,
}

/// Called with each [`SessionRecord`] when its connection is accepted (before the server
/// reads from it, so the client is still connected) and again when it closes.
pub type SessionObserver = Arc<dyn Fn(&SessionRecord) + Send + Sync>;

struct ConnHandle {
    id: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
    cancel: CancellationToken,
}

pub(crate) struct Shared {
    auth_key: [u8; 256],
    dc_id: i32,
    port: u16,
    world: Mutex<World>,
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<RecordedRequest>>,
    request_seen: Notify,
    connections: Mutex<Vec<ConnHandle>>,
    accepted: AtomicUsize,
    gzip_over: Option<usize>,
    sessions: Mutex<Vec<SessionRecord>>,
    observer: Mutex<Option<SessionObserver>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a test thread must not wedge the server: keep using the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn reply_for(&self, request: &RecordedRequest) -> Reply {
        let mut rules = lock(&self.rules);
        for i in 0..rules.len() {
            let rule = &mut rules[i];
            if rule.constructor_id.is_some_and(|c| c != request.constructor_id) {
                continue;
            }
            if let Some(reply) = (rule.handler)(request) {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                    if *n == 0 {
                        rules.remove(i);
                    }
                }
                return reply;
            }
        }
        Reply::Default
    }

    fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
        self.request_seen.notify_waiters();
    }

    fn world_answer(&self, request: &RecordedRequest) -> Result<Vec<u8>, (i32, String)> {
        if request.constructor_id == tl::functions::help::GetConfig::CONSTRUCTOR_ID {
            return Ok(tl_build::config(world::now(), self.dc_id, self.port).to_bytes());
        }
        lock(&self.world).answer(request.constructor_id, &request.body)
    }

    fn maybe_gzip(&self, result: Vec<u8>) -> Vec<u8> {
        match self.gzip_over {
            Some(limit) if result.len() > limit => wire::gzip(&result),
            _ => result,
        }
    }

    fn forget_connection(&self, id: u64) {
        lock(&self.connections).retain(|c| c.id != id);
        let closed = {
            let mut sessions = lock(&self.sessions);
            let Some(record) = sessions.iter_mut().find(|r| r.id == id) else { return };
            record.closed = Some(std::time::SystemTime::now());
            record.clone()
        };
        self.observe(&closed);
    }

    fn observe(&self, record: &SessionRecord) {
        let observer = lock(&self.observer).clone();
        if let Some(observer) = observer {
            observer(record);
        }
    }
}

/// The loopback server. Dropping it stops it and closes its connections.
pub struct LoopbackServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    shutdown: CancellationToken,
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl LoopbackServer {
    /// Starts a server on a free port of 127.0.0.1 with a random auth key.
    pub async fn start() -> std::io::Result<Self> {
        let mut key = [0u8; 256];
        for chunk in key.chunks_mut(32) {
            let r: [u8; 32] = rand::random();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        Self::start_with_key(key).await
    }

    /// Starts a server with this auth key (to restart "the same" server for a client).
    pub async fn start_with_key(auth_key: [u8; 256]) -> std::io::Result<Self> {
        Self::bind(auth_key, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a server on `addr` (port 0: a free one) with this auth key: for a server run
    /// as a process of its own, which listens where it is told and, started again, keeps the
    /// key its clients hold.
    pub async fn start_at(addr: SocketAddr, auth_key: [u8; 256]) -> std::io::Result<Self> {
        Self::bind(auth_key, addr).await
    }

    async fn bind(auth_key: [u8; 256], addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            auth_key,
            dc_id: world::DC_ID,
            port: addr.port(),
            world: Mutex::new(World::new()),
            rules: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            request_seen: Notify::new(),
            connections: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            gzip_over: Some(4096),
            sessions: Mutex::new(Vec::new()),
            observer: Mutex::new(None),
        });
        let (fault, fault_rx) = watch::channel(Fault::None);
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), fault_rx, shutdown.clone()));
        Ok(Self { shared, addr, fault, shutdown })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The auth key a client must hold.
    pub fn auth_key(&self) -> [u8; 256] {
        self.shared.auth_key
    }

    /// The DC id it claims to be.
    pub fn dc_id(&self) -> i32 {
        self.shared.dc_id
    }

    /// The DC option a grammers session needs to reach this server with its key.
    pub fn dc_option(&self) -> DcOption {
        let ipv4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.addr.port());
        DcOption {
            id: self.shared.dc_id,
            ipv4,
            ipv6: SocketAddrV6::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), self.addr.port(), 0, 0),
            auth_key: Some(self.shared.auth_key),
        }
    }

    /// The self user as a session caches it (so that grammers starts catching up).
    pub fn self_peer_info(&self) -> PeerInfo {
        let me = self.me();
        PeerInfo::User {
            id: me.id,
            auth: Some(grammers_session::types::PeerAuth::from_hash(me.access_hash)),
            bot: Some(false),
            is_self: Some(true),
        }
    }

    /// Session data for a plain grammers client: this server as its home DC, the preset
    /// auth key, and the self user cached (under its id and [`PeerId::self_user`]).
    pub fn session_data(&self) -> SessionData {
        let mut data = SessionData { home_dc: self.shared.dc_id, ..Default::default() };
        data.dc_options.insert(self.shared.dc_id, self.dc_option());
        let me = self.self_peer_info();
        data.peer_infos.insert(PeerId::self_user(), me.clone());
        data.peer_infos.insert(me.id(), me);
        data
    }

    /// The session to store in an account's state ([`crate::session::SESSION_KEY`]) so that
    /// a [`TelegramChannel`](crate::TelegramChannel) connects to this server as the owner.
    pub fn stored_session(&self) -> crate::session::StoredSession {
        crate::session::StoredSession::from_session_data(&self.session_data())
    }

    /// The stored session of an account whose key exists but is not logged in yet: what
    /// a [`TelegramLogin`](crate::login::TelegramLogin) starts from against this server
    /// (against Telegram, a login starts from an empty account state and creates its key).
    pub fn logged_out_session(&self) -> crate::session::StoredSession {
        crate::session::StoredSession { me: None, ..self.stored_session() }
    }

    /// This server as a data centre of an account's configuration: its id and address,
    /// for `data_centres` in [`TelegramAccountConfig`](crate::TelegramAccountConfig).
    pub fn data_centre(&self) -> (i32, SocketAddrV4) {
        (self.shared.dc_id, SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.addr.port()))
    }

    /// Stores this server's auth key in an account's state, not logged in: what Telegram's
    /// key exchange makes at the first connection of a login. The loopback server cannot run
    /// that exchange (the client checks Telegram's own RSA keys), so a test hands the key
    /// over this way. The stored address is a placeholder: the account's configuration must
    /// give this server's address ([`LoopbackServer::data_centre`]), as for any data centre.
    pub async fn provision_auth_key(
        &self,
        state: &channel_core::state::AccountState,
    ) -> Result<(), channel_core::state::StateError> {
        provision_auth_key(state, self.shared.dc_id, self.shared.auth_key).await
    }

    // ----- logins -----

    /// Makes the auth key logged out: requests other than the login methods get
    /// `401 AUTH_KEY_UNREGISTERED` until a login succeeds.
    pub fn require_login(&self) {
        lock(&self.shared.world).auth.authorized = false;
    }

    /// Whether the auth key is logged in (false after `auth.logOut`).
    pub fn is_authorized(&self) -> bool {
        lock(&self.shared.world).auth.authorized
    }

    /// Lets `phone` log in as the owner with `code`, and with a 2FA `password` when given.
    /// The password is checked with SRP as Telegram does (`account.getPassword` hands out
    /// salts, `p`, `g` and `g_b`; `auth.checkPassword` verifies the client's `A` and `M1`); its
    /// hint is "the usual".
    pub fn add_phone_login(&self, phone: &str, code: &str, password: Option<&str>) {
        // The verifier costs a PBKDF2 with 100 000 rounds: outside the lock.
        let verifier = password.map(|p| srp::Verifier::new(p, Some("the usual".to_owned())));
        lock(&self.shared.world).add_phone_login(phone, code, verifier);
    }

    /// Lets a bot log in with `token` (`auth.importBotAuthorization`) as the user `id`.
    pub fn add_bot_token(&self, token: &str, id: i64, name: &str) -> TestUser {
        let user = TestUser {
            id,
            access_hash: id.wrapping_mul(31) ^ 0x0b07,
            first_name: name.to_owned(),
            username: Some(format!("{}_bot", name.to_lowercase())),
        };
        lock(&self.shared.world).add_bot_token(token, user.clone());
        user
    }

    /// The owner scans the QR code of the last token handed out (`auth.exportLoginToken`):
    /// the next `auth.exportLoginToken` answers the login (or `SESSION_PASSWORD_NEEDED` when a
    /// phone login of the owner has a 2FA password). False when no token was handed out.
    pub fn accept_qr_login(&self) -> bool {
        let mut world = lock(&self.shared.world);
        if world.auth.qr_tokens == 0 {
            return false;
        }
        world.auth.qr_accepted = true;
        true
    }

    /// The app credentials logins must carry (`API_ID_INVALID` otherwise); any by default.
    pub fn set_api_credentials(&self, api_id: i32, api_hash: &str) {
        lock(&self.shared.world).auth.api = Some((api_id, api_hash.to_owned()));
    }

    // ----- the world -----

    /// The account owner.
    pub fn me(&self) -> TestUser {
        lock(&self.shared.world).me.clone()
    }

    /// Adds a user that can write to the owner.
    pub fn add_user(&self, id: i64, first_name: &str, username: Option<&str>) -> TestUser {
        lock(&self.shared.world).add_user(id, first_name, username)
    }

    /// Adds a basic group.
    pub fn add_chat(&self, id: i64, title: &str) {
        lock(&self.shared.world).add_chat(id, title);
    }

    /// A user by id.
    pub fn user(&self, id: i64) -> Option<TestUser> {
        lock(&self.shared.world).user(id).cloned()
    }

    /// Adds a channel the owner is a member of: a supergroup when `megagroup`, else a
    /// broadcast channel (where the owner may not write: sends answer
    /// `403 CHAT_WRITE_FORBIDDEN`). Its `pts` starts at 1 and its message ids at 1; requests
    /// naming it must carry its [`TestChannel::access_hash`] (`400 CHANNEL_INVALID` else).
    pub fn add_channel(&self, id: i64, title: &str, megagroup: bool) -> TestChannel {
        lock(&self.shared.world).add_channel(id, title, megagroup, None)
    }

    /// Like [`LoopbackServer::add_channel`], with a public username.
    pub fn add_public_channel(
        &self,
        id: i64,
        title: &str,
        megagroup: bool,
        username: &str,
    ) -> TestChannel {
        lock(&self.shared.world).add_channel(id, title, megagroup, Some(username))
    }

    /// A channel by id.
    pub fn channel(&self, id: i64) -> Option<TestChannel> {
        lock(&self.shared.world).channel(id).cloned()
    }

    /// A channel's current `pts`.
    pub fn channel_pts(&self, id: i64) -> Option<i32> {
        lock(&self.shared.world).channel_pts(id)
    }

    /// Every message the world holds, oldest first.
    pub fn messages(&self) -> Vec<WorldMessage> {
        lock(&self.shared.world).messages()
    }

    /// The world's current `pts`.
    pub fn pts(&self) -> i32 {
        lock(&self.shared.world).pts()
    }

    /// Makes `getDifference` answer `differenceTooLong` when a client is further behind.
    pub fn set_too_long_after(&self, pts_gap: Option<i32>) {
        lock(&self.shared.world).too_long_after = pts_gap;
    }

    /// Makes `getChannelDifference` answer `channelDifferenceTooLong` (the channel's dialog
    /// with its latest message and pts, no new messages) when a client is further behind
    /// than `pts_gap` in that channel.
    pub fn set_channel_too_long_after(&self, pts_gap: Option<i32>) {
        lock(&self.shared.world).channel_too_long_after = pts_gap;
    }

    /// Notes that the owner joined supergroup or channel `channel` on another client while
    /// this one was away; returns the channel's pts then (`None` for an unknown channel).
    /// Like Telegram, `getDifference` then announces it with `updateChannelTooLong` carrying
    /// that pts, to clients whose state is not newer than the account's pts now: the client
    /// fetches the channel's messages since with `getChannelDifference`. A difference is only
    /// non-empty once the account's pts moved on (a private message, say).
    pub fn join_channel_elsewhere(&self, channel: i64) -> Option<i32> {
        lock(&self.shared.world).join_channel_elsewhere(channel)
    }

    /// Makes a send with a `random_id` already seen answer `500 RANDOM_ID_DUPLICATE` (as
    /// Telegram may) instead of the message sent before (the default).
    pub fn answer_duplicate_sends_with_error(&self, on: bool) {
        lock(&self.shared.world).duplicate_is_error = on;
    }

    /// Answers the next sends (`messages.sendMessage`) to the user `to` with `replies`, one
    /// each, in order (such as a server error, then a permanent refusal); sends to others, and
    /// to `to` after that, go as usual.
    pub fn fail_sends_to(&self, to: i64, replies: Vec<Reply>) {
        let left = Mutex::new(std::collections::VecDeque::from(replies));
        self.on(Some(tl::functions::messages::SendMessage::CONSTRUCTOR_ID), move |request| {
            let send = request.decode::<tl::functions::messages::SendMessage>()?;
            match send.peer {
                tl::enums::InputPeer::User(u) if u.user_id == to => lock(&left).pop_front(),
                _ => None,
            }
        });
    }

    /// A private message from `from` to the owner: stored and pushed as `updates` with users.
    pub fn incoming(&self, from: i64, text: &str) -> WorldMessage {
        self.store_and_push(TestPeer::User(from), Some(from), text, Push::Full)
    }

    /// Like [`LoopbackServer::incoming`] but pushed as `updateShortMessage`.
    pub fn incoming_short(&self, from: i64, text: &str) -> WorldMessage {
        self.store_and_push(TestPeer::User(from), Some(from), text, Push::Short)
    }

    /// A private message stored without a push: clients learn of it by catching up.
    pub fn incoming_silently(&self, from: i64, text: &str) -> WorldMessage {
        self.store_and_push(TestPeer::User(from), Some(from), text, Push::None)
    }

    /// A private message from `from` with a file (a document, or a photo for image types),
    /// stored and pushed; clients download it with `upload.getFile`.
    pub fn incoming_file(
        &self,
        from: i64,
        caption: &str,
        name: &str,
        mime_type: &str,
        data: Vec<u8>,
    ) -> WorldMessage {
        let (msg, updates) = {
            let mut world = lock(&self.shared.world);
            let mut msg = world.store_known(TestPeer::User(from), Some(from), caption);
            msg.media = Some(WorldMedia {
                photo: mime_type.starts_with("image/"),
                name: name.to_owned(),
                mime_type: Some(mime_type.to_owned()),
                data,
            });
            world.set_media(msg.peer, msg.id, msg.media.clone());
            let updates = world.updates_for(&msg, None);
            (msg, updates)
        };
        self.push(&updates);
        msg
    }

    /// A message the owner sent to `to` from another app (pushed as an outgoing update).
    pub fn outgoing_from_other_app(&self, to: i64, text: &str) -> WorldMessage {
        let me = self.me().id;
        self.store_and_push(TestPeer::User(to), Some(me), text, Push::Full)
    }

    /// A message from `from` in the basic group `chat`.
    pub fn group_message(&self, chat: i64, from: i64, text: &str) -> WorldMessage {
        self.store_and_push(TestPeer::Chat(chat), Some(from), text, Push::Full)
    }

    /// A message in `channel` (see [`LoopbackServer::add_channel`]): from the user `from`
    /// in a supergroup (the owner's id for one the owner sent from another app), or with
    /// `None` a post signed by the channel. Stored with the channel's next message id and
    /// `pts`, and pushed as `updates{updateNewChannelMessage(pts, pts_count = 1)}` with the
    /// channel in `chats` and the author in `users`.
    ///
    /// # Panics
    ///
    /// When the channel was not added (a mistake in the test).
    pub fn channel_message(&self, channel: i64, from: Option<i64>, text: &str) -> WorldMessage {
        self.store_and_push(TestPeer::Channel(channel), from, text, Push::Full)
    }

    /// Like [`LoopbackServer::channel_message`] without a push: clients learn of it with
    /// `updates.getChannelDifference` (on a restart, or a gap in the channel's pts).
    ///
    /// # Panics
    ///
    /// When the channel was not added (a mistake in the test).
    pub fn channel_message_silently(
        &self,
        channel: i64,
        from: Option<i64>,
        text: &str,
    ) -> WorldMessage {
        self.store_and_push(TestPeer::Channel(channel), from, text, Push::None)
    }

    /// Edits the text of message `id` (a private chat or basic group: channels number their
    /// messages on their own) and pushes `updateEditMessage`; `None` when there is no such
    /// message. Clients that were offline get the edit by catching up.
    pub fn edit(&self, id: i32, text: &str) -> Option<WorldMessage> {
        self.edit_in(None, id, text)
    }

    /// Edits the text of message `id` of supergroup or channel `channel` and pushes
    /// `updateEditChannelMessage`; `None` when there is no such message. Clients that were
    /// offline find the edit in `updates.getChannelDifference`.
    pub fn edit_in_channel(&self, channel: i64, id: i32, text: &str) -> Option<WorldMessage> {
        self.edit_in(Some(channel), id, text)
    }

    fn edit_in(&self, channel: Option<i64>, id: i32, text: &str) -> Option<WorldMessage> {
        let (msg, updates) = {
            let mut world = lock(&self.shared.world);
            let (msg, pts) = world.edit(channel, id, text)?;
            let updates = world.edit_updates_for(&msg, pts);
            (msg, updates)
        };
        self.push(&updates);
        Some(msg)
    }

    /// Deletes messages `ids` of the account's private chats and basic groups for everyone
    /// (as their sender or the owner may) and pushes `updateDeleteMessages`; returns the ids
    /// that were there (others are passed over). The messages leave the history; clients that
    /// were offline get the deletion by catching up.
    pub fn delete(&self, ids: &[i32]) -> Vec<i32> {
        self.delete_in(None, ids)
    }

    /// Deletes messages `ids` of supergroup or channel `channel` and pushes
    /// `updateDeleteChannelMessages`; returns the ids that were there. Clients that were
    /// offline get the deletion through `updates.getChannelDifference`.
    pub fn delete_in_channel(&self, channel: i64, ids: &[i32]) -> Vec<i32> {
        self.delete_in(Some(channel), ids)
    }

    fn delete_in(&self, channel: Option<i64>, ids: &[i32]) -> Vec<i32> {
        let Some((deleted, updates)) = ({
            let mut world = lock(&self.shared.world);
            world.delete(channel, ids).map(|d| {
                let updates = world.deletion_updates_for(&d);
                (d.ids, updates)
            })
        }) else {
            return Vec::new();
        };
        self.push(&updates);
        deleted
    }

    fn store_and_push(
        &self,
        peer: TestPeer,
        from: Option<i64>,
        text: &str,
        push: Push,
    ) -> WorldMessage {
        let (msg, updates) = {
            let mut world = lock(&self.shared.world);
            let msg = world.store_known(peer, from, text);
            let updates = match push {
                Push::Full => Some(world.updates_for(&msg, None)),
                Push::Short => Some(world.short_updates_for(&msg)),
                Push::None => None,
            };
            (msg, updates)
        };
        if let Some(updates) = updates {
            self.push(&updates);
        }
        msg
    }

    /// Pushes raw `Updates` to every connection.
    pub fn push(&self, updates: &tl::enums::Updates) {
        let bytes = updates.to_bytes();
        for c in lock(&self.shared.connections).iter() {
            let _ = c.tx.send(Outgoing::Push(bytes.clone()));
        }
    }

    // ----- scripting -----

    /// Adds a rule: `handler` decides the reply to requests with `constructor_id` (`None`:
    /// every request); returning `None` passes to the next rule, then to the world. Rules
    /// are tried in the order they were added.
    pub fn on(
        &self,
        constructor_id: Option<u32>,
        handler: impl Fn(&RecordedRequest) -> Option<Reply> + Send + Sync + 'static,
    ) {
        lock(&self.shared.rules).push(Rule {
            constructor_id,
            remaining: None,
            handler: Arc::new(handler),
        });
    }

    /// Answers the next request with `constructor_id` with `reply`, once.
    pub fn reply_once(&self, constructor_id: u32, reply: Reply) {
        self.reply_times(constructor_id, 1, reply);
    }

    /// Answers the next `times` requests with `constructor_id` with `reply`.
    pub fn reply_times(&self, constructor_id: u32, times: usize, reply: Reply) {
        if times == 0 {
            return;
        }
        lock(&self.shared.rules).push(Rule {
            constructor_id: Some(constructor_id),
            remaining: Some(times),
            handler: Arc::new(move |_| Some(reply.clone())),
        });
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        lock(&self.shared.rules).clear();
    }

    // ----- faults -----

    /// Sets the server-wide fault.
    pub fn set_fault(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Closes every open connection now.
    pub fn drop_connections(&self) {
        for c in lock(&self.shared.connections).drain(..) {
            c.cancel.cancel();
        }
    }

    /// How many connections are open.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.connections).len()
    }

    /// Every connection served since the start, open or closed, in the order accepted
    /// (refused ones are not served).
    pub fn sessions(&self) -> Vec<SessionRecord> {
        lock(&self.shared.sessions).clone()
    }

    /// Calls `observer` with each connection when it is accepted and when it closes (see
    /// [`SessionObserver`]).
    pub fn observe_sessions(&self, observer: SessionObserver) {
        *lock(&self.shared.observer) = Some(observer);
    }

    /// How many connections were accepted since the start.
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    // ----- what was received -----

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The requests with `constructor_id`.
    pub fn requests_of(&self, constructor_id: u32) -> Vec<RecordedRequest> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.constructor_id == constructor_id)
            .cloned()
            .collect()
    }

    /// Waits until at least `count` requests with `constructor_id` were received; false
    /// after `timeout`.
    pub async fn wait_for_requests(
        &self,
        constructor_id: u32,
        count: usize,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.request_seen.notified();
            if self.requests_of(constructor_id).len() >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests_of(constructor_id).len() >= count;
            }
        }
    }
}

enum Push {
    Full,
    Short,
    None,
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    fault: watch::Receiver<Fault>,
    shutdown: CancellationToken,
) {
    let mut per_server = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, peer)) = accepted else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if matches!(*fault.borrow(), Fault::RefuseConnections) {
            drop(stream);
            continue;
        }
        per_server += 1;
        let record = SessionRecord {
            id: per_server,
            peer,
            opened: std::time::SystemTime::now(),
            closed: None,
        };
        lock(&shared.sessions).push(record.clone());
        shared.observe(&record);
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = shutdown.child_token();
        lock(&shared.connections).push(ConnHandle {
            id: per_server,
            tx: tx.clone(),
            cancel: cancel.clone(),
        });
        let conn = Connection {
            id: per_server,
            shared: Arc::clone(&shared),
            cancel,
            tx,
            rx,
            fault: fault.clone(),
        };
        tokio::spawn(conn.serve(stream));
    }
    for c in lock(&shared.connections).drain(..) {
        c.cancel.cancel();
    }
}
