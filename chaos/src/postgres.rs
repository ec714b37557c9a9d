//! The run's own PostgreSQL server (Debian's `initdb` and `pg_ctl`, as the `postgres` user
//! when the run is root), on a free loopback port, so that the run can stop it under traffic
//! and start it again.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

/// The server.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// The directory of PostgreSQL's programs.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        };
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .await
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn data(&self) -> String {
        self.dir.join("db").display().to_string()
    }

    /// Creates a cluster in `dir` and starts it.
    pub async fn start(dir: PathBuf) -> Result<Self, String> {
        let bin = bin_dir().ok_or(
            "PostgreSQL's programs (initdb, pg_ctl) are missing: install Debian's postgresql (scripts/chaos does)",
        )?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if is_root() {
            let _ = Command::new("useradd")
                .args(["--system", "--no-create-home", "postgres"])
                .output()
                .await;
            let chown = Command::new("chown").arg("-R").arg("postgres").arg(&dir).status().await;
            if !chown.is_ok_and(|s| s.success()) {
                return Err(format!("cannot give {} to the postgres user", dir.display()));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let pg = Self { bin, dir, port };
        pg.run("initdb", &["-D", &pg.data(), "-U", "postgres", "-A", "trust", "--no-sync"]).await?;
        pg.up().await?;
        Ok(pg)
    }

    /// Starts the server (again).
    pub async fn up(&self) -> Result<(), String> {
        let options = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-t", "60", "-o", &options, "start"],
        )
        .await
    }

    /// Stops the server (fast shutdown: sessions are ended).
    pub async fn down(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]).await
    }

    /// Its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut c = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            std::process::Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c.args(["-D", &self.data(), "-m", "immediate", "stop"]).output();
    }
}
