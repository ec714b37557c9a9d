//! Starts the mail stack from the crate alone: Dovecot (IMAP + LMTP) and OpenSMTPD delivering
//! into it over LMTP, on free loopback ports, every file in one temporary directory. The
//! configurations are `dovecot.conf` and `smtpd.conf` next to this file (the workspace's
//! `scripts/lib/mailstack.sh` renders the same ones).
//!
//! The servers outlive nothing: a small watcher process (`sh`) holds the read end of a pipe
//! whose write end only the test process has; when that process ends, however it ends, the
//! watcher stops both servers and removes the directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{MailStack, free_port};

/// Dovecot's configuration, with the placeholders `@DIR@`, `@IMAP_PORT@`, `@LMTP_PORT@` and
/// `@EXTRA@`.
pub(super) const DOVECOT_CONF: &str = include_str!("dovecot.conf");
/// OpenSMTPD's configuration, with the placeholders `@DIR@`, `@SMTP_PORT@` and `@LMTP_PORT@`.
const SMTPD_CONF: &str = include_str!("smtpd.conf");

/// The Debian packages the stack runs on.
pub const DEBIAN_PACKAGES: &str = "dovecot-imapd dovecot-lmtpd opensmtpd";

/// How long the servers may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Why the mail stack could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailStackError {
    /// Dovecot or OpenSMTPD is not installed.
    #[error(
        "the mail stack cannot start: {missing} not found; install Debian's packages with \
         `apt-get install {DEBIAN_PACKAGES}` (the workspace's `scripts/test` installs them)"
    )]
    NotInstalled {
        /// The programs that were looked for and not found.
        missing: String,
    },
    /// The process does not run as root (Dovecot drops to its own users from root, and the
    /// maildirs belong to `nobody`).
    #[error(
        "the mail stack cannot start: it must be started by root (Dovecot switches to its \
         own users and the maildirs belong to `nobody`); run the tests as root, or export \
         TEST_IMAP_PORT, TEST_SMTP_PORT, TEST_DOVECOT_PASSWD and TEST_MAIL_DIR of a stack \
         started by `scripts/test`"
    )]
    NotRoot,
    /// Another OpenSMTPD runs on this machine (still, after 10 s); only one can (one control
    /// socket and spool).
    #[error(
        "the mail stack cannot start: an OpenSMTPD already runs on this machine (pid {pid}) \
         and only one can run at a time; stop it, or export TEST_IMAP_PORT, TEST_SMTP_PORT, \
         TEST_DOVECOT_PASSWD and TEST_MAIL_DIR of the stack it belongs to"
    )]
    SmtpdRunning {
        /// The process id of the running OpenSMTPD.
        pid: u32,
    },
    /// A file or process operation failed.
    #[error("the mail stack cannot start: could not {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The error of the operating system.
        #[source]
        source: std::io::Error,
    },
    /// A server did not come up; its log says why.
    #[error("the mail stack cannot start: {server} did not start; its log:\n{log}")]
    Start {
        /// `dovecot` or `smtpd`.
        server: &'static str,
        /// The end of the server's log.
        log: String,
    },
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> MailStackError {
    let action = action.into();
    move |source| MailStackError::Io { action, source }
}

/// Fills in the placeholders of a configuration template.
pub(super) fn render(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_owned(), |text, (name, value)| text.replace(name, value))
}

/// Dovecot's configuration for a stack in `dir` with IMAP on `imap_port` and LMTP on
/// `lmtp_port`; `extra` lines go at the end.
pub(super) fn dovecot_conf(dir: &Path, imap_port: u16, lmtp_port: u16, extra: &str) -> String {
    render(
        DOVECOT_CONF,
        &[
            ("@DIR@", &dir.to_string_lossy()),
            ("@IMAP_PORT@", &imap_port.to_string()),
            ("@LMTP_PORT@", &lmtp_port.to_string()),
            ("@EXTRA@", extra),
        ],
    )
}

/// Looks for `name` on `PATH` and in the system directories root's `PATH` usually has.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The programs of the stack, found or named as missing.
struct Programs {
    dovecot: PathBuf,
    smtpd: PathBuf,
}

fn programs() -> Result<Programs, MailStackError> {
    let dovecot = find_program("dovecot");
    let smtpd = find_program("smtpd");
    let mut missing = Vec::new();
    if dovecot.is_none() {
        missing.push("`dovecot` (dovecot-imapd)");
    }
    if !Path::new("/usr/lib/dovecot/imap").is_file() {
        missing.push("`/usr/lib/dovecot/imap` (dovecot-imapd)");
    }
    if !Path::new("/usr/lib/dovecot/lmtp").is_file() {
        missing.push("`/usr/lib/dovecot/lmtp` (dovecot-lmtpd)");
    }
    if smtpd.is_none() {
        missing.push("`smtpd` (opensmtpd)");
    }
    match (dovecot, smtpd) {
        (Some(dovecot), Some(smtpd)) if missing.is_empty() => Ok(Programs { dovecot, smtpd }),
        _ => Err(MailStackError::NotInstalled { missing: missing.join(", ") }),
    }
}

/// Whether this process runs as root (read from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The process id of a running OpenSMTPD (its master or any of its helper processes; a
/// zombie does not count), if any.
fn running_smtpd() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        // `pid (comm) STATE ...`: the state follows the last parenthesis.
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
        (comm.trim() == "smtpd" && state != 'Z').then_some(pid)
    })
}

/// Waits for a running OpenSMTPD to end: the stack of the test binary that ran just before
/// this one may still be stopping. Fails when one still runs after `limit`.
fn wait_for_no_smtpd(limit: Duration) -> Result<(), MailStackError> {
    let deadline = Instant::now() + limit;
    while let Some(pid) = running_smtpd() {
        if Instant::now() >= deadline {
            return Err(MailStackError::SmtpdRunning { pid });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs a short command to its end.
pub(super) fn run_command(cmd: &mut Command) -> Result<(), MailStackError> {
    let what = format!("{cmd:?}");
    let status = cmd.stdin(Stdio::null()).stdout(Stdio::null()).status().map_err(io(&what))?;
    if status.success() {
        Ok(())
    } else {
        Err(MailStackError::Io {
            action: what,
            source: std::io::Error::other(format!("it exited with {status}")),
        })
    }
}

/// Makes the directories of a Dovecot rooted at `dir`, its empty passwd-file, and hands the
/// maildirs to `nobody`.
pub(super) fn prepare_dovecot_dir(dir: &Path) -> Result<PathBuf, MailStackError> {
    use std::os::unix::fs::PermissionsExt;
    for sub in ["run", "state", "mail", "home"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(io(format!("create {}", path.display())))?;
    }
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "").map_err(io(format!("create {}", passwd.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("open {} to Dovecot's users", dir.display())))?;
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644))
        .map_err(io(format!("open {} to Dovecot's users", passwd.display())))?;
    run_command(
        Command::new("chown").arg("nobody:nogroup").arg(dir.join("mail")).arg(dir.join("home")),
    )?;
    Ok(passwd)
}

/// The end of a log file, for error messages.
pub(super) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits until something accepts connections on `port` of loopback.
pub(super) fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops both servers and removes `$1` once its standard input closes (when the process
/// that started it ends).
const WATCHER: &str = r#"
cat >/dev/null
for pid_file in "$1/run/master.pid" "$1/smtpd/smtpd.pid"; do
    [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null
done
for i in 1 2 3 4 5 6 7 8 9 10; do
    [ -f "$1/run/master.pid" ] || break
    sleep 0.2
done
rm -rf "$1"
"#;

/// Starts Dovecot and OpenSMTPD on free loopback ports in a fresh temporary directory. They
/// stop, and the directory goes, when this process ends.
pub(super) fn start() -> Result<MailStack, MailStackError> {
    let programs = programs()?;
    if !is_root() {
        return Err(MailStackError::NotRoot);
    }
    wait_for_no_smtpd(START_LIMIT)?;
    let dir = tempfile::Builder::new()
        .prefix("channel-email-mailstack")
        .tempdir()
        .map_err(io("create a temporary directory"))?
        .keep();
    // From here on the watcher cleans up, whatever fails next: dropping `watcher` closes its
    // standard input.
    let mut watcher = Command::new("sh")
        .arg("-c")
        .arg(WATCHER)
        .arg("channel-email-mailstack")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("run sh (the watcher that stops the stack)"))?;
    match start_in(&programs, &dir) {
        Ok((imap_port, smtp_port, passwd)) => {
            Ok(MailStack { imap_port, smtp_port, passwd, dir, _owner: Some(Mutex::new(watcher)) })
        }
        Err(e) => {
            drop(watcher.stdin.take());
            let _ = watcher.wait();
            Err(e)
        }
    }
}

fn start_in(programs: &Programs, dir: &Path) -> Result<(u16, u16, PathBuf), MailStackError> {
    let (imap_port, lmtp_port, smtp_port) = (free_port(), free_port(), free_port());
    let passwd = prepare_dovecot_dir(dir)?;
    let conf = dir.join("dovecot.conf");
    std::fs::write(&conf, dovecot_conf(dir, imap_port, lmtp_port, ""))
        .map_err(io(format!("write {}", conf.display())))?;
    // Dovecot forks into the background; it must not keep our pipes.
    let started = Command::new(&programs.dovecot)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(io(format!("run {}", programs.dovecot.display())))?;
    if !started.success() {
        return Err(MailStackError::Start {
            server: "dovecot",
            log: log_tail(&dir.join("dovecot.log")),
        });
    }

    let smtpd_dir = dir.join("smtpd");
    std::fs::create_dir_all(&smtpd_dir).map_err(io(format!("create {}", smtpd_dir.display())))?;
    let vusers = smtpd_dir.join("vusers");
    std::fs::write(&vusers, "@example.org nobody\n")
        .map_err(io(format!("write {}", vusers.display())))?;
    let smtpd_conf = smtpd_dir.join("smtpd.conf");
    let text = render(
        SMTPD_CONF,
        &[
            ("@DIR@", &dir.to_string_lossy()),
            ("@SMTP_PORT@", &smtp_port.to_string()),
            ("@LMTP_PORT@", &lmtp_port.to_string()),
        ],
    );
    std::fs::write(&smtpd_conf, text).map_err(io(format!("write {}", smtpd_conf.display())))?;
    let log_path = smtpd_dir.join("smtpd.log");
    let log =
        std::fs::File::create(&log_path).map_err(io(format!("create {}", log_path.display())))?;
    let log_err = log.try_clone().map_err(io("share the log of smtpd"))?;
    let smtpd: Child = Command::new(&programs.smtpd)
        .arg("-d")
        .arg("-f")
        .arg(&smtpd_conf)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(io(format!("run {}", programs.smtpd.display())))?;
    let pid_file = smtpd_dir.join("smtpd.pid");
    std::fs::File::create(&pid_file)
        .and_then(|mut f| writeln!(f, "{}", smtpd.id()))
        .map_err(io(format!("write {}", pid_file.display())))?;

    if !wait_for_port(imap_port, START_LIMIT) {
        return Err(MailStackError::Start {
            server: "dovecot",
            log: log_tail(&dir.join("dovecot.log")),
        });
    }
    if !wait_for_port(smtp_port, START_LIMIT) {
        return Err(MailStackError::Start { server: "smtpd", log: log_tail(&log_path) });
    }
    Ok((imap_port, smtp_port, passwd))
}
