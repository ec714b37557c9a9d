//! Webhooks: every event of the durable feed, POSTed as JSON to each configured endpoint and
//! signed as the Standard Webhooks convention has it.
//!
//! - **Durable.** Each endpoint reads the feed as its own consumer (`webhook:` and a hash of
//!   its URL) and acknowledges an event only once the endpoint answered 2xx, so after a crash
//!   or a restart delivery goes on with the first event not acknowledged: at least once, in
//!   order.
//! - **Retried with backoff.** A refused or failed delivery (timeout, refused connection, any
//!   status but 2xx) is tried again after 1 s, 2 s, 4 s, ... up to 10 minutes between tries,
//!   with jitter, until it succeeds. The events behind it wait (in order).
//! - **One deliverer.** Only the worker that leads (the one that also sweeps) delivers, so
//!   several workers of one database do not each send every event. While leadership moves
//!   between workers an event may go out twice: receivers deduplicate on `webhook-id`, which
//!   is the event's feed position and the same on every try.
//! - **Signed.** `webhook-id`, `webhook-timestamp` (seconds of this try) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` under the
//!   endpoint's `whsec_` secret.
//!
//! The body: `{"type": "message_received", "timestamp": "...", "data": {...}}`, where `data`
//! is the feed event as `/api/v1/events` sends it (ids and states, never message content).
//! Each endpoint is a loop of the worker's watchdog (`webhook:<hash>`), in `inbox status`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use channel_core::feed::{ConsumerStart, FeedConsumer, FeedEvent};
use channel_core::runtime::Runtime;
use channel_watchdog::{Backoff, LoopContext, LoopResult, LoopSpec};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::WebhookConfig;

/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Between tries of one event.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(600));
/// How often a worker that does not lead looks again.
const FOLLOWER_WAIT: Duration = Duration::from_secs(2);

/// A webhook endpoint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse or is not http(s).
    #[error("`url` must be an http:// or https:// URL: {0}")]
    Url(String),
    /// The secret is not `whsec_` and base64 of 24 to 64 bytes.
    #[error(
        "`secret` must be whsec_ followed by the base64 of 24 to 64 random bytes (such as `echo whsec_$(head -c 32 /dev/urandom | base64)`): {0}"
    )]
    Secret(&'static str),
}

/// One endpoint, checked: where, with which key, for which events.
#[derive(Clone)]
pub struct Endpoint {
    url: reqwest::Url,
    key: Arc<[u8]>,
    events: Vec<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Checks a configured endpoint.
    pub fn new(config: &WebhookConfig) -> Result<Self, WebhookError> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| WebhookError::Url(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::Url(format!("the scheme is `{}`", url.scheme())));
        }
        let secret = config.secret.expose_secret();
        let encoded = secret.strip_prefix("whsec_").ok_or(WebhookError::Secret("no whsec_"))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| WebhookError::Secret("not base64"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(WebhookError::Secret("not 24 to 64 bytes"));
        }
        Ok(Self { url, key: key.into(), events: config.events.clone() })
    }

    /// The feed consumer (and watchdog loop) name of this endpoint: stable across restarts.
    pub fn consumer(&self) -> String {
        let digest = Sha256::digest(self.url.as_str().as_bytes());
        format!("webhook:{}", hex::encode(&digest[..8]))
    }

    /// Whether this endpoint takes events named `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == name)
    }

    /// `webhook-signature`'s value for one try.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag))
    }
}

/// The body of one event's delivery.
pub fn body(event: &FeedEvent) -> Vec<u8> {
    let json = serde_json::json!({
        "type": event.event.name(),
        "timestamp": event.at,
        "data": event,
    });
    json.to_string().into_bytes()
}

/// The supervised loop that delivers to `endpoint` while `runtime` leads.
pub fn delivery_loop(runtime: Weak<Runtime>, endpoint: Endpoint) -> LoopSpec {
    let http = reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).build().unwrap_or_default();
    LoopSpec::new(endpoint.consumer(), move |ctx| {
        deliver(runtime.clone(), endpoint.clone(), http.clone(), ctx)
    })
    // Waiting between tries pings too; a silent loop is a stuck one.
    .max_silence(Duration::from_secs(60))
}

fn leads(runtime: &Weak<Runtime>) -> Option<bool> {
    runtime.upgrade().map(|r| r.is_leader())
}

async fn deliver(
    runtime: Weak<Runtime>,
    endpoint: Endpoint,
    http: reqwest::Client,
    ctx: LoopContext,
) -> LoopResult {
    let name = endpoint.consumer();
    let mut consumer: Option<FeedConsumer> = None;
    loop {
        ctx.ping();
        match leads(&runtime) {
            None => return Ok(()),
            Some(false) => {
                // Another worker delivers; read on from its acknowledgement when this one
                // leads.
                consumer = None;
                tokio::select! {
                    () = ctx.cancelled() => return Ok(()),
                    () = tokio::time::sleep(FOLLOWER_WAIT) => continue,
                }
            }
            Some(true) => {}
        }
        let feed = match consumer.as_mut() {
            Some(c) => c,
            None => {
                let Some(engine) = runtime.upgrade().map(|r| r.engine().clone()) else {
                    return Ok(());
                };
                // A new endpoint gets what happens from now on, not the feed's past.
                let c = engine.feed_consumer(&name, ConsumerStart::End).await?;
                consumer.insert(c)
            }
        };
        let batch = tokio::select! {
            () = ctx.cancelled() => return Ok(()),
            // Bounded so that leadership is looked at again while the feed is quiet.
            b = tokio::time::timeout(FOLLOWER_WAIT * 5, feed.next_batch(50)) => match b {
                Ok(b) => b?,
                Err(_) => continue,
            },
        };
        for event in batch {
            if endpoint.wants(event.event.name()) {
                let delivered = try_until_delivered(&http, &endpoint, &event, &runtime, &ctx).await;
                if !delivered {
                    // Cancelled or no longer leading: what was not delivered is read again.
                    feed.rewind();
                    break;
                }
            }
            feed.ack(event.position).await?;
        }
    }
}

/// Tries one event until the endpoint takes it (true), or until the loop is cancelled or the
/// worker stops leading (false).
async fn try_until_delivered(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    event: &FeedEvent,
    runtime: &Weak<Runtime>,
    ctx: &LoopContext,
) -> bool {
    let id = format!("evt_{}", event.position);
    let body = body(event);
    let mut attempt = 0u32;
    loop {
        ctx.ping();
        attempt += 1;
        let timestamp = channel_core::Timestamp::now().as_millis() / 1000;
        let sent = http
            .post(endpoint.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", endpoint.signature(&id, timestamp, &body))
            .body(body.clone())
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("inbox_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                return true;
            }
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => format!("failed: {e}"),
        };
        metrics::counter!("inbox_webhook_deliveries_total", "outcome" => "retried").increment(1);
        let wait = RETRY.delay(attempt.saturating_sub(1));
        tracing::warn!(
            endpoint = %endpoint.url, event = %id, attempt, retry_in = ?wait,
            "webhook delivery {failure}"
        );
        // Pings while it waits, so the watchdog sees a loop that waits, not one that hangs.
        let until = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < until {
            ctx.ping();
            tokio::select! {
                () = ctx.cancelled() => return false,
                () = tokio::time::sleep_until(until.min(tokio::time::Instant::now() + Duration::from_secs(10))) => {}
            }
        }
        if leads(runtime) != Some(true) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn config(url: &str, secret: &str) -> WebhookConfig {
        WebhookConfig { url: url.to_owned(), secret: SecretString::from(secret), events: vec![] }
    }

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification: this secret, id, timestamp
        // and body sign to this value.
        let e = Endpoint::new(&config(
            "https://example.com/hook",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ))
        .unwrap();
        let signature =
            e.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bad_endpoints_are_refused_with_what_to_fix() {
        let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let e = Endpoint::new(&config("ftp://x/", good)).unwrap_err().to_string();
        assert!(e.contains("http"), "{e}");
        let e = Endpoint::new(&config("https://x/", "secret")).unwrap_err().to_string();
        assert!(e.contains("whsec_"), "{e}");
        let e = Endpoint::new(&config("https://x/", "whsec_AAAA")).unwrap_err().to_string();
        assert!(e.contains("24 to 64"), "{e}");
    }

    #[test]
    fn an_endpoint_has_a_stable_consumer_name_and_filters_events() {
        let mut c = config("https://x/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let a = Endpoint::new(&c).unwrap();
        assert_eq!(a.consumer(), Endpoint::new(&c).unwrap().consumer());
        assert!(a.consumer().starts_with("webhook:") && a.wants("message_sent"));
        c.events = vec!["message_received".into()];
        let b = Endpoint::new(&c).unwrap();
        assert!(b.wants("message_received") && !b.wants("message_sent"));
    }
}
