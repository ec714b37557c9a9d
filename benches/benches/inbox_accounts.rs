//! 200 Telegram accounts in one `inbox run` worker (issue 16): the memory each costs.
//!
//! The loopback MTProto server runs in a process of its own (`loopback-server`, this
//! package's binary, driven by line commands on its standard input), so that only the
//! worker's memory is measured. The worker runs in this process on SQLite. Its `VmRSS` is read
//! once it started with no account (after one API request), then the accounts are added and
//! logged in over HTTP (phone, then code; each given the server's auth key first, as Telegram's
//! key exchange would), and `VmRSS` is read again once all are connected and have been idle
//! for a while. Target: at most 1 MB of growth per account.
//!
//! grammers gives every connection a zeroed read buffer of 1 MiB + 8 KiB. With glibc's
//! default, dynamic mmap threshold, once a block that large was freed (the logins' own
//! connections) the next ones come from the heap and are zeroed page by page, so each is
//! resident in full; with `MALLOC_MMAP_THRESHOLD_=131072` they stay fresh mappings whose
//! untouched pages cost nothing. The bench prints which it ran with.
//!
//! Run: `cargo bench -p channel-benches --bench inbox_accounts` (about a minute once built;
//! `INBOX_BENCH_ACCOUNTS` sets the number of accounts, 200 by default).

#[path = "support/inbox.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6};
use std::process::Stdio;
use std::time::{Duration, Instant};

use channel_telegram::session::{SESSION_KEY, StoredDc, StoredSession};
use support::{API_HASH, API_ID, Api, CODE, vm_rss_kib};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

const IDLE: Duration = Duration::from_secs(10);

/// The loopback server's process, spoken to line by line.
struct Remote {
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Remote {
    async fn line(&mut self) -> String {
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line());
        line.await.expect("an answer in time").expect("stdout").expect("the server is running")
    }

    /// Sends one command; its answer (which must not be an error).
    async fn ask(&mut self, command: &str) -> String {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await.expect("stdin");
        self.stdin.flush().await.expect("stdin");
        let answer = self.line().await;
        assert!(!answer.starts_with("error"), "{command}: {answer}");
        answer
    }
}

fn phone(i: usize) -> String {
    format!("+1555{i:06}")
}

fn main() {
    let accounts: usize =
        std::env::var("INBOX_BENCH_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(accounts));
}

async fn run(accounts: usize) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loopback-server"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the loopback-server binary runs");
    let mut remote = Remote {
        stdin: child.stdin.take().expect("stdin"),
        stdout: BufReader::new(child.stdout.take().expect("stdout")).lines(),
    };
    let listening = remote.line().await;
    let address: SocketAddrV4 = listening
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("`listening <addr>`, not `{listening}`"));
    remote.ask("require-login").await;
    remote.ask(&format!("api {API_ID} {API_HASH}")).await;
    for i in 0..accounts {
        remote.ask(&format!("phone {} {CODE}", phone(i))).await;
    }
    let key = remote.ask("key").await;
    let mut words = key.split_whitespace().skip(1);
    let dc: i32 = words.next().and_then(|d| d.parse().ok()).expect("a dc id");
    let auth_key = words.next().expect("an auth key").to_owned();
    // What the loopback server's `provision_auth_key` stores, for a server in another process.
    let unreachable = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    let session = StoredSession {
        version: 1,
        home_dc: dc,
        dcs: vec![StoredDc {
            id: dc,
            ipv4: unreachable,
            ipv6: SocketAddrV6::new(unreachable.ip().to_ipv6_mapped(), 0, 0, 0),
            auth_key: Some(auth_key),
        }],
        me: None,
    }
    .to_bytes();

    let dir = tempfile::tempdir().expect("tempdir");
    let worker = support::worker(dir.path()).await;
    let api = Api::of(&worker);
    api.get("/accounts").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = vm_rss_kib();
    println!("VmRSS with the worker started and no account: {before} KiB");

    let started = Instant::now();
    let mut ids = Vec::with_capacity(accounts);
    for i in 0..accounts {
        let id = api.add_telegram_account(&format!("bench-{i}"), dc, address).await;
        let state = worker.runtime.engine().account_state(id.parse().expect("an account id"));
        state.put(SESSION_KEY, &session).await.expect("auth key");
        api.login(&id, &phone(i)).await;
        ids.push(id);
    }
    println!("{accounts} accounts added and logged in in {:.1?}", started.elapsed());
    let waited = api.wait_connected(&ids, Duration::from_secs(300)).await;
    println!("all connected {:.1?} later", waited);
    let connections = remote.ask("connections").await;
    println!("loopback server: {connections} (open, accepted)");
    let connected = vm_rss_kib();
    tokio::time::sleep(IDLE).await;
    let after = vm_rss_kib();
    tokio::time::sleep(IDLE).await;
    let later = vm_rss_kib();
    api.wait_connected(&ids, Duration::from_secs(10)).await;
    println!(
        "VmRSS: {before} KiB with none, {connected} KiB when all were connected, {after} KiB \
         {IDLE:?} later, {later} KiB {IDLE:?} after that"
    );
    let per = (after.saturating_sub(before)) as f64 / accounts as f64;
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let threshold = std::env::var("MALLOC_MMAP_THRESHOLD_").unwrap_or_else(|_| "unset".into());
    println!("\n{date}, MALLOC_MMAP_THRESHOLD_ {threshold}\n");
    println!("| accounts | VmRSS before / after | growth per account | target |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| {accounts} | {:.1} / {:.1} MiB | {:.0} KiB ({:.3} MiB) | <= 1 MB: **{}** |",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per,
        per / 1024.0,
        if per * 1024.0 <= 1_000_000.0 { "met" } else { "NOT met" }
    );
    worker.shutdown().await;
    drop(remote);
    let _ = child.wait().await;
}
