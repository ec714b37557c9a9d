//! Logging a Telegram account in and out, one step per call, as a web backend drives it.
//!
//! Each step is one short connection: it loads the account's session from the account state
//! (or starts a fresh one, whose auth key Telegram's key exchange creates and which is stored
//! at once), makes its request, stores what the next step needs, and disconnects. Nothing is
//! held in memory between steps, so the steps of one login may run in different requests or
//! processes:
//!
//! * the session (DC and auth key) under [`SESSION_KEY`](crate::session::SESSION_KEY): the
//!   code is bound to the auth key that asked for it;
//! * the login in progress (phone number, `phone_code_hash`, step) under [`LOGIN_KEY`].
//!
//! Phone: [`TelegramLogin::request_code`] → [`TelegramLogin::submit_code`] → (2FA)
//! [`TelegramLogin::submit_password`]. QR code: [`TelegramLogin::qr_login`], polled until
//! scanned. Bots: [`TelegramLogin::login_bot`]. Every step answers
//! a [`LoginProgress`] (what to ask the user next) or a typed [`LoginError`] (what went
//! wrong and what to do). [`TelegramLogin::sign_out`] logs the key out at Telegram and wipes
//! everything stored for the session.
//!
//! ```no_run
//! use std::sync::Arc;
//! use channel_telegram::login::{LoginError, LoginProgress, TelegramLogin};
//!
//! # async fn demo(account: Arc<dyn channel_core::Inbound>) -> Result<(), LoginError> {
//! let login = TelegramLogin::new(12345, "0123456789abcdef0123456789abcdef");
//! // Request 1: the user typed their phone number.
//! login.request_code(Arc::clone(&account), "+15550100").await?;
//! // Request 2: the user typed the code.
//! match login.submit_code(Arc::clone(&account), "12345").await {
//!     Ok(LoginProgress::LoggedIn(me)) => println!("logged in as {}", me.user_id),
//!     Ok(LoginProgress::PasswordNeeded { hint }) => {
//!         // Request 3: the user typed their 2FA password.
//!         login.submit_password(account, "secret").await?;
//!     }
//!     Err(LoginError::InvalidCode) => { /* ask again */ }
//!     Err(LoginError::FloodWait { retry_after }) => { /* tell the user to wait */ }
//!     Err(e) => return Err(e),
//!     Ok(_) => {}
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use channel_core::{ChannelError, Inbound};
use grammers_client::Client;
use grammers_mtsender::{ConnectionParams, InvocationError, SenderPool};
use grammers_session::Session;
use grammers_session::updates::UpdatesLike;
use grammers_tl_types as tl;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::TelegramConfig;
use crate::channel::{PoolGuard, RetryIoOnce};
use crate::error::classify;
use crate::session::{AccountSession, SessionError, StoredSelf};

/// Account-state key of a login in progress.
pub const LOGIN_KEY: &str = "telegram/login";

/// Telegram's 2048-bit prime for 2FA, checked once: a `p` equal to it needs no primality test.
const TELEGRAM_SRP_PRIME: &str = "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c3720fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f642477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b";

/// Which step a login in progress waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginStep {
    /// The code Telegram sent: [`TelegramLogin::submit_code`].
    Code,
    /// The 2FA password: [`TelegramLogin::submit_password`].
    Password,
}

/// A login in progress, as stored under [`LOGIN_KEY`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The phone number logging in.
    pub phone: String,
    /// Telegram's handle of the code it sent.
    phone_code_hash: String,
    /// The step it waits for.
    pub step: LoginStep,
    /// The 2FA password's hint, when the login waits for the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// How Telegram delivered the login code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeDelivery {
    /// In a Telegram app where the account is logged in.
    App,
    /// By SMS.
    Sms,
    /// By a phone call.
    Call,
    /// Another way (flash call, e-mail, fragment…).
    Other,
}

/// The logged-in account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedIn {
    /// Telegram user id.
    pub user_id: i64,
    /// Username, if any.
    pub username: Option<String>,
    /// First and last name.
    pub display_name: Option<String>,
    /// A bot account.
    pub bot: bool,
}

/// Where a login stands after a step: what to ask the user next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginProgress {
    /// A code was sent: ask for it and call [`TelegramLogin::submit_code`].
    CodeSent {
        /// How it was delivered.
        delivery: CodeDelivery,
        /// Its length, when Telegram says.
        length: Option<u32>,
        /// When a new code may be requested, if Telegram says.
        resend_after: Option<Duration>,
    },
    /// The account has a 2FA password: ask for it and call
    /// [`TelegramLogin::submit_password`].
    PasswordNeeded {
        /// The password's hint, if set.
        hint: Option<String>,
    },
    /// A QR login waits to be scanned: show `url` as a QR code in an app where the account is
    /// logged in (Settings → Devices → Link Desktop Device), and call
    /// [`TelegramLogin::qr_login`] again (every few seconds, and when the token expires).
    QrCode {
        /// `tg://login?token=…`.
        url: String,
        /// When the token expires (Unix seconds).
        expires_at: i64,
    },
    /// Logged in: the session is stored and the channel can run.
    LoggedIn(LoggedIn),
}

/// Why a login step failed, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Telegram refused the phone number: ask for it again.
    #[error("invalid phone number")]
    InvalidPhone,
    /// Wrong code: ask for it again (the login stays at the code step).
    #[error("invalid login code")]
    InvalidCode,
    /// The code expired or was already used: request a new one.
    #[error("the login code expired: request a new one")]
    CodeExpired,
    /// Wrong 2FA password: ask for it again (the login stays at the password step).
    #[error("wrong 2FA password")]
    InvalidPassword,
    /// The bot token was refused.
    #[error("invalid bot token")]
    InvalidBotToken,
    /// The phone number has no Telegram account; sign up in an official app first.
    #[error("no Telegram account for this phone number")]
    SignUpRequired,
    /// No login is waiting for this step: start with [`TelegramLogin::request_code`].
    #[error("no login in progress at this step")]
    NoLoginInProgress,
    /// Telegram asks to wait before trying again.
    #[error("Telegram asks to wait {retry_after:?}")]
    FloodWait {
        /// How long.
        retry_after: Duration,
    },
    /// The app's api_id/api_hash were refused: fix the configuration.
    #[error("the app's api_id/api_hash were refused")]
    InvalidApiCredentials,
    /// Telegram did not answer in time: try again.
    #[error("Telegram did not answer within {0:?}")]
    Timeout(Duration),
    /// A passing failure (network, server): try again.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Telegram refused the step for another reason (its error name).
    #[error("refused by Telegram: {0}")]
    Rejected(String),
}

impl From<ChannelError> for LoginError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::RateLimited { retry_after } => LoginError::FloodWait { retry_after },
            ChannelError::Timeout { after, .. } => LoginError::Timeout(after),
            ChannelError::Permanent(m) | ChannelError::NeedsLogin(m) => {
                LoginError::Rejected(m.report())
            }
            ChannelError::InvalidInput(m) => LoginError::Rejected(m),
            other => LoginError::Transient(other.to_string()),
        }
    }
}

impl From<SessionError> for LoginError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::State(e) => e.into(),
            other => LoginError::Transient(other.to_string()),
        }
    }
}

/// What signing out did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedOut {
    /// Telegram confirmed `auth.logOut` (false when there was no session, or Telegram could
    /// not be reached: the stored session is wiped either way).
    pub confirmed_by_telegram: bool,
}

/// One step's connection: dropped (and disconnected) when the step ends.
struct Conn {
    client: Client,
    session: Arc<AccountSession>,
    _guard: PoolGuard,
    _updates: mpsc::Receiver<UpdatesLike>,
}

enum CallError {
    Timeout(Duration),
    Invocation(InvocationError),
}

impl CallError {
    /// The RPC error name, such as `PHONE_CODE_INVALID`.
    fn rpc_name(&self) -> Option<&str> {
        match self {
            CallError::Invocation(InvocationError::Rpc(rpc)) => Some(rpc.name.as_str()),
            _ => None,
        }
    }
}

impl From<CallError> for LoginError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Timeout(after) => LoginError::Timeout(after),
            CallError::Invocation(e) => match &e {
                InvocationError::Rpc(rpc)
                    if matches!(rpc.name.as_str(), "API_ID_INVALID" | "API_ID_PUBLISHED_FLOOD") =>
                {
                    LoginError::InvalidApiCredentials
                }
                InvocationError::Rpc(rpc) if rpc.name == "PHONE_NUMBER_INVALID" => {
                    LoginError::InvalidPhone
                }
                _ => classify(&e).into(),
            },
        }
    }
}

/// Logs Telegram accounts in and out (see the [module](self)). Its `Debug` leaves the
/// api_hash out.
#[derive(Clone)]
pub struct TelegramLogin {
    api_id: i32,
    api_hash: String,
    timeout: Duration,
    data_centres: BTreeMap<i32, SocketAddrV4>,
    home_dc: Option<i32>,
}

impl std::fmt::Debug for TelegramLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramLogin")
            .field("api_id", &self.api_id)
            .field("timeout", &self.timeout)
            .field("data_centres", &self.data_centres)
            .field("home_dc", &self.home_dc)
            .finish_non_exhaustive()
    }
}

impl TelegramLogin {
    /// Logins for the app with this `api_id` and `api_hash` (from <https://my.telegram.org>).
    pub fn new(api_id: i32, api_hash: impl Into<String>) -> Self {
        Self {
            api_id,
            api_hash: api_hash.into(),
            timeout: Duration::from_secs(30),
            data_centres: BTreeMap::new(),
            home_dc: None,
        }
    }

    /// Logins for the app and the data centres of a channel's `config` (its api_id, its
    /// [`TelegramConfig::data_centre`] addresses and [`TelegramConfig::home_dc`]), with this
    /// `api_hash`.
    pub fn for_config(config: &TelegramConfig, api_hash: impl Into<String>) -> Self {
        Self {
            data_centres: config.data_centres.clone(),
            home_dc: config.home_dc,
            ..Self::new(config.api_id, api_hash)
        }
    }

    /// Limit for each request of a step, connecting included (default 30 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The login in progress for this account, if any (to show the right form).
    pub async fn pending(account: &dyn Inbound) -> Result<Option<PendingLogin>, LoginError> {
        let raw = account.state_get(LOGIN_KEY).await?;
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()))
    }

    async fn store_pending(account: &dyn Inbound, p: &PendingLogin) -> Result<(), LoginError> {
        let bytes = serde_json::to_vec(p).map_err(|e| LoginError::Transient(e.to_string()))?;
        account.state_put(LOGIN_KEY, &bytes).await?;
        Ok(())
    }

    async fn connect(&self, account: &Arc<dyn Inbound>) -> Result<Conn, LoginError> {
        let session = match AccountSession::load(Arc::clone(account)).await {
            Ok(s) => s,
            Err(SessionError::State(e)) => return Err(e.into()),
            // Nothing usable stored: a fresh session; its new auth key is stored as soon as
            // the key exchange made it.
            Err(SessionError::NotLoggedIn | SessionError::Corrupt(_)) => {
                AccountSession::fresh(Arc::clone(account))
            }
        };
        session.pin_data_centres(&self.data_centres, self.home_dc);
        let session = Arc::new(session);
        let params = ConnectionParams { retry_policy: Box::new(RetryIoOnce), ..Default::default() };
        let pool = SenderPool::with_configuration(Arc::clone(&session), self.api_id, params);
        let client = Client::new(pool.handle.clone());
        let guard =
            PoolGuard { handle: pool.handle.thin.clone(), runner: tokio::spawn(pool.runner.run()) };
        Ok(Conn { client, session, _guard: guard, _updates: pool.updates })
    }

    async fn call<R: tl::RemoteCall>(
        &self,
        conn: &Conn,
        request: &R,
    ) -> Result<R::Return, CallError> {
        match tokio::time::timeout(self.timeout, conn.client.invoke(request)).await {
            Err(_) => Err(CallError::Timeout(self.timeout)),
            Ok(r) => r.map_err(CallError::Invocation),
        }
    }

    /// Like `call`, following a `PHONE_MIGRATE_N`/`USER_MIGRATE_N` (303) to the account's
    /// home DC once; the new home DC is stored with the session.
    async fn call_migrating<R: tl::RemoteCall>(
        &self,
        conn: &Conn,
        request: &R,
    ) -> Result<R::Return, CallError> {
        match self.call(conn, request).await {
            Err(CallError::Invocation(InvocationError::Rpc(rpc))) if rpc.code == 303 => {
                let dc = rpc
                    .value
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| CallError::Invocation(InvocationError::Rpc(rpc.clone())))?;
                conn.session
                    .set_home_dc_id(dc)
                    .await
                    .map_err(|e| CallError::Invocation(InvocationError::Session(e.into())))?;
                self.call(conn, request).await
            }
            other => other,
        }
    }

    /// Step 1 of a phone login: asks Telegram to send a code to `phone` (international
    /// format, such as `+15550100`). The login then waits for [`TelegramLogin::submit_code`].
    pub async fn request_code(
        &self,
        account: Arc<dyn Inbound>,
        phone: &str,
    ) -> Result<LoginProgress, LoginError> {
        let phone: String = phone.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect();
        if phone.trim_start_matches('+').len() < 5 {
            return Err(LoginError::InvalidPhone);
        }
        let conn = self.connect(&account).await?;
        let request = tl::functions::auth::SendCode {
            phone_number: phone.clone(),
            api_id: self.api_id,
            api_hash: self.api_hash.clone(),
            settings: tl::types::CodeSettings {
                allow_flashcall: false,
                current_number: false,
                allow_app_hash: false,
                allow_missed_call: false,
                allow_firebase: false,
                unknown_number: false,
                logout_tokens: None,
                token: None,
                app_sandbox: None,
            }
            .into(),
        };
        let sent = self.call_migrating(&conn, &request).await?;
        conn.session.save().await?;
        match sent {
            tl::enums::auth::SentCode::Code(code) => {
                let (delivery, length) = match code.r#type {
                    tl::enums::auth::SentCodeType::App(t) => (CodeDelivery::App, Some(t.length)),
                    tl::enums::auth::SentCodeType::Sms(t) => (CodeDelivery::Sms, Some(t.length)),
                    tl::enums::auth::SentCodeType::Call(t) => (CodeDelivery::Call, Some(t.length)),
                    _ => (CodeDelivery::Other, None),
                };
                Self::store_pending(
                    &*account,
                    &PendingLogin {
                        phone,
                        phone_code_hash: code.phone_code_hash,
                        step: LoginStep::Code,
                        hint: None,
                    },
                )
                .await?;
                Ok(LoginProgress::CodeSent {
                    delivery,
                    length: length.and_then(|l| u32::try_from(l).ok()),
                    resend_after: code
                        .timeout
                        .and_then(|t| u64::try_from(t).ok())
                        .map(Duration::from_secs),
                })
            }
            tl::enums::auth::SentCode::Success(s) => {
                self.finish(&account, &conn, s.authorization).await
            }
            tl::enums::auth::SentCode::PaymentRequired(_) => {
                Err(LoginError::Rejected("Telegram asks for a payment to send the code".to_owned()))
            }
        }
    }

    /// Step 2 of a phone login: the code the user received. Answers
    /// [`LoginProgress::LoggedIn`], or [`LoginProgress::PasswordNeeded`] when the account
    /// has a 2FA password. A wrong code is [`LoginError::InvalidCode`] and may be retried.
    pub async fn submit_code(
        &self,
        account: Arc<dyn Inbound>,
        code: &str,
    ) -> Result<LoginProgress, LoginError> {
        let Some(pending) = Self::pending(&*account).await?.filter(|p| p.step == LoginStep::Code)
        else {
            return Err(LoginError::NoLoginInProgress);
        };
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.is_empty() {
            return Err(LoginError::InvalidCode);
        }
        let conn = self.connect(&account).await?;
        let request = tl::functions::auth::SignIn {
            phone_number: pending.phone.clone(),
            phone_code_hash: pending.phone_code_hash.clone(),
            phone_code: Some(code),
            email_verification: None,
        };
        match self.call(&conn, &request).await {
            Ok(authorization) => self.finish(&account, &conn, authorization).await,
            Err(e) => match e.rpc_name() {
                Some("SESSION_PASSWORD_NEEDED") => {
                    self.password_needed(&account, &conn, pending.phone, pending.phone_code_hash)
                        .await
                }
                Some("PHONE_CODE_INVALID" | "PHONE_CODE_EMPTY") => Err(LoginError::InvalidCode),
                Some("PHONE_CODE_EXPIRED" | "PHONE_CODE_HASH_EMPTY") => {
                    account.state_delete(LOGIN_KEY).await?;
                    Err(LoginError::CodeExpired)
                }
                _ => Err(e.into()),
            },
        }
    }

    /// Step 3 of a phone login with 2FA: the password, proven with SRP (it never leaves
    /// this process). A wrong password is [`LoginError::InvalidPassword`] and may be retried.
    pub async fn submit_password(
        &self,
        account: Arc<dyn Inbound>,
        password: &str,
    ) -> Result<LoginProgress, LoginError> {
        if Self::pending(&*account).await?.is_none_or(|p| p.step != LoginStep::Password) {
            return Err(LoginError::NoLoginInProgress);
        }
        let conn = self.connect(&account).await?;
        let tl::enums::account::Password::Password(info) =
            self.call(&conn, &tl::functions::account::GetPassword {}).await?;
        let (Some(algo), Some(srp_b), Some(srp_id)) = (info.current_algo, info.srp_b, info.srp_id)
        else {
            return Err(LoginError::Rejected(
                "Telegram asked for a password but the account has none".to_owned(),
            ));
        };
        let tl::enums::PasswordKdfAlgo::Sha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow(algo) =
            algo
        else {
            return Err(LoginError::Rejected("unknown 2FA password algorithm".to_owned()));
        };
        let password = password.to_owned();
        // PBKDF2 with 100 000 rounds and a primality check: off the async threads.
        let proof = tokio::task::spawn_blocking(move || {
            if !srp_parameters_are_safe(&algo.p, algo.g) {
                return None;
            }
            let a: Vec<u8> = (0..8).flat_map(|_| rand::random::<[u8; 32]>()).collect();
            Some(grammers_crypto::two_factor_auth::calculate_2fa(
                &algo.salt1,
                &algo.salt2,
                &algo.p,
                &algo.g,
                srp_b,
                a,
                password,
            ))
        })
        .await
        .map_err(|e| LoginError::Transient(e.to_string()))?;
        let Some((m1, g_a)) = proof else {
            return Err(LoginError::Rejected("Telegram sent unsafe 2FA parameters".to_owned()));
        };
        let request = tl::functions::auth::CheckPassword {
            password: tl::types::InputCheckPasswordSrp { srp_id, a: g_a.to_vec(), m1: m1.to_vec() }
                .into(),
        };
        match self.call(&conn, &request).await {
            Ok(authorization) => self.finish(&account, &conn, authorization).await,
            Err(e) if e.rpc_name() == Some("PASSWORD_HASH_INVALID") => {
                Err(LoginError::InvalidPassword)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A QR login (`auth.exportLoginToken`): the first call answers [`LoginProgress::QrCode`];
    /// call again until the code was scanned, which answers [`LoginProgress::LoggedIn`], or
    /// [`LoginProgress::PasswordNeeded`] for an account with 2FA (then
    /// [`TelegramLogin::submit_password`]). Each call is a new token request; Telegram answers
    /// the login once a token of this auth key was accepted.
    pub async fn qr_login(&self, account: Arc<dyn Inbound>) -> Result<LoginProgress, LoginError> {
        let conn = self.connect(&account).await?;
        let request = tl::functions::auth::ExportLoginToken {
            api_id: self.api_id,
            api_hash: self.api_hash.clone(),
            except_ids: Vec::new(),
        };
        let answer = match self.call(&conn, &request).await {
            Ok(a) => a,
            Err(e) if e.rpc_name() == Some("SESSION_PASSWORD_NEEDED") => {
                return self.password_needed(&account, &conn, String::new(), String::new()).await;
            }
            Err(e) => return Err(e.into()),
        };
        conn.session.save().await?;
        let answer = match answer {
            tl::enums::auth::LoginToken::MigrateTo(m) => {
                // The account lives on another DC: the token is imported there.
                conn.session
                    .set_home_dc_id(m.dc_id)
                    .await
                    .map_err(|e| LoginError::Transient(e.to_string()))?;
                let imported = self
                    .call(&conn, &tl::functions::auth::ImportLoginToken { token: m.token })
                    .await;
                match imported {
                    Ok(a) => a,
                    Err(e) if e.rpc_name() == Some("SESSION_PASSWORD_NEEDED") => {
                        return self
                            .password_needed(&account, &conn, String::new(), String::new())
                            .await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            other => other,
        };
        match answer {
            tl::enums::auth::LoginToken::Token(t) => Ok(LoginProgress::QrCode {
                url: format!("tg://login?token={}", base64url(&t.token)),
                expires_at: i64::from(t.expires),
            }),
            tl::enums::auth::LoginToken::Success(s) => {
                self.finish(&account, &conn, s.authorization).await
            }
            tl::enums::auth::LoginToken::MigrateTo(_) => {
                Err(LoginError::Transient("Telegram moved the QR login twice".to_owned()))
            }
        }
    }

    /// Stores a login waiting for its 2FA password and answers its hint.
    async fn password_needed(
        &self,
        account: &Arc<dyn Inbound>,
        conn: &Conn,
        phone: String,
        phone_code_hash: String,
    ) -> Result<LoginProgress, LoginError> {
        let hint = match self.call(conn, &tl::functions::account::GetPassword {}).await {
            Ok(tl::enums::account::Password::Password(p)) => p.hint,
            Err(_) => None,
        };
        Self::store_pending(
            &**account,
            &PendingLogin { phone, phone_code_hash, step: LoginStep::Password, hint: hint.clone() },
        )
        .await?;
        Ok(LoginProgress::PasswordNeeded { hint })
    }

    /// Logs a bot in with its token (from @BotFather).
    pub async fn login_bot(
        &self,
        account: Arc<dyn Inbound>,
        token: &str,
    ) -> Result<LoginProgress, LoginError> {
        if token.trim().is_empty() {
            return Err(LoginError::InvalidBotToken);
        }
        let conn = self.connect(&account).await?;
        let request = tl::functions::auth::ImportBotAuthorization {
            flags: 0,
            api_id: self.api_id,
            api_hash: self.api_hash.clone(),
            bot_auth_token: token.trim().to_owned(),
        };
        match self.call_migrating(&conn, &request).await {
            Ok(authorization) => self.finish(&account, &conn, authorization).await,
            Err(e)
                if matches!(
                    e.rpc_name(),
                    Some("ACCESS_TOKEN_INVALID" | "ACCESS_TOKEN_EXPIRED")
                ) =>
            {
                Err(LoginError::InvalidBotToken)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stores the authorized user with the session; a login as another user than before
    /// also drops the previous peer cache and update state.
    async fn finish(
        &self,
        account: &Arc<dyn Inbound>,
        conn: &Conn,
        authorization: tl::enums::auth::Authorization,
    ) -> Result<LoginProgress, LoginError> {
        let a = match authorization {
            tl::enums::auth::Authorization::Authorization(a) => a,
            tl::enums::auth::Authorization::SignUpRequired(_) => {
                account.state_delete(LOGIN_KEY).await?;
                return Err(LoginError::SignUpRequired);
            }
        };
        let tl::enums::User::User(user) = a.user else {
            return Err(LoginError::Rejected("Telegram authorized an empty user".to_owned()));
        };
        let previous = conn.session.me();
        conn.session.set_me(StoredSelf {
            id: user.id,
            access_hash: user.access_hash,
            bot: user.bot,
        });
        conn.session.save().await?;
        if previous.map(|p| p.id) != Some(user.id) {
            AccountSession::forget_account_data(account.as_ref()).await?;
        }
        // The update state at the login is where the account's updates begin: a message that
        // arrives between the login and the channel's first connection is then fetched by
        // its catch-up, not skipped by a state taken later.
        match self.call(conn, &tl::functions::updates::GetState {}).await {
            Ok(tl::enums::updates::State::State(s)) => {
                AccountSession::store_login_updates(account.as_ref(), s.pts, s.qts, s.date, s.seq)
                    .await?;
            }
            Err(e) => {
                tracing::warn!(error = %LoginError::from(e), "no update state at the login: the channel takes one when it connects");
            }
        }
        account.state_delete(LOGIN_KEY).await?;
        let display_name = match (user.first_name, user.last_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (f, None) => f,
            (None, l) => l,
        };
        Ok(LoginProgress::LoggedIn(LoggedIn {
            user_id: user.id,
            username: user.username,
            display_name,
            bot: user.bot,
        }))
    }

    /// Logs the session out at Telegram (`auth.logOut`) and wipes everything stored for it
    /// (session, auth key, peer cache, update state, a login in progress). Stop the account's
    /// channel first. The wipe happens even when Telegram cannot be reached.
    pub async fn sign_out(&self, account: Arc<dyn Inbound>) -> Result<SignedOut, LoginError> {
        let confirmed = match AccountSession::load(Arc::clone(&account)).await {
            Ok(_) => {
                let conn = self.connect(&account).await?;
                match self.call(&conn, &tl::functions::auth::LogOut {}).await {
                    Ok(_) => true,
                    Err(e) => {
                        let e = LoginError::from(e);
                        tracing::warn!(error = %e, "auth.logOut failed; wiping the session anyway");
                        false
                    }
                }
            }
            Err(SessionError::State(e)) => return Err(e.into()),
            Err(_) => false,
        };
        AccountSession::wipe(&*account).await?;
        account.state_delete(LOGIN_KEY).await?;
        Ok(SignedOut { confirmed_by_telegram: confirmed })
    }
}

/// Base64url without padding, as `tg://login?token=` wants it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Whether 2FA parameters are safe: Telegram's known prime with a valid generator, or
/// another 2048-bit safe prime that passes grammers' checks.
fn srp_parameters_are_safe(p: &[u8], g: i32) -> bool {
    if !(2..=7).contains(&g) || p.len() != 256 {
        return false;
    }
    if hex::encode(p) == TELEGRAM_SRP_PRIME {
        // p mod 3 = 2, so 3 generates the subgroup; Telegram uses g = 3.
        return g == 3;
    }
    grammers_crypto::two_factor_auth::check_p_and_g(p, &g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_prime_with_generator_3_is_accepted_and_junk_is_not() {
        let p = hex::decode(TELEGRAM_SRP_PRIME).unwrap();
        assert!(srp_parameters_are_safe(&p, 3));
        assert!(!srp_parameters_are_safe(&p, 9));
        assert!(!srp_parameters_are_safe(&p[1..], 3));
    }

    #[test]
    fn base64url_has_no_padding_and_the_url_alphabet() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn channel_errors_map_to_login_errors_that_say_what_to_do() {
        assert_eq!(
            LoginError::from(ChannelError::RateLimited { retry_after: Duration::from_secs(9) }),
            LoginError::FloodWait { retry_after: Duration::from_secs(9) }
        );
        assert!(matches!(LoginError::from(ChannelError::transient("x")), LoginError::Transient(_)));
    }
}
