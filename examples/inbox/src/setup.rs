//! Where the worker keeps its things: the database, the attachment blobs and the key that
//! encrypts account state; and the demo account it runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use channel_core::state::{CHANNEL_STATE_KEYS, StateKey, StateKeys};
use channel_core::{Account, ChannelKind, NewAccount, Store, Timestamp};
use channel_store::SqlStore;

use crate::error::{Error, ResultExt};

/// The directory everything goes in unless told otherwise.
pub const BASE_DIR: &str = "./target/inbox";
/// The display name of the demo account (how a second run finds it again).
pub const DEMO_ACCOUNT: &str = "inbox demo (memory channel)";

/// The worker's locations, from the environment and the defaults.
#[derive(Debug)]
pub struct Paths {
    /// `INBOX_DATABASE`: a SQLite file path or `sqlite:` URL, or a `postgres://` URL.
    pub database: String,
    /// Attachment bytes.
    pub blobs: PathBuf,
    /// Where a generated account-state key is kept.
    pub key_file: PathBuf,
}

impl Paths {
    /// Reads `INBOX_DATABASE` and fills in the defaults.
    pub fn from_env() -> Self {
        let base = PathBuf::from(BASE_DIR);
        let database = match std::env::var("INBOX_DATABASE") {
            Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
            _ => base.join("inbox.db").to_string_lossy().into_owned(),
        };
        Self { database, blobs: base.join("blobs"), key_file: base.join("state.key") }
    }

    /// Whether the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.database.starts_with("postgres://") || self.database.starts_with("postgresql://")
    }

    /// The database as it may be logged: a PostgreSQL URL without its password.
    pub fn database_for_log(&self) -> String {
        if !self.is_postgres() {
            return self.database.clone();
        }
        // postgres://user:password@host/db -> postgres://user:***@host/db
        match (self.database.find("://"), self.database.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &self.database[scheme + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!(
                        "{}{}:***{}",
                        &self.database[..scheme + 3],
                        user,
                        &self.database[at..]
                    ),
                    None => self.database.clone(),
                }
            }
            _ => self.database.clone(),
        }
    }
}

/// Opens (creating) the store: SQLite by default, PostgreSQL for a `postgres://` URL when
/// built with the `postgres` feature.
pub async fn open_store(paths: &Paths) -> Result<SqlStore, Error> {
    if paths.is_postgres() {
        return open_postgres(paths).await;
    }
    if !paths.database.starts_with("sqlite:")
        && let Some(dir) = Path::new(&paths.database).parent()
        && !dir.as_os_str().is_empty()
    {
        fs::create_dir_all(dir)
            .context(format!("cannot create the database directory {}", dir.display()))?;
    }
    SqlStore::open_sqlite(&paths.database)
        .await
        .context(format!("cannot open the SQLite database {}", paths.database))
}

#[cfg(feature = "postgres")]
async fn open_postgres(paths: &Paths) -> Result<SqlStore, Error> {
    SqlStore::connect_postgres(&paths.database)
        .await
        .context(format!("cannot connect to PostgreSQL at {}", paths.database_for_log()))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_paths: &Paths) -> Result<SqlStore, Error> {
    Err(Error::msg(
        "INBOX_DATABASE is a PostgreSQL URL, but this build has no PostgreSQL support: \
         run `cargo run -p inbox --features postgres`",
    ))
}

/// Where the account-state keys came from (for the log; keys are never printed).
#[derive(Debug)]
pub enum KeySource {
    /// The `CHANNEL_STATE_KEYS` environment variable.
    Environment,
    /// The keys file, written by an earlier run.
    File(PathBuf),
    /// Generated now and written to the keys file.
    Generated(PathBuf),
}

/// The keys account state is encrypted under (channel-core's keys file format: 64 hex digits
/// per line, the first seals): `CHANNEL_STATE_KEYS`, else the keys file, else a new random
/// key written to a new keys file (mode 0600).
pub fn state_keys(key_file: &Path) -> Result<(StateKeys, KeySource), Error> {
    if let Some(keys) = StateKeys::from_env().context("cannot read the state keys")? {
        return Ok((keys, KeySource::Environment));
    }
    if key_file.exists() {
        let keys = StateKeys::read_file(key_file).context(format!(
            "{} does not hold the state keys; fix it, or delete it to start over with a new \
             database, or set {CHANNEL_STATE_KEYS}",
            key_file.display()
        ))?;
        return Ok((keys, KeySource::File(key_file.to_owned())));
    }
    if let Some(dir) = key_file.parent() {
        fs::create_dir_all(dir).context(format!("cannot create {}", dir.display()))?;
    }
    let keys = StateKeys::new(StateKey::generate());
    keys.create_file(key_file)
        .context(format!("cannot write the new state key to {}", key_file.display()))?;
    Ok((keys, KeySource::Generated(key_file.to_owned())))
}

/// The demo account: found by its name, or created on the first run (and enabled).
pub async fn demo_account(store: &Arc<dyn Store>) -> Result<(Account, bool), Error> {
    let accounts = store.accounts().await.context("cannot list the accounts")?;
    let existing = accounts
        .into_iter()
        .find(|a| a.kind == ChannelKind::from_static("memory") && a.display_name == DEMO_ACCOUNT);
    match existing {
        Some(a) if a.enabled => Ok((a, false)),
        Some(a) => {
            let a = store
                .set_account_enabled(a.id, true, Timestamp::now())
                .await
                .context("cannot enable the demo account")?;
            Ok((a, false))
        }
        None => {
            let a = store
                .create_account(
                    NewAccount::new(ChannelKind::from_static("memory"), DEMO_ACCOUNT),
                    Timestamp::now(),
                )
                .await
                .context("cannot create the demo account")?;
            Ok((a, true))
        }
    }
}
