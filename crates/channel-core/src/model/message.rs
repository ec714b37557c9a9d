//! Messages, attachments and what channels hand to the engine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{
    AccountId, ConversationId, Defect, IdentityId, IdentityInfo, MessageId, Timestamp, UnknownValue,
};

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the remote party to the account.
    Inbound,
    /// From the account to the remote party.
    Outbound,
}

impl Direction {
    /// `inbound` or `outbound`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl FromStr for Direction {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(Self::Inbound),
            "outbound" => Ok(Self::Outbound),
            other => Err(UnknownValue { what: "direction", value: other.to_owned() }),
        }
    }
}

/// Who wrote a message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "origin", content = "label", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// The remote party.
    Remote,
    /// The account owner, from another app (Telegram on a phone, a desktop mail client).
    OtherApp,
    /// This service, with a label such as `chat_manual` or `autoreply`.
    Service(String),
}

impl Origin {
    /// `remote`, `other_app` or `service:<label>`.
    pub fn to_stored(&self) -> String {
        match self {
            Origin::Remote => "remote".to_owned(),
            Origin::OtherApp => "other_app".to_owned(),
            Origin::Service(label) => format!("service:{label}"),
        }
    }
}

impl FromStr for Origin {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "remote" => Ok(Self::Remote),
            "other_app" => Ok(Self::OtherApp),
            other => match other.strip_prefix("service:") {
                Some(label) => Ok(Self::Service(label.to_owned())),
                None => Err(UnknownValue { what: "origin", value: other.to_owned() }),
            },
        }
    }
}

/// Delivery status of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageStatus {
    /// Queued for sending; no provider id yet.
    Pending,
    /// Accepted by the provider (inbound messages are stored as sent).
    Sent,
    /// Gave up after the last attempt, or rejected permanently: in the dead-letter state.
    Failed,
    /// Reserved: delivered to the recipient.
    Delivered,
    /// Reserved: read by the recipient.
    Read,
}

impl MessageStatus {
    /// `pending`, `sent`, `failed`, `delivered` or `read`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Sent => "sent",
            MessageStatus::Failed => "failed",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
        }
    }

    /// Sent, failed, delivered and read are final for the send path.
    pub fn is_final(&self) -> bool {
        !matches!(self, MessageStatus::Pending)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "sent" => Ok(Self::Sent),
            "failed" => Ok(Self::Failed),
            "delivered" => Ok(Self::Delivered),
            "read" => Ok(Self::Read),
            other => Err(UnknownValue { what: "message status", value: other.to_owned() }),
        }
    }
}

/// An attachment as stored: its bytes live in the [`BlobStore`](crate::BlobStore) under `blob_key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name, if the provider gave one.
    pub name: Option<String>,
    /// The MIME type.
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lower-case hex.
    pub sha256: String,
    /// Where the bytes are in the blob store.
    pub blob_key: String,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// The account.
    pub account_id: AccountId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// The remote identity: the sender of an inbound message, the recipient of an outbound one.
    pub identity_id: IdentityId,
    /// Which way it went.
    pub direction: Direction,
    /// Who wrote it.
    pub origin: Origin,
    /// The provider's id (email: the Message-ID); `None` while pending.
    pub provider_id: Option<String>,
    /// Our idempotency key for sends (email: the Message-ID we generated; Telegram: the
    /// `random_id`), by which the provider's echo of our own send is recognised.
    pub client_key: Option<String>,
    /// The delivery status.
    pub status: MessageStatus,
    /// Plain text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// The subject of an email sent through [`Engine::send`](crate::Engine::send), if it was
    /// given.
    #[serde(default)]
    pub subject: Option<String>,
    /// The provider id of the message this replies to.
    pub reply_to: Option<String>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// Set when the provider's message could not be parsed; the raw bytes are then the first
    /// attachment (`message/rfc822` or `application/octet-stream`).
    pub parse_error: Option<String>,
    /// The last send error, for failed messages; for a `Sent` message whose provider id
    /// could not be recorded, the note saying why
    /// ([`SENT_BUT_NOT_RECORDED`](crate::outbound::SENT_BUT_NOT_RECORDED)).
    pub error: Option<String>,
    /// The provider's time of the message (for pending messages: when it was queued).
    pub sent_at: Timestamp,
    /// When it was stored.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The provider's time of the latest edit of its text, if it was edited.
    #[serde(default)]
    pub edited_at: Option<Timestamp>,
    /// When the provider reported the message deleted (Telegram's deleted messages). The
    /// row and its content are kept: what a deletion means for the service's own records
    /// (hide, redact, keep for audit) is its decision, taken on
    /// [`Event::MessageDeleted`](crate::Event::MessageDeleted).
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
    /// What was wrong with the message as the provider delivered it, and what was changed to
    /// store it (codes and sizes, never content); empty for a message stored as delivered.
    /// See [`defect`](crate::defect).
    #[serde(default)]
    pub defects: Vec<Defect>,
}

/// A channel's report that a stored message's text was edited at the provider (Telegram's
/// edited messages). Applying it again, or applying an older edit after a newer one, changes
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundEdit {
    /// The provider id of the edited message.
    pub provider_id: String,
    /// The new plain text.
    pub text: Option<String>,
    /// The new HTML.
    pub html: Option<String>,
    /// The provider's time of the edit.
    pub edited_at: Timestamp,
}

/// A channel's report that messages were deleted at the provider (Telegram's deleted
/// messages, by the sender or the account owner, for everyone). Ids that are not stored, or
/// already marked deleted, are passed over: applying a deletion again changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundDeletion {
    /// The provider ids of the deleted messages, at most
    /// [`InboundDeletion::MAX_IDS`].
    pub provider_ids: Vec<String>,
    /// When the deletion was seen (providers do not date deletions).
    pub deleted_at: Timestamp,
}

impl InboundDeletion {
    /// The most provider ids one deletion may carry (Telegram reports at most 100 at once).
    pub const MAX_IDS: usize = 500;
}

/// An attachment's bytes with its name and type, before they are stored: handed over by a
/// channel (inbound) or by the service ([`OutboundMessage::attachments`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentData {
    /// File name, if any.
    pub name: Option<String>,
    /// MIME type.
    pub mime_type: String,
    /// The bytes.
    pub data: bytes::Bytes,
}

/// A cursor value that advances in the same transaction as the message it covers.
///
/// The key names a slot of the account state (for example `imap:INBOX`); the value is opaque
/// to the core and stored encrypted like all account state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorUpdate {
    /// The account-state key.
    pub key: String,
    /// The new value.
    pub value: Vec<u8>,
}

/// A message as a channel reports it: new inbound mail, a Telegram update, the owner's message
/// sent from another app, or the echo of our own send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMessage {
    /// The provider's id, unique per account (email: Message-ID; Telegram: `chat:msg`).
    pub provider_id: String,
    /// The thread this message belongs to (Telegram chat id; email thread root Message-ID).
    pub thread_key: String,
    /// The remote party: sender of inbound, recipient of outbound.
    pub remote: IdentityInfo,
    /// Inbound from the remote party, or outbound by the owner (from another app, or the echo
    /// of our own send).
    pub direction: Direction,
    /// Set on outbound messages that carry our idempotency key (the echo of our own send).
    pub client_key: Option<String>,
    /// Plain text.
    pub text: Option<String>,
    /// HTML.
    pub html: Option<String>,
    /// Provider id of the message it replies to.
    pub reply_to: Option<String>,
    /// Provider ids of the thread's earlier messages, nearest last (email References), used
    /// to find the conversation.
    pub references: Vec<String>,
    /// Attachments with their bytes.
    pub attachments: Vec<AttachmentData>,
    /// Set when the message could not be parsed (the raw bytes are then an attachment).
    pub parse_error: Option<String>,
    /// Defects the channel found in the provider's form of the message (a provider's own
    /// codes, such as a malformed MIME structure). The engine adds its own when it has to
    /// change the message to store it.
    pub defects: Vec<Defect>,
    /// The provider's time.
    pub sent_at: Timestamp,
    /// A cursor to advance in the same commit.
    pub cursor: Option<CursorUpdate>,
}

impl InboundMessage {
    /// A plain-text inbound message from `remote` in `thread_key`.
    pub fn text(
        provider_id: impl Into<String>,
        thread_key: impl Into<String>,
        remote: IdentityInfo,
        text: impl Into<String>,
        sent_at: Timestamp,
    ) -> Self {
        Self {
            provider_id: provider_id.into(),
            thread_key: thread_key.into(),
            remote,
            direction: Direction::Inbound,
            client_key: None,
            text: Some(text.into()),
            html: None,
            reply_to: None,
            references: Vec::new(),
            attachments: Vec::new(),
            parse_error: None,
            defects: Vec::new(),
            sent_at,
            cursor: None,
        }
    }
}

/// What the service asks to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The conversation to reply in.
    pub conversation_id: ConversationId,
    /// Plain text.
    pub text: Option<String>,
    /// HTML (email).
    pub html: Option<String>,
    /// The subject (email; other providers ignore it). Without one, email uses the first
    /// line of the text.
    pub subject: Option<String>,
    /// The service's idempotency key, unique per account: the same key again returns the
    /// same message and queues nothing; the same key with other content is
    /// [`EngineError::IdempotencyConflict`](crate::EngineError::IdempotencyConflict). Kept as
    /// long as the message (the message id is derived from it).
    pub idempotency_key: Option<String>,
    /// Provider id of the message this replies to.
    pub reply_to: Option<String>,
    /// Attachments (stored before the message is queued).
    pub attachments: Vec<AttachmentData>,
    /// Origin label, such as `chat_manual`.
    pub label: String,
}

impl OutboundMessage {
    /// A plain-text message into `conversation`, labelled `manual`.
    ///
    /// ```
    /// use channel_core::{ConversationId, OutboundMessage};
    ///
    /// let m = OutboundMessage::text(ConversationId::new(), "hello")
    ///     .label("autoreply")
    ///     .reply_to(Some("<q1@example.org>".to_owned()));
    /// assert_eq!((m.text.as_deref(), m.label.as_str()), (Some("hello"), "autoreply"));
    /// ```
    pub fn text(conversation: ConversationId, text: impl Into<String>) -> Self {
        Self {
            conversation_id: conversation,
            text: Some(text.into()),
            html: None,
            subject: None,
            idempotency_key: None,
            reply_to: None,
            attachments: Vec::new(),
            label: "manual".to_owned(),
        }
    }

    /// With a subject (email).
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// With the service's idempotency key (see [`OutboundMessage::idempotency_key`]).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// With the origin label (such as `autoreply`), stored as `Origin::Service(label)`.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Replying to the message with this provider id.
    pub fn reply_to(mut self, provider_id: Option<String>) -> Self {
        self.reply_to = provider_id;
        self
    }
}
