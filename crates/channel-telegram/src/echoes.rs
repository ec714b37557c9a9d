//! Recognising the echo of our own sends in the update stream.
//!
//! A send carries `random_id`, derived from our `client_key`. Telegram answers (and echoes)
//! with `updateMessageID{id, random_id}` next to the new message, so the message id can be
//! mapped back to the `client_key` and the engine updates the pending row instead of adding
//! one. Message ids are only unique within a chat (each channel numbers its own), so the
//! echo is known by its chat and id.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

const CAPACITY: usize = 10_000;

/// A message: the bot-API dialog id of its chat and its id there.
type MessageKey = (i64, i32);

#[derive(Default)]
struct Inner {
    /// random_id -> (client key, chat).
    by_random_id: HashMap<i64, (String, i64)>,
    by_message: HashMap<MessageKey, String>,
    sent: HashMap<i64, i32>,
    order: VecDeque<i64>,
}

/// The client keys of sends in flight, by random id and then by message.
#[derive(Default)]
pub(crate) struct Echoes(Mutex<Inner>);

impl Echoes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a send into `chat` (a bot-API dialog id) about to go out.
    pub(crate) fn sending(&self, random_id: i64, client_key: &str, chat: i64) {
        let mut inner = self.lock();
        if inner.by_random_id.insert(random_id, (client_key.to_owned(), chat)).is_none() {
            inner.order.push_back(random_id);
        }
        while inner.order.len() > CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.by_random_id.remove(&old);
                inner.sent.remove(&old);
            }
        }
    }

    /// Notes Telegram's id for a random id (from `updateMessageID` or the send's answer).
    pub(crate) fn message_id(&self, random_id: i64, message_id: i32) {
        let mut inner = self.lock();
        if let Some((key, chat)) = inner.by_random_id.get(&random_id).cloned() {
            if inner.by_message.len() >= CAPACITY {
                inner.by_message.clear();
            }
            inner.by_message.insert((chat, message_id), key);
            inner.sent.insert(random_id, message_id);
        }
    }

    /// Telegram's id of the message sent with `random_id`, once seen.
    pub(crate) fn sent_id(&self, random_id: i64) -> Option<i32> {
        self.lock().sent.get(&random_id).copied()
    }

    /// The client key of our own message `message_id` in `chat` (a bot-API dialog id), if
    /// it is one.
    pub(crate) fn client_key(&self, chat: i64, message_id: i32) -> Option<String> {
        self.lock().by_message.get(&(chat, message_id)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_maps_back_to_the_client_key_in_its_chat_only() {
        let e = Echoes::default();
        e.sending(7, "key-7", -1_000_000_000_042);
        e.message_id(7, 100);
        e.message_id(8, 101);
        assert_eq!(e.client_key(-1_000_000_000_042, 100).as_deref(), Some("key-7"));
        assert_eq!(e.client_key(2001, 100), None, "the same id in another chat is not ours");
        assert_eq!(e.client_key(-1_000_000_000_042, 101), None);
        assert_eq!(e.sent_id(7), Some(100));
        assert_eq!(e.sent_id(8), None);
    }
}
