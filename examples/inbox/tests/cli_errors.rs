//! What goes wrong on the command line is one sentence on standard error and a non-zero exit,
//! never a panic or a backtrace: a bad flag, a wrong setting, an unreachable database, account
//! keys that cannot open the data directory's state, a worker that is not running.

use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `inbox args` with `env`, stopping it after 30 s; (success, stderr).
fn inbox(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inbox"));
    command
        .args(args)
        .env_remove("CHANNEL_STATE_KEYS")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("the inbox binary runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("inbox {args:?} still runs after 30 s: it should have stopped with an error");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

/// One clear sentence: starts with `inbox: `, mentions `what`, and no panic or backtrace.
fn assert_one_sentence(stderr: &str, what: &str) {
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("inbox: ") && last.contains(what), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "{stderr}");
}

#[test]
fn a_bad_flag_is_named() {
    let (ok, stderr) = inbox(&["run", "--listen", "nowhere"], &[]);
    assert!(!ok);
    assert!(stderr.contains("--listen") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_wrong_setting_names_the_setting_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, stderr) =
        inbox(&["run", "--data-dir", data.to_str().unwrap()], &[("INBOX_JSON_LOGS", "sometimes")]);
    assert!(!ok);
    assert_one_sentence(&stderr, "INBOX_JSON_LOGS");
    let file = dir.path().join("inbox.toml");
    std::fs::write(&file, "listen = 8080\n").unwrap();
    let (ok, stderr) = inbox(&["run", "--config", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert_one_sentence(&stderr, "`listen`");
}

#[test]
fn an_unreachable_database_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Port 9 (discard) on loopback: nothing answers PostgreSQL there.
    let url = "postgres://inbox@127.0.0.1:9/inbox?connect_timeout=2";
    let (ok, stderr) = inbox(
        &[
            "run",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            url,
        ],
        &[],
    );
    assert!(!ok);
    assert_one_sentence(&stderr, "PostgreSQL");
}

#[test]
fn keys_that_cannot_open_the_data_directory_stop_the_worker_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // The first start seals the check under a new key, then stops on a taken port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (ok, stderr) = inbox(&["run", "--data-dir", d, "--listen", &port], &[]);
    assert!(!ok);
    assert_one_sentence(&stderr, "cannot listen on");
    // Another key: refused before anything runs, naming the key the state needs.
    let other = "11".repeat(32);
    let (ok, stderr) =
        inbox(&["run", "--data-dir", d, "--listen", &port], &[("CHANNEL_STATE_KEYS", &other)]);
    assert!(!ok);
    assert_one_sentence(&stderr, "sealed under key");
}

#[test]
fn a_command_without_a_running_worker_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = inbox(&["account", "list", "--data-dir", dir.path().to_str().unwrap()], &[]);
    assert!(!ok);
    assert_one_sentence(&stderr, "inbox run");
}
