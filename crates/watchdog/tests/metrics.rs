//! The `metrics` facade sees restarts, timeouts (labelled by operation), ping ages and beats.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel_watchdog::{LoopSpec, Watchdog, timeout};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// One value cell; counters add to it, gauges store f64 bits in it.
#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _value: f64) {}
    fn decrement(&self, _value: f64) {}
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// Keeps every metric under `name{label=value,...}`.
#[derive(Default)]
struct TestRecorder {
    cells: Mutex<HashMap<String, Arc<Cell>>>,
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels: Vec<String> =
            key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        self.cells.lock().unwrap().entry(id).or_default().clone()
    }

    fn value(&self, id: &str) -> Option<u64> {
        self.cells.lock().unwrap().get(id).map(|c| c.0.load(Ordering::Relaxed))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn restarts_timeouts_ping_ages_and_beats_are_counted() {
    let recorder = TestRecorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let _ = timeout("send", Duration::from_secs(30), std::future::pending::<()>()).await;
            let _ = timeout("send", Duration::from_secs(30), async {}).await;
            let _ = timeout("media", Duration::from_secs(60), std::future::pending::<()>()).await;

            let watchdog = Watchdog::builder().build().unwrap();
            watchdog
                .register(LoopSpec::new("flaky", |ctx| async move {
                    if ctx.run() == 0 {
                        panic!("first run panics");
                    }
                    ctx.ping();
                    std::future::pending::<()>().await;
                    Ok(())
                }))
                .unwrap();
            tokio::time::sleep(Duration::from_secs(20)).await;
            watchdog.shutdown(Duration::from_secs(1)).await;
        });
    });

    assert_eq!(recorder.value("watchdog_timeouts_total{operation=send}"), Some(1));
    assert_eq!(recorder.value("watchdog_timeouts_total{operation=media}"), Some(1));
    assert_eq!(recorder.value("watchdog_loop_restarts_total{loop=flaky,reason=panic}"), Some(1));
    let age = recorder
        .value("watchdog_loop_ping_age_seconds{loop=flaky}")
        .map(f64::from_bits)
        .expect("no ping-age gauge");
    assert!(age > 15.0 && age <= 20.0, "ping age {age}");
    // Beats at 0 s and 15 s, without a sink.
    assert_eq!(recorder.value("watchdog_heartbeats_total{outcome=no_sink}"), Some(2));
}
