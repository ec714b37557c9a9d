//! The internal error of store operations and its mapping to [`StoreError`].

use channel_core::StoreError;

use crate::db::{DbFailure, classify, to_store_error};

/// A failure inside an operation: a database error (inspected for retries first) or an error
/// already decided by the operation.
#[derive(Debug)]
pub(crate) enum Fail {
    Sql(sqlx::Error),
    Store(StoreError),
    /// A row changed under the transaction (a concurrent writer on PostgreSQL won a race):
    /// run the transaction again.
    Race(String),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<channel_core::UnknownValue> for Fail {
    fn from(e: channel_core::UnknownValue) -> Self {
        Fail::Store(e.into())
    }
}

impl Fail {
    /// Whether retrying the whole transaction may succeed: on PostgreSQL a unique violation
    /// (a concurrent insert of the same key, seen on re-read), a serialization failure or a
    /// deadlock. SQLite writes are serialized by the single writer, so nothing is retried.
    pub(crate) fn is_retryable(&self, pg: bool) -> bool {
        match self {
            Fail::Sql(e) => {
                pg && matches!(classify(e), DbFailure::Unique | DbFailure::Serialization)
            }
            Fail::Store(_) => false,
            Fail::Race(_) => true,
        }
    }

    pub(crate) fn into_store(self, operation: &'static str) -> StoreError {
        match self {
            Fail::Sql(e) => to_store_error(e, operation),
            Fail::Store(e) => e,
            Fail::Race(what) => StoreError::Unavailable(format!(
                "`{operation}` kept losing races with concurrent writers: {what}"
            )),
        }
    }
}

/// The result of an operation step.
pub(crate) type Res<T> = Result<T, Fail>;

/// `StoreError::InvalidInput` for `field`.
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Fail {
    Fail::Store(StoreError::InvalidInput { field, reason: reason.into() })
}

/// `StoreError::Corrupt`.
pub(crate) fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt(reason.into())
}
