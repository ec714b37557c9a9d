//! Login flows through the real grammers client against the loopback server.
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::time::Duration;

use channel_core::testing::RecordingInbound;
use channel_core::{Channel, ChannelError, ConnectionState, Inbound};
use channel_telegram::login::{CodeDelivery, LoginError, LoginProgress, LoginStep, TelegramLogin};
use channel_telegram::session::{PEERS_KEY, SESSION_KEY, StoredSession, UPDATES_KEY};
use channel_telegram::testing::loopback::{LoopbackServer, Reply, TEST_PASSWORD};
use channel_telegram::{TelegramChannel, TelegramConfig};
use grammers_tl_types::{self as tl, Identifiable};
use tokio_util::sync::CancellationToken;

const PHONE: &str = "+15550100";
const CODE: &str = "24680";
const SEND_CODE: u32 = tl::functions::auth::SendCode::CONSTRUCTOR_ID;

fn login() -> TelegramLogin {
    TelegramLogin::new(4242, "0123456789abcdef").timeout(Duration::from_secs(5))
}

/// An account whose auth key exists on the server but is not logged in.
async fn logged_out(password: Option<&str>) -> (LoopbackServer, Arc<RecordingInbound>) {
    let server = LoopbackServer::start().await.unwrap();
    server.require_login();
    server.add_phone_login(PHONE, CODE, password);
    let inbound = Arc::new(RecordingInbound::new());
    inbound.set_state(SESSION_KEY, &server.logged_out_session().to_bytes());
    (server, inbound)
}

fn account(inbound: &Arc<RecordingInbound>) -> Arc<dyn Inbound> {
    inbound.clone()
}

fn stored(inbound: &RecordingInbound) -> StoredSession {
    StoredSession::from_bytes(&inbound.state(SESSION_KEY).expect("a stored session")).unwrap()
}

async fn channel_connects(inbound: &Arc<RecordingInbound>) -> bool {
    let channel = TelegramChannel::new(TelegramConfig::new(4242));
    let cancel = CancellationToken::new();
    let run = channel.run(account(inbound), cancel.clone());
    let wait = async {
        let ok = inbound
            .wait_for_state(Duration::from_secs(10), |s| *s == ConnectionState::Connected)
            .await;
        cancel.cancel();
        ok
    };
    let (result, ok) = tokio::join!(run, wait);
    result.is_ok() && ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_login_with_its_code_stores_a_session_the_channel_then_runs_on() {
    let (server, inbound) = logged_out(None).await;
    let progress = login().request_code(account(&inbound), PHONE).await.unwrap();
    assert_eq!(
        progress,
        LoginProgress::CodeSent {
            delivery: CodeDelivery::App,
            length: Some(5),
            resend_after: None
        }
    );
    let pending = TelegramLogin::pending(&*inbound).await.unwrap().unwrap();
    assert_eq!((pending.phone.as_str(), pending.step), (PHONE, LoginStep::Code));
    assert!(!server.is_authorized());

    // The next step runs on a new connection, as a later web request would.
    let LoginProgress::LoggedIn(me) = login().submit_code(account(&inbound), CODE).await.unwrap()
    else {
        panic!("logged in");
    };
    assert_eq!(me.user_id, server.me().id);
    assert_eq!(me.username.as_deref(), Some("owner"));
    assert!(!me.bot);
    assert!(server.is_authorized());
    assert_eq!(TelegramLogin::pending(&*inbound).await.unwrap(), None);
    assert_eq!(stored(&inbound).me.map(|m| m.id), Some(server.me().id));
    assert!(server.accepted_connections() >= 2);
    assert!(channel_connects(&inbound).await, "{:?}", inbound.connection_states());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_can_be_retried_and_an_expired_one_ends_the_login() {
    let (server, inbound) = logged_out(None).await;
    assert_eq!(
        login().submit_code(account(&inbound), CODE).await,
        Err(LoginError::NoLoginInProgress)
    );
    login().request_code(account(&inbound), PHONE).await.unwrap();
    assert_eq!(login().submit_code(account(&inbound), "11111").await, Err(LoginError::InvalidCode));
    assert_eq!(
        TelegramLogin::pending(&*inbound).await.unwrap().map(|p| p.step),
        Some(LoginStep::Code),
        "still waiting for the code"
    );
    assert_eq!(
        login().submit_password(account(&inbound), "x").await,
        Err(LoginError::NoLoginInProgress),
        "no password step before the code"
    );
    assert!(matches!(
        login().submit_code(account(&inbound), CODE).await,
        Ok(LoginProgress::LoggedIn(_))
    ));

    // An expired code: the login ends and must start over.
    let (server2, inbound2) = logged_out(None).await;
    login().request_code(account(&inbound2), PHONE).await.unwrap();
    server2.reply_once(
        tl::functions::auth::SignIn::CONSTRUCTOR_ID,
        Reply::rpc_error(400, "PHONE_CODE_EXPIRED"),
    );
    assert_eq!(login().submit_code(account(&inbound2), CODE).await, Err(LoginError::CodeExpired));
    assert_eq!(TelegramLogin::pending(&*inbound2).await.unwrap(), None);
    assert!(!server2.is_authorized());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2fa_account_asks_for_the_password_which_is_proven_with_srp_and_never_sent() {
    let (server, inbound) = logged_out(Some(TEST_PASSWORD)).await;
    login().request_code(account(&inbound), PHONE).await.unwrap();
    assert_eq!(
        login().submit_code(account(&inbound), CODE).await,
        Ok(LoginProgress::PasswordNeeded { hint: Some("the usual".to_owned()) })
    );
    assert!(!server.is_authorized());
    assert_eq!(
        login().submit_password(account(&inbound), "hunter3").await,
        Err(LoginError::InvalidPassword)
    );
    assert!(!server.is_authorized());
    let LoginProgress::LoggedIn(me) =
        login().submit_password(account(&inbound), TEST_PASSWORD).await.unwrap()
    else {
        panic!("logged in");
    };
    assert_eq!(me.user_id, server.me().id);
    assert!(server.is_authorized());
    assert_eq!(TelegramLogin::pending(&*inbound).await.unwrap(), None);
    for request in server.requests() {
        assert!(
            !request.body.windows(TEST_PASSWORD.len()).any(|w| w == TEST_PASSWORD.as_bytes()),
            "the password went out in {}",
            request.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_logs_in_with_its_token_and_a_bad_token_is_typed() {
    let (server, inbound) = logged_out(None).await;
    let bot = server.add_bot_token("5000:secret-token", 5000, "Helper");
    assert_eq!(
        login().login_bot(account(&inbound), "5000:wrong").await,
        Err(LoginError::InvalidBotToken)
    );
    let LoginProgress::LoggedIn(me) =
        login().login_bot(account(&inbound), "5000:secret-token").await.unwrap()
    else {
        panic!("logged in");
    };
    assert_eq!((me.user_id, me.bot), (bot.id, true));
    let me = stored(&inbound).me.unwrap();
    assert_eq!((me.id, me.bot), (bot.id, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_waits_bad_phones_and_wrong_app_credentials_are_typed_and_start_no_login() {
    let (server, inbound) = logged_out(None).await;
    server.reply_once(SEND_CODE, Reply::flood_wait(30));
    assert_eq!(
        login().request_code(account(&inbound), PHONE).await,
        Err(LoginError::FloodWait { retry_after: Duration::from_secs(30) })
    );
    assert_eq!(
        login().request_code(account(&inbound), "+19990000").await,
        Err(LoginError::InvalidPhone)
    );
    assert_eq!(
        login().request_code(account(&inbound), "call me").await,
        Err(LoginError::InvalidPhone)
    );
    server.set_api_credentials(4242, "the-right-hash");
    assert_eq!(
        login().request_code(account(&inbound), PHONE).await,
        Err(LoginError::InvalidApiCredentials)
    );
    assert_eq!(TelegramLogin::pending(&*inbound).await.unwrap(), None);
    assert!(!server.is_authorized());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_logs_the_key_out_and_wipes_the_stored_session() {
    let server = LoopbackServer::start().await.unwrap();
    let inbound = Arc::new(RecordingInbound::new());
    inbound.set_state(SESSION_KEY, &server.stored_session().to_bytes());
    inbound.set_state(PEERS_KEY, b"[]");
    inbound.set_state(UPDATES_KEY, br#"{"pts":5,"qts":0,"date":1,"seq":0,"channels":[]}"#);

    let out = login().sign_out(account(&inbound)).await.unwrap();
    assert!(out.confirmed_by_telegram);
    assert!(!server.is_authorized());
    assert_eq!(server.requests_of(tl::functions::auth::LogOut::CONSTRUCTOR_ID).len(), 1);
    for key in [SESSION_KEY, PEERS_KEY, UPDATES_KEY] {
        assert_eq!(inbound.state(key), None, "{key} wiped");
    }
    let channel = TelegramChannel::new(TelegramConfig::new(4242));
    let result = channel.run(account(&inbound), CancellationToken::new()).await;
    assert!(matches!(result, Err(ChannelError::NeedsLogin(_))), "{result:?}");
    // Signing out again: nothing to log out, nothing left.
    assert!(!login().sign_out(account(&inbound)).await.unwrap().confirmed_by_telegram);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_login_shows_a_token_url_and_logs_in_once_scanned() {
    let (server, inbound) = logged_out(None).await;
    let LoginProgress::QrCode { url, expires_at } =
        login().qr_login(account(&inbound)).await.unwrap()
    else {
        panic!("a QR code first");
    };
    assert!(url.starts_with("tg://login?token="), "{url}");
    assert_eq!(url.matches('=').count(), 1, "base64url without padding: {url}");
    assert!(expires_at > 0);
    // Not scanned yet: another token.
    assert!(matches!(login().qr_login(account(&inbound)).await, Ok(LoginProgress::QrCode { .. })));
    assert!(!server.is_authorized());

    assert!(server.accept_qr_login());
    let LoginProgress::LoggedIn(me) = login().qr_login(account(&inbound)).await.unwrap() else {
        panic!("logged in once scanned");
    };
    assert_eq!(me.user_id, server.me().id);
    assert!(server.is_authorized());
    assert_eq!(stored(&inbound).me.map(|m| m.id), Some(server.me().id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanned_qr_login_of_a_2fa_account_continues_with_the_password() {
    let (server, inbound) = logged_out(Some(TEST_PASSWORD)).await;
    assert!(matches!(login().qr_login(account(&inbound)).await, Ok(LoginProgress::QrCode { .. })));
    assert!(server.accept_qr_login());
    assert_eq!(
        login().qr_login(account(&inbound)).await,
        Ok(LoginProgress::PasswordNeeded { hint: Some("the usual".to_owned()) })
    );
    assert!(matches!(
        login().submit_password(account(&inbound), TEST_PASSWORD).await,
        Ok(LoginProgress::LoggedIn(_))
    ));
    assert!(server.is_authorized());
}
