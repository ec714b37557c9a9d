//! From raw RFC 5322 bytes to an [`InboundMessage`].
//!
//! Parsing never fails: a message that cannot be parsed (no headers, no `From`) is still
//! delivered, with its raw bytes as the first attachment (`message/rfc822`) and
//! `parse_error` set, so it never blocks the messages behind it.
//!
//! Nothing the sender wrote disappears:
//!
//! - The text is the first text part of the body (an HTML part converted when there is no
//!   plain one), the HTML the first HTML part. **Every other text part** that mail-parser
//!   counts as body (a second `text/plain`, an inline text part with a file name, the parts
//!   of a second `multipart/alternative`) is kept as an attachment: under its file name, or
//!   `part-N.txt` / `part-N.html` (N its part number) when it has none, with its MIME type
//!   (`text/plain`, `text/html`...) and its decoded text as UTF-8. Nothing is appended to the
//!   text.
//! - The parts of a `multipart/digest` (and any other attached message) are `message/rfc822`
//!   attachments holding the message's bytes.
//! - The body of a message whose header runs into it without a blank line is the text.
//! - Structural defects ([`crate::defect`]) are listed in `defects`; whenever there is one,
//!   or the core will have to change what is stored (NUL bytes in the text, an id longer than
//!   the core's limit, a display name over its limit, references over their limit), the raw
//!   message is the first attachment, `message.eml` (`message/rfc822`).

use bytes::Bytes;
use channel_core::validate::Limits;
use channel_core::{AttachmentData, Defect, Direction, IdentityInfo, InboundMessage, Timestamp};
use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};

use crate::structure;
use crate::thread::{content_id, normalize_id, thread_key};

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
    /// X-Microsoft-Original-Message-ID, else Message-ID, else the [`content_id`] of the whole
    /// message less its trace fields.
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

/// The id the message names itself by: X-Microsoft-Original-Message-ID, else Message-ID.
fn own_id(message: &mail_parser::Message<'_>) -> Option<String> {
    message
        .header_raw("X-Microsoft-Original-Message-ID")
        .and_then(normalize_id)
        .or_else(|| message.message_id().and_then(normalize_id))
}

fn ids_of(message: &mail_parser::Message<'_>, raw: &[u8]) -> MessageIds {
    MessageIds {
        provider_id: own_id(message).unwrap_or_else(|| content_id(raw)),
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
        let mut message =
            raw_only(raw, content_id(raw), "the message has no header", fallback_time);
        message.defects.push(Defect::new(crate::defect::NO_HEADER));
        return ParsedMessage { message, subject: None, has_thread_headers: false };
    };
    let found = structure::check(&message, raw);
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
    let bodies = Bodies::choose(&message);
    let mut text = bodies.text;
    if text.as_deref().is_none_or(str::is_empty)
        && let Some(recovered) = found.text_in_header
    {
        text = Some(recovered);
    }
    let html = bodies
        .html
        .and_then(|id| message.parts.get(id))
        .and_then(|p| p.text_contents().map(str::to_owned));
    let mut attachments = Vec::with_capacity(message.attachments.len() + bodies.extra.len());
    for part in message.attachments() {
        attachments.push(AttachmentData {
            name: part.attachment_name().map(str::to_owned),
            mime_type: mime_type_of(part),
            data: Bytes::copy_from_slice(part.contents()),
        });
    }
    for id in bodies.extra {
        let Some(part) = message.parts.get(id) else { continue };
        let is_html = matches!(part.body, PartType::Html(_));
        let name = part
            .attachment_name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("part-{id}.{}", if is_html { "html" } else { "txt" }));
        let mime_type = match part.content_type() {
            Some(ct) if ct.ctype().eq_ignore_ascii_case("text") => mime_type_of(part),
            _ if is_html => "text/html".to_owned(),
            _ => "text/plain".to_owned(),
        };
        attachments.push(AttachmentData {
            name: Some(name),
            mime_type,
            data: Bytes::copy_from_slice(part.contents()),
        });
    }
    let thread = thread_key(&ids.references, &ids.in_reply_to, &ids.provider_id);
    let mut references = ids.references;
    for id in &ids.in_reply_to {
        if !references.contains(id) {
            references.push(id.clone());
        }
    }
    let mut message = InboundMessage {
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
        defects: found.defects,
        sent_at,
        cursor: None,
    };
    if !message.defects.is_empty() || message.parse_error.is_some() || will_be_changed(&message) {
        message.attachments.insert(0, raw_attachment(raw));
    }
    ParsedMessage { message, subject, has_thread_headers }
}

/// Which parts are the text and the HTML of a message, and which other text parts must be kept
/// as attachments (part numbers).
struct Bodies {
    text: Option<String>,
    html: Option<usize>,
    extra: Vec<usize>,
}

impl Bodies {
    fn choose(message: &mail_parser::Message<'_>) -> Self {
        let is_text = |id: u32| {
            message
                .parts
                .get(id as usize)
                .is_some_and(|p| matches!(p.body, PartType::Text(_) | PartType::Html(_)))
        };
        let text_pos = message.text_body.iter().position(|&id| is_text(id));
        let text_id = text_pos.and_then(|pos| message.text_body.get(pos).copied());
        let text = text_pos.and_then(|pos| message.body_text(pos)).map(|t| t.into_owned());
        let html_id = message.html_body.iter().copied().find(|&id| {
            message.parts.get(id as usize).is_some_and(|p| matches!(p.body, PartType::Html(_)))
        });
        let mut extra: Vec<usize> = Vec::new();
        for &id in message.text_body.iter().chain(&message.html_body) {
            if Some(id) == text_id
                || Some(id) == html_id
                || !is_text(id)
                || message.attachments.contains(&id)
                || extra.contains(&(id as usize))
            {
                continue;
            }
            extra.push(id as usize);
        }
        Self { text, html: html_id.map(|id| id as usize), extra }
    }
}

/// The MIME type of an attachment as stored: `type/subtype` in lower case, `message/rfc822`
/// for an attached message without its own type (a `multipart/digest` part), `text/plain`
/// for a multipart whose boundary was missing (its body was read as text).
fn mime_type_of(part: &mail_parser::MessagePart<'_>) -> String {
    let declared = part.content_type().map(|ct| match ct.subtype() {
        Some(sub) => format!("{}/{}", ct.ctype(), sub),
        None => ct.ctype().to_owned(),
    });
    let declared = declared.map(|t| t.to_ascii_lowercase());
    match (&part.body, declared) {
        (PartType::Message(_), Some(t)) if t.starts_with("message/") => t,
        (PartType::Message(_), _) => "message/rfc822".to_owned(),
        (PartType::Text(_), Some(t)) if t.starts_with("multipart/") => "text/plain".to_owned(),
        (_, Some(t)) => t,
        (_, None) => "application/octet-stream".to_owned(),
    }
}

/// Whether the core's [`degrade_inbound`](channel_core::validate::degrade_inbound) will change
/// something the raw message alone still has: NUL bytes in the text, HTML or display name, an
/// id or a display name over the limit, references over the limit. (A text over the limit is
/// kept whole by the core itself; attachments over a limit are recorded.)
fn will_be_changed(m: &InboundMessage) -> bool {
    let l = &Limits::DEFAULT;
    let has_nul = |s: Option<&str>| s.is_some_and(|s| s.contains('\0'));
    has_nul(m.text.as_deref())
        || has_nul(m.html.as_deref())
        || has_nul(m.remote.display_name.as_deref())
        || m.remote.display_name.as_ref().is_some_and(|n| n.len() > l.name)
        || m.remote.address.len() > l.address
        || m.provider_id.len() > l.id
        || m.thread_key.len() > l.id
        || m.references.len() > l.references
        || m.references.iter().any(|r| r.len() > l.id)
}

fn raw_attachment(raw: &[u8]) -> AttachmentData {
    AttachmentData {
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

/// The provider id of a message from its header alone (rescans and history lookups fetch only
/// the header): `Some` when the message names itself (Message-ID or
/// X-Microsoft-Original-Message-ID), `None` when its id is its [`content_id`], which needs the
/// whole message: fetch it whole for that.
pub(crate) fn provider_id_of(header: &[u8]) -> Option<String> {
    MessageParser::default()
        .parse_headers(header)
        .filter(|m| !m.headers().is_empty())
        .and_then(|m| own_id(&m))
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
    fn a_message_without_id_is_known_by_its_content_less_trace_fields() {
        let raw =
            b"From: a@x.org\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\nSubject: s\r\n\r\nbody";
        let a = to_inbound(raw, FolderRole::Inbox, None).provider_id;
        assert_eq!(a, to_inbound(raw, FolderRole::Inbox, None).provider_id);
        assert_eq!(a, content_id(raw));
        assert!(a.ends_with("@hash.channel-email.invalid>"));
        assert_eq!(provider_id_of(raw), None, "the header alone cannot name it");
        let other =
            b"From: a@x.org\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\nSubject: s\r\n\r\nbody 2";
        assert_ne!(a, to_inbound(other, FolderRole::Inbox, None).provider_id);
    }

    #[test]
    fn the_header_alone_gives_the_same_id_as_the_whole_message_when_it_names_one() {
        let header = b"From: a@x.org\r\nMessage-ID: <h1@x.org>\r\n\r\n";
        assert_eq!(provider_id_of(header).as_deref(), Some("<h1@x.org>"));
        assert_eq!(
            provider_id_of(REPLY),
            Some(to_inbound(REPLY, FolderRole::Inbox, None).provider_id)
        );
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
