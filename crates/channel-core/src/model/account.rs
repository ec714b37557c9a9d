//! Accounts and their connection state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{AccountId, Timestamp};

/// The kind of provider an account connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChannelKind {
    /// A Telegram user or bot account.
    Telegram,
    /// An IMAP/SMTP mailbox.
    Email,
    /// The scriptable in-memory channel used in tests.
    Memory,
}

impl ChannelKind {
    /// The stored name: `telegram`, `email` or `memory`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Telegram => "telegram",
            ChannelKind::Email => "email",
            ChannelKind::Memory => "memory",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

impl FromStr for ChannelKind {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "telegram" => Ok(ChannelKind::Telegram),
            "email" => Ok(ChannelKind::Email),
            "memory" => Ok(ChannelKind::Memory),
            other => Err(UnknownValue { what: "channel kind", value: other.to_owned() }),
        }
    }
}

/// What the user of an account has to do to get it working again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// Disabled accounts are not connected.
    pub enabled: bool,
    /// The last reported connection state.
    pub connection: ConnectionState,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
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
    /// Whether it starts enabled.
    pub enabled: bool,
}

impl NewAccount {
    /// An enabled account with a fresh id.
    pub fn new(kind: ChannelKind, display_name: impl Into<String>) -> Self {
        Self { id: AccountId::new(), kind, display_name: display_name.into(), enabled: true }
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
