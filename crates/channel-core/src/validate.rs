//! The one set of [`Limits`], input checks done before anything is written, and the
//! degrading of what providers deliver.
//!
//! Two kinds of input meet two rules:
//!
//! - **What a caller asks** (an outbound message, an account-state value, a cursor) is
//!   refused with a [`ValidationError`] naming the field when a database would store it
//!   differently or not at all: NUL bytes (PostgreSQL cannot store them in text), empty ids,
//!   fields over the [`Limits`]. Nothing is written for a refused request.
//! - **What a provider delivers** is never refused as a whole (promise 5 of the design):
//!   [`degrade_inbound`] turns any [`InboundMessage`] into one the stores can hold, and lists
//!   what it changed as [`Defect`]s on the message. The engine runs it on every delivered
//!   message; [`check_inbound`] then holds by construction.
//!
//! The stores check the same [`Limits::DEFAULT`] again (they are public contracts and may be
//! called directly); nothing here and there can disagree.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::model::defect::{self, Defect};
use crate::model::{
    AttachmentData, CursorUpdate, IdentityInfo, InboundDeletion, InboundEdit, InboundMessage,
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
    /// Defects recorded on one message: 64 (a message with more keeps the first 63 and one
    /// that counts the rest).
    pub defects: usize,
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
        defects: 64,
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

fn check_attachments(list: &[AttachmentData], l: &Limits) -> Result<(), ValidationError> {
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
    check_count("defects", m.defects.len(), l.defects)?;
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
    check_opt("subject", m.subject.as_deref(), l.name)?;
    if m.subject.as_deref().is_some_and(|s| s.contains(['\r', '\n'])) {
        let why = "must be one line (a line break would start a new header field)";
        return Err(ValidationError::new("subject", Problem::Other(why.into())));
    }
    if let Some(key) = &m.idempotency_key {
        check_str("idempotency_key", key, l.id, true)?;
    }
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

/// A stable id of at most 72 bytes standing for `id`: `~sha256:` and the SHA-256 of `id` in
/// lower-case hex. The same long id always gives the same short one, so a message, its
/// replies' references and its thread key still meet after they were shortened.
///
/// ```
/// use channel_core::validate::shortened_id;
///
/// let long = format!("<{}@example.org>", "x".repeat(2000));
/// assert_eq!(shortened_id(&long), shortened_id(&long));
/// assert_eq!(shortened_id(&long).len(), 72);
/// assert_ne!(shortened_id(&long), shortened_id("<other@example.org>"));
/// ```
pub fn shortened_id(id: &str) -> String {
    format!("~sha256:{}", hex::encode(Sha256::digest(id.as_bytes())))
}

/// The name of the attachment that keeps a text cut by [`degrade_inbound`].
pub const FULL_TEXT_NAME: &str = "full-text.txt";
/// The name of the attachment that keeps an HTML body cut by [`degrade_inbound`].
pub const FULL_HTML_NAME: &str = "full-text.html";
/// The address stored for a message whose remote party has no usable address.
pub const UNKNOWN_ADDRESS: &str = "unknown";

/// Collects defects, with the cap of [`Limits::defects`].
struct Defects<'a> {
    list: Vec<Defect>,
    limits: &'a Limits,
}

impl Defects<'_> {
    fn push(&mut self, d: Defect) {
        self.list.push(d);
    }

    /// Cleans the channel's own defects, then caps the list.
    fn finish(mut self) -> Vec<Defect> {
        let max = self.limits.defects.max(1);
        for d in &mut self.list {
            d.code = clean_name(&d.code, 64);
            d.field = d.field.take().map(|f| clean_name(&f, self.limits.attachment_meta));
            if let Some(l) = &mut d.left_out {
                l.name = l.name.take().map(|n| clean_name(&n, self.limits.attachment_meta));
                l.mime_type = clean_name(&l.mime_type, self.limits.attachment_meta);
            }
        }
        if self.list.len() > max {
            let total = self.list.len();
            self.list.truncate(max - 1);
            self.list.push(
                Defect::new("defects_truncated")
                    .size(total as u64)
                    .limit(self.limits.defects as u64),
            );
        }
        self.list
    }
}

/// NUL bytes replaced and cut to `max` bytes, without a defect (for defect fields themselves).
fn clean_name(s: &str, max: usize) -> String {
    let s = DecodedText::from_string(s.to_owned()).text;
    truncate_utf8(&s, max).to_owned()
}

/// Replaces NUL bytes of `value`, recording a defect for `field`.
fn without_nul(field: &str, value: String, out: &mut Defects<'_>) -> String {
    let decoded = DecodedText::from_string(value);
    if decoded.lossy {
        out.push(Defect::new(defect::NUL_REPLACED).field(field));
    }
    decoded.text
}

/// An id as stored: NUL bytes replaced, shortened when over the limit. `None` when empty.
fn degrade_id(field: &str, id: String, l: &Limits, out: &mut Defects<'_>) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    let id = without_nul(field, id, out);
    if id.len() > l.id {
        out.push(
            Defect::new(defect::ID_SHORTENED).field(field).size(id.len() as u64).limit(l.id as u64),
        );
        return Some(shortened_id(&id));
    }
    Some(id)
}

/// A name as stored: NUL bytes replaced, cut at the limit. `None` when empty.
fn degrade_name(
    field: &str,
    name: Option<String>,
    max: usize,
    out: &mut Defects<'_>,
) -> Option<String> {
    let name = without_nul(field, name?, out);
    if name.len() > max {
        out.push(
            Defect::new(defect::NAME_TRUNCATED)
                .field(field)
                .size(name.len() as u64)
                .limit(max as u64),
        );
        return Some(truncate_utf8(&name, max).to_owned());
    }
    Some(name)
}

/// A body as stored: NUL bytes replaced, cut at `max` bytes on a character boundary (with a
/// defect). Returns the stored body and, when it was cut, the whole one.
fn cut_body(
    field: &str,
    body: String,
    max: usize,
    out: &mut Defects<'_>,
) -> (String, Option<String>) {
    let body = without_nul(field, body, out);
    if body.len() <= max {
        return (body, None);
    }
    let code = if field == "html" { defect::HTML_TRUNCATED } else { defect::TEXT_TRUNCATED };
    out.push(Defect::new(code).field(field).size(body.len() as u64).limit(max as u64));
    (truncate_utf8(&body, max).to_owned(), Some(body))
}

/// A delivered body as stored ([`cut_body`]), the whole body kept as an attachment (returned)
/// when it was cut and fits the blob limit.
fn degrade_body(
    field: &str,
    body: Option<String>,
    max: usize,
    blob_max: u64,
    keep_as: (&str, &str),
    out: &mut Defects<'_>,
) -> (Option<String>, Option<AttachmentData>) {
    let Some(body) = body else { return (None, None) };
    let (cut, whole) = cut_body(field, body, max, out);
    let Some(whole) = whole else { return (Some(cut), None) };
    if whole.len() as u64 <= blob_max {
        let (name, mime_type) = keep_as;
        let kept = AttachmentData {
            name: Some(name.to_owned()),
            mime_type: mime_type.to_owned(),
            data: bytes::Bytes::from(whole.into_bytes()),
        };
        (Some(cut), Some(kept))
    } else {
        out.push(
            Defect::new(defect::RAW_NOT_KEPT).field(field).size(whole.len() as u64).limit(blob_max),
        );
        (Some(cut), None)
    }
}

/// The references as stored: each one degraded like an id, empty ones dropped, and at most
/// `max` of them: the root (the first) and the nearest parents (the last ones).
fn degrade_references(refs: Vec<String>, l: &Limits, out: &mut Defects<'_>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::with_capacity(refs.len().min(l.references));
    let count = refs.len();
    let refs: Vec<String> = if count > l.references && l.references > 0 {
        out.push(
            Defect::new(defect::REFERENCES_DROPPED)
                .field("references")
                .size(count as u64)
                .limit(l.references as u64),
        );
        let mut iter = refs.into_iter();
        let root = iter.next();
        let nearest: Vec<String> = iter.skip(count - l.references).collect();
        root.into_iter().chain(nearest).collect()
    } else if l.references == 0 {
        Vec::new()
    } else {
        refs
    };
    for r in refs {
        if let Some(r) = degrade_id("references", r, l, out) {
            kept.push(r);
        }
    }
    kept
}

/// Turns what a provider delivered into a message every store can hold, listing on
/// [`InboundMessage::defects`] what was changed and why. Never fails, and changes nothing
/// in a message that is within the limits.
///
/// What it does: NUL bytes are replaced by U+FFFD everywhere; an id over [`Limits::id`] is
/// replaced by its [`shortened_id`]; a missing provider id is derived from the content
/// ([`defect::ID_MISSING`]), a missing thread key is the provider id; a missing address is
/// [`UNKNOWN_ADDRESS`]; names are cut at the limit; a text or HTML body over the limit is cut
/// and kept whole as an attachment ([`FULL_TEXT_NAME`], [`FULL_HTML_NAME`]) when it fits
/// `blob_max`; references over the limit keep the root and the nearest parents; attachments
/// larger than `blob_max` or over the count are left out and recorded (name, type, size) in
/// their defect. The channel's own defects are kept first. The cursor is the channel's own
/// and is not touched (see [`check_cursor`]).
///
/// ```
/// use channel_core::validate::{Limits, degrade_inbound, check_inbound};
/// use channel_core::{IdentityInfo, InboundMessage, Timestamp};
///
/// let mut m = InboundMessage::text("m1", "t", IdentityInfo::new("a@x.org"), "a\0b", Timestamp(1));
/// m.references = (0..1000).map(|i| format!("<{i}@x>")).collect();
/// let m = degrade_inbound(m, &Limits::DEFAULT, 1 << 20);
/// assert_eq!(m.text.as_deref(), Some("a\u{FFFD}b"));
/// assert_eq!(m.references.len(), 500);
/// assert_eq!(m.references[0], "<0@x>", "the root is kept");
/// assert_eq!(m.references[499], "<999@x>", "the nearest parent is kept");
/// let codes: Vec<_> = m.defects.iter().map(|d| d.code.as_str()).collect();
/// assert_eq!(codes, ["nul_replaced", "references_dropped"]);
/// assert!(check_inbound(&m, &Limits::DEFAULT).is_ok());
/// ```
pub fn degrade_inbound(m: InboundMessage, l: &Limits, blob_max: u64) -> InboundMessage {
    let InboundMessage {
        provider_id,
        thread_key,
        remote,
        direction,
        client_key,
        text,
        html,
        reply_to,
        references,
        attachments,
        parse_error,
        defects,
        sent_at,
        cursor,
    } = m;
    let mut out = Defects { list: defects, limits: l };
    let provider_id = match degrade_id("provider_id", provider_id, l, &mut out) {
        Some(id) => id,
        None => {
            out.push(Defect::new(defect::ID_MISSING).field("provider_id"));
            content_id(&thread_key, &remote.address, text.as_deref(), html.as_deref(), sent_at.0)
        }
    };
    let thread_key =
        degrade_id("thread_key", thread_key, l, &mut out).unwrap_or_else(|| provider_id.clone());
    let client_key = client_key.and_then(|k| degrade_id("client_key", k, l, &mut out));
    let reply_to = reply_to.and_then(|r| degrade_id("reply_to", r, l, &mut out));
    let address = match degrade_id("remote.address", remote.address, l, &mut out) {
        Some(a) if a.len() <= l.address => a,
        Some(a) => {
            out.push(
                Defect::new(defect::ID_SHORTENED)
                    .field("remote.address")
                    .size(a.len() as u64)
                    .limit(l.address as u64),
            );
            shortened_id(&a)
        }
        None => {
            out.push(Defect::new(defect::ADDRESS_MISSING).field("remote.address"));
            UNKNOWN_ADDRESS.to_owned()
        }
    };
    let remote = IdentityInfo {
        address,
        display_name: degrade_name("remote.display_name", remote.display_name, l.name, &mut out),
        username: degrade_name("remote.username", remote.username, l.name, &mut out),
    };
    let (text, full_text) =
        degrade_body("text", text, l.text, blob_max, (FULL_TEXT_NAME, "text/plain"), &mut out);
    let (html, full_html) =
        degrade_body("html", html, l.html, blob_max, (FULL_HTML_NAME, "text/html"), &mut out);
    let references = degrade_references(references, l, &mut out);
    let extras: Vec<AttachmentData> = full_text.into_iter().chain(full_html).collect();
    let room = l.attachments.saturating_sub(extras.len());
    let mut kept = Vec::with_capacity(attachments.len().min(room) + extras.len());
    for (i, a) in attachments.into_iter().enumerate() {
        let field = format!("attachments[{i}]");
        let size = a.data.len() as u64;
        let name = degrade_name(&format!("{field}.name"), a.name, l.attachment_meta, &mut out);
        let mime_type = match without_nul(&format!("{field}.mime_type"), a.mime_type, &mut out) {
            t if t.is_empty() || t.len() > l.attachment_meta => {
                "application/octet-stream".to_owned()
            }
            t => t,
        };
        if size > blob_max {
            let raw = mime_type == "message/rfc822";
            out.push(
                Defect::new(defect::ATTACHMENT_TOO_LARGE)
                    .field(field.clone())
                    .size(size)
                    .limit(blob_max)
                    .left_out(name, mime_type),
            );
            if raw {
                // A message's raw form (or an attached message) over the limit: say plainly
                // that the original was not kept.
                out.push(Defect::new(defect::RAW_NOT_KEPT).field(field).size(size).limit(blob_max));
            }
        } else if kept.len() >= room {
            out.push(
                Defect::new(defect::ATTACHMENT_OVER_COUNT)
                    .field(field)
                    .size(size)
                    .limit(l.attachments as u64)
                    .left_out(name, mime_type),
            );
        } else {
            kept.push(AttachmentData { name, mime_type, data: a.data });
        }
    }
    kept.extend(extras);
    let parse_error = parse_error.map(|e| {
        let e = without_nul("parse_error", e, &mut out);
        if e.len() > l.parse_error {
            out.push(
                Defect::new(defect::PARSE_ERROR_TRUNCATED)
                    .field("parse_error")
                    .size(e.len() as u64)
                    .limit(l.parse_error as u64),
            );
            truncate_utf8(&e, l.parse_error).to_owned()
        } else {
            e
        }
    });
    InboundMessage {
        provider_id,
        thread_key,
        remote,
        direction,
        client_key,
        text,
        html,
        reply_to,
        references,
        attachments: kept,
        parse_error,
        defects: out.finish(),
        sent_at,
        cursor,
    }
}

/// An edit as it can be stored: the provider id degraded like [`degrade_inbound`] does it (so
/// that it still finds a message whose id was shortened), NUL bytes replaced and bodies cut
/// at the limit. Returns the edit and the defects (logged by the engine: an edit replaces
/// the text, the message's own defects stay those of its delivery).
pub fn degrade_edit(e: InboundEdit, l: &Limits) -> (InboundEdit, Vec<Defect>) {
    let mut out = Defects { list: Vec::new(), limits: l };
    let provider_id = degrade_id("provider_id", e.provider_id, l, &mut out).unwrap_or_default();
    let text = e.text.map(|t| cut_body("text", t, l.text, &mut out).0);
    let html = e.html.map(|h| cut_body("html", h, l.html, &mut out).0);
    (InboundEdit { provider_id, text, html, edited_at: e.edited_at }, out.finish())
}

/// A deletion's provider ids degraded like [`degrade_inbound`] does it, so that they find
/// messages whose ids were shortened; empty ids are dropped.
pub fn degrade_deletion(d: InboundDeletion, l: &Limits) -> InboundDeletion {
    let mut out = Defects { list: Vec::new(), limits: l };
    let provider_ids = d
        .provider_ids
        .into_iter()
        .filter_map(|id| degrade_id("provider_ids", id, l, &mut out))
        .collect();
    InboundDeletion { provider_ids, deleted_at: d.deleted_at }
}

/// A provider id derived from a message's content, for a provider that gave none.
fn content_id(
    thread: &str,
    address: &str,
    text: Option<&str>,
    html: Option<&str>,
    at: i64,
) -> String {
    let mut h = Sha256::new();
    for part in [thread, address, text.unwrap_or(""), html.unwrap_or("")] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(at.to_be_bytes());
    format!("~content:{}", hex::encode(h.finalize()))
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
            subject: None,
            idempotency_key: None,
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
