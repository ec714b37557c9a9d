//! Errors of an IMAP session, and how each one maps to a [`ChannelError`].

use std::time::Duration;

use channel_core::{ChannelError, Fault, FaultKind};

/// Why an IMAP session ended. Every variant but [`ImapError::Auth`] means: throw the session
/// away and reconnect with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The server rejected the credentials.
    #[error("login rejected: {0}")]
    Auth(String),
    /// The socket failed (reset, refused, timed out on the stream).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server's name did not resolve.
    #[error("dns: {0}")]
    Dns(#[source] std::io::Error),
    /// The TLS handshake failed (its cause, a rustls error, is the source).
    #[error("tls: {0}")]
    Tls(#[source] std::io::Error),
    /// The server closed the connection, maybe in the middle of a response.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server answered NO or BAD, or something that does not parse.
    #[error("protocol: {0}")]
    Protocol(String),
    /// An operation took longer than its limit.
    #[error("`{operation}` timed out after {after:?}")]
    Timeout {
        /// The operation.
        operation: &'static str,
        /// Its limit.
        after: Duration,
    },
    /// The sink refused or failed to store what was fetched.
    #[error("delivery: {0}")]
    Inbound(ChannelError),
    /// A configuration that cannot work (bad host name, no usable folder).
    #[error("configuration: {0}")]
    Config(String),
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        use async_imap::error::Error as E;
        match e {
            E::Io(io) => ImapError::Io(io),
            E::ConnectionLost => {
                ImapError::ConnectionLost("the server closed the connection".into())
            }
            other => ImapError::Protocol(other.to_string()),
        }
    }
}

/// Each IMAP failure as the engine sees it, with its [`FaultKind`] and, where there is one,
/// the underlying error as its source.
impl From<ImapError> for ChannelError {
    fn from(e: ImapError) -> Self {
        match e {
            ImapError::Auth(m) => ChannelError::needs_login(Fault::new(
                FaultKind::Authentication,
                format!("the IMAP server refused the login: {m}"),
            )),
            ImapError::Timeout { operation, after } => {
                ChannelError::Timeout { operation: operation.to_owned(), after }
            }
            ImapError::Inbound(e) => e,
            ImapError::Config(m) => ChannelError::permanent(m),
            ImapError::Dns(io) => ChannelError::transient(
                Fault::new(FaultKind::Dns, "the IMAP server's name does not resolve").source(io),
            ),
            ImapError::Tls(io) => ChannelError::transient(
                Fault::new(FaultKind::Tls, "TLS with the IMAP server failed").source(io),
            ),
            ImapError::Io(io) => ChannelError::transient(
                Fault::new(FaultKind::Network, "the IMAP connection failed").source(io),
            ),
            ImapError::ConnectionLost(m) => ChannelError::transient(Fault::new(
                FaultKind::Network,
                format!("the IMAP server closed the connection: {m}"),
            )),
            ImapError::Protocol(m) => ChannelError::transient(Fault::new(
                FaultKind::Protocol,
                format!("the IMAP server answered unexpectedly: {m}"),
            )),
        }
    }
}

/// Runs `fut` under `limit`, naming the operation in the error.
pub(crate) async fn within<T>(
    operation: &'static str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, ImapError>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(ImapError::Timeout { operation, after: limit }),
    }
}
