//! A service can tell DNS, TLS, authentication and protocol failures apart: each failure of
//! the email channel against the real Dovecot and OpenSMTPD carries its `FaultKind`, and the
//! underlying error stays reachable through `source()`.

mod support;

use channel_core::{
    Channel, ChannelError, FaultKind, HistoryRequest, IdentityInfo, MessageId, PreparedSend,
};
use channel_email::{EmailChannel, EmailConfig, Security, ServerConfig};
use support::{User, stack};

fn history() -> HistoryRequest {
    HistoryRequest { thread_key: None, limit: 10, before: None, after: None }
}

fn mail_to(to: &User) -> PreparedSend {
    PreparedSend {
        message_id: MessageId::new(),
        client_key: format!("<fault-{}@example.org>", rand::random::<u64>()),
        thread_key: "fault".to_owned(),
        remote: IdentityInfo::new(&to.address),
        text: Some("hello".to_owned()),
        html: None,
        subject: None,
        reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
    }
}

/// The kind of the error's fault, checking that a cause is kept when one exists.
fn kind(err: &ChannelError) -> FaultKind {
    err.fault().unwrap_or_else(|| panic!("no fault in {err:?}")).kind()
}

fn has_cause(err: &ChannelError) -> bool {
    std::error::Error::source(err).and_then(std::error::Error::source).is_some()
}

/// `config` with its IMAP server changed by `change`.
fn imap(config: &EmailConfig, change: impl FnOnce(&mut ServerConfig)) -> EmailConfig {
    let mut server = config.imap().clone();
    change(&mut server);
    config.clone().imap_server(server)
}

/// `config` with its SMTP server changed by `change`.
fn smtp(config: &EmailConfig, change: impl FnOnce(&mut ServerConfig)) -> EmailConfig {
    let mut server = config.smtp().clone();
    change(&mut server);
    config.clone().smtp_server(server)
}

async fn imap_failure(config: EmailConfig) -> ChannelError {
    let channel = EmailChannel::new(config).expect("channel");
    channel.fetch_history(&history()).await.expect_err("the IMAP session fails")
}

#[tokio::test]
async fn imap_failures_say_dns_tls_authentication_or_network() {
    let st = stack();
    let bob = st.user("fault-imap");

    let unresolvable = imap(&st.config(&bob), |s| s.host = "no-such-host.invalid".to_owned());
    let err = imap_failure(unresolvable).await;
    assert_eq!(kind(&err), FaultKind::Dns, "{err:?}");
    assert!(has_cause(&err), "the resolver's error is kept: {err:?}");

    let tls_to_plaintext = imap(&st.config(&bob), |s| s.security = Security::Tls);
    let err = imap_failure(tls_to_plaintext).await;
    assert_eq!(kind(&err), FaultKind::Tls, "{err:?}");
    assert!(has_cause(&err), "rustls' error is kept: {err:?}");

    let wrong_password = imap(&st.config(&bob), |s| {
        *s = s.clone().credentials(bob.address.clone(), "not the password")
    });
    let err = imap_failure(wrong_password).await;
    assert!(matches!(err, ChannelError::NeedsLogin(_)), "{err:?}");
    assert_eq!(kind(&err), FaultKind::Authentication, "{err:?}");

    let closed_port = imap(&st.config(&bob), |s| s.port = support::free_port());
    let err = imap_failure(closed_port).await;
    assert_eq!(kind(&err), FaultKind::Network, "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn smtp_failures_say_dns_tls_or_protocol() {
    let st = stack();
    let bob = st.user("fault-smtp");
    let send = async |config: EmailConfig| {
        let channel = EmailChannel::new(config).expect("channel");
        channel.send(&mail_to(&bob)).await.expect_err("the send fails")
    };

    let unresolvable = smtp(&st.config(&bob), |s| s.host = "no-such-host.invalid".to_owned());
    let err = send(unresolvable).await;
    assert_eq!(kind(&err), FaultKind::Dns, "{err:?}");
    assert!(has_cause(&err), "lettre's error is kept: {err:?}");

    let tls_to_plaintext = smtp(&st.config(&bob), |s| s.security = Security::Tls);
    let err = send(tls_to_plaintext).await;
    assert_eq!(kind(&err), FaultKind::Tls, "{err:?}");

    // An IMAP server where SMTP was expected: its greeting is not SMTP.
    let imap_port = smtp(&st.config(&bob), |s| s.port = st.imap_port);
    let err = send(imap_port).await;
    assert_eq!(kind(&err), FaultKind::Protocol, "{err:?}");
}
