//! Message-IDs and thread keys.
//!
//! Every id is kept in its angle-bracket form, `<local@domain>`, so that the provider id of a
//! received message, the `client_key` of a send and the ids in References compare equal.
//! A thread is keyed by its root: the first id of References, else In-Reply-To, else the
//! message's own id. Replies carry every id of References so that the store can also find
//! the conversation through any earlier message.

use sha2::{Digest, Sha256};

/// The canonical `<id>` form of a Message-ID, or `None` when nothing usable is left.
///
/// ```
/// use channel_email::thread::normalize_id;
/// assert_eq!(normalize_id(" <a@b> ").as_deref(), Some("<a@b>"));
/// assert_eq!(normalize_id("a@b").as_deref(), Some("<a@b>"));
/// assert_eq!(normalize_id("<>"), None);
/// ```
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

/// A stable id for a message without a Message-ID: a hash of its identifying headers (or of
/// all its bytes when it has none of them).
pub fn hashed_id(fields: &[(&str, &str)], raw: &[u8]) -> String {
    let mut hasher = Sha256::new();
    let mut any = false;
    for (name, value) in fields {
        if !value.is_empty() {
            any = true;
        }
        hasher.update(name.as_bytes());
        hasher.update(b":");
        hasher.update(value.trim().as_bytes());
        hasher.update(b"\n");
    }
    if !any {
        hasher.update(raw);
    }
    let digest = hex::encode(hasher.finalize());
    format!("<{}@hash.channel-email.invalid>", &digest[..40])
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
    fn a_hashed_id_is_stable_and_depends_on_the_headers() {
        let a = hashed_id(&[("from", "a@x"), ("date", "d")], b"raw");
        assert_eq!(a, hashed_id(&[("from", "a@x"), ("date", "d")], b"other raw"));
        assert_ne!(a, hashed_id(&[("from", "b@x"), ("date", "d")], b"raw"));
        assert_ne!(hashed_id(&[], b"one"), hashed_id(&[], b"two"));
    }
}
