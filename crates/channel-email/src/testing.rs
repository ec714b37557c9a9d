//! A real mail stack for tests and benchmarks (feature `testing`): Dovecot + OpenSMTPD on
//! loopback, private Dovecot instances, users, and ways to fill a mailbox fast.
//!
//! [`stack`] uses the stack named by `TEST_IMAP_PORT`, `TEST_SMTP_PORT`,
//! `TEST_DOVECOT_PASSWD` and `TEST_MAIL_DIR` when they are set (the workspace's `scripts/test`
//! starts one and exports them). Otherwise it starts one itself, from this crate alone
//! ([`try_stack`] says why it cannot): Dovecot and OpenSMTPD on free loopback ports in a
//! temporary directory, stopped when the process ends. That needs Debian's packages
//! `dovecot-imapd dovecot-lmtpd opensmtpd` ([`DEBIAN_PACKAGES`]; nothing is installed for
//! you), root (Dovecot is started as root and the maildirs belong to `nobody`), and no other
//! OpenSMTPD running on the machine (only one can).
//!
//! ```no_run
//! # async fn demo() {
//! use channel_email::testing::stack;
//! let st = stack();
//! let bob = st.user("bob");
//! let config = st.config(&bob); // plaintext IMAP and SMTP on loopback, test-sized timeouts
//! # let _ = config;
//! # }
//! ```
#![allow(clippy::missing_panics_doc)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::{EmailConfig, Security, ServerConfig, StartFrom, Timeouts};

mod launcher;

pub use launcher::{DEBIAN_PACKAGES, MailStackError};

/// The parser, for corpus tests of real-world mail: one raw message as the channel delivers
/// it.
pub use crate::parse::{FolderRole, to_inbound};

/// The shared mail stack.
#[derive(Debug)]
pub struct MailStack {
    /// Dovecot's IMAP port (plaintext, loopback).
    pub imap_port: u16,
    /// OpenSMTPD's port; it delivers mail for any address `@example.org` into Dovecot.
    pub smtp_port: u16,
    /// Dovecot's passwd-file.
    pub passwd: PathBuf,
    /// The stack's directory (maildirs under `mail/<address>`).
    pub dir: PathBuf,
    /// The watcher of a stack started by this process: its standard input closing (when the
    /// process ends) stops the stack.
    _owner: Option<Mutex<Child>>,
}

fn env_port(name: &str) -> Option<u16> {
    std::env::var(name).ok()?.parse().ok()
}

static STACK: OnceLock<Result<MailStack, MailStackError>> = OnceLock::new();

/// The mail stack: the one named by the `TEST_*` variables, or else one started by this
/// process (once; it stops when the process ends).
pub fn try_stack() -> Result<&'static MailStack, &'static MailStackError> {
    STACK
        .get_or_init(|| {
            match (
                env_port("TEST_IMAP_PORT"),
                env_port("TEST_SMTP_PORT"),
                std::env::var("TEST_DOVECOT_PASSWD"),
            ) {
                (Some(imap_port), Some(smtp_port), Ok(passwd)) => Ok(MailStack {
                    imap_port,
                    smtp_port,
                    passwd: passwd.into(),
                    dir: std::env::var("TEST_MAIL_DIR").unwrap_or_default().into(),
                    _owner: None,
                }),
                _ => launcher::start(),
            }
        })
        .as_ref()
}

/// The mail stack, as [`try_stack`]; for tests, it panics with the reason (and what to
/// install) when the stack cannot be had.
pub fn stack() -> &'static MailStack {
    match try_stack() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

static NEXT_USER: AtomicU64 = AtomicU64::new(0);

/// A mailbox user on a Dovecot.
#[derive(Clone, Debug)]
pub struct User {
    /// The address, also the login name.
    pub address: String,
    /// The password.
    pub password: String,
}

/// Whether `user` can log in now (a plain IMAP LOGIN over a blocking socket).
fn can_log_in(port: u16, user: &User) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    let mut read_until = |s: &mut std::net::TcpStream, buf: &mut Vec<u8>, needle: &[u8]| -> bool {
        loop {
            if buf.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if !read_until(&mut s, &mut buf, b"\r\n") {
        return false;
    }
    buf.clear();
    if s.write_all(
        format!("a LOGIN \"{}\" \"{}\"\r\nb LOGOUT\r\n", user.address, user.password).as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    if !read_until(&mut s, &mut buf, b"a ") {
        return false;
    }
    read_until(&mut s, &mut buf, b"\r\n");
    let text = String::from_utf8_lossy(&buf);
    text.lines().any(|l| l.starts_with("a OK"))
}

/// Adds a user and waits until Dovecot knows it (it re-reads the passwd-file at most once a
/// second, so a user added right after a login attempt is not seen at once).
fn add_user_and_wait(passwd: &Path, port: u16, prefix: &str) -> User {
    let user = add_user(passwd, prefix);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !can_log_in(port, &user) {
        assert!(
            std::time::Instant::now() < deadline,
            "dovecot never accepted the new user {}",
            user.address
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    user
}

fn add_user(passwd: &Path, prefix: &str) -> User {
    add_users(passwd, prefix, 1).pop().expect("one user")
}

fn add_users(passwd: &Path, prefix: &str, n: usize) -> Vec<User> {
    let users: Vec<User> = (0..n)
        .map(|_| {
            let n = NEXT_USER.fetch_add(1, Ordering::Relaxed);
            let address = format!(
                "{prefix}-{}-{n}-{}@example.org",
                std::process::id(),
                rand::random::<u32>()
            );
            let password = format!("pw{}", rand::random::<u64>());
            User { address, password }
        })
        .collect();
    let lines: String =
        users.iter().map(|u| format!("{}:{{PLAIN}}{}\n", u.address, u.password)).collect();
    let mut f = std::fs::OpenOptions::new().append(true).open(passwd).expect("open passwd-file");
    f.write_all(lines.as_bytes()).expect("add users");
    users
}

fn add_users_and_wait(passwd: &Path, port: u16, prefix: &str, n: usize) -> Vec<User> {
    let users = add_users(passwd, prefix, n);
    if let Some(last) = users.last() {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !can_log_in(port, last) {
            assert!(
                std::time::Instant::now() < deadline,
                "dovecot never accepted the new user {}",
                last.address
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    users
}

/// Writes `messages` straight into the maildir `dir` (created if missing) and hands it to
/// Dovecot's user `nobody`: the fast way to fill a mailbox with thousands of messages.
/// Dovecot assigns their UIDs when the folder is next opened.
pub fn fill_maildir(dir: &Path, messages: impl IntoIterator<Item = Vec<u8>>) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).expect("maildir");
    }
    let pid = std::process::id();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (i, raw) in messages.into_iter().enumerate() {
        let name = format!("{stamp}.M{i}P{pid}R{}.bench,S={}:2,", rand::random::<u32>(), raw.len());
        std::fs::write(dir.join("cur").join(name), raw).expect("write message");
    }
    run(Command::new("chown").args(["-R", "nobody:nogroup"]).arg(dir));
}

impl MailStack {
    /// A fresh user of the shared Dovecot.
    pub fn user(&self, prefix: &str) -> User {
        add_user_and_wait(&self.passwd, self.imap_port, prefix)
    }

    /// An account configuration for `user` on this stack, with test-sized timeouts.
    pub fn config(&self, user: &User) -> EmailConfig {
        account_config(user, self.imap_port, self.smtp_port)
    }

    /// `n` fresh users at once (one write to the passwd-file, one wait).
    pub fn users(&self, prefix: &str, n: usize) -> Vec<User> {
        add_users_and_wait(&self.passwd, self.imap_port, prefix, n)
    }

    /// The stored account configuration of `user` on this stack (plaintext on loopback, SMTP
    /// without login, test-sized timeouts), as `Account::config` holds it. The password is
    /// not part of it: the login flow saves it.
    pub fn account_config(&self, user: &User) -> crate::EmailAccountConfig {
        stored_account_config(user, self.imap_port, self.smtp_port)
    }

    /// The maildir of `user` (it exists once the user has logged in or received mail).
    pub fn maildir(&self, user: &User) -> PathBuf {
        self.dir.join("mail").join(&user.address)
    }
}

/// Fast timeouts and backoff for tests.
pub fn test_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(10),
        read: Duration::from_secs(10),
        write: Duration::from_secs(10),
        idle_inactivity: Duration::from_secs(300),
        idle_max: Duration::from_secs(29 * 60),
        done: Duration::from_secs(5),
        poll_interval: Duration::from_millis(300),
        send: Duration::from_secs(20),
    }
}

/// An account on `imap_port` and `smtp_port` of loopback, plaintext, test-sized timeouts.
pub fn account_config(user: &User, imap_port: u16, smtp_port: u16) -> EmailConfig {
    EmailConfig::new(
        &user.address,
        ServerConfig::new("127.0.0.1", imap_port, Security::Plaintext)
            .credentials(&user.address, &user.password),
        ServerConfig::new("127.0.0.1", smtp_port, Security::Plaintext),
    )
    .timeouts(test_timeouts())
    .backoff(channel_core::Backoff::new(Duration::from_millis(100), Duration::from_millis(800)))
    .start_from(StartFrom::Beginning)
}

/// The stored configuration of an account on `imap_port` and `smtp_port` of loopback:
/// plaintext, SMTP without login, test-sized timeouts and backoff.
pub fn stored_account_config(
    user: &User,
    imap_port: u16,
    smtp_port: u16,
) -> crate::EmailAccountConfig {
    use crate::account::SmtpAuth;
    let mut config = crate::EmailAccountConfig::new(&user.address, "127.0.0.1", "127.0.0.1");
    config.imap.port = Some(imap_port);
    config.imap.security = Security::Plaintext;
    config.smtp.port = Some(smtp_port);
    config.smtp.security = Security::Plaintext;
    config.smtp.auth = SmtpAuth::None;
    config.timeouts = test_timeouts();
    config.backoff =
        channel_core::Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
    config.start_from = StartFrom::Beginning;
    config
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A Dovecot of its own, for tests that switch IDLE off or restart the server.
pub struct PrivateDovecot {
    dir: tempfile::TempDir,
    /// Its IMAP port (plaintext, loopback).
    pub imap_port: u16,
    /// Its passwd-file.
    pub passwd: PathBuf,
    conf: PathBuf,
}

impl PrivateDovecot {
    /// Starts one; `extra` lines go at the end of its configuration.
    pub fn start(extra: &str) -> Self {
        stack(); // the binaries are there
        let dir =
            tempfile::Builder::new().prefix("channel-email-dovecot").tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let imap_port = free_port();
        let lmtp_port = free_port();
        let conf = path.join("dovecot.conf");
        std::fs::write(&conf, launcher::dovecot_conf(&path, imap_port, lmtp_port, extra))
            .expect("write conf");
        let passwd = launcher::prepare_dovecot_dir(&path).unwrap_or_else(|e| panic!("{e}"));
        let d = Self { dir, imap_port, passwd, conf };
        d.start_again();
        d
    }

    /// A fresh user.
    pub fn user(&self, prefix: &str) -> User {
        add_user_and_wait(&self.passwd, self.imap_port, prefix)
    }

    /// `n` fresh users at once (one write to the passwd-file, one wait).
    pub fn users(&self, prefix: &str, n: usize) -> Vec<User> {
        add_users_and_wait(&self.passwd, self.imap_port, prefix, n)
    }

    /// The maildir of `user`.
    pub fn maildir(&self, user: &User) -> PathBuf {
        self.dir.path().join("mail").join(&user.address)
    }

    /// The directory of this Dovecot (configuration, log, maildirs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server (again) on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        // The daemon keeps inherited pipes open: give it none.
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run dovecot ({e}): install Debian's packages `{DEBIAN_PACKAGES}`")
            });
        assert!(
            status.success(),
            "dovecot failed: {}",
            std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.imap_port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "dovecot did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and waits until its port is closed.
    pub fn stop(&self) {
        let pid_file = self.dir.path().join("run/master.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pid_file.exists()
            || std::net::TcpStream::connect(("127.0.0.1", self.imap_port)).is_ok()
        {
            assert!(std::time::Instant::now() < deadline, "dovecot did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The configuration file (for doveadm).
    pub fn conf(&self) -> &Path {
        &self.conf
    }
}

impl Drop for PrivateDovecot {
    fn drop(&mut self) {
        let pid_file = self.dir.path().join("run/master.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("command");
    assert!(st.success(), "{cmd:?} failed");
}

/// Appends raw bytes to a folder of `user` over IMAP (the way another client files mail).
pub async fn imap_append(port: u16, user: &User, folder: &str, raw: &[u8]) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let mut client = async_imap::Client::new(tcp);
    let _greeting = client.read_response().await.expect("greeting");
    let mut session =
        client.login(&user.address, &user.password).await.map_err(|(e, _)| e).expect("login");
    session.append(folder, None, None, raw).await.expect("append");
    let _ = session.logout().await;
}

/// How many mails in `maildir` (its `new` and `cur`, as Dovecot delivers) contain `text`.
pub fn mails_containing(maildir: &Path, text: &str) -> usize {
    ["new", "cur"]
        .iter()
        .filter_map(|d| std::fs::read_dir(maildir.join(d)).ok())
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|mail| mail.contains(text))
        .count()
}

/// A plain message with the given ids, for appending.
pub fn raw_mail(from: &str, to: &str, message_id: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\
Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}
