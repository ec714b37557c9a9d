//! Metrics: sends, retries, snoozes, discards and rescues are counted through the `metrics`
//! facade; send latency, ingest per account and feed lag are measured. One test in this binary: it installs the process-wide recorder.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel_core::dispatcher::Dispatcher;
use channel_core::retry::RetryPolicy;
use channel_core::testing::SendScript;
use channel_core::*;
use common::*;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

#[derive(Clone, Default)]
struct Counts(Arc<Mutex<HashMap<String, Arc<Cell>>>>);

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// A gauge's last value (as f64 bits) or a histogram's number of samples.
impl metrics::GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl metrics::HistogramFn for Cell {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// `name{label=value,...}` with labels in order.
fn render(key: &Key) -> String {
    let mut labels: Vec<String> =
        key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Counts {
    fn get(&self, key: &str) -> u64 {
        self.0.lock().unwrap().get(key).map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

impl Recorder for Counts {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = Arc::clone(self.0.lock().unwrap().entry(render(key)).or_default());
        Counter::from_arc(cell)
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let cell = Arc::clone(self.0.lock().unwrap().entry(render(key)).or_default());
        Gauge::from_arc(cell)
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let cell = Arc::clone(self.0.lock().unwrap().entry(render(key)).or_default());
        Histogram::from_arc(cell)
    }
}

#[tokio::test(start_paused = true)]
async fn retries_snoozes_discards_rescues_and_sends_are_counted() {
    let counts = Counts::default();
    metrics::set_global_recorder(counts.clone()).expect("the only recorder of this binary");
    let h =
        harness_with(|b| b.retry(RetryPolicy { max_attempts: 2, ..RetryPolicy::DEFAULT })).await;
    let conversation = h.conversation("chat").await;
    let d = Dispatcher::new(h.engine.clone());

    // Retried once, snoozed once, then sent.
    h.channel.script_sends([
        SendScript::Transient("reset".into()),
        SendScript::RateLimited(Duration::from_secs(5)),
    ]);
    let sent = h.engine.send(None, reply(conversation, "one")).await.unwrap();
    d.run_once().await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    d.run_once().await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    d.run_once().await.unwrap();
    assert_eq!(h.store.message(sent).await.unwrap().status, MessageStatus::Sent);

    // Discarded on a permanent error.
    h.channel.script_sends([SendScript::Permanent("blocked".into())]);
    h.engine.send(None, reply(conversation, "two")).await.unwrap();
    d.run_once().await.unwrap();

    // Rescued after a worker died.
    h.engine.send(None, reply(conversation, "three")).await.unwrap();
    let ttl = h.engine.config().job_lease_ttl();
    h.store.claim("dead-worker", &[JobKind::Send], 1, ttl, h.engine.now()).await.unwrap();
    tokio::time::advance(ttl + Duration::from_secs(1)).await;
    assert_eq!(h.engine.rescue_expired_jobs().await.unwrap(), 1);

    assert_eq!(counts.get("channel_messages_sent_total{}"), 1);
    assert_eq!(counts.get("channel_job_retries_total{class=transient,kind=send}"), 1);
    assert_eq!(counts.get("channel_job_snoozes_total{class=rate_limited,kind=send}"), 1);
    assert_eq!(counts.get("channel_jobs_discarded_total{kind=send}"), 1);
    assert_eq!(counts.get("channel_jobs_rescued_total{}"), 1);
    assert_eq!(counts.get("channel_send_latency_seconds{}"), 1, "one sample per message sent");
    let ingested = format!("channel_messages_ingested_total{{account={}}}", h.account.id);
    assert!(counts.get(&ingested) >= 1, "messages ingested, per account");

    // A feed consumer 30 s behind its oldest unread event.
    let mut feed = h.engine.feed_consumer("lagging", feed::ConsumerStart::End).await.unwrap();
    h.engine
        .deliver(
            h.account.id,
            InboundMessage::text("late", "chat", IdentityInfo::new("tg:9"), "hi", START),
        )
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(!feed.poll(1).await.unwrap().is_empty());
    let lag = f64::from_bits(counts.get("channel_feed_lag_seconds{consumer=lagging}"));
    assert!((30.0..31.0).contains(&lag), "{lag}");
}
