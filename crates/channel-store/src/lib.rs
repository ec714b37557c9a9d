//! # channel-store
//!
//! [`SqlStore`]: the SQL implementation of [`channel_core::Store`] on [sqlx], with SQLite as
//! the embedded default and PostgreSQL behind the cargo feature `postgres`.
//!
//! * **SQLite** runs in WAL mode with `synchronous=NORMAL`, foreign keys on, a busy
//!   timeout and a WAL checkpoint every 8000 pages (32 MiB). Every write goes through **one writer connection** (a pool of one) in a
//!   transaction started with `BEGIN IMMEDIATE`, so writes are serialized without lock
//!   upgrades; reads use a separate set of read-only connections. A transaction's statements
//!   are sent in as few calls as possible (`BEGIN IMMEDIATE` rides with the first statement,
//!   the final writes of an operation with its `COMMIT`), because each call is a round trip
//!   to the connection's worker thread.
//! * **PostgreSQL** uses one pool. Races between processes are settled by unique constraints
//!   (the provider id of a message, the address of an identity, a partial unique index
//!   allowing one active conversation per thread, one unfinished job per unique key): a
//!   transaction that loses such a race is rolled back and run again, and then finds the
//!   winner's rows. Jobs are claimed with `FOR UPDATE SKIP LOCKED`.
//!   [`LeaseStore::notify`](channel_core::LeaseStore::notify) is `pg_notify`, and
//!   [`LeaseStore::notifications`](channel_core::LeaseStore::notifications) is fed by a background
//!   `LISTEN` task on `channel_events` and `channel_jobs` that stops with the store.
//! * `ingest_batch` is one transaction that reads what the rules need with a few set-based
//!   queries, applies the rules in memory, in order, and writes back with multi-row
//!   statements; `ingest` is a batch of one.
//! * Connections are handed out from fixed sets ([`SqlStoreOptions::max_read_connections`],
//!   [`SqlStoreOptions::max_connections`]); a connection left in a transaction by an error or
//!   a cancelled call is rolled back before its next use, a broken one is reconnected.
//! * Every call runs under a named time limit ([`SqlStoreOptions::operation_timeout`],
//!   10 s by default) and fails with `StoreError::Timeout { operation, after }` past it.
//! * Inputs are checked before anything is written, the same way on both backends (see
//!   [`limits`]): NUL bytes and over-long fields are `InvalidInput`. Unknown values read back
//!   are `Corrupt`; pool and connection failures are `Unavailable`.
//! * The schema is embedded (`migrations/sqlite`, `migrations/postgres`) and applied on open,
//!   or explicitly with [`SqlStore::migrate`].
//!
//! ## Example
//!
//! ```
//! use channel_core::{
//!     AccountStore, ChannelKind, ConversationId, Direction, IdentityId, IdentityInfo, IngestDisposition,
//!     IngestRequest, LifecyclePolicy, MessageId, MessageStore, NewAccount, Origin, StoredInbound,
//!     Timestamp,
//! };
//! use channel_store::SqlStore;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = SqlStore::open_sqlite_temporary().await?;
//! let now = Timestamp::now();
//! let account = store.create_account(NewAccount::new(ChannelKind::from_static("email"), "me@example.com"), now).await?;
//!
//! let request = IngestRequest {
//!     account_id: account.id,
//!     new_message_id: MessageId::new(),
//!     new_identity_id: IdentityId::new(),
//!     new_conversation_id: ConversationId::new(),
//!     message: StoredInbound {
//!         provider_id: "<m1@example.org>".into(),
//!         thread_key: "<m1@example.org>".into(),
//!         remote: IdentityInfo::new("alice@example.org").with_display_name("Alice"),
//!         direction: Direction::Inbound,
//!         origin: Origin::Remote,
//!         client_key: None,
//!         text: Some("Hello!".into()),
//!         html: None,
//!         reply_to: None,
//!         references: vec![],
//!         attachments: vec![],
//!         parse_error: None,
//!         defects: Vec::new(),
//!         sent_at: now,
//!         cursor: None,
//!     },
//!     policy: LifecyclePolicy::default(),
//!     now,
//! };
//! let first = store.ingest(request.clone()).await?;
//! assert_eq!(first.disposition, IngestDisposition::Stored);
//! assert!(first.conversation_opened);
//!
//! // Delivered again: deduplicated on the provider id.
//! let again = store.ingest(request).await?;
//! assert_eq!(again.disposition, IngestDisposition::Duplicate);
//! assert_eq!(again.message_id, first.message_id);
//!
//! let messages = store.messages(first.conversation_id, 10).await?;
//! assert_eq!(messages[0].text.as_deref(), Some("Hello!"));
//! # Ok::<(), channel_core::StoreError>(())
//! # }).unwrap();
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use channel_core::StoreError;

mod codec;
mod conns;
mod db;
mod error;
mod feed;
mod group_commit;
mod ingest;
pub mod limits;
#[cfg(feature = "postgres")]
mod notify;
mod ops;
mod options;
mod queue;
mod store_impl;
mod workers;

pub use db::Backend;
pub use options::SqlStoreOptions;

use db::Pools;
use error::{Fail, Res};

/// The SQL [`Store`](channel_core::Store): SQLite or PostgreSQL.
///
/// Cheap to clone (the clones share the pools). Open it with [`SqlStore::open_sqlite`],
/// [`SqlStore::open_sqlite_temporary`], `SqlStore::connect_postgres` (feature `postgres`) or
/// [`SqlStore::builder`] for the settings.
#[derive(Clone, Debug)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pools: Pools,
    group_commit: group_commit::GroupCommit,
    options: SqlStoreOptions,
    #[cfg(feature = "postgres")]
    hub: Option<notify::Hub>,
    /// Where the workers' liveness locks live.
    locks: workers::LockPlace,
    /// The SQLite database file.
    sqlite_path: Option<std::path::PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
#[cfg(feature = "postgres")]
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl SqlStore {
    /// Settings for opening a store.
    pub fn builder() -> SqlStoreOptions {
        SqlStoreOptions::default()
    }

    /// Opens (creating it if needed) the SQLite database at `path_or_url` with the default
    /// settings; see [`SqlStoreOptions::open_sqlite`].
    pub async fn open_sqlite(path_or_url: &str) -> Result<Self, StoreError> {
        SqlStoreOptions::default().open_sqlite(path_or_url).await
    }

    /// A private SQLite database in a temporary file that is deleted when the store is
    /// dropped; see [`SqlStoreOptions::open_sqlite_temporary`].
    pub async fn open_sqlite_temporary() -> Result<Self, StoreError> {
        SqlStoreOptions::default().open_sqlite_temporary().await
    }

    /// Connects to PostgreSQL with the default settings; see
    /// [`SqlStoreOptions::connect_postgres`].
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn connect_postgres(url: &str) -> Result<Self, StoreError> {
        SqlStoreOptions::default().connect_postgres(url).await
    }

    /// The database behind this store.
    pub fn backend(&self) -> Backend {
        self.inner.pools.backend()
    }

    /// The limit of every database call.
    pub fn operation_timeout(&self) -> Duration {
        self.inner.options.operation_timeout
    }

    /// Applies the embedded migrations that are not applied yet. Safe to call from several
    /// processes at once on PostgreSQL (the migrator takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let after = self.inner.options.operation_timeout.max(Duration::from_secs(60));
        let run = async {
            match &self.inner.pools {
                Pools::Sqlite { write, .. } => {
                    let mut held = write.acquire().await?;
                    SQLITE_MIGRATOR.run(held.conn()?).await
                }
                #[cfg(feature = "postgres")]
                Pools::Postgres { conns } => {
                    let mut held = conns.acquire().await?;
                    POSTGRES_MIGRATOR.run(held.conn()?).await
                }
            }
        };
        match tokio::time::timeout(after, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(sqlx::migrate::MigrateError::Execute(e))) => {
                Err(db::to_store_error(e, "migrate"))
            }
            Ok(Err(e)) => Err(StoreError::Backend(Box::new(e))),
            Err(_) => Err(StoreError::Timeout { operation: "migrate", after }),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", async {
            self.pools().reader().fetch_optional("SELECT 1", &[]).await?;
            Ok(())
        })
        .await
    }

    /// Closes the pools: later calls fail with `Unavailable`. Waits for connections in use
    /// to be returned.
    pub async fn close(&self) {
        self.inner.pools.close().await;
    }

    pub(crate) fn pools(&self) -> &Pools {
        &self.inner.pools
    }

    pub(crate) fn is_pg(&self) -> bool {
        self.inner.pools.is_pg()
    }

    /// The SQLite database file (`None` on PostgreSQL): for backups and tools.
    pub fn database_path(&self) -> Option<&std::path::Path> {
        self.inner.sqlite_path.as_deref()
    }

    /// Tests only: sets `PRAGMA max_page_count` on the SQLite writer (a full disk and the
    /// space that comes back, without filling a disk). Nothing on PostgreSQL.
    #[doc(hidden)]
    pub async fn sqlite_set_max_pages(&self, pages: u32) -> Result<(), StoreError> {
        if self.pools().is_pg() {
            return Ok(());
        }
        let sql = format!("PRAGMA max_page_count = {pages}");
        self.run("max_page_count", async {
            self.pools().autocommit_writer().fetch_all(&sql, &[]).await?;
            Ok(())
        })
        .await
    }

    /// Whether ingest writes its events (always, but in benchmarks).
    pub(crate) fn ingest_events(&self) -> bool {
        self.inner.options.ingest_events
    }

    pub(crate) fn lock_place(&self) -> &workers::LockPlace {
        &self.inner.locks
    }

    /// Runs an operation under the store's time limit and maps its error.
    pub(crate) async fn run<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = Res<T>>,
    ) -> Result<T, StoreError> {
        let after = self.inner.options.operation_timeout;
        match tokio::time::timeout(after, fut).await {
            Ok(r) => r.map_err(|f| f.into_store(operation)),
            Err(_) => Err(StoreError::Timeout { operation, after }),
        }
    }

    /// Whether a failed transaction should run again (after its `tries`-th failure).
    pub(crate) async fn should_retry(&self, fail: &Fail, tries: u32) -> bool {
        if tries > self.inner.options.transaction_retries || !fail.is_retryable(self.is_pg()) {
            return false;
        }
        // Jittered exponential backoff, at most ~50 ms.
        let base = 1u64 << tries.min(5);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u64;
        tokio::time::sleep(Duration::from_micros(base * 1000 + jitter * base)).await;
        true
    }
}

/// Runs `$body` in a write transaction (as `$tx: &mut Tx`), commits, and runs it all again
/// when it lost a race on PostgreSQL.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store: &$crate::SqlStore = $store;
        let mut tries: u32 = 0;
        loop {
            let result: $crate::error::Res<_> = async {
                let mut tx = store.pools().begin_write().await?;
                let value: $crate::error::Res<_> = async {
                    let $tx = &mut tx;
                    Ok($body)
                }
                .await;
                match value {
                    Ok(value) => {
                        tx.commit().await?;
                        Ok(value)
                    }
                    Err(fail) => {
                        // At once, so that no lock outlives the failed operation.
                        let _ = tx.rollback().await;
                        Err(fail)
                    }
                }
            }
            .await;
            match result {
                Err(fail) => {
                    tries += 1;
                    if !store.should_retry(&fail, tries).await {
                        break Err(fail);
                    }
                }
                ok => break ok,
            }
        }
    }};
}
pub(crate) use write_tx;
