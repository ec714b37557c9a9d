//! Identities: one per channel address per account, optionally linked to a contact.

use serde::{Deserialize, Serialize};

use super::{AccountId, ContactId, IdentityId, Timestamp};

/// One channel address (a Telegram user id, an email address) within one account.
///
/// An identity without a contact is *unlinked*: a normal state. The service links it to one of
/// its contacts when it knows who the person is, and can merge two identities of one person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its id.
    pub id: IdentityId,
    /// The account it was seen on.
    pub account_id: AccountId,
    /// The normalized address: `tg:123456` for Telegram, a lower-cased address for email.
    pub address: String,
    /// The name the provider shows, if any.
    pub display_name: Option<String>,
    /// A Telegram username, if any.
    pub username: Option<String>,
    /// The linked contact; `None` means unlinked.
    pub contact_id: Option<ContactId>,
    /// Set when this identity was merged into another one; lookups then follow it.
    pub merged_into: Option<IdentityId>,
    /// When it was first seen.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Identity {
    /// Whether no contact is linked.
    pub fn is_unlinked(&self) -> bool {
        self.contact_id.is_none()
    }
}

/// The sender or recipient of a message as a channel reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    /// The normalized address (see [`Identity::address`]).
    pub address: String,
    /// The display name, if the provider gave one.
    pub display_name: Option<String>,
    /// The username, if any.
    pub username: Option<String>,
}

impl IdentityInfo {
    /// An address with no names.
    pub fn new(address: impl Into<String>) -> Self {
        Self { address: address.into(), display_name: None, username: None }
    }

    /// Sets the display name.
    pub fn with_display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Sets the username.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }
}
