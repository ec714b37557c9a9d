//! What the servers themselves recorded: Dovecot's logins and logouts (with the `ID` each
//! worker sends: its worker id and pid), the loopback server's connections (with the client's
//! pid) and OpenSMTPD's acceptance of each message.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::clock;

/// One connection of a client to an account, as a server saw it.
#[derive(Clone, Debug)]
pub struct Session {
    /// The account: a mailbox address, or `telegram-K`.
    pub account: String,
    /// The process that held it (its pid), when the server could tell.
    pub pid: Option<u32>,
    /// The worker id it gave (Dovecot's `ID` `x-instance`).
    pub worker: Option<String>,
    /// Opened, unix ms.
    pub opened: i64,
    /// Closed, unix ms (`None`: still open when the log was read).
    pub closed: Option<i64>,
}

/// Dovecot's IMAP sessions from its log (`log_timestamp` with microseconds, `imap_id_log =
/// *`): `Login:` opens one (its `session=<...>`), `ID sent:` names its client, and
/// `Disconnected` or `Logged out` on a line of that session closes it.
pub fn dovecot_sessions(log: &Path) -> Result<Vec<Session>, String> {
    let text =
        std::fs::read_to_string(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    let lines: Vec<(i64, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.splitn(3, ' ');
            let (date, time, rest) = (words.next()?, words.next()?, words.next()?);
            Some((clock::parse_stamp(date, time)?, rest))
        })
        .collect();
    // The login process and the mail process write to the log apart, so a session's `ID
    // sent:` may come before its `Login:`: the logins first, then what each session said.
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    // channel-email sends its ID before the login: imap-login logs it on the session.
    let mut before_login: HashMap<&str, &str> = HashMap::new();
    for (_, rest) in &lines {
        if let Some(sent) = rest.strip_prefix("imap-login: Info: ID sent: ")
            && let Some(id) = between(sent, "session=<", ">")
        {
            before_login.insert(id, sent.split(": user=").next().unwrap_or(sent));
        }
    }
    for (at, rest) in &lines {
        let Some(login) = rest.strip_prefix("imap-login: Info: Login: ") else { continue };
        if let (Some(user), Some(id)) =
            (between(login, "user=<", ">"), between(login, "session=<", ">"))
        {
            let mut session = Session {
                account: user.to_owned(),
                pid: None,
                worker: None,
                opened: *at,
                closed: None,
            };
            if let Some(sent) = before_login.get(id) {
                name(&mut session, sent);
            }
            sessions.insert(id.to_owned(), session);
        }
    }
    for (at, rest) in &lines {
        // imap(user)<pid><session>: Info: ...
        let Some(tail) = rest.strip_prefix("imap(") else { continue };
        let Some(id) = tail.split_once(")<").and_then(|(_, t)| between(t, "><", ">:")) else {
            continue;
        };
        let Some(s) = sessions.get_mut(id) else { continue };
        if let Some(sent) = rest.split_once("ID sent: ").map(|(_, s)| s) {
            name(s, sent);
        } else if rest.contains("Disconnected") || rest.contains("Logged out") {
            s.closed.get_or_insert(*at);
        }
    }
    Ok(sessions.into_values().collect())
}

/// Names `session` from the fields of an `ID sent:` line.
fn name(session: &mut Session, sent: &str) {
    for pair in sent.split(", ") {
        match pair.split_once('=') {
            Some(("x-pid", p)) => session.pid = p.trim().parse().ok(),
            Some(("x-instance", w)) => session.worker = Some(w.trim().to_owned()),
            _ => {}
        }
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let to = s[from..].find(end)? + from;
    Some(&s[from..to])
}

/// The loopback server's connections from its sessions file (`open|close <account> <id>
/// <opened ms> <closed ms or -> <peer> <pid or ->`).
pub fn loopback_sessions(file: &Path) -> Result<Vec<Session>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut by_id: BTreeMap<(String, String), Session> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [kind, k, id, opened, closed, _peer, pid] = f[..] else { continue };
        let Ok(opened) = opened.parse() else { continue };
        let account = format!("telegram-{k}");
        let s = by_id.entry((account.clone(), id.to_owned())).or_insert(Session {
            account,
            pid: None,
            worker: None,
            opened,
            closed: None,
        });
        s.pid = s.pid.or(pid.parse().ok());
        if kind == "close" {
            s.closed = closed.parse().ok();
        }
    }
    Ok(by_id.into_values().collect())
}

/// The sessions as their clients held them: a session of a process killed at `K` (unix ms,
/// by pid) ends at `K` at the latest, and one the server opened only after `K` (a login that
/// was on its way when the client died) was never held: it is left out and counted.
pub fn until_killed(sessions: Vec<Session>, killed: &HashMap<u32, i64>) -> (Vec<Session>, usize) {
    let mut ghosts = 0;
    let mut held = Vec::with_capacity(sessions.len());
    for mut s in sessions {
        if let Some(k) = s.pid.and_then(|p| killed.get(&p)).copied() {
            if s.opened >= k {
                ghosts += 1;
                continue;
            }
            s.closed = Some(s.closed.map_or(k, |c| c.min(k)));
        }
        held.push(s);
    }
    (held, ghosts)
}

/// Two sessions of one account held by two processes at once: the account, both pids, and
/// how long they overlapped (ms). Sessions without a pid are left to [`unattributed`].
pub fn double_connections(sessions: &[Session]) -> Vec<(String, u32, u32, i64)> {
    let mut by_account: HashMap<&str, Vec<&Session>> = HashMap::new();
    for s in sessions.iter().filter(|s| s.pid.is_some()) {
        by_account.entry(&s.account).or_default().push(s);
    }
    let mut found = Vec::new();
    for (account, list) in by_account {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.pid == b.pid {
                    continue;
                }
                let start = a.opened.max(b.opened);
                let end = a.closed.unwrap_or(i64::MAX).min(b.closed.unwrap_or(i64::MAX));
                if start < end {
                    let (Some(pa), Some(pb)) = (a.pid, b.pid) else { continue };
                    found.push((account.to_owned(), pa, pb, end.saturating_sub(start)));
                }
            }
        }
    }
    found
}

/// Sessions whose client the server could not name, opened at or after `since` (unix ms):
/// (those that stayed open longer than `gone_within` ms, those closed within it). A client
/// killed between its connect and the server's accept is gone before the server can look it
/// up, and the kernel resets its connection at once: the second kind.
pub fn unattributed(sessions: &[Session], since: i64, gone_within: i64) -> (usize, usize) {
    let unnamed = sessions.iter().filter(|s| s.pid.is_none() && s.opened >= since);
    unnamed.fold((0, 0), |(long, short), s| match s.closed {
        Some(c) if c - s.opened <= gone_within => (long, short + 1),
        _ => (long + 1, short),
    })
}

/// OpenSMTPD's acceptances, read from its log as they are written: its message id (the `id`
/// of the `Received:` line it adds) -> when the line appeared (unix ms). `smtpd -d` writes no
/// times, so this reader stamps each line as it sees it, every 10 ms.
#[derive(Clone)]
pub struct SmtpdAcceptances {
    seen: Arc<Mutex<HashMap<String, i64>>>,
}

impl SmtpdAcceptances {
    /// Follows `log` from its current end.
    pub fn follow(log: PathBuf) -> Self {
        let seen: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let out = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut offset = std::fs::metadata(&log).map_or(0, |m| m.len());
            let mut partial = String::new();
            loop {
                if let Ok(mut f) = std::fs::File::open(&log)
                    && f.seek(SeekFrom::Start(offset)).is_ok()
                {
                    let mut chunk = String::new();
                    if let Ok(n) = f.read_to_string(&mut chunk) {
                        offset += n as u64;
                        partial.push_str(&chunk);
                        let now = clock::ms(SystemTime::now());
                        while let Some(end) = partial.find('\n') {
                            let line: String = partial.drain(..=end).collect();
                            if let Some(id) = line.split(" smtp message msgid=").nth(1) {
                                let id = id.split_whitespace().next().unwrap_or("").to_owned();
                                out.lock().unwrap_or_else(|e| e.into_inner()).insert(id, now);
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { seen }
    }

    /// When OpenSMTPD accepted message `id`.
    pub fn accepted(&self, id: &str) -> Option<i64> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_sessions_are_named_by_their_id_and_closed_by_their_logout() {
        let dir = std::env::temp_dir().join(format!("chaos-dovecot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("dovecot.log");
        std::fs::write(
            &log,
            "2026-12-07 12:39:10.758596 imap-login: Info: Login: user=<y@example.org>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=20781, secured, session=<oBU1>\n\
2026-12-07 12:39:10.761061 imap(y@example.org)<20781><oBU1>: Info: ID sent: name=channel-email, version=0.1.0, x-pid=12, x-instance=w1\n\
2026-12-07 12:39:11.000100 imap(y@example.org)<20782><oBU2>: Info: ID sent: name=channel-email, version=0.1.0, x-pid=13, x-instance=w2\n\
2026-12-07 12:39:11.000000 imap-login: Info: Login: user=<y@example.org>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=20782, secured, session=<oBU2>\n\
2026-12-07 12:39:12.762948 imap(y@example.org)<20781><oBU1>: Info: Disconnected: Logged out in=86\n\
2026-12-07 12:39:13.000000 imap-login: Info: ID sent: name=channel-email, version=0.1.0, x-pid=14, x-instance=w3: user=<>, rip=127.0.0.1, lip=127.0.0.1, secured, session=<oBU3>\n\
2026-12-07 12:39:13.000100 imap-login: Info: Login: user=<z@example.org>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=20783, secured, session=<oBU3>\n",
        )
        .unwrap();
        let sessions = dovecot_sessions(&log).unwrap();
        assert_eq!(sessions.len(), 3);
        // Named by the ID it sent before its login.
        let z = sessions.iter().find(|s| s.account == "z@example.org").unwrap();
        assert_eq!((z.pid, z.worker.as_deref()), (Some(14), Some("w3")));
        assert_eq!(sessions[0].worker.as_deref(), Some("w1"));
        assert_eq!(sessions[0].pid, Some(12));
        // Its ID was written before its login: it is still its own.
        assert_eq!(sessions[1].pid, Some(13));
        assert!(sessions[0].closed.is_some() && sessions[1].closed.is_none());
        let doubles = double_connections(&sessions);
        assert_eq!(doubles.len(), 1, "{doubles:?}");
        assert_eq!(doubles[0].3, 1762);
        // Process 12 killed 0.1 s after its login: it held the mailbox until then only; process
        // 14's login came after its kill, so it never held it.
        let killed = HashMap::from([(12, sessions[0].opened + 100), (14, 0)]);
        let (held, ghosts) = until_killed(sessions, &killed);
        assert_eq!((held.len(), ghosts), (2, 1));
        assert!(double_connections(&held).is_empty(), "{held:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
