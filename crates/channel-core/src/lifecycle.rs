//! The conversation lifecycle: open conversations become idle, then closed, and expire, as
//! the account's [`LifecyclePolicy`] says.
//!
//! The sweep reads the due conversations and changes each with a compare-and-set on the
//! version it read. A message that arrives in between bumps the version, so the sweep's change
//! is refused and the conversation stays open with the new message; or the sweep wins and the
//! message opens the next conversation (or reopens this one, per policy). Either way there is
//! never more than one active conversation per thread.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::jobs::JobRun;
use crate::model::*;
use crate::store::{DueConversations, StoreError};

/// What a sweep changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Conversations that became idle.
    pub idled: usize,
    /// Conversations closed.
    pub closed: usize,
    /// Conversations expired.
    pub expired: usize,
    /// Conversations skipped because they changed meanwhile (a message came in).
    pub skipped: usize,
}

/// What the policy makes of a conversation at `now`, if anything: expiry first, then close,
/// then idle.
pub fn target_status(
    c: &Conversation,
    policy: &LifecyclePolicy,
    now: Timestamp,
) -> Option<ConversationStatus> {
    if !c.status.is_active() {
        return None;
    }
    let quiet = now.since(c.last_activity_at);
    if policy.expire_after.is_some_and(|d| now.since(c.opened_at) > d) {
        Some(ConversationStatus::Expired)
    } else if policy.close_after.is_some_and(|d| quiet > d) {
        Some(ConversationStatus::Closed)
    } else if c.status == ConversationStatus::Open && policy.idle_after.is_some_and(|d| quiet > d) {
        Some(ConversationStatus::Idle)
    } else {
        None
    }
}

fn has_thresholds(p: &LifecyclePolicy) -> bool {
    p.idle_after.is_some() || p.close_after.is_some() || p.expire_after.is_some()
}

impl Engine {
    /// Sweeps one account now: idles, closes and expires its due conversations, publishing
    /// `ConversationStatusChanged` for each change.
    pub async fn sweep_account(&self, account: AccountId) -> Result<SweepReport, EngineError> {
        // Fresh from the store: a sweep is rare, and applies what every worker sees.
        let stored = self.account_db("account", account, self.inner.store.account(account)).await?;
        self.remember_settings(std::slice::from_ref(&stored));
        let policy = self.lifecycle_of(&stored.settings);
        let mut report = SweepReport::default();
        if !has_thresholds(&policy) {
            return Ok(report);
        }
        let batch = self.inner.config.sweep_batch.max(1);
        // Each round changes or skips every conversation it reads; skipped ones are active
        // again and come back only once due again, so the rounds end.
        for _round in 0..100 {
            let now = self.now();
            let due = DueConversations {
                idle_before: policy.idle_after.map(|d| now.minus(d)),
                close_before: policy.close_after.map(|d| now.minus(d)),
                expire_before: policy.expire_after.map(|d| now.minus(d)),
                limit: batch,
            };
            let found = self
                .db("due_conversations", self.inner.store.due_conversations(account, due))
                .await?;
            let mut changed = 0;
            for c in &found {
                let Some(status) = target_status(c, &policy, now) else { continue };
                let set = self.inner.store.set_conversation_status(c.id, c.version, status, now);
                match self.db("set_conversation_status", set).await {
                    Ok(_) => {
                        changed += 1;
                        match status {
                            ConversationStatus::Idle => report.idled += 1,
                            ConversationStatus::Closed => report.closed += 1,
                            _ => report.expired += 1,
                        }
                        self.inner
                            .events
                            .publish(Event::ConversationStatusChanged {
                                account_id: account,
                                conversation_id: c.id,
                                status,
                            })
                            .await;
                    }
                    Err(StoreError::VersionConflict { .. } | StoreError::InvalidInput { .. }) => {
                        report.skipped += 1
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if found.len() < batch || changed == 0 {
                break;
            }
        }
        Ok(report)
    }

    /// Queues a lifecycle sweep for every enabled account whose policy has thresholds (one
    /// unfinished sweep per account at a time). The runtime's leader calls it periodically.
    pub async fn schedule_sweeps(&self) -> Result<usize, EngineError> {
        let accounts = self.db("accounts", self.inner.store.accounts()).await?;
        self.remember_settings(&accounts);
        let now = self.now();
        let mut queued = 0;
        for a in
            accounts.iter().filter(|a| a.enabled && has_thresholds(&self.lifecycle_of(&a.settings)))
        {
            let job = NewJob {
                account_id: Some(a.id),
                unique_key: Some(format!("lifecycle_sweep:{}", a.id)),
                max_attempts: 3,
                ..NewJob::new(JobKind::LifecycleSweep, now)
            };
            if self.db("enqueue", self.inner.store.enqueue(job, now)).await?.inserted {
                queued += 1;
            }
        }
        if queued > 0 {
            self.announce_jobs("lifecycle_sweep").await;
        }
        Ok(queued)
    }

    /// Runs one claimed sweep job.
    pub(crate) async fn run_sweep_job(&self, run: &JobRun) -> Result<(), StoreError> {
        let Some(account) = run.lease.job.account_id else {
            return run.discard(self, "sweep job without an account", None).await;
        };
        match self.sweep_account(account).await {
            Ok(report) => {
                tracing::debug!(%account, ?report, "lifecycle sweep done");
                run.complete(self, None).await
            }
            Err(e) => match run.retry_or_give_up(self, &e.to_string(), "engine").await? {
                Some(error) => run.discard(self, &error, None).await,
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn conv(status: ConversationStatus, opened: i64, last: i64) -> Conversation {
        Conversation {
            id: ConversationId::new(),
            account_id: AccountId::new(),
            thread_key: "t".into(),
            primary_identity: IdentityId::new(),
            contact_id: None,
            status,
            opened_at: Timestamp(opened),
            last_activity_at: Timestamp(last),
            expires_at: None,
            closed_at: None,
            version: 1,
            assignee: None,
        }
    }

    #[test]
    fn expiry_beats_close_beats_idle() {
        let p = LifecyclePolicy {
            idle_after: Some(Duration::from_millis(10)),
            close_after: Some(Duration::from_millis(100)),
            expire_after: Some(Duration::from_millis(1000)),
            on_closed: OnClosed::StartNew,
        };
        use ConversationStatus::*;
        assert_eq!(target_status(&conv(Open, 0, 0), &p, Timestamp(5)), None);
        assert_eq!(target_status(&conv(Open, 0, 0), &p, Timestamp(50)), Some(Idle));
        assert_eq!(target_status(&conv(Idle, 0, 0), &p, Timestamp(50)), None, "already idle");
        assert_eq!(target_status(&conv(Idle, 0, 0), &p, Timestamp(500)), Some(Closed));
        assert_eq!(target_status(&conv(Open, 0, 1990), &p, Timestamp(2000)), Some(Expired));
        assert_eq!(target_status(&conv(Closed, 0, 0), &p, Timestamp(5000)), None);
    }
}
