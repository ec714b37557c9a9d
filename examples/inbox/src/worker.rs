//! `inbox run`: the worker a deployment runs, on the production providers (email, and
//! Telegram when the app's credentials are given) and its HTTP API.
//!
//! Its data directory (created mode 0700) holds the SQLite database `inbox.db` (unless a
//! `postgres://` database is given), the attachment blobs, the account-state keys
//! (`state.keys`, mode 0600, unless `CHANNEL_STATE_KEYS` is set), the API token
//! (`api.token`, mode 0600) and where the API listens (`api.url`, for the command line).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use channel_core::Engine;
use channel_core::runtime::Runtime;
use channel_core::state::{StateKey, StateKeys};
use channel_email::EmailProvider;
use channel_store::SqlStore;
use channel_telegram::TelegramProvider;
use secrecy::ExposeSecret;

use crate::api::{self, ApiState};

pub use crate::config::WorkerOptions;

/// The process's Prometheus recorder: installed by the first worker of the process.
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "no /metrics: another metrics recorder is installed");
                    None
                }
            }
        })
        .clone()
}

/// How long a stop waits for the HTTP requests in flight.
const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// A running worker: its runtime, its API's address and token.
pub struct RunningWorker {
    /// The runtime (accounts, logins, workers).
    pub runtime: Arc<Runtime>,
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The API's bearer token.
    pub token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    api: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// Stops the API, then the runtime (its accounts are released for other workers).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        // Requests in flight finish; a client that holds on past that is cut off.
        let mut api = self.api;
        if tokio::time::timeout(API_DRAIN, &mut api).await.is_err() {
            tracing::warn!("HTTP requests still open after {API_DRAIN:?}: cut off");
            api.abort();
        }
        match Arc::try_unwrap(self.runtime) {
            Ok(runtime) => {
                runtime.shutdown().await;
            }
            Err(_) => tracing::warn!("the runtime is still in use: its leases will expire"),
        }
    }
}

/// Starts a worker: the store, the engine, the runtime with the providers, and the API.
/// Every failure is one sentence saying what to fix.
pub async fn start(options: WorkerOptions) -> Result<RunningWorker, String> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make {} private (0700): {e}", dir.display()))?;
    let keys = state_keys(&dir.join("state.keys"))?;
    check_state_keys(&dir.join("state.check"), &keys)?;
    let store = match &options.database_url {
        Some(url) if url.starts_with("postgres") => open_postgres(url).await?,
        Some(other) => {
            return Err(format!(
                "--database-url takes a postgres:// URL, not `{other}` (SQLite lives in the data directory)"
            ));
        }
        None => SqlStore::open_sqlite(&dir.join("inbox.db").to_string_lossy())
            .await
            .map_err(|e| format!("cannot open the database in {}: {e}", dir.display()))?,
    };
    let mut builder = Engine::builder(Arc::new(store), keys)
        .blob_dir(options.blob_dir.clone().unwrap_or_else(|| dir.join("blobs")));
    if let Some(id) = &options.worker_id {
        builder = builder.worker_id(id.clone());
    }
    let engine = builder.build().map_err(|e| format!("cannot start the engine: {e}"))?;
    let mut runtime =
        Runtime::with_providers(engine.clone()).provider(Arc::new(EmailProvider::new()));
    if let Some(app) = &options.telegram {
        let hash = app.api_hash.expose_secret().to_owned();
        runtime =
            runtime.provider(Arc::new(TelegramProvider::new().api_credentials(app.api_id, hash)));
    }
    let runtime =
        Arc::new(runtime.start().await.map_err(|e| format!("cannot start the worker: {e}"))?);
    for hook in &options.webhooks {
        let endpoint = crate::webhooks::Endpoint::new(hook)
            .map_err(|e| format!("webhook {}: {e}", hook.url))?;
        // Registered now, whichever worker delivers: what happens from here on is delivered.
        engine
            .feed_consumer(&endpoint.consumer(), channel_core::feed::ConsumerStart::End)
            .await
            .map_err(|e| format!("cannot register the webhook {} on the feed: {e}", hook.url))?;
        runtime
            .watchdog()
            .register(crate::webhooks::delivery_loop(Arc::downgrade(&runtime), endpoint))
            .map_err(|e| format!("cannot start the webhook delivery to {}: {e}", hook.url))?;
    }
    let token = api::token(&dir.join("api.token"))?;
    let listener = api::bind(options.listen).await?;
    let addr = listener.local_addr().map_err(|e| format!("cannot read the API's address: {e}"))?;
    let url = format!("http://{addr}/api/v1");
    std::fs::write(dir.join("api.url"), &url)
        .map_err(|e| format!("cannot write {}: {e}", dir.join("api.url").display()))?;
    let mut state = ApiState::new(engine, token.clone()).runtime(Arc::clone(&runtime));
    if let Some(handle) = prometheus() {
        state = state.metrics(handle, !options.metrics_behind_token);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopping = state.stopping();
    let api = tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
            stopping.cancel();
        };
        if let Err(e) = api::serve(listener, api::router(state), stopped).await {
            tracing::warn!(error = %e, "the HTTP API stopped");
        }
    });
    Ok(RunningWorker { runtime, addr, token, stop, api })
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<SqlStore, String> {
    SqlStore::connect_postgres(url)
        .await
        .map_err(|e| format!("cannot open the PostgreSQL database: {e}"))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<SqlStore, String> {
    Err("this build has no PostgreSQL: build it with `--features postgres`".to_owned())
}

/// `CHANNEL_STATE_KEYS`, else the keys file, else a new key written to it (0600).
fn state_keys(file: &std::path::Path) -> Result<StateKeys, String> {
    if let Some(keys) =
        StateKeys::from_env().map_err(|e| format!("cannot read CHANNEL_STATE_KEYS: {e}"))?
    {
        return Ok(keys);
    }
    if file.exists() {
        return StateKeys::read_file(file)
            .map_err(|e| format!("cannot read the state keys in {}: {e}", file.display()));
    }
    let keys = StateKeys::new(StateKey::generate());
    keys.create_file(file)
        .map_err(|e| format!("cannot write new state keys to {}: {e}", file.display()))?;
    Ok(keys)
}

/// The slot name of the keys check.
const CHECK_SLOT: &str = "inbox/state-keys-check";

/// Refuses keys that cannot open what this data directory sealed: `state.check` holds a value
/// sealed under the keys of the first start, so that a wrong `CHANNEL_STATE_KEYS` (or a
/// replaced `state.keys`) stops the worker at once with the id of the key it needs, instead of
/// every account failing later on state it cannot read.
fn check_state_keys(file: &std::path::Path, keys: &StateKeys) -> Result<(), String> {
    use channel_core::state::StateCipher;
    let cipher = StateCipher::from_keys(keys);
    let nobody = channel_core::AccountId::from(uuid::Uuid::nil());
    match std::fs::read(file) {
        Ok(sealed) => cipher.open(nobody, CHECK_SLOT, &sealed).map(|_| ()).map_err(|e| {
            let needed = StateCipher::key_id_of(&sealed)
                .map_or_else(|| "unknown".to_owned(), |id| id.to_string());
            format!(
                "the account-state keys given (CHANNEL_STATE_KEYS or state.keys) cannot open this data directory's state: it is sealed under key {needed} ({e}); give the keys it was written with",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let sealed = cipher
                .seal(nobody, CHECK_SLOT, b"inbox")
                .map_err(|e| format!("cannot seal the keys check: {e}"))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .and_then(|mut f| f.write_all(&sealed))
                .map_err(|e| format!("cannot write {}: {e}", file.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}
