//! The per-folder cursor: (UIDVALIDITY, UIDNEXT) kept in the account state.
//!
//! Every message below `uid_next` in the folder (under that UIDVALIDITY) is stored. The
//! cursor advances only with the commit of the messages it covers (it rides on the last
//! message of a batch), or on its own across UIDs that hold no message.

use channel_core::CursorUpdate;

/// Where a folder has been read up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderCursor {
    /// The folder's UIDVALIDITY when the cursor was written.
    pub uid_validity: u32,
    /// Every message with a smaller UID is stored.
    pub uid_next: u32,
}

impl FolderCursor {
    /// The account-state key of a folder's cursor.
    pub fn key(folder: &str) -> String {
        format!("imap:cursor:{folder}")
    }

    /// The stored form: `v1 <uidvalidity> <uidnext>`.
    pub fn encode(&self) -> Vec<u8> {
        format!("v1 {} {}", self.uid_validity, self.uid_next).into_bytes()
    }

    /// Reads the stored form; `None` for anything else (the folder is then read again and
    /// the store deduplicates).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let uid_validity = parts.next()?.parse().ok()?;
        let uid_next = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self { uid_validity, uid_next })
    }

    /// The cursor as an update carried by a message.
    pub fn update(&self, folder: &str) -> CursorUpdate {
        CursorUpdate { key: Self::key(folder), value: self.encode() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_reads_as_none() {
        let c = FolderCursor { uid_validity: 1_700_000_000, uid_next: 42 };
        assert_eq!(FolderCursor::decode(&c.encode()), Some(c));
        assert_eq!(FolderCursor::decode(b"v2 1 2"), None);
        assert_eq!(FolderCursor::decode(b"v1 1"), None);
        assert_eq!(FolderCursor::decode(&[0xff, 0xfe]), None);
        assert_eq!(c.update("INBOX").key, "imap:cursor:INBOX");
    }
}
