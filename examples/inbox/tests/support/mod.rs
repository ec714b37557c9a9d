//! What the inbox's tests share: waiting for a condition, calling a worker's API over HTTP,
//! and a fresh PostgreSQL database.
#![allow(dead_code)]

pub mod telegram;

use std::time::{Duration, Instant};

use serde_json::Value;

/// Polls `done` every 50 ms until it holds; fails the test after `wait`.
pub async fn until(what: &str, wait: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker's `/api/v1`, with its token.
#[derive(Clone)]
pub struct Api {
    /// `http://host:port/api/v1`.
    pub base: String,
    /// The bearer token.
    pub token: String,
    /// The client.
    pub http: reqwest::Client,
}

impl Api {
    /// The API of the worker listening on `addr`.
    pub fn new(addr: std::net::SocketAddr, token: &str) -> Self {
        Self {
            base: format!("http://{addr}/api/v1"),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `method path` with an optional JSON body: (status, JSON answer or null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// GET `path`, expecting 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }
}

/// A fresh database on the server of `TEST_DATABASE_URL` (`scripts/test` exports it).
pub async fn fresh_database() -> String {
    use sqlx::{Connection, Executor};
    let server = std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL: run the tests with scripts/test, which starts PostgreSQL and sets it",
    );
    let mut admin = sqlx::PgConnection::connect(&server).await.expect("connect");
    let name = format!("inbox_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .expect("create");
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (server.clone(), String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path = base[scheme_end..].find('/').map(|i| scheme_end + i).unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..path])
}

/// Reads server-sent events from `response` until `want` has seen what it needs (it returns
/// true); each event is (name, id, data).
pub async fn read_sse(
    response: &mut reqwest::Response,
    wait: Duration,
    mut want: impl FnMut(&str, &str, &str) -> bool,
) {
    let mut text = String::new();
    let read = async {
        loop {
            let chunk = response.chunk().await.expect("chunk").expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned())
                };
                if let (Some(event), Some(id)) = (field("event:"), field("id:"))
                    && want(&event, &id, &field("data:").unwrap_or_default())
                {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(wait, read).await.expect("the events in time");
}
