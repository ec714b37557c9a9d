//! Accounts and their connection state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{AccountId, Timestamp};

/// The kind of provider an account connects to: an open name that a [`Provider`] owns, such
/// as `"email"`, `"telegram"` or a third party's `"sms"`.
///
/// The core knows no kind by name. A kind is 1 to 32 bytes of lower-case ASCII letters,
/// digits, `-` and `_` ([`ChannelKind::parse`] checks it); a kind read back from a store is
/// taken as it is, so that an account of a provider this version does not know still lists
/// and is left to the processes that have it.
///
/// ```
/// use channel_core::ChannelKind;
///
/// const SMS: ChannelKind = ChannelKind::from_static("sms");
/// assert_eq!(SMS.as_str(), "sms");
/// assert_eq!(ChannelKind::parse("sms").unwrap(), SMS);
/// assert!(ChannelKind::parse("Not A Kind").is_err());
/// ```
///
/// [`Provider`]: crate::provider::Provider
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelKind(std::borrow::Cow<'static, str>);

/// Why a name is not a valid [`ChannelKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a provider kind: use 1 to 32 lower-case ASCII letters, digits, `-` or `_` (such as `email`)"
)]
pub struct InvalidKind(pub String);

const fn valid_kind(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 32 {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

impl ChannelKind {
    /// A kind from a constant name; an invalid name fails to compile when used in a `const`.
    pub const fn from_static(name: &'static str) -> Self {
        assert!(valid_kind(name), "a provider kind is 1 to 32 of a-z, 0-9, `-`, `_`");
        Self(std::borrow::Cow::Borrowed(name))
    }

    /// A kind from a name given at run time, checked.
    pub fn parse(name: &str) -> Result<Self, InvalidKind> {
        if valid_kind(name) {
            Ok(Self(std::borrow::Cow::Owned(name.to_owned())))
        } else {
            Err(InvalidKind(name.to_owned()))
        }
    }

    /// A kind as a store holds it, taken as it is (see the type's documentation).
    pub fn stored(name: String) -> Self {
        Self(std::borrow::Cow::Owned(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = InvalidKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A stored enum value that this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` in the store: was it written by a newer version?")]
pub struct UnknownValue {
    /// Which enum was being read.
    pub what: &'static str,
    /// The value found.
    pub value: String,
}

/// What the user of an account has to do to get it working again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UserAction {
    /// Nothing: it works, or it recovers by itself.
    None,
    /// Log in again (new code, password or token).
    LogIn,
    /// Fix the account's configuration (server, credentials) and re-enable it.
    FixConfiguration,
}

/// The connection state of an account, as reported by its channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not started yet, or (re)connecting.
    Connecting,
    /// Connected and receiving.
    Connected,
    /// Lost the connection; reconnecting with backoff by itself.
    TransientDisconnect {
        /// Why, for operators (no secrets, no content).
        reason: String,
    },
    /// The provider rejected the credentials or the session: log in again.
    NeedsLogin {
        /// Why, for operators.
        reason: String,
    },
    /// The account was signed out; its session is wiped.
    LoggedOut,
    /// Gave up: a permanent error that needs a changed configuration.
    Failed {
        /// Why, for operators.
        reason: String,
    },
}

impl ConnectionState {
    /// What the user must do about this state.
    pub fn action(&self) -> UserAction {
        match self {
            ConnectionState::Connecting
            | ConnectionState::Connected
            | ConnectionState::TransientDisconnect { .. } => UserAction::None,
            ConnectionState::NeedsLogin { .. } | ConnectionState::LoggedOut => UserAction::LogIn,
            ConnectionState::Failed { .. } => UserAction::FixConfiguration,
        }
    }

    /// A short stable name: `connecting`, `connected`, `transient_disconnect`, `needs_login`,
    /// `logged_out` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::TransientDisconnect { .. } => "transient_disconnect",
            ConnectionState::NeedsLogin { .. } => "needs_login",
            ConnectionState::LoggedOut => "logged_out",
            ConnectionState::Failed { .. } => "failed",
        }
    }
}

/// An account: one Telegram login or one mailbox that the service talks through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// The provider.
    pub kind: ChannelKind,
    /// A name for people (a phone number, an address).
    pub display_name: String,
    /// The provider's configuration of the account (servers, folders, intervals), as its
    /// provider (de)serializes it; never secrets, which live in the encrypted account state.
    /// `null` when the provider needs none.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Disabled accounts are not connected.
    pub enabled: bool,
    /// The last reported connection state.
    pub connection: ConnectionState,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Its settings (lifecycle policy, send rates), the same for every worker.
    #[serde(default)]
    pub settings: super::AccountSettings,
}

/// What is needed to create an [`Account`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    /// The id to give it (usually [`AccountId::new`]).
    pub id: AccountId,
    /// The provider.
    pub kind: ChannelKind,
    /// A name for people.
    pub display_name: String,
    /// The provider's configuration (see [`Account::config`]).
    pub config: serde_json::Value,
    /// Whether it starts enabled.
    pub enabled: bool,
    /// Its settings.
    pub settings: super::AccountSettings,
}

impl NewAccount {
    /// An enabled account with a fresh id and no configuration.
    pub fn new(kind: ChannelKind, display_name: impl Into<String>) -> Self {
        Self {
            id: AccountId::new(),
            kind,
            display_name: display_name.into(),
            config: serde_json::Value::Null,
            enabled: true,
            settings: super::AccountSettings::default(),
        }
    }

    /// With settings.
    pub fn with_settings(mut self, settings: super::AccountSettings) -> Self {
        self.settings = settings;
        self
    }

    /// With the provider's configuration.
    pub fn with_config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason() -> String {
        "why".to_owned()
    }

    #[test]
    fn every_connection_state_names_the_action_the_user_must_take() {
        let cases = [
            (ConnectionState::Connecting, UserAction::None, "connecting"),
            (ConnectionState::Connected, UserAction::None, "connected"),
            (
                ConnectionState::TransientDisconnect { reason: reason() },
                UserAction::None,
                "transient_disconnect",
            ),
            (ConnectionState::NeedsLogin { reason: reason() }, UserAction::LogIn, "needs_login"),
            (ConnectionState::LoggedOut, UserAction::LogIn, "logged_out"),
            (ConnectionState::Failed { reason: reason() }, UserAction::FixConfiguration, "failed"),
        ];
        for (state, action, name) in cases {
            assert_eq!(state.action(), action, "{state:?}");
            assert_eq!(state.name(), name);
        }
    }
}
