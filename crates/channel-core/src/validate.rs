//! Input checks done before anything is written, and helpers for channels that turn provider
//! bytes into valid text.
//!
//! The engine refuses, with a [`ValidationError`] naming the field, any message that a
//! database would store differently or not at all: NUL bytes (PostgreSQL cannot store them in
//! text), empty ids, and fields over the [`Limits`]. Nothing is written for a refused message.

use std::fmt;

use crate::model::{
    CursorUpdate, IdentityInfo, InboundAttachment, InboundDeletion, InboundEdit, InboundMessage,
    OutboundMessage,
};

/// Size limits of the fields the engine stores, in bytes of UTF-8 (counts for lists).
///
/// The defaults ([`Limits::DEFAULT`]) are generous for real Telegram and email traffic:
/// Telegram texts are at most 4096 characters, and an email Message-ID line at most 998 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Provider ids, thread keys, client keys, reply-to and reference ids: 1024.
    pub id: usize,
    /// Addresses: 512.
    pub address: usize,
    /// Display names and usernames: 512.
    pub name: usize,
    /// Plain text: 1 MiB.
    pub text: usize,
    /// HTML: 4 MiB.
    pub html: usize,
    /// Number of references: 500 (the nearest are kept by channels that have more).
    pub references: usize,
    /// Number of attachments: 100.
    pub attachments: usize,
    /// Attachment file names and MIME types: 512.
    pub attachment_meta: usize,
    /// Parse error descriptions: 4096.
    pub parse_error: usize,
    /// Account-state keys (cursor keys): 256.
    pub state_key: usize,
    /// Account-state values (cursor values), before encryption: 1 MiB.
    pub state_value: usize,
    /// Origin labels of outbound messages: 64.
    pub label: usize,
}

impl Limits {
    /// The default limits.
    pub const DEFAULT: Limits = Limits {
        id: 1024,
        address: 512,
        name: 512,
        text: 1 << 20,
        html: 4 << 20,
        references: 500,
        attachments: 100,
        attachment_meta: 512,
        parse_error: 4096,
        state_key: 256,
        state_value: 1 << 20,
        label: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// It is empty but must not be.
    Empty,
    /// It contains a NUL byte.
    NulByte,
    /// It is longer than the limit (bytes).
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The list has more entries than the limit.
    TooMany {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Something else, described.
    Other(String),
}

/// A message or value the engine refuses before writing anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct ValidationError {
    /// The field, such as `text` or `attachments[2].name`.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("must not be empty"),
            Problem::NulByte => f.write_str("contains a NUL byte"),
            Problem::TooLong { len, max } => write!(f, "{len} bytes, more than the limit of {max}"),
            Problem::TooMany { count, max } => {
                write!(f, "{count} entries, more than the limit of {max}")
            }
            Problem::Other(s) => f.write_str(s),
        }
    }
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self { field: field.into(), problem }
    }
}

/// Checks one string: no NUL byte, at most `max` bytes, and not empty when `required`.
pub fn check_str(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), ValidationError> {
    if required && value.is_empty() {
        return Err(ValidationError::new(field, Problem::Empty));
    }
    if value.len() > max {
        return Err(ValidationError::new(field, Problem::TooLong { len: value.len(), max }));
    }
    if value.contains('\0') {
        return Err(ValidationError::new(field, Problem::NulByte));
    }
    Ok(())
}

fn check_opt(field: &str, value: Option<&str>, max: usize) -> Result<(), ValidationError> {
    value.map_or(Ok(()), |v| check_str(field, v, max, false))
}

fn check_count(field: &str, count: usize, max: usize) -> Result<(), ValidationError> {
    if count > max {
        Err(ValidationError::new(field, Problem::TooMany { count, max }))
    } else {
        Ok(())
    }
}

fn check_identity(info: &IdentityInfo, l: &Limits) -> Result<(), ValidationError> {
    check_str("remote.address", &info.address, l.address, true)?;
    check_opt("remote.display_name", info.display_name.as_deref(), l.name)?;
    check_opt("remote.username", info.username.as_deref(), l.name)
}

fn check_attachments(list: &[InboundAttachment], l: &Limits) -> Result<(), ValidationError> {
    check_count("attachments", list.len(), l.attachments)?;
    for (i, a) in list.iter().enumerate() {
        check_opt(&format!("attachments[{i}].name"), a.name.as_deref(), l.attachment_meta)?;
        check_str(&format!("attachments[{i}].mime_type"), &a.mime_type, l.attachment_meta, true)?;
    }
    Ok(())
}

/// Checks a cursor's key and value size.
pub fn check_cursor(cursor: &CursorUpdate, l: &Limits) -> Result<(), ValidationError> {
    check_str("cursor.key", &cursor.key, l.state_key, true)?;
    if cursor.value.len() > l.state_value {
        return Err(ValidationError::new(
            "cursor.value",
            Problem::TooLong { len: cursor.value.len(), max: l.state_value },
        ));
    }
    Ok(())
}

/// Checks everything of an inbound message that the engine stores.
pub fn check_inbound(m: &InboundMessage, l: &Limits) -> Result<(), ValidationError> {
    check_str("provider_id", &m.provider_id, l.id, true)?;
    check_str("thread_key", &m.thread_key, l.id, true)?;
    check_identity(&m.remote, l)?;
    check_opt("client_key", m.client_key.as_deref(), l.id)?;
    check_opt("text", m.text.as_deref(), l.text)?;
    check_opt("html", m.html.as_deref(), l.html)?;
    check_opt("reply_to", m.reply_to.as_deref(), l.id)?;
    check_count("references", m.references.len(), l.references)?;
    for (i, r) in m.references.iter().enumerate() {
        check_str(&format!("references[{i}]"), r, l.id, true)?;
    }
    check_attachments(&m.attachments, l)?;
    check_opt("parse_error", m.parse_error.as_deref(), l.parse_error)?;
    if let Some(c) = &m.cursor {
        check_cursor(c, l)?;
    }
    Ok(())
}

/// Checks an edit a channel reports.
pub fn check_edit(e: &InboundEdit, l: &Limits) -> Result<(), ValidationError> {
    check_str("provider_id", &e.provider_id, l.id, true)?;
    check_opt("text", e.text.as_deref(), l.text)?;
    check_opt("html", e.html.as_deref(), l.html)
}

/// Checks a deletion a channel reports: at most [`InboundDeletion::MAX_IDS`] ids, each a
/// valid provider id.
pub fn check_deletion(d: &InboundDeletion, l: &Limits) -> Result<(), ValidationError> {
    check_count("provider_ids", d.provider_ids.len(), InboundDeletion::MAX_IDS)?;
    for (i, id) in d.provider_ids.iter().enumerate() {
        check_str(&format!("provider_ids[{i}]"), id, l.id, true)?;
    }
    Ok(())
}

/// Checks an outbound message: it must carry text, HTML or an attachment, and a label.
pub fn check_outbound(m: &OutboundMessage, l: &Limits) -> Result<(), ValidationError> {
    check_str("label", &m.label, l.label, true)?;
    check_opt("text", m.text.as_deref(), l.text)?;
    check_opt("html", m.html.as_deref(), l.html)?;
    check_opt("reply_to", m.reply_to.as_deref(), l.id)?;
    check_attachments(&m.attachments, l)?;
    let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
    if empty(&m.text) && empty(&m.html) && m.attachments.is_empty() {
        return Err(ValidationError::new("text", Problem::Other("the message is empty".into())));
    }
    Ok(())
}

/// Text decoded from provider bytes, and whether anything had to be replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedText {
    /// Valid UTF-8 without NUL bytes.
    pub text: String,
    /// True when invalid UTF-8 or NUL bytes were replaced by U+FFFD: record it (for example in
    /// [`InboundMessage::parse_error`]) and keep the raw bytes as an attachment if they
    /// matter.
    pub lossy: bool,
}

impl DecodedText {
    /// Decodes bytes from a provider as UTF-8, replacing invalid sequences and NUL bytes with
    /// U+FFFD.
    ///
    /// ```
    /// use channel_core::validate::DecodedText;
    ///
    /// let ok = DecodedText::from_bytes("grüß".as_bytes());
    /// assert_eq!((ok.text.as_str(), ok.lossy), ("grüß", false));
    ///
    /// let bad = DecodedText::from_bytes(b"a\xff\x00b");
    /// assert_eq!(bad.text, "a\u{FFFD}\u{FFFD}b");
    /// assert!(bad.lossy);
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let decoded = String::from_utf8_lossy(bytes);
        let mut lossy = matches!(decoded, std::borrow::Cow::Owned(_));
        let mut text = decoded.into_owned();
        if text.contains('\0') {
            text = text.replace('\0', "\u{FFFD}");
            lossy = true;
        }
        Self { text, lossy }
    }

    /// Replaces NUL bytes of an already valid string.
    pub fn from_string(s: String) -> Self {
        if s.contains('\0') {
            Self { text: s.replace('\0', "\u{FFFD}"), lossy: true }
        } else {
            Self { text: s, lossy: false }
        }
    }
}

/// Shortens `s` to at most `max` bytes at a character boundary (for channels that prefer to
/// cut an over-long name rather than have the message refused).
///
/// ```
/// assert_eq!(channel_core::validate::truncate_utf8("héllo", 2), "h");
/// ```
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdentityInfo, Timestamp};

    fn msg() -> InboundMessage {
        InboundMessage::text("p1", "t1", IdentityInfo::new("a@b"), "hi", Timestamp(1))
    }

    #[test]
    fn a_nul_byte_in_any_field_is_refused_with_the_field_named() {
        let mut m = msg();
        m.text = Some("a\0".into());
        let e = check_inbound(&m, &Limits::DEFAULT).unwrap_err();
        assert_eq!((e.field.as_str(), e.problem), ("text", Problem::NulByte));
        let mut m = msg();
        m.references = vec!["x".into(), "y\0".into()];
        assert_eq!(check_inbound(&m, &Limits::DEFAULT).unwrap_err().field, "references[1]");
    }

    #[test]
    fn empty_ids_and_over_long_fields_are_refused() {
        let mut m = msg();
        m.provider_id.clear();
        assert_eq!(check_inbound(&m, &Limits::DEFAULT).unwrap_err().problem, Problem::Empty);
        let mut m = msg();
        m.thread_key = "x".repeat(1025);
        assert_eq!(
            check_inbound(&m, &Limits::DEFAULT).unwrap_err().problem,
            Problem::TooLong { len: 1025, max: 1024 }
        );
        assert!(check_inbound(&msg(), &Limits::DEFAULT).is_ok());
    }

    #[test]
    fn an_empty_outbound_message_is_refused() {
        let m = OutboundMessage {
            conversation_id: crate::ConversationId::new(),
            text: Some(String::new()),
            html: None,
            reply_to: None,
            attachments: vec![],
            label: "manual".into(),
        };
        assert!(check_outbound(&m, &Limits::DEFAULT).is_err());
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_utf8("ab", 5), "ab");
        assert_eq!(truncate_utf8("€€", 4), "€");
    }
}
