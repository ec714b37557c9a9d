//! Telegram ids as the core stores them: addresses, thread keys, provider ids, random ids.

use grammers_session::types::{PeerId, PeerKind};
use sha2::{Digest, Sha256};

/// The identity address of a Telegram peer: `tg:<bot-API dialog id>` (`tg:123` for a user).
pub fn address(peer: PeerId) -> String {
    format!("tg:{}", dialog_id(peer))
}

/// The bot-API dialog id of a peer (users positive, groups negative, channels `-100…`).
pub fn dialog_id(peer: PeerId) -> i64 {
    peer.bot_api_dialog_id().unwrap_or(0)
}

/// The thread key of a chat: its dialog id.
pub fn thread_key(chat: PeerId) -> String {
    dialog_id(chat).to_string()
}

/// Reads a thread key (or a `tg:` address) back into a peer id.
pub fn parse_peer(key: &str) -> Option<PeerId> {
    let raw = key.strip_prefix("tg:").unwrap_or(key);
    raw.parse::<i64>().ok().and_then(PeerId::from_bot_api_dialog_id)
}

/// The provider id of a message, unique per account as Telegram numbers messages: private
/// chats and basic groups share one numbering per account, so there it is the bare message
/// id (`"42"`); a supergroup or channel numbers its own, so there it is
/// `<channel's dialog id>:<message id>` (`"-1000000000099:42"`). This is also what
/// Telegram's deletions name (`updateDeleteMessages` carries bare ids).
pub fn provider_id(chat: PeerId, message_id: i32) -> String {
    if chat.kind() == PeerKind::Channel {
        channel_provider_id(chat, message_id)
    } else {
        common_provider_id(message_id)
    }
}

/// The provider id of message `message_id` of a private chat or basic group.
pub fn common_provider_id(message_id: i32) -> String {
    message_id.to_string()
}

/// The provider id of message `message_id` of the supergroup or channel `channel`.
pub fn channel_provider_id(channel: PeerId, message_id: i32) -> String {
    format!("{}:{}", dialog_id(channel), message_id)
}

/// The Telegram message id in a provider id (its chat is the message's thread).
pub fn message_id(provider_id: &str) -> Option<i32> {
    let id = provider_id.rsplit_once(':').map_or(provider_id, |(_, id)| id);
    id.parse().ok()
}

/// The `random_id` sent with a message: derived from our idempotency key, so every attempt
/// of one message carries the same value and Telegram deduplicates retries.
pub fn random_id(client_key: &str) -> i64 {
    let digest = Sha256::digest(client_key.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let user = PeerId::user(42).unwrap();
        let group = PeerId::chat(7).unwrap();
        let channel = PeerId::channel(99).unwrap();
        for peer in [user, group, channel] {
            assert_eq!(parse_peer(&thread_key(peer)), Some(peer));
            assert_eq!(parse_peer(&address(peer)), Some(peer));
            assert_eq!(message_id(&provider_id(peer, 5)), Some(5));
        }
        assert_eq!(address(user), "tg:42");
        assert_eq!(thread_key(channel), "-1000000000099");
    }

    #[test]
    fn provider_ids_follow_telegrams_numbering() {
        let user = PeerId::user(42).unwrap();
        let group = PeerId::chat(7).unwrap();
        let channel = PeerId::channel(99).unwrap();
        assert_eq!(provider_id(user, 5), "5", "one numbering per account");
        assert_eq!(provider_id(group, 5), "5");
        assert_eq!(provider_id(channel, 5), "-1000000000099:5", "one numbering per channel");
        assert_eq!(common_provider_id(5), provider_id(user, 5));
        assert_eq!(channel_provider_id(channel, 5), provider_id(channel, 5));
    }

    #[test]
    fn random_id_is_stable_per_key() {
        assert_eq!(random_id("m-1"), random_id("m-1"));
        assert_ne!(random_id("m-1"), random_id("m-2"));
    }

    #[test]
    fn garbage_is_not_a_peer() {
        assert_eq!(parse_peer("tg:abc"), None);
        assert_eq!(message_id("nope"), None);
        assert_eq!(message_id("-100:x"), None);
        assert_eq!(parse_peer("0"), None);
    }
}
