//! The email [`Provider`]: the kind `email`, its capabilities and its idempotency key (an
//! RFC 5322 Message-ID, recorded before the first attempt).

use std::sync::Arc;

use async_trait::async_trait;
use channel_core::provider::Provider;
use channel_core::{Account, Capabilities, Channel, ChannelError, ChannelKind, Engine, MessageId};

/// The kind of email accounts: `email`.
pub const KIND: ChannelKind = ChannelKind::from_static("email");

/// The domain of generated Message-IDs when neither the provider nor the account names one.
pub const FALLBACK_MESSAGE_ID_DOMAIN: &str = "channel-email.invalid";

/// The email provider, registered on the engine or the runtime.
///
/// ```
/// use channel_core::provider::Provider;
/// use channel_core::{Account, MessageId, NewAccount};
/// use channel_email::EmailProvider;
///
/// let provider = EmailProvider::new().message_id_domain("mail.example.org");
/// # let account: Account = serde_json::from_value(serde_json::json!({
/// #     "id": "0193e4b4-7a2c-7c2a-9d4c-000000000001", "kind": "email",
/// #     "display_name": "support@example.org", "enabled": true,
/// #     "connection": {"state": "connecting"}, "created_at": 0, "updated_at": 0 })).unwrap();
/// let key = provider.client_key(&account, MessageId::new());
/// assert!(key.starts_with('<') && key.ends_with("@mail.example.org>"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct EmailProvider {
    message_id_domain: Option<String>,
}

impl EmailProvider {
    /// The provider; Message-IDs use the domain of the account's address.
    pub fn new() -> Self {
        Self::default()
    }

    /// The domain of the Message-IDs of every account (default: the domain of the account's
    /// address, its display name when that is an address, else
    /// [`FALLBACK_MESSAGE_ID_DOMAIN`]).
    pub fn message_id_domain(mut self, domain: impl Into<String>) -> Self {
        self.message_id_domain = Some(domain.into());
        self
    }

    fn domain_for<'a>(&'a self, account: &'a Account) -> &'a str {
        if let Some(d) = self.message_id_domain.as_deref() {
            return d;
        }
        account
            .display_name
            .rsplit_once('@')
            .map(|(_, d)| d.trim())
            .filter(|d| {
                !d.is_empty()
                    && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            })
            .unwrap_or(FALLBACK_MESSAGE_ID_DOMAIN)
    }
}

#[async_trait]
impl Provider for EmailProvider {
    fn kind(&self) -> ChannelKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { edits: false, media: true, history: true, outgoing_capture: true }
    }

    fn client_key(&self, account: &Account, message_id: MessageId) -> String {
        format!("<{}@{}>", message_id.as_uuid().simple(), self.domain_for(account))
    }

    async fn channel(
        &self,
        account: &Account,
        _engine: &Engine,
    ) -> Result<Arc<dyn Channel>, ChannelError> {
        Err(ChannelError::Permanent(format!(
            "account {}: the email provider does not create channels from a stored configuration yet",
            account.id
        )))
    }
}
