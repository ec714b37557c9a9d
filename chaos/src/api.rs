//! A worker's HTTP API, as a service that embeds the inbox calls it.

use std::time::Duration;

use serde_json::Value;

/// One worker's API.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// A call that did not answer 2xx: the status (0 when the worker did not answer) and body.
#[derive(Debug)]
pub struct CallError {
    /// The HTTP status, 0 without an answer.
    pub status: u16,
    /// What it said.
    pub body: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl Api {
    /// The API at `http://host:port`.
    pub fn new(root: &str, token: &str) -> Self {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self { base: root.to_owned(), token: token.to_owned(), http }
    }

    /// Whether `/healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        let r = self.http.get(format!("{}/healthz", self.base)).send().await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// `/healthz`: its status (0 without an answer) and body.
    pub async fn health(&self) -> (u16, String) {
        match self.http.get(format!("{}/healthz", self.base)).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// `method /api/v1{path}` with an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut r = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.map_err(|e| CallError { status: 0, body: e.to_string() })?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
        } else {
            Err(CallError { status, body: text })
        }
    }

    /// `GET /api/v1{path}`.
    pub async fn get(&self, path: &str) -> Result<Value, CallError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST /api/v1{path}`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}
