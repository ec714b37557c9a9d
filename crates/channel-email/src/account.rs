//! The stored configuration of an email account ([`EmailAccountConfig`]): what
//! `Account::config` holds for the kind `email`. It has no secret: the password lives only in
//! the account's encrypted state under [`PASSWORD_KEY`], put there by the login flow
//! `password`.
//!
//! A minimal configuration names the address and the two servers; everything else has a
//! default (TLS, ports 993 and 465, the address as login name, INBOX, the Sent folder
//! watched, the timeouts of [`Timeouts::default`]):
//!
//! ```
//! use channel_email::{EmailAccountConfig, Security};
//!
//! let config = EmailAccountConfig::from_json(&serde_json::json!({
//!     "address": "support@example.org",
//!     "imap": { "host": "imap.example.org" },
//!     "smtp": { "host": "smtp.example.org", "security": "starttls" },
//!     "timeouts": { "connect": "20s" },
//! }))
//! .unwrap();
//! assert_eq!(config.imap.port(), 993);
//! assert_eq!(config.smtp.port(), 587);
//! assert_eq!(config.smtp.security, Security::StartTls);
//! assert_eq!(config.login(), "support@example.org");
//!
//! // Errors name the field.
//! let refused = EmailAccountConfig::from_json(&serde_json::json!({
//!     "address": "support@example.org",
//!     "imap": { "host": "imap.example.org", "port": 70000 },
//!     "smtp": { "host": "smtp.example.org" },
//! }));
//! assert_eq!(refused.unwrap_err().field, "imap.port");
//! ```

use std::time::Duration;

use channel_core::provider::ConfigError;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use channel_core::Backoff;

use crate::config::{EmailConfig, Security, ServerConfig, StartFrom, Timeouts, check_limits};
use crate::duration;

/// The key of the account's password in its encrypted account state
/// ([`Engine::account_state`](channel_core::Engine::account_state)). Only the login flow
/// writes it, only after the servers accepted it.
pub const PASSWORD_KEY: &str = "email/password";

/// The configuration of an email account, as stored in `Account::config` (JSON). No secret
/// is part of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailAccountConfig {
    /// The account's own address (required).
    pub address: String,
    /// The name shown in `From`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The login name on both servers (default: the address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// The IMAP server (its `host` is required).
    pub imap: ImapSettings,
    /// The SMTP server (its `host` is required).
    pub smtp: SmtpSettings,
    /// Which folders are read and written.
    pub folders: Folders,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Reconnect backoff: `{"min": "2s", "max": "80s"}` by default.
    #[serde(with = "crate::config::backoff_section")]
    pub backoff: Backoff,
    /// Messages per FETCH, 1 to 500 (default 100).
    pub batch_size: usize,
    /// Where folders without a cursor start: `"beginning"` (default) or `"now"`.
    pub start_from: StartFrom,
    /// How far apart two messages without References may be and still join one thread by
    /// subject and participant (default `"7d"`; `"0s"` switches it off).
    #[serde(with = "duration")]
    pub thread_window: Duration,
    /// SMTP connections kept open (default 4).
    pub smtp_pool_size: u32,
}

/// Where the IMAP server is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapSettings {
    /// Host name (also the TLS server name).
    pub host: String,
    /// TCP port (default: 993 with `tls`, 143 otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `"tls"` (default), `"starttls"` or `"plaintext"` (loopback only).
    pub security: Security,
}

impl ImapSettings {
    /// The port, or the usual one for the security.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Tls => 993,
            Security::StartTls | Security::Plaintext => 143,
        })
    }
}

/// Where the SMTP server is and whether it wants a login.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    /// Host name (also the TLS server name).
    pub host: String,
    /// TCP port (default: 465 with `tls`, 587 with `starttls`, 25 with `plaintext`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `"tls"` (default), `"starttls"` or `"plaintext"` (loopback, or a relay without login).
    pub security: Security,
    /// `"password"` (default: the account's login and password) or `"none"` (a relay that
    /// takes mail without a login).
    pub auth: SmtpAuth,
}

impl SmtpSettings {
    /// The port, or the usual one for the security.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Tls => 465,
            Security::StartTls => 587,
            Security::Plaintext => 25,
        })
    }
}

/// How the account logs in to its SMTP server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpAuth {
    /// With the account's login name and password.
    #[default]
    Password,
    /// Not at all (a relay that accepts the account's mail without a login).
    None,
}

/// Which folders the channel reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Folders {
    /// The folder of incoming mail (default `INBOX`).
    pub inbox: String,
    /// Whether the Sent folder (found by its `\Sent` attribute or usual name) is watched for
    /// mail the owner sent from other clients (default true).
    pub watch_sent: bool,
    /// Whether a copy of each sent message is appended to the Sent folder (default false:
    /// most providers file it themselves).
    pub append_sent: bool,
}

impl Default for Folders {
    fn default() -> Self {
        Self { inbox: "INBOX".to_owned(), watch_sent: true, append_sent: false }
    }
}

impl Default for EmailAccountConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            display_name: None,
            login: None,
            imap: ImapSettings::default(),
            smtp: SmtpSettings::default(),
            folders: Folders::default(),
            timeouts: Timeouts::default(),
            backoff: crate::config::DEFAULT_BACKOFF,
            batch_size: 100,
            start_from: StartFrom::default(),
            thread_window: Duration::from_secs(7 * 24 * 3600),
            smtp_pool_size: 4,
        }
    }
}

impl EmailAccountConfig {
    /// A configuration with the defaults for `address` on these servers (TLS on both).
    pub fn new(
        address: impl Into<String>,
        imap_host: impl Into<String>,
        smtp_host: impl Into<String>,
    ) -> Self {
        Self {
            address: address.into(),
            imap: ImapSettings { host: imap_host.into(), ..ImapSettings::default() },
            smtp: SmtpSettings { host: smtp_host.into(), ..SmtpSettings::default() },
            ..Self::default()
        }
    }

    /// Reads and checks a stored configuration; the error names the field (`imap.port`,
    /// `timeouts.connect`) and says what to write instead.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let config: Self =
            serde_json::from_value(value.clone()).map_err(|e| locate_error(value, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as JSON, for `NewAccount::with_config`.
    pub fn to_json(&self) -> Value {
        // Every field is a string, a number, a bool or an object of them: this cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The login name on both servers: [`EmailAccountConfig::login`] or the address.
    pub fn login(&self) -> &str {
        self.login.as_deref().unwrap_or(self.address.trim())
    }

    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let address = self.address.trim();
        if address.is_empty() {
            return Err(ConfigError::new(
                "address",
                "is missing: write the account's email address, such as \"me@example.org\"",
            ));
        }
        if address.parse::<lettre::Address>().is_err() {
            return Err(ConfigError::new(
                "address",
                format!(
                    "`{address}` is not an email address: write one such as \"me@example.org\""
                ),
            ));
        }
        if self.display_name.as_deref().is_some_and(has_control) {
            return Err(ConfigError::new("display_name", "must be one line of text"));
        }
        if let Some(login) = &self.login
            && (login.trim().is_empty() || has_control(login))
        {
            return Err(ConfigError::new(
                "login",
                "must be the login name on the servers; leave it out to log in with the address",
            ));
        }
        let password_in_clear =
            |security: Security, host: &str| security == Security::Plaintext && !is_loopback(host);
        check_host("imap", &self.imap.host, self.imap.security)?;
        check_port("imap.port", self.imap.port)?;
        if password_in_clear(self.imap.security, &self.imap.host) {
            return Err(ConfigError::new(
                "imap.security",
                "`plaintext` would send the password in clear text to a server that is not on \
                 this machine: write \"tls\" (port 993) or \"starttls\" (port 143)",
            ));
        }
        check_host("smtp", &self.smtp.host, self.smtp.security)?;
        check_port("smtp.port", self.smtp.port)?;
        if self.smtp.auth == SmtpAuth::Password
            && password_in_clear(self.smtp.security, &self.smtp.host)
        {
            return Err(ConfigError::new(
                "smtp.security",
                "`plaintext` would send the password in clear text to a server that is not on \
                 this machine: write \"tls\" (port 465) or \"starttls\" (port 587), or \
                 \"auth\": \"none\" for a relay that needs no login",
            ));
        }
        let inbox = &self.folders.inbox;
        if inbox.trim().is_empty() || inbox.contains(['\r', '\n', '\0']) {
            return Err(ConfigError::new(
                "folders.inbox",
                "must name the folder of incoming mail, such as \"INBOX\"",
            ));
        }
        check_limits(&self.timeouts, &self.backoff, self.batch_size, self.smtp_pool_size)?;
        Ok(())
    }

    /// The channel's configuration with `password` (from the account state).
    pub fn to_email_config(&self, password: &SecretString) -> EmailConfig {
        let login = self.login().to_owned();
        let imap = ServerConfig::new(self.imap.host.trim(), self.imap.port(), self.imap.security)
            .credentials(login.clone(), password.expose_secret());
        let mut smtp =
            ServerConfig::new(self.smtp.host.trim(), self.smtp.port(), self.smtp.security);
        if self.smtp.auth == SmtpAuth::Password {
            smtp = smtp.credentials(login, password.expose_secret());
        }
        let mut config = EmailConfig::new(self.address.trim(), imap, smtp)
            .inbox(self.folders.inbox.clone())
            .smtp_pool_size(self.smtp_pool_size)
            .timeouts(self.timeouts)
            .backoff(self.backoff)
            .watch_sent(self.folders.watch_sent)
            .append_sent(self.folders.append_sent)
            .batch_size(self.batch_size)
            .start_from(self.start_from)
            .thread_window(self.thread_window);
        config.display_name = self.display_name.clone();
        config
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Whether `host` is this machine, where `plaintext` sends nothing over a network.
fn is_loopback(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_host(server: &str, host: &str, security: Security) -> Result<(), ConfigError> {
    let field = format!("{server}.host");
    let host = host.trim();
    if host.is_empty() {
        return Err(ConfigError::new(
            field,
            format!("is missing: write the {} server's host name", server.to_uppercase()),
        ));
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/' || c == ':')
        && host.parse::<std::net::IpAddr>().is_err()
    {
        return Err(ConfigError::new(
            field,
            format!(
                "`{host}` is not a host name: write only the name, such as \"mail.example.org\" (the port goes in `{server}.port`)"
            ),
        ));
    }
    if security != Security::Plaintext
        && rustls::pki_types::ServerName::try_from(host.to_owned()).is_err()
    {
        return Err(ConfigError::new(
            field,
            format!(
                "`{host}` cannot be checked against a TLS certificate: write the server's DNS name"
            ),
        ));
    }
    Ok(())
}

fn check_port(field: &str, port: Option<u16>) -> Result<(), ConfigError> {
    if port == Some(0) {
        return Err(ConfigError::new(field, "must be a TCP port from 1 to 65535"));
    }
    Ok(())
}

/// Finds the field that serde refused: each top-level field, and each field of a section,
/// is read on its own, so the first one that fails is named with its path.
fn locate_error(value: &Value, whole: &serde_json::Error) -> ConfigError {
    let Some(object) = value.as_object() else {
        return ConfigError::new(
            "(configuration)",
            format!("must be a JSON object with `address`, `imap` and `smtp`, not {}", kind(value)),
        );
    };
    for (key, inner) in object {
        let found = match (key.as_str(), inner.as_object()) {
            ("imap", Some(fields)) => section::<ImapSettings>(key, fields),
            ("smtp", Some(fields)) => section::<SmtpSettings>(key, fields),
            ("folders", Some(fields)) => section::<Folders>(key, fields),
            ("timeouts", Some(fields)) => section::<Timeouts>(key, fields),
            ("backoff", Some(fields)) => {
                section::<crate::config::backoff_section::Section>(key, fields)
            }
            _ => None,
        };
        if let Some(e) = found.or_else(|| alone::<EmailAccountConfig>(key, key, inner)) {
            return e;
        }
    }
    ConfigError::new("(configuration)", whole.to_string())
}

fn section<T: DeserializeOwned>(
    name: &str,
    fields: &serde_json::Map<String, Value>,
) -> Option<ConfigError> {
    fields.iter().find_map(|(key, value)| alone::<T>(&format!("{name}.{key}"), key, value))
}

fn alone<T: DeserializeOwned>(path: &str, key: &str, value: &Value) -> Option<ConfigError> {
    let mut one = serde_json::Map::new();
    one.insert(key.to_owned(), value.clone());
    let e = serde_json::from_value::<T>(Value::Object(one)).err()?;
    let message = e.to_string();
    let reason = if message.starts_with("unknown field") {
        format!("is not a setting here ({message})")
    } else {
        format!("has a wrong value: {message}")
    };
    Some(ConfigError::new(path, reason))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "address": "me@example.org",
            "imap": { "host": "imap.example.org" },
            "smtp": { "host": "smtp.example.org" },
        })
    }

    fn refused_field(patch: impl FnOnce(&mut Value)) -> String {
        let mut v = minimal();
        patch(&mut v);
        match EmailAccountConfig::from_json(&v) {
            Err(e) => e.field,
            Ok(c) => panic!("accepted {c:?}"),
        }
    }

    #[test]
    fn a_minimal_configuration_takes_the_defaults() {
        let c = EmailAccountConfig::from_json(&minimal()).unwrap();
        assert_eq!((c.imap.port(), c.imap.security), (993, Security::Tls));
        assert_eq!(
            (c.smtp.port(), c.smtp.security, c.smtp.auth),
            (465, Security::Tls, SmtpAuth::Password)
        );
        assert_eq!(c.login(), "me@example.org");
        assert_eq!(c.folders, Folders::default());
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.batch_size, 100);
    }

    #[test]
    fn a_configuration_survives_a_round_trip_through_json() {
        let mut c =
            EmailAccountConfig::new("Me@Example.org", "imap.example.org", "smtp.example.org");
        c.display_name = Some("Support".into());
        c.login = Some("me".into());
        c.imap.security = Security::StartTls;
        c.smtp.port = Some(2525);
        c.smtp.auth = SmtpAuth::None;
        c.folders.inbox = "Support/Incoming".into();
        c.timeouts.poll_interval = Duration::from_millis(300);
        c.backoff = Backoff::new(c.backoff.initial(), Duration::from_secs(120));
        c.start_from = StartFrom::Now;
        let json = c.to_json();
        assert_eq!(json["timeouts"]["poll_interval"], "300ms");
        assert_eq!(json["smtp"]["auth"], "none");
        assert_eq!(EmailAccountConfig::from_json(&json).unwrap(), c);
    }

    #[test]
    fn wrong_fields_are_named_with_their_path() {
        assert_eq!(refused_field(|v| v["imap"]["port"] = json!(70000)), "imap.port");
        assert_eq!(refused_field(|v| v["imap"]["port"] = json!(0)), "imap.port");
        assert_eq!(refused_field(|v| v["smtp"]["security"] = json!("ssl")), "smtp.security");
        assert_eq!(refused_field(|v| v["smtp"]["hots"] = json!("x")), "smtp.hots");
        assert_eq!(
            refused_field(|v| v["timeouts"] = json!({"connect": "soon"})),
            "timeouts.connect"
        );
        assert_eq!(refused_field(|v| v["timeouts"] = json!({"read": "0s"})), "timeouts.read");
        assert_eq!(refused_field(|v| v["address"] = json!("not an address")), "address");
        assert_eq!(refused_field(|v| v["address"] = json!(42)), "address");
        assert_eq!(refused_field(|v| v["imap"] = json!({})), "imap.host");
        assert_eq!(
            refused_field(|v| v["imap"]["host"] = json!("imap.example.org:993")),
            "imap.host"
        );
        assert_eq!(refused_field(|v| v["smtp"] = json!("smtp.example.org")), "smtp");
        assert_eq!(refused_field(|v| v["password"] = json!("secret")), "password");
        assert_eq!(refused_field(|v| v["batch_size"] = json!(501)), "batch_size");
        assert_eq!(
            refused_field(|v| v["backoff"] = json!({"min": "10s", "max": "1s"})),
            "backoff.max"
        );
        assert_eq!(refused_field(|v| v["folders"] = json!({"inbox": ""})), "folders.inbox");
    }

    #[test]
    fn plaintext_is_refused_where_the_password_would_cross_a_network() {
        assert_eq!(refused_field(|v| v["imap"]["security"] = json!("plaintext")), "imap.security");
        assert_eq!(refused_field(|v| v["smtp"]["security"] = json!("plaintext")), "smtp.security");
        let mut relay = minimal();
        relay["smtp"] = json!({"host": "relay.internal", "security": "plaintext", "auth": "none"});
        assert!(EmailAccountConfig::from_json(&relay).is_ok());
        let mut local = minimal();
        local["imap"] = json!({"host": "127.0.0.1", "port": 1143, "security": "plaintext"});
        assert!(EmailAccountConfig::from_json(&local).is_ok());
    }

    #[test]
    fn the_channel_configuration_carries_the_password_only_from_the_state() {
        let c = EmailAccountConfig::from_json(&minimal()).unwrap();
        assert!(!c.to_json().to_string().contains("\"password\":"), "no password field");
        let channel = c.to_email_config(&SecretString::from("s3cret".to_owned()));
        assert_eq!(channel.imap.password.expose_secret(), "s3cret");
        assert_eq!(channel.smtp.username, "me@example.org");
        assert!(!format!("{channel:?}").contains("s3cret"), "Debug hides the password");
        let mut relay = c.clone();
        relay.smtp.auth = SmtpAuth::None;
        assert_eq!(relay.to_email_config(&SecretString::from("x".to_owned())).smtp.username, "");
    }
}
