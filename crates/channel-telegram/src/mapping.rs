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

fn identity(peer: PeerId, names: &dyn Names) -> IdentityInfo {
    let (display_name, username) = names.names(peer);
    IdentityInfo { address: address::address(peer), display_name, username }
}

/// Maps a Telegram message to an [`InboundMessage`]: `None` for service messages and
/// empty ones. `client_key` marks the echo of our own send.
pub(crate) fn inbound_message(
    message: &tl::enums::Message,
    names: &dyn Names,
    client_key: Option<String>,
) -> Option<InboundMessage> {
    let tl::enums::Message::Message(m) = message else {
        return None;
    };
    let chat = PeerId::from(&m.peer_id);
    let sender = match (&m.from_id, m.out) {
        (Some(from), _) => PeerId::from(from),
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
    let chat = PeerId::from(&m.peer_id);
    Some(channel_core::InboundEdit {
        provider_id: address::provider_id(chat, m.id),
        text: (!m.message.is_empty()).then(|| m.message.clone()),
        html: None,
        edited_at: Timestamp::from_unix_seconds(i64::from(m.edit_date.unwrap_or(m.date))),
    })
}
