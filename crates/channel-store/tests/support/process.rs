//! A worker process of a kill test: this test binary started again as a child running one
//! ignored test (`worker_process`), its stdout read line by line, killed with `SIGKILL`.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use channel_store::SqlStore;
use tokio::sync::mpsc;

/// How long a worker may take to print what is waited for.
pub const WAIT: Duration = Duration::from_secs(60);

/// Opens a SQLite path or a PostgreSQL URL.
pub async fn open(store: &str) -> SqlStore {
    #[cfg(feature = "postgres")]
    if store.starts_with("postgres") {
        return SqlStore::connect_postgres(store).await.expect("connect to PostgreSQL");
    }
    SqlStore::open_sqlite(store).await.expect("open SQLite")
}

/// One worker process and the lines it printed (read by a thread: this crate's tokio has no
/// `process` feature). Killed when dropped.
pub struct Worker {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Worker {
    /// Starts the test `worker_process` of this binary with `env` set to `value`.
    pub fn start(env: &str, value: &str) -> Self {
        let exe = std::env::current_exe().expect("the test binary has a path");
        let mut child = Command::new(exe)
            .args(["--ignored", "--exact", "worker_process", "--nocapture", "--test-threads=1"])
            .env(env, value)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Reads lines until one starts with `prefix`; returns it.
    pub async fn wait_for(&mut self, prefix: &str) -> String {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.starts_with(prefix) {
                    return line;
                }
            }
            panic!("the worker ended before printing {prefix:?}: {:?}", self.seen);
        };
        tokio::time::timeout(WAIT, wait).await.expect("the worker printed it in time")
    }

    /// `kill -9`; returns every line it printed.
    pub async fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("the killed worker is reaped");
        let drain = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
            }
        };
        tokio::time::timeout(WAIT, drain).await.expect("the killed worker's output ends");
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
