//! Metrics: sends, retries, snoozes, discards and rescues are counted through the `metrics`
//! facade. One test in this binary: it installs the process-wide recorder.

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
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
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
}
