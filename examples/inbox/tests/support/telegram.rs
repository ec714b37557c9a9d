//! A Telegram account of an `inbox run` worker on the loopback MTProto server, for the tests.

use channel_telegram::testing::loopback::LoopbackServer;
use inbox::config::TelegramApp;
use inbox::worker::{RunningWorker, WorkerOptions, start};
use reqwest::Method;
use serde_json::json;

use super::Api;

/// The Telegram app the loopback server accepts.
pub const API_ID: i32 = 4242;
/// Its hash.
pub const API_HASH: &str = "inbox-test-app-hash";
/// The account's phone number.
pub const PHONE: &str = "+15550123";
/// The login code the loopback server sends.
pub const CODE: &str = "24680";

/// A worker's settings for these tests: Telegram, an API on a free port (the data directory
/// is given by `worker_with_an_account`).
pub fn options() -> WorkerOptions {
    WorkerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        telegram: Some(TelegramApp::new(API_ID, API_HASH)),
        ..WorkerOptions::default()
    }
}

/// A loopback server with a phone login (2FA when `password` is given), a worker started with
/// `options`, and one Telegram account added over HTTP and given the server's key (the
/// loopback server cannot run Telegram's key exchange): (server, worker, data dir, account
/// id).
pub async fn worker_with_an_account(
    password: Option<&str>,
    options: WorkerOptions,
) -> (LoopbackServer, RunningWorker, tempfile::TempDir, String) {
    let server = LoopbackServer::start().await.expect("loopback server");
    server.require_login();
    server.add_phone_login(PHONE, CODE, password);
    server.set_api_credentials(API_ID, API_HASH);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WorkerOptions { data_dir: dir.path().join("data"), ..options };
    let worker = start(options).await.expect("the worker starts");
    let api = Api::new(worker.addr, &worker.token);
    let (dc, address) = server.data_centre();
    let config = json!({ "data_centres": { dc.to_string(): address.to_string() } });
    let body = json!({ "kind": "telegram", "name": "support", "config": config });
    let (status, account) = api.call(Method::POST, "/accounts", Some(body)).await;
    assert_eq!(status, 201, "{account}");
    let id = account["id"].as_str().unwrap().to_owned();
    server
        .provision_auth_key(&worker.runtime.engine().account_state(id.parse().unwrap()))
        .await
        .expect("auth key");
    (server, worker, dir, id)
}

/// Logs the account in over the API (phone, then code) and waits until it is connected.
pub async fn log_in(api: &Api, id: &str) {
    let login = format!("/accounts/{id}/login");
    for input in [json!({ "phone": PHONE }), json!({ "code": CODE })] {
        let body = json!({ "flow": "phone", "input": input });
        let (status, step) = api.call(Method::POST, &login, Some(body)).await;
        assert_eq!(status, 200, "{step}");
    }
    super::until("the account is connected", std::time::Duration::from_secs(30), async || {
        api.get(&format!("/accounts/{id}")).await["connection"]["state"] == "connected"
    })
    .await;
}
