//! Events published after commits. They carry ids, never message content.

use serde::{Deserialize, Serialize};

use super::{
    AccountId, ConnectionState, ConversationId, ConversationStatus, MessageId, MessageStatus,
};

/// Something that happened, published after it was committed.
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
}
