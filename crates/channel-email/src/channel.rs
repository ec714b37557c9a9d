//! [`EmailChannel`]: the `Channel` contract for one IMAP/SMTP account.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use channel_core::{
    Capabilities, Channel, ChannelError, ChannelKind, ConnectionState, Fault, FaultKind,
    HistoryRequest, Inbound, InboundMessage, PreparedSend, SendReceipt,
};
use tokio_util::sync::CancellationToken;

use crate::config::EmailConfig;
use crate::history;
use crate::imap_session::connect;
use crate::parse::FolderRole;
use crate::send::{AttachmentSource, SmtpSender, default_subject};
use crate::sent_folder::find_sent;
use crate::thread_index::ThreadIndex;
use crate::watch::FolderWatcher;

/// One email account as a [`Channel`]: receives through IMAP (IDLE, or polling), sends
/// through SMTP, captures the Sent folder, fetches history on request.
///
/// ```no_run
/// use std::sync::Arc;
/// use channel_email::{EmailChannel, EmailConfig, ServerConfig};
///
/// # fn main() -> Result<(), channel_core::ChannelError> {
/// let config = EmailConfig::new(
///     "me@example.org",
///     ServerConfig::tls("imap.example.org", 993).credentials("me@example.org", "secret"),
///     ServerConfig::tls("smtp.example.org", 465).credentials("me@example.org", "secret"),
/// );
/// let channel = Arc::new(EmailChannel::new(config)?);
/// // Hand it to the engine, which calls `run` with its Inbound sink and `send` for the
/// // outbound queue.
/// # let _ = channel;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EmailChannel {
    config: Arc<EmailConfig>,
    sender: SmtpSender,
    attachments: Option<Arc<dyn AttachmentSource>>,
    threads: Arc<ThreadIndex>,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("address", &self.config.address)
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// A channel for the account. Fails (`Permanent`) when a setting is out of range (see
    /// [`EmailConfig::validate`]: the error names the setting), or the account's own address
    /// or the TLS settings are unusable.
    ///
    /// Must be called inside a tokio runtime (lettre's SMTP pool starts a task): outside one
    /// it is `Permanent` instead of a panic.
    pub fn new(config: EmailConfig) -> Result<Self, ChannelError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ChannelError::permanent(
                "EmailChannel::new must be called inside a tokio runtime (lettre's SMTP pool starts a task)",
            ));
        }
        config.validate().map_err(|e| {
            ChannelError::permanent(Fault::new(FaultKind::Other, e.to_string()).source(e))
        })?;
        let config = Arc::new(config);
        let sender = SmtpSender::new(config.clone())?;
        let threads = Arc::new(ThreadIndex::new(config.thread_window));
        Ok(Self { config, sender, attachments: None, threads })
    }

    /// Where the bytes of outgoing attachments are read from.
    pub fn with_attachments(mut self, source: Arc<dyn AttachmentSource>) -> Self {
        self.attachments = Some(source);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EmailConfig {
        &self.config
    }

    /// Sends with an explicit subject (the contract's [`PreparedSend`] has none; `send`
    /// answers in a thread the channel has seen with `Re: ` and that thread's subject, and
    /// otherwise uses [`default_subject`]). Everything is checked before anything is sent: a CR/LF in
    /// the subject, an address or a name, or an invalid address, is `InvalidInput`.
    pub async fn send_with_subject(
        &self,
        message: &PreparedSend,
        subject: &str,
    ) -> Result<SendReceipt, ChannelError> {
        // Validate before reading attachments, so bad input fails fast and cheaply.
        self.sender.build(message, subject, &[])?;
        let mut parts: Vec<(Option<String>, String, Bytes)> =
            Vec::with_capacity(message.attachments.len());
        if !message.attachments.is_empty() {
            let source = self.attachments.as_ref().ok_or_else(|| {
                ChannelError::permanent(
                    "attachments need an AttachmentSource (EmailChannel::with_attachments)",
                )
            })?;
            for a in &message.attachments {
                parts.push((a.name.clone(), a.mime_type.clone(), source.read(&a.blob_key).await?));
            }
        }
        let (built, message_id) = self.sender.build(message, subject, &parts)?;
        let raw = self.config.append_sent.then(|| built.formatted());
        let receipt = self.sender.send(built, message_id).await?;
        if let Some(raw) = raw {
            // The message is sent: a failed copy to Sent is logged, not an error of the send.
            if let Err(e) = self.append_to_sent(&raw).await {
                tracing::warn!(
                    account = %self.config.account_label,
                    error = %e,
                    "could not append the sent copy to the Sent folder"
                );
            }
        }
        Ok(receipt)
    }

    async fn append_to_sent(&self, raw: &[u8]) -> Result<(), crate::error::ImapError> {
        let mut conn = connect(&self.config).await?;
        let Some(folder) = find_sent(&mut conn.session).await? else {
            return Ok(());
        };
        let limit = self.config.timeouts.write;
        crate::error::within("imap append", limit + limit, async {
            conn.session.append(&folder, Some("(\\Seen)"), None, raw).await?;
            Ok(())
        })
        .await?;
        crate::imap_session::logout(&mut conn.session, self.config.timeouts.done).await;
        Ok(())
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        crate::KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none().media(true).history(true).outgoing_capture(self.config.watch_sent)
    }

    async fn run(
        &self,
        inbound: Arc<dyn Inbound>,
        cancel: CancellationToken,
    ) -> Result<(), ChannelError> {
        // Either loop failing for good (bad credentials) stops the other one too.
        let stop = cancel.child_token();
        let watcher = |role, reports_state| FolderWatcher {
            config: self.config.clone(),
            role,
            inbound: inbound.clone(),
            cancel: stop.clone(),
            reports_state,
            threads: self.threads.clone(),
        };
        let inbox = watcher(FolderRole::Inbox, true).run();
        if !self.config.watch_sent {
            return inbox.await;
        }
        let sent = watcher(FolderRole::Sent, false).run();
        let stop_on_error = |r: Result<(), ChannelError>| {
            if r.is_err() {
                stop.cancel();
            }
            r
        };
        let (a, b) =
            tokio::join!(async { stop_on_error(inbox.await) }, async { stop_on_error(sent.await) });
        // The Sent watcher does not report states: when its login was the one refused, the
        // inbox watcher may have been stopped before it could say so.
        if a.is_ok()
            && let Err(ChannelError::NeedsLogin(fault)) = &b
        {
            inbound.report_state(ConnectionState::NeedsLogin { reason: fault.report() }).await;
        }
        a.and(b)
    }

    async fn send(&self, message: &PreparedSend) -> Result<SendReceipt, ChannelError> {
        let subject = match (&message.subject, self.threads.subject_of(&message.thread_key)) {
            (Some(given), _) => given.clone(),
            (None, Some(base)) => format!("Re: {base}"),
            (None, None) => default_subject(message),
        };
        self.send_with_subject(message, &subject).await
    }

    async fn fetch_history(
        &self,
        request: &HistoryRequest,
    ) -> Result<Vec<InboundMessage>, ChannelError> {
        history::fetch_history(&self.config, request).await
    }
}
