//! The workers' promises (see [`crate::workers`]).

use std::sync::Arc;

use super::*;
use crate::workers::{LoopInfo, WorkerInfo};

fn worker(id: &str, now: Timestamp) -> WorkerInfo {
    WorkerInfo::this_process(id, now)
}

/// Polls `workers()` until `id`'s process is dead (a lock is freed by the database a moment
/// after its holder goes: PostgreSQL notices a closed session when it reads from it).
async fn until_dead(store: &dyn Store, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = store.workers().await.expect("workers");
        if all.iter().any(|w| w.id == id && !w.alive) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{id} never died: {all:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker is alive while its liveness lock is held, whatever its beats say; its id cannot
/// be registered by a second live process; its heartbeat rewrites its row, not its start.
pub async fn workers_are_alive_while_their_lock_is_held(store: Arc<dyn Store>) {
    let store = &*store;
    let guard = store.register_worker(&worker("w-1", T0)).await.expect("register");
    assert!(guard.is_held());
    let all = store.workers().await.expect("workers");
    assert_eq!(all.len(), 1);
    assert!(all[0].alive && all[0].id == "w-1" && all[0].started_at == T0);
    let twin = store.register_worker(&worker("w-1", at(1))).await;
    assert!(twin.is_err_and(|e| is_invalid(&e)), "one live process per worker id");

    let mut beat = worker("w-1", at(60));
    beat.loops = vec![LoopInfo {
        name: "lease".to_owned(),
        state: "running".to_owned(),
        restarts: 2,
        last_error: Some("the database timed out".to_owned()),
    }];
    beat.accounts = vec![AccountId::new()];
    store.beat(&beat).await.expect("beat");
    let row = store.workers().await.expect("workers").remove(0);
    assert_eq!((row.beat_at, row.started_at), (at(60), T0), "a beat keeps the start");
    assert_eq!((row.loops.clone(), row.accounts.clone()), (beat.loops, beat.accounts));
    assert!(row.alive);
    assert!(store.take_over("w-1", at(61)).await.expect("take_over").is_none(), "alive");

    drop(guard);
    until_dead(store, "w-1").await;
    let again = store.register_worker(&worker("w-1", at(70))).await.expect("the id is free");
    assert!(store.workers().await.expect("workers").iter().all(|w| w.alive));
    drop(again);
    assert!(store.take_over("nobody", at(80)).await.expect("unknown").is_none());
}

/// A dead worker is taken over at once, by anyone: its leases can be acquired without
/// waiting for them to expire (with a new term), its claimed jobs are claimable again at
/// once, its row is gone. A live worker's leases and jobs are never touched.
pub async fn a_dead_workers_leases_and_jobs_are_taken_over_at_once(store: Arc<dyn Store>) {
    let store = &*store;
    let (_account, _conversation, _pending, job_id) = queued_send(store, 10).await;
    let dead = store.register_worker(&worker("dead", T0)).await.expect("register");
    let live = store.register_worker(&worker("live", T0)).await.expect("register");
    let ttl = Duration::from_secs(3600);
    let held = store.acquire_lease("account:a", "dead", ttl, at(2)).await.expect("acquire");
    let held = held.expect("free");
    store.acquire_lease("account:b", "live", ttl, at(2)).await.expect("acquire").expect("free");
    let claimed = store.claim("dead", &[JobKind::Send], 1, ttl, at(2)).await.expect("claim");
    assert_eq!(claimed.len(), 1);

    drop(dead);
    until_dead(store, "dead").await;
    let taken = store.take_over("dead", at(3)).await.expect("take_over").expect("dead");
    assert_eq!((taken.leases, taken.jobs), (1, 1));
    assert!(store.take_over("dead", at(3)).await.expect("again").is_none(), "done once");
    let names: Vec<String> =
        store.workers().await.expect("workers").into_iter().map(|w| w.id).collect();
    assert_eq!(names, ["live"]);

    let mine = store.acquire_lease("account:a", "live", ttl, at(4)).await.expect("acquire");
    let mine = mine.expect("free at once, long before its hour ran out");
    assert!(mine.term > held.term, "a new term fences the old holder");
    assert!(store.acquire_lease("account:b", "other", ttl, at(4)).await.expect("b").is_none());
    let job = store.job(job_id).await.expect("job");
    assert_eq!(job.state, JobState::Retryable);
    assert_eq!(job.leased_by, None);
    let again = store.claim("live", &[JobKind::Send], 1, ttl, at(4)).await.expect("claim");
    assert_eq!(again.len(), 1, "claimable at once");
    let attempts = store.job_attempts(job_id).await.expect("attempts");
    assert_eq!(attempts[0].outcome, AttemptOutcome::Rescued);
    assert!(store.take_over("live", at(5)).await.expect("live").is_none());
    drop(live);
}
