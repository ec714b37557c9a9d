//! Conversations and their lifecycle states.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AccountId, ContactId, ConversationId, IdentityId, Timestamp, UnknownValue};

/// Where a conversation is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConversationStatus {
    /// Active.
    Open,
    /// No activity for the account's idle period; a new message makes it open again.
    Idle,
    /// Closed (by the sweep or by the service); a new message starts the next conversation or
    /// reopens it, as the lifecycle policy says.
    Closed,
    /// Past its expiry; like closed.
    Expired,
}

impl ConversationStatus {
    /// `open`, `idle`, `closed` or `expired`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConversationStatus::Open => "open",
            ConversationStatus::Idle => "idle",
            ConversationStatus::Closed => "closed",
            ConversationStatus::Expired => "expired",
        }
    }

    /// Open and idle conversations are active: at most one per thread at a time.
    pub fn is_active(&self) -> bool {
        matches!(self, ConversationStatus::Open | ConversationStatus::Idle)
    }
}

impl fmt::Display for ConversationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConversationStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "idle" => Ok(Self::Idle),
            "closed" => Ok(Self::Closed),
            "expired" => Ok(Self::Expired),
            other => Err(UnknownValue { what: "conversation status", value: other.to_owned() }),
        }
    }
}

/// A conversation: the messages of one thread (a Telegram chat, an email thread) over one
/// stretch of time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// The account.
    pub account_id: AccountId,
    /// The provider's thread key: a Telegram chat id, an email thread root.
    pub thread_key: String,
    /// The identity of the remote party who started it.
    pub primary_identity: IdentityId,
    /// The contact of the primary identity when the conversation was opened or linked.
    pub contact_id: Option<ContactId>,
    /// The lifecycle status.
    pub status: ConversationStatus,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// The last message in or out.
    pub last_activity_at: Timestamp,
    /// When it expires, if the policy sets an expiry.
    pub expires_at: Option<Timestamp>,
    /// When it was closed or expired.
    pub closed_at: Option<Timestamp>,
    /// Bumped on every change, for compare-and-set.
    pub version: i64,
    /// The operator the conversation is assigned to (the service's own id of the person), if
    /// any: claimed, released and transferred with
    /// [`Engine::assign`](crate::Engine::assign), never two at once.
    #[serde(default)]
    pub assignee: Option<String>,
}

/// What a new message does to a thread whose latest conversation is closed or expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnClosed {
    /// Start the next conversation (the default: closed means done).
    #[default]
    StartNew,
    /// Reopen the closed conversation (expired ones still start a new one).
    Reopen,
}

/// Per-account lifecycle policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LifecyclePolicy {
    /// An open conversation without activity for this long becomes idle.
    pub idle_after: Option<Duration>,
    /// An active conversation without activity for this long is closed.
    pub close_after: Option<Duration>,
    /// A conversation this old (from its opening) expires, active or not.
    pub expire_after: Option<Duration>,
    /// What a new message does when the thread's latest conversation is over.
    pub on_closed: OnClosed,
}
