//! Two `inbox run` workers on one PostgreSQL database (feature `postgres`): four email accounts
//! on the real Dovecot and OpenSMTPD, added through one worker's API, end up two on each
//! worker, and every account answers a mail, whichever worker runs it.
#![cfg(feature = "postgres")]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use channel_email::testing::{imap_append, mails_containing, raw_mail, stack};
use inbox::worker::{RunningWorker, WorkerOptions, start};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

async fn worker(dir: &Path, url: &str, id: &str) -> RunningWorker {
    start(WorkerOptions {
        data_dir: dir.join(id),
        database_url: Some(url.to_owned()),
        listen: "127.0.0.1:0".parse().unwrap(),
        worker_id: Some(id.to_owned()),
        ..WorkerOptions::default()
    })
    .await
    .expect("the worker starts")
}

async fn call(
    w: &RunningWorker,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut r = reqwest::Client::new()
        .request(method, format!("http://{}/api/v1{path}", w.addr))
        .bearer_auth(&w.token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.expect("request").json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_postgres_share_the_accounts_and_answer_every_mail() {
    let st = stack();
    let url = support::fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (worker(dir.path(), &url, "w-a").await, worker(dir.path(), &url, "w-b").await);
    let customer = st.user("pg-customer");
    let mut mailboxes = Vec::new();
    for n in 0..4 {
        let user = st.user(&format!("pg-box{n}"));
        let config = serde_json::to_value(st.account_config(&user)).unwrap();
        let body = json!({ "kind": "email", "name": format!("box{n}"), "config": config });
        let account = call(&a, reqwest::Method::POST, "/accounts", Some(body)).await;
        let id = account["id"].as_str().expect("an account").to_owned();
        // The login runs where the account's lease is held: through whichever worker has it.
        let login = json!({ "flow": "password", "input": { "password": user.password } });
        let deadline = Instant::now() + WAIT;
        loop {
            let path = format!("/accounts/{id}/login");
            let via_a = call(&a, reqwest::Method::POST, &path, Some(login.clone())).await;
            if via_a.get("error").is_none() {
                break;
            }
            let via_b = call(&b, reqwest::Method::POST, &path, Some(login.clone())).await;
            if via_b.get("error").is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "no worker logged {id} in: {via_a} {via_b}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        mailboxes.push((id, user));
    }

    // Balanced: two accounts each, all connected.
    let deadline = Instant::now() + WAIT;
    loop {
        let workers = call(&a, reqwest::Method::GET, "/workers", None).await;
        let held: Vec<usize> = workers
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["accounts"].as_array().map_or(0, Vec::len))
            .collect();
        let accounts = call(&a, reqwest::Method::GET, "/accounts", None).await;
        let connected = accounts["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["connection"]["state"] == "connected")
            .count();
        if held == [2, 2] && connected == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "not balanced: {held:?}, {connected} connected");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every account answers a mail, sent through the API of worker A whoever runs it.
    for (n, (_, user)) in mailboxes.iter().enumerate() {
        let id = format!("<pg-{n}@example.org>");
        let mail = raw_mail(&customer.address, &user.address, &id, &format!("Q{n}"), "Hello?");
        imap_append(st.imap_port, user, "INBOX", &mail).await;
    }
    let deadline = Instant::now() + WAIT;
    let mut answered = 0;
    while answered < 4 {
        let page = call(&a, reqwest::Method::GET, "/conversations?limit=50", None).await;
        for c in page["items"].as_array().unwrap() {
            let cid = c["id"].as_str().unwrap();
            let messages =
                call(&a, reqwest::Method::GET, &format!("/conversations/{cid}/messages"), None)
                    .await;
            let only_inbound =
                messages["items"].as_array().unwrap().iter().all(|m| m["direction"] == "inbound");
            if only_inbound {
                let reply = json!({ "text": "Answered over PostgreSQL.", "idempotency_key": format!("pg-{cid}") });
                call(
                    &a,
                    reqwest::Method::POST,
                    &format!("/conversations/{cid}/messages"),
                    Some(reply),
                )
                .await;
            }
        }
        answered = mails_containing(&st.maildir(&customer), "Answered over PostgreSQL.");
        assert!(Instant::now() < deadline, "only {answered} of 4 answered");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(answered, 4);
    a.shutdown().await;
    b.shutdown().await;
}
