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
//!         Err(ChannelError::Permanent(format!("account {}: no gateway configured", account.id)))
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::channel::{Capabilities, Channel, ChannelError};
use crate::engine::Engine;
use crate::model::{Account, ChannelKind, MessageId};

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
