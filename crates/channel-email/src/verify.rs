//! Verifying an account before it is saved ([`verify`]): the IMAP login and its inbox, the
//! SMTP connection and a login mechanism lettre can use, with one typed error per kind of
//! failure ([`VerifyError`]) that says what to do next.
//!
//! ```no_run
//! use channel_email::{VerifyError, verify};
//! use channel_email::EmailAccountConfig;
//! use secrecy::SecretString;
//!
//! # async fn demo() {
//! let config = EmailAccountConfig::new("me@example.org", "imap.example.org", "smtp.example.org");
//! match verify(&config, &SecretString::from("secret".to_owned())).await {
//!     Ok(found) => println!("verified; IDLE: {}", found.idle),
//!     Err(e) if e.is_transient() => println!("not reachable now: {e}"),
//!     Err(VerifyError::Credentials { .. }) => println!("ask for the password again"),
//!     Err(e) => println!("fix the configuration: {e}"),
//! }
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;

use crate::account::{EmailAccountConfig, SmtpAuth};
use crate::config::{EmailConfig, Security};
use crate::error::ImapError;
use crate::imap_session::{log_in_over, logout, refused_login_sentence, select};

/// Which of the account's two servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// The IMAP server (configuration section `imap`).
    Imap,
    /// The SMTP server (configuration section `smtp`).
    Smtp,
}

impl Server {
    /// Its section in the account's configuration: `imap` or `smtp`.
    pub fn section(self) -> &'static str {
        match self {
            Server::Imap => "imap",
            Server::Smtp => "smtp",
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Server::Imap => "IMAP",
            Server::Smtp => "SMTP",
        })
    }
}

/// Why an account could not be verified. [`VerifyError::is_transient`] tells a server that
/// could not be reached (try later, or keep the account unverified and disabled) from a
/// configuration or a password that must change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The host name does not resolve.
    #[error(
        "the {server} server name `{host}` does not resolve ({reason}): check `{section}.host`, \
         or try again when name resolution works",
        section = server.section()
    )]
    Resolve {
        /// Which server.
        server: Server,
        /// Its host name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// No connection (refused, reset, no route).
    #[error(
        "the {server} server {host}:{port} cannot be reached ({reason}): check `{section}.host` \
         and `{section}.port`, or try again when the server is up",
        section = server.section()
    )]
    Connect {
        /// Which server.
        server: Server,
        /// Its host name.
        host: String,
        /// Its port.
        port: u16,
        /// What the system said.
        reason: String,
    },
    /// The server did not answer in time.
    #[error(
        "the {server} server {host}:{port} did not answer within {after:?} ({step}): try again \
         later, or raise `timeouts.connect`"
    )]
    Timeout {
        /// Which server.
        server: Server,
        /// Its host name.
        host: String,
        /// Its port.
        port: u16,
        /// What it was doing (`connect`, `login`).
        step: &'static str,
        /// The limit.
        after: Duration,
    },
    /// TLS failed: a port that speaks another security, an untrusted or mismatched
    /// certificate.
    #[error(
        "TLS with the {server} server {host}:{port} failed ({reason}): check `{section}.security` \
         (\"tls\" on ports 993 and 465, \"starttls\" on 143 and 587) and the server's certificate",
        section = server.section()
    )]
    Tls {
        /// Which server.
        server: Server,
        /// Its host name.
        host: String,
        /// Its port.
        port: u16,
        /// What rustls or the server said.
        reason: String,
    },
    /// The server refused the login name or the password.
    #[error("{sentence}")]
    Credentials {
        /// Which server.
        server: Server,
        /// The login name it refused.
        login: String,
        /// What went wrong and what to do, for people.
        sentence: String,
    },
    /// The server lacks something the account needs (no login mechanism lettre can use, no
    /// STARTTLS, no such inbox folder).
    #[error("the {server} server {host} {missing}")]
    Capability {
        /// Which server.
        server: Server,
        /// Its host name.
        host: String,
        /// What is missing and what to change.
        missing: String,
    },
    /// The server answered something unexpected, or refused for now.
    #[error("the {server} server {host}:{port} answered unexpectedly ({reason}): try again later")]
    Protocol {
        /// Which server.
        server: Server,
        /// Its host name.
        host: String,
        /// Its port.
        port: u16,
        /// What it answered.
        reason: String,
    },
}

impl VerifyError {
    /// Whether the server could not be reached or answered "not now": nothing is known to be
    /// wrong with the configuration or the password. Such an account can be kept, unverified
    /// and disabled, and verified again later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VerifyError::Resolve { .. }
                | VerifyError::Connect { .. }
                | VerifyError::Timeout { .. }
                | VerifyError::Protocol { .. }
        )
    }

    /// The kind of fault, in the vocabulary of [`channel_core::FaultKind`]: DNS, network,
    /// TLS, authentication, protocol (a missing capability is the server's; a timeout is the
    /// network's).
    pub fn fault_kind(&self) -> channel_core::FaultKind {
        use channel_core::FaultKind;
        match self {
            VerifyError::Resolve { .. } => FaultKind::Dns,
            VerifyError::Connect { .. } | VerifyError::Timeout { .. } => FaultKind::Network,
            VerifyError::Tls { .. } => FaultKind::Tls,
            VerifyError::Credentials { .. } => FaultKind::Authentication,
            VerifyError::Protocol { .. } => FaultKind::Protocol,
            VerifyError::Capability { .. } => FaultKind::Server,
            #[allow(unreachable_patterns)]
            _ => FaultKind::Other,
        }
    }

    /// The server the error is about.
    pub fn server(&self) -> Server {
        match self {
            VerifyError::Resolve { server, .. }
            | VerifyError::Connect { server, .. }
            | VerifyError::Timeout { server, .. }
            | VerifyError::Tls { server, .. }
            | VerifyError::Credentials { server, .. }
            | VerifyError::Capability { server, .. }
            | VerifyError::Protocol { server, .. } => *server,
        }
    }
}

/// What verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Whether the IMAP server pushes new mail (IDLE); without it the channel polls.
    pub idle: bool,
    /// The SMTP login mechanism lettre will use (`PLAIN`, `LOGIN`), or `None` without SMTP
    /// login.
    pub smtp_mechanism: Option<String>,
}

/// Verifies `config` with `password`: resolves and connects to both servers, logs in to
/// IMAP and opens the inbox read-only, connects to SMTP (TLS or STARTTLS as configured) and,
/// unless `smtp.auth` is `none`, logs in with a mechanism lettre can use. Each step runs
/// under `timeouts.connect`. Nothing is stored.
pub async fn verify(
    config: &EmailAccountConfig,
    password: &SecretString,
) -> Result<Verified, VerifyError> {
    let email = config.to_email_config(password);
    let idle = verify_imap(&email).await?;
    let smtp_mechanism = verify_smtp(config, &email, password).await?;
    Ok(Verified { idle, smtp_mechanism })
}

struct Target<'a> {
    server: Server,
    host: &'a str,
    port: u16,
    limit: Duration,
}

impl Target<'_> {
    fn timeout(&self, step: &'static str) -> VerifyError {
        VerifyError::Timeout {
            server: self.server,
            host: self.host.to_owned(),
            port: self.port,
            step,
            after: self.limit,
        }
    }

    fn protocol(&self, reason: impl fmt::Display) -> VerifyError {
        VerifyError::Protocol {
            server: self.server,
            host: self.host.to_owned(),
            port: self.port,
            reason: reason.to_string(),
        }
    }

    fn tls(&self, reason: impl fmt::Display) -> VerifyError {
        VerifyError::Tls {
            server: self.server,
            host: self.host.to_owned(),
            port: self.port,
            reason: reason.to_string(),
        }
    }

    fn capability(&self, missing: impl Into<String>) -> VerifyError {
        VerifyError::Capability {
            server: self.server,
            host: self.host.to_owned(),
            missing: missing.into(),
        }
    }

    /// Resolves the host and opens a TCP connection to the first address that answers.
    async fn connect(&self) -> Result<(TcpStream, SocketAddr), VerifyError> {
        let resolved =
            tokio::time::timeout(self.limit, tokio::net::lookup_host((self.host, self.port)))
                .await
                .map_err(|_| self.timeout("resolve"))?;
        let addrs: Vec<SocketAddr> = resolved
            .map_err(|e| VerifyError::Resolve {
                server: self.server,
                host: self.host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(VerifyError::Resolve {
                server: self.server,
                host: self.host.to_owned(),
                reason: "no address".into(),
            });
        }
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.limit, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => return Ok((tcp, addr)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = Some(self.timeout("connect"))
                }
                Ok(Err(e)) => {
                    last = Some(VerifyError::Connect {
                        server: self.server,
                        host: self.host.to_owned(),
                        port: self.port,
                        reason: e.to_string(),
                    })
                }
                Err(_) => last = Some(self.timeout("connect")),
            }
        }
        Err(last.unwrap_or_else(|| self.timeout("connect")))
    }
}

/// Logs in to IMAP and opens the inbox read-only; answers whether the server has IDLE.
async fn verify_imap(email: &EmailConfig) -> Result<bool, VerifyError> {
    let target = Target {
        server: Server::Imap,
        host: &email.imap.host,
        port: email.imap.port,
        limit: email.timeouts.connect,
    };
    let (tcp, _) = target.connect().await?;
    let login = email.imap.username.clone();
    let opened = tokio::time::timeout(target.limit, async {
        let mut conn = log_in_over(email, tcp).await?;
        let inbox = select(&mut conn.session, &email.inbox, true).await;
        logout(&mut conn.session, email.timeouts.done).await;
        Ok::<_, ImapError>((conn.idle, inbox))
    })
    .await
    .map_err(|_| target.timeout("login"))?;
    match opened {
        Ok((idle, Ok(_))) => Ok(idle),
        Ok((_, Err(e))) => Err(target.capability(format!(
            "has no folder `{}` to read incoming mail from ({e}): check `folders.inbox`",
            email.inbox
        ))),
        Err(ImapError::Auth(sentence)) => {
            Err(VerifyError::Credentials { server: Server::Imap, login, sentence })
        }
        Err(ImapError::Tls(reason)) => Err(target.tls(reason)),
        Err(ImapError::Timeout { .. }) => Err(target.timeout("login")),
        Err(ImapError::Io(e)) if email.imap.security != Security::Plaintext => {
            // A TLS port spoken to in clear (or the reverse) ends in a reset or garbage.
            Err(target.tls(e))
        }
        Err(e) => Err(target.protocol(e)),
    }
}

/// Connects to SMTP as the channel will and logs in; answers the mechanism used.
async fn verify_smtp(
    config: &EmailAccountConfig,
    email: &EmailConfig,
    password: &SecretString,
) -> Result<Option<String>, VerifyError> {
    let target = Target {
        server: Server::Smtp,
        host: &email.smtp.host,
        port: email.smtp.port,
        limit: email.timeouts.connect,
    };
    let (probe, addr) = target.connect().await?;
    drop(probe);
    let tls = || -> Result<TlsParameters, VerifyError> {
        let mut b = TlsParameters::builder(email.smtp.host.clone());
        for der in &email.extra_roots {
            let cert = Certificate::from_der(der.clone()).map_err(|e| target.tls(e))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls().map_err(|e| target.tls(e))
    };
    let smtp_error = |e: lettre::transport::smtp::Error, step: &'static str| {
        if e.is_tls() {
            target.tls(e)
        } else if e.is_timeout() {
            target.timeout(step)
        } else {
            target.protocol(e)
        }
    };
    let hello = ClientId::default();
    let implicit = match email.smtp.security {
        Security::Tls => Some(tls()?),
        Security::StartTls | Security::Plaintext => None,
    };
    let limit = target.limit;
    let mut conn = tokio::time::timeout(
        limit,
        AsyncSmtpConnection::connect_tokio1(addr, Some(limit), &hello, implicit, None),
    )
    .await
    .map_err(|_| target.timeout("greeting"))?
    .map_err(|e| smtp_error(e, "greeting"))?;
    if email.smtp.security == Security::StartTls {
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(target.capability(
                "offers no STARTTLS: set `smtp.security` to \"tls\" (usually port 465)",
            ));
        }
        tokio::time::timeout(limit, conn.starttls(tls()?, &hello))
            .await
            .map_err(|_| target.timeout("starttls"))?
            .map_err(|e| smtp_error(e, "starttls"))?;
    }
    let mechanism = if config.smtp.auth == SmtpAuth::Password {
        let Some(mechanism) = conn.server_info().get_auth_mechanism(DEFAULT_MECHANISMS) else {
            conn.abort().await;
            let hint = if email.smtp.security == Security::Plaintext {
                "; servers offer login only over TLS: set `smtp.security`"
            } else {
                "; set `smtp.auth` to \"none\" if it relays the account's mail without a login"
            };
            return Err(target.capability(format!(
                "offers no login mechanism lettre can use (PLAIN or LOGIN){hint}"
            )));
        };
        let login = config.login().to_owned();
        let credentials = Credentials::new(login.clone(), password.expose_secret().to_owned());
        let authed = tokio::time::timeout(limit, conn.auth(&[mechanism], &credentials))
            .await
            .map_err(|_| target.timeout("login"))?;
        match authed {
            Ok(_) => {}
            Err(e) if e.is_permanent() => {
                conn.abort().await;
                let detail = format!("wrong login name or password (the server said: {e})");
                let sentence = refused_login_sentence("SMTP", &login, &detail);
                return Err(VerifyError::Credentials { server: Server::Smtp, login, sentence });
            }
            Err(e) => {
                conn.abort().await;
                return Err(smtp_error(e, "login"));
            }
        }
        Some(mechanism.to_string())
    } else {
        None
    };
    let _ = tokio::time::timeout(email.timeouts.done, conn.quit()).await;
    Ok(mechanism)
}
