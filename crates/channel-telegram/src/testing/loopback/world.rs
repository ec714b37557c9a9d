//! The account the loopback server pretends to host: users, groups, channels, messages and the
//! update sequences (the account-wide `pts`, and one `pts` per channel), enough for updates,
//! catch-up, sends and history to behave like Telegram's.

use std::collections::{BTreeMap, HashMap};

use grammers_tl_types as tl;
use tl::{Deserializable, Identifiable, Serializable};

use super::srp::{self, Challenge, Verifier};
use super::tl_build;

/// A phone number that can log in as the owner.
struct PhoneLogin {
    code: String,
    password: Option<Verifier>,
}

/// The authorization side of the world: who may log in, and whether the key is logged in.
#[derive(Default)]
pub(crate) struct Auth {
    /// Whether the auth key is logged in; requests other than logins get 401 otherwise.
    pub(crate) authorized: bool,
    /// The app credentials `auth.sendCode`/`auth.importBotAuthorization` must carry.
    pub(crate) api: Option<(i32, String)>,
    phones: HashMap<String, PhoneLogin>,
    /// phone_code_hash -> phone.
    codes: HashMap<String, String>,
    /// The phone whose code was right and whose 2FA password is awaited.
    password_pending: Option<String>,
    challenges: HashMap<i64, Challenge>,
    /// Bot token -> bot user id.
    bots: HashMap<String, i64>,
    /// QR login tokens handed out.
    pub(crate) qr_tokens: usize,
    /// A QR token was scanned and accepted by the owner.
    pub(crate) qr_accepted: bool,
    bot_ids: std::collections::HashSet<i64>,
}

/// A user known to the loopback world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestUser {
    /// The bare user id.
    pub id: i64,
    /// The access hash the server hands out for it.
    pub access_hash: i64,
    /// First name.
    pub first_name: String,
    /// Username, if any.
    pub username: Option<String>,
}

/// A supergroup or broadcast channel known to the loopback world; the owner is a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestChannel {
    /// The bare channel id.
    pub id: i64,
    /// The access hash the server hands out for it (in the `chats` of updates, differences
    /// and history), and checks on every request that names the channel.
    pub access_hash: i64,
    /// Title.
    pub title: String,
    /// A supergroup (members write, messages carry their author); else a broadcast channel
    /// (posts signed by the channel, where the owner may not write).
    pub megagroup: bool,
    /// Public username, if any.
    pub username: Option<String>,
}

impl TestChannel {
    /// Where its messages live.
    pub fn peer(&self) -> TestPeer {
        TestPeer::Channel(self.id)
    }

    /// Its bot-API dialog id (`-100…`), the thread key the Telegram channel gives it.
    pub fn dialog_id(&self) -> i64 {
        -(1_000_000_000_000 + self.id)
    }
}

/// Where a message of the world lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestPeer {
    /// The private chat with a user.
    User(i64),
    /// A basic group.
    Chat(i64),
    /// A supergroup or broadcast channel, with its own message ids and `pts`.
    Channel(i64),
}

impl TestPeer {
    /// The channel id, for a message of a channel (whose ids and `pts` are its own).
    pub fn channel_id(self) -> Option<i64> {
        match self {
            TestPeer::Channel(id) => Some(id),
            TestPeer::User(_) | TestPeer::Chat(_) => None,
        }
    }
}

/// A message stored by the loopback world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldMessage {
    /// The message id: account-wide for private chats and basic groups, per channel in a
    /// channel (as Telegram numbers them).
    pub id: i32,
    /// The `pts` after this message: the account's, or its channel's.
    pub pts: i32,
    /// The chat it is in.
    pub peer: TestPeer,
    /// The author's user id; `None` for a broadcast channel's post (signed by the channel).
    pub from: Option<i64>,
    /// Sent by the account owner.
    pub out: bool,
    /// Text.
    pub text: String,
    /// Unix time.
    pub date: i32,
    /// The id of the message it replies to.
    pub reply_to: Option<i32>,
    /// The client's `random_id`, for messages sent through the API.
    pub random_id: Option<i64>,
    /// The photo or document sent with `messages.sendMedia`, as uploaded.
    pub media: Option<WorldMedia>,
    /// Unix time of the latest edit of its text.
    pub edit_date: Option<i32>,
}

/// A file sent with a message, reassembled from its uploaded parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldMedia {
    /// Sent as a photo (`inputMediaUploadedPhoto`), else as a document.
    pub photo: bool,
    /// The file name of the upload.
    pub name: String,
    /// The document's MIME type (`None` for photos).
    pub mime_type: Option<String>,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Document ids are this plus the document's index in `World::documents`.
const DOCUMENT_BASE: i64 = 1 << 40;
const DOCUMENT_HASH: i64 = 0x00d0_c0de;
/// The DC the loopback server claims to be (see `LoopbackServer::dc_id`).
pub(crate) const DC_ID: i32 = 2;

/// Error answered as `rpc_error`.
pub(crate) type RpcFailure = (i32, String);

/// Messages deleted at once: in the account's box (`channel` `None`) or in a channel.
#[derive(Clone, Debug)]
pub(crate) struct Deletion {
    /// The box's `pts` after the deletion (it advances by the number of ids).
    pub(crate) pts: i32,
    pub(crate) channel: Option<i64>,
    pub(crate) ids: Vec<i32>,
}

impl Deletion {
    fn update(&self) -> tl::enums::Update {
        let pts_count = i32::try_from(self.ids.len()).unwrap_or(i32::MAX);
        match self.channel {
            None => tl::types::UpdateDeleteMessages {
                messages: self.ids.clone(),
                pts: self.pts,
                pts_count,
            }
            .into(),
            Some(channel_id) => tl::types::UpdateDeleteChannelMessages {
                channel_id,
                messages: self.ids.clone(),
                pts: self.pts,
                pts_count,
            }
            .into(),
        }
    }
}

/// A channel with its own update sequence and message ids.
struct ChannelBox {
    channel: TestChannel,
    /// The channel's `pts` (1 when created, +1 per message).
    pts: i32,
    next_id: i32,
}

pub(crate) struct World {
    pub(crate) me: TestUser,
    users: BTreeMap<i64, TestUser>,
    chats: BTreeMap<i64, String>,
    channels: BTreeMap<i64, ChannelBox>,
    pts: i32,
    next_id: i32,
    messages: Vec<WorldMessage>,
    /// Edits as (channel, pts, message id): the account's box (`None`) or a channel's, for
    /// `getDifference` and `getChannelDifference`.
    edits: Vec<(Option<i64>, i32, i32)>,
    /// Deletions, for `getDifference` and `getChannelDifference`.
    deletions: Vec<Deletion>,
    /// Channels joined on another client, as (the account's pts then, channel, the
    /// channel's pts then): `getDifference` announces them with `updateChannelTooLong`.
    joined_elsewhere: Vec<(i32, i64, i32)>,
    /// The message each `random_id` sent.
    by_random_id: HashMap<i64, (TestPeer, i32)>,
    /// Messages with a file, in the order their files were stored (see `DOCUMENT_BASE`).
    documents: Vec<(TestPeer, i32)>,
    /// When set, `getDifference` further behind than this answers `differenceTooLong`.
    pub(crate) too_long_after: Option<i32>,
    /// When set, `getChannelDifference` further behind than this answers
    /// `channelDifferenceTooLong`.
    pub(crate) channel_too_long_after: Option<i32>,
    /// Answer a send whose `random_id` was seen with `500 RANDOM_ID_DUPLICATE` (as Telegram
    /// may) instead of the message already sent.
    pub(crate) duplicate_is_error: bool,
    pub(crate) auth: Auth,
    /// Uploaded file parts by file id.
    uploads: HashMap<i64, BTreeMap<i32, Vec<u8>>>,
}

pub(crate) fn now() -> i32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
        .unwrap_or(0)
}

impl World {
    pub(crate) fn new() -> Self {
        let me = TestUser {
            id: 1000,
            access_hash: 0x5e1f,
            first_name: "Owner".to_owned(),
            username: Some("owner".to_owned()),
        };
        let mut users = BTreeMap::new();
        users.insert(me.id, me.clone());
        Self {
            me,
            users,
            chats: BTreeMap::new(),
            channels: BTreeMap::new(),
            pts: 1,
            next_id: 1,
            messages: Vec::new(),
            edits: Vec::new(),
            deletions: Vec::new(),
            joined_elsewhere: Vec::new(),
            by_random_id: HashMap::new(),
            documents: Vec::new(),
            too_long_after: None,
            channel_too_long_after: None,
            duplicate_is_error: false,
            auth: Auth { authorized: true, ..Auth::default() },
            uploads: HashMap::new(),
        }
    }

    pub(crate) fn add_user(
        &mut self,
        id: i64,
        first_name: &str,
        username: Option<&str>,
    ) -> TestUser {
        let user = TestUser {
            id,
            access_hash: id.wrapping_mul(7919) ^ 0x55aa,
            first_name: first_name.to_owned(),
            username: username.map(str::to_owned),
        };
        self.users.insert(id, user.clone());
        user
    }

    /// Attaches a file to the stored message `id` of `peer`.
    pub(crate) fn set_media(&mut self, peer: TestPeer, id: i32, media: Option<WorldMedia>) {
        if let Some(m) = self.messages.iter_mut().find(|m| m.peer == peer && m.id == id) {
            m.media = media;
            if m.media.is_some() && !self.documents.contains(&(peer, id)) {
                self.documents.push((peer, id));
            }
        }
    }

    pub(crate) fn add_chat(&mut self, id: i64, title: &str) {
        self.chats.insert(id, title.to_owned());
    }

    /// Adds a channel (its `pts` starts at 1, its message ids at 1), or replaces the title,
    /// kind and username of a known one (keeping its messages and `pts`).
    pub(crate) fn add_channel(
        &mut self,
        id: i64,
        title: &str,
        megagroup: bool,
        username: Option<&str>,
    ) -> TestChannel {
        let channel = TestChannel {
            id,
            access_hash: id.wrapping_mul(104_729) ^ 0x0c4a_77e1,
            title: title.to_owned(),
            megagroup,
            username: username.map(str::to_owned),
        };
        self.channels
            .entry(id)
            .and_modify(|c| c.channel = channel.clone())
            .or_insert_with(|| ChannelBox { channel: channel.clone(), pts: 1, next_id: 1 });
        channel
    }

    pub(crate) fn channel(&self, id: i64) -> Option<&TestChannel> {
        self.channels.get(&id).map(|c| &c.channel)
    }

    pub(crate) fn channel_pts(&self, id: i64) -> Option<i32> {
        self.channels.get(&id).map(|c| c.pts)
    }

    pub(crate) fn user(&self, id: i64) -> Option<&TestUser> {
        self.users.get(&id)
    }

    pub(crate) fn messages(&self) -> Vec<WorldMessage> {
        self.messages.clone()
    }

    pub(crate) fn pts(&self) -> i32 {
        self.pts
    }

    /// Stores a new message and advances `pts`: the account's, or in a channel the channel's
    /// (whose message ids are its own). `None` when the channel is unknown.
    pub(crate) fn store(
        &mut self,
        peer: TestPeer,
        from: Option<i64>,
        text: &str,
        reply_to: Option<i32>,
        random_id: Option<i64>,
    ) -> Option<WorldMessage> {
        let (id, pts) = match peer {
            TestPeer::Channel(channel) => {
                let c = self.channels.get_mut(&channel)?;
                c.pts += 1;
                c.next_id += 1;
                (c.next_id - 1, c.pts)
            }
            TestPeer::User(_) | TestPeer::Chat(_) => {
                self.pts += 1;
                self.next_id += 1;
                (self.next_id - 1, self.pts)
            }
        };
        let msg = WorldMessage {
            id,
            pts,
            peer,
            from,
            out: from == Some(self.me.id),
            text: text.to_owned(),
            date: now(),
            reply_to,
            random_id,
            media: None,
            edit_date: None,
        };
        if let Some(r) = random_id {
            self.by_random_id.insert(r, (peer, id));
        }
        self.messages.push(msg.clone());
        Some(msg)
    }

    /// Stores a message the test script asked for.
    ///
    /// # Panics
    ///
    /// In a channel that was never added: a mistake in the test, not a server input.
    pub(crate) fn store_known(
        &mut self,
        peer: TestPeer,
        from: Option<i64>,
        text: &str,
    ) -> WorldMessage {
        match self.store(peer, from, text, None, None) {
            Some(m) => m,
            None => panic!("{peer:?} is not in the loopback world: add_channel first"),
        }
    }

    /// The message sent before with `random_id`, if any.
    fn sent_with(&self, random_id: i64) -> Option<WorldMessage> {
        let (peer, id) = self.by_random_id.get(&random_id).copied()?;
        self.messages.iter().find(|m| m.peer == peer && m.id == id).cloned()
    }

    /// Replaces the text of message `id` of the account's private chats and basic groups
    /// (`channel` `None`) or of a channel (a new pts of its box, as Telegram's edits take
    /// one); returns the edited message and the edit's pts.
    pub(crate) fn edit(
        &mut self,
        channel: Option<i64>,
        id: i32,
        text: &str,
    ) -> Option<(WorldMessage, i32)> {
        let index =
            self.messages.iter().position(|m| m.peer.channel_id() == channel && m.id == id)?;
        let pts = self.advance_pts(channel, 1)?;
        let m = &mut self.messages[index];
        m.text = text.to_owned();
        m.edit_date = Some(now().max(m.date + 1));
        let edited = m.clone();
        self.edits.push((channel, pts, id));
        Some((edited, pts))
    }

    /// Advances the `pts` of a box (`channel` `None`: the account's) by `by` and returns it;
    /// `None` for an unknown channel.
    fn advance_pts(&mut self, channel: Option<i64>, by: i32) -> Option<i32> {
        let pts = match channel {
            None => &mut self.pts,
            Some(c) => &mut self.channels.get_mut(&c)?.pts,
        };
        *pts = pts.saturating_add(by);
        Some(*pts)
    }

    /// The update of an edit: `updateEditMessage`, or `updateEditChannelMessage` in a channel.
    fn edit_update(&self, m: &WorldMessage, pts: i32) -> tl::enums::Update {
        let message = self.tl_message(m);
        if m.peer.channel_id().is_some() {
            tl::types::UpdateEditChannelMessage { message, pts, pts_count: 1 }.into()
        } else {
            tl::types::UpdateEditMessage { message, pts, pts_count: 1 }.into()
        }
    }

    /// The edits of a box (`channel` `None`: the account's) with `from < pts <= to`, as
    /// (pts, update).
    fn edits_between(
        &self,
        channel: Option<i64>,
        from: i32,
        to: i32,
    ) -> Vec<(i32, tl::enums::Update)> {
        self.edits
            .iter()
            .filter(|(c, pts, _)| *c == channel && *pts > from && *pts <= to)
            .filter_map(|(_, pts, id)| {
                self.messages
                    .iter()
                    .find(|m| m.peer.channel_id() == channel && m.id == *id)
                    .map(|m| (*pts, self.edit_update(m, *pts)))
            })
            .collect()
    }

    /// Deletes the messages `ids` of the account's private chats and basic groups
    /// (`channel` `None`) or of a channel, for everyone, as their sender or the owner may:
    /// they leave the history and the box's `pts` advances by their number. Ids that are not
    /// there are passed over; `None` when none is.
    pub(crate) fn delete(&mut self, channel: Option<i64>, ids: &[i32]) -> Option<Deletion> {
        let in_box = |m: &WorldMessage| m.peer.channel_id() == channel;
        let mut found: Vec<i32> = self
            .messages
            .iter()
            .filter(|m| in_box(m) && ids.contains(&m.id))
            .map(|m| m.id)
            .collect();
        found.sort_unstable();
        found.dedup();
        if found.is_empty() {
            return None;
        }
        let pts = self.advance_pts(channel, i32::try_from(found.len()).unwrap_or(i32::MAX))?;
        self.messages.retain(|m| !(in_box(m) && found.contains(&m.id)));
        let deletion = Deletion { pts, channel, ids: found };
        self.deletions.push(deletion.clone());
        Some(deletion)
    }

    /// Notes that the owner joined `channel` on another client (see
    /// `LoopbackServer::join_channel_elsewhere`); `None` when the channel is unknown.
    pub(crate) fn join_channel_elsewhere(&mut self, channel: i64) -> Option<i32> {
        let pts = self.channel_pts(channel)?;
        self.joined_elsewhere.push((self.pts, channel, pts));
        Some(pts)
    }

    /// The `Updates` that pushes a deletion.
    pub(crate) fn deletion_updates_for(&self, d: &Deletion) -> tl::enums::Updates {
        let chats = match d.channel {
            Some(c) => self.tl_chats([TestPeer::Channel(c)]),
            None => Vec::new(),
        };
        tl::types::Updates {
            updates: vec![d.update()],
            users: Vec::new(),
            chats,
            date: now(),
            seq: 0,
        }
        .into()
    }

    /// The `Updates` that pushes an edit.
    pub(crate) fn edit_updates_for(&self, m: &WorldMessage, pts: i32) -> tl::enums::Updates {
        let (users, chats) = self.involved(&[m]);
        let update = self.edit_update(m, pts);
        tl::types::Updates { updates: vec![update], users, chats, date: now(), seq: 0 }.into()
    }

    fn tl_peer(peer: TestPeer) -> tl::enums::Peer {
        match peer {
            TestPeer::User(user_id) => tl::types::PeerUser { user_id }.into(),
            TestPeer::Chat(chat_id) => tl::types::PeerChat { chat_id }.into(),
            TestPeer::Channel(channel_id) => tl::types::PeerChannel { channel_id }.into(),
        }
    }

    pub(crate) fn tl_message(&self, m: &WorldMessage) -> tl::enums::Message {
        let author = m.from.map(|id| Self::tl_peer(TestPeer::User(id)));
        let from = match m.peer {
            TestPeer::User(_) if m.out => Some(Self::tl_peer(TestPeer::User(self.me.id))),
            TestPeer::User(_) => None,
            TestPeer::Chat(_) | TestPeer::Channel(_) => author,
        };
        let post = m
            .peer
            .channel_id()
            .and_then(|id| self.channels.get(&id))
            .is_some_and(|c| !c.channel.megagroup);
        let mut message = tl_build::message(
            m.id,
            Self::tl_peer(m.peer),
            from,
            m.out,
            m.date,
            &m.text,
            m.reply_to,
        );
        if let tl::enums::Message::Message(x) = &mut message {
            x.edit_date = m.edit_date;
            x.post = post;
        }
        let document = self.documents.iter().position(|d| *d == (m.peer, m.id));
        if let (Some(media), Some(index), tl::enums::Message::Message(x)) =
            (&m.media, document, &mut message)
        {
            // Every file goes out as a document (photos too, with their image type).
            x.media = Some(
                tl::types::MessageMediaDocument {
                    nopremium: false,
                    spoiler: false,
                    video: false,
                    round: false,
                    voice: false,
                    document: Some(
                        tl::types::Document {
                            id: DOCUMENT_BASE + i64::try_from(index).unwrap_or(i64::MAX),
                            access_hash: DOCUMENT_HASH,
                            file_reference: vec![1],
                            date: m.date,
                            mime_type: media
                                .mime_type
                                .clone()
                                .unwrap_or_else(|| "image/jpeg".to_owned()),
                            size: media.data.len() as i64,
                            thumbs: None,
                            video_thumbs: None,
                            dc_id: DC_ID,
                            attributes: vec![
                                tl::types::DocumentAttributeFilename {
                                    file_name: media.name.clone(),
                                }
                                .into(),
                            ],
                        }
                        .into(),
                    ),
                    alt_documents: None,
                    video_cover: None,
                    video_timestamp: None,
                    ttl_seconds: None,
                }
                .into(),
            );
        }
        message
    }

    fn tl_users(&self, ids: impl IntoIterator<Item = i64>) -> Vec<tl::enums::User> {
        let mut seen = Vec::new();
        for id in ids {
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        seen.into_iter().filter_map(|id| self.users.get(&id)).map(|u| self.tl_user(u)).collect()
    }

    fn tl_user(&self, u: &TestUser) -> tl::enums::User {
        let mut user = tl_build::user(
            u.id,
            u.access_hash,
            &u.first_name,
            u.username.as_deref(),
            u.id == self.me.id,
        );
        if self.auth.bot_ids.contains(&u.id) {
            let tl::enums::User::User(x) = &mut user else {
                unreachable!("tl_build::user builds a user");
            };
            // `bot` and `bot_info_version` share a flag bit.
            x.bot = true;
            x.bot_info_version = Some(1);
        }
        user
    }

    pub(crate) fn add_phone_login(&mut self, phone: &str, code: &str, password: Option<Verifier>) {
        self.auth.phones.insert(phone.to_owned(), PhoneLogin { code: code.to_owned(), password });
    }

    pub(crate) fn add_bot_token(&mut self, token: &str, user: TestUser) {
        self.auth.bots.insert(token.to_owned(), user.id);
        self.auth.bot_ids.insert(user.id);
        self.users.insert(user.id, user);
    }

    fn authorization(&mut self, user_id: i64) -> Vec<u8> {
        if let Some(user) = self.users.get(&user_id).cloned() {
            self.me = user;
        }
        self.auth.authorized = true;
        self.auth.password_pending = None;
        let user = self.tl_user(&self.me.clone());
        tl::enums::auth::Authorization::from(tl::types::auth::Authorization {
            setup_password_required: false,
            otherwise_relogin_days: None,
            tmp_sessions: None,
            future_auth_token: None,
            user,
        })
        .to_bytes()
    }

    fn check_api(&self, api_id: i32, api_hash: &str) -> Result<(), RpcFailure> {
        match &self.auth.api {
            Some((id, hash)) if *id != api_id || hash != api_hash => {
                Err((400, "API_ID_INVALID".to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// The login methods: `auth.*` and `account.getPassword`. `None`: not one of them.
    fn answer_auth(&mut self, ctor: u32, args: &[u8]) -> Option<Result<Vec<u8>, RpcFailure>> {
        use tl::functions as f;
        let bad = |e: tl::deserialize::Error| (400, format!("INPUT_REQUEST_INVALID: {e}"));
        let me = self.me.id;
        Some(match ctor {
            f::auth::SendCode::CONSTRUCTOR_ID => (|| {
                let req = f::auth::SendCode::from_bytes(args).map_err(bad)?;
                self.check_api(req.api_id, &req.api_hash)?;
                let Some(login) = self.auth.phones.get(&req.phone_number) else {
                    return Err((400, "PHONE_NUMBER_INVALID".to_owned()));
                };
                let length = i32::try_from(login.code.len()).unwrap_or(5);
                let hash = hex::encode(rand::random::<[u8; 8]>());
                self.auth.codes.insert(hash.clone(), req.phone_number);
                Ok(tl::enums::auth::SentCode::from(tl::types::auth::SentCode {
                    r#type: tl::types::auth::SentCodeTypeApp { length }.into(),
                    phone_code_hash: hash,
                    next_type: None,
                    timeout: None,
                })
                .to_bytes())
            })(),
            f::auth::SignIn::CONSTRUCTOR_ID => (|| {
                let req = f::auth::SignIn::from_bytes(args).map_err(bad)?;
                let Some(phone) = self.auth.codes.get(&req.phone_code_hash).cloned() else {
                    return Err((400, "PHONE_CODE_EXPIRED".to_owned()));
                };
                if phone != req.phone_number {
                    return Err((400, "PHONE_NUMBER_INVALID".to_owned()));
                }
                let Some(login) = self.auth.phones.get(&phone) else {
                    return Err((400, "PHONE_NUMBER_INVALID".to_owned()));
                };
                if req.phone_code.as_deref() != Some(login.code.as_str()) {
                    return Err((400, "PHONE_CODE_INVALID".to_owned()));
                }
                let needs_password = login.password.is_some();
                self.auth.codes.remove(&req.phone_code_hash);
                if needs_password {
                    self.auth.password_pending = Some(phone);
                    return Err((401, "SESSION_PASSWORD_NEEDED".to_owned()));
                }
                Ok(self.authorization(me))
            })(),
            f::account::GetPassword::CONSTRUCTOR_ID => {
                let verifier = self
                    .auth
                    .password_pending
                    .as_ref()
                    .and_then(|p| self.auth.phones.get(p))
                    .and_then(|l| l.password.clone());
                let (current_algo, srp_b, srp_id, hint) = match verifier {
                    Some(v) => {
                        let challenge = v.challenge();
                        let srp_id: i64 = rand::random();
                        let g_b = challenge.g_b.to_vec();
                        self.auth.challenges.insert(srp_id, challenge);
                        (
                            Some(
                                tl::types::PasswordKdfAlgoSha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow {
                                    salt1: v.salt1.clone(),
                                    salt2: v.salt2.clone(),
                                    g: srp::G,
                                    p: srp::prime(),
                                }
                                .into(),
                            ),
                            Some(g_b),
                            Some(srp_id),
                            v.hint.clone(),
                        )
                    }
                    None => (None, None, None, None),
                };
                Ok(tl::enums::account::Password::from(tl::types::account::Password {
                    has_recovery: false,
                    has_secure_values: false,
                    has_password: current_algo.is_some(),
                    current_algo,
                    srp_b,
                    srp_id,
                    hint,
                    email_unconfirmed_pattern: None,
                    new_algo: tl::enums::PasswordKdfAlgo::Unknown,
                    new_secure_algo: tl::enums::SecurePasswordKdfAlgo::Unknown,
                    secure_random: rand::random::<[u8; 32]>().to_vec(),
                    pending_reset_date: None,
                    login_email_pattern: None,
                })
                .to_bytes())
            }
            f::auth::CheckPassword::CONSTRUCTOR_ID => (|| {
                let req = f::auth::CheckPassword::from_bytes(args).map_err(bad)?;
                let tl::enums::InputCheckPasswordSrp::Srp(check) = req.password else {
                    return Err((400, "PASSWORD_HASH_INVALID".to_owned()));
                };
                let Some(challenge) = self.auth.challenges.remove(&check.srp_id) else {
                    return Err((400, "SRP_ID_INVALID".to_owned()));
                };
                let verifier = self
                    .auth
                    .password_pending
                    .as_ref()
                    .and_then(|p| self.auth.phones.get(p))
                    .and_then(|l| l.password.as_ref());
                match verifier {
                    Some(v) if v.verify(&challenge, &check.a, &check.m1) => {
                        Ok(self.authorization(me))
                    }
                    Some(_) => Err((400, "PASSWORD_HASH_INVALID".to_owned())),
                    None => Err((400, "SRP_ID_INVALID".to_owned())),
                }
            })(),
            f::auth::ImportBotAuthorization::CONSTRUCTOR_ID => (|| {
                let req = f::auth::ImportBotAuthorization::from_bytes(args).map_err(bad)?;
                self.check_api(req.api_id, &req.api_hash)?;
                match self.auth.bots.get(&req.bot_auth_token).copied() {
                    Some(id) => Ok(self.authorization(id)),
                    None => Err((400, "ACCESS_TOKEN_INVALID".to_owned())),
                }
            })(),
            f::auth::ExportLoginToken::CONSTRUCTOR_ID => (|| {
                let req = f::auth::ExportLoginToken::from_bytes(args).map_err(bad)?;
                self.check_api(req.api_id, &req.api_hash)?;
                if self.auth.qr_accepted {
                    self.auth.qr_accepted = false;
                    // The owner's 2FA password, if a phone login of theirs has one.
                    let with_password = self
                        .auth
                        .phones
                        .iter()
                        .find(|(_, l)| l.password.is_some())
                        .map(|(p, _)| p.clone());
                    if let Some(phone) = with_password {
                        self.auth.password_pending = Some(phone);
                        return Err((401, "SESSION_PASSWORD_NEEDED".to_owned()));
                    }
                    let bytes = self.authorization(me);
                    let authorization = tl::enums::auth::Authorization::from_bytes(&bytes)
                        .map_err(|e| (500, e.to_string()))?;
                    return Ok(tl::enums::auth::LoginToken::from(
                        tl::types::auth::LoginTokenSuccess { authorization },
                    )
                    .to_bytes());
                }
                self.auth.qr_tokens += 1;
                Ok(tl::enums::auth::LoginToken::from(tl::types::auth::LoginToken {
                    expires: now() + 30,
                    token: rand::random::<[u8; 16]>().to_vec(),
                })
                .to_bytes())
            })(),
            f::auth::LogOut::CONSTRUCTOR_ID => {
                self.auth.authorized = false;
                Ok(tl::enums::auth::LoggedOut::from(tl::types::auth::LoggedOut {
                    future_auth_token: None,
                })
                .to_bytes())
            }
            _ => return None,
        })
    }

    /// Basic groups and channels as `chats` of a response, each once.
    fn tl_chats(&self, peers: impl IntoIterator<Item = TestPeer>) -> Vec<tl::enums::Chat> {
        let mut seen = Vec::new();
        for p in peers {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen.into_iter()
            .filter_map(|p| match p {
                TestPeer::Chat(id) => self.chats.get(&id).map(|t| tl_build::chat(id, t, now())),
                TestPeer::Channel(id) => self.channels.get(&id).map(|c| {
                    let c = &c.channel;
                    tl_build::channel(
                        c.id,
                        c.access_hash,
                        &c.title,
                        c.username.as_deref(),
                        c.megagroup,
                        now(),
                    )
                }),
                TestPeer::User(_) => None,
            })
            .collect()
    }

    fn involved(&self, msgs: &[&WorldMessage]) -> (Vec<tl::enums::User>, Vec<tl::enums::Chat>) {
        let mut users = vec![self.me.id];
        let mut chats = Vec::new();
        for m in msgs {
            users.extend(m.from);
            match m.peer {
                TestPeer::User(u) => users.push(u),
                p @ (TestPeer::Chat(_) | TestPeer::Channel(_)) => chats.push(p),
            }
        }
        (self.tl_users(users), self.tl_chats(chats))
    }

    /// `updates` carrying one new message (`updateNewChannelMessage` in a channel), with its
    /// users and chats, and `updateMessageID` first for a send.
    pub(crate) fn updates_for(
        &self,
        m: &WorldMessage,
        random_id: Option<i64>,
    ) -> tl::enums::Updates {
        let (users, chats) = self.involved(&[m]);
        let mut updates = Vec::new();
        if let Some(random_id) = random_id {
            updates.push(tl::types::UpdateMessageId { id: m.id, random_id }.into());
        }
        let message = self.tl_message(m);
        updates.push(match m.peer {
            TestPeer::Channel(_) => {
                tl::types::UpdateNewChannelMessage { message, pts: m.pts, pts_count: 1 }.into()
            }
            TestPeer::User(_) | TestPeer::Chat(_) => {
                tl::types::UpdateNewMessage { message, pts: m.pts, pts_count: 1 }.into()
            }
        });
        tl::types::Updates { updates, users, chats, date: m.date, seq: 0 }.into()
    }

    /// The short form Telegram uses for private and basic-group messages (channel messages
    /// have none: they go out as [`World::updates_for`]).
    pub(crate) fn short_updates_for(&self, m: &WorldMessage) -> tl::enums::Updates {
        let from = m.from.unwrap_or(self.me.id);
        match m.peer {
            TestPeer::User(user_id) => tl::types::UpdateShortMessage {
                out: m.out,
                mentioned: false,
                media_unread: false,
                silent: false,
                id: m.id,
                user_id,
                message: m.text.clone(),
                pts: m.pts,
                pts_count: 1,
                date: m.date,
                fwd_from: None,
                via_bot_id: None,
                reply_to: m.reply_to.map(tl_build::reply_header),
                entities: None,
                ttl_period: None,
            }
            .into(),
            TestPeer::Chat(chat_id) => tl::types::UpdateShortChatMessage {
                out: m.out,
                mentioned: false,
                media_unread: false,
                silent: false,
                id: m.id,
                from_id: from,
                chat_id,
                message: m.text.clone(),
                pts: m.pts,
                pts_count: 1,
                date: m.date,
                fwd_from: None,
                via_bot_id: None,
                reply_to: m.reply_to.map(tl_build::reply_header),
                entities: None,
                ttl_period: None,
            }
            .into(),
            TestPeer::Channel(_) => self.updates_for(m, None),
        }
    }

    fn state(&self) -> tl::types::updates::State {
        tl::types::updates::State { pts: self.pts, qts: 0, date: now(), seq: 0, unread_count: 0 }
    }

    fn peer_of_input(&self, peer: &tl::enums::InputPeer) -> Result<TestPeer, RpcFailure> {
        match peer {
            tl::enums::InputPeer::User(u) if self.users.contains_key(&u.user_id) => {
                Ok(TestPeer::User(u.user_id))
            }
            tl::enums::InputPeer::PeerSelf => Ok(TestPeer::User(self.me.id)),
            tl::enums::InputPeer::Chat(c) if self.chats.contains_key(&c.chat_id) => {
                Ok(TestPeer::Chat(c.chat_id))
            }
            tl::enums::InputPeer::Channel(c) => {
                self.channel_of_input(c.channel_id, c.access_hash).map(|c| c.peer())
            }
            _ => Err((400, "PEER_ID_INVALID".to_owned())),
        }
    }

    /// The channel a request names, if its access hash is the one handed out.
    fn channel_of_input(&self, id: i64, access_hash: i64) -> Result<&TestChannel, RpcFailure> {
        match self.channels.get(&id) {
            Some(c) if c.channel.access_hash == access_hash => Ok(&c.channel),
            _ => Err((400, "CHANNEL_INVALID".to_owned())),
        }
    }

    /// Refuses a send where the owner may not write: a broadcast channel.
    fn check_can_write(&self, peer: TestPeer) -> Result<(), RpcFailure> {
        match peer.channel_id().and_then(|id| self.channels.get(&id)) {
            Some(c) if !c.channel.megagroup => Err((403, "CHAT_WRITE_FORBIDDEN".to_owned())),
            _ => Ok(()),
        }
    }

    /// Answers an RPC the way Telegram would, or says it is not supported.
    pub(crate) fn answer(&mut self, ctor: u32, body: &[u8]) -> Result<Vec<u8>, RpcFailure> {
        use tl::functions as f;
        let args = body.get(4..).unwrap_or_default();
        let bad = |e: tl::deserialize::Error| (400, format!("INPUT_REQUEST_INVALID: {e}"));
        if let Some(answer) = self.answer_auth(ctor, args) {
            return answer;
        }
        if !self.auth.authorized && ctor != f::Ping::CONSTRUCTOR_ID {
            return Err((401, "AUTH_KEY_UNREGISTERED".to_owned()));
        }
        match ctor {
            f::updates::GetState::CONSTRUCTOR_ID => {
                Ok(tl::enums::updates::State::from(self.state()).to_bytes())
            }
            f::updates::GetDifference::CONSTRUCTOR_ID => {
                let req = f::updates::GetDifference::from_bytes(args).map_err(bad)?;
                Ok(self.difference(req.pts).to_bytes())
            }
            f::messages::SendMessage::CONSTRUCTOR_ID => {
                let req = f::messages::SendMessage::from_bytes(args).map_err(bad)?;
                let peer = self.peer_of_input(&req.peer)?;
                self.check_can_write(peer)?;
                if req.message.is_empty() {
                    return Err((400, "MESSAGE_EMPTY".to_owned()));
                }
                if let Some(m) = self.sent_with(req.random_id) {
                    if self.duplicate_is_error {
                        return Err((500, "RANDOM_ID_DUPLICATE".to_owned()));
                    }
                    // Telegram deduplicates on random_id: answer with the message already sent.
                    return Ok(self.updates_for(&m, Some(req.random_id)).to_bytes());
                }
                let reply_to = match &req.reply_to {
                    Some(tl::enums::InputReplyTo::Message(r)) => Some(r.reply_to_msg_id),
                    _ => None,
                };
                let me = Some(self.me.id);
                let m = self
                    .store(peer, me, &req.message, reply_to, Some(req.random_id))
                    .ok_or_else(|| (400, "PEER_ID_INVALID".to_owned()))?;
                Ok(self.updates_for(&m, Some(req.random_id)).to_bytes())
            }
            f::upload::SaveFilePart::CONSTRUCTOR_ID => {
                let req = f::upload::SaveFilePart::from_bytes(args).map_err(bad)?;
                self.uploads.entry(req.file_id).or_default().insert(req.file_part, req.bytes);
                Ok(true.to_bytes())
            }
            f::upload::SaveBigFilePart::CONSTRUCTOR_ID => {
                let req = f::upload::SaveBigFilePart::from_bytes(args).map_err(bad)?;
                self.uploads.entry(req.file_id).or_default().insert(req.file_part, req.bytes);
                Ok(true.to_bytes())
            }
            f::messages::SendMedia::CONSTRUCTOR_ID => {
                let req = f::messages::SendMedia::from_bytes(args).map_err(bad)?;
                let peer = self.peer_of_input(&req.peer)?;
                self.check_can_write(peer)?;
                if let Some(m) = self.sent_with(req.random_id) {
                    if self.duplicate_is_error {
                        return Err((500, "RANDOM_ID_DUPLICATE".to_owned()));
                    }
                    return Ok(self.updates_for(&m, Some(req.random_id)).to_bytes());
                }
                let (file, photo, mime_type) = match req.media {
                    tl::enums::InputMedia::UploadedPhoto(p) => (p.file, true, None),
                    tl::enums::InputMedia::UploadedDocument(d) => {
                        (d.file, false, Some(d.mime_type))
                    }
                    _ => return Err((400, "MEDIA_INVALID".to_owned())),
                };
                let (file_id, parts, name) = match file {
                    tl::enums::InputFile::File(f) => (f.id, f.parts, f.name),
                    tl::enums::InputFile::Big(f) => (f.id, f.parts, f.name),
                    _ => return Err((400, "MEDIA_INVALID".to_owned())),
                };
                let Some(uploaded) = self.uploads.get(&file_id) else {
                    return Err((400, "FILE_PARTS_INVALID".to_owned()));
                };
                let mut data = Vec::new();
                for part in 0..parts {
                    let Some(bytes) = uploaded.get(&part) else {
                        return Err((400, format!("FILE_PART_{part}_MISSING")));
                    };
                    data.extend_from_slice(bytes);
                }
                let reply_to = match &req.reply_to {
                    Some(tl::enums::InputReplyTo::Message(r)) => Some(r.reply_to_msg_id),
                    _ => None,
                };
                let me = Some(self.me.id);
                let mut m = self
                    .store(peer, me, &req.message, reply_to, Some(req.random_id))
                    .ok_or_else(|| (400, "PEER_ID_INVALID".to_owned()))?;
                m.media = Some(WorldMedia { photo, name, mime_type, data });
                self.set_media(m.peer, m.id, m.media.clone());
                Ok(self.updates_for(&m, Some(req.random_id)).to_bytes())
            }
            f::upload::GetFile::CONSTRUCTOR_ID => {
                let req = f::upload::GetFile::from_bytes(args).map_err(bad)?;
                let tl::enums::InputFileLocation::InputDocumentFileLocation(loc) = req.location
                else {
                    return Err((400, "LOCATION_INVALID".to_owned()));
                };
                let found = loc
                    .id
                    .checked_sub(DOCUMENT_BASE)
                    .and_then(|index| usize::try_from(index).ok())
                    .and_then(|index| self.documents.get(index))
                    .and_then(|&(peer, id)| {
                        self.messages.iter().find(|m| m.peer == peer && m.id == id)
                    })
                    .and_then(|m| m.media.as_ref());
                let Some(media) = found.filter(|_| loc.access_hash == DOCUMENT_HASH) else {
                    return Err((400, "FILE_ID_INVALID".to_owned()));
                };
                if req.limit <= 0 || req.limit > 1024 * 1024 || req.offset < 0 {
                    return Err((400, "LIMIT_INVALID".to_owned()));
                }
                let start = usize::try_from(req.offset).unwrap_or(usize::MAX).min(media.data.len());
                let end = start.saturating_add(req.limit as usize).min(media.data.len());
                Ok(tl::enums::upload::File::from(tl::types::upload::File {
                    r#type: tl::enums::storage::FileType::FilePartial,
                    mtime: 0,
                    bytes: media.data[start..end].to_vec(),
                })
                .to_bytes())
            }
            f::messages::GetHistory::CONSTRUCTOR_ID => {
                let req = f::messages::GetHistory::from_bytes(args).map_err(bad)?;
                let peer = self.peer_of_input(&req.peer)?;
                Ok(self.history(peer, &req).to_bytes())
            }
            f::updates::GetChannelDifference::CONSTRUCTOR_ID => {
                let req = f::updates::GetChannelDifference::from_bytes(args).map_err(bad)?;
                let tl::enums::InputChannel::Channel(input) = &req.channel else {
                    return Err((400, "CHANNEL_INVALID".to_owned()));
                };
                let channel = self.channel_of_input(input.channel_id, input.access_hash)?.id;
                if req.pts <= 0 {
                    return Err((400, "PERSISTENT_TIMESTAMP_INVALID".to_owned()));
                }
                Ok(self.channel_difference(channel, req.pts, req.limit).to_bytes())
            }
            f::contacts::ResolveUsername::CONSTRUCTOR_ID => {
                let req = f::contacts::ResolveUsername::from_bytes(args).map_err(bad)?;
                let wanted = req.username.trim_start_matches('@').to_lowercase();
                let is = |u: &Option<String>| {
                    u.as_deref().map(str::to_lowercase) == Some(wanted.clone())
                };
                let peer = if let Some(u) = self.users.values().find(|u| is(&u.username)) {
                    TestPeer::User(u.id)
                } else if let Some(c) = self.channels.values().find(|c| is(&c.channel.username)) {
                    TestPeer::Channel(c.channel.id)
                } else {
                    return Err((400, "USERNAME_NOT_OCCUPIED".to_owned()));
                };
                let (users, chats) = match peer {
                    TestPeer::User(id) => (self.tl_users([id]), Vec::new()),
                    other => (Vec::new(), self.tl_chats([other])),
                };
                Ok(tl::enums::contacts::ResolvedPeer::from(tl::types::contacts::ResolvedPeer {
                    peer: Self::tl_peer(peer),
                    chats,
                    users,
                })
                .to_bytes())
            }
            f::messages::GetDialogs::CONSTRUCTOR_ID => {
                f::messages::GetDialogs::from_bytes(args).map_err(bad)?;
                Ok(self.dialogs().to_bytes())
            }
            f::users::GetUsers::CONSTRUCTOR_ID => {
                let req = f::users::GetUsers::from_bytes(args).map_err(bad)?;
                let ids: Vec<i64> = req
                    .id
                    .iter()
                    .filter_map(|u| match u {
                        tl::enums::InputUser::UserSelf => Some(self.me.id),
                        tl::enums::InputUser::User(u) => Some(u.user_id),
                        _ => None,
                    })
                    .collect();
                Ok(self.tl_users(ids).to_bytes())
            }
            f::Ping::CONSTRUCTOR_ID => {
                let req = f::Ping::from_bytes(args).map_err(bad)?;
                Ok(tl::enums::Pong::from(tl::types::Pong { msg_id: 0, ping_id: req.ping_id })
                    .to_bytes())
            }
            _ => Err((400, format!("LOOPBACK_UNSUPPORTED_{}", tl::name_for_id(ctor)))),
        }
    }

    /// The account's difference: private chats and basic groups only, as channels have
    /// their own (`updates.getChannelDifference`).
    fn difference(&self, from_pts: i32) -> tl::enums::updates::Difference {
        if from_pts >= self.pts {
            return tl::types::updates::DifferenceEmpty { date: now(), seq: 0 }.into();
        }
        if let Some(limit) = self.too_long_after
            && self.pts.saturating_sub(from_pts) > limit
        {
            return tl::types::updates::DifferenceTooLong { pts: self.pts }.into();
        }
        let new: Vec<&WorldMessage> = self
            .messages
            .iter()
            .filter(|m| m.peer.channel_id().is_none() && m.pts > from_pts)
            .collect();
        let edited: Vec<&WorldMessage> = self
            .edits
            .iter()
            .filter(|(c, pts, _)| c.is_none() && *pts > from_pts)
            .filter_map(|(_, _, id)| {
                self.messages.iter().find(|m| m.peer.channel_id().is_none() && m.id == *id)
            })
            .collect();
        let mut involved = new.clone();
        involved.extend(edited);
        let (users, mut chats) = self.involved(&involved);
        let mut other = self.edits_between(None, from_pts, self.pts);
        // Channels joined elsewhere since the client's state: `updateChannelTooLong` with
        // the pts to start from (the channel is unknown to the client).
        let joined: Vec<(i64, i32)> = self
            .joined_elsewhere
            .iter()
            .filter(|(at, _, _)| *at >= from_pts)
            .map(|&(_, channel, pts)| (channel, pts))
            .collect();
        for &(channel_id, pts) in &joined {
            other.push((0, tl::types::UpdateChannelTooLong { channel_id, pts: Some(pts) }.into()));
        }
        let known: Vec<i64> = chats
            .iter()
            .filter_map(|c| match c {
                tl::enums::Chat::Channel(c) => Some(c.id),
                _ => None,
            })
            .collect();
        chats.extend(self.tl_chats(
            joined.iter().filter(|(c, _)| !known.contains(c)).map(|&(c, _)| TestPeer::Channel(c)),
        ));
        other.extend(
            self.deletions
                .iter()
                .filter(|d| d.channel.is_none() && d.pts > from_pts)
                .map(|d| (d.pts, d.update())),
        );
        other.sort_by_key(|(pts, _)| *pts);
        tl::types::updates::Difference {
            new_messages: new.iter().map(|m| self.tl_message(m)).collect(),
            new_encrypted_messages: Vec::new(),
            other_updates: other.into_iter().map(|(_, u)| u).collect(),
            chats,
            users,
            state: self.state().into(),
        }
        .into()
    }

    /// Every chat with a message, newest first, in one complete `messages.dialogs`.
    fn dialogs(&self) -> tl::enums::messages::Dialogs {
        let mut tops: Vec<&WorldMessage> = Vec::new();
        for m in self.messages.iter().rev() {
            if !tops.iter().any(|t| t.peer == m.peer) {
                tops.push(m);
            }
        }
        let (users, chats) = self.involved(&tops);
        let dialogs = tops
            .iter()
            .map(|m| {
                let mut d = tl_build::channel_dialog(0, m.id, m.pts);
                let tl::enums::Dialog::Dialog(x) = &mut d else {
                    unreachable!("tl_build::channel_dialog builds a dialog");
                };
                x.peer = Self::tl_peer(m.peer);
                x.pts = m.peer.channel_id().and_then(|id| self.channel_pts(id));
                d
            })
            .collect();
        tl::types::messages::Dialogs {
            dialogs,
            messages: tops.iter().map(|m| self.tl_message(m)).collect(),
            chats,
            users,
        }
        .into()
    }

    fn history(
        &self,
        peer: TestPeer,
        req: &tl::functions::messages::GetHistory,
    ) -> tl::enums::messages::Messages {
        let limit = usize::try_from(req.limit.clamp(1, 100)).unwrap_or(100);
        let mut found: Vec<&WorldMessage> = self
            .messages
            .iter()
            .rev()
            .filter(|m| m.peer == peer)
            .filter(|m| req.offset_id <= 0 || m.id < req.offset_id)
            .filter(|m| req.max_id <= 0 || m.id < req.max_id)
            .filter(|m| m.id > req.min_id)
            .collect();
        let count = found.len();
        found.truncate(limit);
        let (users, chats) = self.involved(&found);
        if let Some(pts) = peer.channel_id().and_then(|id| self.channel_pts(id)) {
            // In a channel, Telegram answers with its pts (and the channel in `chats`, even
            // when no message was found).
            let chats = if chats.is_empty() { self.tl_chats([peer]) } else { chats };
            return tl::types::messages::ChannelMessages {
                inexact: false,
                pts,
                count: i32::try_from(count).unwrap_or(i32::MAX),
                offset_id_offset: None,
                messages: found.iter().map(|m| self.tl_message(m)).collect(),
                topics: Vec::new(),
                chats,
                users,
            }
            .into();
        }
        tl::types::messages::MessagesSlice {
            inexact: false,
            count: i32::try_from(count).unwrap_or(i32::MAX),
            next_rate: None,
            offset_id_offset: None,
            search_flood: None,
            messages: found.iter().map(|m| self.tl_message(m)).collect(),
            topics: Vec::new(),
            chats,
            users,
        }
        .into()
    }

    /// A channel's difference from `from_pts`: empty when up to date; else its new messages
    /// (at most `limit` at once, `final` once the rest fits), or `channelDifferenceTooLong`
    /// when the client is further behind than [`World::channel_too_long_after`].
    fn channel_difference(
        &self,
        channel: i64,
        from_pts: i32,
        limit: i32,
    ) -> tl::enums::updates::ChannelDifference {
        let pts = self.channel_pts(channel).unwrap_or(1);
        if from_pts >= pts {
            return tl::types::updates::ChannelDifferenceEmpty {
                r#final: true,
                pts,
                timeout: None,
            }
            .into();
        }
        let peer = TestPeer::Channel(channel);
        let in_channel = || self.messages.iter().filter(move |m| m.peer == peer);
        if let Some(limit) = self.channel_too_long_after
            && pts.saturating_sub(from_pts) > limit
        {
            let top: Vec<&WorldMessage> = in_channel().next_back().into_iter().collect();
            let (users, chats) = self.involved(&top);
            return tl::types::updates::ChannelDifferenceTooLong {
                r#final: true,
                timeout: None,
                dialog: tl_build::channel_dialog(channel, top.first().map_or(0, |m| m.id), pts),
                messages: top.iter().map(|m| self.tl_message(m)).collect(),
                chats,
                users,
            }
            .into();
        }
        let limit = usize::try_from(limit).ok().filter(|l| *l > 0).unwrap_or(100);
        let newer: Vec<&WorldMessage> = in_channel().filter(|m| m.pts > from_pts).collect();
        let done = newer.len() <= limit;
        let new: Vec<&WorldMessage> = newer.into_iter().take(limit).collect();
        // Not final: the pts of the last message given, so the client asks again from there.
        let reached = if done { pts } else { new.last().map_or(pts, |m| m.pts) };
        let (users, mut chats) = self.involved(&new);
        if chats.is_empty() {
            chats = self.tl_chats([peer]);
        }
        tl::types::updates::ChannelDifference {
            r#final: done,
            pts: reached,
            timeout: None,
            new_messages: new.iter().map(|m| self.tl_message(m)).collect(),
            other_updates: {
                let mut other = self.edits_between(Some(channel), from_pts, reached);
                other.extend(
                    self.deletions
                        .iter()
                        .filter(|d| {
                            d.channel == Some(channel) && d.pts > from_pts && d.pts <= reached
                        })
                        .map(|d| (d.pts, d.update())),
                );
                other.sort_by_key(|(pts, _)| *pts);
                other.into_iter().map(|(_, u)| u).collect()
            },
            chats,
            users,
        }
        .into()
    }
}
