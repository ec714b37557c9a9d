//! Errors of an IMAP session, and how each one maps to a [`ChannelError`].

use std::time::Duration;

use channel_core::ChannelError;

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
    /// TLS could not be set up.
    #[error("tls: {0}")]
    Tls(String),
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

impl From<ImapError> for ChannelError {
    fn from(e: ImapError) -> Self {
        match e {
            ImapError::Auth(m) => ChannelError::NeedsLogin(m),
            ImapError::Timeout { operation, after } => {
                ChannelError::Timeout { operation: operation.to_owned(), after }
            }
            ImapError::Inbound(e) => e,
            ImapError::Config(m) => ChannelError::Permanent(m),
            other => ChannelError::Transient(other.to_string()),
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
