//! The dead letter's retry (see `QueueStore::retry_job`).

use std::sync::Arc;

use super::feed::settled;
use super::*;
use crate::feed::FeedPosition;

/// A discarded send comes out of the dead letter: available again at once with one more
/// attempt allowed, its message `Pending` again (an event says so), claimable; a job that is
/// not discarded is refused and unchanged.
pub async fn a_discarded_job_is_retried_out_of_the_dead_letter(store: Arc<dyn Store>) {
    let store = &*store;
    let (account, _conversation, pending, job_id) = queued_send(store, 1).await;
    let lease = claim_one(store, "w1", 30, at(2)).await;
    let failed = MessageOutcome::Failed { error: "refused".to_owned() };
    store.discard(&lease, "refused", Some(failed), at(3)).await.expect("discard");
    assert_eq!(store.message(pending.id).await.expect("message").status, MessageStatus::Failed);

    let job = store.retry_job(job_id, at(10)).await.expect("retry");
    assert_eq!(job.state, JobState::Available);
    assert!(job.max_attempts > job.attempt, "one more attempt is allowed: {job:?}");
    assert_eq!(job.run_at, at(10));
    assert_eq!(store.message(pending.id).await.expect("message").status, MessageStatus::Pending);
    let events = settled(store, account.id, FeedPosition::START, 100).await;
    assert_eq!(
        events.last().map(|e| e.event.clone()),
        Some(Event::MessageStatusChanged {
            account_id: account.id,
            message_id: pending.id,
            status: MessageStatus::Pending
        }),
        "{events:#?}"
    );
    let again = claim_one(store, "w2", 30, at(11)).await;
    assert_eq!(again.job.id, job_id);
    let refused = store.retry_job(job_id, at(12)).await.expect_err("running, not discarded");
    assert!(is_invalid(&refused), "{refused:?}");
    assert_eq!(store.job(job_id).await.expect("job").state, JobState::Running, "unchanged");
    assert!(is_not_found(&store.retry_job(JobId::new(), at(12)).await.expect_err("unknown")));
}
