//! Refilling the threading fallback after a restart.
//!
//! The [`ThreadIndex`] lives in memory and learns from every message the channel reads. A
//! channel that starts again resumes from its cursors and reads only what is new, so without
//! help it would have forgotten the threads it saw before: a reply without References or
//! In-Reply-To to such a thread would open a new conversation. Before the first catch-up of
//! a folder, the channel therefore reads the headers (only the headers) of the messages it has
//! already delivered that arrived within the thread window, at most [`WARMUP_LIMIT`] of them
//! (the whole message for those without a Message-ID, whose id is a hash of their content),
//! and feeds them to the index in UID order, as it did when it first read them. Nothing is
//! delivered and nothing is written: the index is rebuilt from the mailbox itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cursor::FolderCursor;
use crate::error::ImapError;
use crate::fetch::{FetchWhat, uid_fetch};
use crate::imap_session::{FolderStatus, Session, uid_search};
use crate::parse::{FolderRole, provider_id_of};
use crate::thread_index::ThreadIndex;

/// The most messages per folder whose headers are read to refill the index.
pub const WARMUP_LIMIT: usize = 1_000;

/// Headers per FETCH.
const WARMUP_BATCH: usize = 500;

/// The IMAP `SEARCH SINCE` date (`1-Jul-2025`) of the day `window` before now.
fn since_date(window: Duration) -> String {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let then = now.saturating_sub(window.as_secs());
    let date = mail_parser::DateTime::from_timestamp(i64::try_from(then).unwrap_or(0));
    let month = MONTHS.get(usize::from(date.month.max(1)) - 1).copied().unwrap_or("Jan");
    format!("{}-{month}-{}", date.day, date.year)
}

/// Feeds the index with the headers of the messages of `folder` below `cursor` that arrived
/// within the index's window (the newest [`WARMUP_LIMIT`]). Does nothing when the fallback is
/// off, when there is no usable cursor (nothing was delivered yet) or when this folder was
/// warmed up already in this process.
pub(crate) async fn warm_up(
    session: &mut Session,
    folder: &str,
    role: FolderRole,
    status: FolderStatus,
    cursor: Option<FolderCursor>,
    threads: &ThreadIndex,
) -> Result<(), ImapError> {
    let window = threads.window();
    if window.is_zero() || threads.is_warm(folder) {
        return Ok(());
    }
    let Some(cursor) = cursor.filter(|c| c.uid_validity == status.uid_validity && c.uid_next > 1)
    else {
        threads.mark_warm(folder);
        return Ok(());
    };
    let criteria = format!("UID 1:{} SINCE {}", cursor.uid_next - 1, since_date(window));
    let uids = uid_search(session, &criteria).await?;
    let uids: Vec<u32> = uids.into_iter().filter(|u| *u < cursor.uid_next).collect();
    let newest = &uids[uids.len().saturating_sub(WARMUP_LIMIT)..];
    let mut seen = 0usize;
    for chunk in newest.chunks(WARMUP_BATCH) {
        let (mut fetched, _) = uid_fetch(session, chunk, FetchWhat::Headers).await?;
        // A message without a Message-ID is threaded under its content id, which needs the
        // whole message: read those again whole, so the index holds the key the store has.
        let unnamed: Vec<u32> =
            fetched.iter().filter(|f| provider_id_of(&f.raw).is_none()).map(|f| f.uid).collect();
        if !unnamed.is_empty() {
            let (whole, _) = uid_fetch(session, &unnamed, FetchWhat::Full).await?;
            for w in whole {
                if let Some(f) = fetched.iter_mut().find(|f| f.uid == w.uid) {
                    *f = w;
                }
            }
        }
        for f in &fetched {
            threads.parse(f, role);
        }
        seen += fetched.len();
    }
    tracing::debug!(folder, messages = seen, "threading fallback refilled from the mailbox");
    threads.mark_warm(folder);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_since_date_is_an_imap_date() {
        let d = since_date(Duration::ZERO);
        let parts: Vec<&str> = d.split('-').collect();
        assert_eq!(parts.len(), 3, "{d}");
        assert!((1..=31).contains(&parts[0].parse::<u32>().unwrap()), "{d}");
        assert_eq!(parts[1].len(), 3, "{d}");
        assert!(parts[2].parse::<u32>().unwrap() >= 2025, "{d}");
        // Far in the past stays a valid date.
        assert_eq!(since_date(Duration::from_secs(u64::MAX)), "1-Jan-1970");
    }
}
