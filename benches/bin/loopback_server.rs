//! `loopback-server`: channel-telegram's loopback MTProto server as a process of its own, for
//! benchmarks and chaos tests that need Telegram outside the process under test.
//!
//! ```text
//! cargo run --release -p channel-benches --bin loopback-server -- [--port PORT] [--auth-key HEX]
//! ```
//!
//! It listens on `127.0.0.1:PORT` (a free port by default) with the given auth key (512 hex
//! digits; a random one by default), prints one line `listening <addr>`, and runs until its
//! standard input closes or it is killed. Each line on standard input is a command, answered
//! by exactly one line on standard output (`error <why>` when it cannot be done):
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

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use channel_telegram::testing::loopback::{Fault, LoopbackServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const USAGE: &str = "usage: loopback-server [--port PORT] [--auth-key HEX]";

/// The command line: (port, auth key).
fn arguments() -> Result<(u16, Option<[u8; 256]>), String> {
    let mut port = 0;
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--port" => {
                let v = value()?;
                port = v.parse().map_err(|_| format!("--port takes a port number, not `{v}`"))?;
            }
            "--auth-key" => key = Some(parse_key(&value()?)?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    Ok((port, key))
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
        _ => Err(format!("error unknown command or wrong arguments: `{}`", line.trim())),
    };
    answer.unwrap_or_else(|e| e)
}

#[tokio::main]
async fn main() {
    let (port, key) = match arguments() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let key = key.unwrap_or_else(|| std::array::from_fn(|_| rand::random()));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = match LoopbackServer::start_at(addr, key).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let mut out = tokio::io::stdout();
    let mut say = async |line: String| {
        // A closed standard output ends nothing: the commands still run.
        let _ = out.write_all(format!("{line}\n").as_bytes()).await;
        let _ = out.flush().await;
    };
    say(format!("listening {}", server.addr())).await;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        say(command(&server, &line)).await;
    }
}
