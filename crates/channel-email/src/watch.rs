//! The receive loop of one folder: connect, catch up, wait for changes, catch up again;
//! on any error throw the session away and reconnect with jittered backoff.

use std::sync::Arc;
use std::time::Duration;

use channel_core::{ChannelError, ConnectionState, Inbound};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Reconnects;
use crate::config::EmailConfig;
use crate::error::ImapError;
use crate::idle::{Wake, wait_for_change};
use crate::imap_session::{ImapConnection, connect, logout, select, status};
use crate::parse::FolderRole;
use crate::sent_folder::find_sent;
use crate::sync::{catch_up, load_cursor};
use crate::thread_index::ThreadIndex;
use crate::thread_warmup::warm_up;

/// Watches one folder until `cancel` fires.
pub(crate) struct FolderWatcher {
    pub config: Arc<EmailConfig>,
    pub role: FolderRole,
    pub inbound: Arc<dyn Inbound>,
    pub cancel: CancellationToken,
    /// Whether this loop reports the account's connection state (the inbox loop does).
    pub reports_state: bool,
    /// The threading fallback, shared by the account's loops.
    pub threads: Arc<ThreadIndex>,
}

const LOGOUT_LIMIT: Duration = Duration::from_secs(5);

impl FolderWatcher {
    async fn report(&self, state: ConnectionState) {
        if self.reports_state {
            self.inbound.report_state(state).await;
        }
    }

    /// The folder before the session finds it (the Sent folder's name comes from LIST).
    fn folder_hint(&self) -> &str {
        match self.role {
            FolderRole::Inbox => &self.config.inbox,
            FolderRole::Sent => "Sent",
        }
    }

    /// Runs until cancelled (`Ok`) or until the credentials are rejected (`NeedsLogin`).
    /// Everything it logs is in a span naming the account and the folder.
    pub(crate) async fn run(self) -> Result<(), ChannelError> {
        let span = tracing::info_span!(
            "email_folder",
            account = %self.config.account_label,
            folder = %self.folder_hint(),
        );
        self.run_loop().instrument(span).await
    }

    /// Why the session ended, as a sentence for the account's connection state.
    fn disconnect_reason(&self, e: &ImapError, delay: Duration) -> String {
        let imap = &self.config.imap;
        let server = format!("{}:{}", imap.host, imap.port);
        let retry = format!("reconnecting in {} s", delay.as_secs().max(1));
        match e {
            ImapError::Io(_) | ImapError::ConnectionLost(_) => {
                format!("the connection to the IMAP server {server} failed ({e}); {retry}")
            }
            ImapError::Timeout { .. } => {
                format!("the IMAP server {server} did not answer in time ({e}); {retry}")
            }
            ImapError::Tls(_) => format!(
                "tls with the IMAP server {server} failed ({e}): check `imap.security` and the \
                 server's certificate; {retry}"
            ),
            _ => format!("the IMAP server {server} ended the session ({e}); {retry}"),
        }
    }

    async fn run_loop(&self) -> Result<(), ChannelError> {
        let mut backoff = Reconnects::new(self.config.backoff);
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            self.report(ConnectionState::Connecting).await;
            let outcome = tokio::select! {
                r = self.session(&mut backoff) => r,
                _ = self.cancel.cancelled() => Ok(()),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(ImapError::Auth(reason)) => {
                    tracing::warn!(
                        account = %self.config.account_label,
                        folder = %self.folder_hint(),
                        %reason,
                        "IMAP login rejected"
                    );
                    if !self.reports_state {
                        // The inbox loop reports it; this one just stops.
                        return Err(ImapError::Auth(reason).into());
                    }
                    self.inbound
                        .report_state(ConnectionState::NeedsLogin { reason: reason.clone() })
                        .await;
                    return Err(ImapError::Auth(reason).into());
                }
                Err(ImapError::Inbound(ChannelError::Cancelled)) => return Ok(()),
                Err(e) => {
                    let delay = backoff.next_delay();
                    let reason = self.disconnect_reason(&e, delay);
                    tracing::info!(
                        account = %self.config.account_label,
                        folder = %self.folder_hint(),
                        error = %e,
                        "IMAP session dropped"
                    );
                    self.report(ConnectionState::TransientDisconnect { reason }).await;
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn session(&self, backoff: &mut Reconnects) -> Result<(), ImapError> {
        let mut conn = connect(&self.config).await?;
        let result = self.session_with(&mut conn, backoff).await;
        if matches!(result, Ok(())) {
            logout(&mut conn.session, LOGOUT_LIMIT).await;
        }
        result
    }

    async fn session_with(
        &self,
        conn: &mut ImapConnection,
        backoff: &mut Reconnects,
    ) -> Result<(), ImapError> {
        let folder = match self.role {
            FolderRole::Inbox => self.config.inbox.clone(),
            FolderRole::Sent => match find_sent(&mut conn.session).await? {
                Some(name) => {
                    tracing::Span::current().record("folder", name.as_str());
                    name
                }
                None => {
                    tracing::info!("no Sent folder: mail sent from other clients is not captured");
                    self.cancel.cancelled().await;
                    return Ok(());
                }
            },
        };
        let mut current = select(&mut conn.session, &folder, true).await?;
        self.report(ConnectionState::Connected).await;
        let inbound = self.inbound.clone();
        let alive = move || inbound.alive();
        if !self.threads.is_warm(&folder) {
            let cursor = load_cursor(self.inbound.as_ref(), &folder).await?;
            let warmed =
                warm_up(&mut conn.session, &folder, self.role, current, cursor, &self.threads)
                    .await;
            if let Err(ImapError::Protocol(reason)) = &warmed {
                // A server that refuses the header SEARCH or FETCH would refuse it after
                // every reconnect: go on without the refill rather than never catch up.
                tracing::warn!(%folder, %reason, "threading fallback not refilled after the restart");
                self.threads.mark_warm(&folder);
            }
            warmed?;
        }
        let mut first = true;
        loop {
            self.inbound.alive();
            catch_up(
                &mut conn.session,
                &self.config,
                &self.inbound,
                &folder,
                self.role,
                current,
                &self.threads,
            )
            .await?;
            if first {
                // A session that connected and caught up has worked: start backoff afresh.
                backoff.reset();
                first = false;
            }
            match wait_for_change(conn, &self.config.timeouts, &self.cancel, &alive).await? {
                Wake::Cancelled => return Ok(()),
                Wake::Check => current = status(&mut conn.session, &folder).await?,
            }
        }
    }
}
