//! The command line's client of a running worker's API: the worker writes where its API
//! listens (`api.url`) and its token (`api.token`) into its data directory; the commands read
//! both from there (or take `--api`).

use std::path::Path;

use serde_json::Value;

/// A client of one worker's API.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// The API of the worker whose data directory is `dir`; `api` overrides the address it
    /// wrote.
    pub fn for_data_dir(dir: &Path, api: Option<&str>) -> Result<Self, String> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map(|s| s.trim().to_owned()).map_err(|e| {
                format!(
                    "cannot read {} ({e}): is `inbox run --data-dir {}` running? Or pass --data-dir",
                    dir.join(name).display(),
                    dir.display()
                )
            })
        };
        let base = match api {
            Some(a) => a.trim_end_matches('/').to_owned(),
            None => read("api.url")?,
        };
        Ok(Self { base, token: read("api.token")?, http: reqwest::Client::new() })
    }

    /// Calls `method path` with an optional JSON body; the JSON answer, or the API's error
    /// sentence.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request.send().await.map_err(|e| {
            format!("cannot reach the worker's API at {}: {e}; is `inbox run` running?", self.base)
        })?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(value["error"]
                .as_str()
                .map_or_else(|| format!("the API answered {status}"), str::to_owned))
        }
    }
}
