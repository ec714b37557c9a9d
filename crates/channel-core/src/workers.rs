//! Worker processes, as the database knows them: who is alive, and what each one's loops are
//! doing.
//!
//! - **Liveness through the database, not through time.** Each worker holds a liveness lock
//!   for as long as its process lives ([`WorkerStore::register_worker`]): a session-level
//!   advisory lock on PostgreSQL, a file lock beside a SQLite database. When a process dies,
//!   its lock is free at once, and any other worker (no leader needed) takes over its account
//!   leases and its claimed jobs ([`WorkerStore::take_over`]) without waiting for them to
//!   expire. Fencing stays: leases and jobs change hands only through their fenced updates.
//!   A PostgreSQL connection pooler in transaction mode (PgBouncer's `pool_mode =
//!   transaction`) breaks session-level locks: give the workers a direct connection or a
//!   pooler in session mode.
//! - **Heartbeats, for people.** Each worker writes its row ([`WorkerInfo`]: host, pid,
//!   version, start, last beat, each loop's state and restarts, the accounts it holds) every
//!   [`heartbeat_interval`](crate::EngineConfig::heartbeat_interval) from a loop of its own.
//!   A row is stale after three missed beats. Takeover never waits for a row: it asks the lock.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{AccountId, Timestamp};
use crate::store::StoreError;

/// One loop of a worker, as its last heartbeat saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopInfo {
    /// The loop's name (`lease`, `dispatcher`, `account:<id>`, ...).
    pub name: String,
    /// Its state (`running`, `backoff`, `failed`, ...).
    pub state: String,
    /// Restarts since the worker started.
    pub restarts: u64,
    /// Its last abnormal end, if any (a sentence; never message content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A worker process's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its worker id ([`EngineConfig::worker_id`](crate::EngineConfig::worker_id)).
    pub id: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The version of channel-core it runs.
    pub version: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub beat_at: Timestamp,
    /// Its loops, at the last heartbeat.
    pub loops: Vec<LoopInfo>,
    /// The accounts it held, at the last heartbeat.
    pub accounts: Vec<AccountId>,
    /// Whether its process holds its liveness lock now (read from the database when listed;
    /// ignored when written).
    pub alive: bool,
}

impl WorkerInfo {
    /// This process, as worker `id`, starting now.
    pub fn this_process(id: impl Into<String>, now: Timestamp) -> Self {
        Self {
            id: id.into(),
            host: host_name(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now,
            beat_at: now,
            loops: Vec::new(),
            accounts: Vec::new(),
            alive: true,
        }
    }

    /// Whether its last beat is more than three `interval`s old at `now`.
    pub fn is_stale(&self, now: Timestamp, interval: std::time::Duration) -> bool {
        now.since(self.beat_at) > interval * 3
    }
}

/// The machine's name, from the kernel (or `HOSTNAME`), `unknown` without either.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What a takeover of a dead worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Takeover {
    /// Named leases (accounts, leader) it held, now free to take.
    pub leases: u64,
    /// Jobs it had claimed, rescued (retryable at once, or dead-lettered when out of
    /// attempts).
    pub jobs: u64,
}

/// A worker's liveness lock, held until it is dropped or the process dies.
pub trait Liveness: Send + Sync + fmt::Debug {
    /// Whether the lock is still held (false once the backend lost it: a PostgreSQL session
    /// that broke).
    fn is_held(&self) -> bool;
}

/// The workers' part of the backend contract.
#[async_trait]
pub trait WorkerStore: Send + Sync + 'static {
    /// Takes the worker's liveness lock and writes its row. Fails with `InvalidInput` when
    /// another live process uses the same worker id.
    async fn register_worker(&self, worker: &WorkerInfo) -> Result<Box<dyn Liveness>, StoreError>;

    /// Writes the worker's heartbeat: its loops, accounts and `beat_at`.
    async fn beat(&self, worker: &WorkerInfo) -> Result<(), StoreError>;

    /// Every worker row, by id, each with whether its process is alive now.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError>;

    /// Takes over worker `id` if its liveness lock is free: expires its named leases, rescues
    /// its claimed jobs and deletes its row, in one transaction. `None` (and nothing changed)
    /// when it is alive or unknown.
    async fn take_over(&self, id: &str, now: Timestamp) -> Result<Option<Takeover>, StoreError>;
}
