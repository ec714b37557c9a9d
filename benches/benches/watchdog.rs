//! channel-watchdog benchmarks.
//!
//! * `watchdog/ping`: the cost of one `LoopContext::ping` (target: at most 20 ns), next to
//!   `tokio::time::Instant::now()` for reference;
//! * `watchdog/detection_latency_200ms`: real-time delay from a loop's last ping to its
//!   cancellation with `max_silence` = 200 ms and `check_interval` = 50 ms (target: at most
//!   250 ms);
//! * `watchdog/idle_cpu` (printed, not a criterion benchmark): process CPU time, read from
//!   `/proc/self/task/*/schedstat`, while 10,000 loops are supervised (target: under 2 % of one
//!   core): loops that only wait, and loops that ping and sleep 10 s or 1 s with their wake-ups
//!   aligned or spread over the period, each next to the same loops as plain tokio tasks
//!   without a watchdog, so the watchdog's share can be told from the runtime's own timer cost.
//!
//! Run: `cargo bench -p channel-benches --bench watchdog`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use channel_watchdog::{CancellationToken, LoopContext, LoopSpec, Watchdog};
use criterion::{Criterion, criterion_group};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

/// A watchdog with one loop whose context is handed out for pinging from the bench thread.
fn context(rt: &Runtime) -> (Watchdog, LoopContext) {
    let (tx, rx) = mpsc::channel();
    let watchdog = rt.block_on(async {
        let watchdog = Watchdog::builder().build().expect("watchdog");
        watchdog
            .register(LoopSpec::new("bench", move |ctx| {
                let _ = tx.send(ctx.clone());
                async move {
                    ctx.cancelled().await;
                    Ok(())
                }
            }))
            .expect("register");
        watchdog
    });
    let ctx = rx.recv().expect("context");
    (watchdog, ctx)
}

fn ping(c: &mut Criterion) {
    let rt = runtime();
    let (watchdog, ctx) = context(&rt);
    let mut group = c.benchmark_group("watchdog");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("ping", |b| b.iter(|| black_box(&ctx).ping()));
    group.bench_function("reference_tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    group.finish();
    rt.block_on(watchdog.shutdown(Duration::from_secs(1)));
}

const MAX_SILENCE: Duration = Duration::from_millis(200);
const CHECK: Duration = Duration::from_millis(50);

fn detection_latency(c: &mut Criterion) {
    let rt = runtime();
    let watchdog =
        rt.block_on(async { Watchdog::builder().check_interval(CHECK).build().expect("watchdog") });
    let worst = Arc::new(AtomicU64::new(0));
    let mut next = 0u64;
    let mut group = c.benchmark_group("watchdog");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("detection_latency_200ms", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                next += 1;
                let (tx, rx) = mpsc::channel();
                watchdog
                    .register(
                        LoopSpec::new(format!("hang-{next}"), move |ctx| {
                            let tx = tx.clone();
                            async move {
                                // Ping once, then hang; report when the watchdog cancels us.
                                ctx.ping();
                                let pinged = Instant::now();
                                ctx.cancelled().await;
                                let _ = tx.send(pinged.elapsed());
                                std::future::pending::<()>().await;
                                Ok(())
                            }
                        })
                        .max_silence(MAX_SILENCE)
                        .grace(Duration::from_millis(1))
                        .policy(channel_watchdog::RestartPolicy::Temporary),
                    )
                    .expect("register");
                let latency = rx.recv().expect("detection");
                worst.fetch_max(latency.as_micros() as u64, Ordering::Relaxed);
                total += latency;
            }
            total
        })
    });
    group.finish();
    if worst.load(Ordering::Relaxed) == 0 {
        // Filtered out: nothing ran.
        rt.block_on(watchdog.shutdown(Duration::from_secs(1)));
        return;
    }
    println!(
        "watchdog/detection_latency_200ms: worst {:.1} ms (bound: max_silence + check = {} ms)",
        worst.load(Ordering::Relaxed) as f64 / 1000.0,
        (MAX_SILENCE + CHECK).as_millis()
    );
    rt.block_on(watchdog.shutdown(Duration::from_secs(1)));
}

/// CPU time used so far by all live threads of this process: the sum of the first field of
/// `/proc/self/task/*/schedstat` (nanoseconds on CPU). Falls back to utime + stime from
/// `/proc/self/stat` (10 ms ticks: USER_HZ is 100 on Linux) where schedstat is missing.
fn process_cpu() -> Duration {
    let mut total = 0u64;
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok())
            {
                total += ns;
                found = true;
            }
        }
    }
    if found {
        return Duration::from_nanos(total);
    }
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

const LOOPS: usize = 10_000;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(4);

/// Percentage of one core used by the whole process over `MEASURE`, after `WARM_UP`.
fn cpu_percent() -> f64 {
    std::thread::sleep(WARM_UP);
    let (cpu0, wall0) = (process_cpu(), Instant::now());
    std::thread::sleep(MEASURE);
    let (cpu1, wall1) = (process_cpu(), Instant::now());
    (cpu1 - cpu0).as_secs_f64() / (wall1 - wall0).as_secs_f64() * 100.0
}

/// When the loops wake up within each period.
#[derive(Clone, Copy)]
enum Wakeups {
    /// All at the same instant (loops started together, sleeping the same period).
    Aligned,
    /// Spread over 1,000 distinct instants per period.
    Spread,
}

/// The delay before loop `i`'s first ping.
fn offset(i: usize, every: Duration, wakeups: Wakeups) -> Duration {
    match wakeups {
        Wakeups::Aligned => Duration::ZERO,
        Wakeups::Spread => every.mul_f64((i % 1000) as f64 / 1000.0),
    }
}

/// A supervised loop that pings every `every` and returns when cancelled.
fn pinging(i: usize, every: Duration, wakeups: Wakeups) -> LoopSpec {
    LoopSpec::new(format!("idle-{i}"), move |ctx| async move {
        tokio::select! {
            () = ctx.cancelled() => return Ok(()),
            () = tokio::time::sleep(offset(i, every, wakeups)) => {}
        }
        loop {
            ctx.ping();
            tokio::select! {
                () = ctx.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// CPU of `LOOPS` supervised loops pinging every `every` (`None`: ping once, then wait).
fn supervised(every: Option<Duration>, wakeups: Wakeups) -> f64 {
    let rt = runtime();
    let watchdog = rt.block_on(async {
        let watchdog = Watchdog::builder().build().expect("watchdog");
        for i in 0..LOOPS {
            let spec = match every {
                Some(every) => pinging(i, every, wakeups),
                None => LoopSpec::new(format!("idle-{i}"), |ctx| async move {
                    ctx.ping();
                    ctx.cancelled().await;
                    Ok(())
                }),
            };
            watchdog.register(spec).expect("register");
        }
        watchdog
    });
    let percent = cpu_percent();
    let report = rt.block_on(watchdog.shutdown(Duration::from_secs(10)));
    assert!(report.all_graceful(), "some loops were aborted at shutdown");
    SHUTDOWN_MS.fetch_max(report.elapsed.as_millis() as u64, Ordering::Relaxed);
    percent
}

/// CPU of the same loops as plain tokio tasks with a cancellation token, without a watchdog.
fn unsupervised(every: Duration, wakeups: Wakeups) -> f64 {
    let rt = runtime();
    let token = CancellationToken::new();
    let slots: Arc<Vec<AtomicU64>> = Arc::new((0..LOOPS).map(|_| AtomicU64::new(0)).collect());
    rt.block_on(async {
        for i in 0..LOOPS {
            let (token, slots) = (token.clone(), slots.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(offset(i, every, wakeups)) => {}
                }
                loop {
                    slots[i].store(i as u64, Ordering::Relaxed);
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                }
            });
        }
    });
    let percent = cpu_percent();
    token.cancel();
    percent
}

/// The longest graceful shutdown of the supervised scenarios.
static SHUTDOWN_MS: AtomicU64 = AtomicU64::new(0);

/// Idle CPU of 10,000 supervised loops; printed.
fn idle_cpu() {
    let window = MEASURE.as_secs();
    println!(
        "watchdog/idle_cpu: {LOOPS} loops, {window} s windows, % of one core (whole process):"
    );
    let waiting = supervised(None, Wakeups::Aligned);
    println!("  registered, waiting (no wake-ups), supervised:       {waiting:.3} %");
    for (secs, wakeups, label) in [
        (10, Wakeups::Aligned, "aligned"),
        (10, Wakeups::Spread, "spread "),
        (1, Wakeups::Aligned, "aligned"),
    ] {
        let every = Duration::from_secs(secs);
        let with = supervised(Some(every), wakeups);
        let without = unsupervised(every, wakeups);
        println!(
            "  ping + sleep {secs:>2} s, {label}: supervised {with:.3} %, plain tasks {without:.3} %, \
             difference {:+.3} %",
            with - without
        );
    }
    println!(
        "  (graceful shutdown of {LOOPS} loops: at most {} ms)",
        SHUTDOWN_MS.load(Ordering::Relaxed)
    );
}

criterion_group!(benches, ping, detection_latency);

fn main() {
    benches();
    // Only under `cargo bench` (criterion's `--bench`), and unless a name filter excludes it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected =
        filters.is_empty() || filters.iter().any(|f| "watchdog/idle_cpu".contains(f.as_str()));
    if args.iter().any(|a| a == "--bench") && selected {
        idle_cpu();
    }
    Criterion::default().configure_from_args().final_summary();
}
