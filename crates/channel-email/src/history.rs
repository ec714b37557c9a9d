//! Older messages on request: of the whole account or of one thread, newest first cut at the
//! limit (100 by default, at most 500), returned oldest first.

use channel_core::{ChannelError, HistoryRequest, InboundMessage};

use crate::config::EmailConfig;
use crate::error::ImapError;
use crate::fetch::{FetchWhat, uid_fetch};
use crate::imap_session::{Session, connect, logout, quote, select, uid_search};
use crate::parse::{FolderRole, parse_internal_date, to_inbound};
use crate::sent_folder::find_sent;

fn checked_id(id: &str) -> Result<String, ChannelError> {
    quote(id).map_err(|_| ChannelError::InvalidInput("CR/LF in a message id".into()))
}

async fn uid_of(session: &mut Session, id: &str) -> Result<Option<u32>, ImapError> {
    let q = quote(id)?;
    Ok(uid_search(session, &format!("HEADER Message-ID {q}")).await?.first().copied())
}

async fn folder_history(
    session: &mut Session,
    folder: &str,
    role: FolderRole,
    request: &HistoryRequest,
    limit: usize,
) -> Result<Vec<InboundMessage>, ImapError> {
    let status = select(session, folder, true).await?;
    if status.uid_next <= 1 {
        return Ok(Vec::new());
    }
    let mut lo = 1u32;
    let mut hi = status.uid_next - 1;
    if let Some(before) = &request.before {
        match uid_of(session, before).await? {
            Some(u) if u > 1 => hi = hi.min(u - 1),
            Some(_) => return Ok(Vec::new()),
            None => {}
        }
    }
    if let Some(after) = &request.after
        && let Some(u) = uid_of(session, after).await?
    {
        lo = lo.max(u.saturating_add(1));
    }
    if lo > hi {
        return Ok(Vec::new());
    }
    let mut criteria = format!("UID {lo}:{hi}");
    if let Some(key) = &request.thread_key {
        let q = quote(key)?;
        criteria.push_str(&format!(
            " OR OR HEADER Message-ID {q} HEADER References {q} HEADER In-Reply-To {q}"
        ));
    }
    let uids = uid_search(session, &criteria).await?;
    let newest = &uids[uids.len().saturating_sub(limit)..];
    let mut out = Vec::with_capacity(newest.len());
    for chunk in newest.chunks(EmailConfig::MAX_BATCH) {
        let (fetched, _) = uid_fetch(session, chunk, FetchWhat::Full).await?;
        out.extend(fetched.iter().map(|f| {
            to_inbound(&f.raw, role, f.internal_date.as_deref().and_then(parse_internal_date))
        }));
    }
    Ok(out)
}

/// Fetches a page of history from the inbox and the Sent folder.
pub(crate) async fn fetch_history(
    config: &EmailConfig,
    request: &HistoryRequest,
) -> Result<Vec<InboundMessage>, ChannelError> {
    for id in request.thread_key.iter().chain(&request.before).chain(&request.after) {
        checked_id(id)?;
    }
    let limit = request.page_size();
    let mut conn = connect(config).await?;
    let result = async {
        let mut all =
            folder_history(&mut conn.session, &config.inbox, FolderRole::Inbox, request, limit)
                .await?;
        if let Some(sent) = find_sent(&mut conn.session).await? {
            all.extend(
                folder_history(&mut conn.session, &sent, FolderRole::Sent, request, limit).await?,
            );
        }
        Ok::<_, ImapError>(all)
    }
    .await;
    logout(&mut conn.session, config.timeouts.done).await;
    let mut all = result?;
    all.sort_by_key(|m| m.sent_at);
    let skip = all.len().saturating_sub(limit);
    Ok(all.split_off(skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_100_and_cap_at_500() {
        let mut r = HistoryRequest { limit: 0, ..HistoryRequest::default() };
        assert_eq!(r.page_size(), 100);
        r.limit = 10_000;
        assert_eq!(r.page_size(), 500);
        r.limit = 7;
        assert_eq!(r.page_size(), 7);
    }
}
