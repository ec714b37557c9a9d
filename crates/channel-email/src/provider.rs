//! The email [`Provider`]: the kind `email`, its account configuration
//! ([`EmailAccountConfig`], checked by [`Provider::check_config`]), its channels (built from
//! that configuration and the password in the account's encrypted state), its one login flow
//! `password` (verified against both servers before anything is stored), its capabilities
//! and its idempotency key (an RFC 5322 Message-ID, recorded before the first attempt).

use std::sync::Arc;

use async_trait::async_trait;
use channel_core::provider::{
    ConfigError, FieldKind, LoginError, LoginField, LoginFlow, LoginInput, LoginStep, Provider,
};
use channel_core::{Account, Capabilities, Channel, ChannelError, ChannelKind, Engine, MessageId};
use secrecy::{ExposeSecret, SecretString};

use crate::account::{EmailAccountConfig, PASSWORD_KEY};
use crate::channel::EmailChannel;
use crate::verify::{Verified, VerifyError, verify};

/// The id of the email login flow: one step that asks for the password.
pub const PASSWORD_FLOW: &str = "password";

/// The kind of email accounts: `email`.
pub const KIND: ChannelKind = ChannelKind::from_static("email");

/// The domain of generated Message-IDs when neither the provider nor the account names one.
pub const FALLBACK_MESSAGE_ID_DOMAIN: &str = "channel-email.invalid";

/// The email provider, registered on the engine or the runtime.
///
/// An account's configuration is an [`EmailAccountConfig`] as JSON; its password is only in
/// the account's encrypted state under [`PASSWORD_KEY`], written by the login flow
/// [`PASSWORD_FLOW`] after both servers accepted it.
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

    /// Verifies `config` with `password` against both servers (see [`verify`]); nothing is
    /// stored.
    pub async fn verify(
        &self,
        config: &EmailAccountConfig,
        password: &SecretString,
    ) -> Result<Verified, VerifyError> {
        verify(config, password).await
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
        Capabilities::all().edits(false)
    }

    fn client_key(&self, account: &Account, message_id: MessageId) -> String {
        format!("<{}@{}>", message_id.as_uuid().simple(), self.domain_for(account))
    }

    async fn channel(
        &self,
        account: &Account,
        engine: &Engine,
    ) -> Result<Arc<dyn Channel>, ChannelError> {
        let config = EmailAccountConfig::from_json(&account.config).map_err(|e| {
            ChannelError::permanent(format!(
                "email account {}: {e}; fix the account's configuration and reconnect it",
                account.id
            ))
        })?;
        let password = stored_password(account, engine, &config).await?;
        let email = config
            .to_email_config(&password)
            .account_label(format!("{} <{}>", account.id, config.address.trim()))
            .client_instance(engine.config().worker_id());
        let channel = EmailChannel::new(email)?.with_attachments(Arc::new(engine.blobs().clone()));
        Ok(Arc::new(channel))
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<(), ConfigError> {
        EmailAccountConfig::from_json(config).map(|_| ())
    }

    fn login_flows(&self) -> Vec<LoginFlow> {
        vec![LoginFlow {
            id: PASSWORD_FLOW.to_owned(),
            name: "Password".to_owned(),
            description: "The mailbox password (or an app password), checked against the IMAP \
                          and SMTP servers before it is saved"
                .to_owned(),
        }]
    }

    async fn login_step(
        &self,
        account: &Account,
        engine: &Engine,
        flow: &str,
        input: LoginInput,
    ) -> Result<LoginStep, LoginError> {
        if flow != PASSWORD_FLOW {
            return Err(LoginError::UnknownFlow { flow: flow.to_owned() });
        }
        let config = EmailAccountConfig::from_json(&account.config).map_err(|e| {
            LoginError::Failed(format!("{e}; fix the account's configuration, then log in"))
        })?;
        if let Some(unknown) = input.fields().find(|f| *f != PASSWORD_FLOW) {
            return Err(LoginError::InvalidInput {
                field: unknown.to_owned(),
                message: format!("the email login asks only for `{PASSWORD_FLOW}`"),
            });
        }
        let Some(password) = input.get(PASSWORD_FLOW) else {
            return Ok(LoginStep::Input {
                name: PASSWORD_FLOW.to_owned(),
                fields: vec![LoginField {
                    id: PASSWORD_FLOW.to_owned(),
                    kind: FieldKind::Password,
                    label: format!("Password of {}", config.login()),
                }],
                hint: Some(format!(
                    "the password of {} on {} and {}",
                    config.login(),
                    config.imap.host.trim(),
                    config.smtp.host.trim()
                )),
            });
        };
        if password.expose_secret().is_empty() {
            return Err(LoginError::InvalidInput {
                field: PASSWORD_FLOW.to_owned(),
                message: "enter the password".to_owned(),
            });
        }
        match verify(&config, password).await {
            Ok(_) => {}
            Err(VerifyError::Credentials { sentence, .. }) => {
                return Err(LoginError::InvalidInput {
                    field: PASSWORD_FLOW.to_owned(),
                    message: sentence,
                });
            }
            Err(e) if e.is_transient() => {
                tracing::info!(account = %account.id, server = %e.server(), "email login not verified: the server cannot be reached");
                return Err(LoginError::Unavailable(format!(
                    "{e}. The password was not saved; the account stays saved, unverified: \
                     disable it until the server is reachable, then run this login step again"
                )));
            }
            Err(e) => {
                return Err(LoginError::Failed(format!("{e}; the password was not saved")));
            }
        }
        engine
            .account_state(account.id)
            .put(PASSWORD_KEY, password.expose_secret().as_bytes())
            .await
            .map_err(|e| {
                LoginError::Unavailable(format!(
                    "the password was verified but could not be saved ({e}): run this step again"
                ))
            })?;
        tracing::info!(account = %account.id, "email login verified; password saved");
        Ok(LoginStep::Done { who: Some(config.address.trim().to_owned()) })
    }
}

/// The password from the account's encrypted state; without one the account needs a login.
async fn stored_password(
    account: &Account,
    engine: &Engine,
    config: &EmailAccountConfig,
) -> Result<SecretString, ChannelError> {
    let needs_login = || {
        ChannelError::needs_login(format!(
            "no password is saved for {}: log in with the login flow `{PASSWORD_FLOW}` \
             (Runtime::login_step), which checks it against the servers and saves it",
            config.address.trim()
        ))
    };
    let stored = engine.account_state(account.id).get(PASSWORD_KEY).await.map_err(|e| {
        ChannelError::transient(format!("could not read the account's saved password: {e}"))
    })?;
    let Some(bytes) = stored else {
        return Err(needs_login());
    };
    let text = std::str::from_utf8(bytes.expose_secret()).map_err(|_| needs_login())?;
    Ok(SecretString::from(text.to_owned()))
}
