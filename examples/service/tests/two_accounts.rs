//! One runtime on SQLite with an email account (the real Dovecot and OpenSMTPD) and a Telegram
//! account (the loopback MTProto server), both created and logged in through the runtime
//! alone, each receiving a message and answering it through the auto-reply.

use std::path::Path;
use std::time::{Duration, Instant};

use channel_core::provider::{LoginInput, LoginStep};
use channel_core::runtime::Runtime;
use channel_core::state::StateKey;
use channel_core::{AccountId, ConnectionState, NewAccount};
use channel_email::testing::{imap_append, mails_containing, raw_mail, stack};
use channel_telegram::TelegramProvider;
use channel_telegram::testing::loopback::LoopbackServer;

const WAIT: Duration = Duration::from_secs(30);
const PHONE: &str = "+15550100";
const CODE: &str = "24680";
const API_HASH: &str = "the-apps-hash-5f0c2e";
const REPLY: &str = "Thank you, we will answer soon.";

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connected(runtime: &Runtime, account: AccountId) {
    until("the account is connected", async || {
        let account = runtime.engine().account(account).await.expect("account");
        account.connection == ConnectionState::Connected
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_and_a_telegram_account_added_and_logged_in_through_the_runtime_answer_people() {
    let st = stack();
    let (alice, bob) = (st.user("alice"), st.user("bob"));
    let server = LoopbackServer::start().await.expect("loopback server");
    server.require_login();
    server.add_phone_login(PHONE, CODE, None);
    server.set_api_credentials(4242, API_HASH);
    let carol = server.add_user(2001, "Carol", Some("carol"));

    let dir = tempfile::tempdir().expect("tempdir");
    let key = StateKey::generate();
    let password = bob.password.clone();
    let email_config = serde_json::to_value(st.account_config(&bob)).expect("config");
    let (dc, address) = server.data_centre();
    let telegram_config =
        serde_json::json!({ "data_centres": { dc.to_string(): address.to_string() } });
    let provision = |state| server.provision_auth_key(state); // the loopback server's auth key

    // What the service writes: start, add both accounts, log them in, answer people.
    let telegram = TelegramProvider::new().api_credentials(4242, API_HASH);
    let runtime = service_example::start(dir.path(), key, telegram).await.unwrap();
    tokio::spawn(service_example::auto_reply(runtime.engine().clone()));
    let mailbox = NewAccount::new(channel_email::KIND, "support").with_config(email_config);
    let mailbox = runtime.add_account(mailbox).await.unwrap().id;
    let password = LoginInput::none().with("password", password);
    let done = runtime.login_step(mailbox, "password", password).await.unwrap();
    let phone = NewAccount::new(channel_telegram::KIND, "support").with_config(telegram_config);
    let phone = runtime.add_account(phone).await.unwrap().id;
    provision(&runtime.engine().account_state(phone)).await.expect("auth key");
    runtime.login_step(phone, "phone", LoginInput::none().with("phone", PHONE)).await.unwrap();
    let code = runtime.login_step(phone, "phone", LoginInput::none().with("code", CODE)).await;
    // End of what the service writes.

    assert!(matches!(done, LoginStep::Done { .. }), "{done:?}");
    assert!(matches!(code, Ok(LoginStep::Done { .. })), "{code:?}");
    connected(&runtime, mailbox).await;
    connected(&runtime, phone).await;

    // People write; each gets one answer.
    let mail = raw_mail(&alice.address, &bob.address, "<q1@example.org>", "Help", "Hello?");
    imap_append(st.imap_port, &bob, "INBOX", &mail).await;
    server.incoming(carol.id, "hello, anyone there?");
    until("Alice has the answer in her mailbox", async || {
        mails_containing(&st.maildir(&alice), REPLY) == 1
    })
    .await;
    until("Carol has the answer", async || {
        server.messages().iter().filter(|m| m.out && m.text == REPLY).count() == 1
    })
    .await;
}

#[test]
fn the_readme_shows_the_service_as_it_is() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let lib = std::fs::read_to_string(root.join("examples/service/src/lib.rs")).expect("lib");
    let code = &lib[lib.find("use std::path::Path;").expect("the first use")..];
    assert!(readme.contains(code), "README.md must show examples/service/src/lib.rs as it is");
}
