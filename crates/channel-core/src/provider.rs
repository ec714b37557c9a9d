//! Providers: the plug-ins that own everything provider-specific.
//!
//! The core knows no provider by name. A [`Provider`] (the email crate's, the Telegram
//! crate's, the in-memory test provider, or a third party's) owns its [`ChannelKind`], the
//! channels of its accounts, what they can do, and the form of its idempotency key. A process
//! registers the providers it can run ([`EngineBuilder::provider`](crate::EngineBuilder::provider)
//! or [`RuntimeBuilder::provider`](crate::runtime::RuntimeBuilder::provider)); the runtime
//! connects only the accounts whose provider it has and leaves the others to the processes
//! that have theirs, so an account of an unknown kind never breaks listing or lease-taking.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use channel_core::provider::Provider;
//! use channel_core::{Account, Capabilities, Channel, ChannelError, ChannelKind, Engine, MessageId};
//!
//! /// A company's own SMS gateway, plugged in without any change to the core.
//! struct Sms;
//!
//! #[async_trait]
//! impl Provider for Sms {
//!     fn kind(&self) -> ChannelKind {
//!         ChannelKind::from_static("sms")
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::default()
//!     }
//!     fn client_key(&self, _account: &Account, message_id: MessageId) -> String {
//!         format!("sms-{}", message_id.as_uuid().simple())
//!     }
//!     async fn channel(&self, account: &Account, _engine: &Engine) -> Result<Arc<dyn Channel>, ChannelError> {
//!         Err(ChannelError::permanent(format!("account {}: no gateway configured", account.id)))
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::channel::{Capabilities, Channel, ChannelError};
use crate::engine::Engine;
use crate::model::{Account, ChannelKind, MessageId, Timestamp};

/// A kind of account the service can connect: email, Telegram, or a third party's.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Its kind, stored with its accounts.
    fn kind(&self) -> ChannelKind;

    /// What the channels of its accounts can do.
    fn capabilities(&self) -> Capabilities;

    /// Our idempotency key for a new send from `account`, in the form the provider
    /// deduplicates (an email Message-ID, a Telegram `random_id`). It must be unique per
    /// message and the same for the same `message_id`. The default is the message id.
    fn client_key(&self, account: &Account, message_id: MessageId) -> String {
        let _ = account;
        message_id.to_string()
    }

    /// Creates the channel of `account` when this process takes the account's lease. Its
    /// secrets and state are read through `engine.account_state(account.id)`.
    /// [`ChannelError::NeedsLogin`] and [`ChannelError::Permanent`] are recorded as the
    /// account's state and the account waits for
    /// [`Runtime::reconnect`](crate::runtime::Runtime::reconnect); other errors are retried
    /// with backoff.
    async fn channel(
        &self,
        account: &Account,
        engine: &Engine,
    ) -> Result<Arc<dyn Channel>, ChannelError>;

    /// Checks an account's configuration before it is saved; the error names the field.
    /// The default accepts any.
    fn check_config(&self, config: &serde_json::Value) -> Result<(), ConfigError> {
        let _ = config;
        Ok(())
    }

    /// The ways an account of this provider logs in (see [`Provider::login_step`]). The
    /// default has none: accounts need no login.
    fn login_flows(&self) -> Vec<LoginFlow> {
        Vec::new()
    }

    /// Runs one step of a login, as a step machine (the shape of mautrix bridgev2's
    /// `LoginProcess`): the first call of a flow has an empty `input` and answers what to ask
    /// or show; each later call carries what the person entered and answers the next step,
    /// until [`LoginStep::Done`]. A step that shows something ([`LoginStep::Display`], a QR
    /// code) is called again with an empty input to wait for it. Everything a later step
    /// needs is kept in the account state, so the steps may run in different requests and
    /// survive a restart of the process. Drive it through
    /// [`Runtime::login_step`](crate::runtime::Runtime::login_step), which runs it where the
    /// account's lease is held.
    async fn login_step(
        &self,
        account: &Account,
        engine: &Engine,
        flow: &str,
        input: LoginInput,
    ) -> Result<LoginStep, LoginError> {
        let _ = (account, engine, input);
        Err(LoginError::UnknownFlow { flow: flow.to_owned() })
    }
}

/// An account's configuration that its provider refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("account configuration: `{field}` {reason}")]
pub struct ConfigError {
    /// The field, such as `imap.port`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub reason: String,
}

impl ConfigError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// One way to log in (Telegram: `phone`, `qr`, `bot`; email: `password`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFlow {
    /// Its id, passed to [`Provider::login_step`].
    pub id: String,
    /// A short name for people.
    pub name: String,
    /// What it does.
    pub description: String,
}

/// What a login step asks of the person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginField {
    /// The key of its value in the next [`LoginInput`].
    pub id: String,
    /// What it is, so that a form can show the right input.
    pub kind: FieldKind,
    /// A label for people.
    pub label: String,
}

/// The kind of a [`LoginField`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FieldKind {
    /// A phone number in international form.
    Phone,
    /// A code sent by the provider.
    Code,
    /// A password (never shown, never logged).
    Password,
    /// A token (a bot token, an app password).
    Token,
    /// Any text.
    Text,
}

/// Where a login stands after a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoginStep {
    /// Ask the person for these fields and call again with them.
    Input {
        /// The step's name (`phone`, `code`, `password`).
        name: String,
        /// What to ask.
        fields: Vec<LoginField>,
        /// A hint for people (the 2FA password hint, where the code was sent).
        hint: Option<String>,
    },
    /// Show `data` (a QR code's URL) and call again with an empty input to wait for it; it
    /// may change on the next call (Telegram rotates its QR token).
    Display {
        /// The step's name (`qr`).
        name: String,
        /// What to show.
        data: String,
        /// When it stops being valid.
        expires_at: Option<Timestamp>,
    },
    /// Logged in: the account is ready to connect.
    Done {
        /// Who logged in, for people (a name, a phone number, an address).
        who: Option<String>,
    },
}

/// What the person entered at a step, by [`LoginField::id`]. Values are secrets: they are
/// never logged and never part of events.
#[derive(Default)]
pub struct LoginInput {
    values: BTreeMap<String, SecretString>,
}

impl fmt::Debug for LoginInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginInput").field("fields", &self.values.keys()).finish()
    }
}

impl LoginInput {
    /// No input: the first call of a flow, or waiting on a [`LoginStep::Display`].
    pub fn none() -> Self {
        Self::default()
    }

    /// With `field` set to `value`.
    pub fn with(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(field.into(), SecretString::from(value.into()));
        self
    }

    /// The value of `field`.
    pub fn get(&self, field: &str) -> Option<&SecretString> {
        self.values.get(field)
    }

    /// The fields that were entered (so that a provider can refuse one it does not know).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Whether nothing was entered.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Why a login step failed, and what to do next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The provider has no such flow.
    #[error("no login flow `{flow}`: use one of the provider's login flows")]
    UnknownFlow {
        /// The flow asked for.
        flow: String,
    },
    /// What was entered is wrong (a wrong code, a wrong password): ask again; the login goes
    /// on from the same step.
    #[error("{field}: {message}")]
    InvalidInput {
        /// The field.
        field: String,
        /// What is wrong, for people.
        message: String,
    },
    /// The provider asks to wait before trying again.
    #[error("the provider asks to wait {retry_after:?} before trying again")]
    FloodWait {
        /// How long.
        retry_after: Duration,
    },
    /// The login expired (a QR code that was not scanned in time, a code that timed out):
    /// start the flow again.
    #[error("the login expired: {0}; start again")]
    Expired(String),
    /// The login was not started, or this step is not the one the login waits for.
    #[error("no login step to continue: {0}")]
    NotStarted(String),
    /// The provider could not be reached: try the same step again later.
    #[error("the provider could not be reached: {0}; try again")]
    Unavailable(String),
    /// The account's lease is held by another process: run the step there.
    #[error("account {0} is connected by another worker process: run the login step there")]
    Elsewhere(crate::model::AccountId),
    /// Anything else, described for people.
    #[error("{0}")]
    Failed(String),
}

/// The providers a process has, by kind.
#[derive(Clone, Default)]
pub struct Providers {
    by_kind: BTreeMap<ChannelKind, Arc<dyn Provider>>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_kind.keys()).finish()
    }
}

impl Providers {
    /// No providers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `provider`, replacing one of the same kind.
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.by_kind.insert(provider.kind(), provider);
    }

    /// The provider of `kind`, if this process has it.
    pub fn get(&self, kind: &ChannelKind) -> Option<&Arc<dyn Provider>> {
        self.by_kind.get(kind)
    }

    /// The kinds this process can run.
    pub fn kinds(&self) -> impl Iterator<Item = &ChannelKind> {
        self.by_kind.keys()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }
}
