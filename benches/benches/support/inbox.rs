//! What the inbox benchmarks share: an `inbox run` worker in this process, its API over real
//! HTTP, and Telegram accounts added and logged in through that API.
#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use inbox::config::TelegramApp;
use inbox::worker::{RunningWorker, WorkerOptions};
use reqwest::Method;
use serde_json::{Value, json};

/// The app credentials the worker and the loopback server agree on.
pub const API_ID: i32 = 4242;
/// See [`API_ID`].
pub const API_HASH: &str = "inbox-bench-app-hash";
/// The login code of every phone the benchmarks register.
pub const CODE: &str = "24680";

/// Starts `inbox run`'s worker on SQLite in `dir`, with Telegram, its API on a free port.
pub async fn worker(dir: &std::path::Path) -> RunningWorker {
    inbox::worker::start(WorkerOptions {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().expect("address"),
        telegram: Some(TelegramApp::new(API_ID, API_HASH)),
        ..WorkerOptions::default()
    })
    .await
    .expect("the worker starts")
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
    /// The API of `worker`.
    pub fn of(worker: &RunningWorker) -> Self {
        Self {
            base: format!("http://{}/api/v1", worker.addr),
            token: worker.token.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// `method path` with an optional JSON body: (status, JSON answer or null).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
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
        let (status, v) = self.call(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Adds a Telegram account whose data centre `dc` is at `address`; its id.
    pub async fn add_telegram_account(&self, name: &str, dc: i32, address: SocketAddrV4) -> String {
        let config = json!({ "data_centres": { dc.to_string(): address.to_string() } });
        let body = json!({ "kind": "telegram", "name": name, "config": config });
        let (status, account) = self.call(Method::POST, "/accounts", Some(body)).await;
        assert_eq!(status, 201, "{account}");
        account["id"].as_str().expect("an id").to_owned()
    }

    /// Logs account `id` in with `phone` and [`CODE`] (its auth key provisioned first).
    pub async fn login(&self, id: &str, phone: &str) {
        let login = format!("/accounts/{id}/login");
        let step = json!({ "flow": "phone", "input": { "phone": phone } });
        let (status, answer) = self.call(Method::POST, &login, Some(step)).await;
        assert_eq!((status, answer["step"].as_str()), (200, Some("input")), "{answer}");
        let step = json!({ "flow": "phone", "input": { "code": CODE } });
        let (status, answer) = self.call(Method::POST, &login, Some(step)).await;
        assert_eq!((status, answer["step"].as_str()), (200, Some("done")), "{answer}");
    }

    /// Waits until every account in `ids` is connected; how long that took.
    pub async fn wait_connected(&self, ids: &[String], wait: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let mut connected = 0;
            let mut after = String::new();
            loop {
                let page = self.get(&format!("/accounts?limit=500{after}")).await;
                let empty = Vec::new();
                connected += page["items"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter(|a| {
                        a["connection"]["state"] == "connected"
                            && a["id"].as_str().is_some_and(|id| ids.iter().any(|i| i == id))
                    })
                    .count();
                match page["next"].as_str() {
                    Some(next) => after = format!("&after={next}"),
                    None => break,
                }
            }
            if connected == ids.len() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < wait,
                "{connected} of {} accounts connected after {wait:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Percentile `p` (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// This process's resident set (`VmRSS` of `/proc/self/status`), in KiB.
pub fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
