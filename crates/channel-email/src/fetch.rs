//! UID FETCH over explicit UID sets, read to its tagged end.

use async_imap::imap_proto::{AttributeValue, MailboxDatum, Response};

use crate::error::ImapError;
use crate::imap_session::{Session, command, uid_set};

/// One fetched message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// Its UID.
    pub uid: u32,
    /// The whole message (`BODY.PEEK[]`), or the requested header fields.
    pub raw: Vec<u8>,
    /// The server's arrival time, as sent (`17-Jul-1996 02:44:25 -0700`).
    pub internal_date: Option<String>,
}

/// What to fetch of each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FetchWhat {
    /// The whole message.
    Full,
    /// The header only (threading after a restart).
    Headers,
    /// The header fields that identify and thread a message (a rescan by Message-ID).
    IdHeaders,
}

impl FetchWhat {
    fn items(self) -> &'static str {
        match self {
            FetchWhat::Full => "(UID INTERNALDATE BODY.PEEK[])",
            FetchWhat::Headers => "(UID INTERNALDATE BODY.PEEK[HEADER])",
            FetchWhat::IdHeaders => {
                "(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID \
                 X-MICROSOFT-ORIGINAL-MESSAGE-ID DATE FROM TO CC SUBJECT REFERENCES IN-REPLY-TO)])"
            }
        }
    }
}

/// Fetches the messages with the given UIDs (sorted), in UID order. The UID set is explicit
/// (never `N:*`); messages expunged meanwhile are simply missing. An EOF before the tagged
/// OK is an error. Returns whether the server hinted at new mail meanwhile (EXISTS).
pub(crate) async fn uid_fetch(
    session: &mut Session,
    uids: &[u32],
    what: FetchWhat,
) -> Result<(Vec<Fetched>, bool), ImapError> {
    if uids.is_empty() {
        return Ok((Vec::new(), false));
    }
    let (lo, hi) = (uids[0], uids[uids.len() - 1]);
    let mut out: Vec<Fetched> = Vec::with_capacity(uids.len());
    let mut hint = false;
    let cmd = format!("UID FETCH {} {}", uid_set(uids), what.items());
    command(session, &cmd, |resp| {
        match resp {
            Response::Fetch(_, attrs) => {
                let mut uid = None;
                let mut raw = None;
                let mut date = None;
                for attr in attrs {
                    match attr {
                        AttributeValue::Uid(u) => uid = Some(*u),
                        AttributeValue::BodySection { data, .. } => {
                            raw = Some(data.as_deref().unwrap_or_default().to_vec());
                        }
                        AttributeValue::Rfc822(data) => {
                            raw = Some(data.as_deref().unwrap_or_default().to_vec());
                        }
                        AttributeValue::InternalDate(d) => date = Some(d.to_string()),
                        _ => {}
                    }
                }
                // A FETCH without a body is an unsolicited flag change: not ours.
                if let (Some(uid), Some(raw)) = (uid, raw)
                    && (lo..=hi).contains(&uid)
                    && uids.binary_search(&uid).is_ok()
                {
                    out.push(Fetched { uid, raw, internal_date: date });
                }
            }
            Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_)) => hint = true,
            _ => {}
        }
        Ok(())
    })
    .await?;
    out.sort_by_key(|f| f.uid);
    out.dedup_by_key(|f| f.uid);
    Ok((out, hint))
}
