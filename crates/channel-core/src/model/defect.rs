//! Defects: what was wrong with a message a provider delivered, and what was changed to store
//! it anyway.
//!
//! Nothing a provider delivers is refused as a whole (promise 5 of the design). A message over
//! a limit, with bytes a database cannot hold, or malformed at the source is stored *degraded*:
//! its [`Message::defects`](crate::Message::defects) say what was changed and why, with codes
//! and sizes only, never content. Codes are open strings so that a provider can report defects
//! of its own format (an email's missing MIME boundary, say); the core's own codes are the
//! constants of this module.

use serde::{Deserialize, Serialize};

/// The text was longer than the limit and was cut; the whole text is kept as a `text/plain`
/// attachment named `full-text.txt` when it fits the blob limit (else [`RAW_NOT_KEPT`] too).
pub const TEXT_TRUNCATED: &str = "text_truncated";
/// The HTML was longer than the limit and was cut; the whole HTML is kept as a `text/html`
/// attachment named `full-text.html` when it fits the blob limit.
pub const HTML_TRUNCATED: &str = "html_truncated";
/// NUL bytes (which PostgreSQL cannot store in text) were replaced by U+FFFD in `field`.
pub const NUL_REPLACED: &str = "nul_replaced";
/// An id (`provider_id`, `thread_key`, `reply_to`, `client_key`, a reference) was longer than
/// the limit and was replaced by a stable shorter id derived from it (see
/// [`shortened_id`](crate::validate::shortened_id)).
pub const ID_SHORTENED: &str = "id_shortened";
/// The provider gave no id; one was derived from the message's content.
pub const ID_MISSING: &str = "id_missing";
/// A name (display name, username, file name, MIME type) was longer than the limit and cut.
pub const NAME_TRUNCATED: &str = "name_truncated";
/// The sender's address was missing or unusable; a placeholder address was stored.
pub const ADDRESS_MISSING: &str = "address_missing";
/// There were more references than the limit; the root and the nearest parents were kept.
pub const REFERENCES_DROPPED: &str = "references_dropped";
/// An attachment was left out because the message had more than the limit; the defect
/// records its name, type and size.
pub const ATTACHMENT_OVER_COUNT: &str = "attachment_over_count";
/// An attachment was left out because it was larger than the blob limit; the defect records
/// its name, type and size.
pub const ATTACHMENT_TOO_LARGE: &str = "attachment_too_large";
/// The parse error description was longer than the limit and was cut.
pub const PARSE_ERROR_TRUNCATED: &str = "parse_error_truncated";
/// Bytes that were not valid in their declared encoding were replaced by U+FFFD.
pub const INVALID_ENCODING: &str = "invalid_encoding";
/// The message was changed to be stored, and its raw form was not kept (larger than the blob
/// limit, or the provider has no raw form).
pub const RAW_NOT_KEPT: &str = "raw_not_kept";
/// The store could not hold the message even degraded: this row is a placeholder that keeps
/// its provider id, the reason in `parse_error`, and its raw bytes where they fit.
pub const PLACEHOLDER: &str = "placeholder";

/// One thing that was wrong with a delivered message, or changed to store it.
///
/// ```
/// use channel_core::Defect;
/// use channel_core::defect::TEXT_TRUNCATED;
///
/// let d = Defect::new(TEXT_TRUNCATED).field("text").size(2_000_000).limit(1 << 20);
/// assert_eq!(d.code, "text_truncated");
/// assert_eq!(d.to_string(), "text_truncated (text: size 2000000, limit 1048576)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Defect {
    /// What kind of defect: one of this module's constants, or a provider's own code (such as
    /// email's `missing_boundary`). Lower-case snake case.
    pub code: String,
    /// The field it concerns (`text`, `remote.display_name`, `attachments[3]`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The size or count that was found (bytes, or entries for lists), if it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The limit it was held against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// For an attachment that was left out: its file name and MIME type (the size is
    /// [`Defect::size`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_out: Option<LeftOut>,
}

/// What an attachment that was left out was.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeftOut {
    /// Its file name, if it had one.
    pub name: Option<String>,
    /// Its MIME type.
    pub mime_type: String,
}

impl Defect {
    /// A defect with `code` and nothing else known.
    pub fn new(code: impl Into<String>) -> Self {
        Self { code: code.into(), field: None, size: None, limit: None, left_out: None }
    }

    /// The field it concerns.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The size or count found.
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// The limit it was held against.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The attachment that was left out.
    pub fn left_out(mut self, name: Option<String>, mime_type: impl Into<String>) -> Self {
        self.left_out = Some(LeftOut { name, mime_type: mime_type.into() });
        self
    }
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.code)?;
        let mut parts = Vec::new();
        if let Some(s) = self.size {
            parts.push(format!("size {s}"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit {l}"));
        }
        match (&self.field, parts.is_empty()) {
            (Some(field), true) => write!(f, " ({field})"),
            (Some(field), false) => write!(f, " ({field}: {})", parts.join(", ")),
            (None, false) => write!(f, " ({})", parts.join(", ")),
            (None, true) => Ok(()),
        }
    }
}
