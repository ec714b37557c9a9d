//! IMAP over implicit TLS and over STARTTLS against a Dovecot with a certificate from a
//! private CA made for the test (`openssl` on the command line), trusted through
//! `EmailConfig::add_root_certificate`.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use channel_core::{Channel, ConnectionState};
use channel_email::{EmailChannel, EmailConfig, Security};
use support::{PrivateDovecot, RecordingInbound, User, free_port, imap_append, raw_mail, stack};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl on the PATH");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it; returns the
/// CA in DER.
fn make_certificates(dir: &Path) -> Vec<u8> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=channel-email test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n\
subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    openssl(dir, &["x509", "-in", "ca.pem", "-outform", "der", "-out", "ca.der"]);
    std::fs::read(dir.join("ca.der")).expect("ca.der")
}

fn tls_config(user: &User, security: Security, port: u16, root: Option<&[u8]>) -> EmailConfig {
    let config = support::account_config(user, port, stack().smtp_port).watch_sent(false);
    let mut imap = config.imap().clone();
    imap.host = "localhost".to_owned();
    imap.security = security;
    let config = config.imap_server(imap);
    match root {
        Some(der) => config.add_root_certificate(der.to_vec()),
        None => config,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_and_starttls_work_with_a_private_root_and_fail_without_it() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = make_certificates(certs.path());
    let imaps_port = free_port();
    let extra = format!(
        "ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n\
service imap-login {{\n  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes\n  }}\n}}\n",
        cert = certs.path().join("server.pem").display(),
        key = certs.path().join("server.key").display(),
    );
    let dovecot = PrivateDovecot::start(&extra);
    let bob = dovecot.user("bob");

    for (security, port) in [(Security::Tls, imaps_port), (Security::StartTls, dovecot.imap_port)] {
        let id = format!("<tls-{security:?}-{}@example.org>", rand::random::<u64>());
        imap_append(
            dovecot.imap_port,
            &bob,
            "INBOX",
            &raw_mail("x@example.org", &bob.address, &id, "s", "secure"),
        )
        .await;
        let sink = Arc::new(RecordingInbound::new());
        let channel = Arc::new(
            EmailChannel::new(tls_config(&bob, security, port, Some(&ca))).expect("channel"),
        );
        let cancel = CancellationToken::new();
        let task = {
            let (c, s, k) = (channel.clone(), sink.clone(), cancel.clone());
            tokio::spawn(async move { c.run(s, k).await })
        };
        sink.expect_within(&format!("the message over {security:?}"), WAIT, |s| {
            s.stored(&id).is_some()
        })
        .await;
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    // Without the private root the certificate is not trusted: the channel does not log in
    // and reports a transient disconnect naming TLS.
    let sink = Arc::new(RecordingInbound::new());
    let channel = Arc::new(
        EmailChannel::new(tls_config(&bob, Security::Tls, imaps_port, None)).expect("channel"),
    );
    let cancel = CancellationToken::new();
    let task = {
        let (c, s, k) = (channel.clone(), sink.clone(), cancel.clone());
        tokio::spawn(async move { c.run(s, k).await })
    };
    sink.expect_within("a TLS failure", WAIT, |s| {
        s.connection_states().iter().any(|c| {
            matches!(c, ConnectionState::TransientDisconnect { reason } if reason.to_lowercase().contains("tls"))
        })
    })
    .await;
    assert!(!sink.connection_states().contains(&ConnectionState::Connected));
    assert_eq!(sink.message_count(), 0);
    cancel.cancel();
    task.await.unwrap().unwrap();
}
