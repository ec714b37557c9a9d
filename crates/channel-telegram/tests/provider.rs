//! The Telegram provider through the runtime on SQLite: an account is created from its
//! configuration alone (the loopback server is one of its data centres), logged in with
//! `Runtime::login_step` (phone with 2FA, QR, bot token), then connects, receives and
//! replies through the engine's dispatcher. No channel is made by hand.
#![cfg(feature = "testing")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use channel_core::clock::Clock;
use channel_core::provider::{LoginError, LoginInput, LoginStep};
use channel_core::runtime::Runtime;
use channel_core::state::StateKey;
use channel_core::{
    AccountId, ConnectionState, Direction, Engine, EngineError, Message, MessageStatus, NewAccount,
    OutboundMessage, Timestamp,
};
use channel_store::SqlStore;
use channel_telegram::testing::loopback::{LoopbackServer, Reply, TEST_PASSWORD, TestUser};
use channel_telegram::{KIND, TelegramProvider};
use grammers_tl_types::{self as tl, Identifiable};
use serde_json::json;
use tempfile::TempDir;

const PHONE: &str = "+15550100";
const CODE: &str = "24680";
const API_HASH: &str = "the-apps-hash-5f0c2e";
const WAIT: Duration = Duration::from_secs(20);

/// A clock the QR test moves by hand (the loopback server needs real time for its sockets).
#[derive(Clone, Debug)]
struct HandClock(Arc<AtomicI64>);

impl HandClock {
    fn new() -> Self {
        Self(Arc::new(AtomicI64::new(Timestamp::now().as_millis())))
    }
    fn advance(&self, d: Duration) {
        self.0.fetch_add(i64::try_from(d.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for HandClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// One worker process: an engine on the SQLite file in `dir` and its runtime with the
/// Telegram provider.
struct Worker {
    engine: Engine,
    runtime: Runtime,
}

impl Worker {
    async fn start(dir: &Path, clock: Option<HandClock>) -> Self {
        let store = SqlStore::open_sqlite(dir.join("inbox.db").to_str().unwrap()).await.unwrap();
        let mut builder = Engine::builder(Arc::new(store), StateKey::from_bytes([9; 32]))
            .blob_dir(dir.join("blobs"))
            .worker_id("worker-1".to_owned())
            .leases(Duration::from_secs(3), Duration::from_millis(100));
        if let Some(clock) = clock {
            builder = builder.clock(Arc::new(clock));
        }
        let engine = builder.build().unwrap();
        let provider = TelegramProvider::new().api_credentials(4242, API_HASH);
        let runtime =
            Runtime::with_providers(engine.clone()).provider(Arc::new(provider)).start().await;
        Self { engine, runtime: runtime.unwrap() }
    }

    async fn stop(self) {
        assert!(self.runtime.shutdown().await.within_deadline());
    }

    /// Creates a Telegram account from `config` and hands it the server's auth key.
    async fn add_account(&self, server: &LoopbackServer, config: serde_json::Value) -> AccountId {
        let new = NewAccount::new(KIND, "support").with_config(config);
        let account = self.runtime.add_account(new).await.unwrap().id;
        server.provision_auth_key(&self.engine.account_state(account)).await.unwrap();
        self.holding(account).await;
        account
    }

    async fn holding(&self, account: AccountId) {
        until("the worker holds the account", || self.runtime.holds_account(account)).await;
    }

    async fn step(&self, account: AccountId, flow: &str, input: LoginInput) -> LoginStep {
        let step = self.runtime.login_step(account, flow, input).await;
        step.unwrap_or_else(|e| panic!("{flow}: {e}"))
    }

    async fn connection(&self, account: AccountId) -> ConnectionState {
        self.engine.account(account).await.unwrap().connection
    }

    async fn wait_for_connection(&self, account: AccountId, want: fn(&ConnectionState) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let state = self.connection(account).await;
            if want(&state) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "still {state:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn messages(&self, account: AccountId) -> Vec<Message> {
        let mut all = Vec::new();
        for c in self.engine.store().conversations(account, None, 100).await.unwrap() {
            all.extend(self.engine.store().messages(c.id, 100).await.unwrap());
        }
        all
    }

    /// Waits for a message stored for `account` that `pick` accepts.
    async fn wait_for_message(
        &self,
        account: AccountId,
        pick: impl Fn(&Message) -> bool,
    ) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(m) = self.messages(account).await.into_iter().find(|m| pick(m)) {
                return m;
            }
            assert!(tokio::time::Instant::now() < deadline, "{:?}", self.messages(account).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Alice writes; the message is stored; a reply to it is sent through the dispatcher
    /// and reaches the server once.
    async fn receives_and_replies(
        &self,
        server: &LoopbackServer,
        account: AccountId,
        alice: &TestUser,
    ) {
        server.incoming(alice.id, "hello, is anyone there?");
        let incoming = self
            .wait_for_message(account, |m| {
                m.direction == Direction::Inbound
                    && m.text.as_deref() == Some("hello, is anyone there?")
            })
            .await;
        let reply = OutboundMessage {
            conversation_id: incoming.conversation_id,
            text: Some("yes, how can we help?".to_owned()),
            html: None,
            subject: None,
            idempotency_key: None,
            reply_to: incoming.provider_id.clone(),
            attachments: Vec::new(),
            label: "chat_manual".to_owned(),
        };
        let id = self.engine.send(Some(account), reply).await.unwrap();
        let sent =
            self.wait_for_message(account, |m| m.id == id && m.status == MessageStatus::Sent).await;
        assert!(sent.provider_id.is_some());
        let at_server: Vec<_> =
            server.messages().into_iter().filter(|m| m.text == "yes, how can we help?").collect();
        assert_eq!(at_server.len(), 1, "{at_server:?}");
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback server whose auth key is logged out, with the owner's phone login and Alice.
async fn server(password: Option<&str>) -> (LoopbackServer, TestUser) {
    let server = LoopbackServer::start().await.unwrap();
    server.require_login();
    server.add_phone_login(PHONE, CODE, password);
    server.set_api_credentials(4242, API_HASH);
    let alice = server.add_user(2001, "Alice", Some("alice"));
    (server, alice)
}

/// The account's configuration: the loopback server as data centre 2, short intervals.
fn config(server: &LoopbackServer) -> serde_json::Value {
    let (id, address) = server.data_centre();
    json!({
        "data_centres": { id.to_string(): address.to_string() },
        "connect_timeout_ms": 2000,
        "sync_interval_ms": 100,
        "reconnect_min_ms": 20,
        "reconnect_max_ms": 200,
        "login_timeout_ms": 5000
    })
}

fn input(field: &str, value: &str) -> LoginInput {
    LoginInput::none().with(field, value)
}

fn asks(step: &LoginStep, what: &str) -> bool {
    matches!(step, LoginStep::Input { name, fields, .. } if name == what && fields[0].id == what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_logs_in_by_phone_code_and_2fa_through_the_runtime_then_receives_and_replies() {
    let (server, alice) = server(Some(TEST_PASSWORD)).await;
    let dir = TempDir::new().unwrap();
    let worker = Worker::start(dir.path(), None).await;
    let account = worker.add_account(&server, config(&server)).await;

    // Not logged in: the account waits, saying what to do.
    worker.wait_for_connection(account, |s| matches!(s, ConnectionState::NeedsLogin { .. })).await;
    let ConnectionState::NeedsLogin { reason } = worker.connection(account).await else {
        unreachable!()
    };
    assert!(reason.contains("log in with the `phone`, `qr` or `bot` flow"), "{reason}");

    let first = worker.step(account, "phone", LoginInput::none()).await;
    assert!(asks(&first, "phone"), "{first:?}");
    let code = worker.step(account, "phone", input("phone", PHONE)).await;
    assert!(asks(&code, "code"), "{code:?}");
    let LoginStep::Input { hint: Some(hint), .. } = &code else { panic!("{code:?}") };
    assert!(hint.contains("5-digit code"), "{hint}");

    let wrong = worker.runtime.login_step(account, "phone", input("code", "11111")).await;
    assert!(
        matches!(&wrong, Err(LoginError::InvalidInput { field, .. }) if field == "code"),
        "{wrong:?}"
    );
    let password = worker.step(account, "phone", input("code", CODE)).await;
    assert_eq!(
        password,
        LoginStep::Input {
            name: "password".to_owned(),
            fields: vec![channel_core::provider::LoginField {
                id: "password".to_owned(),
                kind: channel_core::provider::FieldKind::Password,
                label: "Two-step verification password".to_owned(),
            }],
            hint: Some("the usual".to_owned()),
        }
    );
    let wrong = worker.runtime.login_step(account, "phone", input("password", "hunter3")).await;
    assert!(
        matches!(&wrong, Err(LoginError::InvalidInput { field, .. }) if field == "password"),
        "{wrong:?}"
    );
    assert!(!server.is_authorized());
    let done = worker.step(account, "phone", input("password", TEST_PASSWORD)).await;
    assert_eq!(done, LoginStep::Done { who: Some("@owner".to_owned()) });

    worker.wait_for_connection(account, |s| *s == ConnectionState::Connected).await;
    worker.receives_and_replies(&server, account, &alice).await;
    worker.stop().await;

    // Secrets are in the encrypted account state only: neither the api_hash nor the auth
    // key is anywhere in the database's files in the clear.
    let key_hex = hex::encode(server.auth_key());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(API_HASH), "api_hash in {}", path.display());
            assert!(!text.contains(&key_hex), "auth key in {}", path.display());
            assert!(!text.contains(TEST_PASSWORD), "password in {}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_and_password_steps_resume_in_a_restarted_worker_from_the_stored_login() {
    let (server, _alice) = server(Some(TEST_PASSWORD)).await;
    let dir = TempDir::new().unwrap();
    let worker = Worker::start(dir.path(), None).await;
    let account = worker.add_account(&server, config(&server)).await;
    assert!(asks(&worker.step(account, "phone", input("phone", PHONE)).await, "code"));
    worker.stop().await;

    // A new process on the same SQLite file: the login waits for the code.
    let worker = Worker::start(dir.path(), None).await;
    worker.holding(account).await;
    assert!(asks(&worker.step(account, "phone", LoginInput::none()).await, "code"));
    assert!(asks(&worker.step(account, "phone", input("code", CODE)).await, "password"));
    worker.stop().await;

    // And another one: it waits for the password, with its hint.
    let worker = Worker::start(dir.path(), None).await;
    worker.holding(account).await;
    let password = worker.step(account, "phone", LoginInput::none()).await;
    assert!(
        matches!(&password, LoginStep::Input { name, hint: Some(h), .. } if name == "password" && h == "the usual"),
        "{password:?}"
    );
    let done = worker.step(account, "phone", input("password", TEST_PASSWORD)).await;
    assert!(matches!(done, LoginStep::Done { .. }), "{done:?}");
    worker.wait_for_connection(account, |s| *s == ConnectionState::Connected).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_login_shows_the_rotating_code_until_scanned_then_the_account_receives_and_replies() {
    let (server, alice) = server(None).await;
    let dir = TempDir::new().unwrap();
    let worker = Worker::start(dir.path(), None).await;
    let account = worker.add_account(&server, config(&server)).await;

    let LoginStep::Display { name, data: first, expires_at } =
        worker.step(account, "qr", LoginInput::none()).await
    else {
        panic!("a QR code to show");
    };
    assert_eq!(name, "qr");
    assert!(first.starts_with("tg://login?token="), "{first}");
    assert!(expires_at.is_some_and(|t| t > Timestamp::now()));
    // Waiting: the same call again; Telegram handed out a new token.
    let LoginStep::Display { data: second, .. } =
        worker.step(account, "qr", LoginInput::none()).await
    else {
        panic!("still a QR code to show");
    };
    assert_ne!(first, second, "the code follows Telegram's rotation");
    assert!(!server.is_authorized());

    assert!(server.accept_qr_login());
    let done = worker.step(account, "qr", LoginInput::none()).await;
    assert_eq!(done, LoginStep::Done { who: Some("@owner".to_owned()) });
    worker.wait_for_connection(account, |s| *s == ConnectionState::Connected).await;
    worker.receives_and_replies(&server, account, &alice).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_code_not_scanned_in_time_ends_as_expired_and_the_next_call_starts_again() {
    let (server, _alice) = server(None).await;
    let dir = TempDir::new().unwrap();
    let clock = HandClock::new();
    let worker = Worker::start(dir.path(), Some(clock.clone())).await;
    let mut config = config(&server);
    config["qr_login_timeout_ms"] = json!(60_000);
    let account = worker.add_account(&server, config).await;

    assert!(matches!(
        worker.step(account, "qr", LoginInput::none()).await,
        LoginStep::Display { .. }
    ));
    clock.advance(Duration::from_secs(59));
    assert!(matches!(
        worker.step(account, "qr", LoginInput::none()).await,
        LoginStep::Display { .. }
    ));
    clock.advance(Duration::from_secs(2));
    let expired = worker.runtime.login_step(account, "qr", LoginInput::none()).await;
    let Err(LoginError::Expired(why)) = &expired else { panic!("{expired:?}") };
    assert!(why.contains("start the `qr` flow again"), "{why}");
    // Starting again shows a new code, and this one can be scanned.
    assert!(matches!(
        worker.step(account, "qr", LoginInput::none()).await,
        LoginStep::Display { .. }
    ));
    assert!(server.accept_qr_login());
    assert!(matches!(worker.step(account, "qr", LoginInput::none()).await, LoginStep::Done { .. }));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_logs_in_with_its_token_through_the_runtime_and_connects() {
    let (server, _alice) = server(None).await;
    server.add_bot_token("5000:secret-token", 5000, "Helper");
    let dir = TempDir::new().unwrap();
    let worker = Worker::start(dir.path(), None).await;
    let account = worker.add_account(&server, config(&server)).await;

    assert!(asks(&worker.step(account, "bot", LoginInput::none()).await, "token"));
    let wrong = worker.runtime.login_step(account, "bot", input("token", "5000:wrong")).await;
    assert!(
        matches!(&wrong, Err(LoginError::InvalidInput { field, .. }) if field == "token"),
        "{wrong:?}"
    );
    let done = worker.step(account, "bot", input("token", "5000:secret-token")).await;
    assert_eq!(done, LoginStep::Done { who: Some("@helper_bot".to_owned()) });
    worker.wait_for_connection(account, |s| *s == ConnectionState::Connected).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_wait_comes_back_with_its_wait_and_the_phone_step_can_be_retried() {
    let (server, _alice) = server(None).await;
    let dir = TempDir::new().unwrap();
    let worker = Worker::start(dir.path(), None).await;
    let account = worker.add_account(&server, config(&server)).await;
    server.reply_once(tl::functions::auth::SendCode::CONSTRUCTOR_ID, Reply::flood_wait(30));
    let flood = worker.runtime.login_step(account, "phone", input("phone", PHONE)).await;
    assert_eq!(flood, Err(LoginError::FloodWait { retry_after: Duration::from_secs(30) }));
    assert!(asks(&worker.step(account, "phone", LoginInput::none()).await, "phone"));
    assert!(asks(&worker.step(account, "phone", input("phone", PHONE)).await, "code"));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_the_provider_refuses_names_its_field_and_saves_nothing() {
    let dir = TempDir::new().unwrap();
    let worker = Worker::start(dir.path(), None).await;
    for (config, field) in [
        (json!({"data_centres": {"2": "localhost"}}), "data_centres.2"),
        (json!({"api_id": "4242"}), "api_id"),
        (json!({"api_hash": API_HASH}), "api_hash"),
        (json!({"ping_interval_ms": 0}), "ping_interval_ms"),
    ] {
        let new = NewAccount::new(KIND, "support").with_config(config);
        match worker.runtime.add_account(new).await {
            Err(EngineError::AccountConfig(e)) => assert_eq!(e.field, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(worker.engine.store().accounts().await.unwrap().is_empty());
    worker.stop().await;
}

/// A person who writes the moment the login is done, before the account's channel has
/// connected, is not skipped: the update state is taken at the login, and the channel's
/// first connection catches up from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_written_right_after_the_login_is_received() {
    let (server, alice) = server(None).await;
    let dir = TempDir::new().unwrap();
    let worker = Worker::start(dir.path(), None).await;
    let account = worker.add_account(&server, config(&server)).await;
    assert!(asks(&worker.step(account, "phone", input("phone", PHONE)).await, "code"));
    let done = worker.step(account, "phone", input("code", CODE)).await;
    assert!(matches!(done, LoginStep::Done { .. }), "{done:?}");
    // At once, pushed to nobody yet: only a catch-up from the login's state finds it.
    server.incoming_silently(alice.id, "are you there yet?");
    server.incoming(alice.id, "hello?");
    for text in ["are you there yet?", "hello?"] {
        worker
            .wait_for_message(account, |m| {
                m.direction == Direction::Inbound && m.text.as_deref() == Some(text)
            })
            .await;
    }
    worker.stop().await;
}
