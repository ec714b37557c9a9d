//! The `Channel` contract: what a provider (Telegram, email) implements.
//!
//! The engine runs a channel with [`Channel::run`], handing it an [`Inbound`] sink. The
//! channel maps provider events to [`InboundMessage`]s and calls [`Inbound::deliver`], which
//! returns only after the message (and the cursor it carries) is committed: a channel advances
//! nothing on its own before that, so a crash at any point means the message is fetched again
//! and deduplicated, never lost. Sends come through [`Channel::send`] under a timeout chosen by
//! the engine; errors are classified ([`ChannelError`]) so the engine can retry, snooze or
//! give up.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use crate::fault::{Fault, FaultKind};
use crate::model::*;
use crate::store::IngestOutcome;

/// What a provider can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Reports edits of earlier messages.
    pub edits: bool,
    /// Sends and receives media.
    pub media: bool,
    /// Fetches older history on request.
    pub history: bool,
    /// Captures what the owner sent from other apps.
    pub outgoing_capture: bool,
}

impl Capabilities {
    /// Nothing: only text is sent and received. Add what the provider can do:
    ///
    /// ```
    /// use channel_core::Capabilities;
    /// let caps = Capabilities::none().media(true).history(true);
    /// assert!(caps.media && caps.history && !caps.edits);
    /// ```
    pub const fn none() -> Self {
        Self { edits: false, media: false, history: false, outgoing_capture: false }
    }

    /// Every capability this version knows.
    pub const fn all() -> Self {
        Self { edits: true, media: true, history: true, outgoing_capture: true }
    }

    /// With or without edits.
    pub const fn edits(mut self, yes: bool) -> Self {
        self.edits = yes;
        self
    }

    /// With or without media.
    pub const fn media(mut self, yes: bool) -> Self {
        self.media = yes;
        self
    }

    /// With or without history.
    pub const fn history(mut self, yes: bool) -> Self {
        self.history = yes;
        self
    }

    /// With or without capturing what the owner sent from other apps.
    pub const fn outgoing_capture(mut self, yes: bool) -> Self {
        self.outgoing_capture = yes;
        self
    }
}

/// Why a channel operation failed, classified for the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A passing fault (network, server busy): retry with backoff.
    #[error("transient channel error: {0}")]
    Transient(#[source] Fault),
    /// Will not succeed on retry (unknown recipient, message too large): give up.
    #[error("permanent channel error: {0}")]
    Permanent(#[source] Fault),
    /// The provider asks us to wait: snooze without spending an attempt.
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Credentials or session rejected: the account needs a new login.
    #[error("the account needs a new login: {0}")]
    NeedsLogin(#[source] Fault),
    /// The operation did not finish in time (treated as transient).
    #[error("`{operation}` timed out after {after:?}")]
    Timeout {
        /// The operation.
        operation: String,
        /// The limit.
        after: Duration,
    },
    /// The input was refused before anything was sent (a CR/LF in a header, an invalid
    /// address): fix the message.
    #[error("invalid message: {0}")]
    InvalidInput(String),
    /// The channel was cancelled (shutdown).
    #[error("cancelled")]
    Cancelled,
}

impl ChannelError {
    /// A passing fault: a sentence (kind [`FaultKind::Other`]) or a [`Fault`].
    pub fn transient(fault: impl Into<Fault>) -> Self {
        ChannelError::Transient(fault.into())
    }

    /// A fault that will not pass on retry.
    pub fn permanent(fault: impl Into<Fault>) -> Self {
        ChannelError::Permanent(fault.into())
    }

    /// The account needs a new login.
    pub fn needs_login(fault: impl Into<Fault>) -> Self {
        ChannelError::NeedsLogin(fault.into())
    }

    /// Whether the same operation may succeed later without anyone changing anything (the
    /// vocabulary of [`StoreError::is_transient`](crate::StoreError::is_transient)): a
    /// transient fault or a timeout. Cancellation is not: nothing failed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChannelError::Transient(_) | ChannelError::Timeout { .. })
    }

    /// The fault, for the variants that carry one.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            ChannelError::Transient(f)
            | ChannelError::Permanent(f)
            | ChannelError::NeedsLogin(f) => Some(f),
            _ => None,
        }
    }
}

/// An outbound message as the engine prepared it for the channel: with its client key, its
/// thread, its recipient and the thread's earlier ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedSend {
    /// Our message id.
    pub message_id: MessageId,
    /// Our idempotency key: reuse it on every attempt (Telegram `random_id`, email
    /// Message-ID) so that the provider deduplicates retries.
    pub client_key: String,
    /// The thread to send in (Telegram chat, email thread root).
    pub thread_key: String,
    /// The recipient.
    pub remote: IdentityInfo,
    /// Plain text.
    pub text: Option<String>,
    /// HTML.
    pub html: Option<String>,
    /// The subject the service gave (email); `None`: the provider's default.
    pub subject: Option<String>,
    /// Provider id of the message replied to.
    pub reply_to: Option<String>,
    /// Provider ids of the thread's earlier messages (email References).
    pub references: Vec<String>,
    /// Attachments; the bytes are in the blob store under `blob_key`.
    pub attachments: Vec<Attachment>,
}

/// What the provider said when it accepted a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    /// The provider's id of the sent message.
    pub provider_id: String,
    /// The provider's time.
    pub at: Timestamp,
}

/// A request for older history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    /// One thread, or the whole account.
    pub thread_key: Option<String>,
    /// How many messages (default 100, at most 500).
    pub limit: usize,
    /// Only messages before this provider id.
    pub before: Option<String>,
    /// Only messages after this provider id.
    pub after: Option<String>,
}

impl HistoryRequest {
    /// The default page size.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The largest page size a channel fetches (the engine's `history_max` may not exceed it).
    pub const MAX_LIMIT: usize = 500;

    /// The page size a channel fetches for this request: [`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT)
    /// for 0, at most [`MAX_LIMIT`](Self::MAX_LIMIT). The one place channels read it.
    ///
    /// ```
    /// use channel_core::HistoryRequest;
    /// let page = |limit| HistoryRequest { limit, ..HistoryRequest::default() }.page_size();
    /// assert_eq!((page(0), page(7), page(10_000)), (100, 7, 500));
    /// ```
    pub fn page_size(&self) -> usize {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

impl Default for HistoryRequest {
    fn default() -> Self {
        Self { thread_key: None, limit: Self::DEFAULT_LIMIT, before: None, after: None }
    }
}

/// Where a channel hands what it receives. Implemented by the engine.
#[async_trait]
pub trait Inbound: Send + Sync {
    /// Stores the message (and the cursor it carries) and returns after the commit.
    /// Idempotent on the provider id. An error means nothing was stored: do not advance past
    /// the message; retry it or reconnect.
    async fn deliver(&self, message: InboundMessage) -> Result<IngestOutcome, ChannelError>;
    /// Stores several messages (a fetched batch) and returns after the commit, in order.
    /// The default delivers them one by one; the engine stores the batch in one transaction.
    async fn deliver_batch(
        &self,
        messages: Vec<InboundMessage>,
    ) -> Result<Vec<IngestOutcome>, ChannelError> {
        let mut out = Vec::with_capacity(messages.len());
        for message in messages {
            out.push(self.deliver(message).await?);
        }
        Ok(out)
    }
    /// Applies an edit of a stored message reported by the provider (new text, its time);
    /// returns after the commit with the message's id, `None` when no such message is
    /// stored. Applying it again changes nothing. The default ignores edits (`Ok(None)`).
    async fn edited(&self, edit: InboundEdit) -> Result<Option<MessageId>, ChannelError> {
        let _ = edit;
        Ok(None)
    }
    /// Marks stored messages deleted at the provider (see [`InboundDeletion`]) and returns
    /// after the commit with the ids of the messages this changed. Unknown ids and messages
    /// already marked deleted are passed over, so applying it again changes nothing. The
    /// default ignores deletions (an empty list).
    async fn deleted(&self, deletion: InboundDeletion) -> Result<Vec<MessageId>, ChannelError> {
        let _ = deletion;
        Ok(Vec::new())
    }
    /// Which of `provider_ids` are stored already for this account, so that a channel that
    /// must look at many messages again (an IMAP folder whose UIDVALIDITY changed) fetches only
    /// the unknown ones. At most [`KNOWN_IDS_LIMIT`] ids per call.
    ///
    /// A hint, never a promise: the default knows nothing (every id is reported unknown), and
    /// a message fetched anyway is still deduplicated by [`Inbound::deliver`].
    async fn known_provider_ids(
        &self,
        provider_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, ChannelError> {
        let _ = provider_ids;
        Ok(std::collections::HashSet::new())
    }
    /// Reads a value of the account's state (decrypted): a session, a cursor.
    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, ChannelError>;
    /// Writes a value of the account's state (encrypted at rest). A cursor that covers
    /// messages goes with them in [`Inbound::deliver`] instead, so that it advances only with
    /// their commit.
    async fn state_put(&self, key: &str, value: &[u8]) -> Result<(), ChannelError>;
    /// Removes a value of the account's state.
    async fn state_delete(&self, key: &str) -> Result<(), ChannelError>;
    /// Reports the account's connection state.
    async fn report_state(&self, state: ConnectionState);
    /// Tells the watchdog the channel's loop is alive. Call it every cycle (cheap).
    fn alive(&self);
}

/// The most ids one [`Inbound::known_provider_ids`] call takes.
pub const KNOWN_IDS_LIMIT: usize = 500;

/// A provider of one account: Telegram, email, or the in-memory test channel.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// The provider.
    fn kind(&self) -> ChannelKind;
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
    /// Connects and receives until `cancel` fires, catching up on (re)connect, delivering
    /// through `inbound`. Returns `Ok` on cancellation; an error makes the supervisor restart
    /// it with backoff (or stop it, for `NeedsLogin` and `Permanent`).
    async fn run(
        &self,
        inbound: std::sync::Arc<dyn Inbound>,
        cancel: CancellationToken,
    ) -> Result<(), ChannelError>;
    /// Sends one message. The engine calls it under a timeout and may call it again with the
    /// same `client_key` after an error.
    async fn send(&self, message: &PreparedSend) -> Result<SendReceipt, ChannelError>;
    /// Fetches older history; the engine ingests the result (deduplicated).
    async fn fetch_history(
        &self,
        request: &HistoryRequest,
    ) -> Result<Vec<InboundMessage>, ChannelError>;
}
