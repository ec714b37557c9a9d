//! Events published after commits. They carry ids, never message content.

use serde::{Deserialize, Serialize};

use super::{
    AccountId, AttemptOutcome, ConnectionState, ConversationId, ConversationStatus, JobId,
    MessageId, MessageStatus,
};

/// Something that happened: written to the durable feed in the transaction of the change it
/// reports (see [`feed`](crate::feed)), and published in process after the commit.
///
/// Events carry ids and states only, never message text or addresses, so they can be logged
/// and sent over `LISTEN/NOTIFY` freely.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A message was stored (inbound, or outbound from another app).
    MessageReceived {
        /// The account.
        account_id: AccountId,
        /// The conversation.
        conversation_id: ConversationId,
        /// The message.
        message_id: MessageId,
        /// The codes of the message's [`defects`](crate::Message::defects), if it was stored
        /// degraded (empty for a message stored as delivered).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        defects: Vec<String>,
    },
    /// An outbound message was accepted by the provider.
    MessageSent {
        /// The account.
        account_id: AccountId,
        /// The message.
        message_id: MessageId,
    },
    /// A stored message's text was edited at the provider.
    MessageEdited {
        /// The account.
        account_id: AccountId,
        /// The message.
        message_id: MessageId,
    },
    /// A stored message was deleted at the provider (see
    /// [`Message::deleted_at`](crate::Message::deleted_at)).
    MessageDeleted {
        /// The account.
        account_id: AccountId,
        /// The message.
        message_id: MessageId,
    },
    /// A send and a stray copy of it became one message: the provider accepted `kept`, and
    /// `removed` (its echo or the owner's capture, stored before the send was recorded, as
    /// after a crash) held the provider's id. `removed` no longer exists; `kept` is `Sent`
    /// with that id (a [`Event::MessageSent`] follows).
    MessageMerged {
        /// The account.
        account_id: AccountId,
        /// The message that stays: the one `send` returned.
        kept: MessageId,
        /// The message that was removed.
        removed: MessageId,
    },
    /// A message changed status (for example to `Failed`).
    MessageStatusChanged {
        /// The account.
        account_id: AccountId,
        /// The message.
        message_id: MessageId,
        /// The new status.
        status: MessageStatus,
    },
    /// A conversation was opened.
    ConversationOpened {
        /// The account.
        account_id: AccountId,
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// A conversation changed status (idle, closed, expired, reopened).
    ConversationStatusChanged {
        /// The account.
        account_id: AccountId,
        /// The conversation.
        conversation_id: ConversationId,
        /// The new status.
        status: ConversationStatus,
    },
    /// A conversation was claimed, released or transferred (see
    /// [`Engine::assign`](crate::Engine::assign)).
    ConversationAssigned {
        /// The account.
        account_id: AccountId,
        /// The conversation.
        conversation_id: ConversationId,
        /// The operator it is assigned to now; `None` when released.
        assignee: Option<String>,
        /// The operator it was assigned to before.
        previous: Option<String>,
    },
    /// An account's connection state changed.
    AccountStateChanged {
        /// The account.
        account_id: AccountId,
        /// The new state.
        state: ConnectionState,
    },
    /// An outbound message was queued (a `Pending` message and its send job).
    MessageQueued {
        /// The account.
        account_id: AccountId,
        /// The conversation.
        conversation_id: ConversationId,
        /// The message.
        message_id: MessageId,
    },
    /// An attempt of a send ended (its audit row: [`Engine::job_attempts`](crate::Engine::job_attempts)).
    SendAttempted {
        /// The account.
        account_id: AccountId,
        /// The message.
        message_id: MessageId,
        /// The send job.
        job_id: JobId,
        /// The attempt's number (from 1).
        attempt: i32,
        /// How it ended.
        outcome: AttemptOutcome,
    },
    /// A login step of an account was taken (its name: `password`, `phone`, `code`, `qr`,
    /// `done`, ...). What was entered is never part of it.
    LoginStepped {
        /// The account.
        account_id: AccountId,
        /// The step the account is at now (`done` once logged in).
        step: String,
    },
    /// A page of a history sync was stored.
    HistorySynced {
        /// The account.
        account_id: AccountId,
        /// The history job.
        job_id: JobId,
        /// Messages the channel returned in this page.
        fetched: u32,
        /// Messages of them that were new.
        stored: u32,
    },
}

impl Event {
    /// The event's name, as its JSON's `event` field writes it (`message_received`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Event::MessageReceived { .. } => "message_received",
            Event::MessageSent { .. } => "message_sent",
            Event::MessageEdited { .. } => "message_edited",
            Event::MessageDeleted { .. } => "message_deleted",
            Event::MessageMerged { .. } => "message_merged",
            Event::MessageStatusChanged { .. } => "message_status_changed",
            Event::ConversationOpened { .. } => "conversation_opened",
            Event::ConversationStatusChanged { .. } => "conversation_status_changed",
            Event::ConversationAssigned { .. } => "conversation_assigned",
            Event::AccountStateChanged { .. } => "account_state_changed",
            Event::MessageQueued { .. } => "message_queued",
            Event::SendAttempted { .. } => "send_attempted",
            Event::LoginStepped { .. } => "login_stepped",
            Event::HistorySynced { .. } => "history_synced",
        }
    }

    /// The account the event is about.
    pub fn account_id(&self) -> AccountId {
        match self {
            Event::MessageReceived { account_id, .. }
            | Event::MessageSent { account_id, .. }
            | Event::MessageEdited { account_id, .. }
            | Event::MessageDeleted { account_id, .. }
            | Event::MessageMerged { account_id, .. }
            | Event::MessageStatusChanged { account_id, .. }
            | Event::ConversationOpened { account_id, .. }
            | Event::ConversationStatusChanged { account_id, .. }
            | Event::ConversationAssigned { account_id, .. }
            | Event::AccountStateChanged { account_id, .. }
            | Event::MessageQueued { account_id, .. }
            | Event::SendAttempted { account_id, .. }
            | Event::LoginStepped { account_id, .. }
            | Event::HistorySynced { account_id, .. } => *account_id,
        }
    }
}
