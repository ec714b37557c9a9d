//! `loopback-server`: channel-telegram's loopback MTProto server as a process of its own, for
//! benchmarks and chaos tests that need Telegram outside the process under test.
//!
//! ```text
//! cargo run --release -p channel-benches --bin loopback-server -- [--port PORT] [--auth-key HEX]
//!     [--accounts N] [--sessions FILE]
//! ```
//!
//! It listens on `127.0.0.1:PORT` (a free port by default) with the given auth key (512 hex
//! digits; a random one by default), prints one line `listening <addr>`, and runs until its
//! standard input closes or it is killed. With `--accounts N` it serves N Telegram accounts,
//! each a server of its own (its own world, on `PORT + k`, or a free port each) and prints
//! `listening <addr 0> <addr 1> ...`; its state outlives the clients, so a worker killed and
//! started again finds its account as it left it.
//!
//! With `--sessions FILE`, every connection is appended to FILE as a line when it opens and
//! when it closes: `open|close <account> <connection> <opened, unix ms> <closed, unix ms or
//! -> <client address> <client pid or ->`. The client's pid is looked up in `/proc` as the
//! connection is accepted (Linux; `-` elsewhere or when not allowed), so that a harness can
//! tell which process held an account and that no account was connected from two at once.
//!
//! Each line on standard input is a command, answered by exactly one line on standard output
//! (`error <why>` when it cannot be done). A command starting with `@K ` is for account K
//! (from 0); without it, for account 0:
//!
//! | command | does | answer |
//! | --- | --- | --- |
//! | `key` | | `key <dc id> <auth key, hex>`: what an account's session needs |
//! | `require-login` | the key is logged out until a login succeeds | `ok` |
//! | `phone <phone> <code> [password]` | lets `phone` log in with `code` (and a 2FA password) | `ok` |
//! | `api <api id> <api hash>` | the app credentials logins must carry | `ok` |
//! | `user <id> <first name> [username]` | adds a user who can write to the owner | `ok` |
//! | `incoming <from> <text>` | a private message from user `from`, stored and pushed | `ok <message id>` |
//! | `connections` | | `connections <open> <accepted since the start>` |
//! | `messages` | | `messages <how many the world holds>` |
//! | `fault none \| blackhole \| half-open \| refuse \| delay <ms>` | the server-wide fault | `ok` |
//! | `drop-connections` | closes every open connection | `ok` |
//! | `sessions` | | `sessions <open> <served since the start>` |
//! | `outgoing` | | `outgoing <JSON>`: what the owner sent, `[{"to", "text", "random_id"}]` |

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use channel_telegram::testing::loopback::{Fault, LoopbackServer, SessionRecord, TestPeer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const USAGE: &str =
    "usage: loopback-server [--port PORT] [--auth-key HEX] [--accounts N] [--sessions FILE]";

/// The command line.
struct Arguments {
    port: u16,
    key: Option<[u8; 256]>,
    accounts: usize,
    sessions: Option<std::path::PathBuf>,
}

fn arguments() -> Result<Arguments, String> {
    let mut port = 0;
    let mut key = None;
    let mut accounts = 1;
    let mut sessions = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--port" => {
                let v = value()?;
                port = v.parse().map_err(|_| format!("--port takes a port number, not `{v}`"))?;
            }
            "--auth-key" => key = Some(parse_key(&value()?)?),
            "--accounts" => {
                let v = value()?;
                accounts = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| format!("--accounts takes 1 to 10000, not `{v}`"))?;
            }
            "--sessions" => sessions = Some(value()?.into()),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    Ok(Arguments { port, key, accounts, sessions })
}

fn parse_key(hex_key: &str) -> Result<[u8; 256], String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("--auth-key is not hex: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!("--auth-key must be 256 bytes (512 hex digits), not {} bytes", b.len())
    })
}

/// Runs one command line; its one-line answer.
fn command(server: &LoopbackServer, line: &str) -> String {
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else { return "error an empty line".to_owned() };
    let args: Vec<&str> = words.collect();
    let number = |i: usize, what: &str| -> Result<i64, String> {
        let v = args.get(i).ok_or_else(|| format!("error `{name}` needs {what}"))?;
        v.parse().map_err(|_| format!("error {what} must be a number, not `{v}`"))
    };
    let answer = match (name, args.len()) {
        ("key", 0) => Ok(format!("key {} {}", server.dc_id(), hex::encode(server.auth_key()))),
        ("require-login", 0) => {
            server.require_login();
            Ok("ok".to_owned())
        }
        ("phone", 2 | 3) => {
            server.add_phone_login(args[0], args[1], args.get(2).copied());
            Ok("ok".to_owned())
        }
        ("api", 2) => number(0, "the api id").and_then(|id| {
            let id = i32::try_from(id).map_err(|_| format!("error api id {id} is too large"))?;
            server.set_api_credentials(id, args[1]);
            Ok("ok".to_owned())
        }),
        ("user", 2 | 3) => number(0, "the user id").map(|id| {
            server.add_user(id, args[1], args.get(2).copied());
            "ok".to_owned()
        }),
        ("incoming", n) if n >= 2 => number(0, "the sender's id").and_then(|from| {
            if server.user(from).is_none() {
                return Err(format!("error no user {from}: add it with `user` first"));
            }
            let text = args[1..].join(" ");
            Ok(format!("ok {}", server.incoming(from, &text).id))
        }),
        ("connections", 0) => Ok(format!(
            "connections {} {}",
            server.open_connections(),
            server.accepted_connections()
        )),
        ("messages", 0) => Ok(format!("messages {}", server.messages().len())),
        ("fault", 1 | 2) => {
            let fault = match (args[0], args.get(1)) {
                ("none", None) => Ok(Fault::None),
                ("blackhole", None) => Ok(Fault::Blackhole),
                ("half-open", None) => Ok(Fault::HalfOpen),
                ("refuse", None) => Ok(Fault::RefuseConnections),
                ("delay", Some(_)) => number(1, "the delay in ms")
                    .and_then(|ms| u64::try_from(ms).map_err(|_| "error a negative delay".into()))
                    .map(|ms| Fault::Delay(Duration::from_millis(ms))),
                _ => Err("error fault is none, blackhole, half-open, refuse or delay <ms>".into()),
            };
            fault.map(|f| {
                server.set_fault(f);
                "ok".to_owned()
            })
        }
        ("drop-connections", 0) => {
            server.drop_connections();
            Ok("ok".to_owned())
        }
        ("sessions", 0) => {
            let all = server.sessions();
            let open = all.iter().filter(|s| s.closed.is_none()).count();
            Ok(format!("sessions {open} {}", all.len()))
        }
        ("outgoing", 0) => {
            let sent: Vec<_> = server
                .messages()
                .into_iter()
                .filter(|m| m.out)
                .map(|m| {
                    let (TestPeer::User(to) | TestPeer::Chat(to) | TestPeer::Channel(to)) = m.peer;
                    serde_json::json!({ "to": to, "text": m.text, "random_id": m.random_id })
                })
                .collect();
            Ok(format!("outgoing {}", serde_json::Value::Array(sent)))
        }
        _ => Err(format!("error unknown command or wrong arguments: `{}`", line.trim())),
    };
    answer.unwrap_or_else(|e| e)
}

/// Unix milliseconds.
fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// The pid of the local process whose socket is connected from `peer` to `port` on this
/// machine, from `/proc/net/tcp` and each process's open files.
fn client_pid(peer: SocketAddr, port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port_of =
                |a: &str| a.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            (f.len() > 9 && port_of(f[1]) == Some(peer.port()) && port_of(f[2]) == Some(port))
                .then(|| f[9].to_owned())
        })
    })?;
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// Appends each connection of account `k` to the sessions file as it opens and closes.
fn record_sessions(server: &LoopbackServer, k: usize, file: Arc<Mutex<std::fs::File>>) {
    let port = server.addr().port();
    let pids: Arc<Mutex<std::collections::HashMap<u64, Option<u32>>>> = Arc::default();
    server.observe_sessions(Arc::new(move |s: &SessionRecord| {
        let pid = {
            let mut pids = pids.lock().unwrap_or_else(|e| e.into_inner());
            match s.closed {
                None => *pids.entry(s.id).or_insert_with(|| client_pid(s.peer, port)),
                Some(_) => pids.remove(&s.id).flatten(),
            }
        };
        let line = format!(
            "{} {k} {} {} {} {} {}\n",
            if s.closed.is_some() { "close" } else { "open" },
            s.id,
            unix_ms(s.opened),
            s.closed.map_or_else(|| "-".to_owned(), |t| unix_ms(t).to_string()),
            s.peer,
            pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        );
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            eprintln!("cannot write the sessions file: {e}");
        }
    }));
}

#[tokio::main]
async fn main() {
    let args = match arguments() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let key = args.key.unwrap_or_else(|| std::array::from_fn(|_| rand::random()));
    let sessions = match &args.sessions {
        Some(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                eprintln!("cannot open the sessions file {}: {e}", path.display());
                std::process::exit(1);
            }
        },
        None => None,
    };
    let mut servers = Vec::with_capacity(args.accounts);
    for k in 0..args.accounts {
        let port = if args.port == 0 { 0 } else { args.port.saturating_add(k as u16) };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match LoopbackServer::start_at(addr, key).await {
            Ok(s) => {
                if let Some(file) = &sessions {
                    record_sessions(&s, k, Arc::clone(file));
                }
                servers.push(s);
            }
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut out = tokio::io::stdout();
    let mut say = async |line: String| {
        // A closed standard output ends nothing: the commands still run.
        let _ = out.write_all(format!("{line}\n").as_bytes()).await;
        let _ = out.flush().await;
    };
    let addrs: Vec<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    say(format!("listening {}", addrs.join(" "))).await;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let (k, rest) = match line.trim_start().strip_prefix('@') {
            Some(tail) => {
                let (k, rest) = tail.split_once(' ').unwrap_or((tail, ""));
                match k.parse::<usize>() {
                    Ok(k) if k < servers.len() => (k, rest.to_owned()),
                    _ => {
                        say(format!("error no account `{k}`: 0 to {}", servers.len() - 1)).await;
                        continue;
                    }
                }
            }
            None => (0, line.clone()),
        };
        say(command(&servers[k], &rest)).await;
    }
}
