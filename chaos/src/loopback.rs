//! The loopback MTProto server as a process of its own (`loopback-server --accounts N
//! --sessions FILE`): one Telegram account per server, its state kept while workers die, and
//! every connection it served written to the sessions file with the client's pid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

/// The running server.
pub struct Loopback {
    io: Mutex<(ChildStdin, Lines<BufReader<ChildStdout>>)>,
    /// Each account's server address.
    pub addrs: Vec<SocketAddr>,
    /// Where it writes the connections it served.
    pub sessions: PathBuf,
    _child: Child,
}

impl Loopback {
    /// Starts `bin` with `accounts` accounts, writing sessions to `sessions`.
    pub async fn start(bin: &Path, accounts: usize, sessions: &Path) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args(["--accounts", &accounts.to_string(), "--sessions"])
            .arg(sessions)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e} (build it: cargo build -p channel-benches --bin loopback-server)", bin.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the loopback server has no standard input or output".into());
        };
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await
            .map_err(|e| format!("reading the loopback server: {e}"))?
            .ok_or("the loopback server ended before it listened")?;
        let addrs = first
            .strip_prefix("listening ")
            .ok_or_else(|| format!("the loopback server said `{first}`"))?
            .split_whitespace()
            .map(|a| a.parse().map_err(|e| format!("address `{a}`: {e}")))
            .collect::<Result<Vec<SocketAddr>, String>>()?;
        Ok(Self {
            io: Mutex::new((stdin, lines)),
            addrs,
            sessions: sessions.to_owned(),
            _child: child,
        })
    }

    /// Runs `command` for account `k`; its answer (an `error` answer is an `Err`).
    pub async fn command(&self, k: usize, command: &str) -> Result<String, String> {
        let mut io = self.io.lock().await;
        let (stdin, lines) = &mut *io;
        stdin
            .write_all(format!("@{k} {command}\n").as_bytes())
            .await
            .map_err(|e| format!("the loopback server is gone: {e}"))?;
        let answer = lines
            .next_line()
            .await
            .map_err(|e| format!("reading the loopback server: {e}"))?
            .ok_or("the loopback server ended")?;
        match answer.strip_prefix("error ") {
            Some(why) => Err(format!("loopback `{command}`: {why}")),
            None => Ok(answer),
        }
    }
}
