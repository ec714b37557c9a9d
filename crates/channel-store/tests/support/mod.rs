//! Helpers shared by the integration tests: a fresh store per test.
#![allow(dead_code)]

pub mod differential;
pub mod process;

use channel_store::SqlStore;

/// A fresh SQLite store in its own temporary file (deleted with the store).
pub async fn sqlite() -> SqlStore {
    SqlStore::open_sqlite_temporary().await.expect("open a temporary SQLite store")
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
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};

    use channel_store::{SqlStore, SqlStoreOptions};
    use sqlx::{Connection, Executor, PgConnection, Row};

    /// The server the PostgreSQL tests run against: `TEST_DATABASE_URL`, or else a private
    /// server this test binary starts on a free loopback port (once; it stops when the test
    /// process ends). Without either, the tests fail with the install command.
    pub fn server_url() -> String {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL")
            && !url.is_empty()
        {
            return url;
        }
        static PRIVATE: OnceLock<Result<String, String>> = OnceLock::new();
        match PRIVATE.get_or_init(private_server) {
            Ok(url) => url.clone(),
            Err(why) => panic!(
                "TEST_DATABASE_URL is not set and no private PostgreSQL could be started \
                 ({why}). Install PostgreSQL (`apt-get install postgresql`) or run the tests \
                 with `scripts/test`, which installs it, starts a private server and exports \
                 TEST_DATABASE_URL; or export TEST_DATABASE_URL=postgres://user@host:port/db."
            ),
        }
    }

    /// Debian's PostgreSQL binaries: `/usr/lib/postgresql/<version>/bin`, the newest.
    fn bindir() -> Result<PathBuf, String> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no /usr/lib/postgresql: {e}"))?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").is_file() && b.join("postgres").is_file())
            .collect();
        found.sort();
        found.pop().ok_or_else(|| "no initdb under /usr/lib/postgresql".to_owned())
    }

    fn is_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    /// `program args...`, as the `postgres` user when we are root (initdb and postgres refuse
    /// to run as root).
    fn command(root: bool, program: &Path, args: &[&str]) -> Command {
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program).args(args);
            c
        } else {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }

    fn private_server() -> Result<String, String> {
        let bin = bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("channel-store-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        let dir_s = dir.to_str().ok_or("non-UTF-8 temporary directory")?.to_owned();
        let data = format!("{dir_s}/db");
        let root = is_root();
        if root {
            let owned = Command::new("chown").args(["-R", "postgres", &dir_s]).status();
            if !owned.is_ok_and(|s| s.success()) {
                return Err("cannot hand the data directory to the postgres user".into());
            }
        }
        let initdb = command(
            root,
            &bin.join("initdb"),
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr)));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        // The server runs under a small shell that stops it, and removes its directory, once
        // this test process is gone.
        let script = format!(
            "'{postgres}' -D '{data}' -h 127.0.0.1 -p {port} -k '{dir_s}' -c fsync=off \
             -c max_connections=200 >'{dir_s}/server.log' 2>&1 & pg=$!; \
             while [ -d /proc/{pid} ]; do sleep 0.5; done; \
             kill -INT $pg; wait $pg; rm -rf '{dir_s}'",
            postgres = bin.join("postgres").display(),
            pid = std::process::id(),
        );
        command(root, Path::new("sh"), &["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let port_s = port.to_string();
        let ready = || {
            Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port_s])
                .status()
                .is_ok_and(|s| s.success())
        };
        while !ready() {
            if std::time::Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(format!("{dir_s}/server.log")).unwrap_or_default();
                return Err(format!("postgres did not start within 60 s: {log}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
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
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .await;
            }
        }
        let name = format!("test_{now}_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
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
