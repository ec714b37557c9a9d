//! Message-IDs and thread keys.
//!
//! Every id is kept in its angle-bracket form, `<local@domain>`, so that the provider id of a
//! received message, the `client_key` of a send and the ids in References compare equal.
//! A thread is keyed by its root: the first id of References, else In-Reply-To, else the
//! message's own id. Replies carry every id of References so that the store can also find
//! the conversation through any earlier message.

use sha2::{Digest, Sha256};

/// The canonical `<id>` form of a Message-ID, or `None` when nothing usable is left.
pub fn normalize_id(raw: &str) -> Option<String> {
    let inner = raw.trim().trim_start_matches('<').trim_end_matches('>').trim();
    if inner.is_empty()
        || inner.chars().any(|c| c.is_whitespace() || c == '<' || c == '>' || c.is_control())
    {
        return None;
    }
    Some(format!("<{inner}>"))
}

/// Whether `s` already is a Message-ID in `<local@domain>` form that can go into a header.
pub fn is_message_id(s: &str) -> bool {
    normalize_id(s).as_deref() == Some(s) && s.contains('@')
}

/// The thread key of a message: the root of References, else the first In-Reply-To id, else
/// its own id.
pub fn thread_key(references: &[String], in_reply_to: &[String], own_id: &str) -> String {
    references.first().or_else(|| in_reply_to.first()).cloned().unwrap_or_else(|| own_id.to_owned())
}

/// Header fields that servers add to a message on its way and on delivery (lower-case
/// names). They are left out of [`content_id`], so that the copy delivered into INBOX and the
/// copy filed elsewhere (APPEND, another client) get one id. [`TRACE_PREFIXES`] names whole
/// families of them.
///
/// Trace and delivery: `Received`, `Return-Path`, `Delivered-To`, `X-Original-To`,
/// `X-Received`, `X-Delivered-To`, `Envelope-To`, `X-Envelope-To`, `X-Envelope-From`,
/// `X-Original-Arrival-Time`. Verdicts of the receiving side: `Authentication-Results`,
/// `Received-SPF`, `X-Virus-Scanned`, `X-Virus-Status`, `X-Forefront-Antispam-Report`. State
/// that mail stores and clients write into a copy: `Status`, `X-Status`, `X-Keywords`,
/// `X-UID`, `Content-Length`, `Lines`. `DKIM-Signature` is *not* trace: the sender adds it,
/// and every copy carries the same one.
pub const TRACE_FIELDS: &[&str] = &[
    "received",
    "return-path",
    "delivered-to",
    "x-original-to",
    "x-received",
    "x-delivered-to",
    "envelope-to",
    "x-envelope-to",
    "x-envelope-from",
    "x-original-arrival-time",
    "authentication-results",
    "received-spf",
    "x-virus-scanned",
    "x-virus-status",
    "x-forefront-antispam-report",
    "status",
    "x-status",
    "x-keywords",
    "x-uid",
    "content-length",
    "lines",
];

/// Prefixes of trace field names (see [`TRACE_FIELDS`]): `ARC-*` (ARC-Seal,
/// ARC-Message-Signature, ARC-Authentication-Results), `X-Spam-*`, `X-Rspamd-*`,
/// `X-MS-Exchange-*`, `X-Microsoft-Antispam*`, `X-Mozilla-Status*`.
pub const TRACE_PREFIXES: &[&str] =
    &["arc-", "x-spam-", "x-rspamd-", "x-ms-exchange-", "x-microsoft-antispam", "x-mozilla-status"];

/// Whether the header field `name` is one of the [`TRACE_FIELDS`] or [`TRACE_PREFIXES`].
pub fn is_trace_field(name: &[u8]) -> bool {
    let name = name.trim_ascii();
    TRACE_FIELDS.iter().any(|t| name.eq_ignore_ascii_case(t.as_bytes()))
        || TRACE_PREFIXES
            .iter()
            .any(|p| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// The provider id of a message without a Message-ID: a hash of the whole message less its
/// [`TRACE_FIELDS`], in the `<hex@hash.channel-email.invalid>` form.
///
/// Line ends are compared without their CR, so a copy stored with bare LF gets the same id.
/// The same message seen in two folders (one delivered with `Received`, `Return-Path` and
/// `Delivered-To` added, one filed by APPEND) gets one id; two messages that differ in any
/// other byte of their header or body (two monitoring alerts with the same Date, From, To and
/// Subject) never share one. A message without a header section is hashed whole.
pub fn content_id(raw: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"channel-email content id v2\n");
    let mut rest = raw;
    let mut skipping = false;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            hasher.update(b"\n");
            // The body, line ends without CR, hashed in large pieces.
            hash_without_cr(&mut hasher, next);
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            skipping = line
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|colon| is_trace_field(&line[..colon]));
        }
        if !skipping {
            hasher.update(line);
            hasher.update(b"\n");
        }
        rest = next;
    }
    let digest = hex::encode(hasher.finalize());
    format!("<{}@hash.channel-email.invalid>", &digest[..40])
}

/// Feeds `bytes` to `hasher` with every CR that ends a line left out.
fn hash_without_cr(hasher: &mut Sha256, bytes: &[u8]) {
    let mut start = 0;
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'\r') {
        let at = i + off;
        if bytes.get(at + 1) == Some(&b'\n') {
            hasher.update(&bytes[start..at]);
            start = at + 1;
        }
        i = at + 1;
    }
    hasher.update(&bytes[start..]);
}

/// The Message-ID of a send: the `client_key` itself when it is a Message-ID already,
/// otherwise one derived from it deterministically (so every retry carries the same id).
pub fn message_id_for(client_key: &str, from_address: &str) -> String {
    if is_message_id(client_key) {
        return client_key.to_owned();
    }
    let domain = from_address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| {
            !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        .unwrap_or("channel-email.invalid");
    let digest = hex::encode(Sha256::digest(client_key.as_bytes()));
    format!("<{}@{domain}>", &digest[..32])
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_are_normalized_to_angle_brackets() {
        assert_eq!(normalize_id(" <a@b> ").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_id("a@b").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_id("<>"), None);
    }

    #[test]
    fn trace_fields_are_recognised_case_blind() {
        assert!(is_trace_field(b"Received"));
        assert!(is_trace_field(b"ARC-Seal"));
        assert!(!is_trace_field(b"DKIM-Signature"));
    }

    #[test]
    fn a_content_id_ignores_trace_fields_and_nothing_else() {
        let sent = b"From: a@x.org\r\nSubject: disk full\r\n\r\nhost 1\r\n";
        let delivered = b"Return-Path: <a@x.org>\r\nReceived: from mx by mx\r\n\tid 1\r\n\
        From: a@x.org\r\nSubject: disk full\r\n\r\nhost 1\r\n";
        let other = b"From: a@x.org\r\nSubject: disk full\r\n\r\nhost 2\r\n";
        assert_eq!(content_id(sent), content_id(delivered));
        assert_ne!(content_id(sent), content_id(other));
    }

    use super::*;

    #[test]
    fn the_thread_root_is_the_first_reference_then_in_reply_to_then_self() {
        let refs = vec!["<root@x>".to_owned(), "<mid@x>".to_owned()];
        let irt = vec!["<mid@x>".to_owned()];
        assert_eq!(thread_key(&refs, &irt, "<me@x>"), "<root@x>");
        assert_eq!(thread_key(&[], &irt, "<me@x>"), "<mid@x>");
        assert_eq!(thread_key(&[], &[], "<me@x>"), "<me@x>");
    }

    #[test]
    fn a_send_id_is_the_client_key_or_derived_from_it_deterministically() {
        assert_eq!(message_id_for("<k1@example.org>", "a@example.org"), "<k1@example.org>");
        let a = message_id_for("0192-uuid", "a@example.org");
        assert_eq!(a, message_id_for("0192-uuid", "a@example.org"));
        assert!(is_message_id(&a));
        assert!(a.ends_with("@example.org>"));
        assert!(is_message_id(&message_id_for("x\r\ny", "weird")));
    }

    #[test]
    fn a_content_id_ignores_trace_fields_and_line_ends_but_nothing_else() {
        let sent = b"From: a@x\r\nDate: d\r\nSubject: alert\r\n\r\ndisk full\r\n";
        let delivered = b"Return-Path: <a@x>\r\nDelivered-To: b@y\r\nReceived: from a\r\n by b;\r\n d\r\nX-Spam-Status: No\r\nFrom: a@x\r\nDate: d\r\nARC-Seal: i=1\r\nSubject: alert\r\n\r\ndisk full\r\n";
        let bare_lf = b"From: a@x\nDate: d\nSubject: alert\n\ndisk full\n";
        let a = content_id(sent);
        assert_eq!(a, content_id(delivered), "trace fields are left out");
        assert_eq!(a, content_id(bare_lf), "CR LF and LF are the same line end");
        assert!(a.ends_with("@hash.channel-email.invalid>"));
        let other_body = b"From: a@x\r\nDate: d\r\nSubject: alert\r\n\r\ndisk ok\r\n";
        assert_ne!(a, content_id(other_body), "the body counts");
        let dkim =
            b"DKIM-Signature: v=1\r\nFrom: a@x\r\nDate: d\r\nSubject: alert\r\n\r\ndisk full\r\n";
        assert_ne!(a, content_id(dkim), "DKIM-Signature is not trace");
        let header_only = b"From: a@x\r\nDate: d\r\nSubject: alert\r\n";
        assert_ne!(a, content_id(header_only));
        assert_ne!(content_id(b"one"), content_id(b"two"));
        assert!(is_trace_field(b"ARC-Message-Signature"));
        assert!(is_trace_field(b"X-Microsoft-Antispam-Mailbox-Delivery"));
        assert!(!is_trace_field(b"Received-By-Hand"));
        assert!(!is_trace_field(b"Subject"));
    }
}
