//! The Telegram [`Provider`]: the kind `telegram`, its capabilities and its idempotency key
//! (a `random_id`, recorded before the first attempt, by which Telegram deduplicates a
//! retried send).

use std::sync::Arc;

use async_trait::async_trait;
use channel_core::provider::Provider;
use channel_core::{Account, Capabilities, Channel, ChannelError, ChannelKind, Engine, MessageId};

/// The kind of Telegram accounts: `telegram`.
pub const KIND: ChannelKind = ChannelKind::from_static("telegram");

/// Our `random_id` for a send: a non-zero `i64` in decimal, from the random bits of the
/// message id, so the same message always gets the same one.
///
/// ```
/// let id = channel_core::MessageId::new();
/// let key = channel_telegram::provider::random_id_for(id);
/// assert!(key.parse::<i64>().is_ok_and(|n| n != 0));
/// assert_eq!(key, channel_telegram::provider::random_id_for(id));
/// ```
pub fn random_id_for(message_id: MessageId) -> String {
    let bytes = message_id.as_uuid().into_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    let n = i64::from_be_bytes(low);
    (if n == 0 { 1 } else { n }).to_string()
}

/// The Telegram provider, registered on the engine or the runtime.
#[derive(Clone, Debug, Default)]
pub struct TelegramProvider {}

impl TelegramProvider {
    /// The provider.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Provider for TelegramProvider {
    fn kind(&self) -> ChannelKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { edits: true, media: true, history: true, outgoing_capture: true }
    }

    fn client_key(&self, _account: &Account, message_id: MessageId) -> String {
        random_id_for(message_id)
    }

    async fn channel(
        &self,
        account: &Account,
        _engine: &Engine,
    ) -> Result<Arc<dyn Channel>, ChannelError> {
        Err(ChannelError::Permanent(format!(
            "account {}: the Telegram provider does not create channels from a stored configuration yet",
            account.id
        )))
    }
}
