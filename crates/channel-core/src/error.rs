//! The engine's error type, and the named timeout around database calls.

use std::future::Future;
use std::time::Duration;

use crate::blob::BlobError;
use crate::channel::ChannelError;
use crate::model::{AccountId, ConversationId};
use crate::state::StateError;
use crate::store::StoreError;
use crate::validate::ValidationError;

/// Why an engine operation failed. Nothing was written unless the variant says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The input was refused before anything was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No such account.
    #[error("unknown account {0}")]
    UnknownAccount(AccountId),
    /// No such conversation (or not of the given account).
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    /// An attachment could not be stored (too large, I/O). Attachments stored before it stay
    /// behind unreferenced, which is harmless.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Account state could not be read or written (wrong key, store failure).
    #[error(transparent)]
    State(#[from] StateError),
    /// The store failed; [`StoreError::is_transient`] says whether to retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The account's channel, attached in this process, does not do this (see
    /// [`Capabilities`](crate::Capabilities)); nothing was queued.
    #[error("the channel of account {account} does not support {capability}")]
    Unsupported {
        /// The account.
        account: AccountId,
        /// The missing capability: `history` or `media`.
        capability: &'static str,
    },
    /// The engine was configured wrongly.
    #[error("engine configuration: {0}")]
    Config(String),
    /// An account's configuration was refused by its provider; nothing was saved.
    #[error(transparent)]
    AccountConfig(#[from] crate::provider::ConfigError),
    /// The conversation is not assigned as the change needs (another operator claimed it
    /// first, or it was released meanwhile): show the operator who has it.
    #[error("conversation {conversation} is assigned to {}", assignee.as_deref().unwrap_or("nobody"))]
    AssignedElsewhere {
        /// The conversation.
        conversation: ConversationId,
        /// Who it is assigned to now.
        assignee: Option<String>,
    },
    /// The idempotency key was used before for a message with other content: use a new key
    /// for a new message, or send the same content again.
    #[error("idempotency key `{key}` was used for message {message} with other content")]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The message it names.
        message: crate::MessageId,
    },
    /// This process has no provider of the account's kind: register it
    /// ([`RuntimeBuilder::provider`](crate::runtime::RuntimeBuilder::provider)).
    #[error("no provider of kind `{0}` in this process: register it on the runtime")]
    NoProvider(crate::ChannelKind),
    /// A setting is out of range (a zero duration, a zero batch size).
    #[error("engine setting `{setting}` {reason}")]
    InvalidSetting {
        /// The setting (the `EngineConfig` field).
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl EngineError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Store(e) => e.is_transient(),
            EngineError::State(StateError::Store(e)) => e.is_transient(),
            EngineError::Blob(BlobError::Backend(_)) => true,
            _ => false,
        }
    }
}

impl From<EngineError> for ChannelError {
    /// How a channel sees an engine failure: bad input is `InvalidInput` (skip or fix the
    /// message), an unknown account `Permanent`, the rest `Transient` (retry later).
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(v) => ChannelError::InvalidInput(v.to_string()),
            EngineError::Blob(BlobError::TooLarge { .. }) => {
                ChannelError::InvalidInput(e.to_string())
            }
            EngineError::UnknownAccount(_)
            | EngineError::Unsupported { .. }
            | EngineError::Config(_)
            | EngineError::AccountConfig(_)
            | EngineError::IdempotencyConflict { .. }
            | EngineError::AssignedElsewhere { .. }
            | EngineError::NoProvider(_)
            | EngineError::InvalidSetting { .. } => ChannelError::permanent(e.to_string()),
            EngineError::State(
                StateError::Decrypt { .. } | StateError::Format { .. } | StateError::InvalidKey(_),
            ) => ChannelError::permanent(e.to_string()),
            EngineError::Store(StoreError::InvalidInput { .. }) => {
                ChannelError::InvalidInput(e.to_string())
            }
            other => ChannelError::transient(other.to_string()),
        }
    }
}

/// Runs a store call under a deadline; past it, the call is dropped and the result is
/// [`StoreError::Timeout`] naming the operation.
pub async fn with_timeout<T>(
    operation: &'static str,
    after: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(after, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout { operation, after }),
    }
}
