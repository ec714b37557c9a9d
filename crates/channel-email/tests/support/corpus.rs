//! The team's corpus of malformed and hostile mail: the files of `tests/corpus` (each named
//! for what it breaks) and the large cases, generated here at test time. Each case says what
//! must hold once it is stored.

use std::path::Path;

/// What must hold for one stored case.
pub struct Case {
    /// The file name, or the name of a generated case.
    pub name: String,
    /// Its bytes, exactly as they go into the mailbox.
    pub raw: Vec<u8>,
    /// Defect codes that must be listed.
    pub defects: &'static [&'static str],
    /// Whether the raw message must be kept as the `message.eml` attachment.
    pub raw_kept: bool,
    /// Attachments (name, MIME type) that must be there.
    pub attachments: &'static [(&'static str, &'static str)],
    /// Words the stored text must contain.
    pub text_contains: &'static [&'static str],
    /// How many attachments must be stored, when that is the point of the case.
    pub attachment_count: Option<usize>,
    /// How many attachments of a MIME type must be stored.
    pub types: &'static [(&'static str, usize)],
}

impl Case {
    fn new(name: impl Into<String>, raw: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            raw,
            defects: &[],
            raw_kept: false,
            attachments: &[],
            text_contains: &[],
            attachment_count: None,
            types: &[],
        }
    }
    fn types(mut self, t: &'static [(&'static str, usize)]) -> Self {
        self.types = t;
        self
    }
    fn defects(mut self, codes: &'static [&'static str]) -> Self {
        self.defects = codes;
        self
    }
    fn raw_kept(mut self) -> Self {
        self.raw_kept = true;
        self
    }
    fn attachments(mut self, a: &'static [(&'static str, &'static str)]) -> Self {
        self.attachments = a;
        self
    }
    fn text(mut self, words: &'static [&'static str]) -> Self {
        self.text_contains = words;
        self
    }
    fn attachment_count(mut self, n: usize) -> Self {
        self.attachment_count = Some(n);
        self
    }
}

/// A stored message as the checks see it (from the engine's store, or from
/// `degrade_inbound` directly).
pub struct Seen {
    pub text: Option<String>,
    pub defects: Vec<String>,
    /// (name, MIME type, size)
    pub attachments: Vec<(Option<String>, String, u64)>,
}

impl Case {
    /// Checks everything the case promises; the message names the case.
    pub fn check(&self, seen: &Seen) {
        let name = &self.name;
        for code in self.defects {
            assert!(
                seen.defects.iter().any(|d| d == code),
                "{name}: defect {code} missing from {:?}",
                seen.defects
            );
        }
        let raw = seen
            .attachments
            .iter()
            .find(|(n, t, _)| n.as_deref() == Some("message.eml") && t == "message/rfc822");
        if self.raw_kept {
            let (_, _, size) = raw.unwrap_or_else(|| {
                panic!("{name}: the raw message is not kept: {:?}", seen.attachments)
            });
            assert_eq!(*size, self.raw.len() as u64, "{name}: the raw message is kept whole");
        } else {
            assert!(raw.is_none(), "{name}: a raw copy without a reason");
        }
        for (n, t) in self.attachments {
            assert!(
                seen.attachments.iter().any(|(an, at, _)| an.as_deref() == Some(*n) && at == t),
                "{name}: attachment {n} ({t}) missing from {:?}",
                seen.attachments
            );
        }
        let text = seen.text.as_deref().unwrap_or("");
        for w in self.text_contains {
            assert!(text.contains(w), "{name}: the text lacks {w:?}: {:?}", truncated(text));
        }
        for (t, n) in self.types {
            let found = seen.attachments.iter().filter(|(_, at, _)| at == t).count();
            assert_eq!(found, *n, "{name}: {t} attachments in {:?}", seen.attachments);
        }
        if let Some(n) = self.attachment_count {
            assert_eq!(seen.attachments.len(), n, "{name}: attachments stored");
        }
    }
}

fn truncated(s: &str) -> &str {
    channel_core::validate::truncate_utf8(s, 300)
}

fn file(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + bytes.len() / 57 * 2 + 4);
    for (i, c) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 { A[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if c.len() > 2 { A[n as usize & 63] as char } else { '=' });
    }
    out
}

fn header(message_id: &str, from: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: ops@corpus.example\r\nSubject: {subject}\r\n\
Date: Wed, 2 Jul 2025 08:00:00 +0000\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
    )
}

/// A 2 MB text body (over the 1 MiB text limit).
pub fn huge_text_body() -> Vec<u8> {
    let line = "All work and no play makes a very long mail body indeed.\r\n";
    let body = line.repeat(2_000_000 / line.len() + 1);
    format!(
        "{}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        header("<huge-text@corpus.example>", "big@corpus.example", "2 MB of text")
    )
    .into_bytes()
}

/// 150 small attachments (over the limit of 100).
pub fn many_attachments() -> Vec<u8> {
    let mut m = format!(
        "{}Content-Type: multipart/mixed; boundary=\"many\"\r\n\r\n--many\r\n\
Content-Type: text/plain\r\n\r\n150 attachments follow.\r\n",
        header("<many-attachments@corpus.example>", "many@corpus.example", "150 attachments")
    );
    for i in 0..150 {
        m.push_str(&format!(
            "--many\r\nContent-Type: application/octet-stream; name=\"a{i}.bin\"\r\n\
Content-Disposition: attachment; filename=\"a{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(format!("attachment number {i}").as_bytes())
        ));
    }
    m.push_str("--many--\r\n");
    m.into_bytes()
}

/// One 30 MB attachment (over the 25 MiB blob limit).
pub fn huge_attachment() -> Vec<u8> {
    let data: Vec<u8> =
        (0..30_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    format!(
        "{}Content-Type: multipart/mixed; boundary=\"big\"\r\n\r\n--big\r\n\
Content-Type: text/plain\r\n\r\nA 30 MB attachment follows.\r\n--big\r\n\
Content-Type: application/octet-stream; name=\"big.bin\"\r\n\
Content-Disposition: attachment; filename=\"big.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--big--\r\n",
        header("<huge-attachment@corpus.example>", "big@corpus.example", "30 MB attachment"),
        base64(&data)
    )
    .into_bytes()
}

/// 1,000 References (over the limit of 500).
pub fn thousand_references() -> Vec<u8> {
    let refs: Vec<String> = (0..1000).map(|i| format!("<ref-{i}@corpus.example>")).collect();
    format!(
        "{}References: {}\r\nIn-Reply-To: <ref-999@corpus.example>\r\n\
Content-Type: text/plain\r\n\r\nA reply deep in a thread.\r\n",
        header("<thousand-refs@corpus.example>", "deep@corpus.example", "Re: 1,000 References"),
        refs.join("\r\n ")
    )
    .into_bytes()
}

/// The 2,000-byte Message-ID of [`long_message_id`].
pub fn long_id() -> String {
    format!("<{}@corpus.example>", "x".repeat(2000 - 17))
}

/// A 2,000-byte Message-ID (over the 1,024-byte id limit).
pub fn long_message_id() -> Vec<u8> {
    format!(
        "{}Content-Type: text/plain\r\n\r\nMy Message-ID is 2,000 bytes long.\r\n",
        header(&long_id(), "long@corpus.example", "A 2,000-byte Message-ID")
    )
    .into_bytes()
}

/// A 2,000-byte display name (over the 512-byte name limit).
pub fn long_display_name() -> Vec<u8> {
    let from = format!("\"{}\" <named@corpus.example>", "N".repeat(2000));
    format!(
        "{}Content-Type: text/plain\r\n\r\nMy name is 2,000 bytes long.\r\n",
        header("<long-name@corpus.example>", &from, "A 2,000-byte display name")
    )
    .into_bytes()
}

/// Every case. `large` adds the multi-megabyte ones.
pub fn cases(large: bool) -> Vec<Case> {
    let mut all = vec![
        Case::new("nul-in-quoted-printable.eml", file("nul-in-quoted-printable.eml"))
            .defects(&["nul_replaced"])
            .raw_kept()
            .text(&["before\u{FFFD}after"]),
        Case::new("nul-in-base64-text.eml", file("nul-in-base64-text.eml"))
            .defects(&["nul_replaced"])
            .raw_kept()
            .text(&["before\u{FFFD}after"]),
        Case::new("second-text-plain-part.eml", file("second-text-plain-part.eml"))
            .attachments(&[("part-2.txt", "text/plain")])
            .text(&["The first text part."]),
        Case::new("inline-text-part-with-filename.eml", file("inline-text-part-with-filename.eml"))
            .attachments(&[("notes.txt", "text/plain")])
            .text(&["See the notes below."]),
        Case::new("part-header-without-blank-line.eml", file("part-header-without-blank-line.eml"))
            .defects(&["part_no_header_separator"])
            .raw_kept(),
        Case::new("no-blank-line-after-header.eml", file("no-blank-line-after-header.eml"))
            .defects(&["no_header_separator"])
            .raw_kept()
            .text(&["This body follows the header", "a second line"]),
        Case::new("missing-boundary.eml", file("missing-boundary.eml"))
            .defects(&["missing_boundary"])
            .raw_kept(),
        Case::new("unterminated-boundary.eml", file("unterminated-boundary.eml"))
            .defects(&["unterminated_boundary"])
            .raw_kept()
            .text(&["The first part."]),
        Case::new("8bit-header-unknown-charset.eml", file("8bit-header-unknown-charset.eml"))
            .defects(&["header_8bit"])
            .raw_kept(),
        Case::new("unknown-charset-body.eml", file("unknown-charset-body.eml"))
            .defects(&["unknown_charset"])
            .raw_kept()
            .text(&["in a charset the parser has no table for"]),
        Case::new("multipart-digest.eml", file("multipart-digest.eml"))
            .types(&[("message/rfc822", 2), ("application/octet-stream", 0)]),
        Case::new(
            "alert-without-message-id-host-a.eml",
            file("alert-without-message-id-host-a.eml"),
        )
        .text(&["host-a"]),
        Case::new(
            "alert-without-message-id-host-b.eml",
            file("alert-without-message-id-host-b.eml"),
        )
        .text(&["host-b"]),
        Case::new("1000-references", thousand_references())
            .defects(&["references_dropped"])
            .raw_kept(),
        Case::new("2000-byte-message-id", long_message_id()).defects(&["id_shortened"]).raw_kept(),
        Case::new("2000-byte-display-name", long_display_name())
            .defects(&["name_truncated"])
            .raw_kept(),
        Case::new("150-attachments", many_attachments())
            .defects(&["attachment_over_count"])
            .attachment_count(100),
    ];
    if large {
        all.push(
            Case::new("2mb-text-body", huge_text_body())
                .defects(&["text_truncated"])
                .attachments(&[("full-text.txt", "text/plain")]),
        );
        all.push(
            Case::new("30mb-attachment", huge_attachment())
                .defects(&["attachment_too_large"])
                .text(&["A 30 MB attachment follows."]),
        );
    }
    all
}

/// An ordinary mail, put behind every case.
pub fn canary(i: usize) -> (String, Vec<u8>) {
    let id = format!("<canary-{i}@corpus.example>");
    let raw = format!(
        "{}Content-Type: text/plain; charset=utf-8\r\n\r\nCanary number {i}.\r\n",
        header(&id, "canary@corpus.example", &format!("canary {i}"))
    );
    (id, raw.into_bytes())
}

/// `raw` as a server delivers it: with the trace fields of its way prepended.
pub fn with_trace_fields(raw: &[u8]) -> Vec<u8> {
    let mut out = b"Return-Path: <colleague@corpus.example>\r\n\
Delivered-To: ops@corpus.example\r\n\
Received: from mx.corpus.example (mx.corpus.example [192.0.2.1])\r\n\
\tby imap.corpus.example with LMTP id abc; Wed, 2 Jul 2025 09:00:01 +0000\r\n\
Received: from client (client [192.0.2.7])\r\n\tby mx.corpus.example; Wed, 2 Jul 2025 09:00:00 +0000\r\n\
X-Original-To: ops@corpus.example\r\n\
Authentication-Results: mx.corpus.example; spf=pass\r\n\
X-Spam-Status: No, score=-1.0\r\n"
        .to_vec();
    out.extend_from_slice(raw);
    out
}
