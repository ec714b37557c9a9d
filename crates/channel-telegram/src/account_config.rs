//! The configuration of a Telegram account as stored with it ([`Account::config`]): the app's
//! api_id, the data centres' addresses, timeouts and intervals. Nothing in it is secret: the
//! api_hash and the session (auth key) live in the encrypted account state (see
//! [`crate::provider`]).
//!
//! Durations are whole milliseconds in fields ending in `_ms`; every field may be left out
//! for its default.
//!
//! ```
//! use channel_telegram::TelegramAccountConfig;
//!
//! let json = serde_json::json!({
//!     "api_id": 12345,
//!     "data_centres": { "2": "149.154.167.51:443" },
//!     "ping_interval_ms": 20000
//! });
//! let config = TelegramAccountConfig::from_json(&json).unwrap();
//! assert_eq!(config.api_id, Some(12345));
//! assert_eq!(config.to_json(), json);
//!
//! let wrong = serde_json::json!({ "api_id": 12345, "data_centres": { "2": "dc2.example" } });
//! assert_eq!(TelegramAccountConfig::from_json(&wrong).unwrap_err().field, "data_centres.2");
//! ```
//!
//! [`Account::config`]: channel_core::Account::config

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::Duration;

use channel_core::provider::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::TelegramConfig;

/// How long a QR login waits to be scanned before it ends as expired (3 minutes).
pub const DEFAULT_QR_LOGIN_TIMEOUT: Duration = Duration::from_secs(180);

/// How long each request of a login step may take, connecting included (30 s).
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A Telegram account's configuration (see the [module](self)). Read it with
/// [`TelegramAccountConfig::from_json`], which names the field it refuses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramAccountConfig {
    /// The app's api_id (from <https://my.telegram.org>); without it, the provider's
    /// ([`TelegramProvider::api_credentials`](crate::TelegramProvider::api_credentials)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_id: Option<i32>,
    /// Addresses of data centres by id (`{"2": "149.154.167.51:443"}`), used over
    /// Telegram's own: a proxy, Telegram's test DCs, or the loopback server of the `testing`
    /// feature. IPv4 address and port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data_centres: BTreeMap<i32, SocketAddrV4>,
    /// The data centre a new login starts at (default 2, as Telegram's apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_dc: Option<i32>,
    /// Limit for resolving a peer (default 15 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_timeout_ms: Option<u64>,
    /// Limit for sending a text or fetching a history page (default 30 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout_ms: Option<u64>,
    /// Base limit for media (default 60 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_timeout_ms: Option<u64>,
    /// Media limit added per MiB (default 2 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_timeout_per_mib_ms: Option<u64>,
    /// Limit for connecting and the first answer of a connection (default 20 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// How often the connection is pinged (default 30 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_interval_ms: Option<u64>,
    /// How long a pong may take before the connection is rebuilt (default 10 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_deadline_ms: Option<u64>,
    /// How often the update state and peer cache are written when idle (default 30 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval_ms: Option<u64>,
    /// Shortest reconnect backoff (default 2 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_min_ms: Option<u64>,
    /// Longest reconnect backoff (default 80 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_max_ms: Option<u64>,
    /// Capacity of grammers' updates channel (default 10 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates_capacity: Option<usize>,
    /// The largest attachment a send accepts, in bytes (default 2000 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upload_size: Option<u64>,
    /// The largest received attachment that is downloaded, in bytes (default 100 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_download_size: Option<u64>,
    /// Limit for each request of a login step (default 30 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_timeout_ms: Option<u64>,
    /// How long a QR login waits to be scanned, from its first code (default 180 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_login_timeout_ms: Option<u64>,
}

/// The fields a configuration may have, for the error that names an unknown one.
const FIELDS: [&str; 18] = [
    "api_id",
    "data_centres",
    "home_dc",
    "resolve_timeout_ms",
    "send_timeout_ms",
    "media_timeout_ms",
    "media_timeout_per_mib_ms",
    "connect_timeout_ms",
    "ping_interval_ms",
    "ping_deadline_ms",
    "sync_interval_ms",
    "reconnect_min_ms",
    "reconnect_max_ms",
    "updates_capacity",
    "max_upload_size",
    "max_download_size",
    "login_timeout_ms",
    "qr_login_timeout_ms",
];

/// Telegram's production data centres, which need no address in the configuration.
const TELEGRAM_DCS: std::ops::RangeInclusive<i32> = 1..=5;

impl TelegramAccountConfig {
    /// A configuration for the app with this `api_id`, everything else by default.
    pub fn new(api_id: i32) -> Self {
        Self { api_id: Some(api_id), ..Self::default() }
    }

    /// With data centre `id` reached at `address`.
    pub fn data_centre(mut self, id: i32, address: SocketAddrV4) -> Self {
        self.data_centres.insert(id, address);
        self
    }

    /// Reads and checks a stored configuration (`null` is the empty one). The error names
    /// the field (`data_centres.2`, `ping_interval_ms`) and what to write instead.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let object = match value {
            Value::Null => return Self::default().checked(),
            Value::Object(o) => o,
            _ => {
                return Err(ConfigError::new(
                    "config",
                    "must be a JSON object, such as {\"api_id\": 12345}",
                ));
            }
        };
        for (key, v) in object {
            if !FIELDS.contains(&key.as_str()) {
                return Err(ConfigError::new(
                    key.as_str(),
                    format!(
                        "is not a Telegram account setting; the settings are {}",
                        FIELDS.join(", ")
                    ),
                ));
            }
            if key == "data_centres" {
                check_data_centres(v)?;
            }
            let single = Value::Object([(key.clone(), v.clone())].into_iter().collect());
            if let Err(e) = serde_json::from_value::<Self>(single) {
                return Err(ConfigError::new(key.as_str(), format!("is not valid: {e}")));
            }
        }
        serde_json::from_value::<Self>(value.clone())
            .map_err(|e| ConfigError::new("config", format!("is not valid: {e}")))?
            .checked()
    }

    /// The configuration as stored with the account.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Checks the values' ranges.
    fn checked(self) -> Result<Self, ConfigError> {
        if let Some(id) = self.api_id.filter(|id| *id <= 0) {
            return Err(ConfigError::new(
                "api_id",
                format!(
                    "is {id}: use the positive api_id of your app from https://my.telegram.org"
                ),
            ));
        }
        for (&id, address) in &self.data_centres {
            let field = format!("data_centres.{id}");
            if id <= 0 {
                return Err(ConfigError::new(field, "is not a data centre id: use 1 or more"));
            }
            if address.ip().is_unspecified() || address.port() == 0 {
                return Err(ConfigError::new(
                    field,
                    "needs a reachable address and port, such as 149.154.167.51:443",
                ));
            }
        }
        if let Some(home) = self.home_dc
            && !TELEGRAM_DCS.contains(&home)
            && !self.data_centres.contains_key(&home)
        {
            return Err(ConfigError::new(
                "home_dc",
                format!(
                    "is {home}: use one of Telegram's data centres 1 to 5, or give its address in data_centres"
                ),
            ));
        }
        let durations = [
            ("resolve_timeout_ms", self.resolve_timeout_ms),
            ("send_timeout_ms", self.send_timeout_ms),
            ("media_timeout_ms", self.media_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("ping_interval_ms", self.ping_interval_ms),
            ("ping_deadline_ms", self.ping_deadline_ms),
            ("sync_interval_ms", self.sync_interval_ms),
            ("reconnect_min_ms", self.reconnect_min_ms),
            ("reconnect_max_ms", self.reconnect_max_ms),
            ("login_timeout_ms", self.login_timeout_ms),
            ("qr_login_timeout_ms", self.qr_login_timeout_ms),
        ];
        for (field, ms) in durations {
            if ms == Some(0) {
                return Err(ConfigError::new(
                    field,
                    "is 0: use a duration in milliseconds above 0",
                ));
            }
        }
        if let (Some(min), Some(max)) = (self.reconnect_min_ms, self.reconnect_max_ms)
            && max < min
        {
            return Err(ConfigError::new(
                "reconnect_max_ms",
                format!("is {max}, below reconnect_min_ms ({min}): use at least {min}"),
            ));
        }
        if self.updates_capacity == Some(0) {
            return Err(ConfigError::new(
                "updates_capacity",
                "is 0: use 1 or more (default 10000)",
            ));
        }
        Ok(self)
    }

    /// The channel's settings from this configuration, with `api_id` when it has none.
    pub fn channel_config(&self, api_id: i32) -> TelegramConfig {
        let ms = Duration::from_millis;
        let mut c = TelegramConfig::new(self.api_id.unwrap_or(api_id));
        if let Some(v) = self.resolve_timeout_ms {
            c = c.resolve_timeout(ms(v));
        }
        if let Some(v) = self.send_timeout_ms {
            c = c.send_timeout(ms(v));
        }
        let base = self.media_timeout_ms.map_or(c.media_timeout, ms);
        let per_mib = self.media_timeout_per_mib_ms.map_or(c.media_timeout_per_mib, ms);
        c = c.media_timeout(base, per_mib);
        if let Some(v) = self.connect_timeout_ms {
            c = c.connect_timeout(ms(v));
        }
        if let Some(v) = self.ping_interval_ms {
            c = c.ping_interval(ms(v));
        }
        if let Some(v) = self.ping_deadline_ms {
            c = c.ping_deadline(ms(v));
        }
        if let Some(v) = self.sync_interval_ms {
            c = c.sync_interval(ms(v));
        }
        let min = self.reconnect_min_ms.map_or(c.reconnect_min, ms);
        let max = self.reconnect_max_ms.map_or(c.reconnect_max, ms);
        c = c.reconnect_backoff(min, max);
        if let Some(v) = self.updates_capacity {
            c = c.updates_capacity(v);
        }
        if let Some(v) = self.max_upload_size {
            c = c.max_upload_size(v);
        }
        if let Some(v) = self.max_download_size {
            c = c.max_download_size(v);
        }
        for (&id, &address) in &self.data_centres {
            c = c.data_centre(id, address);
        }
        if let Some(home) = self.home_dc {
            c = c.home_dc(home);
        }
        c
    }

    /// The limit for each request of a login step.
    pub fn login_timeout(&self) -> Duration {
        self.login_timeout_ms.map_or(DEFAULT_LOGIN_TIMEOUT, Duration::from_millis)
    }

    /// How long a QR login waits to be scanned.
    pub fn qr_login_timeout(&self) -> Duration {
        self.qr_login_timeout_ms.map_or(DEFAULT_QR_LOGIN_TIMEOUT, Duration::from_millis)
    }
}

/// Names the entry of `data_centres` that is wrong.
fn check_data_centres(value: &Value) -> Result<(), ConfigError> {
    let Some(map) = value.as_object() else {
        return Err(ConfigError::new(
            "data_centres",
            "must be an object of addresses by data centre id, such as {\"2\": \"149.154.167.51:443\"}",
        ));
    };
    for (id, address) in map {
        let field = format!("data_centres.{id}");
        if id.parse::<i32>().is_err() {
            return Err(ConfigError::new(field, "is not a data centre id: use a number such as 2"));
        }
        if address.as_str().and_then(|a| a.parse::<SocketAddrV4>().ok()).is_none() {
            return Err(ConfigError::new(
                field,
                format!(
                    "is {address}: use an IPv4 address and port, such as \"149.154.167.51:443\""
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(value: Value) -> String {
        TelegramAccountConfig::from_json(&value).unwrap_err().field
    }

    #[test]
    fn each_wrong_field_is_named() {
        assert_eq!(field_of(json!({"api_id": "twelve"})), "api_id");
        assert_eq!(field_of(json!({"api_id": -4})), "api_id");
        assert_eq!(field_of(json!({"api_hash": "0123"})), "api_hash");
        assert_eq!(field_of(json!({"data_centres": {"x": "1.2.3.4:443"}})), "data_centres.x");
        assert_eq!(field_of(json!({"data_centres": {"2": "1.2.3.4"}})), "data_centres.2");
        assert_eq!(field_of(json!({"data_centres": {"2": "0.0.0.0:443"}})), "data_centres.2");
        assert_eq!(field_of(json!({"data_centres": [1]})), "data_centres");
        assert_eq!(field_of(json!({"home_dc": 7})), "home_dc");
        assert_eq!(field_of(json!({"ping_interval_ms": 0})), "ping_interval_ms");
        assert_eq!(field_of(json!({"send_timeout_ms": -1})), "send_timeout_ms");
        assert_eq!(
            field_of(json!({"reconnect_min_ms": 500, "reconnect_max_ms": 100})),
            "reconnect_max_ms"
        );
        assert_eq!(field_of(json!("api_id=1")), "config");
    }

    #[test]
    fn a_configuration_round_trips_and_sets_the_channel() {
        let json = json!({
            "api_id": 7,
            "data_centres": {"2": "127.0.0.1:4430", "10": "127.0.0.1:4431"},
            "home_dc": 10,
            "send_timeout_ms": 1500,
            "reconnect_min_ms": 50,
            "reconnect_max_ms": 500
        });
        let config = TelegramAccountConfig::from_json(&json).unwrap();
        assert_eq!(config.to_json(), json);
        let channel = config.channel_config(1);
        assert_eq!(channel.api_id(), 7);
        assert_eq!(channel.send_timeout, Duration::from_millis(1500));
        assert_eq!(channel.reconnect_max, Duration::from_millis(500));
        assert_eq!(channel.home_dc, Some(10));
        assert_eq!(channel.data_centres().len(), 2);
        assert_eq!(TelegramAccountConfig::from_json(&Value::Null).unwrap().api_id, None);
        assert_eq!(TelegramAccountConfig::default().channel_config(9).api_id(), 9);
    }
}
