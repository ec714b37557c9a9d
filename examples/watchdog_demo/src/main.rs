//! channel-watchdog demo: one loop hangs, one panics; the watchdog restarts both, the status is
//! printed every second while they recover, then everything shuts down gracefully.
//!
//! Run with `cargo run -p watchdog-demo` (about 11 seconds; Ctrl-C shuts down early). Set
//! `RUST_LOG=info` to see more of the watchdog's own logs.

use std::time::Duration;

use channel_watchdog::{
    HealthReport, HeartbeatSink, LoopContext, LoopResult, LoopSpec, LoopStatus, SinkError,
    StallConfig, Watchdog, async_trait,
};
use tracing_subscriber::EnvFilter;

/// Stands in for the row a service would write to a `worker_heartbeats` table.
struct PrintSink;

#[async_trait]
impl HeartbeatSink for PrintSink {
    async fn beat(&self, report: &HealthReport) -> Result<(), SinkError> {
        println!(
            "  [heartbeat #{}] healthy={} loops={}",
            report.beat,
            report.healthy,
            report.loops.len()
        );
        Ok(())
    }
}

/// One cycle of real work would go here; the demo pings every 250 ms until cancelled.
async fn work(ctx: &LoopContext, cycles: Option<u32>) -> LoopResult {
    let mut done = 0;
    loop {
        ctx.ping();
        tokio::select! {
            () = ctx.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        done += 1;
        if cycles.is_some_and(|c| done >= c) {
            return Ok(());
        }
    }
}

fn print_status(elapsed: Duration, loops: &[LoopStatus]) {
    println!("t={:>4.1}s", elapsed.as_secs_f64());
    for l in loops {
        let error = l
            .last_error
            .as_ref()
            .map(|e| format!("{:?}: {}", e.kind, e.message))
            .unwrap_or_default();
        println!(
            "  {:<12} {:<11} run={} restarts={} ping_age={:>5}ms  {}",
            l.name,
            format!("{:?}", l.state),
            l.run,
            l.restarts_total,
            l.last_ping_age_ms.unwrap_or(0),
            error
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_target(false)
        .init();
    // One line per panic instead of a backtrace: the panic is part of the show.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));

    let watchdog = Watchdog::builder()
        .check_interval(Duration::from_millis(250))
        .heartbeat(Duration::from_secs(3))
        .heartbeat_sink(PrintSink)
        .stall_detection(StallConfig::new(Duration::from_secs(1)))
        .build()?;

    let fast =
        |spec: LoopSpec| spec.max_silence(Duration::from_secs(2)).grace(Duration::from_millis(500));

    watchdog
        .register(fast(LoopSpec::new("steady", |ctx| async move { work(&ctx, None).await })))?;

    // Run 0 works for 1 s, then hangs without pinging and ignores its cancellation: found silent
    // after ~2 s, aborted after its 0.5 s grace, restarted after a backoff of 0.5-1 s.
    watchdog.register(fast(LoopSpec::new("hangs-once", |ctx| async move {
        if ctx.run() == 0 {
            work(&ctx, Some(4)).await?;
            std::future::pending::<()>().await;
        }
        work(&ctx, None).await
    })))?;

    // Run 0 works for 1.5 s, then panics: restarted after a backoff of 0.5-1 s.
    watchdog.register(fast(LoopSpec::new("panics-once", |ctx| async move {
        if ctx.run() == 0 {
            work(&ctx, Some(6)).await?;
            panic!("simulated bug in panics-once");
        }
        work(&ctx, None).await
    })))?;

    let started = tokio::time::Instant::now();
    let timeline = async {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            print_status(started.elapsed(), &watchdog.status());
        }
    };
    tokio::select! {
        () = timeline => {}
        _ = tokio::signal::ctrl_c() => println!("Ctrl-C: shutting down early"),
    }

    let recovered = watchdog
        .status()
        .iter()
        .filter(|l| l.name != "steady")
        .all(|l| l.restarts_total >= 1 && l.healthy);
    println!("hung and panicking loops restarted and healthy: {recovered}");

    let report = watchdog.shutdown(Duration::from_secs(3)).await;
    println!(
        "shutdown in {:?} (deadline {:?}), all graceful: {}",
        report.elapsed,
        report.deadline,
        report.all_graceful()
    );
    for l in &report.loops {
        println!("  {:<12} {:?}", l.name, l.outcome);
    }
    Ok(())
}
