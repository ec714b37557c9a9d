//! `inbox run` (its worker, as the binary starts it) with a Telegram account on the loopback
//! MTProto server through the real grammers client, driven over real HTTP: the account is
//! added and logged in (phone, then code) through the API, a person's message is listed and
//! streamed as a server-sent event, filtered by assignee and unlinked, a reply sent through
//! the API reaches the server and its send is listed with date filters and audited; a webhook endpoint that fails twice gets
//! every event afterwards, in order, each signed (Standard Webhooks), the failed ones again
//! with the same `webhook-id`. On SQLite, and on PostgreSQL.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use inbox::config::WebhookConfig;
use inbox::webhooks::Endpoint;
use inbox::worker::WorkerOptions;
use reqwest::Method;
use serde_json::{Value, json};
use support::telegram::{CODE, PHONE, options, worker_with_an_account};
use support::{Api, read_sse, until};

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One delivery the receiver took: (webhook-id, timestamp, signature, body, status answered).
type Delivery = (String, String, String, Bytes, u16);

/// A webhook receiver on a loopback port that refuses its first `fail` deliveries with 500.
async fn receiver(fail: usize) -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let seen: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let log = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (log, count) = (Arc::clone(&log), Arc::clone(&count));
            async move {
                let h =
                    |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let status = if count.fetch_add(1, Ordering::SeqCst) < fail {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                };
                log.lock().unwrap().push((
                    h("webhook-id"),
                    h("webhook-timestamp"),
                    h("webhook-signature"),
                    body,
                    status.as_u16(),
                ));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn scenario(database_url: Option<String>) {
    let (hook_url, deliveries) = receiver(2).await;
    let hook = WebhookConfig {
        url: hook_url,
        secret: SECRET.to_owned().into(),
        events: vec!["message_received".into(), "message_sent".into()],
    };
    let options = WorkerOptions { database_url, webhooks: vec![hook.clone()], ..options() };
    let (server, worker, _dir, id) = worker_with_an_account(None, options).await;
    server.add_user(3001, "Grace", Some("grace"));
    let api = Api::new(worker.addr, &worker.token);

    // Logged in over HTTP.
    let login = format!("/accounts/{id}/login");
    let phone = json!({ "flow": "phone", "input": { "phone": PHONE } });
    let (status, step) = api.call(Method::POST, &login, Some(phone)).await;
    assert_eq!((status, step["step"].as_str()), (200, Some("input")), "{step}");
    let wrong = json!({ "flow": "phone", "input": { "code": "00000" } });
    let (status, refused) = api.call(Method::POST, &login, Some(wrong)).await;
    assert_eq!(status, 400, "a wrong code is the caller's to fix: {refused}");
    let code = json!({ "flow": "phone", "input": { "code": CODE } });
    let (status, done) = api.call(Method::POST, &login, Some(code)).await;
    assert_eq!((status, done["step"].as_str()), (200, Some("done")), "{done}");
    until("the account is connected", WAIT, async || {
        api.get(&format!("/accounts/{id}")).await["connection"]["state"] == "connected"
    })
    .await;

    // A person writes: streamed as an event, listed with its message.
    let mut stream = api
        .http
        .get(format!("{}/events", api.base))
        .bearer_auth(&worker.token)
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status().as_u16(), 200);
    server.incoming(3001, "Is my parcel on its way?");
    let mut received_at = String::new();
    read_sse(&mut stream, WAIT, |event, position, _| {
        received_at = position.to_owned();
        event == "message_received"
    })
    .await;
    let page = api.get(&format!("/conversations?account={id}")).await;
    let conversation = page["items"][0]["id"].as_str().expect("a conversation").to_owned();
    let messages = api.get(&format!("/conversations/{conversation}/messages")).await;
    assert_eq!(messages["items"][0]["text"], "Is my parcel on its way?", "{messages}");

    // Filtered by who claimed it and whether its person is new (unlinked).
    let count = async |query: &str| {
        api.get(&format!("/conversations?account={id}&{query}")).await["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!((count("unassigned=true").await, count("unlinked=true").await), (1, 1));
    let claim = json!({ "claim": "ana" });
    let assignment = format!("/conversations/{conversation}/assignment");
    let (status, claimed) = api.call(Method::POST, &assignment, Some(claim)).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!((count("assignee=ana").await, count("assignee=ben").await), (1, 0));
    assert_eq!(count("unassigned=true").await, 0);
    let (status, both) =
        api.call(Method::GET, "/conversations?assignee=ana&unassigned=true", None).await;
    assert_eq!(status, 400, "{both}");

    // A reply through the API reaches the loopback server and turns sent.
    let reply = json!({ "text": "It left the depot this morning.", "idempotency_key": "t-1" });
    let path = format!("/conversations/{conversation}/messages");
    let (status, sent) = api.call(Method::POST, &path, Some(reply)).await;
    assert_eq!(status, 202, "{sent}");
    let message = sent["message_id"].as_str().unwrap().to_owned();
    until("the server has the reply", WAIT, async || {
        server.messages().iter().any(|m| m.out && m.text == "It left the depot this morning.")
    })
    .await;
    until("the reply is sent", WAIT, async || {
        api.get(&format!("/messages/{message}")).await["status"] == "sent"
    })
    .await;

    // The account's sends, by kind and creation time, and the audit of this one.
    let sends = api.get(&format!("/jobs?account={id}&kind=send")).await;
    let job = &sends["items"][0];
    assert_eq!(job["message_id"], message.as_str(), "{sends}");
    let created = job["created_at"].as_str().unwrap().to_owned();
    let none = api.get(&format!("/jobs?account={id}&kind=send&until={created}")).await;
    assert_eq!(none["items"], json!([]), "`until` is exclusive: {none}");
    let one = api.get(&format!("/jobs?account={id}&kind=send&since={created}")).await;
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1), "{one}");
    let (status, bad) = api.call(Method::GET, "/jobs?since=yesterday", None).await;
    assert!(status == 400 && bad["error"].as_str().unwrap().contains("RFC 3339"), "{bad}");
    let attempts = api.get(&format!("/jobs/{}/attempts", job["id"].as_str().unwrap())).await;
    assert_eq!(attempts[0]["outcome"], "completed", "{attempts}");

    // The webhook: after two refusals, every event it asked for arrives, in feed order,
    // signed; the refused ones again with the same id.
    until("the webhook has both events", WAIT, async || {
        let d = deliveries.lock().unwrap();
        let ok: Vec<&Delivery> = d.iter().filter(|x| x.4 == 204).collect();
        ok.iter().any(|x| x.3.windows(16).any(|w| w == b"message_received"))
            && ok.iter().any(|x| x.3.windows(12).any(|w| w == b"message_sent"))
    })
    .await;
    let endpoint = Endpoint::new(&hook).unwrap();
    let d = deliveries.lock().unwrap().clone();
    assert_eq!(d[0].4, 500);
    assert_eq!(d[1].4, 500);
    assert_eq!(d[0].0, d[1].0, "a retry has the same webhook-id");
    assert_eq!(d[2].0, d[0].0, "the first event is delivered before any later one");
    let mut last = None;
    for (id, timestamp, signature, body, status) in &d {
        let t: i64 = timestamp.parse().expect("webhook-timestamp is seconds");
        assert_eq!(signature, &endpoint.signature(id, t, body), "signed with the secret");
        let event: Value = serde_json::from_slice(body).expect("JSON");
        assert!(["message_received", "message_sent"].contains(&event["type"].as_str().unwrap()));
        assert!(!String::from_utf8_lossy(body).contains("parcel"), "no message content");
        if *status == 204 {
            let position = event["data"]["position"].clone();
            let key = (position["tx"].as_i64().unwrap(), position["seq"].as_i64().unwrap());
            assert!(last < Some(key), "in feed order, each once: {d:?}");
            last = Some(key);
        }
    }
    assert_eq!(format!("evt_{received_at}"), d[0].0, "the id is the event's feed position");
    // A stop ends the open event stream instead of waiting for the client to hang up.
    let stopped = tokio::time::timeout(WAIT, worker.shutdown());
    stopped.await.expect("the worker stops while an event stream is open");
    let drained = async {
        // What was sent before the stop, then the end.
        while let Ok(Some(_)) = stream.chunk().await {}
    };
    tokio::time::timeout(WAIT, drained).await.expect("the stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_account_over_the_api_on_sqlite_with_a_webhook() {
    scenario(None).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_account_over_the_api_on_postgres_with_a_webhook() {
    scenario(Some(support::fresh_database().await)).await;
}

/// The `inbox` binary with `args`, its standard input piped; the child.
fn inbox_child(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_inbox"))
        .args(args)
        .env_remove("INBOX_TELEGRAM_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the inbox binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_logs_in_with_phone_code_and_password_asking_again_after_a_wrong_code() {
    use tokio::io::AsyncWriteExt;
    let (_server, worker, dir, id) = worker_with_an_account(Some("correct horse"), options()).await;
    let data = dir.path().join("data");
    let mut child = inbox_child(&[
        "account",
        "login-telegram",
        "--account",
        &id,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    // The phone, a wrong code, the right one, then the password (piped: not a terminal).
    let answers = format!("{PHONE}\n00000\n{CODE}\ncorrect horse\n");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answers.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("in time").unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("logged in") && stdout.contains(&id), "{stdout}");
    assert!(stderr.contains("wrong code"), "the wrong code was said and asked again: {stderr}");
    assert!(stderr.contains("the usual"), "the password's hint is shown: {stderr}");
    assert!(!stdout.contains("correct horse") && !stderr.contains("correct horse"));
    let api = Api::new(worker.addr, &worker.token);
    until("the account is connected", WAIT, async || {
        api.get(&format!("/accounts/{id}")).await["connection"]["state"] == "connected"
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_draws_the_qr_code_and_logs_in_when_it_is_scanned() {
    use tokio::io::AsyncBufReadExt;
    let (server, worker, dir, id) = worker_with_an_account(None, options()).await;
    let data = dir.path().join("data");
    let mut child = inbox_child(&[
        "account",
        "login-telegram",
        "--qr",
        "--account",
        &id,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut drawn = Vec::new();
    let shown = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Scan this") {
                return;
            }
            drawn.push(line);
        }
        panic!("the program ended before it showed a QR code");
    };
    tokio::time::timeout(WAIT, shown).await.expect("a QR code in time");
    assert!(drawn.len() > 10 && drawn.iter().any(|l| l.contains('█')), "{drawn:?}");
    assert!(server.accept_qr_login(), "a login token was handed out");
    let mut rest = String::new();
    let finished = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push_str(&line);
            rest.push('\n');
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(WAIT, finished).await.expect("logged in in time");
    assert!(status.success() && rest.contains("logged in"), "{rest}");
    worker.shutdown().await;
}
