//! This worker's presence in the database: its liveness lock, its heartbeat row, and the
//! takeover of workers whose lock is free.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use channel_watchdog::{LoopContext, LoopResult};

use super::Shared;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::AccountId;
use crate::workers::{Liveness, LoopInfo, WorkerInfo};

/// Registers this process as its worker id: takes its liveness lock and writes its row.
///
/// A process that ran under this worker id before and died (a crash, `kill -9`, the machine
/// going down) left its claimed jobs leased until their leases expire
/// ([`EngineConfig::job_lease_ttl`](crate::EngineConfig::job_lease_ttl), 90 s) and its row
/// behind: it is taken over first, as any dead worker is, so that a worker restarted by its
/// supervisor sends what was in flight at once. A live process with the same id is left
/// alone (and the registration fails).
pub(super) async fn register(engine: &Engine) -> Result<Box<dyn Liveness>, EngineError> {
    let me = WorkerInfo::this_process(engine.config().worker_id(), engine.now());
    match engine.db("take_over", engine.store().take_over(&me.id, engine.now())).await {
        Ok(Some(taken)) => tracing::info!(
            leases = taken.leases,
            jobs = taken.jobs,
            "took back what the previous process of this worker id held when it died"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not take back what a previous process of this worker id held")
        }
    }
    Ok(engine.db("register_worker", engine.store().register_worker(&me)).await?)
}

/// Takes over every registered worker whose liveness lock is free, at once; returns how many
/// workers are alive (this one included), `None` when the workers could not be listed.
pub(super) async fn take_over_dead(engine: &Engine) -> Option<usize> {
    let me = engine.config().worker_id();
    let workers = match engine.db("workers", engine.store().workers()).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the workers");
            return None;
        }
    };
    let mut alive = 0;
    for w in workers {
        if w.alive || w.id == me {
            alive += usize::from(w.alive);
            continue;
        }
        match engine.db("take_over", engine.store().take_over(&w.id, engine.now())).await {
            Ok(Some(taken)) => {
                metrics::counter!("channel_worker_takeovers_total").increment(1);
                tracing::info!(
                    worker = %w.id,
                    host = %w.host,
                    pid = w.pid,
                    leases = taken.leases,
                    jobs = taken.jobs,
                    "took over a dead worker: its leases are free and its jobs claimable"
                );
            }
            Ok(None) => alive += 1,
            Err(e) => {
                tracing::warn!(worker = %w.id, error = %e, "could not take over a dead worker")
            }
        }
    }
    Some(alive.max(1))
}

/// This worker's row as it is now: its loops and the accounts it holds.
async fn snapshot(s: &Shared, started_at: crate::model::Timestamp) -> WorkerInfo {
    let engine = &s.engine;
    let mut me = WorkerInfo::this_process(engine.config().worker_id(), started_at);
    me.beat_at = engine.now();
    me.loops = s
        .watchdog
        .status()
        .into_iter()
        .map(|l| {
            let state = serde_json::to_value(l.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", l.state));
            metrics::gauge!("channel_loop_restarts", "loop" => l.name.clone())
                .set(l.restarts_total as f64);
            LoopInfo {
                name: l.name,
                state,
                restarts: l.restarts_total,
                last_error: l.last_error.map(|e| e.message),
            }
        })
        .collect();
    me.accounts = s
        .keeper
        .lock()
        .await
        .held()
        .filter_map(|name| name.strip_prefix("account:"))
        .filter_map(|id| id.parse::<AccountId>().ok())
        .collect();
    me
}

/// Writes this worker's heartbeat every `heartbeat_interval`, with every loop's state and
/// restarts and the accounts it holds, and the gauge of accounts per connection state.
pub(super) async fn heartbeat_loop(s: Arc<Shared>, ctx: LoopContext) -> LoopResult {
    let every = s.engine.config().heartbeat_interval();
    loop {
        ctx.ping();
        let me = snapshot(&s, s.started_at).await;
        if let Err(e) = s.engine.db("beat", s.engine.store().beat(&me)).await {
            tracing::warn!(error = %e, "could not write the worker's heartbeat");
        }
        if !s
            .liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|l| l.is_held())
        {
            tracing::error!("this worker lost its liveness lock: others may take its accounts");
        }
        if s.leader.load(Ordering::Relaxed) {
            count_connection_states(&s.engine).await;
            measure_queue(&s.engine).await;
        }
        tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Sets `channel_accounts{state}`: the accounts in each connection state (by the leader).
async fn count_connection_states(engine: &Engine) {
    let Ok(accounts) = engine.db("accounts", engine.store().accounts()).await else { return };
    let mut counts: std::collections::BTreeMap<&'static str, usize> =
        ["connecting", "connected", "transient_disconnect", "needs_login", "failed", "disabled"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
    for a in &accounts {
        let state = if a.enabled { a.connection.name() } else { "disabled" };
        *counts.entry(state).or_default() += 1;
    }
    for (state, n) in counts {
        metrics::gauge!("channel_accounts", "state" => state).set(n as f64);
    }
}

/// Sets `channel_queue_due{kind}` and `channel_queue_oldest_due_seconds{kind}`: the jobs due
/// now and how long the oldest has waited (by the leader).
async fn measure_queue(engine: &Engine) {
    let now = engine.now();
    let depth = match engine.db("queue_depth", engine.store().queue_depth(now)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "could not measure the queue");
            return;
        }
    };
    for kind in ["send", "history_sync", "lifecycle_sweep"] {
        let d = depth.iter().find(|d| d.kind.as_str() == kind);
        let due = d.map_or(0, |d| d.due);
        let age = d.map_or(0.0, |d| now.since(d.oldest_run_at).as_secs_f64());
        metrics::gauge!("channel_queue_due", "kind" => kind).set(due as f64);
        metrics::gauge!("channel_queue_oldest_due_seconds", "kind" => kind).set(age);
    }
}
