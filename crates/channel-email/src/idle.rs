//! Waiting for new mail: IDLE (RFC 2177) when the server has it, polling otherwise.
//!
//! IDLE is renewed at most every `idle_max` (29 min), a server silent for `idle_inactivity`
//! (5 min; servers send `* OK Still here` every few minutes) is taken for dead, and `DONE`
//! must be answered within `done` (15 s). Unsolicited responses queued before IDLE are
//! drained first: they are only hints, the folder's UIDNEXT is checked after every wake-up.

use std::time::Duration;

use async_imap::imap_proto::{MailboxDatum, Response, Status};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::config::Timeouts;
use crate::error::{ImapError, within};
use crate::imap_session::{ImapConnection, noop};

/// Why the wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The server reported a change (or the poll interval passed): check the folder.
    Check,
    /// The channel is shutting down.
    Cancelled,
}

/// How often the loop tells the watchdog it is alive while waiting.
const ALIVE_EVERY: Duration = Duration::from_secs(10);

/// Whether a change was announced while no one waited for it: in async-imap's own commands
/// (its unsolicited responses) or in ours ([`command`](crate::imap_session::command)).
fn drain_unsolicited(conn: &mut ImapConnection) -> bool {
    let mut any = conn.timeouts.take_change();
    while conn.session.unsolicited_responses.try_recv().is_ok() {
        any = true;
    }
    any
}

/// Waits until the folder may have changed, with IDLE or by polling.
pub(crate) async fn wait_for_change(
    conn: &mut ImapConnection,
    timeouts: &Timeouts,
    cancel: &CancellationToken,
    alive: &(dyn Fn() + Send + Sync),
) -> Result<Wake, ImapError> {
    if drain_unsolicited(conn) {
        return Ok(Wake::Check);
    }
    if conn.idle {
        idle(conn, timeouts, cancel, alive).await
    } else {
        poll(conn, timeouts, cancel, alive).await
    }
}

async fn poll(
    conn: &mut ImapConnection,
    timeouts: &Timeouts,
    cancel: &CancellationToken,
    alive: &(dyn Fn() + Send + Sync),
) -> Result<Wake, ImapError> {
    let until = Instant::now() + timeouts.poll_interval;
    loop {
        let tick = (Instant::now() + ALIVE_EVERY).min(until);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(Wake::Cancelled),
            _ = sleep_until(tick) => {
                alive();
                if Instant::now() >= until {
                    noop(&mut conn.session).await?;
                    drain_unsolicited(conn);
                    return Ok(Wake::Check);
                }
            }
        }
    }
}

fn is_change(resp: &Response<'_>) -> bool {
    matches!(
        resp,
        Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_))
            | Response::Expunge(_)
            | Response::Vanished { .. }
            | Response::Fetch(..)
    )
}

async fn idle(
    conn: &mut ImapConnection,
    timeouts: &Timeouts,
    cancel: &CancellationToken,
    alive: &(dyn Fn() + Send + Sync),
) -> Result<Wake, ImapError> {
    let session = &mut conn.session;
    let id = session.run_command("IDLE").await?;
    // Wait for the continuation; a change reported meanwhile still counts.
    let mut changed = false;
    within("IDLE start", timeouts.read, async {
        loop {
            let Some(resp) = session.read_response().await? else {
                return Err(ImapError::ConnectionLost("EOF before IDLE started".into()));
            };
            match resp.parsed() {
                Response::Continue(_) => return Ok(()),
                Response::Done { tag, status, outcome } if *tag == id => {
                    return Err(ImapError::Protocol(format!(
                        "IDLE refused ({status:?}): {}",
                        outcome.information.as_deref().unwrap_or("")
                    )));
                }
                Response::Data { status: Status::Bye, .. } => {
                    return Err(ImapError::ConnectionLost("BYE before IDLE".into()));
                }
                other => changed |= is_change(other),
            }
        }
    })
    .await?;
    // The stream's own read limit is only a backstop while idling.
    conn.timeouts.set_read_timeout(timeouts.idle_inactivity + timeouts.read);
    let renew_at = Instant::now() + timeouts.idle_max;
    let mut silent_until = Instant::now() + timeouts.idle_inactivity;
    let wake = if changed {
        Wake::Check
    } else {
        loop {
            let tick = Instant::now() + ALIVE_EVERY;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Wake::Cancelled,
                _ = sleep_until(renew_at) => break Wake::Check,
                _ = sleep_until(silent_until) => {
                    return Err(ImapError::Timeout { operation: "IDLE (server silent)", after: timeouts.idle_inactivity });
                }
                _ = sleep_until(tick) => alive(),
                resp = session.read_response() => {
                    let Some(resp) = resp? else {
                        return Err(ImapError::ConnectionLost("EOF during IDLE".into()));
                    };
                    silent_until = Instant::now() + timeouts.idle_inactivity;
                    match resp.parsed() {
                        Response::Data { status: Status::Bye, .. } => {
                            return Err(ImapError::ConnectionLost("BYE during IDLE".into()));
                        }
                        // The server ended IDLE on its own: start over.
                        Response::Done { tag, .. } if *tag == id => {
                            conn.timeouts.set_read_timeout(timeouts.read);
                            return Ok(Wake::Check);
                        }
                        other if is_change(other) => break Wake::Check,
                        _ => {}
                    }
                }
            }
        }
    };
    conn.timeouts.set_read_timeout(timeouts.read);
    let session = &mut conn.session;
    let done = within("IDLE DONE", timeouts.done, async {
        session.run_command_untagged("DONE").await?;
        loop {
            let Some(resp) = session.read_response().await? else {
                return Err(ImapError::ConnectionLost("EOF after DONE".into()));
            };
            match resp.parsed() {
                Response::Done { tag, status, .. } if *tag == id => {
                    return match status {
                        Status::Ok => Ok(()),
                        other => Err(ImapError::Protocol(format!("IDLE ended with {other:?}"))),
                    };
                }
                Response::Data { status: Status::Bye, .. } => {
                    return Err(ImapError::ConnectionLost("BYE after DONE".into()));
                }
                _ => {}
            }
        }
    })
    .await;
    match (wake, done) {
        (Wake::Cancelled, _) => Ok(Wake::Cancelled),
        (wake, Ok(())) => Ok(wake),
        (_, Err(e)) => Err(e),
    }
}
