//! `inbox run` (its worker, as the binary starts it) with an email account on the real Dovecot
//! and OpenSMTPD, driven over real HTTP only: the account is added and logged in through the
//! API, a mail that arrives is listed and streamed as an event, and a reply sent through the
//! API reaches the sender's mailbox.

mod support;

use std::time::Duration;

use channel_email::testing::{imap_append, mails_containing, raw_mail, stack};
use inbox::worker::{WorkerOptions, start};
use serde_json::{Value, json};
use support::until;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_account_added_logged_in_and_answered_over_the_api() {
    let st = stack();
    let (alice, bob) = (st.user("api-alice"), st.user("api-bob"));
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start(WorkerOptions {
        data_dir: dir.path().join("data"),
        database_url: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        worker_id: None,
        ..WorkerOptions::default()
    })
    .await
    .expect("the worker starts");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("data")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "the data directory is private");
    let base = format!("http://{}/api/v1", worker.addr);
    let http = reqwest::Client::new();
    let call = async |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = http.request(method, format!("{base}{path}")).bearer_auth(&worker.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
    };

    // Add and log in, over HTTP.
    let config = serde_json::to_value(st.account_config(&bob)).expect("config");
    let body = json!({ "kind": "email", "name": "support", "config": config });
    let (status, account) = call(reqwest::Method::POST, "/accounts", Some(body)).await;
    assert_eq!(status, 201, "{account}");
    let id = account["id"].as_str().unwrap().to_owned();
    let wrong = json!({ "flow": "password", "input": { "password": "not the password" } });
    let (status, refused) =
        call(reqwest::Method::POST, &format!("/accounts/{id}/login"), Some(wrong)).await;
    assert!(status >= 400, "a wrong password is refused: {refused}");
    let right = json!({ "flow": "password", "input": { "password": bob.password } });
    let (status, step) =
        call(reqwest::Method::POST, &format!("/accounts/{id}/login"), Some(right)).await;
    assert_eq!(status, 200, "{step}");
    until("the account is connected", WAIT, async || {
        let (_, account) = call(reqwest::Method::GET, &format!("/accounts/{id}"), None).await;
        account["connection"]["state"] == "connected"
    })
    .await;

    // A mail arrives: listed, with its message.
    let mail = raw_mail(&alice.address, &bob.address, "<api-q1@example.org>", "Help", "Hello?");
    imap_append(st.imap_port, &bob, "INBOX", &mail).await;
    let mut conversation = String::new();
    until("the mail is listed", WAIT, async || {
        let (_, page) = call(reqwest::Method::GET, "/conversations", None).await;
        match page["items"].as_array().and_then(|a| a.first()) {
            Some(c) => {
                conversation = c["id"].as_str().unwrap().to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    let (_, messages) =
        call(reqwest::Method::GET, &format!("/conversations/{conversation}/messages"), None).await;
    assert_eq!(messages["items"][0]["provider_id"], "<api-q1@example.org>", "{messages}");

    // A reply through the API reaches Alice.
    let reply = json!({ "text": "We are on it.", "idempotency_key": "api-q1" });
    let path = format!("/conversations/{conversation}/messages");
    let (status, sent) = call(reqwest::Method::POST, &path, Some(reply.clone())).await;
    assert_eq!(status, 202, "{sent}");
    let (_, again) = call(reqwest::Method::POST, &path, Some(reply)).await;
    assert_eq!(again["message_id"], sent["message_id"], "the same key, the same message");
    until("Alice has the reply", WAIT, async || {
        mails_containing(&st.maildir(&alice), "We are on it.") == 1
    })
    .await;

    // Its metrics, for Prometheus.
    let metrics = http.get(format!("http://{}/metrics", worker.addr)).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("channel_messages_sent_total"), "{text}");

    // Disabled and removed through the API.
    let (status, disabled) = call(
        reqwest::Method::PUT,
        &format!("/accounts/{id}/enabled"),
        Some(json!({ "enabled": false })),
    )
    .await;
    assert_eq!((status, disabled["enabled"].clone()), (200, json!(false)), "{disabled}");
    let (status, _) = call(reqwest::Method::DELETE, &format!("/accounts/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = call(reqwest::Method::GET, &format!("/accounts/{id}"), None).await;
    assert_eq!(status, 404);
    worker.shutdown().await;
}

/// Runs the `inbox` binary with `args` and the environment `env`; (success, stdout, stderr).
fn inbox(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_inbox"));
    command.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("the inbox binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_adds_an_email_account_only_when_its_login_works() {
    let st = stack();
    let carol = st.user("cli-carol");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let worker = start(WorkerOptions {
        data_dir: data.clone(),
        database_url: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        worker_id: None,
        ..WorkerOptions::default()
    })
    .await
    .expect("the worker starts");
    let config = dir.path().join("carol.json");
    std::fs::write(&config, serde_json::to_string(&st.account_config(&carol)).unwrap()).unwrap();
    let data_arg = data.to_str().unwrap().to_owned();
    let config_arg = config.to_str().unwrap().to_owned();
    let add = [
        "account",
        "add-email",
        "--name",
        "carol",
        "--config",
        &config_arg,
        "--data-dir",
        &data_arg,
    ];

    // A wrong password: refused with one sentence, and nothing kept.
    let (ok, _, err) = tokio::task::spawn_blocking({
        let add = add.map(str::to_owned);
        move || {
            inbox(
                &add.iter().map(String::as_str).collect::<Vec<_>>(),
                &[("INBOX_EMAIL_PASSWORD", "wrong")],
            )
        }
    })
    .await
    .unwrap();
    assert!(!ok, "a wrong password fails");
    assert!(err.contains("not kept") && err.lines().count() == 1, "{err}");
    let (_, listed, _) = inbox(&["account", "list", "--data-dir", &data_arg], &[]);
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");

    // The right one: added, listed, and connected.
    let password = carol.password.clone();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let add = add.map(str::to_owned);
        move || {
            inbox(
                &add.iter().map(String::as_str).collect::<Vec<_>>(),
                &[("INBOX_EMAIL_PASSWORD", &password)],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("added and logged in"), "{out}");
    until("the account is connected", WAIT, async || {
        let (_, listed, _) = inbox(&["account", "list", "--data-dir", &data_arg], &[]);
        listed.contains("carol") && listed.contains("connected")
    })
    .await;
    let (ok, status, _) = inbox(&["status", "--data-dir", &data_arg], &[]);
    assert!(ok && status.contains("(alive)") && status.contains("heartbeat"), "{status}");

    // Dave writes; the command line lists the conversation and answers with a file.
    let dave = st.user("cli-dave");
    let mail = raw_mail(&dave.address, &carol.address, "<cli-q1@example.org>", "Files", "Send it?");
    imap_append(st.imap_port, &carol, "INBOX", &mail).await;
    let mut conversation = String::new();
    until("the conversation is listed", WAIT, async || {
        let (_, listed, _) = inbox(&["conversations", "--data-dir", &data_arg], &[]);
        match listed.lines().nth(1) {
            Some(line) => {
                conversation = line.split_whitespace().next().unwrap_or_default().to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    let file = dir.path().join("terms.txt");
    std::fs::write(&file, "the terms").unwrap();
    let file_arg = file.to_str().unwrap().to_owned();
    let (ok, out, err) = inbox(
        &["send", &conversation, "Here it is.", "--attach", &file_arg, "--data-dir", &data_arg],
        &[],
    );
    assert!(ok && out.contains("queued message"), "{out}{err}");
    until("Dave has the answer with its file", WAIT, async || {
        mails_containing(&st.maildir(&dave), "terms.txt") == 1
    })
    .await;
    let (ok, messages, _) = inbox(&["messages", &conversation, "--data-dir", &data_arg], &[]);
    assert!(ok && messages.contains("Here it is.") && messages.contains("Send it?"), "{messages}");

    // An older page of history, followed until it is done.
    let (_, listed, _) = inbox(&["account", "list", "--data-dir", &data_arg], &[]);
    let account =
        listed.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap().to_owned();
    let (ok, out, err) =
        inbox(&["sync-history", &account, "--limit", "10", "--data-dir", &data_arg], &[]);
    assert!(ok, "{out}{err}");

    // Bad input is one sentence and a failure, never a panic.
    let (ok, _, err) = inbox(&["conversations", "--data-dir", "/nonexistent"], &[]);
    assert!(!ok && err.contains("inbox run"), "{err}");
    let (ok, _, err) = inbox(&["run", "--listen", "nowhere"], &[]);
    assert!(!ok && !err.contains("panicked"), "{err}");
    worker.shutdown().await;
}
