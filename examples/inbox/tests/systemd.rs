//! `inbox run` under systemd: the unit in the repository is `Type=notify` with a watchdog,
//! and the program tells systemd READY=1, then WATCHDOG=1 while healthy, and STOPPING=1 on
//! SIGTERM, after which it exits cleanly. The test plays systemd: it gives the program a
//! `NOTIFY_SOCKET` and reads what arrives there.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn unit() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inbox.service")).expect("unit")
}

#[test]
fn the_unit_runs_the_worker_with_notify_and_a_watchdog() {
    let unit = unit();
    for line in ["Type=notify", "WatchdogSec=30", "KillSignal=SIGTERM", "StateDirectoryMode=0700"] {
        assert!(unit.lines().any(|l| l.trim() == line), "the unit lacks {line}");
    }
    assert!(unit.contains("ExecStart=/usr/local/bin/inbox run "), "{unit}");
    // Where systemd is installed, systemd-analyze checks the unit too (with this build's
    // binary in ExecStart, since verify wants it to exist).
    if let Ok(out) = Command::new("systemd-analyze").arg("--version").output()
        && out.status.success()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inbox.service");
        let unit = unit.replace("/usr/local/bin/inbox", env!("CARGO_BIN_EXE_inbox"));
        std::fs::write(&path, unit).expect("write");
        let verify =
            Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("verify");
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(
            !said.lines().any(|l| l.contains("inbox.service:")),
            "systemd-analyze verify: {said}"
        );
    }
}

#[test]
fn the_worker_tells_systemd_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notification socket");
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inbox"))
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env_remove("INBOX_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("inbox run starts");
    let mut messages: Vec<String> = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut termed = false;
    loop {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
        }
        let pets = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
        if !termed && pets >= 2 {
            let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            assert!(sent.expect("kill runs").success());
            termed = true;
        }
        if child.try_wait().expect("wait").is_some() {
            // Drain what is left on the socket.
            while let Ok(n) = socket.recv(&mut buf) {
                messages.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
            }
            break;
        }
        assert!(Instant::now() < deadline, "no clean stop in time: {messages:?}");
    }
    let status = child.wait().expect("exit status");
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    assert_eq!(messages.first().map(String::as_str), Some("READY=1"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "WATCHDOG=1"), "{messages:?}");
    assert_eq!(messages.last().map(String::as_str), Some("STOPPING=1"), "{messages:?}");
}
