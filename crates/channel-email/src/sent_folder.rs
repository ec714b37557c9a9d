//! Finding the Sent folder: SPECIAL-USE `\Sent` first, then the usual names.

use crate::error::ImapError;
use crate::imap_session::{ListedFolder, Session, list};

/// Names tried, in order, when no folder carries `\Sent`.
pub const USUAL_SENT_NAMES: &[&str] = &[
    "Sent",
    "Sent Items",
    "Sent Messages",
    "Sent Mail",
    "INBOX.Sent",
    "INBOX/Sent",
    "[Gmail]/Sent Mail",
];

/// Picks the Sent folder out of a LIST answer.
pub(crate) fn pick_sent(folders: &[ListedFolder]) -> Option<String> {
    let selectable: Vec<&ListedFolder> = folders.iter().filter(|f| f.selectable).collect();
    if let Some(f) = selectable.iter().find(|f| f.sent) {
        return Some(f.name.clone());
    }
    USUAL_SENT_NAMES.iter().find_map(|usual| {
        selectable.iter().find(|f| f.name.eq_ignore_ascii_case(usual)).map(|f| f.name.clone())
    })
}

/// The Sent folder of the account, if it has one.
pub(crate) async fn find_sent(session: &mut Session) -> Result<Option<String>, ImapError> {
    Ok(pick_sent(&list(session).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, sent: bool) -> ListedFolder {
        ListedFolder { name: name.to_owned(), sent, selectable: true }
    }

    #[test]
    fn special_use_wins_then_usual_names() {
        assert_eq!(
            pick_sent(&[f("Sent", false), f("Gesendet", true)]).as_deref(),
            Some("Gesendet")
        );
        assert_eq!(
            pick_sent(&[f("INBOX", false), f("sent items", false)]).as_deref(),
            Some("sent items")
        );
        assert_eq!(pick_sent(&[f("INBOX", false)]), None);
    }
}
