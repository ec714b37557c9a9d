//! Sending through SMTP with lettre: validation first, a Message-ID fixed by the caller's
//! idempotency key, threading headers, the whole send under one timeout, errors classified.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use channel_core::{ChannelError, Fault, FaultKind, PreparedSend, SendReceipt, Timestamp};
use lettre::message::header::ContentType;
use lettre::message::{Attachment as MimeAttachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{EmailConfig, Security};
use crate::thread::{is_message_id, message_id_for};

/// Where the bytes of outgoing attachments come from (the service's blob store).
#[async_trait]
pub trait AttachmentSource: Send + Sync {
    /// The bytes stored under `blob_key`.
    async fn read(&self, blob_key: &str) -> Result<Bytes, ChannelError>;
}

/// The engine's blob store is an attachment source: a missing or corrupt blob is permanent,
/// anything else (the disk, the object store) is worth a retry.
#[async_trait]
impl AttachmentSource for channel_core::BlobStore {
    async fn read(&self, blob_key: &str) -> Result<Bytes, ChannelError> {
        use channel_core::BlobError;
        self.get(blob_key).await.map_err(|e| match e {
            BlobError::NotFound(_) | BlobError::InvalidKey(_) | BlobError::TooLarge { .. } => {
                ChannelError::permanent(format!("attachment: {e}"))
            }
            other => ChannelError::transient(format!("attachment: {other}")),
        })
    }
}

/// The SMTP side of an account.
#[derive(Clone)]
pub(crate) struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    config: Arc<EmailConfig>,
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

fn invalid(what: impl Into<String>) -> ChannelError {
    ChannelError::InvalidInput(what.into())
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n', '\0'])
}

fn mailbox(name: Option<&str>, address: &str, what: &str) -> Result<Mailbox, ChannelError> {
    if has_line_break(address) || name.is_some_and(has_line_break) {
        return Err(invalid(format!("CR/LF in the {what} address")));
    }
    let addr: Address =
        address.trim().parse().map_err(|e| invalid(format!("invalid {what} address: {e}")))?;
    Ok(Mailbox::new(name.map(str::to_owned), addr))
}

/// Whether a rustls error is among the causes (lettre reports a failed handshake as a
/// connection error, with the rustls error inside an I/O error).
fn caused_by_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && caused_by_tls(inner)
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// Classifies a lettre error for the engine, with its [`FaultKind`] and the error as the
/// fault's source. A connection that failed before any reply is told apart as DNS (the
/// server's name does not resolve now) or network.
pub(crate) async fn classify(
    e: lettre::transport::smtp::Error,
    host: &str,
    port: u16,
) -> ChannelError {
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    if e.is_timeout() {
        return ChannelError::Timeout { operation: "smtp send".to_owned(), after: Duration::ZERO };
    }
    if e.is_tls() || caused_by_tls(&e) {
        let fault =
            Fault::new(FaultKind::Tls, format!("TLS with the SMTP server {host}:{port} failed"));
        return ChannelError::transient(fault.source(e));
    }
    if e.is_permanent() {
        // 530, 534, 535: the server wants other credentials.
        if ["530", "534", "535"].contains(&code.as_str()) {
            let fault = Fault::new(FaultKind::Authentication, "the SMTP server refused the login");
            return ChannelError::needs_login(fault.source(e));
        }
        let fault =
            Fault::new(FaultKind::Server, format!("the SMTP server refused the message ({code})"));
        return ChannelError::permanent(fault.source(e));
    }
    if e.is_transient() {
        let fault =
            Fault::new(FaultKind::Server, format!("the SMTP server deferred the message ({code})"));
        return ChannelError::transient(fault.source(e));
    }
    if e.is_response() {
        let fault = Fault::new(FaultKind::Protocol, "the SMTP server answered unexpectedly");
        return ChannelError::transient(fault.source(e));
    }
    if e.is_client() {
        return ChannelError::permanent(
            Fault::new(FaultKind::Other, "SMTP client error").source(e),
        );
    }
    let resolves =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host, port)))
            .await
            .is_ok_and(|r| r.is_ok_and(|mut addrs| addrs.next().is_some()));
    let fault = if resolves {
        Fault::new(
            FaultKind::Network,
            format!("the connection to the SMTP server {host}:{port} failed"),
        )
    } else {
        Fault::new(FaultKind::Dns, format!("the SMTP server's name {host} does not resolve"))
    };
    ChannelError::transient(fault.source(e))
}

impl SmtpSender {
    pub(crate) fn new(config: Arc<EmailConfig>) -> Result<Self, ChannelError> {
        let from = mailbox(config.display_name.as_deref(), &config.address, "account")?;
        let smtp = &config.smtp;
        let tls_params = || -> Result<TlsParameters, ChannelError> {
            let mut b = TlsParameters::builder(smtp.host.clone());
            for der in &config.extra_roots {
                let cert = Certificate::from_der(der.clone())
                    .map_err(|e| ChannelError::permanent(format!("extra root certificate: {e}")))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| ChannelError::permanent(format!("SMTP TLS: {e}")))
        };
        let tls = match smtp.security {
            Security::Tls => Tls::Wrapper(tls_params()?),
            Security::StartTls => Tls::Required(tls_params()?),
            Security::Plaintext => Tls::None,
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
                .port(smtp.port)
                .tls(tls)
                .timeout(Some(config.timeouts.connect))
                .pool_config(PoolConfig::new().max_size(config.smtp_pool_size.max(1)));
        if !smtp.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                smtp.username.clone(),
                smtp.password.expose_secret().to_owned(),
            ));
        }
        Ok(Self { transport: builder.build(), from, config })
    }

    /// Checks and builds the message; nothing is sent.
    pub(crate) fn build(
        &self,
        msg: &PreparedSend,
        subject: &str,
        attachments: &[(Option<String>, String, Bytes)],
    ) -> Result<(Message, String), ChannelError> {
        if has_line_break(subject) {
            return Err(invalid("CR/LF in the subject"));
        }
        let to = mailbox(msg.remote.display_name.as_deref(), &msg.remote.address, "recipient")?;
        let message_id = message_id_for(&msg.client_key, &self.config.address);
        let mut references: Vec<String> = Vec::new();
        for id in msg.references.iter().chain(msg.reply_to.iter()) {
            if !is_message_id(id) {
                return Err(invalid("a reference is not a Message-ID"));
            }
            if !references.contains(id) {
                references.push(id.clone());
            }
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.clone()))
            .date_now();
        if let Some(parent) = &msg.reply_to {
            builder = builder.in_reply_to(parent.clone());
        }
        if !references.is_empty() {
            builder = builder.references(references.join(" "));
        }
        let text = msg.text.clone();
        let html = msg.html.clone();
        let body = match (text, html) {
            (Some(t), Some(h)) => Body::Multi(MultiPart::alternative_plain_html(t, h)),
            (None, Some(h)) => Body::Single(SinglePart::html(h)),
            (Some(t), None) => Body::Single(SinglePart::plain(t)),
            (None, None) => Body::Single(SinglePart::plain(String::new())),
        };
        let message = if attachments.is_empty() {
            match body {
                Body::Multi(m) => builder.multipart(m),
                Body::Single(s) => builder.singlepart(s),
            }
        } else {
            let mut mixed = match body {
                Body::Multi(m) => MultiPart::mixed().multipart(m),
                Body::Single(s) => MultiPart::mixed().singlepart(s),
            };
            for (name, mime, data) in attachments {
                let name = name.clone().unwrap_or_else(|| "attachment".to_owned());
                if has_line_break(&name) {
                    return Err(invalid("CR/LF in an attachment name"));
                }
                let ct = ContentType::parse(mime).unwrap_or_else(|_| {
                    ContentType::parse("application/octet-stream")
                        .unwrap_or(ContentType::TEXT_PLAIN)
                });
                mixed = mixed.singlepart(MimeAttachment::new(name).body(data.to_vec(), ct));
            }
            builder.multipart(mixed)
        }
        .map_err(|e| invalid(format!("cannot build the message: {e}")))?;
        Ok((message, message_id))
    }

    /// Sends a built message under the send timeout.
    pub(crate) async fn send(
        &self,
        message: Message,
        message_id: String,
    ) -> Result<SendReceipt, ChannelError> {
        let limit = self.config.timeouts.send;
        let attempt = async {
            match self.transport.send(message.clone()).await {
                // A pooled connection the server has had enough of ("452 too many messages" after
                // 100 on OpenSMTPD): lettre dropped it, so one more try gets a fresh connection.
                // The server refused the message, so this cannot deliver it twice.
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "SMTP deferred the message; trying once more on a new connection");
                    self.transport.send(message).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(limit, attempt).await {
            Err(_) => {
                Err(ChannelError::Timeout { operation: "smtp send".to_owned(), after: limit })
            }
            Ok(Err(e)) => {
                Err(match classify(e, &self.config.smtp.host, self.config.smtp.port).await {
                    ChannelError::Timeout { operation, .. } => {
                        ChannelError::Timeout { operation, after: limit }
                    }
                    other => other,
                })
            }
            Ok(Ok(_)) => Ok(SendReceipt { provider_id: message_id, at: Timestamp::now() }),
        }
    }
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

/// The subject used when the caller gives none: the first line of the text, shortened.
pub fn default_subject(msg: &PreparedSend) -> String {
    let first = msg
        .text
        .as_deref()
        .and_then(|t| t.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("");
    let mut s: String = first.chars().filter(|c| !c.is_control()).take(78).collect();
    if s.is_empty() {
        s = "(no subject)".to_owned();
    }
    if msg.reply_to.is_some() && !s.to_ascii_lowercase().starts_with("re:") {
        s = format!("Re: {s}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::{IdentityInfo, MessageId};

    fn config() -> Arc<EmailConfig> {
        use crate::config::ServerConfig;
        Arc::new(EmailConfig::new(
            "me@example.org",
            ServerConfig::new("127.0.0.1", 1, Security::Plaintext),
            ServerConfig::new("127.0.0.1", 1, Security::Plaintext),
        ))
    }

    fn outgoing(to: &str) -> PreparedSend {
        PreparedSend {
            message_id: MessageId::new(),
            client_key: "<k1@example.org>".to_owned(),
            thread_key: "<root@example.org>".to_owned(),
            remote: IdentityInfo::new(to),
            text: Some("hello".to_owned()),
            html: None,
            subject: None,
            reply_to: Some("<p@example.org>".to_owned()),
            references: vec!["<root@example.org>".to_owned()],
            attachments: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_reply_carries_the_message_id_in_reply_to_and_references() {
        let sender = SmtpSender::new(config()).unwrap();
        let (m, id) = sender.build(&outgoing("you@example.org"), "Re: hi", &[]).unwrap();
        assert_eq!(id, "<k1@example.org>");
        let text = String::from_utf8(m.formatted()).unwrap();
        assert!(text.contains("Message-ID: <k1@example.org>"), "{text}");
        assert!(text.contains("In-Reply-To: <p@example.org>"), "{text}");
        assert!(text.contains("References: <root@example.org> <p@example.org>"), "{text}");
    }

    #[tokio::test]
    async fn line_breaks_and_bad_addresses_are_invalid_input() {
        let sender = SmtpSender::new(config()).unwrap();
        let e = sender.build(&outgoing("you@example.org"), "a\r\nBcc: x@y", &[]).unwrap_err();
        assert!(matches!(e, ChannelError::InvalidInput(_)), "{e:?}");
        let e = sender.build(&outgoing("you@example.org\r\nBcc: x@y"), "s", &[]).unwrap_err();
        assert!(matches!(e, ChannelError::InvalidInput(_)), "{e:?}");
        let e = sender.build(&outgoing("not an address"), "s", &[]).unwrap_err();
        assert!(matches!(e, ChannelError::InvalidInput(_)), "{e:?}");
    }

    #[test]
    fn the_default_subject_is_the_first_line() {
        let mut m = outgoing("you@example.org");
        m.text = Some("\n  First line here\nsecond".to_owned());
        assert_eq!(default_subject(&m), "Re: First line here");
        m.reply_to = None;
        m.text = None;
        assert_eq!(default_subject(&m), "(no subject)");
    }
}
