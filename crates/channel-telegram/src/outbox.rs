//! Sends in flight, kept in the account state so that the echo of a send interrupted by a
//! crash is still known as ours after the restart.
//!
//! While a process runs, the echo of its own send is recognised by the `updateMessageID`
//! that maps our `random_id` to Telegram's message id ([`crate::echoes`]). That map lives in
//! memory: when the process dies after Telegram accepted a send and before the engine
//! committed it, the restarted process receives the message through catch-up
//! (`updates.getDifference` carries the message, never the `updateMessageID`), and without
//! more it would be stored as a second, outgoing message "from another app", while the
//! pending one waits for its job to run again.
//!
//! So before each attempt the channel writes the send under
//! [`OUTBOX_KEY`](crate::session::OUTBOX_KEY): its `random_id`, `client_key`, chat, a digest
//! of its text and reply, and when it was tried. A process that loads such an entry did not
//! make it (an *orphan*: its outcome is unknown here), and an outgoing message arriving
//! without a known `random_id` in that chat, with the same digest, dated within the entry's
//! attempts (give or take [`DATE_SLACK`]), is taken as its echo: it is delivered with the
//! entry's `client_key`, and the engine's ingest turns the pending message `Sent` with
//! Telegram's id instead of adding a row. Each entry matches one message only.
//!
//! The entry is removed once the echo was delivered with its `client_key` (the store then
//! holds the provider id, and any later copy is a duplicate), when the send failed for good,
//! and after [`MAX_AGE`] in any case. Entries made by the running process are never matched
//! by content: they have their `updateMessageID`, which is exact.

use std::collections::HashMap;
use std::sync::Mutex;

use channel_core::{ChannelError, Inbound};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::session::OUTBOX_KEY;

/// How far a message's date may lie outside its entry's attempts and still be its echo:
/// Telegram's clock against ours, and the time a send takes.
pub(crate) const DATE_SLACK: i64 = 600;
/// Entries older than this (seconds since the last attempt) are dropped.
pub(crate) const MAX_AGE: i64 = 24 * 3600;
/// At most this many entries are kept (the oldest go first).
const CAPACITY: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// random_id.
    r: i64,
    /// client_key.
    k: String,
    /// The chat's bot-API dialog id.
    c: i64,
    /// Digest of the text and the reply ([`digest`]).
    d: String,
    /// Unix seconds of the first and the latest attempt.
    first: i64,
    last: i64,
    /// Loaded from the state: made by an earlier process.
    #[serde(skip)]
    orphan: bool,
}

#[derive(Default)]
struct Inner {
    loaded: bool,
    entries: Vec<Entry>,
    /// Messages matched to an orphan, (chat, message id) -> client key: a redelivery of the
    /// same message finds the same send, another message cannot take it.
    claimed: HashMap<(i64, i32), String>,
}

/// The sends in flight of one account (see the module docs).
#[derive(Default)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    /// Orders the writes, so that an older list never lands after a newer one.
    writes: tokio::sync::Mutex<()>,
}

/// The digest of a message's text and the provider id it replies to.
pub(crate) fn digest(text: Option<&str>, reply_to: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(text.unwrap_or_default().as_bytes());
    h.update([0]);
    h.update(reply_to.unwrap_or_default().as_bytes());
    hex::encode(&h.finalize()[..12])
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the stored entries once per process (they become orphans); later calls keep
    /// what is in memory. An unreadable list is dropped with a warning.
    pub(crate) async fn load(&self, state: &dyn Inbound) -> Result<(), ChannelError> {
        if self.lock().loaded {
            return Ok(());
        }
        let raw = state.state_get(OUTBOX_KEY).await?;
        let mut stored: Vec<Entry> = match raw {
            Some(raw) => serde_json::from_slice(&raw).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "dropping an unreadable list of Telegram sends in flight");
                Vec::new()
            }),
            None => Vec::new(),
        };
        for e in &mut stored {
            e.orphan = true;
        }
        let mut inner = self.lock();
        if !inner.loaded {
            inner.loaded = true;
            // Sends recorded meanwhile (none in practice: sends need a connection) stay.
            stored.retain(|s| !inner.entries.iter().any(|e| e.r == s.r));
            inner.entries.splice(0..0, stored);
        }
        Ok(())
    }

    async fn write(&self, state: &dyn Inbound) -> Result<(), ChannelError> {
        let _order = self.writes.lock().await;
        let bytes = serde_json::to_vec(&self.lock().entries).unwrap_or_default();
        state.state_put(OUTBOX_KEY, &bytes).await
    }

    /// Records an attempt of a send before it goes out (a retry updates its entry).
    pub(crate) async fn record(
        &self,
        state: &dyn Inbound,
        random_id: i64,
        client_key: &str,
        chat: i64,
        digest: String,
        now: i64,
    ) -> Result<(), ChannelError> {
        {
            let mut inner = self.lock();
            inner.entries.retain(|e| now.saturating_sub(e.last) <= MAX_AGE);
            match inner.entries.iter_mut().find(|e| e.r == random_id) {
                Some(e) => e.last = now,
                None => inner.entries.push(Entry {
                    r: random_id,
                    k: client_key.to_owned(),
                    c: chat,
                    d: digest,
                    first: now,
                    last: now,
                    orphan: false,
                }),
            }
            let excess = inner.entries.len().saturating_sub(CAPACITY);
            inner.entries.drain(..excess);
        }
        self.write(state).await
    }

    /// The client key of the orphaned send that the outgoing message `message_id` of `chat`
    /// (with this digest and date, in unix seconds) is the echo of, if any.
    pub(crate) fn orphan_echo(
        &self,
        chat: i64,
        message_id: i32,
        digest: &str,
        date: i64,
    ) -> Option<String> {
        let mut inner = self.lock();
        if let Some(key) = inner.claimed.get(&(chat, message_id)) {
            return Some(key.clone());
        }
        let key = inner
            .entries
            .iter()
            .filter(|e| e.orphan && e.c == chat && e.d == digest)
            .filter(|e| date >= e.first - DATE_SLACK && date <= e.last + DATE_SLACK)
            .map(|e| e.k.clone())
            .find(|k| !inner.claimed.values().any(|c| c == k))?;
        inner.claimed.insert((chat, message_id), key.clone());
        Some(key)
    }

    /// Forgets the send with this client key (its echo is stored, or it failed for good).
    /// Writes only when there was such an entry.
    pub(crate) async fn done(
        &self,
        state: &dyn Inbound,
        client_key: &str,
    ) -> Result<(), ChannelError> {
        let removed = {
            let mut inner = self.lock();
            let before = inner.entries.len();
            inner.entries.retain(|e| e.k != client_key);
            inner.entries.len() != before
        };
        if removed {
            self.write(state).await?;
        }
        Ok(())
    }

    /// How many sends are in flight (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::testing::RecordingInbound;

    const NOW: i64 = 1_800_000_000;

    #[tokio::test]
    async fn an_orphaned_send_is_matched_once_by_chat_digest_and_date() {
        let state = RecordingInbound::new();
        let before = Outbox::default();
        before.load(&state).await.unwrap();
        let d = digest(Some("hi"), Some("41"));
        before.record(&state, 7, "key-7", 2001, d.clone(), NOW).await.unwrap();
        assert_eq!(
            before.orphan_echo(2001, 42, &d, NOW),
            None,
            "a live send is never matched by content"
        );

        let after = Outbox::default();
        after.load(&state).await.unwrap();
        assert_eq!(after.orphan_echo(2002, 42, &d, NOW), None, "another chat");
        assert_eq!(
            after.orphan_echo(2001, 42, &digest(Some("hi"), None), NOW),
            None,
            "another reply"
        );
        assert_eq!(after.orphan_echo(2001, 42, &d, NOW + DATE_SLACK + 1), None, "much later");
        assert_eq!(after.orphan_echo(2001, 42, &d, NOW).as_deref(), Some("key-7"));
        assert_eq!(after.orphan_echo(2001, 42, &d, NOW).as_deref(), Some("key-7"), "again");
        assert_eq!(after.orphan_echo(2001, 43, &d, NOW), None, "a second copy is not ours");
        after.done(&state, "key-7").await.unwrap();
        assert_eq!(after.len(), 0);
        let reloaded = Outbox::default();
        reloaded.load(&state).await.unwrap();
        assert_eq!(reloaded.len(), 0, "forgotten in the state too");
    }

    #[tokio::test]
    async fn old_entries_are_dropped() {
        let state = RecordingInbound::new();
        let outbox = Outbox::default();
        outbox.load(&state).await.unwrap();
        outbox.record(&state, 1, "old", 1, digest(None, None), NOW).await.unwrap();
        outbox.record(&state, 2, "new", 1, digest(None, None), NOW + MAX_AGE + 1).await.unwrap();
        assert_eq!(outbox.len(), 1);
    }
}
