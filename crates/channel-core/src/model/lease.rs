//! Leases that let several worker processes share one database.

use serde::{Deserialize, Serialize};

use super::{AccountId, Timestamp};

/// A named lease held by one process at a time: `leader`, or `account:<id>` for the process
/// that connects an account. A new holder gets a higher term, which fences the old one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's name.
    pub name: String,
    /// The process holding it.
    pub holder: String,
    /// Incremented each time the holder changes.
    pub term: i64,
    /// When it runs out unless renewed.
    pub expires_at: Timestamp,
}

impl Lease {
    /// The name of the leader lease.
    pub const LEADER: &'static str = "leader";

    /// The name of an account's lease.
    pub fn account_name(account: AccountId) -> String {
        format!("account:{account}")
    }
}
