//! The grammers [`Session`] kept in the core's encrypted account state.
//!
//! grammers-session's SQLite storage cannot link next to sqlx's SQLite, and the auth key is a
//! secret: the session lives in the account state instead, through
//! [`Inbound::state_get`]/[`Inbound::state_put`], loaded at start and written on change.
//!
//! Three keys are used:
//!
//! * [`SESSION_KEY`]: home DC, DC addresses with the auth key, the self user. Written when
//!   it changes (login, DC migration, a new auth key).
//! * [`PEERS_KEY`]: the peer cache (ids and access hashes), a snapshot written by the
//!   channel now and then (every sync tick when it changed, and on a clean stop).
//! * [`PEERS_NEW_KEY`]: the peers learned since that snapshot (new ones, and ones whose
//!   access hash changed). The channel writes it before it delivers the message that taught
//!   them ([`AccountSession::persist_learned_peers`]), so what is needed to answer a stored
//!   conversation is never only in memory, whenever the process dies; the next snapshot
//!   takes them in and empties it. Loading reads the snapshot, then this.
//! * [`UPDATES_KEY`]: the update state (pts, qts, date, seq, channel pts). It is a cursor: it
//!   advances only with the commit of the messages it covers (it rides in
//!   [`InboundMessage::cursor`](channel_core::InboundMessage)), or after a catch-up.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex, MutexGuard};

use channel_core::{ChannelError, CursorUpdate, Inbound};
use grammers_session::types::{
    ChannelState, DcOption, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use grammers_session::updates::{MessageBox, State};
use grammers_session::{BoxFuture, Session, SessionData};
use grammers_tl_types as tl;
use serde::{Deserialize, Serialize};

/// Account-state key of the session (DCs, auth key, self user).
pub const SESSION_KEY: &str = "telegram/session";
/// Account-state key of the peer cache.
pub const PEERS_KEY: &str = "telegram/peers";
/// Account-state key of the peers learned since the last [`PEERS_KEY`] snapshot.
pub const PEERS_NEW_KEY: &str = "telegram/peers-new";
/// Account-state key of the update state (the cursor).
pub const UPDATES_KEY: &str = "telegram/updates";
/// Account-state key of the sends in flight (the channel's outbox).
pub const OUTBOX_KEY: &str = "telegram/outbox";

/// The keys of what the channel learned about an account (peers, update state, sends in
/// flight): dropped with the session on sign-out, and when another user logs in.
pub const ACCOUNT_DATA_KEYS: [&str; 4] = [PEERS_KEY, PEERS_NEW_KEY, UPDATES_KEY, OUTBOX_KEY];

/// Why the session could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No session is stored: the account was never logged in, or was signed out.
    #[error("no stored Telegram session: log in first")]
    NotLoggedIn,
    /// The stored session cannot be read (corrupt, or from an unknown version).
    #[error("the stored Telegram session is corrupt: {0}")]
    Corrupt(String),
    /// Reading or writing the account state failed.
    #[error("account state: {0}")]
    State(#[from] ChannelError),
}

impl From<SessionError> for ChannelError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotLoggedIn | SessionError::Corrupt(_) => {
                ChannelError::needs_login(e.to_string())
            }
            SessionError::State(e) => e,
        }
    }
}

/// A DC as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDc {
    /// DC id.
    pub id: i32,
    /// IPv4 address and port.
    pub ipv4: SocketAddrV4,
    /// IPv6 address and port.
    pub ipv6: SocketAddrV6,
    /// The permanent auth key, hex.
    pub auth_key: Option<String>,
}

/// The logged-in user as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSelf {
    /// User id.
    pub id: i64,
    /// Access hash.
    pub access_hash: Option<i64>,
    /// A bot account.
    pub bot: bool,
}

/// The session as stored under [`SESSION_KEY`] (JSON, encrypted at rest by the core).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// Format version (1).
    pub version: u8,
    /// The home DC.
    pub home_dc: i32,
    /// Known DCs.
    pub dcs: Vec<StoredDc>,
    /// The logged-in user; `None` before login completes.
    pub me: Option<StoredSelf>,
}

impl StoredSession {
    /// A session from grammers' [`SessionData`] (for example one built by a test server).
    pub fn from_session_data(data: &SessionData) -> Self {
        let mut dcs: Vec<StoredDc> = data.dc_options.values().map(stored_dc).collect();
        dcs.sort_by_key(|d| d.id);
        let me = data.peer_infos.values().find_map(|p| match p {
            PeerInfo::User { id, auth, bot, is_self: Some(true) } => Some(StoredSelf {
                id: *id,
                access_hash: auth.map(|a| a.hash()),
                bot: bot.unwrap_or(false),
            }),
            _ => None,
        });
        Self { version: 1, home_dc: data.home_dc, dcs, me }
    }

    /// The bytes written to the account state.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        let s: StoredSession =
            serde_json::from_slice(bytes).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        if s.version != 1 {
            return Err(SessionError::Corrupt(format!("unknown version {}", s.version)));
        }
        for dc in &s.dcs {
            if let Some(key) = &dc.auth_key {
                decode_key(key)?;
            }
        }
        Ok(s)
    }
}

/// The IPv6 form of an IPv4 address, for the session's second address.
fn mapped(address: SocketAddrV4) -> SocketAddrV6 {
    SocketAddrV6::new(address.ip().to_ipv6_mapped(), address.port(), 0, 0)
}

fn stored_dc(dc: &DcOption) -> StoredDc {
    StoredDc { id: dc.id, ipv4: dc.ipv4, ipv6: dc.ipv6, auth_key: dc.auth_key.map(hex::encode) }
}

fn decode_key(hex_key: &str) -> Result<[u8; 256], SessionError> {
    let bytes =
        hex::decode(hex_key).map_err(|e| SessionError::Corrupt(format!("auth key: {e}")))?;
    <[u8; 256]>::try_from(bytes.as_slice())
        .map_err(|_| SessionError::Corrupt("auth key is not 256 bytes".to_owned()))
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct StoredPeer {
    /// `u` user, `c` basic group, `h` channel.
    k: char,
    id: i64,
    hash: Option<i64>,
}

impl StoredPeer {
    fn from_info(p: &PeerInfo) -> Self {
        match p {
            PeerInfo::User { id, auth, .. } => {
                StoredPeer { k: 'u', id: *id, hash: auth.map(|a| a.hash()) }
            }
            PeerInfo::Chat { id } => StoredPeer { k: 'c', id: *id, hash: None },
            PeerInfo::Channel { id, auth, .. } => {
                StoredPeer { k: 'h', id: *id, hash: auth.map(|a| a.hash()) }
            }
        }
    }

    /// The peer, `None` for an unknown kind or an id out of Telegram's ranges.
    fn to_info(self) -> Option<(PeerId, PeerInfo)> {
        let (id, info) = match self.k {
            'u' => (
                PeerId::user(self.id)?,
                PeerInfo::User {
                    id: self.id,
                    auth: self.hash.map(PeerAuth::from_hash),
                    bot: None,
                    is_self: None,
                },
            ),
            'c' => (PeerId::chat(self.id)?, PeerInfo::Chat { id: self.id }),
            'h' => (
                PeerId::channel(self.id)?,
                PeerInfo::Channel {
                    id: self.id,
                    auth: self.hash.map(PeerAuth::from_hash),
                    kind: None,
                },
            ),
            _ => return None,
        };
        Some((id, info))
    }
}

/// Reads a stored list of peers; an unreadable one is dropped (peers can be learned again).
fn read_peers(raw: Option<Vec<u8>>, what: &str) -> Vec<StoredPeer> {
    match raw {
        Some(raw) => serde_json::from_slice::<Vec<StoredPeer>>(&raw).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "dropping an unreadable Telegram {what}");
            Vec::new()
        }),
        None => Vec::new(),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredUpdates {
    pts: i32,
    qts: i32,
    date: i32,
    seq: i32,
    channels: Vec<(i64, i32)>,
    /// Recently active chats, newest first: (bot-API dialog id, last delivered message id).
    #[serde(default)]
    recent: Vec<(i64, i32)>,
}

/// How many recently active chats the cursor remembers for reconciliation.
pub const RECENT_CHATS: usize = 32;

impl StoredUpdates {
    fn from_state(s: &UpdatesState, recent: &[(i64, i32)]) -> Self {
        Self {
            pts: s.pts,
            qts: s.qts,
            date: s.date,
            seq: s.seq,
            channels: s.channels.iter().map(|c| (c.id, c.pts)).collect(),
            recent: recent.to_vec(),
        }
    }

    fn to_state(&self) -> UpdatesState {
        UpdatesState {
            pts: self.pts,
            qts: self.qts,
            date: self.date,
            seq: self.seq,
            channels: self.channels.iter().map(|&(id, pts)| ChannelState { id, pts }).collect(),
        }
    }
}

struct Inner {
    home_dc: i32,
    dcs: HashMap<i32, DcOption>,
    me: Option<StoredSelf>,
    peers: HashMap<PeerId, PeerInfo>,
    /// The snapshot under [`PEERS_KEY`] is behind the cache.
    peers_dirty: bool,
    /// Peers learned (new, or their access hash changed) and not yet written anywhere.
    unsaved: HashSet<PeerId>,
    /// Peers written under [`PEERS_NEW_KEY`] since the last snapshot.
    journal: HashSet<PeerId>,
    updates: UpdatesState,
    updates_dirty: bool,
    /// Whether the account state holds an update state (false on a first connection).
    updates_stored: bool,
    /// Recently active chats, newest first (dialog id, last delivered message id).
    recent: Vec<(i64, i32)>,
    /// The state grammers' message box last reported (`sync_update_state`).
    reported: Option<UpdatesState>,
    /// Addresses from the account's configuration, which win over any other (stored, or
    /// from Telegram's `help.getConfig`).
    pinned: HashMap<i32, SocketAddrV4>,
}

/// Updates that grammers skipped: its state ran ahead of what was delivered, as after a
/// `differenceTooLong` or `channelDifferenceTooLong`. Close it with
/// [`AccountSession::close_gap`] once the recently active chats are reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateGap {
    /// The account-wide sequence (private chats, basic groups) skipped updates.
    pub common: bool,
    /// Channels whose sequence skipped updates.
    pub channels: Vec<i64>,
    /// The state to adopt once reconciled.
    pub state: UpdatesState,
}

/// A grammers [`Session`] over the account state of one account.
pub struct AccountSession {
    inner: Mutex<Inner>,
    state: Arc<dyn Inbound>,
    /// Orders the writes of [`PEERS_KEY`] and [`PEERS_NEW_KEY`], so that an older list never
    /// lands after a newer one.
    peer_writes: tokio::sync::Mutex<()>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AccountSession {
    /// Loads the stored session. [`SessionError::NotLoggedIn`] when there is none,
    /// [`SessionError::Corrupt`] when it cannot be read (the account needs a new login).
    pub async fn load(state: Arc<dyn Inbound>) -> Result<Self, SessionError> {
        let raw = state.state_get(SESSION_KEY).await?.ok_or(SessionError::NotLoggedIn)?;
        let stored = StoredSession::from_bytes(&raw)?;
        let mut dcs = HashMap::new();
        for dc in &stored.dcs {
            let auth_key = dc.auth_key.as_deref().map(decode_key).transpose()?;
            dcs.insert(dc.id, DcOption { id: dc.id, ipv4: dc.ipv4, ipv6: dc.ipv6, auth_key });
        }
        if !dcs.contains_key(&stored.home_dc) {
            return Err(SessionError::Corrupt(format!("home DC {} is unknown", stored.home_dc)));
        }
        // The peer cache and the update state are recoverable: a corrupt one is dropped. The
        // peers learned since the snapshot are newer than it.
        let mut peers = read_peers(state.state_get(PEERS_KEY).await?, "peer cache");
        peers.extend(read_peers(state.state_get(PEERS_NEW_KEY).await?, "list of new peers"));
        let updates = match state.state_get(UPDATES_KEY).await? {
            Some(raw) => serde_json::from_slice::<StoredUpdates>(&raw).ok().or_else(|| {
                tracing::warn!("dropping an unreadable Telegram update state");
                None
            }),
            None => None,
        };
        let updates_stored = updates.is_some();
        let updates = updates.unwrap_or_default();
        let recent = updates.recent.clone();
        let peers: HashMap<PeerId, PeerInfo> =
            peers.into_iter().filter_map(StoredPeer::to_info).collect();
        Ok(Self {
            inner: Mutex::new(Inner {
                home_dc: stored.home_dc,
                dcs,
                me: stored.me,
                peers,
                peers_dirty: false,
                unsaved: HashSet::new(),
                journal: HashSet::new(),
                updates: updates.to_state(),
                updates_dirty: false,
                updates_stored,
                recent,
                reported: None,
                pinned: HashMap::new(),
            }),
            state,
            peer_writes: tokio::sync::Mutex::new(()),
        })
    }

    /// A fresh session (Telegram's known DCs, no auth key) for a login.
    pub fn fresh(state: Arc<dyn Inbound>) -> Self {
        let data = SessionData::default();
        Self {
            inner: Mutex::new(Inner {
                home_dc: data.home_dc,
                dcs: data.dc_options,
                me: None,
                peers: HashMap::new(),
                peers_dirty: false,
                unsaved: HashSet::new(),
                journal: HashSet::new(),
                updates: UpdatesState::default(),
                updates_dirty: false,
                updates_stored: false,
                recent: Vec::new(),
                reported: None,
                pinned: HashMap::new(),
            }),
            state,
            peer_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Reaches each data centre of `dcs` at its address, whatever the stored session or
    /// Telegram's configuration say (the auth keys are kept). A fresh session (no auth key
    /// yet, no login) starts at `home_dc` when given.
    pub fn pin_data_centres(
        &self,
        dcs: &std::collections::BTreeMap<i32, SocketAddrV4>,
        home_dc: Option<i32>,
    ) {
        let mut inner = lock(&self.inner);
        for (&id, &address) in dcs {
            inner.pinned.insert(id, address);
            let dc = inner.dcs.entry(id).or_insert(DcOption {
                id,
                ipv4: address,
                ipv6: mapped(address),
                auth_key: None,
            });
            dc.ipv4 = address;
            dc.ipv6 = mapped(address);
        }
        let fresh = inner.me.is_none() && inner.dcs.values().all(|d| d.auth_key.is_none());
        if let Some(home) = home_dc.filter(|_| fresh) {
            inner.dcs.entry(home).or_insert(DcOption {
                id: home,
                ipv4: SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
                ipv6: SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, 0, 0, 0),
                auth_key: None,
            });
            inner.home_dc = home;
        }
    }

    /// The account state this session is kept in.
    pub fn state(&self) -> Arc<dyn Inbound> {
        Arc::clone(&self.state)
    }

    /// The logged-in user, if known.
    pub fn me(&self) -> Option<StoredSelf> {
        lock(&self.inner).me
    }

    /// Records the user a login authorized (write it with [`AccountSession::save`]).
    pub fn set_me(&self, me: StoredSelf) {
        lock(&self.inner).me = Some(me);
    }

    fn stored(&self) -> StoredSession {
        let inner = lock(&self.inner);
        let mut dcs: Vec<StoredDc> = inner.dcs.values().map(stored_dc).collect();
        dcs.sort_by_key(|d| d.id);
        StoredSession { version: 1, home_dc: inner.home_dc, dcs, me: inner.me }
    }

    async fn persist_session(&self) -> Result<(), SessionError> {
        let bytes = self.stored().to_bytes();
        self.state.state_put(SESSION_KEY, &bytes).await?;
        Ok(())
    }

    /// Writes the session now (after a login).
    pub async fn save(&self) -> Result<(), SessionError> {
        self.persist_session().await
    }

    /// Writes a snapshot of the peer cache if it changed, and then empties the list of peers
    /// learned since the last one (the snapshot holds them).
    pub async fn save_peers_if_changed(&self) -> Result<(), SessionError> {
        let _order = self.peer_writes.lock().await;
        let (bytes, covered) = {
            let mut inner = lock(&self.inner);
            if !inner.peers_dirty && inner.journal.is_empty() && inner.unsaved.is_empty() {
                return Ok(());
            }
            inner.peers_dirty = false;
            let peers: Vec<StoredPeer> = inner.peers.values().map(StoredPeer::from_info).collect();
            let covered: Vec<PeerId> = inner.unsaved.drain().collect();
            (serde_json::to_vec(&peers).unwrap_or_default(), covered)
        };
        if let Err(e) = self.state.state_put(PEERS_KEY, &bytes).await {
            let mut inner = lock(&self.inner);
            inner.peers_dirty = true;
            inner.unsaved.extend(covered);
            return Err(e.into());
        }
        let had_journal = !lock(&self.inner).journal.is_empty();
        if had_journal {
            // Left in place on a failure: the next snapshot tries again, and until then the
            // list is rewritten from the current cache whenever a peer is learned.
            self.state.state_delete(PEERS_NEW_KEY).await?;
            lock(&self.inner).journal.clear();
        }
        Ok(())
    }

    /// Writes the peers learned since the last write (new ones, and ones whose access hash
    /// changed) under [`PEERS_NEW_KEY`]; nothing when there are none (the usual case: one
    /// lock, no I/O). Call it before delivering a message whose update taught them, so that
    /// a reply to it can be sent after any crash.
    pub async fn persist_learned_peers(&self) -> Result<(), SessionError> {
        if lock(&self.inner).unsaved.is_empty() {
            return Ok(());
        }
        let _order = self.peer_writes.lock().await;
        let (bytes, taken) = {
            let mut inner = lock(&self.inner);
            if inner.unsaved.is_empty() {
                return Ok(());
            }
            let taken: Vec<PeerId> = inner.unsaved.drain().collect();
            inner.journal.extend(taken.iter().copied());
            // Always from the cache as it is now: a hash that changed again wins.
            let list: Vec<StoredPeer> = inner
                .journal
                .iter()
                .filter_map(|id| inner.peers.get(id))
                .map(StoredPeer::from_info)
                .collect();
            (serde_json::to_vec(&list).unwrap_or_default(), taken)
        };
        if let Err(e) = self.state.state_put(PEERS_NEW_KEY, &bytes).await {
            lock(&self.inner).unsaved.extend(taken);
            return Err(e.into());
        }
        Ok(())
    }

    /// Caches the users and chats of a response the channel invoked itself (grammers caches
    /// those of updates): what a later send to them needs. Ids out of Telegram's ranges,
    /// `min` users and peers without an access hash (other than basic groups) are passed
    /// over. Write them with [`AccountSession::persist_learned_peers`].
    pub fn learn(&self, users: &[tl::enums::User], chats: &[tl::enums::Chat]) {
        let infos = users
            .iter()
            .filter_map(|u| match u {
                tl::enums::User::User(u) if PeerId::user(u.id).is_some() => Some(PeerInfo::from(u)),
                _ => None,
            })
            .chain(chats.iter().filter_map(|c| match c {
                tl::enums::Chat::Chat(c) if PeerId::chat(c.id).is_some() => {
                    Some(PeerInfo::Chat { id: c.id })
                }
                tl::enums::Chat::Channel(c) if PeerId::channel(c.id).is_some() && !c.min => {
                    Some(PeerInfo::from(&tl::enums::Chat::Channel(c.clone())))
                }
                _ => None,
            }));
        for info in infos {
            let is_self = matches!(info, PeerInfo::User { is_self: Some(true), .. });
            if is_self || info.auth().is_some() || matches!(info, PeerInfo::Chat { .. }) {
                self.remember_peer(info);
            }
        }
    }

    /// Adds or updates a peer in the cache; returns whether the self user changed.
    fn remember_peer(&self, peer: PeerInfo) -> bool {
        let mut inner = lock(&self.inner);
        if let PeerInfo::User { id, auth, bot, is_self: Some(true) } = &peer {
            let new = StoredSelf {
                id: *id,
                access_hash: auth.map(|a| a.hash()),
                bot: bot.unwrap_or(false),
            };
            let old = inner.me.replace(new);
            return old != Some(new);
        }
        let id = peer.id();
        let changed = match inner.peers.get_mut(&id) {
            Some(known) => {
                let before = StoredPeer::from_info(known);
                known.extend_info(&peer);
                let after = StoredPeer::from_info(known);
                before.hash != after.hash || before.k != after.k
            }
            None => {
                inner.peers.insert(id, peer);
                true
            }
        };
        if changed {
            inner.peers_dirty = true;
            inner.unsaved.insert(id);
        }
        false
    }

    /// Whether the peer cache holds `peer` (with its access hash, for users and channels).
    pub(crate) fn knows_peer(&self, peer: PeerId) -> bool {
        lock(&self.inner)
            .peers
            .get(&peer)
            .is_some_and(|p| matches!(p, PeerInfo::Chat { .. }) || p.auth().is_some())
    }

    /// The update state committed so far.
    pub fn committed_updates(&self) -> UpdatesState {
        lock(&self.inner).updates.clone()
    }

    /// On a first connection, writes the state grammers fetched (`updates.getState`) before
    /// any update is processed: a delivery that fails later then resumes from it instead of
    /// starting over from a new state and skipping the message.
    pub async fn store_initial_updates(&self) -> Result<(), SessionError> {
        let bytes = {
            let mut inner = self.lock_inner();
            if inner.updates_stored || inner.updates.pts == 0 {
                return Ok(());
            }
            inner.updates_stored = true;
            inner.updates_dirty = false;
            Self::encode_updates(&inner)
        };
        self.state.state_put(UPDATES_KEY, &bytes).await?;
        Ok(())
    }

    /// Stores the update state taken at a login as the account's first cursor, unless it
    /// already has one (a login again of the same user goes on from where it was).
    pub(crate) async fn store_login_updates(
        state: &dyn Inbound,
        pts: i32,
        qts: i32,
        date: i32,
        seq: i32,
    ) -> Result<(), SessionError> {
        if state.state_get(UPDATES_KEY).await?.is_some() {
            return Ok(());
        }
        let stored =
            StoredUpdates { pts, qts, date, seq, channels: Vec::new(), recent: Vec::new() };
        let bytes = serde_json::to_vec(&stored).unwrap_or_default();
        state.state_put(UPDATES_KEY, &bytes).await?;
        Ok(())
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Advances the update state past one processed update; returns the cursor to commit
    /// with the message it came with.
    pub fn advance(&self, state: &State) -> CursorUpdate {
        let mut inner = lock(&self.inner);
        let u = &mut inner.updates;
        u.date = u.date.max(state.date);
        u.seq = u.seq.max(state.seq);
        match state.message_box {
            Some(MessageBox::Common { pts }) => u.pts = u.pts.max(pts),
            Some(MessageBox::Secondary { qts }) => u.qts = u.qts.max(qts),
            Some(MessageBox::Channel { channel_id, pts }) => {
                match u.channels.iter_mut().find(|c| c.id == channel_id) {
                    Some(c) => c.pts = c.pts.max(pts),
                    None => u.channels.push(ChannelState { id: channel_id, pts }),
                }
            }
            None => {}
        }
        inner.updates_dirty = true;
        CursorUpdate { key: UPDATES_KEY.to_owned(), value: Self::encode_updates(&inner) }
    }

    fn encode_updates(inner: &Inner) -> Vec<u8> {
        serde_json::to_vec(&StoredUpdates::from_state(&inner.updates, &inner.recent))
            .unwrap_or_default()
    }

    /// Notes a message about to be delivered in `chat` (a bot-API dialog id): the chat
    /// becomes the most recently active one, with `message_id` as its last message. It is
    /// stored with the next cursor.
    pub fn note_message(&self, chat: i64, message_id: i32) {
        let mut inner = lock(&self.inner);
        let last = inner
            .recent
            .iter()
            .find(|(c, _)| *c == chat)
            .map_or(message_id, |&(_, id)| id.max(message_id));
        inner.recent.retain(|(c, _)| *c != chat);
        inner.recent.insert(0, (chat, last));
        inner.recent.truncate(RECENT_CHATS);
    }

    /// Recently active chats, newest first: (bot-API dialog id, last delivered message id).
    pub fn recent_chats(&self) -> Vec<(i64, i32)> {
        lock(&self.inner).recent.clone()
    }

    /// Whether grammers' state (as last reported by `sync_update_state`) is ahead of what
    /// was delivered: updates were skipped and the recent chats need reconciling.
    pub fn gap(&self) -> Option<UpdateGap> {
        let inner = lock(&self.inner);
        let reported = inner.reported.as_ref()?;
        let committed = &inner.updates;
        if committed.pts == 0 {
            return None;
        }
        let common = reported.pts > committed.pts;
        let channels: Vec<i64> = reported
            .channels
            .iter()
            .filter(|c| {
                committed.channels.iter().find(|k| k.id == c.id).is_some_and(|k| c.pts > k.pts)
            })
            .map(|c| c.id)
            .collect();
        (common || !channels.is_empty()).then(|| UpdateGap {
            common,
            channels,
            state: reported.clone(),
        })
    }

    /// Adopts the state of a reconciled gap (the cursor moves past it; write it with
    /// [`AccountSession::save_updates_if_changed`]).
    pub fn close_gap(&self, gap: &UpdateGap) {
        let mut inner = lock(&self.inner);
        let u = &mut inner.updates;
        u.pts = u.pts.max(gap.state.pts);
        u.qts = u.qts.max(gap.state.qts);
        u.date = u.date.max(gap.state.date);
        u.seq = u.seq.max(gap.state.seq);
        for c in &gap.state.channels {
            match u.channels.iter_mut().find(|k| k.id == c.id) {
                Some(k) => k.pts = k.pts.max(c.pts),
                None => u.channels.push(c.clone()),
            }
        }
        inner.updates_dirty = true;
    }

    /// Marks the update state as committed (it went out with a delivered message).
    pub fn updates_committed(&self) {
        let mut inner = lock(&self.inner);
        inner.updates_dirty = false;
        inner.updates_stored = true;
    }

    /// Writes the update state if it advanced without a message to carry it (updates that
    /// are not messages, the state of a fresh login, the end of a catch-up).
    pub async fn save_updates_if_changed(&self) -> Result<(), SessionError> {
        let bytes = {
            let mut inner = lock(&self.inner);
            if !inner.updates_dirty || inner.updates.pts == 0 {
                return Ok(());
            }
            inner.updates_dirty = false;
            inner.updates_stored = true;
            Self::encode_updates(&inner)
        };
        self.state.state_put(UPDATES_KEY, &bytes).await?;
        Ok(())
    }

    /// Removes everything stored for the session (sign-out).
    pub async fn wipe(state: &dyn Inbound) -> Result<(), ChannelError> {
        state.state_delete(SESSION_KEY).await?;
        Self::forget_account_data(state).await
    }

    /// Removes what was learned about the account ([`ACCOUNT_DATA_KEYS`]): peers, update
    /// state, sends in flight.
    pub async fn forget_account_data(state: &dyn Inbound) -> Result<(), ChannelError> {
        for key in ACCOUNT_DATA_KEYS {
            state.state_delete(key).await?;
        }
        Ok(())
    }
}

impl Session for AccountSession {
    type Error = SessionError;

    fn home_dc_id(&self) -> Result<i32, SessionError> {
        Ok(lock(&self.inner).home_dc)
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            let changed = {
                let mut inner = lock(&self.inner);
                std::mem::replace(&mut inner.home_dc, dc_id) != dc_id
            };
            if changed {
                self.persist_session().await?;
            }
            Ok(())
        })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, SessionError> {
        Ok(lock(&self.inner).dcs.get(&dc_id).cloned())
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), SessionError>> {
        let mut dc_option = dc_option.clone();
        Box::pin(async move {
            let changed = {
                let mut inner = lock(&self.inner);
                if let Some(&address) = inner.pinned.get(&dc_option.id) {
                    dc_option.ipv4 = address;
                    dc_option.ipv6 = mapped(address);
                }
                inner.dcs.insert(dc_option.id, dc_option.clone()).as_ref() != Some(&dc_option)
            };
            if changed {
                self.persist_session().await?;
            }
            Ok(())
        })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<PeerInfo>, SessionError>> {
        Box::pin(async move {
            let inner = lock(&self.inner);
            let me = inner.me;
            let self_info = |m: StoredSelf| PeerInfo::User {
                id: m.id,
                auth: m.access_hash.map(PeerAuth::from_hash),
                bot: Some(m.bot),
                is_self: Some(true),
            };
            if peer == PeerId::self_user() {
                return Ok(me.map(self_info));
            }
            if let Some(m) = me
                && PeerId::user(m.id) == Some(peer)
            {
                return Ok(Some(self_info(m)));
            }
            Ok(inner.peers.get(&peer).cloned())
        })
    }

    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            if self.remember_peer(peer) {
                self.persist_session().await?;
            }
            Ok(())
        })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, SessionError>> {
        Box::pin(async move { Ok(lock(&self.inner).updates.clone()) })
    }

    fn set_update_state(&self, update: UpdateState) -> BoxFuture<'_, Result<(), SessionError>> {
        // The update state is a cursor the channel advances with what it has delivered
        // (see `advance`). From grammers, only the first state of a fresh login is taken
        // (`updates.getState` when nothing is stored); later writes (`sync_update_state`)
        // are only noted: when they run ahead of what was delivered, grammers skipped
        // updates (see `gap`).
        Box::pin(async move {
            let mut inner = lock(&self.inner);
            if let UpdateState::All(state) = update {
                if inner.updates.pts == 0 {
                    inner.updates = state;
                    inner.updates_dirty = true;
                } else {
                    inner.reported = Some(state);
                }
            }
            Ok(())
        })
    }
}
