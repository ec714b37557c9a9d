//! Account configuration: servers, credentials, timeouts and behaviour.

use std::fmt;
use std::time::Duration;

use channel_core::Backoff;
use channel_core::provider::ConfigError;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::duration;

/// How a connection to a mail server is secured. In an account's configuration: `"tls"`,
/// `"starttls"` or `"plaintext"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (IMAP 993, SMTP 465). The default.
    #[default]
    Tls,
    /// A plaintext connection upgraded with STARTTLS before login (IMAP 143, SMTP 587).
    StartTls,
    /// No TLS at all: only for servers on loopback, such as the test stack. Credentials travel
    /// in clear text.
    Plaintext,
}

/// Where a server is and how to log in to it.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Host name (also the TLS server name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How the connection is secured.
    pub security: Security,
    /// Login name.
    pub username: String,
    /// Password (never logged, never printed by `Debug`).
    pub password: SecretString,
}

impl ServerConfig {
    /// A server with TLS from the first byte.
    pub fn tls(host: impl Into<String>, port: u16) -> Self {
        Self::new(host, port, Security::Tls)
    }

    /// A server reached with the given security and no credentials yet.
    pub fn new(host: impl Into<String>, port: u16, security: Security) -> Self {
        Self {
            host: host.into(),
            port,
            security,
            username: String::new(),
            password: SecretString::from(String::new()),
        }
    }

    /// Sets the credentials.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = username.into();
        self.password = SecretString::from(password.into());
        self
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Every time limit of the channel. The defaults follow the project's table: connect, read
/// and write 60 s, IDLE inactivity 5 min, a fresh IDLE at most every 29 min (RFC 2177), DONE
/// answered within 15 s, polling every 30 s without IDLE, a whole SMTP send within 120 s.
///
/// In an account's configuration each one is a duration such as `"60s"`, `"300ms"`, `"5m"`
/// (a bare number is seconds); a missing one keeps its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting, TLS handshake, greeting and login.
    #[serde(with = "duration")]
    pub connect: Duration,
    /// One read from the socket that makes no progress.
    #[serde(with = "duration")]
    pub read: Duration,
    /// One write to the socket that makes no progress.
    #[serde(with = "duration")]
    pub write: Duration,
    /// Silence from the server during IDLE after which the connection is taken for dead
    /// (servers send `* OK Still here` every few minutes).
    #[serde(with = "duration")]
    pub idle_inactivity: Duration,
    /// How long one IDLE command may last before it is renewed.
    #[serde(with = "duration")]
    pub idle_max: Duration,
    /// How long the server may take to end IDLE after `DONE`.
    #[serde(with = "duration")]
    pub done: Duration,
    /// How often the folder is checked when the server has no IDLE.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// A whole SMTP send (lettre's own timeout covers only connecting).
    #[serde(with = "duration")]
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(60),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle_inactivity: Duration::from_secs(5 * 60),
            idle_max: Duration::from_secs(29 * 60),
            done: Duration::from_secs(15),
            poll_interval: Duration::from_secs(30),
            send: Duration::from_secs(120),
        }
    }
}

/// The reconnect backoff by default: jittered, from 2 s doubling up to 80 s.
pub const DEFAULT_BACKOFF: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(80));

/// The reconnect backoff as an account's configuration writes it: `{"min": "2s", "max":
/// "80s"}` (used with `#[serde(with = "backoff_section")]`).
pub(crate) mod backoff_section {
    use std::time::Duration;

    use channel_core::Backoff;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::duration;

    /// The section's fields.
    #[derive(Clone, Copy, Debug, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub(crate) struct Section {
        #[serde(with = "duration")]
        min: Duration,
        #[serde(with = "duration")]
        max: Duration,
    }

    impl Default for Section {
        fn default() -> Self {
            let d = super::DEFAULT_BACKOFF;
            Self { min: d.initial(), max: d.max() }
        }
    }

    pub(crate) fn serialize<S: Serializer>(b: &Backoff, s: S) -> Result<S::Ok, S::Error> {
        Section { min: b.initial(), max: b.max() }.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Backoff, D::Error> {
        let s = Section::deserialize(d)?;
        Ok(Backoff::new(s.min, s.max))
    }
}

/// Where a folder without a stored cursor starts. In an account's configuration:
/// `"beginning"` or `"now"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// Every message already in the folder is delivered (nothing is ever skipped).
    #[default]
    Beginning,
    /// Only mail that arrives after the first connect; older mail comes through
    /// [`fetch_history`](channel_core::Channel::fetch_history).
    Now,
}

/// The configuration of one email account.
///
/// ```
/// use channel_email::{EmailConfig, ServerConfig};
///
/// let config = EmailConfig::new(
///     "me@example.org",
///     ServerConfig::tls("imap.example.org", 993).credentials("me@example.org", "secret"),
///     ServerConfig::tls("smtp.example.org", 465).credentials("me@example.org", "secret"),
/// )
/// .display_name("Me")
/// .append_sent(true);
/// assert_eq!(config.address(), "me@example.org");
/// ```
#[derive(Clone, Debug)]
pub struct EmailConfig {
    /// The account's own address (lower-cased).
    pub(crate) address: String,
    /// The name shown in `From`.
    pub(crate) display_name: Option<String>,
    /// The IMAP server.
    pub(crate) imap: ServerConfig,
    /// The SMTP server.
    pub(crate) smtp: ServerConfig,
    /// Time limits.
    pub(crate) timeouts: Timeouts,
    /// Reconnect backoff.
    pub(crate) backoff: Backoff,
    /// The folder of incoming mail.
    pub(crate) inbox: String,
    /// Whether the Sent folder is watched for mail the owner sent from other clients.
    pub(crate) watch_sent: bool,
    /// Whether a copy of each sent message is appended to the Sent folder (off by default:
    /// most providers file it themselves).
    pub(crate) append_sent: bool,
    /// Messages per FETCH (at most 500).
    pub(crate) batch_size: usize,
    /// Where folders without a cursor start.
    pub(crate) start_from: StartFrom,
    /// Extra trusted root certificates (DER), for servers with a private CA.
    pub(crate) extra_roots: Vec<Vec<u8>>,
    /// SMTP connections kept open (lettre's pool).
    pub(crate) smtp_pool_size: u32,
    /// How far apart two messages without References/In-Reply-To may be and still be put in
    /// one thread by normalized subject and participant; zero
    /// switches that fallback off. 7 days by default.
    pub(crate) thread_window: Duration,
    /// How logs name the account (default: its address; the provider sets the account's id
    /// and address).
    pub(crate) account_label: String,
    /// The instance named to the IMAP server with `ID` (RFC 2971) after each login, as
    /// `x-instance`; the provider sets the engine's worker id.
    pub(crate) client_instance: Option<String>,
}

impl EmailConfig {
    /// The largest FETCH batch.
    pub const MAX_BATCH: usize = 500;

    /// A configuration with the defaults: INBOX and Sent watched, no APPEND, batches of 100.
    pub fn new(address: impl Into<String>, imap: ServerConfig, smtp: ServerConfig) -> Self {
        let address = address.into().trim().to_lowercase();
        Self {
            account_label: address.clone(),
            client_instance: None,
            address,
            display_name: None,
            imap,
            smtp,
            timeouts: Timeouts::default(),
            backoff: DEFAULT_BACKOFF,
            inbox: "INBOX".to_owned(),
            watch_sent: true,
            append_sent: false,
            batch_size: 100,
            start_from: StartFrom::default(),
            extra_roots: Vec::new(),
            smtp_pool_size: 4,
            thread_window: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Sets the name shown in `From`.
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Sets the time limits.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the reconnect backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Watches the Sent folder or not.
    pub fn watch_sent(mut self, on: bool) -> Self {
        self.watch_sent = on;
        self
    }

    /// Appends sent copies to the Sent folder or not.
    pub fn append_sent(mut self, on: bool) -> Self {
        self.append_sent = on;
        self
    }

    /// Sets the FETCH batch size (1 to [`MAX_BATCH`](Self::MAX_BATCH); 100 by default).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Sets the folder of incoming mail (`INBOX` by default).
    pub fn inbox(mut self, folder: impl Into<String>) -> Self {
        self.inbox = folder.into();
        self
    }

    /// Sets how many SMTP connections lettre's pool keeps open (at least 1; 4 by default).
    pub fn smtp_pool_size(mut self, n: u32) -> Self {
        self.smtp_pool_size = n;
        self
    }

    /// Replaces the IMAP server.
    pub fn imap_server(mut self, server: ServerConfig) -> Self {
        self.imap = server;
        self
    }

    /// Replaces the SMTP server.
    pub fn smtp_server(mut self, server: ServerConfig) -> Self {
        self.smtp = server;
        self
    }

    /// The account's own address (lower-cased).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The IMAP server.
    pub fn imap(&self) -> &ServerConfig {
        &self.imap
    }

    /// The SMTP server.
    pub fn smtp(&self) -> &ServerConfig {
        &self.smtp
    }

    /// Sets where folders without a cursor start.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start_from = start;
        self
    }

    /// Trusts an extra root certificate (DER).
    pub fn add_root_certificate(mut self, der: Vec<u8>) -> Self {
        self.extra_roots.push(der);
        self
    }

    /// Sets the window of the subject-and-participant threading fallback (zero: off).
    pub fn thread_window(mut self, window: Duration) -> Self {
        self.thread_window = window;
        self
    }

    /// Sets how logs name the account.
    pub fn account_label(mut self, label: impl Into<String>) -> Self {
        self.account_label = label.into();
        self
    }

    /// Names this process to the IMAP server: after each login, when the server offers `ID`
    /// (RFC 2971), the connection identifies itself as `channel-email`, its version, its
    /// process id (`x-pid`) and this instance (`x-instance`). Servers log it (Dovecot with `imap_id_log = *`), so an operator
    /// can tell which worker holds which connection. [`EmailProvider`](crate::EmailProvider)
    /// sets the engine's worker id. A server that refuses `ID` changes nothing.
    pub fn client_instance(mut self, instance: impl Into<String>) -> Self {
        self.client_instance = Some(instance.into());
        self
    }

    pub(crate) fn effective_batch(&self) -> usize {
        self.batch_size.clamp(1, Self::MAX_BATCH)
    }

    /// Checks the settings, naming the first one out of range: an empty address or host, a
    /// zero time limit or backoff, a batch size outside 1 to [`MAX_BATCH`](Self::MAX_BATCH),
    /// an empty SMTP pool. [`EmailChannel::new`](crate::EmailChannel::new) calls it.
    ///
    /// ```
    /// use channel_email::{EmailConfig, ServerConfig};
    ///
    /// let config = EmailConfig::new(
    ///     "me@example.org",
    ///     ServerConfig::tls("imap.example.org", 993),
    ///     ServerConfig::tls("smtp.example.org", 465),
    /// );
    /// assert!(config.clone().validate().is_ok());
    /// assert_eq!(config.batch_size(501).validate().unwrap_err().field, "batch_size");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.address.is_empty() {
            return Err(ConfigError::new("address", "must not be empty"));
        }
        for (field, server) in [("imap.host", &self.imap), ("smtp.host", &self.smtp)] {
            if server.host.trim().is_empty() {
                return Err(ConfigError::new(field, "must name the server"));
            }
        }
        check_limits(&self.timeouts, &self.backoff, self.batch_size, self.smtp_pool_size)
    }
}

/// The checks an [`EmailConfig`] and an account's stored configuration share: every time limit
/// and the backoff non-zero, the backoff's ceiling not below its start, the batch size from 1
/// to [`EmailConfig::MAX_BATCH`], an SMTP pool of at least one connection.
pub(crate) fn check_limits(
    t: &Timeouts,
    backoff: &Backoff,
    batch_size: usize,
    smtp_pool_size: u32,
) -> Result<(), ConfigError> {
    for (field, value) in [
        ("timeouts.connect", t.connect),
        ("timeouts.read", t.read),
        ("timeouts.write", t.write),
        ("timeouts.idle_inactivity", t.idle_inactivity),
        ("timeouts.idle_max", t.idle_max),
        ("timeouts.done", t.done),
        ("timeouts.poll_interval", t.poll_interval),
        ("timeouts.send", t.send),
        ("backoff.min", backoff.initial()),
    ] {
        if value.is_zero() {
            return Err(ConfigError::new(
                field,
                "must be longer than zero: write a duration such as \"30s\"",
            ));
        }
    }
    if backoff.max() < backoff.initial() {
        return Err(ConfigError::new(
            "backoff.max",
            format!(
                "is shorter than backoff.min ({}): write at least that",
                duration::to_text(backoff.initial())
            ),
        ));
    }
    if !(1..=EmailConfig::MAX_BATCH).contains(&batch_size) {
        return Err(ConfigError::new(
            "batch_size",
            format!("must be from 1 to {} (100 is the default)", EmailConfig::MAX_BATCH),
        ));
    }
    if smtp_pool_size == 0 {
        return Err(ConfigError::new("smtp_pool_size", "must be at least 1 (4 is the default)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmailChannel;

    fn config() -> EmailConfig {
        EmailConfig::new(
            "me@example.org",
            ServerConfig::tls("imap.example.org", 993),
            ServerConfig::tls("smtp.example.org", 465),
        )
    }

    fn refused(config: EmailConfig) -> String {
        config.validate().expect_err("refused").field
    }

    #[test]
    fn out_of_range_settings_are_refused_by_name() {
        assert!(config().validate().is_ok());
        assert_eq!(refused(config().batch_size(0)), "batch_size");
        assert_eq!(refused(config().batch_size(EmailConfig::MAX_BATCH + 1)), "batch_size");
        assert_eq!(refused(config().smtp_pool_size(0)), "smtp_pool_size");
        let t = Timeouts { send: Duration::ZERO, ..Timeouts::default() };
        assert_eq!(refused(config().timeouts(t)), "timeouts.send");
        let backwards = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(refused(config().backoff(backwards)), "backoff.max");
        assert_eq!(refused(config().imap_server(ServerConfig::tls(" ", 993))), "imap.host");
    }

    #[tokio::test]
    async fn a_channel_is_not_built_from_an_invalid_configuration() {
        let err = EmailChannel::new(config().batch_size(0)).expect_err("refused");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("batch_size"), "{err}");
    }
}
