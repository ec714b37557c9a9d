//! The service's reaction: a webhook endpoint that answers every inbound message of the run.
//!
//! The workers deliver `message_received` from the durable event feed (only the leader
//! delivers, acknowledging after a 2xx). For each one the reactor reads the message and, when
//! it is a person's message of the run (`chaos-in-N`), queues the reply `re chaos-in-N` with
//! the idempotency key `react-<message id>` through any running worker. It answers 2xx only
//! once the reply is queued, so a delivery lost to a kill comes again, and the key makes the
//! second reply the first one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::api::Api;

/// What the reactor saw.
#[derive(Clone, Debug, Default)]
pub struct Reactions {
    /// Deliveries received.
    pub deliveries: u64,
    /// Deliveries whose `webhook-id` had been received before (redeliveries).
    pub redeliveries: u64,
    /// Replies queued (2xx from the API), including repeats of one key.
    pub queued: u64,
    /// Deliveries answered with an error (no worker could take the reply): delivered again.
    pub refused: u64,
    seen: HashSet<String>,
}

/// The APIs to call, updated as workers die and start.
pub type Apis = Arc<Mutex<Vec<Api>>>;

#[derive(Clone)]
struct Reactor {
    apis: Apis,
    reactions: Arc<Mutex<Reactions>>,
}

/// The token `chaos-in-N` in `text`, if any.
pub fn token(text: &str) -> Option<u64> {
    let at = text.find("chaos-in-")? + "chaos-in-".len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Finds a string field named `name` anywhere in `v`.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    match v {
        Value::Object(map) => map
            .get(name)
            .and_then(Value::as_str)
            .or_else(|| map.values().find_map(|x| field(x, name))),
        _ => None,
    }
}

async fn react(reactor: &Reactor, body: &Value) -> Result<(), String> {
    if body["type"] != "message_received" {
        return Ok(());
    }
    let (Some(message), Some(conversation)) =
        (field(body, "message_id"), field(body, "conversation_id"))
    else {
        return Err(format!("an event without its ids: {body}"));
    };
    let apis = lock(&reactor.apis).clone();
    let mut last = String::from("no worker runs");
    for api in apis {
        let m = match api.get(&format!("/messages/{message}")).await {
            Ok(m) => m,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let Some(n) = m["text"].as_str().and_then(token) else { return Ok(()) };
        if m["direction"] != "inbound" {
            return Ok(());
        }
        let reply = json!({ "text": format!("re chaos-in-{n}"), "idempotency_key": format!("react-{message}") });
        match api.post(&format!("/conversations/{conversation}/messages"), &reply).await {
            Ok(_) => {
                lock(&reactor.reactions).queued += 1;
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

async fn hook(State(reactor): State<Reactor>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    {
        let mut r = lock(&reactor.reactions);
        r.deliveries += 1;
        if !r.seen.insert(id) {
            r.redeliveries += 1;
        }
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    match react(&reactor, &body).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => {
            lock(&reactor.reactions).refused += 1;
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// Starts the endpoint on a free loopback port: its URL and what it saw.
pub async fn start(apis: Apis) -> Result<(String, Arc<Mutex<Reactions>>), String> {
    let reactions: Arc<Mutex<Reactions>> = Arc::default();
    let state = Reactor { apis, reactions: Arc::clone(&reactions) };
    let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen for webhooks: {e}"))?;
    let url = format!(
        "http://{}/hook",
        listener.local_addr().map_err(|e| format!("webhook address: {e}"))?
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, reactions))
}
