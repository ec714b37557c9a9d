//! `inbox run` workers as processes: started from the debug build with a configuration file
//! of their own, killed with `SIGKILL`, started again with the same data directory and worker
//! id (as systemd would), each logging to `<name>.log`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::api::Api;

/// What every worker shares.
#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// The `inbox` binary.
    pub bin: PathBuf,
    /// The run's directory (each worker's data directory and log in it).
    pub dir: PathBuf,
    /// The PostgreSQL database.
    pub database_url: String,
    /// `CHANNEL_STATE_KEYS`, the same for every worker.
    pub state_keys: String,
    /// The webhook receiver.
    pub webhook_url: String,
    /// Its secret.
    pub webhook_secret: String,
    /// The Telegram app the loopback servers accept.
    pub telegram_app: (i32, String),
}

/// One worker: its name (also its worker id), its fixed API port, and its process while it
/// runs.
pub struct Worker {
    /// `w0`, `w1`, ...
    pub name: String,
    port: u16,
    child: Option<Child>,
    /// When it was last started.
    pub started: Option<Instant>,
}

impl Worker {
    /// Its data directory.
    fn data_dir(&self, s: &FleetSettings) -> PathBuf {
        s.dir.join(&self.name)
    }

    /// Whether its process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// The workers.
pub struct Fleet {
    /// Their settings.
    pub settings: FleetSettings,
    /// The workers, by index.
    pub workers: Vec<Worker>,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl Fleet {
    /// `n` workers, not started; their configuration files are written.
    pub fn new(settings: FleetSettings, n: usize) -> Result<Self, String> {
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let w =
                Worker { name: format!("w{i}"), port: free_port()?, child: None, started: None };
            let config = format!(
                "data_dir = {data:?}\nblob_dir = {blobs:?}\ndatabase_url = {db:?}\nlisten = \"127.0.0.1:{port}\"\nworker_id = {name:?}\n\n[telegram]\napi_id = {api_id}\napi_hash = {api_hash:?}\n\n[[webhooks]]\nurl = {hook:?}\nsecret = {secret:?}\nevents = [\"message_received\"]\n",
                data = w.data_dir(&settings).display().to_string(),
                blobs = settings.dir.join("blobs").display().to_string(),
                db = settings.database_url,
                port = w.port,
                name = w.name,
                api_id = settings.telegram_app.0,
                api_hash = settings.telegram_app.1,
                hook = settings.webhook_url,
                secret = settings.webhook_secret,
            );
            let file = settings.dir.join(format!("{}.toml", w.name));
            std::fs::write(&file, config)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            workers.push(w);
        }
        Ok(Self { settings, workers })
    }

    /// Starts worker `i` (its process; it is not waited for).
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let s = &self.settings;
        let w = &mut self.workers[i];
        let log = s.dir.join(format!("{}.log", w.name));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&s.bin)
            .arg("run")
            .arg("--config")
            .arg(s.dir.join(format!("{}.toml", w.name)))
            .env("CHANNEL_STATE_KEYS", &s.state_keys)
            .env("RUST_LOG", std::env::var("CHAOS_WORKER_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {} ({}): {e}", w.name, s.bin.display()))?;
        w.child = Some(child);
        w.started = Some(Instant::now());
        Ok(())
    }

    /// Whether worker `i` was started and its process has ended by itself.
    pub fn exited(&mut self, i: usize) -> bool {
        self.workers[i].child.as_mut().is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Kills worker `i` with `SIGKILL` and reaps it: when, and the pid it had.
    pub async fn kill(&mut self, i: usize) -> Option<(SystemTime, u32)> {
        let mut child = self.workers[i].child.take()?;
        let pid = child.id()?;
        let at = SystemTime::now();
        let _ = child.start_kill();
        let _ = child.wait().await;
        Some((at, pid))
    }

    /// The API of worker `i` (its token is read from its data directory, written at its first
    /// start).
    pub fn api(&self, i: usize) -> Option<Api> {
        let w = &self.workers[i];
        let token = std::fs::read_to_string(w.data_dir(&self.settings).join("api.token")).ok()?;
        Some(Api::new(&format!("http://127.0.0.1:{}", w.port), token.trim()))
    }

    /// The APIs of the running workers.
    pub fn running_apis(&self) -> Vec<Api> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i].running())
            .filter_map(|i| self.api(i))
            .collect()
    }

    /// Waits until worker `i` answers `/healthz` with 200.
    pub async fn wait_healthy(&self, i: usize, wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(api) = self.api(i)
                && api.healthy().await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.settings.dir.join(format!("{}.log", self.workers[i].name));
                return Err(format!(
                    "worker {} is not healthy after {wait:?}; see {}",
                    self.workers[i].name,
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which accounts each running worker holds, from `GET /workers` of any running worker:
    /// worker name -> account ids.
    pub async fn holdings(&self) -> Option<Vec<(String, Vec<String>)>> {
        for api in self.running_apis() {
            if let Ok(Value::Array(list)) = api.get("/workers").await {
                return Some(
                    list.iter()
                        .filter(|w| w["alive"] == true)
                        .map(|w| {
                            let ids = w["accounts"]
                                .as_array()
                                .map(|a| {
                                    a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()
                                })
                                .unwrap_or_default();
                            (w["id"].as_str().unwrap_or_default().to_owned(), ids)
                        })
                        .collect(),
                );
            }
        }
        None
    }
}

/// The path of a binary of the debug build.
pub fn binary(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it first (scripts/chaos does: cargo build --workspace --all-features --bins)",
            path.display()
        ))
    }
}
