//! Opening a store: [`SqlStoreOptions`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use channel_core::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::conns::Slots;
use crate::db::{Pools, to_store_error};
use crate::group_commit::GroupCommit;
use crate::{Inner, SqlStore};

/// The least time allowed for opening a database (connecting, creating the file).
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Settings for opening a [`SqlStore`]; start from [`SqlStore::builder`] (or
/// [`SqlStoreOptions::default`]), then call one of the `open_*`/`connect_*` methods.
///
/// ```no_run
/// # async fn demo() -> Result<(), channel_core::StoreError> {
/// use std::time::Duration;
/// use channel_store::SqlStore;
///
/// let store = SqlStore::builder()
///     .operation_timeout(Duration::from_secs(5))
///     .max_read_connections(8)
///     .open_sqlite("/var/lib/channel/store.db")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlStoreOptions {
    pub(crate) operation_timeout: Duration,
    pub(crate) max_read_connections: u32,
    pub(crate) max_connections: u32,
    pub(crate) busy_timeout: Duration,
    pub(crate) migrate: bool,
    pub(crate) listen: bool,
    pub(crate) transaction_retries: u32,
    pub(crate) notification_capacity: usize,
    pub(crate) synchronous_commit: bool,
    pub(crate) ingest_events: bool,
    pub(crate) sqlite_max_pages: Option<u32>,
}

impl Default for SqlStoreOptions {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(10),
            max_read_connections: 4,
            max_connections: 10,
            busy_timeout: Duration::from_secs(5),
            migrate: true,
            listen: true,
            transaction_retries: 8,
            notification_capacity: 1024,
            synchronous_commit: true,
            ingest_events: true,
            sqlite_max_pages: None,
        }
    }
}

impl SqlStoreOptions {
    /// Tests only: caps an SQLite database at `pages` pages (`PRAGMA max_page_count` on every
    /// connection), to see what a full disk does without filling one.
    #[doc(hidden)]
    pub fn sqlite_max_pages(mut self, pages: u32) -> Self {
        self.sqlite_max_pages = Some(pages);
        self
    }

    /// Benchmarks only: `false` leaves ingest's events out of the event feed, to measure what
    /// writing them costs. A store opened so breaks the feed's promise; never use it otherwise.
    #[doc(hidden)]
    pub fn ingest_events(mut self, on: bool) -> Self {
        self.ingest_events = on;
        self
    }

    /// The limit for every database call, including waiting for a connection (default 10 s).
    /// A call that takes longer fails with `StoreError::Timeout` naming the operation.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// SQLite: how many read connections to keep (default 4). Writes always go through one
    /// writer connection.
    pub fn max_read_connections(mut self, n: u32) -> Self {
        self.max_read_connections = n.max(1);
        self
    }

    /// PostgreSQL: the size of the connection pool (default 10), not counting the listener
    /// connection of [`notifications`](channel_core::LeaseStore::notifications).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// SQLite: how long a connection waits for a lock held by another process (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Whether to apply the embedded migrations on open (default `true`). Without it, call
    /// [`SqlStore::migrate`] before use.
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// PostgreSQL: whether to start the `LISTEN` task for
    /// [`notifications`](channel_core::LeaseStore::notifications) on connect (default `true`).
    pub fn listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    /// PostgreSQL: how often a transaction that lost a race (a unique violation on a
    /// concurrent insert, a serialization failure, a deadlock) is retried before the call
    /// fails (default 8).
    pub fn transaction_retries(mut self, n: u32) -> Self {
        self.transaction_retries = n;
        self
    }

    /// PostgreSQL: how many notifications a slow receiver may lag behind (default 1024).
    pub fn notification_capacity(mut self, n: usize) -> Self {
        self.notification_capacity = n.max(1);
        self
    }

    /// PostgreSQL: whether a commit waits until its WAL record is flushed to disk (default
    /// `true`, PostgreSQL's own default). `false` sets `synchronous_commit = off` for the
    /// store's sessions: commits return sooner (about twice the queue operations per
    /// second on a disk with slow flushes), and a crash of the database server (not of the
    /// application) can lose the commits of the last fraction of a second. Nothing is ever
    /// corrupted or half written; a lost claim or completion makes the job run again (jobs
    /// are at-least-once anyway), a lost ingest is fetched and stored again. SQLite always
    /// runs with `synchronous=NORMAL` in WAL mode.
    pub fn synchronous_commit(mut self, on: bool) -> Self {
        self.synchronous_commit = on;
        self
    }

    /// Opens (creating it if needed) the SQLite database at `path_or_url`: a file path, or a
    /// `sqlite:` URL. The database runs in WAL mode with `synchronous=NORMAL`, foreign keys
    /// on and a busy timeout; writes go through one writer connection. In-memory URLs
    /// (`sqlite::memory:`) open a temporary file instead, like
    /// [`open_sqlite_temporary`](Self::open_sqlite_temporary).
    pub async fn open_sqlite(self, path_or_url: &str) -> Result<SqlStore, StoreError> {
        if path_or_url.contains(":memory:") || path_or_url.contains("mode=memory") {
            return self.open_sqlite_temporary().await;
        }
        let base = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url)
                .map_err(|e| StoreError::InvalidInput { field: "url", reason: e.to_string() })?
        } else {
            SqliteConnectOptions::new().filename(path_or_url)
        };
        self.open_sqlite_with(base, None).await
    }

    /// Opens the SQLite database at `path` (see [`open_sqlite`](Self::open_sqlite)).
    pub async fn open_sqlite_path(self, path: impl AsRef<Path>) -> Result<SqlStore, StoreError> {
        let base = SqliteConnectOptions::new().filename(path.as_ref());
        self.open_sqlite_with(base, None).await
    }

    /// A private SQLite database in a temporary file, deleted when the store is dropped: for
    /// tests and short-lived tools. (A temporary file rather than `:memory:`, so that the
    /// writer and the readers share one database in WAL mode.)
    pub async fn open_sqlite_temporary(self) -> Result<SqlStore, StoreError> {
        let dir = tempfile::Builder::new().prefix("channel-store-").tempdir().map_err(|e| {
            StoreError::Unavailable(format!("cannot create a temporary directory: {e}"))
        })?;
        let path: PathBuf = dir.path().join("store.db");
        let base = SqliteConnectOptions::new().filename(&path);
        self.open_sqlite_with(base, Some(dir)).await
    }

    async fn open_sqlite_with(
        self,
        base: SqliteConnectOptions,
        temp: Option<tempfile::TempDir>,
    ) -> Result<SqlStore, StoreError> {
        let connect = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(self.busy_timeout)
            .statement_cache_capacity(256)
            // A larger page cache than the default 2 MiB, and temporary b-trees in memory.
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory")
            // Checkpoint the WAL every 8000 pages (32 MiB) rather than SQLite's 1000: each
            // checkpoint syncs the database file, and hot index pages rewritten by many
            // commits are copied back once. Ingest runs about 30 % faster (benches/README.md).
            .pragma("wal_autocheckpoint", "8000");
        let connect = match self.sqlite_max_pages {
            Some(pages) => connect.pragma("max_page_count", pages.to_string()),
            None => connect,
        };
        let timeout = self.operation_timeout;
        let sqlite_path = Some(connect.get_filename().to_path_buf());
        let locks = crate::workers::LockPlace::beside(connect.get_filename());
        let open = async {
            let write = Slots::open(connect.clone(), 1, true).await?;
            let read =
                Slots::open(connect.pragma("query_only", "ON"), self.max_read_connections, true)
                    .await?;
            Ok::<_, sqlx::Error>(Pools::Sqlite { write, read })
        };
        let open_limit = timeout.max(OPEN_TIMEOUT);
        let pools = match tokio::time::timeout(open_limit, open).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(to_store_error(e, "open_sqlite")),
            Err(_) => {
                return Err(StoreError::Timeout { operation: "open_sqlite", after: open_limit });
            }
        };
        let store = SqlStore {
            inner: Arc::new(Inner {
                pools,
                group_commit: GroupCommit::new(1),
                options: self.clone(),
                #[cfg(feature = "postgres")]
                hub: None,
                locks,
                sqlite_path,
                _temp: temp,
            }),
        };
        if self.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Connects to PostgreSQL at `url` (`postgres://user@host/db`), applies the migrations
    /// and starts the `LISTEN` task for notifications (see [`listen`](Self::listen)).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn connect_postgres(self, url: &str) -> Result<SqlStore, StoreError> {
        use sqlx::postgres::PgConnectOptions;

        let timeout = self.operation_timeout;
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidInput { field: "url", reason: e.to_string() })?
            .application_name("channel-store");
        if !self.synchronous_commit {
            connect = connect.options([("synchronous_commit", "off")]);
        }
        // Connections are opened on first use.
        let conns = match Slots::open(connect.clone(), self.max_connections, false).await {
            Ok(c) => c,
            Err(e) => return Err(to_store_error(e, "connect_postgres")),
        };
        let pools = Pools::Postgres { conns };
        let hub = if self.listen {
            match tokio::time::timeout(
                timeout,
                crate::notify::Hub::start(&connect, self.notification_capacity),
            )
            .await
            {
                Ok(Ok(hub)) => Some(hub),
                Ok(Err(e)) => return Err(to_store_error(e, "connect_postgres")),
                Err(_) => {
                    return Err(StoreError::Timeout {
                        operation: "connect_postgres",
                        after: timeout,
                    });
                }
            }
        } else {
            None
        };
        let store = SqlStore {
            inner: Arc::new(Inner {
                pools,
                group_commit: GroupCommit::new(self.max_connections as usize / 2),
                options: self.clone(),
                hub,
                locks: crate::workers::LockPlace::Postgres(Box::new(connect.clone())),
                sqlite_path: None,
                _temp: None,
            }),
        };
        if self.migrate {
            store.migrate().await?;
        } else {
            // Check that the server answers.
            store.ping().await?;
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use crate::SqlStore;

    /// `PRAGMA name` as an integer or text, on the writer or on a reader.
    async fn pragma(store: &SqlStore, name: &str, writer: bool) -> String {
        let pools = store.pools();
        let ex = if writer { pools.autocommit_writer() } else { pools.reader() };
        let row = ex
            .fetch_optional(&format!("PRAGMA {name}"), &[])
            .await
            .expect("pragma")
            .expect("a row");
        // The result column is named after the pragma, but for `busy_timeout` (`timeout`).
        let col = if name == "busy_timeout" { "timeout" } else { name };
        row.text(col).or_else(|_| row.int(col).map(|n| n.to_string())).expect("value")
    }

    #[tokio::test]
    async fn sqlite_connections_run_with_the_documented_settings() {
        let store = SqlStore::builder()
            .busy_timeout(std::time::Duration::from_millis(4_321))
            .open_sqlite_temporary()
            .await
            .expect("store");
        for writer in [true, false] {
            assert_eq!(pragma(&store, "journal_mode", writer).await, "wal");
            // NORMAL is 1.
            assert_eq!(pragma(&store, "synchronous", writer).await, "1");
            assert_eq!(pragma(&store, "foreign_keys", writer).await, "1");
            assert_eq!(pragma(&store, "busy_timeout", writer).await, "4321");
            assert_eq!(pragma(&store, "wal_autocheckpoint", writer).await, "8000");
        }
        assert_eq!(pragma(&store, "query_only", true).await, "0", "one writer");
        assert_eq!(pragma(&store, "query_only", false).await, "1", "readers only read");
    }
}
