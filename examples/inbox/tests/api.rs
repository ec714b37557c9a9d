//! The inbox's HTTP API over real HTTP (axum on a loopback port, reqwest), on an engine with
//! the in-memory store and channel: the token, reads with keyset pages, a send, the audit of
//! a send, workers, health, metrics, and server-sent events resuming from `Last-Event-ID`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use channel_core::runtime::{Runtime, StaticChannels};
use channel_core::state::StateKey;
use channel_core::testing::{MemoryChannel, MemoryStore};
use channel_core::{
    AccountStore, BlobStore, ChannelKind, Engine, IdentityInfo, InboundMessage, NewAccount,
    Timestamp,
};
use inbox::api::{ApiState, router, serve};
use serde_json::Value;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

struct Served {
    base: String,
    http: reqwest::Client,
    engine: Engine,
    store: Arc<MemoryStore>,
    runtime: Runtime,
    account: channel_core::AccountId,
    channel: Arc<MemoryChannel>,
}

impl Served {
    async fn start() -> Self {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::builder(store.clone(), StateKey::generate())
            .blob_store(BlobStore::in_memory())
            .send_policy(Arc::new(channel_core::send_policy::AllowAll))
            .feed_poll_interval(Duration::from_millis(50))
            .poll_interval(Duration::from_millis(100))
            .build()
            .expect("engine");
        let new = NewAccount::new(ChannelKind::from_static("memory"), "support");
        let account = store.create_account(new, engine.now()).await.expect("account").id;
        let channel = Arc::new(MemoryChannel::new());
        let channels = StaticChannels::new().with(account, channel.clone());
        let runtime = Runtime::builder(engine.clone(), Arc::new(channels)).start().await.unwrap();
        let state = ApiState::new(engine.clone(), TOKEN).watchdog(runtime.watchdog().clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(serve(listener, router(state), std::future::pending()));
        Self { base, http: reqwest::Client::new(), engine, store, runtime, account, channel }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

fn hello(id: &str, chat: &str, at: i64) -> InboundMessage {
    InboundMessage::text(id, chat, IdentityInfo::new(format!("tg:{chat}")), "hello", Timestamp(at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_over_http_behind_its_token() {
    let s = Served::start().await;
    for n in 0..5 {
        s.engine.deliver(s.account, hello(&format!("m{n}"), &format!("chat{n}"), n)).await.unwrap();
    }

    // The token.
    let anonymous = s.http.get(format!("{}/api/v1/accounts", s.base)).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");

    // Health and readiness, open.
    let health = s.http.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = s.http.get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // While the database does not answer, health says so.
    let down = || channel_core::StoreError::Unavailable("connection refused".into());
    s.store.fail_next("accounts_before", [down(), down()]);
    let health = s.http.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let body: Value = health.json().await.unwrap();
    assert!(body["store"].as_str().unwrap().contains("connection refused"), "{body}");
    let ready = s.http.get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let health = s.http.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "healthy again once it answers");

    // Keyset pages of conversations, newest activity first, without repeats or gaps.
    let (status, first) = s.get("/api/v1/conversations?limit=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let mut seen: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        for c in page["items"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => {
                page = s.get(&format!("/api/v1/conversations?limit=2&after={next}")).await.1
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "no repeats");

    // A bad filter is one clear sentence.
    let (status, body) = s.get("/api/v1/conversations?status=sleeping").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("sleeping"), "{body}");
    let (status, _) = s.get(&format!("/api/v1/conversations/{}/messages", uuid())).await;
    assert_eq!(status, 200, "an unknown conversation has no messages");

    // A send through the API, then its audit.
    let conversation = &seen[0];
    let sent = s
        .http
        .post(format!("{}/api/v1/conversations/{conversation}/messages", s.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "text": "We are on it.", "idempotency_key": "reply-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status().as_u16(), 202);
    let id = sent.json::<Value>().await.unwrap()["message_id"].as_str().unwrap().to_owned();
    s.channel.wait_for_sends(1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = s.get(&format!("/api/v1/messages/{id}")).await;
        if m["status"] == "sent" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the send never became sent: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, jobs) = s.get("/api/v1/jobs?state=completed").await;
    let job = jobs["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, attempts) = s.get(&format!("/api/v1/jobs/{job}/attempts")).await;
    assert_eq!(attempts[0]["outcome"], "completed", "{attempts}");
    let bad = s
        .http
        .post(format!("{}/api/v1/conversations/{conversation}/messages", s.base))
        .bearer_auth(TOKEN)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // A file sent with a message, and read back.
    let with_file = s
        .http
        .post(format!("{}/api/v1/conversations/{conversation}/messages", s.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "text": "Here is the invoice.",
            "attachments": [{ "name": "invoice.txt", "mime_type": "text/plain", "data": "aW52b2ljZSAjNDI=" }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(with_file.status().as_u16(), 202);
    let file_message =
        with_file.json::<Value>().await.unwrap()["message_id"].as_str().unwrap().to_owned();
    let file = s
        .http
        .get(format!("{}/api/v1/messages/{file_message}/attachments/0", s.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(file.headers()["content-type"], "text/plain");
    assert!(file.headers()["content-disposition"].to_str().unwrap().contains("invoice.txt"));
    assert_eq!(file.text().await.unwrap(), "invoice #42");
    let (status, _) = s.get(&format!("/api/v1/messages/{file_message}/attachments/1")).await;
    assert_eq!(status, 404);
    let bad = s
        .http
        .post(format!("{}/api/v1/conversations/{conversation}/messages", s.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "text": "x", "attachments": [{ "mime_type": "text/plain", "data": "not base64!" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // A send the provider refuses ends in the dead letter, with its attempt audited; a retry
    // takes it out and it goes.
    s.channel.script_sends([channel_core::testing::SendScript::Permanent("blocked".into())]);
    let refused = s
        .http
        .post(format!("{}/api/v1/conversations/{conversation}/messages", s.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "text": "Second try." }))
        .send()
        .await
        .unwrap();
    let refused = refused.json::<Value>().await.unwrap()["message_id"].as_str().unwrap().to_owned();
    let dead = loop {
        let (_, dead) = s.get("/api/v1/jobs?state=discarded").await;
        if let Some(job) = dead["items"].as_array().unwrap().first() {
            break job["id"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, failed) = s.get(&format!("/api/v1/messages/{refused}")).await;
    assert_eq!(failed["status"], "failed");
    let (_, audit) = s.get(&format!("/api/v1/jobs/{dead}/attempts")).await;
    assert_eq!(audit[0]["outcome"], "discarded", "{audit}");
    let retried = s
        .http
        .post(format!("{}/api/v1/jobs/{dead}/retry", s.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status().as_u16(), 200);
    loop {
        let (_, m) = s.get(&format!("/api/v1/messages/{refused}")).await;
        if m["status"] == "sent" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the retried send never went: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Operators claim a conversation: one gets it, the other is told who has it.
    let assign = |body: Value| {
        s.http
            .post(format!("{}/api/v1/conversations/{conversation}/assignment", s.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let ana = assign(serde_json::json!({ "claim": "ana" })).await.unwrap();
    assert_eq!(ana.status().as_u16(), 200);
    let ben = assign(serde_json::json!({ "claim": "ben" })).await.unwrap();
    assert_eq!(ben.status().as_u16(), 409);
    let said = ben.json::<Value>().await.unwrap();
    assert!(said["error"].as_str().unwrap().contains("ana"), "{said}");
    let moved = assign(serde_json::json!({ "transfer": { "from": "ana", "to": "ben" } })).await;
    assert_eq!(moved.unwrap().json::<Value>().await.unwrap()["assignee"], "ben");

    // The people: unlinked ones are new; linking one to a contact takes it off that list;
    // two identities of one person merge into one.
    let (_, unlinked) =
        s.get(&format!("/api/v1/accounts/{}/identities?unlinked=true", s.account)).await;
    let people = unlinked["items"].as_array().unwrap().clone();
    assert_eq!(people.len(), 5, "{unlinked}");
    let (first, second) = (people[0]["id"].as_str().unwrap(), people[1]["id"].as_str().unwrap());
    let linked = s
        .http
        .post(format!("{}/api/v1/identities/{first}/link", s.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "contact": "crm-42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(linked.json::<Value>().await.unwrap()["contact_id"], "crm-42");
    let merged = s
        .http
        .post(format!("{}/api/v1/identities/{first}/merge", s.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "merge": second }))
        .send()
        .await
        .unwrap();
    assert_eq!(merged.status().as_u16(), 200);
    let (_, all) = s.get(&format!("/api/v1/accounts/{}/identities", s.account)).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4, "the merged one is gone: {all}");
    let (_, unlinked) =
        s.get(&format!("/api/v1/accounts/{}/identities?unlinked=true", s.account)).await;
    assert_eq!(unlinked["items"].as_array().unwrap().len(), 3, "{unlinked}");

    // A history sync: queued, then done by the worker.
    let queued = s
        .http
        .post(format!("{}/api/v1/accounts/{}/history", s.base, s.account))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "limit": 50 }))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status().as_u16(), 202);
    let job = queued.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, done) = s.get("/api/v1/jobs?state=completed&limit=100").await;
        if done["items"].as_array().unwrap().iter().any(|j| j["id"] == job.as_str()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the history job never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The OpenAPI description names every route, open to read.
    let doc: Value = s
        .http
        .get(format!("{}/api/v1/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/accounts", "get"),
        ("/api/v1/accounts", "post"),
        ("/api/v1/accounts/{id}", "delete"),
        ("/api/v1/accounts/{id}/login", "post"),
        ("/api/v1/accounts/{id}/enabled", "put"),
        ("/api/v1/accounts/{id}/identities", "get"),
        ("/api/v1/accounts/{id}/history", "post"),
        ("/api/v1/identities/{id}/link", "post"),
        ("/api/v1/identities/{id}/merge", "post"),
        ("/api/v1/conversations", "get"),
        ("/api/v1/conversations/{id}/messages", "get"),
        ("/api/v1/conversations/{id}/messages", "post"),
        ("/api/v1/conversations/{id}/assignment", "post"),
        ("/api/v1/messages/{id}", "get"),
        ("/api/v1/messages/{id}/attachments/{index}", "get"),
        ("/api/v1/jobs", "get"),
        ("/api/v1/jobs/{id}", "get"),
        ("/api/v1/jobs/{id}/attempts", "get"),
        ("/api/v1/jobs/{id}/retry", "post"),
        ("/api/v1/workers", "get"),
        ("/api/v1/events", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not described");
    }
    assert!(doc["components"]["schemas"]["SendBody"].is_object(), "the bodies are described");

    // Workers.
    let (_, workers) = s.get("/api/v1/workers").await;
    assert_eq!(workers[0]["alive"], true, "{workers}");
    s.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_from_the_feed_and_resume_from_last_event_id() {
    let s = Served::start().await;
    s.engine.deliver(s.account, hello("m0", "chat0", 0)).await.unwrap();
    let first = read_events(&s, Some("0-0"), 2).await;
    assert_eq!(first[0].0, "conversation_opened");
    assert_eq!(first[1].0, "message_received");

    // Without a position the stream is live: only what happens after it opened.
    let mut live =
        s.http.get(format!("{}/api/v1/events", s.base)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
    s.engine.deliver(s.account, hello("m-live", "chat0", 5)).await.unwrap();
    let mut seen = Vec::new();
    support::read_sse(&mut live, Duration::from_secs(20), |event, id, _| {
        seen.push((event.to_owned(), id.to_owned()));
        event == "message_received"
    })
    .await;
    assert!(seen.iter().all(|(_, id)| id != &first[0].1 && id != &first[1].1), "{seen:?}");
    drop(live);

    // Resuming after the first event gives everything after it, in order.
    s.engine.deliver(s.account, hello("m1", "chat1", 1)).await.unwrap();
    let resumed = read_events(&s, Some(&first[0].1), 4).await;
    assert_eq!(resumed[0], first[1], "resumed after Last-Event-ID");
    let names: Vec<&str> = resumed[1..].iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["message_received", "conversation_opened", "message_received"]);

    let bad = s
        .http
        .get(format!("{}/api/v1/events", s.base))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    s.runtime.shutdown().await;
}

/// Reads `n` events of the SSE stream: (event name, id).
async fn read_events(s: &Served, last: Option<&str>, n: usize) -> Vec<(String, String)> {
    let mut request = s.http.get(format!("{}/api/v1/events", s.base)).bearer_auth(TOKEN);
    if let Some(id) = last {
        request = request.header("Last-Event-ID", id);
    }
    let mut response = request.send().await.expect("events");
    assert_eq!(response.status().as_u16(), 200);
    let mut out = Vec::new();
    support::read_sse(&mut response, Duration::from_secs(20), |event, id, _| {
        // The account's connection states come and go with the runtime: left out.
        if event != "account_state_changed" {
            out.push((event.to_owned(), id.to_owned()));
        }
        out.len() >= n
    })
    .await;
    out
}

fn uuid() -> String {
    channel_core::ConversationId::new().to_string()
}
