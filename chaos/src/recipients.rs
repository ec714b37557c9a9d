//! What the people received: the replies in each customer's maildir (with the Message-ID and
//! OpenSMTPD's id of each copy) and the loopback servers' record of what each account sent.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::loopback::Loopback;

/// One copy of a reply delivered by mail.
#[derive(Clone, Debug)]
pub struct MailCopy {
    /// Its `Message-ID`.
    pub message_id: String,
    /// OpenSMTPD's id of the message (`with ESMTP id ...` in its `Received:` line).
    pub smtpd_id: String,
}

/// The value of header `name` (first occurrence, unfolded) in a raw mail.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or(raw);
    let head = head.split("\n\n").next().unwrap_or(head);
    let mut lines = head.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((n, v)) = line.split_once(':') else { continue };
        if n.eq_ignore_ascii_case(name) {
            let mut value = v.trim().to_owned();
            while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(lines.next().unwrap_or("").trim());
            }
            return Some(value);
        }
    }
    None
}

/// Every reply copy in `maildir` (`new` and `cur`): token -> copies.
pub fn mail_replies(maildir: &Path) -> HashMap<u64, Vec<MailCopy>> {
    let mut out: HashMap<u64, Vec<MailCopy>> = HashMap::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else { continue };
        for e in entries.flatten() {
            let Ok(raw) = std::fs::read_to_string(e.path()) else { continue };
            let Some(at) = raw.find("re chaos-in-") else { continue };
            let Some(n) = crate::reactor::token(&raw[at..]) else { continue };
            let smtpd_id = raw
                .split("(OpenSMTPD) with ESMTP id ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .unwrap_or("")
                .to_owned();
            let message_id = header(&raw, "Message-ID").unwrap_or_default();
            out.entry(n).or_default().push(MailCopy { message_id, smtpd_id });
        }
    }
    out
}

/// What account `k` sent at the loopback server: token -> how many messages.
pub async fn telegram_replies(
    loopback: &Loopback,
    k: usize,
) -> Result<HashMap<u64, usize>, String> {
    let answer = loopback.command(k, "outgoing").await?;
    let json = answer.strip_prefix("outgoing ").ok_or_else(|| format!("outgoing: `{answer}`"))?;
    let list: Value = serde_json::from_str(json).map_err(|e| format!("outgoing: {e}"))?;
    let mut out = HashMap::new();
    for m in list.as_array().into_iter().flatten() {
        if let Some(n) =
            m["text"].as_str().filter(|t| t.starts_with("re ")).and_then(crate::reactor::token)
        {
            *out.entry(n).or_insert(0) += 1;
        }
    }
    Ok(out)
}
