//! Catching up on a folder: every message from the cursor to UIDNEXT, in batches, each batch
//! delivered (and the cursor advanced) in one commit.

use std::sync::Arc;

use channel_core::{Inbound, InboundMessage, KNOWN_IDS_LIMIT};

use crate::config::{EmailConfig, StartFrom};
use crate::cursor::FolderCursor;
use crate::error::ImapError;
use crate::fetch::{FetchWhat, uid_fetch};
use crate::imap_session::{FolderStatus, Session, uid_search};
use crate::parse::{FolderRole, provider_id_of};
use crate::thread_index::ThreadIndex;

/// Reads the folder's cursor from the account state.
pub(crate) async fn load_cursor(
    inbound: &dyn Inbound,
    folder: &str,
) -> Result<Option<FolderCursor>, ImapError> {
    let bytes = inbound.state_get(&FolderCursor::key(folder)).await.map_err(ImapError::Inbound)?;
    Ok(bytes.as_deref().and_then(FolderCursor::decode))
}

async fn put_cursor(
    inbound: &dyn Inbound,
    folder: &str,
    cursor: FolderCursor,
) -> Result<(), ImapError> {
    inbound
        .state_put(&FolderCursor::key(folder), &cursor.encode())
        .await
        .map_err(ImapError::Inbound)
}

/// How many messages a catch-up delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SyncReport {
    /// Messages handed to the sink.
    pub delivered: usize,
    /// Whether UIDVALIDITY had changed (the folder was read again).
    pub rescanned: bool,
}

/// Delivers every message of `folder` between the stored cursor and `status.uid_next`.
///
/// A changed UIDVALIDITY means the old UIDs mean nothing: the folder is rescanned from UID 1
/// by Message-ID, and only the messages the sink does not know are fetched whole; the
/// store's deduplication by Message-ID keeps what is known from being stored twice.
pub(crate) async fn catch_up(
    session: &mut Session,
    config: &EmailConfig,
    inbound: &Arc<dyn Inbound>,
    folder: &str,
    role: FolderRole,
    status: FolderStatus,
    threads: &ThreadIndex,
) -> Result<SyncReport, ImapError> {
    let mut report = SyncReport::default();
    let stored = load_cursor(inbound.as_ref(), folder).await?;
    let start = match stored {
        Some(c) if c.uid_validity == status.uid_validity => c.uid_next,
        Some(_) => {
            tracing::info!(folder, "UIDVALIDITY changed: reading the folder again");
            report.rescanned = true;
            1
        }
        None => match config.start_from {
            StartFrom::Beginning => 1,
            StartFrom::Now => status.uid_next,
        },
    };
    let target =
        FolderCursor { uid_validity: status.uid_validity, uid_next: status.uid_next.max(start) };
    if start >= status.uid_next {
        if stored != Some(target) {
            put_cursor(inbound.as_ref(), folder, target).await?;
        }
        return Ok(report);
    }
    // Explicit range: from the cursor to the last UID that existed when UIDNEXT was read.
    let uids = uid_search(session, &format!("UID {}:{}", start, status.uid_next - 1)).await?;
    let mut uids: Vec<u32> =
        uids.into_iter().filter(|u| *u >= start && *u < status.uid_next).collect();
    if report.rescanned {
        match unknown_uids(session, inbound.as_ref(), &uids, role, threads).await {
            Ok(unknown) => uids = unknown,
            // A server that refuses the header FETCH: read everything again, as a client
            // without the rescan would; ingest deduplicates what is known.
            Err(ImapError::Protocol(reason)) => {
                tracing::warn!(folder, %reason, "rescan by Message-ID refused; fetching the whole folder");
            }
            Err(e) => return Err(e),
        }
    }
    let mut covered = stored.filter(|c| c.uid_validity == status.uid_validity);
    // Fetching the next batch overlaps the commit of the previous one: the session and the
    // sink are independent, batches are still delivered one at a time and in order, and a
    // batch's cursor still moves only with its commit.
    let mut chunks = uids.chunks(config.effective_batch());
    let mut pending: Option<(Vec<InboundMessage>, FolderCursor)> = None;
    loop {
        let next = chunks.next();
        let fetch = async {
            match next {
                Some(chunk) => {
                    fetch_batch(session, chunk, folder, role, status.uid_validity, threads)
                        .await
                        .map(Some)
                }
                None => Ok(None),
            }
        };
        let deliver = async {
            match pending.take() {
                Some((batch, cursor)) => {
                    deliver_batch(inbound.as_ref(), folder, batch, cursor).await.map(Some)
                }
                None => Ok(None),
            }
        };
        let (fetched, delivered) = tokio::join!(fetch, deliver);
        if let Some((n, cursor)) = delivered? {
            report.delivered += n;
            covered = Some(cursor);
            inbound.alive();
        }
        match fetched? {
            Some(batch) => pending = Some(batch),
            None => break,
        }
    }
    // Advance across UIDs that hold no message.
    if covered != Some(target) {
        put_cursor(inbound.as_ref(), folder, target).await?;
    }
    Ok(report)
}

/// After a UIDVALIDITY change: the UIDs whose messages are not stored yet. Reads only the
/// identifying header fields of every message, asks the sink which Message-IDs it knows and
/// keeps the rest (and every message without a Message-ID, whose id needs its whole content) (a sink that cannot tell keeps them all; ingest deduplicates anyway). The
/// known messages still feed the threading fallback.
async fn unknown_uids(
    session: &mut Session,
    inbound: &dyn Inbound,
    uids: &[u32],
    role: FolderRole,
    threads: &ThreadIndex,
) -> Result<Vec<u32>, ImapError> {
    let mut unknown = Vec::new();
    for chunk in uids.chunks(KNOWN_IDS_LIMIT.min(EmailConfig::MAX_BATCH)) {
        let (fetched, _) = uid_fetch(session, chunk, FetchWhat::IdHeaders).await?;
        // A message without a Message-ID is known by the hash of its whole content, which the
        // header cannot give: it counts as unknown and is fetched whole (ingest deduplicates).
        let ids: Vec<Option<String>> = fetched.iter().map(|f| provider_id_of(&f.raw)).collect();
        let named: Vec<String> = ids.iter().flatten().cloned().collect();
        let known = inbound.known_provider_ids(&named).await.map_err(ImapError::Inbound)?;
        for (f, id) in fetched.iter().zip(&ids) {
            match id {
                Some(id) if known.contains(id) => {
                    threads.parse(f, role);
                }
                _ => unknown.push(f.uid),
            }
        }
        inbound.alive();
    }
    tracing::info!(
        seen = uids.len(),
        unknown = unknown.len(),
        "rescan after a UIDVALIDITY change: fetching only the unknown messages"
    );
    Ok(unknown)
}

/// Fetches and parses one batch; the last message carries the cursor that covers the batch.
async fn fetch_batch(
    session: &mut Session,
    chunk: &[u32],
    folder: &str,
    role: FolderRole,
    uid_validity: u32,
    threads: &ThreadIndex,
) -> Result<(Vec<InboundMessage>, FolderCursor), ImapError> {
    let (fetched, _) = uid_fetch(session, chunk, FetchWhat::Full).await?;
    let last_uid = chunk[chunk.len() - 1];
    let cursor = FolderCursor { uid_validity, uid_next: last_uid + 1 };
    let mut batch: Vec<InboundMessage> = fetched.iter().map(|f| threads.parse(f, role)).collect();
    if let Some(last) = batch.last_mut() {
        last.cursor = Some(cursor.update(folder));
    }
    Ok((batch, cursor))
}

/// Delivers one batch with its cursor (or, when every message of it was expunged meanwhile,
/// writes the cursor alone). Returns how many messages went to the sink.
async fn deliver_batch(
    inbound: &dyn Inbound,
    folder: &str,
    batch: Vec<InboundMessage>,
    cursor: FolderCursor,
) -> Result<(usize, FolderCursor), ImapError> {
    let n = batch.len();
    if n == 0 {
        put_cursor(inbound, folder, cursor).await?;
    } else {
        inbound.deliver_batch(batch).await.map_err(ImapError::Inbound)?;
    }
    Ok((n, cursor))
}
