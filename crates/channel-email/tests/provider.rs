//! The email provider against the real Dovecot + OpenSMTPD: verification with one typed error
//! per kind of failure, and an account created, logged in, receiving and replying through the
//! runtime alone on SQLite.

mod support;

use std::sync::Arc;
use std::time::Duration;

use channel_core::provider::{FieldKind, LoginError, LoginInput, LoginStep, Provider};
use channel_core::runtime::Runtime;
use channel_core::state::StateKey;
use channel_core::{AccountStore, MessageStore};
use channel_core::{
    BlobStore, Channel, ChannelError, ConnectionState, Direction, Engine, IdentityInfo, MessageId,
    MessageStatus, NewAccount, OutboundMessage, PreparedSend,
};
use channel_email::{
    EmailAccountConfig, EmailChannel, EmailProvider, KIND, PASSWORD_KEY, Security,
};
use channel_email::{Server, SmtpAuth};
use channel_email::{VerifyError, verify};
use secrecy::{ExposeSecret, SecretString};
use support::{RecordingInbound, free_port, stack};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_right_password_verifies_against_both_servers() {
    let st = stack();
    let bob = st.user("verify-ok");
    let found = verify(&st.account_config(&bob), &secret(&bob.password)).await;
    let found = found.expect("verified");
    assert!(found.idle, "Dovecot pushes with IDLE");
    assert_eq!(found.smtp_mechanism, None, "the test relay takes mail without a login");
}

#[tokio::test]
async fn a_wrong_password_is_a_credentials_error_in_a_sentence() {
    let st = stack();
    let bob = st.user("verify-wrong");
    let err = verify(&st.account_config(&bob), &secret("not-the-password")).await.unwrap_err();
    let VerifyError::Credentials { server, login, sentence } = &err else {
        panic!("not a credentials error: {err:?}");
    };
    assert_eq!((*server, login.as_str()), (Server::Imap, bob.address.as_str()));
    assert!(!err.is_transient());
    let text = err.to_string();
    assert_eq!(&text, sentence);
    assert!(!text.contains("code:") && !text.contains("Some("), "no Debug dump: {text}");
    assert!(
        text.contains("wrong login name or password") && text.contains("log in again"),
        "{text}"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error_for_the_server_it_belongs_to() {
    let st = stack();
    let bob = st.user("verify-closed");
    let mut imap_closed = st.account_config(&bob);
    imap_closed.imap.port = Some(free_port());
    let err = verify(&imap_closed, &secret(&bob.password)).await.unwrap_err();
    assert!(matches!(err, VerifyError::Connect { server: Server::Imap, .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("imap.port"), "says what to check: {err}");

    let mut smtp_closed = st.account_config(&bob);
    smtp_closed.smtp.port = Some(free_port());
    let err = verify(&smtp_closed, &secret(&bob.password)).await.unwrap_err();
    assert!(matches!(err, VerifyError::Connect { server: Server::Smtp, .. }), "{err:?}");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_resolution_error() {
    let st = stack();
    let bob = st.user("verify-dns");
    let mut config = st.account_config(&bob);
    config.imap.host = "imap.does-not-exist.invalid".to_owned();
    config.imap.security = Security::Tls;
    let err = verify(&config, &secret(&bob.password)).await.unwrap_err();
    assert!(matches!(err, VerifyError::Resolve { server: Server::Imap, .. }), "{err:?}");
    assert!(err.to_string().contains("imap.host"), "{err}");
}

#[tokio::test]
async fn tls_spoken_to_a_plaintext_port_is_a_tls_error() {
    let st = stack();
    let bob = st.user("verify-tls");
    let mut config = st.account_config(&bob);
    config.imap.security = Security::Tls;
    let err = verify(&config, &secret(&bob.password)).await.unwrap_err();
    assert!(matches!(err, VerifyError::Tls { server: Server::Imap, .. }), "{err:?}");
    assert!(err.to_string().contains("imap.security"), "{err}");
}

#[tokio::test]
async fn an_smtp_server_without_a_usable_login_mechanism_is_a_missing_capability() {
    let st = stack();
    let bob = st.user("verify-noauth");
    // The test relay offers no AUTH at all: an account that wants to log in cannot send.
    let mut config = st.account_config(&bob);
    config.smtp.auth = SmtpAuth::Password;
    let err = verify(&config, &secret(&bob.password)).await.unwrap_err();
    assert!(matches!(err, VerifyError::Capability { server: Server::Smtp, .. }), "{err:?}");
    assert!(err.to_string().contains("no login mechanism"), "{err}");
}

#[tokio::test]
async fn a_channel_without_a_saved_password_needs_a_login_and_a_bad_configuration_is_permanent() {
    let st = stack();
    let bob = st.user("provider-nologin");
    let store = Arc::new(channel_store::SqlStore::open_sqlite_temporary().await.expect("sqlite"));
    let engine = Engine::builder(store.clone(), StateKey::generate())
        .blob_store(BlobStore::in_memory())
        .build()
        .expect("engine");
    let provider = EmailProvider::new();
    let new = NewAccount::new(KIND, &bob.address).with_config(st.account_config(&bob).to_json());
    let account = store.create_account(new, engine.now()).await.expect("account");
    match provider.channel(&account, &engine).await {
        Err(ChannelError::NeedsLogin(reason)) => {
            assert!(reason.contains("login flow `password`"), "says what to do: {reason}")
        }
        other => panic!("{:?}", other.map(|_| "a channel")),
    }
    let mut bad = account.clone();
    bad.config["imap"]["port"] = serde_json::json!("imap");
    match provider.channel(&bad, &engine).await {
        Err(ChannelError::Permanent(reason)) => assert!(reason.contains("imap.port"), "{reason}"),
        other => panic!("{:?}", other.map(|_| "a channel")),
    }
}

/// The whole life of an account through the runtime alone: added with its configuration,
/// waiting for its login, logged in with one password step (a wrong one is asked again and
/// saves nothing), then connected, receiving a mail and sending the reply through the
/// dispatcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_added_logged_in_and_replies_through_the_runtime_on_sqlite() {
    let st = stack();
    let (alice, bob) = (st.user("alice"), st.user("bob"));
    let store = Arc::new(channel_store::SqlStore::open_sqlite_temporary().await.expect("sqlite"));
    let engine = Engine::builder(store.clone(), StateKey::generate())
        .blob_store(BlobStore::in_memory())
        .build()
        .expect("engine");
    let runtime = Runtime::with_providers(engine.clone())
        .provider(Arc::new(EmailProvider::new()))
        .start()
        .await
        .expect("runtime");

    let refused = runtime
        .add_account(NewAccount::new(KIND, &bob.address).with_config(serde_json::json!({
            "address": bob.address, "imap": {"host": "127.0.0.1", "port": "143"},
        })))
        .await;
    assert!(
        matches!(&refused, Err(channel_core::EngineError::AccountConfig(e)) if e.field == "imap.port"),
        "{refused:?}"
    );

    let config = st.account_config(&bob);
    let account = runtime
        .add_account(NewAccount::new(KIND, &bob.address).with_config(config.to_json()))
        .await
        .expect("account saved");
    eventually("the account waiting for its login", || {
        let store = store.clone();
        async move {
            let a = store.account(account.id).await.ok()?;
            matches!(a.connection, ConnectionState::NeedsLogin { .. }).then_some(())
        }
    })
    .await;
    assert!(runtime.holds_account(account.id));

    let asked = runtime.login_step(account.id, "password", LoginInput::none()).await.unwrap();
    let LoginStep::Input { name, fields, .. } = &asked else { panic!("{asked:?}") };
    assert_eq!(name, "password");
    assert_eq!((fields[0].id.as_str(), fields[0].kind), ("password", FieldKind::Password));

    let unknown =
        runtime.login_step(account.id, "password", LoginInput::none().with("code", "12345")).await;
    assert!(
        matches!(&unknown, Err(LoginError::InvalidInput { field, .. }) if field == "code"),
        "{unknown:?}"
    );

    let wrong = runtime
        .login_step(account.id, "password", LoginInput::none().with("password", "wrong"))
        .await;
    match &wrong {
        Err(LoginError::InvalidInput { field, message }) => {
            assert_eq!(field, "password");
            assert!(message.contains("wrong login name or password"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let state = engine.account_state(account.id);
    assert!(state.get(PASSWORD_KEY).await.unwrap().is_none(), "a wrong password is not saved");

    let done = runtime
        .login_step(account.id, "password", LoginInput::none().with("password", &bob.password))
        .await
        .expect("logged in");
    assert_eq!(done, LoginStep::Done { who: Some(bob.address.clone()) });
    let saved = state.get(PASSWORD_KEY).await.unwrap().expect("password saved");
    assert_eq!(saved.expose_secret(), bob.password.as_bytes());
    let stored_account = store.account(account.id).await.unwrap();
    assert!(
        !stored_account.config.to_string().contains(&bob.password),
        "the password is never in the configuration"
    );
    eventually("the account connected", || {
        let store = store.clone();
        async move {
            let a = store.account(account.id).await.ok()?;
            matches!(a.connection, ConnectionState::Connected).then_some(())
        }
    })
    .await;

    // Alice writes to Bob over the real SMTP relay.
    let alice_sink = Arc::new(RecordingInbound::new());
    let alice_channel =
        Arc::new(EmailChannel::new(st.config(&alice).watch_sent(false)).expect("channel"));
    let cancel = CancellationToken::new();
    let alice_task = {
        let (c, s, k) = (alice_channel.clone(), alice_sink.clone(), cancel.clone());
        tokio::spawn(async move { c.run(s, k).await })
    };
    let first = format!("<provider-{}@example.org>", rand::random::<u64>());
    alice_channel
        .send(&PreparedSend {
            message_id: MessageId::new(),
            client_key: first.clone(),
            thread_key: first.clone(),
            remote: IdentityInfo::new(&bob.address),
            text: Some("Hello Bob, through the runtime".to_owned()),
            html: None,
            subject: None,
            reply_to: None,
            references: Vec::new(),
            attachments: Vec::new(),
        })
        .await
        .expect("alice's mail submitted");
    let received = eventually("alice's mail in bob's store", || {
        let (store, first) = (store.clone(), first.clone());
        async move { store.message_by_provider_id(account.id, &first).await.expect("store") }
    })
    .await;
    assert_eq!(received.direction, Direction::Inbound);

    // Bob replies through the engine; the runtime's dispatcher sends it.
    let reply_id = engine
        .send(
            Some(account.id),
            OutboundMessage {
                conversation_id: received.conversation_id,
                text: Some("Hi Alice, got it".to_owned()),
                html: None,
                subject: None,
                idempotency_key: None,
                reply_to: Some(first.clone()),
                attachments: Vec::new(),
                label: "agent".to_owned(),
            },
        )
        .await
        .expect("queued");
    let sent = eventually("the reply sent", || {
        let store = store.clone();
        async move {
            let m = store.message(reply_id).await.ok()?;
            (m.status == MessageStatus::Sent).then_some(m)
        }
    })
    .await;
    let reply_message_id = sent.provider_id.expect("a sent message has its Message-ID");
    alice_sink.expect_within("bob's reply", WAIT, |s| s.stored(&reply_message_id).is_some()).await;
    let at_alice = alice_sink.stored(&reply_message_id).unwrap().message;
    assert_eq!(at_alice.reply_to.as_deref(), Some(first.as_str()));

    cancel.cancel();
    alice_task.await.unwrap().unwrap();
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_login_while_the_server_is_down_says_the_account_stays_unverified() {
    let st = stack();
    let bob = st.user("login-down");
    let store = Arc::new(channel_store::SqlStore::open_sqlite_temporary().await.expect("sqlite"));
    let engine = Engine::builder(store.clone(), StateKey::generate())
        .blob_store(BlobStore::in_memory())
        .build()
        .expect("engine");
    let mut config: EmailAccountConfig = st.account_config(&bob);
    config.imap.port = Some(free_port());
    let new = NewAccount::new(KIND, &bob.address).with_config(config.to_json());
    let account = store.create_account(new, engine.now()).await.expect("account");
    let step = EmailProvider::new()
        .login_step(&account, &engine, "password", LoginInput::none().with("password", "pw"))
        .await;
    match step {
        Err(LoginError::Unavailable(sentence)) => {
            assert!(sentence.contains("cannot be reached"), "{sentence}");
            assert!(sentence.contains("unverified") && sentence.contains("disable"), "{sentence}");
        }
        other => panic!("{other:?}"),
    }
    let state = engine.account_state(account.id);
    assert!(state.get(PASSWORD_KEY).await.unwrap().is_none(), "nothing saved");
}
