//! What went wrong in a channel, kept with its cause: a [`Fault`] names its [`FaultKind`]
//! (network, DNS, TLS, authentication, protocol, server, other), says what happened in a
//! sentence, and keeps the underlying error as its [`source`](std::error::Error::source), so
//! that a service can tell a certificate failure from a DNS failure without parsing text.

use std::fmt;
use std::sync::Arc;

/// The kind of fault a channel met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FaultKind {
    /// The connection could not be made or broke (refused, reset, unreachable).
    Network,
    /// The server's name did not resolve.
    Dns,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The server refused the credentials or the session.
    Authentication,
    /// The server said something this client did not expect.
    Protocol,
    /// The server refused or failed the request (busy, quota, internal error).
    Server,
    /// Anything else (our own state, the store, a configuration).
    Other,
}

impl FaultKind {
    /// The kind's name, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            FaultKind::Network => "network",
            FaultKind::Dns => "dns",
            FaultKind::Tls => "tls",
            FaultKind::Authentication => "authentication",
            FaultKind::Protocol => "protocol",
            FaultKind::Server => "server",
            FaultKind::Other => "other",
        }
    }
}

/// A fault with its kind, a sentence for people and the error that caused it.
///
/// ```
/// use channel_core::{ChannelError, Fault, FaultKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let err = ChannelError::transient(Fault::new(FaultKind::Network, "cannot connect to imap.example.org:993").source(io));
/// assert_eq!(err.fault().map(|f| f.kind()), Some(FaultKind::Network));
/// let cause = std::error::Error::source(&err).and_then(|f| f.source()).unwrap();
/// assert_eq!(cause.to_string(), "refused");
/// // A plain sentence is a fault of kind `Other`.
/// assert_eq!(ChannelError::permanent("no such chat").fault().unwrap().kind(), FaultKind::Other);
/// ```
#[derive(Clone)]
pub struct Fault {
    kind: FaultKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Fault {
    /// A fault of `kind`, described by `message`.
    pub fn new(kind: FaultKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// With the error that caused it.
    pub fn source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Its kind.
    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    /// What happened, in a sentence (without the cause's text).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message followed by the chain of causes (`message: cause: cause`), for people:
    /// a connection state's reason, a log line.
    pub fn report(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let shown = c.to_string();
            if !text.contains(&shown) {
                text.push_str(": ");
                text.push_str(&shown);
            }
            cause = c.source();
        }
        text
    }

    /// Whether the message contains `needle` (for tests and log filters).
    pub fn contains(&self, needle: &str) -> bool {
        self.message.contains(needle)
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Fault");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Faults are equal when their kinds and messages are (causes are not compared).
impl PartialEq for Fault {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for Fault {}

impl From<String> for Fault {
    fn from(message: String) -> Self {
        Self::new(FaultKind::Other, message)
    }
}

impl From<&str> for Fault {
    fn from(message: &str) -> Self {
        Self::new(FaultKind::Other, message)
    }
}
