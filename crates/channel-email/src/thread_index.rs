//! The threading fallback for mail without References or In-Reply-To: the normalized subject
//! (reply and forward prefixes such as `Re:`, `Fwd:`, `AW:`, `SV:` stripped, case and
//! whitespace folded) plus the other participant, within a time window.
//!
//! The index lives in memory, in the channel, fed by every message the channel reads (both
//! folders). After a restart it is refilled from the mailbox before the first catch-up: the
//! headers of the already delivered messages of the window are read again
//! ([`crate::thread_warmup`]), so a reply without headers still finds its thread.
//! Mail with References or In-Reply-To never uses it (the store matches those ids).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use channel_core::InboundMessage;

use crate::fetch::Fetched;
use crate::parse::{FolderRole, parse_internal_date, parse_message};

/// Prefixes that mark a reply or a forward, in the languages mail clients commonly use.
const PREFIXES: &[&str] =
    &["re", "fwd", "fw", "aw", "sv", "vs", "wg", "antw", "tr", "rv", "ref", "odp", "r"];

/// The subject without its reply and forward prefixes, with single spaces, case kept: what
/// a reply's `Re: ...` is built on (lower-cased, what a thread is recognised by).
pub fn base_subject(subject: &str) -> String {
    let mut s: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        let trimmed = s.trim_start();
        let Some(colon) = trimmed.find(':') else { break };
        let head = trimmed[..colon].trim_end().to_lowercase();
        // `Re`, `Fwd[2]`, `Re(3)`, `Re^2`: a known word with an optional counter.
        let word = head.trim_end_matches(|c: char| {
            c.is_ascii_digit() || matches!(c, '[' | ']' | '(' | ')' | '^')
        });
        if !PREFIXES.contains(&word) {
            break;
        }
        s = trimmed[colon + 1..].trim_start().to_owned();
    }
    s.trim().to_owned()
}

#[derive(Clone, Debug)]
struct Entry {
    thread_key: String,
    last_seen_ms: i64,
}

/// Threads recently seen, by normalized subject and participant.
#[derive(Debug)]
pub struct ThreadIndex {
    window: Duration,
    entries: Mutex<HashMap<(String, String), Entry>>,
    /// Folders whose already delivered messages have been read back into the index since
    /// the channel started ([`crate::thread_warmup`]).
    warm: Mutex<HashSet<String>>,
    /// The [`base_subject`] of the latest message seen in each thread, by thread key: the
    /// subject of our replies.
    subjects: Mutex<HashMap<String, String>>,
}

/// Entries kept before the old ones are dropped.
const CAPACITY: usize = 50_000;

impl ThreadIndex {
    /// An empty index matching within `window` (zero switches the fallback off).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: Mutex::new(HashMap::new()),
            warm: Mutex::new(HashSet::new()),
            subjects: Mutex::new(HashMap::new()),
        }
    }

    /// The subject (without reply prefixes) of the latest message seen in the thread, if the
    /// channel has seen one since it started or in the mailbox's recent past.
    pub fn subject_of(&self, thread_key: &str) -> Option<String> {
        self.subjects.lock().unwrap_or_else(|e| e.into_inner()).get(thread_key).cloned()
    }

    fn remember_subject(&self, thread_key: &str, base: String) {
        let mut subjects = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        if subjects.len() >= CAPACITY && !subjects.contains_key(thread_key) {
            subjects.clear();
        }
        subjects.insert(thread_key.to_owned(), base);
    }

    /// Parses a fetched message and threads it ([`ThreadIndex::apply`]): how every message
    /// the channel reads enters the index.
    pub(crate) fn parse(&self, f: &Fetched, role: FolderRole) -> InboundMessage {
        let internal_date = f.internal_date.as_deref().and_then(parse_internal_date);
        let parsed = parse_message(&f.raw, role, internal_date);
        let mut message = parsed.message;
        self.apply(&mut message, parsed.subject.as_deref(), parsed.has_thread_headers);
        message
    }

    /// The window within which a message without thread headers joins a thread.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether the messages of `folder` delivered before this channel started have been read
    /// back into the index.
    pub fn is_warm(&self, folder: &str) -> bool {
        self.warm.lock().unwrap_or_else(|e| e.into_inner()).contains(folder)
    }

    /// Records that `folder` has been read back into the index.
    pub fn mark_warm(&self, folder: &str) {
        self.warm.lock().unwrap_or_else(|e| e.into_inner()).insert(folder.to_owned());
    }

    /// Records `message` and, when it has no References and no In-Reply-To
    /// (`has_thread_headers` false), gives it the thread key of the latest message with the
    /// same normalized subject and participant within the window.
    pub fn apply(
        &self,
        message: &mut InboundMessage,
        subject: Option<&str>,
        has_thread_headers: bool,
    ) {
        let base = base_subject(subject.unwrap_or(""));
        if base.is_empty() {
            return;
        }
        if !self.window.is_zero() {
            self.match_thread(message, base.to_lowercase(), has_thread_headers);
        }
        self.remember_subject(&message.thread_key, base);
    }

    fn match_thread(
        &self,
        message: &mut InboundMessage,
        normalized: String,
        has_thread_headers: bool,
    ) {
        let key = (normalized, message.remote.address.clone());
        let at = message.sent_at.0;
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !has_thread_headers
            && let Some(e) = entries.get(&key)
            && (at - e.last_seen_ms).abs() <= window_ms
        {
            message.thread_key = e.thread_key.clone();
        }
        let entry = entries
            .entry(key)
            .or_insert_with(|| Entry { thread_key: message.thread_key.clone(), last_seen_ms: at });
        if at >= entry.last_seen_ms {
            entry.thread_key = message.thread_key.clone();
            entry.last_seen_ms = at;
        }
        if entries.len() > CAPACITY {
            let newest = entries.values().map(|e| e.last_seen_ms).max().unwrap_or(at);
            entries.retain(|_, e| newest - e.last_seen_ms <= window_ms);
            if entries.len() > CAPACITY {
                entries.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn base_subject_lower(subject: &str) -> String {
        super::base_subject(subject).to_lowercase()
    }

    #[test]
    fn prefixes_in_many_languages_are_stripped_and_case_kept() {
        use super::base_subject;
        assert_eq!(base_subject("RE: AW:  Invoice   42 "), "Invoice 42");
        assert_eq!(base_subject("Meeting: Monday"), "Meeting: Monday");
        assert_eq!(base_subject("Re: AW:  Fwd[2]: Project   X ").to_lowercase(), "project x");
        assert_eq!(base_subject("SV: re:project x"), "project x");
        assert_eq!(base_subject("Reports"), "Reports");
    }

    use super::*;
    use channel_core::{IdentityInfo, Timestamp};

    const HOUR_MS: i64 = 3_600_000;

    fn mail(id: &str, from: &str, at_ms: i64) -> InboundMessage {
        InboundMessage::text(id, id, IdentityInfo::new(from), "text", Timestamp(at_ms))
    }

    #[test]
    fn subjects_lose_their_prefixes_case_and_extra_spaces() {
        assert_eq!(base_subject_lower("RE: Fw: Antw: hello  world"), "hello world");
        assert_eq!(base_subject_lower("Re[3]: status"), "status");
        assert_eq!(base_subject_lower("Meeting: tomorrow"), "meeting: tomorrow");
        assert_eq!(base_subject_lower("Re:"), "");
    }

    #[test]
    fn a_reply_without_headers_joins_the_thread_of_the_same_subject_and_sender_within_the_window() {
        let index = ThreadIndex::new(Duration::from_secs(7 * 24 * 3600));
        let mut first = mail("<a@x>", "carol@x.org", 0);
        index.apply(&mut first, Some("Project X"), false);
        assert_eq!(first.thread_key, "<a@x>");

        let mut reply = mail("<b@x>", "carol@x.org", HOUR_MS);
        index.apply(&mut reply, Some("Re: project   x"), false);
        assert_eq!(reply.thread_key, "<a@x>", "same subject and participant: same thread");

        let mut other_person = mail("<c@x>", "dave@x.org", HOUR_MS);
        index.apply(&mut other_person, Some("Re: Project X"), false);
        assert_eq!(other_person.thread_key, "<c@x>", "another participant: another thread");

        let mut much_later = mail("<d@x>", "carol@x.org", HOUR_MS + 8 * 24 * HOUR_MS);
        index.apply(&mut much_later, Some("Re: Project X"), false);
        assert_eq!(much_later.thread_key, "<d@x>", "outside the window: a new thread");

        let mut with_headers = mail("<e@x>", "carol@x.org", HOUR_MS + 8 * 24 * HOUR_MS);
        with_headers.thread_key = "<root@elsewhere>".to_owned();
        index.apply(&mut with_headers, Some("Re: Project X"), true);
        assert_eq!(with_headers.thread_key, "<root@elsewhere>", "References win over the fallback");
    }

    #[test]
    fn the_subject_of_a_thread_is_its_latest_subject_without_prefixes() {
        let index = ThreadIndex::new(Duration::ZERO);
        let mut first = mail("<a@x>", "carol@x.org", 0);
        index.apply(&mut first, Some("Invoice  42"), false);
        assert_eq!(index.subject_of("<a@x>").as_deref(), Some("Invoice 42"));
        let mut reply = mail("<b@x>", "carol@x.org", 1);
        reply.thread_key = "<a@x>".to_owned();
        index.apply(&mut reply, Some("AW: Re: Invoice 42 (paid)"), true);
        assert_eq!(index.subject_of("<a@x>").as_deref(), Some("Invoice 42 (paid)"));
        assert_eq!(index.subject_of("<unknown@x>"), None);
    }

    #[test]
    fn a_zero_window_switches_the_fallback_off() {
        let index = ThreadIndex::new(Duration::ZERO);
        let mut a = mail("<a@x>", "carol@x.org", 0);
        index.apply(&mut a, Some("s"), false);
        let mut b = mail("<b@x>", "carol@x.org", 1);
        index.apply(&mut b, Some("Re: s"), false);
        assert_eq!(b.thread_key, "<b@x>");
    }
}
