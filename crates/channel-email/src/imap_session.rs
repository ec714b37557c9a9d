//! One IMAP session: connect (implicit TLS, STARTTLS or plaintext), log in, and run commands
//! whose end is checked (a tagged OK, never an EOF taken for an empty answer).

use std::sync::Arc;

use async_imap::Client;
use async_imap::imap_proto::{
    Capability, MailboxDatum, NameAttribute, Response, ResponseCode, Status, StatusAttribute,
};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;

use crate::config::{EmailConfig, Security};
use crate::error::{ImapError, within};
use crate::stream::{MailStream, TimeoutHandle, TimeoutStream};

/// An async-imap session over our stream.
pub(crate) type Session = async_imap::Session<MailStream>;

/// A logged-in session with what we learned while opening it.
pub(crate) struct ImapConnection {
    /// The session.
    pub session: Session,
    /// Adjusts the stream's read limit (IDLE waits longer than a command).
    pub timeouts: TimeoutHandle,
    /// Whether the server advertises IDLE.
    pub idle: bool,
}

impl std::fmt::Debug for ImapConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapConnection").field("idle", &self.idle).finish_non_exhaustive()
    }
}

/// The TLS client configuration: webpki roots plus the account's extra roots.
pub(crate) fn tls_config(config: &EmailConfig) -> Result<Arc<rustls::ClientConfig>, ImapError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in &config.extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| ImapError::Config(format!("extra root certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Config(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

async fn tls_handshake(
    config: &EmailConfig,
    base: TimeoutStream<TcpStream>,
) -> Result<MailStream, ImapError> {
    let name = rustls::pki_types::ServerName::try_from(config.imap.host.clone())
        .map_err(|e| ImapError::Config(format!("IMAP host name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(config)?);
    let tls = connector.connect(name, base).await.map_err(ImapError::Tls)?;
    Ok(MailStream::Tls(Box::new(tls)))
}

/// Reads the greeting; whether it offers `ID` (in its `CAPABILITY` code).
async fn read_greeting(client: &mut Client<MailStream>) -> Result<bool, ImapError> {
    let greeting = client
        .read_response()
        .await?
        .ok_or_else(|| ImapError::ConnectionLost("closed before the greeting".into()))?;
    match greeting.parsed() {
        Response::Data { status: Status::Ok | Status::PreAuth, outcome } => {
            Ok(matches!(&outcome.code, Some(ResponseCode::Capabilities(caps)) if caps.iter().any(
                |c| matches!(c, Capability::Atom(a) if a.eq_ignore_ascii_case("ID"))
            )))
        }
        Response::Data { status: Status::Bye, outcome } => Err(ImapError::ConnectionLost(format!(
            "greeted with BYE: {}",
            outcome.information.as_deref().unwrap_or("")
        ))),
        _ => Err(ImapError::Protocol("unexpected greeting".into())),
    }
}

/// What the server said in a NO, without async-imap's Debug framing
/// (`code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")`).
fn server_text(no: &str) -> String {
    let text = match no.split_once("info: Some(\"") {
        Some((_, rest)) => rest.strip_suffix("\")").unwrap_or(rest).replace("\\\"", "\""),
        None => no.to_owned(),
    };
    text.trim().to_owned()
}

/// The response code of a NO (`AUTHENTICATIONFAILED`), from its text or async-imap's framing.
fn response_code(no: &str, text: &str) -> Option<String> {
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']').map(|(code, _)| code.trim().to_ascii_uppercase());
    }
    let (_, after) = no.split_once("code: Some(")?;
    let code: String = after.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    (!code.is_empty()).then(|| code.to_ascii_uppercase())
}

/// A refused login in words a person can act on: who was refused, why, what to do.
pub(crate) fn refused_login_sentence(server: &str, login: &str, detail: &str) -> String {
    format!(
        "the {server} server refused the login of `{login}`: {detail}; log in again with the \
         right password (an app password where the provider asks for one)"
    )
}

fn classify_login(e: async_imap::error::Error, login: &str) -> ImapError {
    match e {
        async_imap::error::Error::No(msg) => {
            let text = server_text(&msg);
            let code = response_code(&msg, &text).unwrap_or_default();
            let said = text.split_once(']').map_or(text.as_str(), |(_, t)| t).trim();
            let upper = msg.to_ascii_uppercase();
            if ["UNAVAILABLE", "INUSE", "LIMIT"].iter().any(|c| upper.contains(c)) {
                return ImapError::Protocol(format!(
                    "the IMAP server cannot log `{login}` in for now ({said}); trying again"
                ));
            }
            let why = match code.as_str() {
                "AUTHENTICATIONFAILED" | "" => "wrong login name or password",
                "AUTHORIZATIONFAILED" => "this login may not use the mailbox",
                "EXPIRED" => "the password has expired",
                "PRIVACYREQUIRED" => "the server logs in only over TLS (set `imap.security`)",
                "CONTACTADMIN" => "the server asks to contact its administrator",
                _ => "login refused",
            };
            let detail = if said.is_empty() {
                why.to_owned()
            } else {
                format!("{why} (the server said: {said})")
            };
            ImapError::Auth(refused_login_sentence("IMAP", login, &detail))
        }
        other => other.into(),
    }
}

/// Connects, secures, greets and logs in, all within the connect limit.
pub(crate) async fn connect(config: &EmailConfig) -> Result<ImapConnection, ImapError> {
    let t = config.timeouts;
    within("imap connect", t.connect, async {
        let host = (config.imap.host.as_str(), config.imap.port);
        // Resolved first, so that a name that does not resolve is told apart (DNS).
        let addrs: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host(host).await.map_err(ImapError::Dns)?.collect();
        if addrs.is_empty() {
            let none = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
            return Err(ImapError::Dns(none));
        }
        let tcp = TcpStream::connect(&addrs[..]).await?;
        log_in_over(config, tcp).await
    })
    .await
}

/// Secures, greets and logs in over a connected socket (no limit of its own: the caller
/// runs it under one).
pub(crate) async fn log_in_over(
    config: &EmailConfig,
    tcp: TcpStream,
) -> Result<ImapConnection, ImapError> {
    let t = config.timeouts;
    tcp.set_nodelay(true)?;
    let handle = TimeoutHandle::new(t.read, t.write);
    let base = TimeoutStream::new(tcp, handle.clone());
    // Whether `ID` went out before the login (when the greeting offers it, on a connection
    // that is already what it will be: not before STARTTLS).
    let (client, identified) = match config.imap.security {
        Security::Plaintext => {
            let mut client = Client::new(MailStream::Plain(base));
            let offers_id = read_greeting(&mut client).await?;
            let identified = offers_id && identify_before_login(&mut client, config).await?;
            (client, identified)
        }
        Security::Tls => {
            let mut client = Client::new(tls_handshake(config, base).await?);
            let offers_id = read_greeting(&mut client).await?;
            let identified = offers_id && identify_before_login(&mut client, config).await?;
            (client, identified)
        }
        Security::StartTls => {
            let mut plain = Client::new(MailStream::Plain(base));
            read_greeting(&mut plain).await?;
            plain.run_command_and_check_ok("STARTTLS", None).await?;
            let MailStream::Plain(base) = plain.into_inner() else {
                return Err(ImapError::Protocol("STARTTLS on a TLS stream".into()));
            };
            (Client::new(tls_handshake(config, base).await?), false)
        }
    };
    let login = &config.imap.username;
    let mut session = client
        .login(login, config.imap.password.expose_secret())
        .await
        .map_err(|(e, _)| classify_login(e, login))?;
    let caps = session.capabilities().await?;
    let idle = caps.has_str("IDLE");
    if !identified && caps.has_str("ID") {
        let sent = session.run_command_and_check_ok(identification(config)).await;
        refused_id_is_fine(sent)?;
    }
    Ok(ImapConnection { session, timeouts: handle, idle })
}

/// The `ID` command (RFC 2971): the client's name, version, process id and instance
/// ([`EmailConfig::client_instance`]). Servers log it (Dovecot with `imap_id_log = *`), so
/// an operator can tell which process holds which connection.
fn identification(config: &EmailConfig) -> String {
    let pid = std::process::id().to_string();
    let mut fields = vec![
        ("name", "channel-email"),
        ("version", env!("CARGO_PKG_VERSION")),
        ("x-pid", pid.as_str()),
    ];
    // Sent as a quoted string: an instance with a quote, backslash or line break is left out.
    let instance = config
        .client_instance
        .as_deref()
        .filter(|i| !i.is_empty() && i.len() <= 1024 && !i.contains(['"', '\\', '\r', '\n', '\0']));
    if let Some(i) = instance {
        fields.push(("x-instance", i));
    }
    let list: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\" \"{v}\"")).collect();
    format!("ID ({})", list.join(" "))
}

/// Sends `ID` before the login, so that the server names the connection from its start
/// (a connection cut between the login and a later `ID` would be nobody's in its log).
async fn identify_before_login(
    client: &mut Client<MailStream>,
    config: &EmailConfig,
) -> Result<bool, ImapError> {
    let sent = client.run_command_and_check_ok(&identification(config), None).await;
    let ok = sent.is_ok();
    refused_id_is_fine(sent)?;
    Ok(ok)
}

/// A `NO` or `BAD` to `ID` is only logged (identifying is a courtesy); a broken connection is
/// an error like any other.
fn refused_id_is_fine(sent: async_imap::error::Result<()>) -> Result<(), ImapError> {
    match sent {
        Ok(()) => Ok(()),
        Err(e @ (async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_))) => {
            tracing::debug!(error = %e, "the IMAP server refused ID");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Quotes a mailbox name or search string; CR, LF and NUL are refused.
pub(crate) fn quote(s: &str) -> Result<String, ImapError> {
    if s.contains(['\r', '\n', '\0']) {
        return Err(ImapError::Config("CR, LF or NUL in an IMAP string".into()));
    }
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

fn verb(cmd: &str) -> String {
    let mut words = cmd.split_whitespace();
    match (words.next(), words.next()) {
        (Some(first), Some(second)) if first.eq_ignore_ascii_case("UID") => format!("UID {second}"),
        (Some(first), _) => first.to_owned(),
        _ => String::new(),
    }
}

/// Runs `cmd`, hands every response before the tagged one to `on_response`, and succeeds only
/// on a tagged OK. An EOF before it is [`ImapError::ConnectionLost`]; NO and BAD are
/// [`ImapError::Protocol`]; an untagged BYE ends the session.
pub(crate) async fn command<F>(
    session: &mut Session,
    cmd: &str,
    mut on_response: F,
) -> Result<(), ImapError>
where
    F: FnMut(&Response<'_>) -> Result<(), ImapError>,
{
    let id = session.run_command(cmd).await?;
    loop {
        let Some(resp) = session.read_response().await? else {
            return Err(ImapError::ConnectionLost(format!(
                "EOF before the end of `{}`",
                verb(cmd)
            )));
        };
        match resp.parsed() {
            Response::Done { tag, status, outcome } if *tag == id => {
                return match status {
                    Status::Ok => Ok(()),
                    other => Err(ImapError::Protocol(format!(
                        "`{}` answered {other:?}: {}",
                        verb(cmd),
                        outcome.information.as_deref().unwrap_or("")
                    ))),
                };
            }
            Response::Data { status: Status::Bye, outcome } => {
                return Err(ImapError::ConnectionLost(format!(
                    "BYE: {}",
                    outcome.information.as_deref().unwrap_or("")
                )));
            }
            other => {
                // The server announces new mail once, in the answer of whatever command runs
                // when it notices: kept for the next wait, or the session would go into IDLE
                // unaware of it (and the mail would wait for the next one).
                if announces_change(other) {
                    session.get_ref().handle().note_change();
                }
                on_response(other)?
            }
        }
    }
}

/// An untagged response that announces a change of the selected mailbox.
pub(crate) fn announces_change(resp: &Response<'_>) -> bool {
    matches!(
        resp,
        Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_))
            | Response::Expunge(_)
            | Response::Vanished { .. }
    )
}

/// What SELECT or STATUS tells about a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FolderStatus {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT: every message that exists now has a smaller UID.
    pub uid_next: u32,
}

fn folder_status(
    validity: Option<u32>,
    next: Option<u32>,
    folder: &str,
) -> Result<FolderStatus, ImapError> {
    match (validity, next) {
        (Some(uid_validity), Some(uid_next)) => Ok(FolderStatus { uid_validity, uid_next }),
        _ => Err(ImapError::Protocol(format!("no UIDVALIDITY/UIDNEXT for folder {folder:?}"))),
    }
}

/// SELECTs (or EXAMINEs, read-only) a folder.
pub(crate) async fn select(
    session: &mut Session,
    folder: &str,
    read_only: bool,
) -> Result<FolderStatus, ImapError> {
    let (mut validity, mut next) = (None, None);
    let cmd = format!("{} {}", if read_only { "EXAMINE" } else { "SELECT" }, quote(folder)?);
    command(session, &cmd, |resp| {
        if let Response::Data { outcome, .. } = resp {
            match outcome.code {
                Some(ResponseCode::UidValidity(v)) => validity = Some(v),
                Some(ResponseCode::UidNext(n)) => next = Some(n),
                _ => {}
            }
        }
        Ok(())
    })
    .await?;
    folder_status(validity, next, folder)
}

/// STATUS of a folder: its current UIDVALIDITY and UIDNEXT.
pub(crate) async fn status(session: &mut Session, folder: &str) -> Result<FolderStatus, ImapError> {
    let (mut validity, mut next) = (None, None);
    let cmd = format!("STATUS {} (UIDNEXT UIDVALIDITY)", quote(folder)?);
    command(session, &cmd, |resp| {
        if let Response::MailboxData(MailboxDatum::Status { status, .. }) = resp {
            for attr in status {
                match attr {
                    StatusAttribute::UidValidity(v) => validity = Some(*v),
                    StatusAttribute::UidNext(n) => next = Some(*n),
                    _ => {}
                }
            }
        }
        Ok(())
    })
    .await?;
    folder_status(validity, next, folder)
}

/// `UID SEARCH criteria`: the UIDs, sorted.
pub(crate) async fn uid_search(
    session: &mut Session,
    criteria: &str,
) -> Result<Vec<u32>, ImapError> {
    let mut uids = Vec::new();
    command(session, &format!("UID SEARCH {criteria}"), |resp| {
        if let Response::MailboxData(MailboxDatum::Search(found)) = resp {
            uids.extend_from_slice(found);
        }
        Ok(())
    })
    .await?;
    uids.sort_unstable();
    uids.dedup();
    Ok(uids)
}

/// A folder as LIST reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListedFolder {
    /// Its name.
    pub name: String,
    /// Whether it carries the `\Sent` special-use attribute.
    pub sent: bool,
    /// Whether it can be selected.
    pub selectable: bool,
}

/// `LIST "" "*"`.
pub(crate) async fn list(session: &mut Session) -> Result<Vec<ListedFolder>, ImapError> {
    let mut out = Vec::new();
    command(session, "LIST \"\" \"*\"", |resp| {
        if let Response::MailboxData(MailboxDatum::List(data)) = resp {
            out.push(ListedFolder {
                name: data.name.to_string(),
                sent: data.name_attributes.iter().any(|a| matches!(a, NameAttribute::Sent)),
                selectable: !data
                    .name_attributes
                    .iter()
                    .any(|a| matches!(a, NameAttribute::NoSelect)),
            });
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// NOOP: a round trip that also lets the server report changes.
pub(crate) async fn noop(session: &mut Session) -> Result<(), ImapError> {
    command(session, "NOOP", |_| Ok(())).await
}

/// LOGOUT, best effort within `limit` (the session is dropped either way).
pub(crate) async fn logout(session: &mut Session, limit: std::time::Duration) {
    let _ =
        within("imap logout", limit, async { command(session, "LOGOUT", |_| Ok(())).await }).await;
}

/// A short UID set for sorted UIDs: `1:5,7,9:12`.
pub(crate) fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A server that greets, takes the login, and answers a `UID SEARCH` with one result and,
    /// in the same answer, an announcement of new mail (as Dovecot does when mail arrives
    /// while the command runs).
    async fn announcing_server() -> std::net::SocketAddr {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = sock.into_split();
            wr.write_all(b"* OK ready\r\n").await.unwrap();
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let tag = line.split_whitespace().next().unwrap_or("*").to_owned();
                let answer = if line.contains("UID SEARCH") {
                    format!("* SEARCH 1\r\n* 2 EXISTS\r\n{tag} OK done\r\n")
                } else {
                    format!("{tag} OK done\r\n")
                };
                wr.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn new_mail_announced_in_a_commands_answer_is_kept_for_the_next_wait() {
        let tcp = TcpStream::connect(announcing_server().await).await.unwrap();
        let handle = TimeoutHandle::new(Duration::from_secs(5), Duration::from_secs(5));
        let mut client = Client::new(MailStream::Plain(TimeoutStream::new(tcp, handle.clone())));
        client.read_response().await.unwrap();
        let mut session = client.login("me", "secret").await.map_err(|(e, _)| e).unwrap();
        assert!(!handle.take_change(), "nothing announced yet");
        assert_eq!(uid_search(&mut session, "UID 1:*").await.unwrap(), vec![1]);
        assert!(handle.take_change(), "the EXISTS in the search's answer is not lost");
        assert!(!handle.take_change(), "taken once");
    }

    #[test]
    fn uid_sets_are_short_ranges() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[42]), "42");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn quoting_escapes_and_refuses_line_breaks() {
        assert_eq!(quote(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quote("a\r\nb").is_err());
    }

    #[test]
    fn a_refused_login_is_a_sentence_not_a_debug_dump() {
        let no = r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#;
        let ImapError::Auth(sentence) =
            classify_login(async_imap::error::Error::No(no.to_owned()), "bob@example.org")
        else {
            panic!("not an authentication error");
        };
        assert!(!sentence.contains("code:") && !sentence.contains("Some("), "{sentence}");
        assert!(sentence.contains("`bob@example.org`"), "{sentence}");
        assert!(sentence.contains("wrong login name or password"), "{sentence}");
        assert!(sentence.contains("Authentication failed."), "{sentence}");
        assert!(sentence.contains("log in again"), "{sentence}");
        let busy = r#"code: None, info: Some("[UNAVAILABLE] Temporary failure")"#;
        let e = classify_login(async_imap::error::Error::No(busy.to_owned()), "bob@example.org");
        assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    }

    #[test]
    fn id_names_the_client_its_process_and_a_safe_instance() {
        use crate::{EmailConfig, Security, ServerConfig};
        let config = EmailConfig::new(
            "me@example.org",
            ServerConfig::new("imap.example.org", 993, Security::Tls),
            ServerConfig::new("smtp.example.org", 465, Security::Tls),
        );
        let plain = identification(&config.clone().client_instance("worker-1"));
        assert!(plain.starts_with("ID (\"name\" \"channel-email\" \"version\" "), "{plain}");
        assert!(plain.contains(&format!("\"x-pid\" \"{}\"", std::process::id())), "{plain}");
        assert!(plain.ends_with("\"x-instance\" \"worker-1\")"), "{plain}");
        // A name that would break the quoted string is left out, not sent.
        let hostile = identification(&config.client_instance("w\" \"x-evil\" \"1"));
        assert!(!hostile.contains("x-instance") && !hostile.contains("x-evil"), "{hostile}");
    }

    #[test]
    fn the_verb_names_the_command_without_its_arguments() {
        assert_eq!(verb("UID FETCH 1:5 (BODY.PEEK[])"), "UID FETCH");
        assert_eq!(verb("SELECT \"INBOX\""), "SELECT");
    }
}
