//! The structural check of a raw message: what mail-parser reads leniently without saying so.
//!
//! mail-parser never fails, and that is what the channel wants (a malformed message is still
//! stored), but it also never says what it had to guess. This module compares what it parsed
//! with the raw bytes and reports the structural [`defects`](crate::defect) it finds. It reads
//! only header sections and the last bytes of each multipart body, so it costs next to
//! nothing on well-formed mail: the body is never scanned, except a text part that already
//! contains U+FFFD (to tell a replaced byte from a sender's own U+FFFD).

use channel_core::Defect;
use channel_core::defect::INVALID_ENCODING;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{Message, MimeHeaders, PartType};

use crate::defect::{
    HEADER_8BIT, MISSING_BOUNDARY, NO_HEADER_SEPARATOR, PART_NO_HEADER_SEPARATOR, UNKNOWN_CHARSET,
    UNTERMINATED_BOUNDARY,
};

/// The most defects one scan reports (the core keeps at most 64 per message anyway).
const MAX_DEFECTS: usize = 32;

/// How deep nested messages (`message/rfc822` parts) are checked.
const MAX_DEPTH: usize = 4;

/// What the check found.
#[derive(Debug, Default)]
pub(crate) struct Structure {
    /// The defects, in the order found.
    pub defects: Vec<Defect>,
    /// The top-level header ran into the body (no blank line): the lines from the first one
    /// that is not a header field to the end of what was read as the header. mail-parser drops
    /// them; the channel keeps them as the text when the message has no other.
    pub text_in_header: Option<String>,
}

impl Structure {
    fn push(&mut self, defect: Defect) {
        if self.defects.len() < MAX_DEFECTS && !self.defects.contains(&defect) {
            self.defects.push(defect);
        }
    }
}

/// Checks the structure of `message`, parsed from `raw`.
pub(crate) fn check(message: &Message<'_>, raw: &[u8]) -> Structure {
    let mut found = Structure::default();
    check_message(message, raw, "", 0, &mut found);
    found
}

fn check_message(
    message: &Message<'_>,
    raw: &[u8],
    prefix: &str,
    depth: usize,
    found: &mut Structure,
) {
    for (i, part) in message.parts.iter().enumerate() {
        let header = slice(raw, part.offset_header, part.offset_body);
        let field = || {
            if i == 0 && prefix.is_empty() {
                "header".to_owned()
            } else {
                format!("{prefix}parts[{i}]")
            }
        };
        if let Some(at) = first_non_field_line(header) {
            if i == 0 {
                let code =
                    if prefix.is_empty() { NO_HEADER_SEPARATOR } else { PART_NO_HEADER_SEPARATOR };
                found.push(Defect::new(code).field(field()));
                if prefix.is_empty() {
                    let text = String::from_utf8_lossy(&header[at..]);
                    let text = text.trim_end_matches(['\r', '\n']);
                    if !text.is_empty() {
                        found.text_in_header = Some(text.to_owned());
                    }
                }
            } else {
                found.push(Defect::new(PART_NO_HEADER_SEPARATOR).field(field()));
            }
        }
        if !header.is_ascii() && std::str::from_utf8(header).is_err() {
            found.push(Defect::new(HEADER_8BIT).field(field()));
        }
        let content_type = part.content_type();
        if content_type.is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart")) {
            let boundary = content_type.and_then(|ct| ct.attribute("boundary"));
            match (boundary, &part.body) {
                (Some(boundary), PartType::Multipart(_)) => {
                    let body = slice(raw, part.offset_body, part.offset_end);
                    if !has_closing_delimiter(body, boundary.as_bytes()) {
                        found.push(Defect::new(UNTERMINATED_BOUNDARY).field(field()));
                    }
                }
                _ => found.push(Defect::new(MISSING_BOUNDARY).field(field())),
            }
        }
        match &part.body {
            PartType::Text(text) | PartType::Html(text) => {
                let charset = content_type.and_then(|ct| ct.attribute("charset"));
                if charset.is_some_and(is_unknown_charset) {
                    found.push(Defect::new(UNKNOWN_CHARSET).field(field()));
                } else if text.contains('\u{FFFD}')
                    && !contains(
                        slice(raw, part.offset_body, part.offset_end),
                        "\u{FFFD}".as_bytes(),
                    )
                {
                    found.push(Defect::new(INVALID_ENCODING).field(field()));
                }
            }
            PartType::Message(nested) if depth < MAX_DEPTH => {
                let prefix = format!("{prefix}parts[{i}].");
                check_message(nested, nested.raw_message(), &prefix, depth + 1, found);
            }
            _ => {}
        }
    }
}

/// Whether mail-parser has no decoder for `charset`: it knows UTF-8 (read without a decoder)
/// and the charsets of its decoder table.
fn is_unknown_charset(charset: &str) -> bool {
    let folded: String = charset
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let utf8 =
        matches!(folded.as_str(), "utf8" | "unicode11utf8" | "unicode20utf8" | "xunicode20utf8");
    !utf8 && charset_decoder(charset.as_bytes()).is_none()
}

/// `raw[from..to]`, empty when the offsets do not fit.
fn slice(raw: &[u8], from: u32, to: u32) -> &[u8] {
    raw.get(from as usize..to as usize).unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `body` has the closing delimiter `--boundary--` at the start of a line, searched
/// from its end (where it is on well-formed mail, before at most an epilogue).
fn has_closing_delimiter(body: &[u8], boundary: &[u8]) -> bool {
    let mut needle = Vec::with_capacity(boundary.len() + 4);
    needle.extend_from_slice(b"--");
    needle.extend_from_slice(boundary);
    needle.extend_from_slice(b"--");
    let n = needle.len();
    (0..body.len().saturating_sub(n - 1))
        .rev()
        .any(|at| (at == 0 || body[at - 1] == b'\n') && body[at..at + n] == needle[..])
}

/// The offset of the first line of a header section that is neither a header field
/// (`name:`, the name printable ASCII without spaces) nor the continuation of one, if any.
fn first_non_field_line(header: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut first = true;
    while at < header.len() {
        let end =
            header[at..].iter().position(|&b| b == b'\n').map_or(header.len(), |i| at + i + 1);
        let line = &header[at..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return None;
        }
        let continuation = !first && matches!(content[0], b' ' | b'\t');
        if !continuation && !is_field(content) {
            return Some(at);
        }
        first = false;
        at = end;
    }
    None
}

fn is_field(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => {
            let name = line[..colon].trim_ascii_end();
            !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn codes(raw: &[u8]) -> Vec<String> {
        let m = MessageParser::default().parse(raw).expect("parsed");
        check(&m, raw)
            .defects
            .into_iter()
            .map(|d| format!("{}@{}", d.code, d.field.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn well_formed_mail_has_no_structural_defect() {
        let raw = b"From: a@x\r\nSubject: s\r\n\tfolded\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi \xc3\xa9\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b--\r\n";
        assert_eq!(codes(raw), Vec::<String>::new());
    }

    #[test]
    fn each_structural_defect_is_named_with_where_it_is() {
        assert_eq!(
            codes(b"From: a@x\r\nSubject: s\r\nthe body\r\n"),
            ["no_header_separator@header"]
        );
        assert_eq!(
            codes(b"From: a@x\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\nno parts\r\n"),
            ["missing_boundary@header"]
        );
        assert_eq!(
            codes(b"From: a@x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nopen\r\n"),
            ["unterminated_boundary@header"]
        );
        assert_eq!(codes(b"From: J\xf6rg <a@x>\r\n\r\nbody\r\n"), ["header_8bit@header"]);
        assert_eq!(
            codes(b"From: a@x\r\nContent-Type: text/plain; charset=x-unheard-of\r\n\r\nbody\r\n"),
            ["unknown_charset@header"]
        );
        assert_eq!(
            codes(b"From: a@x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbad \xff byte\r\n"),
            ["invalid_encoding@header"]
        );
        assert_eq!(
            codes(b"From: a@x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nreal \xef\xbf\xbd\r\n"),
            Vec::<String>::new(),
            "a U+FFFD the sender wrote is not a defect"
        );
        let part = codes(b"From: a@x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nbody right away\r\n--b\r\n\r\nsecond\r\n--b--\r\n");
        assert!(part.iter().any(|c| c.starts_with("part_no_header_separator@parts[")), "{part:?}");
    }
}
