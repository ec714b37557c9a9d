//! The global heartbeat beats on schedule whatever the loops and the sink do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel_watchdog::{
    HealthReport, HeartbeatSink, LoopSpec, LoopState, SinkError, Watchdog, async_trait,
};
use tokio::time::Instant;

const EVERY: Duration = Duration::from_secs(15);

/// Records when each call came and what it carried; `behaviour` decides how the call ends.
#[derive(Clone)]
struct RecordingSink {
    calls: Arc<Mutex<Vec<(Instant, HealthReport)>>>,
    behaviour: Behaviour,
}

#[derive(Clone, Copy)]
enum Behaviour {
    Succeed,
    /// The first call never returns; later ones succeed.
    HangFirst,
    Panic,
    Fail,
}

impl RecordingSink {
    fn new(behaviour: Behaviour) -> Self {
        Self { calls: Arc::default(), behaviour }
    }

    fn times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }
}

#[async_trait]
impl HeartbeatSink for RecordingSink {
    async fn beat(&self, report: &HealthReport) -> Result<(), SinkError> {
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), report.clone()));
            calls.len() == 1
        };
        match self.behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::HangFirst if first => std::future::pending().await,
            Behaviour::HangFirst => Ok(()),
            Behaviour::Panic => panic!("sink exploded"),
            Behaviour::Fail => Err("database unavailable".into()),
        }
    }
}

fn assert_on_schedule(times: &[Instant], start: Instant, count: usize) {
    assert_eq!(times.len(), count, "beats at {times:?}");
    for (i, t) in times.iter().enumerate() {
        assert_eq!(*t - start, EVERY * i as u32, "beat {i} off schedule");
    }
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_fires_on_time_while_every_loop_is_hung() {
    let start = Instant::now();
    let sink = RecordingSink::new(Behaviour::Succeed);
    let watchdog =
        Watchdog::builder().heartbeat(EVERY).heartbeat_sink(sink.clone()).build().unwrap();
    for name in ["imap", "telegram", "outbox"] {
        watchdog
            .register(
                LoopSpec::new(name, |_ctx| async {
                    // Hung: never pings, never returns, ignores cancellation.
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .max_silence(Duration::from_secs(3600)),
            )
            .unwrap();
    }

    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_on_schedule(&sink.times(), start, 5);

    let calls = sink.calls.lock().unwrap();
    let (_, last) = calls.last().unwrap();
    assert_eq!(last.beat, 5);
    let names: Vec<&str> = last.loops.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["imap", "telegram", "outbox"]);
    for status in &last.loops {
        assert_eq!(status.state, LoopState::Running);
        assert!(status.last_ping_age_ms.unwrap() >= 60_000);
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_sink_does_not_stop_the_heartbeat() {
    let start = Instant::now();
    let sink = RecordingSink::new(Behaviour::HangFirst);
    let watchdog = Watchdog::builder()
        .heartbeat(EVERY)
        .sink_timeout(Duration::from_secs(5))
        .heartbeat_sink(sink.clone())
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(46)).await;
    assert_on_schedule(&sink.times(), start, 4);
    // The beat after the hung one reports the heartbeat as recently alive (5 s timeout + 10 s).
    let calls = sink.calls.lock().unwrap();
    assert_eq!(calls[1].1.heartbeat_age_ms, Some(10_000));
    drop(calls);
    drop(watchdog);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_or_failing_sink_does_not_stop_the_heartbeat() {
    for behaviour in [Behaviour::Panic, Behaviour::Fail] {
        let start = Instant::now();
        let sink = RecordingSink::new(behaviour);
        let _watchdog =
            Watchdog::builder().heartbeat(EVERY).heartbeat_sink(sink.clone()).build().unwrap();
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_on_schedule(&sink.times(), start, 3);
    }
}
