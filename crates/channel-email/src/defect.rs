//! The email channel's own defect codes: what was wrong with the structure of a message as it
//! came from the server.
//!
//! They go into [`InboundMessage::defects`](channel_core::InboundMessage::defects) next to the
//! core's codes ([`channel_core::defect`]), with `field` saying where: `header` for the
//! message's own header, `parts[N]` for the MIME part N in mail-parser's numbering (depth
//! first, the message itself is part 0), `parts[N].parts[M]` inside an attached message.
//! Besides these, the channel reports the core's [`INVALID_ENCODING`] for a text part in which
//! bytes that were not valid in its charset were replaced by U+FFFD.
//!
//! Whenever a message has a defect (the channel's or one that makes the core change what is
//! stored: NUL bytes, an over-long id or name, references over the limit), its raw bytes are
//! kept as its first attachment, `message.eml` (`message/rfc822`). When they are larger than
//! the engine's blob limit the core leaves that attachment out and records it as
//! [`ATTACHMENT_TOO_LARGE`] with `left_out` naming `message.eml` and `message/rfc822`: that
//! defect is how a reader learns that the raw form was not kept.
//!
//! [`INVALID_ENCODING`]: channel_core::defect::INVALID_ENCODING
//! [`ATTACHMENT_TOO_LARGE`]: channel_core::defect::ATTACHMENT_TOO_LARGE

/// The message has no header at all (it is not a mail): it is stored with `parse_error` and
/// its raw bytes only.
pub const NO_HEADER: &str = "no_header";
/// The message's header runs into its body without a blank line: a line that is not a header
/// field was found in the header section. The lines from there on are stored as the text when
/// the message has no other.
pub const NO_HEADER_SEPARATOR: &str = "no_header_separator";
/// The header of a MIME part runs into its body without a blank line; that part's body may
/// be missing or merged with the next part's header (the raw message keeps it).
pub const PART_NO_HEADER_SEPARATOR: &str = "part_no_header_separator";
/// A `multipart/*` part declares no boundary, or its boundary never occurs: its body is kept
/// as one text attachment.
pub const MISSING_BOUNDARY: &str = "missing_boundary";
/// A `multipart/*` part's closing delimiter (`--boundary--`) is missing: the message was cut
/// or is malformed, and its last part runs to the end.
pub const UNTERMINATED_BOUNDARY: &str = "unterminated_boundary";
/// A text part declares a charset the parser does not know: it was read as UTF-8, invalid
/// bytes replaced by U+FFFD.
pub const UNKNOWN_CHARSET: &str = "unknown_charset";
/// A header holds raw 8-bit bytes that are not UTF-8 (an unknown charset, not encoded as
/// RFC 2047 words): they were replaced by U+FFFD in names and subjects.
pub const HEADER_8BIT: &str = "header_8bit";

/// Every code of this module.
pub const ALL: &[&str] = &[
    NO_HEADER,
    NO_HEADER_SEPARATOR,
    PART_NO_HEADER_SEPARATOR,
    MISSING_BOUNDARY,
    UNTERMINATED_BOUNDARY,
    UNKNOWN_CHARSET,
    HEADER_8BIT,
];
