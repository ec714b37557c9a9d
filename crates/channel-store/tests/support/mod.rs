//! Helpers shared by the integration tests: a fresh store per test.
#![allow(dead_code)]

pub mod differential;

use channel_store::SqlStore;

/// A fresh SQLite store in its own temporary file (deleted with the store).
pub async fn sqlite() -> SqlStore {
    SqlStore::open_sqlite_in_memory().await.expect("open a temporary SQLite store")
}

/// A fresh SQLite store in a file of `dir`, for tests that open the same file twice.
pub async fn sqlite_in(dir: &tempfile::TempDir) -> (SqlStore, std::path::PathBuf) {
    let path = dir.path().join("store.db");
    let store =
        SqlStore::open_sqlite(path.to_str().expect("utf-8 path")).await.expect("open SQLite");
    (store, path)
}

#[cfg(feature = "postgres")]
pub mod pg {
    use std::time::{SystemTime, UNIX_EPOCH};

    use channel_store::{SqlStore, SqlStoreOptions};
    use sqlx::{Connection, Executor, PgConnection, Row};

    /// The server the PostgreSQL tests run against.
    pub fn server_url() -> String {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => panic!(
                "TEST_DATABASE_URL is not set: the PostgreSQL tests need a server. Install one \
                 (`apt-get install postgresql`) and run the tests with `scripts/test`, which starts \
                 a private server and exports TEST_DATABASE_URL, or export \
                 TEST_DATABASE_URL=postgres://user@host:port/db yourself."
            ),
        }
    }

    /// `url` with its database name replaced by `db`.
    pub fn with_database(url: &str, db: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
        let path_start = base[scheme_end..].find('/').map(|i| scheme_end + i).unwrap_or(base.len());
        let mut out = format!("{}/{db}", &base[..path_start]);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    fn unix_secs() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    /// Creates a fresh database `test_<secs>_<uuid>` and returns its URL. Test databases
    /// older than an hour (left by earlier runs) are dropped on the way.
    pub async fn fresh_database() -> String {
        let url = server_url();
        let mut admin = PgConnection::connect(&url).await.expect("connect to TEST_DATABASE_URL");
        let now = unix_secs();
        let old = admin
            .fetch_all("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'")
            .await
            .expect("list databases");
        for row in old {
            let name: String = row.get(0);
            let stale = name
                .split('_')
                .nth(1)
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|t| t + 3600 < now);
            if stale {
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await;
            }
        }
        let name = format!("test_{now}_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("create test database");
        let _ = admin.close().await;
        with_database(&url, &name)
    }

    /// A fresh PostgreSQL store in its own database.
    pub async fn store() -> SqlStore {
        store_with(SqlStore::builder().max_connections(8)).await
    }

    /// A fresh PostgreSQL store with these options.
    pub async fn store_with(options: SqlStoreOptions) -> SqlStore {
        let url = fresh_database().await;
        options.connect_postgres(&url).await.expect("connect to the test database")
    }
}
