//! A PostgreSQL outage under traffic: an `inbox run` worker on a private PostgreSQL server of
//! its own, with a Telegram account on the loopback MTProto server that people keep writing
//! to. The server is stopped and started again: the worker keeps running, `/healthz` says what
//! is wrong while it lasts, and afterwards every message is stored exactly once and every
//! reply queued before the outage is sent.
#![cfg(feature = "postgres")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use inbox::worker::WorkerOptions;
use reqwest::Method;
use serde_json::{Value, json};
use support::telegram::{log_in, options, worker_with_an_account};
use support::{Api, until};

const WAIT: Duration = Duration::from_secs(60);

/// A PostgreSQL server of the test's own (initdb, pg_ctl), on a free loopback port.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// `program` of PostgreSQL's, as the `postgres` user when the test runs as root
    /// (initdb and postgres refuse to run as root).
    fn command(&self, program: &str) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().expect("a PostgreSQL program runs");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Self {
        let bin = postgres_bin().expect(
            "PostgreSQL's programs (initdb, pg_ctl): scripts/test installs Debian's postgresql",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("db");
        if is_root() {
            let _ =
                Command::new("useradd").args(["--system", "--no-create-home", "postgres"]).output();
            let ok = Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown the data directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Self { bin, data, port, _dir: dir };
        pg.run(
            "initdb",
            &["-D", pg.data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        pg.up();
        pg
    }

    fn up(&self) {
        let options = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.data.parent().unwrap().display()
        );
        let log = self.data.parent().unwrap().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn down(&self) {
        self.run("pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap_or_default();
        let _ = self.command("pg_ctl").args(["-D", data, "-m", "immediate", "stop"]).output();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `pg_config --bindir`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().or_else(|| {
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Path::new(&dir).join("initdb").exists().then_some(dir)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_under_traffic_loses_nothing_and_shows_in_healthz() {
    let pg = PrivatePostgres::start();
    let settings = WorkerOptions { database_url: Some(pg.url()), ..options() };
    let (server, worker, _dir, id) = worker_with_an_account(None, settings).await;
    server.add_user(4001, "Hana", Some("hana"));
    let api = Api::new(worker.addr, &worker.token);
    log_in(&api, &id).await;
    let health = format!("http://{}/healthz", worker.addr);

    // Traffic before: a message, and a reply queued to it.
    server.incoming(4001, "before 0");
    let mut conversation = String::new();
    until("the first message is listed", WAIT, async || {
        let page = api.get(&format!("/conversations?account={id}")).await;
        match page["items"][0]["id"].as_str() {
            Some(c) => {
                conversation = c.to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    let path = format!("/conversations/{conversation}/messages");
    let reply = json!({ "text": "reply before the outage", "idempotency_key": "outage-1" });
    let (status, queued) = api.call(Method::POST, &path, Some(reply)).await;
    assert_eq!(status, 202, "{queued}");

    // The outage: people keep writing; the worker keeps answering /healthz, with 503 and
    // the store's error.
    pg.down();
    let mut written = 1;
    let http = reqwest::Client::new();
    let mut saw_store_error = false;
    for _ in 0..20 {
        server.incoming(4001, &format!("during {written}"));
        written += 1;
        let r = http.get(&health).timeout(Duration::from_secs(5)).send().await.expect("alive");
        if r.status().as_u16() == 503 {
            let body: Value = r.json().await.unwrap();
            saw_store_error |= body["store"].as_str().is_some_and(|s| !s.is_empty());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(saw_store_error, "/healthz named the database while it was down");
    pg.up();

    // Afterwards: healthy, every message stored once, the reply sent once.
    until("healthy again", WAIT, async || {
        http.get(&health).send().await.is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
    for n in 0..3 {
        server.incoming(4001, &format!("after {n}"));
        written += 1;
    }
    let texts = async || -> Vec<String> {
        let page = api.get(&format!("{path}?limit=500")).await;
        page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["direction"] == "inbound")
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .collect()
    };
    until("every message is stored", WAIT, async || texts().await.len() >= written).await;
    let mut stored = texts().await;
    stored.sort();
    let before = stored.len();
    stored.dedup();
    assert_eq!((before, stored.len()), (written, written), "each once: {stored:?}");
    let message = queued["message_id"].as_str().unwrap();
    until("the reply is sent", WAIT, async || {
        api.get(&format!("/messages/{message}")).await["status"] == "sent"
    })
    .await;
    let replies =
        server.messages().iter().filter(|m| m.out && m.text == "reply before the outage").count();
    assert_eq!(replies, 1, "sent once");
    worker.shutdown().await;
}
