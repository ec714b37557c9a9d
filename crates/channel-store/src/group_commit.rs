//! Group commit of job completions.
//!
//! The engine's dispatcher runs the jobs of a claimed batch concurrently, so their
//! completions arrive together. Committed one by one, each waits for its own `COMMIT` (on
//! PostgreSQL a WAL flush, ~1–2 ms on a virtual disk; on SQLite a trip through the single
//! writer). Here concurrent [`QueueStore::complete`](channel_core::QueueStore::complete) calls share a
//! transaction instead: a caller that gets a slot becomes a leader, takes every completion
//! queued so far (at most [`MAX_GROUP`]) and commits them together; whatever arrives while
//! the slots are taken forms the next group. SQLite has one slot (one writer); PostgreSQL
//! has half its connections, so completions that do not arrive together still commit side
//! by side. A lone completion commits alone in its caller's task, as before, so nothing
//! waits for company.
//!
//! Each caller still returns only after the commit that holds its completion, with its own
//! result: a stale lease is `LeaseLost` for that job alone and writes nothing of it. When the
//! group's transaction fails as a whole (a busy database, a provider id that belongs to
//! another message), every completion of it is run again on its own, with the usual retries,
//! so one bad completion never fails the others. A group of several runs in its own task: a
//! caller that gives up (its timeout) does not cancel the others' commit, and a completion
//! whose caller has gone before its group started is dropped unrun.

use std::sync::{Arc, Mutex, PoisonError};

use channel_core::StoreError;
use tokio::sync::oneshot;

use crate::SqlStore;
use crate::error::Res;
use crate::queue::{self, Completion};

/// The most completions committed in one transaction.
pub(crate) const MAX_GROUP: usize = 200;

struct Queued {
    /// Tells a caller's own completion from the others in a group it drains.
    ticket: u64,
    completion: Completion,
    reply: oneshot::Sender<Res<()>>,
}

static NEXT_TICKET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The queue of completions waiting for a group, and the slots of the groups in flight.
pub(crate) struct GroupCommit {
    queue: Mutex<Vec<Queued>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

fn interrupted() -> crate::error::Fail {
    StoreError::Unavailable("the group commit of this completion was interrupted".into()).into()
}

impl GroupCommit {
    /// At most `in_flight` groups commit at once: one on SQLite (it has one writer anyway);
    /// several on PostgreSQL, whose own group commit then shares WAL flushes between them,
    /// so that completions that do not come together are not made to wait for each other.
    pub(crate) fn new(in_flight: usize) -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(in_flight.max(1))),
        }
    }

    /// Completes one job, committed together with the completions that are queued with it.
    pub(crate) async fn complete(&self, store: &SqlStore, completion: Completion) -> Res<()> {
        let (reply, mut rx) = oneshot::channel();
        let ticket = NEXT_TICKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(Queued {
            ticket,
            completion,
            reply,
        });
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => return answer.unwrap_or_else(|_| Err(interrupted())),
                permit = self.slots.clone().acquire_owned() => {
                    let Ok(permit) = permit else { return Err(interrupted()) };
                    match rx.try_recv() {
                        Ok(answer) => return answer,
                        Err(oneshot::error::TryRecvError::Closed) => return Err(interrupted()),
                        Err(oneshot::error::TryRecvError::Empty) => {}
                    }
                    let group: Vec<Queued> = {
                        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                        let n = queue.len().min(MAX_GROUP);
                        queue.drain(..n).collect()
                    };
                    if group.is_empty() {
                        // Ours is in a group in flight: its answer comes through `rx`.
                        drop(permit);
                        return rx.await.unwrap_or_else(|_| Err(interrupted()));
                    }
                    if let [only] = group.as_slice()
                        && only.ticket == ticket
                    {
                        // Alone: commit in this task, as an ungrouped call would, without
                        // the hops to a group task and back.
                        let result = store.finish_completion(&only.completion).await;
                        drop(permit);
                        return result;
                    }
                    let store = store.clone();
                    let task = tokio::spawn(async move {
                        let _slot = permit;
                        commit_group(&store, group).await;
                    });
                    // The answer comes through `rx`; a panic of the task drops the senders.
                    let _ = task.await;
                }
            }
        }
    }
}

/// Commits `group` and answers every completion of it.
async fn commit_group(store: &SqlStore, group: Vec<Queued>) {
    let group: Vec<Queued> = group.into_iter().filter(|q| !q.reply.is_closed()).collect();
    if group.len() == 1 {
        if let Some(q) = group.into_iter().next() {
            let result = store.finish_completion(&q.completion).await;
            let _ = q.reply.send(result);
        }
        return;
    }
    if group.is_empty() {
        return;
    }
    let completions: Vec<&Completion> = group.iter().map(|q| &q.completion).collect();
    match run_group(store, &completions).await {
        Ok(went_through) => {
            for (q, ok) in group.into_iter().zip(went_through) {
                let result = if ok {
                    Ok(())
                } else {
                    Err(queue::stale_completion(store.pools().reader(), &q.completion.lease).await)
                };
                let _ = q.reply.send(result);
            }
        }
        Err(e) => {
            tracing::debug!(error = ?e, size = group.len(), "group commit failed; completing one by one");
            for q in group {
                let result = store.finish_completion(&q.completion).await;
                let _ = q.reply.send(result);
            }
        }
    }
}

async fn run_group(store: &SqlStore, completions: &[&Completion]) -> Res<Vec<bool>> {
    let mut tx = store.pools().begin_write().await?;
    let went_through = queue::complete_group(&mut tx, completions).await?;
    if tx.is_pg() {
        tx.commit().await?;
    }
    Ok(went_through)
}
