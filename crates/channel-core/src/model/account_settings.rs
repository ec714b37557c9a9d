//! Per-account settings kept in the database, so that every worker process applies the same.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LifecyclePolicy;

/// An account's settings, stored with it ([`Account::settings`](super::Account::settings)).
/// Every field left `None` takes the engine's default.
///
/// ```
/// use std::time::Duration;
/// use channel_core::{AccountSettings, Rate, SendRates};
///
/// let settings = AccountSettings::default().with_send_rates(SendRates {
///     per_account: Rate::per_minute(10).burst(2),
///     per_chat: Rate::every(Duration::from_secs(5)),
/// });
/// let json = serde_json::to_string(&settings).unwrap();
/// assert_eq!(serde_json::from_str::<AccountSettings>(&json).unwrap(), settings);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AccountSettings {
    /// The conversation lifecycle (idle, close, expire, what a new message does after a
    /// close); `None`: [`EngineConfig::default_lifecycle`](crate::EngineConfig::default_lifecycle).
    pub lifecycle: Option<LifecyclePolicy>,
    /// How fast the account may send; `None`: the send policy's defaults.
    pub send_rates: Option<SendRates>,
}

impl AccountSettings {
    /// With a lifecycle policy.
    pub fn with_lifecycle(mut self, policy: LifecyclePolicy) -> Self {
        self.lifecycle = Some(policy);
        self
    }

    /// With send rates.
    pub fn with_send_rates(mut self, rates: SendRates) -> Self {
        self.send_rates = Some(rates);
        self
    }
}

/// The send rates of an account: one for the whole account, one for each chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRates {
    /// All the account's sends.
    pub per_account: Rate,
    /// The sends to one chat (thread).
    pub per_chat: Rate,
}

/// A rate: one message per `every`, with bursts of up to `burst` at once (GCRA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// The time one message's slot takes to free up (at least 1 ms).
    #[serde(with = "millis")]
    pub every: Duration,
    /// How many may go at once (at least 1).
    pub burst: u32,
}

impl Rate {
    /// One message per `every`, no burst.
    pub fn every(every: Duration) -> Self {
        Self { every, burst: 1 }
    }

    /// `n` messages per minute (at least 1), no burst.
    pub fn per_minute(n: u32) -> Self {
        Self::every(Duration::from_secs(60) / n.max(1))
    }

    /// With bursts of up to `n` (at least 1).
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = n;
        self
    }

    /// `every` and `burst` at their smallest allowed values or above.
    pub(crate) fn clamped(self) -> Self {
        Self { every: self.every.max(Duration::from_millis(1)), burst: self.burst.max(1) }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A change to an account ([`Runtime::update_account`](crate::runtime::Runtime::update_account)):
/// each field given replaces the stored one.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct AccountUpdate {
    /// A new name for people.
    pub display_name: Option<String>,
    /// A new provider configuration (checked by the provider; the account's channel is
    /// restarted with it, in whichever process runs it).
    pub config: Option<serde_json::Value>,
    /// New settings.
    pub settings: Option<AccountSettings>,
}

impl AccountUpdate {
    /// Renames the account.
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Replaces the provider configuration.
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.config = Some(config);
        self
    }

    /// Replaces the settings.
    pub fn settings(mut self, settings: AccountSettings) -> Self {
        self.settings = Some(settings);
        self
    }
}
