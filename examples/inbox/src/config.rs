//! `inbox run`'s settings: read from (lowest first) their defaults, a TOML file
//! (`--config FILE` or `INBOX_CONFIG`), `INBOX_*` environment variables and the command line's
//! flags, through [`figment`]. Every field is described in `inbox.example.toml`, which a test
//! reads with this module, so the reference and the code cannot drift apart.
//!
//! | setting | environment | flag | default |
//! | --- | --- | --- | --- |
//! | `data_dir` | `INBOX_DATA_DIR` | `--data-dir` | `./inbox-data` |
//! | `blob_dir` | `INBOX_BLOB_DIR` | (file or environment) | `blobs` in `data_dir` |
//! | `database_url` | `INBOX_DATABASE_URL` | `--database-url` | SQLite in `data_dir` |
//! | `listen` | `INBOX_LISTEN` | `--listen` | `127.0.0.1:8080` |
//! | `worker_id` | `INBOX_WORKER_ID` | `--worker-id` | a fresh one per process |
//! | `json_logs` | `INBOX_JSON_LOGS` | `--json-logs` | `false` |
//! | `metrics_behind_token` | `INBOX_METRICS_BEHIND_TOKEN` | `--metrics-behind-token` | `false` |
//! | `telegram.api_id`, `telegram.api_hash` | `INBOX_TELEGRAM_API_ID`, `INBOX_TELEGRAM_API_HASH` | `--telegram-api-id`, `--telegram-api-hash` | none: no Telegram accounts in this worker |
//! | `[[webhooks]]` `url`, `secret`, `events` | (file only) | (file only) | none |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The environment variables read, without their `INBOX_` prefix (lower case).
const ENV_KEYS: [&str; 9] = [
    "data_dir",
    "blob_dir",
    "database_url",
    "listen",
    "worker_id",
    "json_logs",
    "metrics_behind_token",
    "telegram_api_id",
    "telegram_api_hash",
];

/// The settings of one `inbox run` worker.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerOptions {
    /// The data directory (created 0700): the SQLite database, attachment blobs, the
    /// account-state keys and the API token.
    pub data_dir: PathBuf,
    /// Where attachments are kept (default: `blobs` in the data directory). Workers that
    /// share a PostgreSQL database need one directory they all reach.
    pub blob_dir: Option<PathBuf>,
    /// A `postgres://` URL shared by several workers; `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// This worker's id (default: a fresh one per process).
    pub worker_id: Option<String>,
    /// Logs as JSON lines instead of text.
    pub json_logs: bool,
    /// Whether `/metrics` asks for the token too (default: open, as Prometheus scrapes).
    pub metrics_behind_token: bool,
    /// The Telegram app's credentials; without them Telegram accounts are left to workers
    /// that have them.
    pub telegram: Option<TelegramApp>,
    /// Where events are delivered as signed HTTP requests.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./inbox-data"),
            blob_dir: None,
            database_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            worker_id: None,
            json_logs: false,
            metrics_behind_token: false,
            telegram: None,
            webhooks: Vec::new(),
        }
    }
}

/// A Telegram app's credentials, from my.telegram.org.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramApp {
    /// The app's id.
    pub api_id: i32,
    /// The app's hash.
    pub api_hash: SecretString,
}

impl TelegramApp {
    /// Credentials from their two parts.
    pub fn new(api_id: i32, api_hash: impl Into<String>) -> Self {
        Self { api_id, api_hash: SecretString::from(api_hash.into()) }
    }
}

/// One webhook endpoint (the Standard Webhooks convention).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its `http://` or `https://` URL.
    pub url: String,
    /// The signing secret: `whsec_` followed by base64 (24 to 64 random bytes), as the
    /// receiver has it.
    pub secret: SecretString,
    /// Only these events (such as `message_received`); empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
}

/// The flags given on the command line, which override everything else.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--worker-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// `--json-logs`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub json_logs: bool,
    /// `--metrics-behind-token`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub metrics_behind_token: bool,
    /// `--telegram-api-id` and `--telegram-api-hash`.
    #[serde(skip_serializing_if = "TelegramOverrides::is_empty")]
    pub telegram: TelegramOverrides,
}

/// The Telegram flags, each overriding its own setting.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TelegramOverrides {
    /// `--telegram-api-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_id: Option<i32>,
    /// `--telegram-api-hash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_hash: Option<String>,
}

impl TelegramOverrides {
    fn is_empty(&self) -> bool {
        self.api_id.is_none() && self.api_hash.is_none()
    }
}

/// A configuration that cannot be used, in one sentence naming the setting and where it came
/// from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl WorkerOptions {
    /// The settings from `file` (if any), the `INBOX_*` environment variables and `flags`.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("INBOX_"), flags)
    }

    fn load_from(file: Option<&Path>, env: Env, flags: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "the configuration file {} does not exist: check --config or INBOX_CONFIG",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // INBOX_TELEGRAM_API_ID is `telegram.api_id` (keys come here in their own case).
        let env = env.only(&ENV_KEYS).map(|key| {
            key.as_str().to_ascii_lowercase().replacen("telegram_", "telegram.", 1).into()
        });
        let options: Self = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| ConfigError(describe(e)))?;
        options.validate()?;
        Ok(options)
    }

    /// Checks what serde cannot: URLs, secrets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            return Err(ConfigError(
                "database_url takes a postgres:// URL (SQLite lives in data_dir without one)"
                    .to_owned(),
            ));
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            crate::webhooks::Endpoint::new(hook)
                .map_err(|e| ConfigError(format!("webhooks[{i}] ({}): {e}", hook.url)))?;
        }
        Ok(())
    }
}

/// figment's error, with the key and its source, as one sentence per problem.
fn describe(error: figment::Error) -> String {
    let all: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { String::new() } else { e.path.join(".") };
            let source = match &e.metadata {
                Some(m) if m.name.contains("environment") && !key.is_empty() => {
                    format!(
                        " (from the environment variable INBOX_{})",
                        key.to_ascii_uppercase().replace('.', "_")
                    )
                }
                Some(m) => m
                    .source
                    .as_ref()
                    .map_or_else(|| format!(" (from {})", m.name), |s| format!(" (from {s})")),
                None => String::new(),
            };
            if key.is_empty() {
                format!("the configuration is invalid{source}: {}", e.kind)
            } else {
                format!("setting `{key}`{source}: {}", e.kind)
            }
        })
        .collect();
    all.join("; ")
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// No environment variables: a prefix nothing in the test's environment has.
    fn no_env() -> Env {
        Env::prefixed("INBOX_CONFIG_TEST_NOTHING_")
    }

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("inbox.example.toml")
    }

    #[test]
    fn the_example_file_is_every_setting_and_loads() {
        let file = example();
        let o = WorkerOptions::load_from(Some(&file), no_env(), &Overrides::default())
            .expect("the example loads");
        assert_eq!(o.data_dir, PathBuf::from("/var/lib/inbox"));
        assert_eq!(o.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(o.telegram.as_ref().map(|t| t.api_id), Some(12345));
        assert_eq!(o.webhooks.len(), 1);
        assert_eq!(o.webhooks[0].events, ["message_received", "message_sent"]);
        // Every field of the struct is in the example (deny_unknown_fields catches the
        // reverse): the reference names them all.
        let text = std::fs::read_to_string(&file).unwrap();
        for key in [
            "data_dir",
            "blob_dir",
            "database_url",
            "listen",
            "worker_id",
            "json_logs",
            "metrics_behind_token",
            "[telegram]",
            "api_id",
            "api_hash",
            "[[webhooks]]",
            "url",
            "secret",
            "events",
        ] {
            assert!(text.contains(key), "inbox.example.toml does not describe {key}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = example();
        let flags = Overrides {
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            telegram: TelegramOverrides { api_id: Some(7), api_hash: None },
            json_logs: true,
            ..Overrides::default()
        };
        let o = WorkerOptions::load_from(Some(&file), no_env(), &flags).unwrap();
        assert_eq!(o.listen.port(), 9999);
        let telegram = o.telegram.expect("telegram");
        assert_eq!(telegram.api_id, 7);
        assert_eq!(telegram.api_hash.expose_secret(), "0123456789abcdef0123456789abcdef");
        assert!(o.json_logs);
        assert_eq!(o.data_dir, PathBuf::from("/var/lib/inbox"), "the rest stays the file's");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's error type
    fn the_environment_overrides_the_file_and_flags_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("INBOX_LISTEN", "127.0.0.1:7000");
            jail.set_env("INBOX_TELEGRAM_API_HASH", "fromtheenvironment");
            jail.set_env("INBOX_DATA_DIR", "/srv/inbox");
            jail.set_env("INBOX_EMAIL_PASSWORD", "not a setting: ignored");
            let flags = Overrides { data_dir: Some("/flag".into()), ..Overrides::default() };
            let o = WorkerOptions::load(Some(&example()), &flags).map_err(|e| e.to_string())?;
            assert_eq!(o.listen.port(), 7000);
            let telegram = o.telegram.expect("telegram");
            assert_eq!(telegram.api_id, 12345, "from the file");
            assert_eq!(telegram.api_hash.expose_secret(), "fromtheenvironment");
            assert_eq!(o.data_dir, PathBuf::from("/flag"));
            jail.set_env("INBOX_JSON_LOGS", "perhaps");
            let e = WorkerOptions::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(e.contains("`json_logs`") && e.contains("INBOX_JSON_LOGS"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn no_file_gives_the_defaults() {
        let o = WorkerOptions::load_from(None, no_env(), &Overrides::default()).unwrap();
        assert_eq!(o.data_dir, PathBuf::from("./inbox-data"));
        assert_eq!(o.listen.port(), 8080);
        assert!(o.telegram.is_none() && o.webhooks.is_empty());
    }

    #[test]
    fn a_wrong_value_names_its_setting_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inbox.toml");
        std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
        let e = WorkerOptions::load_from(Some(&file), no_env(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`listen`") && e.contains("inbox.toml"), "{e}");
        std::fs::write(&file, "lissten = \"127.0.0.1:1\"\n").unwrap();
        let e = WorkerOptions::load_from(Some(&file), no_env(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("lissten"), "an unknown setting is named: {e}");
        std::fs::write(&file, "[[webhooks]]\nurl = \"ftp://x\"\nsecret = \"whsec_AAAA\"\n")
            .unwrap();
        let e = WorkerOptions::load_from(Some(&file), no_env(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhooks[0]"), "{e}");
        let e = WorkerOptions::load_from(
            Some(&dir.path().join("missing.toml")),
            no_env(),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
