//! From raw RFC 5322 bytes to an [`InboundMessage`].
//!
//! Parsing never fails: a message that cannot be parsed (no headers, no `From`) is still
//! delivered, with its raw bytes as the first attachment (`message/rfc822`) and
//! `parse_error` set, so it never blocks the messages behind it.

use bytes::Bytes;
use channel_core::{Direction, IdentityInfo, InboundAttachment, InboundMessage, Timestamp};
use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};

use crate::thread::{hashed_id, normalize_id, thread_key};

/// Which folder a message was found in, which decides its direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderRole {
    /// Incoming mail: inbound from the sender.
    Inbox,
    /// The owner's sent mail: outbound to the first recipient, `client_key` = Message-ID.
    Sent,
}

/// The ids of a message: its provider id and the ids it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageIds {
    /// X-Microsoft-Original-Message-ID, else Message-ID, else a hash of the headers.
    pub provider_id: String,
    /// In-Reply-To (every id).
    pub in_reply_to: Vec<String>,
    /// References (every id, root first).
    pub references: Vec<String>,
}

fn id_list(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::TextList(list) => list.iter().filter_map(|s| normalize_id(s)).collect(),
        HeaderValue::Text(s) => s.split_whitespace().filter_map(normalize_id).collect(),
        _ => Vec::new(),
    }
}

fn header_text<'a>(message: &'a mail_parser::Message<'a>, name: &'static str) -> &'a str {
    message.header_raw(name).unwrap_or("")
}

fn ids_of(message: &mail_parser::Message<'_>, raw: &[u8]) -> MessageIds {
    let provider_id = message
        .header_raw("X-Microsoft-Original-Message-ID")
        .and_then(normalize_id)
        .or_else(|| message.message_id().and_then(normalize_id))
        .unwrap_or_else(|| {
            hashed_id(
                &[
                    ("date", header_text(message, "Date")),
                    ("from", header_text(message, "From")),
                    ("to", header_text(message, "To")),
                    ("subject", header_text(message, "Subject")),
                ],
                raw,
            )
        });
    MessageIds {
        provider_id,
        in_reply_to: id_list(message.in_reply_to()),
        references: id_list(message.references()),
    }
}

fn identity(addr: Option<&Address<'_>>) -> Option<IdentityInfo> {
    let a = addr?.first()?;
    let address = a.address.as_deref()?.trim().to_lowercase();
    if address.is_empty() {
        return None;
    }
    let mut info = IdentityInfo::new(address);
    if let Some(name) = a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        info = info.with_display_name(name);
    }
    Some(info)
}

/// Parses an internal date such as `17-Jul-1996 02:44:25 -0700`.
pub(crate) fn parse_internal_date(s: &str) -> Option<Timestamp> {
    const MONTHS: [&str; 12] =
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let s = s.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.trim().split_once(' ')?;
    let mut d = date.trim().split('-');
    let day: i64 = d.next()?.trim().parse().ok()?;
    let month_name = d.next()?.to_ascii_lowercase();
    let month = MONTHS.iter().position(|m| *m == month_name)? as i64 + 1;
    let year: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':');
    let (h, m, sec): (i64, i64, i64) =
        (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let z: i64 = zone.trim_start_matches(['+', '-']).parse().ok()?;
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(Timestamp::from_unix_seconds(days * 86_400 + h * 3600 + m * 60 + sec - offset))
}

/// Turns a raw message into what the engine ingests. `own_address` is the account's address
/// (lower-case); `internal_date` is the server's arrival time, used when Date is missing.
pub fn to_inbound(
    raw: &[u8],
    role: FolderRole,
    internal_date: Option<Timestamp>,
) -> InboundMessage {
    parse_message(raw, role, internal_date).message
}

/// A parsed message with what threading needs besides the [`InboundMessage`].
#[derive(Clone, Debug)]
pub(crate) struct ParsedMessage {
    /// What the engine ingests.
    pub message: InboundMessage,
    /// The Subject header, decoded.
    pub subject: Option<String>,
    /// Whether it has References or In-Reply-To.
    pub has_thread_headers: bool,
}

/// [`to_inbound`] plus the subject and whether the message carries thread headers.
pub(crate) fn parse_message(
    raw: &[u8],
    role: FolderRole,
    internal_date: Option<Timestamp>,
) -> ParsedMessage {
    let fallback_time = internal_date.unwrap_or_else(Timestamp::now);
    let parsed = MessageParser::default().parse(raw);
    let Some(message) = parsed.filter(|m| !m.headers().is_empty()) else {
        let id = hashed_id(&[], raw);
        return ParsedMessage {
            message: raw_only(raw, id, "the message has no header", fallback_time),
            subject: None,
            has_thread_headers: false,
        };
    };
    let subject = message.subject().map(str::to_owned);
    let ids = ids_of(&message, raw);
    let has_thread_headers = !ids.references.is_empty() || !ids.in_reply_to.is_empty();
    let from = identity(message.from());
    let to = identity(message.to())
        .or_else(|| identity(message.cc()))
        .or_else(|| identity(message.bcc()));
    let mut parse_error = None;
    let (direction, remote, client_key) = match role {
        FolderRole::Inbox => (Direction::Inbound, from.clone(), None),
        FolderRole::Sent => (Direction::Outbound, to, Some(ids.provider_id.clone())),
    };
    let remote = remote.unwrap_or_else(|| {
        parse_error = Some(match role {
            FolderRole::Inbox => "no usable From address".to_owned(),
            FolderRole::Sent => "no usable recipient address".to_owned(),
        });
        IdentityInfo::new("unknown@invalid")
    });
    let sent_at = message
        .date()
        .map(|d| Timestamp::from_unix_seconds(d.to_timestamp()))
        .unwrap_or(fallback_time);
    let text = (message.text_body_count() > 0 || message.html_body_count() > 0)
        .then(|| message.body_text(0).map(|t| t.into_owned()))
        .flatten();
    let html = message
        .html_bodies()
        .find(|p| matches!(p.body, PartType::Html(_)))
        .and_then(|p| p.text_contents().map(str::to_owned));
    let mut attachments = Vec::new();
    if parse_error.is_some() {
        attachments.push(raw_attachment(raw));
    }
    for part in message.attachments() {
        let mime_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_owned(),
            })
            .unwrap_or_else(|| "application/octet-stream".to_owned())
            .to_ascii_lowercase();
        attachments.push(InboundAttachment {
            name: part.attachment_name().map(str::to_owned),
            mime_type,
            data: Bytes::copy_from_slice(part.contents()),
        });
    }
    let thread = thread_key(&ids.references, &ids.in_reply_to, &ids.provider_id);
    let mut references = ids.references.clone();
    for id in &ids.in_reply_to {
        if !references.contains(id) {
            references.push(id.clone());
        }
    }
    let message = InboundMessage {
        provider_id: ids.provider_id,
        thread_key: thread,
        remote,
        direction,
        client_key,
        text,
        html,
        reply_to: ids.in_reply_to.last().cloned(),
        references,
        attachments,
        parse_error,
        defects: Vec::new(),
        sent_at,
        cursor: None,
    };
    ParsedMessage { message, subject, has_thread_headers }
}

fn raw_attachment(raw: &[u8]) -> InboundAttachment {
    InboundAttachment {
        name: Some("message.eml".to_owned()),
        mime_type: "message/rfc822".to_owned(),
        data: Bytes::copy_from_slice(raw),
    }
}

fn raw_only(raw: &[u8], provider_id: String, why: &str, sent_at: Timestamp) -> InboundMessage {
    InboundMessage {
        thread_key: provider_id.clone(),
        provider_id,
        remote: IdentityInfo::new("unknown@invalid"),
        direction: Direction::Inbound,
        client_key: None,
        text: None,
        html: None,
        reply_to: None,
        references: Vec::new(),
        attachments: vec![raw_attachment(raw)],
        parse_error: Some(why.to_owned()),
        defects: Vec::new(),
        sent_at,
        cursor: None,
    }
}

/// Only the provider id of a message (for rescans and history lookups on header fetches).
pub(crate) fn provider_id_of(raw: &[u8]) -> String {
    match MessageParser::default().parse_headers(raw) {
        Some(m) if !m.headers().is_empty() => ids_of(&m, raw).provider_id,
        _ => hashed_id(&[], raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &[u8] = b"From: \"Bob B\" <Bob@Example.org>\r\n\
To: alice@example.org\r\n\
Subject: Re: hello\r\n\
Date: Tue, 1 Jul 2025 10:00:00 +0000\r\n\
Message-ID: <r2@example.org>\r\n\
In-Reply-To: <m1@example.org>\r\n\
References: <root@example.org> <m1@example.org>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
hi there\r\n";

    #[test]
    fn a_reply_keeps_every_reference_and_threads_on_the_root() {
        let m = to_inbound(REPLY, FolderRole::Inbox, None);
        assert_eq!(m.provider_id, "<r2@example.org>");
        assert_eq!(m.thread_key, "<root@example.org>");
        assert_eq!(m.references, vec!["<root@example.org>", "<m1@example.org>"]);
        assert_eq!(m.reply_to.as_deref(), Some("<m1@example.org>"));
        assert_eq!(m.remote.address, "bob@example.org");
        assert_eq!(m.remote.display_name.as_deref(), Some("Bob B"));
        assert_eq!(m.direction, Direction::Inbound);
        assert_eq!(m.text.as_deref().map(str::trim), Some("hi there"));
        assert_eq!(m.sent_at, Timestamp::from_unix_seconds(1_751_364_000));
        assert!(m.parse_error.is_none());
    }

    #[test]
    fn a_microsoft_original_id_wins_over_message_id() {
        let raw = b"From: a@x.org\r\nMessage-ID: <rewritten@outlook>\r\nX-Microsoft-Original-Message-ID: <orig@x.org>\r\n\r\nbody";
        assert_eq!(to_inbound(raw, FolderRole::Inbox, None).provider_id, "<orig@x.org>");
    }

    #[test]
    fn a_message_without_id_gets_a_stable_hash_of_its_headers() {
        let raw =
            b"From: a@x.org\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\nSubject: s\r\n\r\nbody";
        let a = to_inbound(raw, FolderRole::Inbox, None).provider_id;
        assert_eq!(a, to_inbound(raw, FolderRole::Inbox, None).provider_id);
        assert!(a.ends_with("@hash.channel-email.invalid>"));
        assert_eq!(provider_id_of(raw), a);
    }

    #[test]
    fn a_sent_message_is_outbound_to_its_recipient_with_its_id_as_client_key() {
        let raw =
            b"From: me@x.org\r\nTo: \"You\" <you@y.org>\r\nMessage-ID: <s1@x.org>\r\n\r\nbody";
        let m = to_inbound(raw, FolderRole::Sent, None);
        assert_eq!(m.direction, Direction::Outbound);
        assert_eq!(m.remote.address, "you@y.org");
        assert_eq!(m.client_key.as_deref(), Some("<s1@x.org>"));
    }

    #[test]
    fn garbage_is_kept_raw_and_flagged() {
        let raw = b"\x00\x01 this is not a mail at all";
        let m = to_inbound(raw, FolderRole::Inbox, None);
        assert!(m.parse_error.is_some());
        assert_eq!(m.attachments[0].mime_type, "message/rfc822");
        assert_eq!(&m.attachments[0].data[..], &raw[..]);
    }

    #[test]
    fn a_message_without_from_is_kept_raw_and_flagged_with_what_could_be_read() {
        let raw = b"Subject: no sender\r\nMessage-ID: <nf@x>\r\n\r\ntext";
        let m = to_inbound(raw, FolderRole::Inbox, None);
        assert_eq!(m.provider_id, "<nf@x>");
        assert!(m.parse_error.is_some());
        assert_eq!(&m.attachments[0].data[..], &raw[..]);
    }

    #[test]
    fn internal_dates_parse_with_their_zone() {
        assert_eq!(
            parse_internal_date("01-Jul-2025 12:00:00 +0200"),
            Some(Timestamp::from_unix_seconds(1_751_364_000))
        );
        assert_eq!(parse_internal_date(" 1-Jan-1970 00:00:00 +0000"), Some(Timestamp::EPOCH));
        assert_eq!(parse_internal_date("01-Jan-1970 00:00:00 +0000"), Some(Timestamp::EPOCH));
        assert_eq!(parse_internal_date("garbage"), None);
    }
}
