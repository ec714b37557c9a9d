//! Input limits, checked before anything is written, the same on SQLite and PostgreSQL.
//!
//! PostgreSQL rejects NUL bytes in `TEXT`; SQLite would store them. So that both backends
//! behave alike, every text field that is stored as text is checked here and refused with
//! [`StoreError::InvalidInput`](channel_core::StoreError::InvalidInput) when it contains a
//! NUL byte or is longer than its limit. Fields stored as JSON (attachments, connection state,
//! job payloads) escape NUL bytes and are only limited in size. The error texts of `retry`,
//! `snooze` and `discard` are never refused, so that a job can always leave the running
//! state: NUL bytes in them are replaced by U+FFFD and they are cut to [`MAX_ERROR_BYTES`].
//! (The error of a `MessageOutcome::Failed` is message text and checked like other text.)

use channel_core::validate::Limits;

use crate::error::{Fail, invalid};

/// The limits of what a message may hold: channel-core's [`Limits::DEFAULT`], the one set of
/// limits that the engine degrades delivered messages to. The constants below are taken from
/// it; only what concerns the store alone (job payloads, recorded errors, batch sizes) is
/// defined here.
const L: Limits = Limits::DEFAULT;

/// Identifiers, keys and addresses: provider ids, thread keys, client keys, addresses,
/// state keys, unique keys, contact ids, lease names and holders, worker names, blob keys
/// ([`Limits::id`]).
pub const MAX_KEY_BYTES: usize = L.id;
/// Names: account display names, identity display names and usernames, file names, MIME
/// types ([`Limits::name`]).
pub const MAX_NAME_BYTES: usize = L.name;
/// A plain-text message body ([`Limits::text`]).
pub const MAX_TEXT_BYTES: usize = L.text;
/// An HTML message body ([`Limits::html`]).
pub const MAX_HTML_BYTES: usize = L.html;
/// A parse error description ([`Limits::parse_error`]).
pub const MAX_PARSE_ERROR_BYTES: usize = L.parse_error;
/// A recorded error text (longer ones are cut).
pub const MAX_ERROR_BYTES: usize = 16 * 1024;
/// A value of the account state ([`Limits::state_value`]).
pub const MAX_STATE_VALUE_BYTES: usize = L.state_value;
/// A job payload, serialized as JSON.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// The serialized connection state of an account.
pub const MAX_CONNECTION_STATE_BYTES: usize = 64 * 1024;
/// Entries of `references` of one inbound message ([`Limits::references`]).
pub const MAX_REFERENCES: usize = L.references;
/// Attachments of one message ([`Limits::attachments`]).
pub const MAX_ATTACHMENTS: usize = L.attachments;
/// The serialized defects of one message.
pub const MAX_DEFECTS_BYTES: usize = 64 * 1024;
/// Messages in one `ingest_batch` call.
pub const MAX_BATCH: usize = 10_000;

/// A text stored as `TEXT`: no NUL byte, at most `max` bytes.
pub(crate) fn text(field: &'static str, value: &str, max: usize) -> Result<(), Fail> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("{} bytes is longer than the limit of {max} bytes", value.len()),
        ));
    }
    if value.as_bytes().contains(&0) {
        return Err(invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

/// An optional text stored as `TEXT`.
pub(crate) fn opt_text(field: &'static str, value: Option<&str>, max: usize) -> Result<(), Fail> {
    match value {
        Some(v) => text(field, v, max),
        None => Ok(()),
    }
}

/// A key: like [`text`] with [`MAX_KEY_BYTES`], and not empty.
pub(crate) fn key(field: &'static str, value: &str) -> Result<(), Fail> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    text(field, value, MAX_KEY_BYTES)
}

/// A size limit on bytes or serialized JSON.
pub(crate) fn size(field: &'static str, len: usize, max: usize) -> Result<(), Fail> {
    if len > max {
        return Err(invalid(field, format!("{len} bytes is longer than the limit of {max} bytes")));
    }
    Ok(())
}

/// A count limit.
pub(crate) fn count(field: &'static str, n: usize, max: usize) -> Result<(), Fail> {
    if n > max {
        return Err(invalid(field, format!("{n} entries is more than the limit of {max}")));
    }
    Ok(())
}

/// An error text as recorded: NUL bytes replaced, cut to [`MAX_ERROR_BYTES`] on a character
/// boundary.
pub(crate) fn error_text(value: &str) -> String {
    let mut s = if value.as_bytes().contains(&0) {
        value.replace('\0', "\u{FFFD}")
    } else {
        value.to_owned()
    };
    if s.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = error_text(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(error_text("a\0b"), "a\u{FFFD}b");
    }

    #[test]
    fn keys_are_checked() {
        assert!(key("k", "").is_err());
        assert!(key("k", "a\0").is_err());
        assert!(key("k", &"x".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(key("k", &"x".repeat(MAX_KEY_BYTES)).is_ok());
    }
}
