//! Telegram messages as [`InboundMessage`]s.

use std::collections::HashMap;

use channel_core::{Direction, IdentityInfo, InboundMessage, Timestamp};
use grammers_client::peer::PeerMap;
use grammers_session::types::PeerId;
use grammers_tl_types as tl;

use crate::address;

/// Names of peers, from an update's peer map or a response's users and chats.
pub(crate) trait Names {
    /// Display name and username of `peer`, when known.
    fn names(&self, peer: PeerId) -> (Option<String>, Option<String>);
}

impl Names for PeerMap {
    fn names(&self, peer: PeerId) -> (Option<String>, Option<String>) {
        match self.get(peer) {
            Some(p) => (p.name().map(str::to_owned), p.username().map(str::to_owned)),
            None => (None, None),
        }
    }
}

/// Names taken from the `users` and `chats` of a response.
#[derive(Default)]
pub(crate) struct NameTable(HashMap<PeerId, (Option<String>, Option<String>)>);

impl NameTable {
    pub(crate) fn from_tl(users: &[tl::enums::User], chats: &[tl::enums::Chat]) -> Self {
        let mut t = HashMap::new();
        for u in users {
            if let tl::enums::User::User(u) = u
                && let Some(id) = PeerId::user(u.id)
            {
                let name = match (&u.first_name, &u.last_name) {
                    (Some(f), Some(l)) => Some(format!("{f} {l}")),
                    (Some(f), None) => Some(f.clone()),
                    (None, l) => l.clone(),
                };
                t.insert(id, (name, u.username.clone()));
            }
        }
        for c in chats {
            match c {
                tl::enums::Chat::Chat(c) => {
                    if let Some(id) = PeerId::chat(c.id) {
                        t.insert(id, (Some(c.title.clone()), None));
                    }
                }
                tl::enums::Chat::Channel(c) => {
                    if let Some(id) = PeerId::channel(c.id) {
                        t.insert(id, (Some(c.title.clone()), c.username.clone()));
                    }
                }
                _ => {}
            }
        }
        Self(t)
    }
}

impl Names for NameTable {
    fn names(&self, peer: PeerId) -> (Option<String>, Option<String>) {
        self.0.get(&peer).cloned().unwrap_or_default()
    }
}

/// The peer a Telegram `Peer` names; `None` for an id out of Telegram's ranges (grammers'
/// own conversion only checks that in debug builds, with a panic).
pub(crate) fn peer_id(peer: &tl::enums::Peer) -> Option<PeerId> {
    match peer {
        tl::enums::Peer::User(u) => PeerId::user(u.user_id),
        tl::enums::Peer::Chat(c) => PeerId::chat(c.chat_id),
        tl::enums::Peer::Channel(c) => PeerId::channel(c.channel_id),
    }
}

/// The chat and id of a message (`None` for a service or empty message, or an invalid chat).
pub(crate) fn message_key(message: &tl::enums::Message) -> Option<(PeerId, i32)> {
    match message {
        tl::enums::Message::Message(m) => Some((peer_id(&m.peer_id)?, m.id)),
        _ => None,
    }
}

fn identity(peer: PeerId, names: &dyn Names) -> IdentityInfo {
    let (display_name, username) = names.names(peer);
    IdentityInfo { address: address::address(peer), display_name, username }
}

/// Maps a Telegram message to an [`InboundMessage`]: `None` for service messages, empty
/// ones and ones in a chat with an invalid id. `client_key` marks the echo of our own send.
///
/// The thread is the chat (a supergroup or channel: its `-100…` dialog id). The remote of an
/// incoming message is its author (`from_id`), or the chat itself when there is none (a
/// broadcast channel's post, a private chat); an outgoing one's is the chat.
pub(crate) fn inbound_message(
    message: &tl::enums::Message,
    names: &dyn Names,
    client_key: Option<String>,
) -> Option<InboundMessage> {
    let tl::enums::Message::Message(m) = message else {
        return None;
    };
    let chat = peer_id(&m.peer_id)?;
    let sender = match (&m.from_id, m.out) {
        // An author id out of range is kept as the chat's message rather than lost.
        (Some(from), _) => peer_id(from).unwrap_or(chat),
        (None, true) => PeerId::self_user(),
        (None, false) => chat,
    };
    let (direction, remote) = if m.out {
        (Direction::Outbound, identity(chat, names))
    } else {
        (Direction::Inbound, identity(sender, names))
    };
    let reply_to = match &m.reply_to {
        Some(tl::enums::MessageReplyHeader::Header(h)) => {
            h.reply_to_msg_id.map(|id| address::provider_id(chat, id))
        }
        _ => None,
    };
    let text = (!m.message.is_empty()).then(|| m.message.clone());
    Some(InboundMessage {
        provider_id: address::provider_id(chat, m.id),
        thread_key: address::thread_key(chat),
        remote,
        direction,
        client_key: if m.out { client_key } else { None },
        text,
        html: None,
        reply_to,
        references: Vec::new(),
        attachments: Vec::new(),
        parse_error: None,
        defects: Vec::new(),
        sent_at: Timestamp::from_unix_seconds(i64::from(m.date)),
        cursor: None,
    })
}

/// Maps an edited Telegram message to an [`InboundEdit`](channel_core::InboundEdit): its
/// provider id, its new text, and the time of the edit (`edit_date`, else its date).
pub(crate) fn edit(message: &tl::enums::Message) -> Option<channel_core::InboundEdit> {
    let tl::enums::Message::Message(m) = message else {
        return None;
    };
    let chat = peer_id(&m.peer_id)?;
    Some(channel_core::InboundEdit {
        provider_id: address::provider_id(chat, m.id),
        text: (!m.message.is_empty()).then(|| m.message.clone()),
        html: None,
        edited_at: Timestamp::from_unix_seconds(i64::from(m.edit_date.unwrap_or(m.date))),
    })
}

/// Maps Telegram's deletions to an [`InboundDeletion`](channel_core::InboundDeletion):
/// `updateDeleteMessages` names bare ids of the account's private chats and basic groups,
/// `updateDeleteChannelMessages` ids of one supergroup or channel. `None` for other updates,
/// an empty list or an invalid channel id.
pub(crate) fn deletion(update: &tl::enums::Update) -> Option<channel_core::InboundDeletion> {
    let provider_ids: Vec<String> = match update {
        tl::enums::Update::DeleteMessages(u) => {
            u.messages.iter().map(|&id| address::common_provider_id(id)).collect()
        }
        tl::enums::Update::DeleteChannelMessages(u) => {
            let channel = PeerId::channel(u.channel_id)?;
            u.messages.iter().map(|&id| address::channel_provider_id(channel, id)).collect()
        }
        _ => return None,
    };
    (!provider_ids.is_empty())
        .then(|| channel_core::InboundDeletion { provider_ids, deleted_at: Timestamp::now() })
}
