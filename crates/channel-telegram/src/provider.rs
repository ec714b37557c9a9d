//! The Telegram [`Provider`]: the kind `telegram`, its accounts' configuration
//! ([`TelegramAccountConfig`]), their channels, their login flows and the idempotency key (a
//! `random_id`, recorded before the first attempt, by which Telegram deduplicates a retried
//! send).
//!
//! What an account keeps, and where:
//!
//! | what | where |
//! | --- | --- |
//! | api_id, data centres' addresses, timeouts | [`Account::config`] ([`TelegramAccountConfig`], JSON) |
//! | api_hash | account state [`API_HASH_KEY`] ([`TelegramProvider::store_api_hash`]), else the provider's ([`TelegramProvider::api_credentials`]) |
//! | session: auth key, home DC, self user | account state [`SESSION_KEY`] |
//! | a phone login waiting for its code or password | account state [`LOGIN_KEY`](crate::login::LOGIN_KEY) |
//! | a QR login waiting to be scanned (its start) | account state [`QR_LOGIN_KEY`] |
//! | peers, update state, sends in flight | account state (see [`crate::session`]) |
//!
//! The account state is encrypted at rest by the core; none of it is logged or part of an
//! event.
//!
//! Login flows ([`Provider::login_step`], driven by
//! [`Runtime::login_step`](channel_core::runtime::Runtime::login_step)):
//!
//! * `phone`: [`LoginStep::Input`] `phone` → `code` → `password` (accounts with 2FA) →
//!   [`LoginStep::Done`]. A wrong code or password is [`LoginError::InvalidInput`] naming
//!   the field, and the login stays at that step; the code and password steps go on from the
//!   account state, also in another process or after a restart. Called with no input, the
//!   flow asks for what the login waits for.
//! * `qr`: [`LoginStep::Display`] with a `tg://login?token=…` URL to show as a QR code (in an
//!   app where the account is logged in: Settings → Devices → Link Desktop Device). Call it
//!   again with no input every few seconds: it answers the code to show now (Telegram
//!   rotates it), then `password` for an account with 2FA, or [`LoginStep::Done`]. A code
//!   not scanned within `qr_login_timeout_ms` (3 minutes) ends with [`LoginError::Expired`];
//!   the next call starts a new one.
//! * `bot`: `token` (from @BotFather) → [`LoginStep::Done`].
//!
//! [`Account::config`]: channel_core::Account::config

use std::sync::Arc;

use async_trait::async_trait;
use channel_core::provider::{
    ConfigError, FieldKind, LoginError, LoginField, LoginFlow, LoginInput, LoginStep, Provider,
};
use channel_core::state::StateError;
use channel_core::{
    Account, AccountId, Capabilities, Channel, ChannelError, ChannelKind, Engine, Inbound,
    MessageId, Timestamp,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::TelegramChannel;
use crate::account_config::TelegramAccountConfig;
use crate::login::{self, CodeDelivery, LoginProgress, TelegramLogin};
use crate::session::{SESSION_KEY, StoredSession};

/// The kind of Telegram accounts: `telegram`.
pub const KIND: ChannelKind = ChannelKind::from_static("telegram");

/// Account-state key of the account's api_hash (see [`TelegramProvider::store_api_hash`]).
pub const API_HASH_KEY: &str = "telegram/api-hash";

/// Account-state key of a QR login waiting to be scanned: when it showed its first code.
pub const QR_LOGIN_KEY: &str = "telegram/login-qr";

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

/// The Telegram provider, registered on the runtime (see the [module](self)).
///
/// ```
/// use std::sync::Arc;
/// use channel_core::provider::Provider;
/// use channel_telegram::TelegramProvider;
///
/// // The app's credentials for every account that has none of its own.
/// let provider = TelegramProvider::new().api_credentials(12345, "0123456789abcdef0123456789abcdef");
/// assert!(provider.check_config(&serde_json::json!({"send_timeout_ms": 20000})).is_ok());
/// let flows: Vec<String> = provider.login_flows().into_iter().map(|f| f.id).collect();
/// assert_eq!(flows, ["phone", "qr", "bot"]);
/// ```
#[derive(Clone, Default)]
pub struct TelegramProvider {
    credentials: Option<(i32, SecretString)>,
}

impl std::fmt::Debug for TelegramProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramProvider")
            .field("api_id", &self.credentials.as_ref().map(|c| c.0))
            .finish_non_exhaustive()
    }
}

impl TelegramProvider {
    /// The provider, with no app credentials: each account then needs `api_id` in its
    /// configuration and an api_hash in its state ([`TelegramProvider::store_api_hash`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The app's `api_id` and `api_hash` (from <https://my.telegram.org>) for the accounts
    /// that have none of their own. The hash stays in memory and is never logged.
    pub fn api_credentials(mut self, api_id: i32, api_hash: impl Into<String>) -> Self {
        self.credentials = Some((api_id, SecretString::from(api_hash.into())));
        self
    }

    /// Keeps `api_hash` for `account`, encrypted in its state under [`API_HASH_KEY`]: logins
    /// of this account use it over the provider's.
    pub async fn store_api_hash(
        engine: &Engine,
        account: AccountId,
        api_hash: &SecretString,
    ) -> Result<(), StateError> {
        engine.account_state(account).put(API_HASH_KEY, api_hash.expose_secret().as_bytes()).await
    }

    /// The account's configuration, checked, and its api_id.
    fn account_config(
        &self,
        config: &serde_json::Value,
    ) -> Result<(TelegramAccountConfig, i32), ConfigError> {
        let parsed = TelegramAccountConfig::from_json(config)?;
        let api_id = parsed.api_id.or(self.credentials.as_ref().map(|c| c.0)).ok_or_else(|| {
            ConfigError::new(
                "api_id",
                "is missing: set the api_id of your app from https://my.telegram.org, or give \
                 the provider its credentials (TelegramProvider::api_credentials)",
            )
        })?;
        Ok((parsed, api_id))
    }

    /// The login of `account`: its app credentials and data centres.
    async fn login(
        &self,
        account: &Account,
        engine: &Engine,
    ) -> Result<(TelegramLogin, TelegramAccountConfig), LoginError> {
        let (config, api_id) = self.account_config(&account.config).map_err(|e| {
            LoginError::Failed(format!("account {}: {e}; fix the configuration", account.id))
        })?;
        let stored = engine
            .account_state(account.id)
            .get(API_HASH_KEY)
            .await
            .map_err(|e| LoginError::Unavailable(format!("account state: {e}")))?;
        let api_hash = match (stored, &self.credentials) {
            (Some(h), _) => String::from_utf8_lossy(h.expose_secret()).into_owned(),
            (None, Some((_, h))) => h.expose_secret().to_owned(),
            (None, None) => {
                return Err(LoginError::Failed(format!(
                    "account {} has no api_hash: store the app's with \
                     TelegramProvider::store_api_hash, or give the provider its credentials \
                     (TelegramProvider::api_credentials)",
                    account.id
                )));
            }
        };
        let login = TelegramLogin::for_config(&config.channel_config(api_id), api_hash)
            .timeout(config.login_timeout());
        Ok((login, config))
    }
}

fn field(id: &str, kind: FieldKind, label: &str) -> LoginField {
    LoginField { id: id.to_owned(), kind, label: label.to_owned() }
}

fn ask_phone() -> LoginStep {
    LoginStep::Input {
        name: "phone".to_owned(),
        fields: vec![field(
            "phone",
            FieldKind::Phone,
            "Phone number (international, such as +15550100)",
        )],
        hint: None,
    }
}

fn ask_code(hint: Option<String>) -> LoginStep {
    LoginStep::Input {
        name: "code".to_owned(),
        fields: vec![field("code", FieldKind::Code, "Login code")],
        hint,
    }
}

fn ask_password(hint: Option<String>) -> LoginStep {
    LoginStep::Input {
        name: "password".to_owned(),
        fields: vec![field("password", FieldKind::Password, "Two-step verification password")],
        hint,
    }
}

fn ask_token() -> LoginStep {
    LoginStep::Input {
        name: "token".to_owned(),
        fields: vec![field("token", FieldKind::Token, "Bot token from @BotFather")],
        hint: None,
    }
}

/// Where the code went, for people.
fn code_hint(delivery: CodeDelivery, length: Option<u32>) -> String {
    let what = length.map_or("a code".to_owned(), |n| format!("a {n}-digit code"));
    let place = match delivery {
        CodeDelivery::App => "in the Telegram app where the account is logged in",
        CodeDelivery::Sms => "by SMS",
        CodeDelivery::Call => "by a phone call",
        CodeDelivery::Other => "to the account",
    };
    format!("Telegram sent {what} {place}")
}

fn invalid(field: &str, message: &str) -> LoginError {
    LoginError::InvalidInput { field: field.to_owned(), message: message.to_owned() }
}

/// The core's login error for one of [`TelegramLogin`]'s, naming the field to ask again.
fn login_error(e: login::LoginError) -> LoginError {
    use login::LoginError as E;
    match e {
        E::InvalidPhone => {
            invalid("phone", "Telegram refused this phone number; check it and try again")
        }
        E::InvalidCode => invalid("code", "wrong code; type the code Telegram sent again"),
        E::InvalidPassword => invalid("password", "wrong password; try again"),
        E::InvalidBotToken => {
            invalid("token", "Telegram refused this bot token; copy it again from @BotFather")
        }
        E::SignUpRequired => invalid(
            "phone",
            "no Telegram account uses this phone number; sign up in a Telegram app first",
        ),
        E::CodeExpired => LoginError::Expired(
            "the login code expired or was used; start the `phone` flow again for a new code"
                .to_owned(),
        ),
        E::NoLoginInProgress => LoginError::NotStarted(
            "no login waits for this step; start the flow again from its first step".to_owned(),
        ),
        E::FloodWait { retry_after } => LoginError::FloodWait { retry_after },
        E::InvalidApiCredentials => LoginError::Failed(
            "Telegram refused the app's api_id/api_hash: fix api_id in the account's \
             configuration or its api_hash"
                .to_owned(),
        ),
        E::Timeout(after) => {
            LoginError::Unavailable(format!("Telegram did not answer within {after:?}"))
        }
        E::Transient(m) => LoginError::Unavailable(m),
        E::Rejected(m) => LoginError::Failed(format!("Telegram refused the login: {m}")),
    }
}

fn state_error(e: impl std::fmt::Display) -> LoginError {
    LoginError::Unavailable(format!("account state: {e}"))
}

/// A QR login waiting to be scanned, as stored under [`QR_LOGIN_KEY`].
#[derive(Serialize, Deserialize)]
struct PendingQr {
    /// When its first code was shown (ms since the Unix epoch).
    started_at: i64,
}

impl TelegramProvider {
    /// The step after a [`LoginProgress`].
    async fn progress(
        &self,
        engine: &Engine,
        account: &Account,
        progress: LoginProgress,
    ) -> Result<LoginStep, LoginError> {
        Ok(match progress {
            LoginProgress::CodeSent { delivery, length, .. } => {
                ask_code(Some(code_hint(delivery, length)))
            }
            LoginProgress::PasswordNeeded { hint } => ask_password(hint),
            LoginProgress::QrCode { url, expires_at } => LoginStep::Display {
                name: "qr".to_owned(),
                data: url,
                expires_at: Some(Timestamp::from_unix_seconds(expires_at)),
            },
            LoginProgress::LoggedIn(me) => {
                engine.account_state(account.id).delete(QR_LOGIN_KEY).await.map_err(state_error)?;
                tracing::info!(account = %account.id, bot = me.bot, "Telegram login done");
                let who = match (me.username, me.display_name) {
                    (Some(u), _) => format!("@{u}"),
                    (None, Some(n)) => n,
                    (None, None) => format!("user {}", me.user_id),
                };
                LoginStep::Done { who: Some(who) }
            }
        })
    }

    async fn phone_step(
        &self,
        login: &TelegramLogin,
        inbound: Arc<dyn Inbound>,
        input: &LoginInput,
    ) -> Result<Result<LoginProgress, LoginStep>, LoginError> {
        let result = if let Some(phone) = input.get("phone") {
            login.request_code(inbound, phone.expose_secret()).await
        } else if let Some(code) = input.get("code") {
            login.submit_code(inbound, code.expose_secret()).await
        } else if let Some(password) = input.get("password") {
            login.submit_password(inbound, password.expose_secret()).await
        } else {
            // No input: ask what the login waits for.
            let pending = TelegramLogin::pending(&*inbound).await.map_err(login_error)?;
            return Ok(Err(match pending {
                Some(p) if p.step == login::LoginStep::Code => ask_code(None),
                Some(p) => ask_password(p.hint),
                None => ask_phone(),
            }));
        };
        result.map(Ok).map_err(login_error)
    }

    async fn qr_step(
        &self,
        login: &TelegramLogin,
        config: &TelegramAccountConfig,
        engine: &Engine,
        account: &Account,
        inbound: Arc<dyn Inbound>,
        input: &LoginInput,
    ) -> Result<Result<LoginProgress, LoginStep>, LoginError> {
        if let Some(password) = input.get("password") {
            return login
                .submit_password(inbound, password.expose_secret())
                .await
                .map(Ok)
                .map_err(login_error);
        }
        let pending = TelegramLogin::pending(&*inbound).await.map_err(login_error)?;
        if let Some(p) = pending.filter(|p| p.step == login::LoginStep::Password) {
            return Ok(Err(ask_password(p.hint)));
        }
        let state = engine.account_state(account.id);
        let now = engine.now();
        let started = state
            .get(QR_LOGIN_KEY)
            .await
            .map_err(state_error)?
            .and_then(|raw| serde_json::from_slice::<PendingQr>(raw.expose_secret()).ok());
        match started {
            Some(qr) if now.since(Timestamp(qr.started_at)) > config.qr_login_timeout() => {
                state.delete(QR_LOGIN_KEY).await.map_err(state_error)?;
                return Err(LoginError::Expired(format!(
                    "the QR code was not scanned within {:?}; start the `qr` flow again for a new code",
                    config.qr_login_timeout()
                )));
            }
            Some(_) => {}
            None => {
                let bytes = serde_json::to_vec(&PendingQr { started_at: now.as_millis() })
                    .map_err(|e| LoginError::Failed(e.to_string()))?;
                state.put(QR_LOGIN_KEY, &bytes).await.map_err(state_error)?;
            }
        }
        login.qr_login(inbound).await.map(Ok).map_err(login_error)
    }
}

#[async_trait]
impl Provider for TelegramProvider {
    fn kind(&self) -> ChannelKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn client_key(&self, _account: &Account, message_id: MessageId) -> String {
        random_id_for(message_id)
    }

    /// The account's [`TelegramChannel`], from its configuration and its session, with the
    /// engine's blob store for media. Not logged in: [`ChannelError::NeedsLogin`].
    async fn channel(
        &self,
        account: &Account,
        engine: &Engine,
    ) -> Result<Arc<dyn Channel>, ChannelError> {
        let (config, api_id) = self.account_config(&account.config).map_err(|e| {
            ChannelError::permanent(format!(
                "Telegram account {}: {e}; fix the account's configuration",
                account.id
            ))
        })?;
        let not_logged_in = || {
            ChannelError::needs_login(format!(
                "Telegram account {} is not logged in: log in with the `phone`, `qr` or `bot` \
                 flow (Runtime::login_step)",
                account.id
            ))
        };
        let stored = engine
            .account_state(account.id)
            .get(SESSION_KEY)
            .await
            .map_err(|e| ChannelError::transient(format!("account state: {e}")))?;
        match stored.map(|raw| StoredSession::from_bytes(raw.expose_secret())) {
            None => return Err(not_logged_in()),
            Some(Err(e)) => {
                return Err(ChannelError::needs_login(format!(
                    "Telegram account {}: {e}; log in again (Runtime::login_step)",
                    account.id
                )));
            }
            Some(Ok(s)) if s.me.is_none() => return Err(not_logged_in()),
            Some(Ok(_)) => {}
        }
        let channel = TelegramChannel::new(config.channel_config(api_id))
            .with_blobs(Arc::new(engine.blobs().clone()));
        Ok(Arc::new(channel))
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<(), ConfigError> {
        self.account_config(config).map(|_| ())
    }

    fn login_flows(&self) -> Vec<LoginFlow> {
        let flow = |id: &str, name: &str, description: &str| LoginFlow {
            id: id.to_owned(),
            name: name.to_owned(),
            description: description.to_owned(),
        };
        vec![
            flow(
                "phone",
                "Phone number",
                "The phone number, then the code Telegram sends, then the two-step verification \
                 password if the account has one.",
            ),
            flow(
                "qr",
                "QR code",
                "Scan the code in a Telegram app where the account is logged in (Settings → \
                 Devices → Link Desktop Device).",
            ),
            flow("bot", "Bot token", "The token of a bot, from @BotFather."),
        ]
    }

    async fn login_step(
        &self,
        account: &Account,
        engine: &Engine,
        flow: &str,
        input: LoginInput,
    ) -> Result<LoginStep, LoginError> {
        if !matches!(flow, "phone" | "qr" | "bot") {
            return Err(LoginError::UnknownFlow { flow: flow.to_owned() });
        }
        let (login, config) = self.login(account, engine).await?;
        let inbound: Arc<dyn Inbound> = Arc::new(engine.account_sink(account.id));
        let outcome = match flow {
            "phone" => self.phone_step(&login, inbound, &input).await?,
            "qr" => self.qr_step(&login, &config, engine, account, inbound, &input).await?,
            _ => match input.get("token") {
                Some(token) => Ok(login
                    .login_bot(inbound, token.expose_secret())
                    .await
                    .map_err(login_error)?),
                None => Err(ask_token()),
            },
        };
        match outcome {
            Ok(progress) => self.progress(engine, account, progress).await,
            Err(step) => Ok(step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_login_error_names_the_field_to_ask_again_or_what_to_do() {
        let field_of = |e| match login_error(e) {
            LoginError::InvalidInput { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field_of(login::LoginError::InvalidCode), "code");
        assert_eq!(field_of(login::LoginError::InvalidPassword), "password");
        assert_eq!(field_of(login::LoginError::InvalidPhone), "phone");
        assert_eq!(field_of(login::LoginError::InvalidBotToken), "token");
        assert!(
            matches!(login_error(login::LoginError::CodeExpired), LoginError::Expired(m) if m.contains("again"))
        );
        assert!(matches!(
            login_error(login::LoginError::Timeout(std::time::Duration::from_secs(1))),
            LoginError::Unavailable(_)
        ));
    }

    #[test]
    fn an_account_without_api_id_is_refused_unless_the_provider_has_one() {
        let err = TelegramProvider::new().check_config(&serde_json::json!({})).unwrap_err();
        assert_eq!(err.field, "api_id");
        assert!(
            TelegramProvider::new()
                .api_credentials(1, "h")
                .check_config(&serde_json::Value::Null)
                .is_ok()
        );
        let shown = format!("{:?}", TelegramProvider::new().api_credentials(1, "the-hash"));
        assert!(!shown.contains("the-hash"), "{shown}");
    }
}
