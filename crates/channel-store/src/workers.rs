//! Worker rows and liveness locks (see [`channel_core::workers`]): a session-level advisory
//! lock on a connection of its own on PostgreSQL, a file lock beside the database on SQLite
//! (`<database>.workers/<key>.lock`). A lock is free the moment its process dies, so a dead
//! worker is taken over at once, by whichever worker looks first.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
#[cfg(feature = "postgres")]
use std::sync::Arc;
#[cfg(feature = "postgres")]
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use channel_core::workers::{Liveness, LoopInfo, Takeover, WorkerInfo, WorkerStore};
use channel_core::{AccountId, StoreError, Timestamp};

use crate::db::{Arg, Row, Tx};
use crate::error::Res;
use crate::{SqlStore, codec, queue, write_tx};

/// Where liveness locks live.
#[derive(Clone, Debug)]
pub(crate) enum LockPlace {
    /// Files in this directory (SQLite).
    Files(PathBuf),
    /// Advisory locks on connections made with these options (PostgreSQL).
    #[cfg(feature = "postgres")]
    Postgres(Box<sqlx::postgres::PgConnectOptions>),
}

impl LockPlace {
    /// The directory of a SQLite database's locks: beside it.
    pub(crate) fn beside(database: &Path) -> Self {
        let mut dir = database.as_os_str().to_owned();
        dir.push(".workers");
        LockPlace::Files(PathBuf::from(dir))
    }
}

/// A worker id's lock key: FNV-1a, 62 bits (positive, and split by PostgreSQL's `pg_locks`
/// into two 31-bit halves).
pub(crate) fn lock_key(worker: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in worker.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h & 0x3fff_ffff_ffff_ffff) as i64
}

fn lock_file(dir: &Path, key: i64) -> PathBuf {
    dir.join(format!("{key:016x}.lock"))
}

/// Whether the file lock of `key` is free: taken and returned when it is (hold it to keep
/// its worker from registering meanwhile), `None` when a live process holds it.
fn probe_file(dir: &Path, key: i64) -> Res<Option<File>> {
    let path = lock_file(dir, key);
    let file =
        match OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path) {
            Ok(f) => f,
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot open the worker lock {}: {e}",
                    path.display()
                ))
                .into());
            }
        };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "cannot lock the worker lock {}: {e}",
            path.display()
        ))
        .into()),
    }
}

/// A file lock held for this process's life.
#[derive(Debug)]
struct FileLiveness(#[allow(dead_code)] File);

impl Liveness for FileLiveness {
    fn is_held(&self) -> bool {
        true
    }
}

/// A session-level advisory lock on a connection of its own, checked every few seconds and
/// taken again if the connection broke (its state in `held`).
#[cfg(feature = "postgres")]
#[derive(Debug)]
struct PgLiveness {
    held: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "postgres")]
impl Liveness for PgLiveness {
    fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(feature = "postgres")]
impl Drop for PgLiveness {
    fn drop(&mut self) {
        // Dropping the connection ends the session and frees the lock.
        self.task.abort();
    }
}

#[cfg(feature = "postgres")]
async fn pg_lock(
    options: &sqlx::postgres::PgConnectOptions,
    key: i64,
) -> Result<Option<sqlx::PgConnection>, sqlx::Error> {
    use sqlx::{ConnectOptions, Row as _};
    let mut conn = options.clone().application_name("channel-store liveness").connect().await?;
    let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    Ok(row.try_get::<bool, _>("locked")?.then_some(conn))
}

#[cfg(feature = "postgres")]
async fn hold_pg_lock(
    options: sqlx::postgres::PgConnectOptions,
    key: i64,
    mut conn: sqlx::PgConnection,
    held: Arc<AtomicBool>,
) {
    use sqlx::Connection;
    const EVERY: std::time::Duration = std::time::Duration::from_secs(3);
    loop {
        tokio::time::sleep(EVERY).await;
        let alive = tokio::time::timeout(EVERY, conn.ping()).await.is_ok_and(|r| r.is_ok());
        if alive {
            held.store(true, Ordering::Relaxed);
            continue;
        }
        held.store(false, Ordering::Relaxed);
        tracing::error!("the worker's liveness connection broke: taking its lock again");
        match tokio::time::timeout(EVERY, pg_lock(&options, key)).await {
            Ok(Ok(Some(c))) => {
                conn = c;
                held.store(true, Ordering::Relaxed);
            }
            Ok(Ok(None)) => tracing::error!(
                "the worker's liveness lock was taken by another process: this worker was taken over"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot take the liveness lock yet"),
            Err(_) => tracing::warn!("taking the liveness lock timed out"),
        }
    }
}

const COLS: &str = "id, host, pid, version, started_at, beat_at, loops, accounts, lock_key";

fn worker(row: &Row, alive: bool) -> Result<WorkerInfo, StoreError> {
    let json = |col: &str| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(&row.text(col)?)
            .map_err(|e| StoreError::Corrupt(format!("column `{col}` of a worker: {e}")))
    };
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("a worker row: {e}"));
    let loops: Vec<LoopInfo> = serde_json::from_value(json("loops")?).map_err(corrupt)?;
    let accounts: Vec<AccountId> = serde_json::from_value(json("accounts")?).map_err(corrupt)?;
    Ok(WorkerInfo {
        id: row.text("id")?,
        host: row.text("host")?,
        pid: u32::try_from(row.int("pid")?).unwrap_or(0),
        version: row.text("version")?,
        started_at: Timestamp(row.int("started_at")?),
        beat_at: Timestamp(row.int("beat_at")?),
        loops,
        accounts,
        alive,
    })
}

fn check(worker: &WorkerInfo) -> Res<()> {
    crate::limits::key("worker_id", &worker.id)?;
    crate::limits::key("host", &worker.host)?;
    crate::limits::key("version", &worker.version)?;
    Ok(())
}

/// Writes the worker's row (all of it but `started_at` when it exists).
async fn upsert(tx: &mut Tx, w: &WorkerInfo, key: i64) -> Res<()> {
    let loops = codec::to_json("loops", &w.loops)?;
    let accounts = codec::to_json("accounts", &w.accounts)?;
    let sql = format!(
        "INSERT INTO workers ({COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
         version = excluded.version, beat_at = excluded.beat_at, loops = excluded.loops, \
         accounts = excluded.accounts, lock_key = excluded.lock_key"
    );
    tx.execute(
        &sql,
        &[
            Arg::Text(&w.id),
            Arg::Text(&w.host),
            Arg::Int(i64::from(w.pid)),
            Arg::Text(&w.version),
            Arg::Int(w.started_at.0),
            Arg::Int(w.beat_at.0),
            Arg::Text(&loops),
            Arg::Text(&accounts),
            Arg::Int(key),
        ],
    )
    .await?;
    Ok(())
}

/// Expires the dead worker's leases, rescues its jobs and deletes its row.
async fn dispossess(tx: &mut Tx, id: &str, now: Timestamp) -> Res<Takeover> {
    let leases = tx
        .fetch_all(
            "UPDATE leases SET expires_at = 0 WHERE holder = ? AND expires_at > 0 RETURNING name",
            &[Arg::Text(id)],
        )
        .await?
        .len() as u64;
    let jobs = tx
        .fetch_all(
            "UPDATE jobs SET lease_expires_at = ? WHERE state = 'running' AND leased_by = ? \
             RETURNING id",
            &[Arg::Int(i64::MIN / 2), Arg::Text(id)],
        )
        .await?
        .len() as u64;
    if jobs > 0 {
        queue::rescue_expired(tx, now).await?;
    }
    tx.execute("DELETE FROM workers WHERE id = ?", &[Arg::Text(id)]).await?;
    Ok(Takeover { leases, jobs })
}

#[async_trait]
impl WorkerStore for SqlStore {
    async fn register_worker(&self, w: &WorkerInfo) -> Result<Box<dyn Liveness>, StoreError> {
        let key = lock_key(&w.id);
        let busy = || StoreError::InvalidInput {
            field: "worker_id",
            reason: format!(
                "worker `{}` is alive in another process: give each process its own id",
                w.id
            ),
        };
        let liveness: Box<dyn Liveness> = match self.lock_place() {
            LockPlace::Files(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!(
                        "cannot create the worker lock directory {}: {e}",
                        dir.display()
                    ))
                })?;
                let file = probe_file(dir, key).map_err(|f| f.into_store("register_worker"))?;
                Box::new(FileLiveness(file.ok_or_else(busy)?))
            }
            #[cfg(feature = "postgres")]
            LockPlace::Postgres(options) => {
                let options = (**options).clone();
                let conn = pg_lock(&options, key)
                    .await
                    .map_err(|e| crate::db::to_store_error(e, "register_worker"))?
                    .ok_or_else(busy)?;
                let held = Arc::new(AtomicBool::new(true));
                let task = tokio::spawn(hold_pg_lock(options, key, conn, Arc::clone(&held)));
                Box::new(PgLiveness { held, task })
            }
        };
        self.run("register_worker", async {
            check(w)?;
            write_tx!(self, |tx| upsert(tx, w, key).await?)
        })
        .await?;
        Ok(liveness)
    }

    async fn beat(&self, w: &WorkerInfo) -> Result<(), StoreError> {
        self.run("beat", async {
            check(w)?;
            write_tx!(self, |tx| upsert(tx, w, lock_key(&w.id)).await?)
        })
        .await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        self.run("workers", async {
            match self.lock_place() {
                LockPlace::Files(dir) => {
                    let sql = format!("SELECT {COLS} FROM workers ORDER BY id");
                    let rows = self.pools().reader().fetch_all(&sql, &[]).await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let alive = probe_file(dir, row.int("lock_key")?)?.is_none();
                        out.push(worker(row, alive)?);
                    }
                    Ok(out)
                }
                #[cfg(feature = "postgres")]
                LockPlace::Postgres(_) => {
                    let sql = format!(
                        "SELECT {COLS}, EXISTS (SELECT 1 FROM pg_locks AS l \
                           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                           AND l.database = (SELECT oid FROM pg_database \
                                             WHERE datname = current_database()) \
                           AND l.classid::bigint = (workers.lock_key >> 32) \
                           AND l.objid::bigint = (workers.lock_key & 4294967295)) AS alive \
                         FROM workers ORDER BY id"
                    );
                    let rows = self.pools().reader().fetch_all(&sql, &[]).await?;
                    rows.iter()
                        .map(|row| Ok(worker(row, row.boolean("alive")?)?))
                        .collect::<Res<Vec<_>>>()
                }
            }
        })
        .await
    }

    async fn take_over(&self, id: &str, now: Timestamp) -> Result<Option<Takeover>, StoreError> {
        self.run("take_over", async {
            let Some(row) = self
                .pools()
                .reader()
                .fetch_optional("SELECT lock_key FROM workers WHERE id = ?", &[Arg::Text(id)])
                .await?
            else {
                return Ok(None);
            };
            let key = row.int("lock_key")?;
            match self.lock_place() {
                LockPlace::Files(dir) => {
                    // Held through the transaction: the worker cannot register meanwhile.
                    let Some(_probe) = probe_file(dir, key)? else { return Ok(None) };
                    Ok(Some(write_tx!(self, |tx| dispossess(tx, id, now).await?)?))
                }
                #[cfg(feature = "postgres")]
                LockPlace::Postgres(_) => write_tx!(self, |tx| {
                    let free = tx
                        .fetch_optional(
                            "SELECT pg_try_advisory_xact_lock(?) AS free",
                            &[Arg::Int(key)],
                        )
                        .await?
                        .map(|r| r.boolean("free"))
                        .transpose()?
                        .unwrap_or(false);
                    if free { Some(dispossess(tx, id, now).await?) } else { None }
                }),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn lock_keys_are_stable_positive_and_differ() {
        assert_eq!(lock_key("worker-1"), lock_key("worker-1"));
        assert_ne!(lock_key("worker-1"), lock_key("worker-2"));
        assert!(lock_key("").is_positive() && lock_key("x").is_positive());
    }

    #[test]
    fn a_lock_name_is_invalid_input_when_too_long() {
        let long = "w".repeat(10_000);
        let w = channel_core::workers::WorkerInfo::this_process(long, channel_core::Timestamp(0));
        assert!(super::check(&w).is_err());
    }
}
