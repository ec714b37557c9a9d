//! The events each change writes, shared by every backend (and by the engine's in-process
//! broadcast), so that all of them record the same events for the same change.

use crate::model::*;
use crate::store::{IngestDisposition, IngestOutcome};

/// The events of one ingested message: a conversation opened or made active again, then
/// the message stored; an echo of a send is the send's `MessageSent`; a duplicate writes
/// nothing.
pub fn ingest(account: AccountId, o: &IngestOutcome, defects: &[Defect]) -> Vec<Event> {
    let mut events = Vec::new();
    match o.disposition {
        IngestDisposition::Stored => {
            if o.conversation_opened {
                events.push(Event::ConversationOpened {
                    account_id: account,
                    conversation_id: o.conversation_id,
                });
            }
            if o.conversation_reactivated {
                events.push(Event::ConversationStatusChanged {
                    account_id: account,
                    conversation_id: o.conversation_id,
                    status: ConversationStatus::Open,
                });
            }
            events.push(Event::MessageReceived {
                account_id: account,
                conversation_id: o.conversation_id,
                message_id: o.message_id,
                defects: defects.iter().map(|d| d.code.clone()).collect(),
            });
        }
        IngestDisposition::EchoMatched => {
            events.push(Event::MessageSent { account_id: account, message_id: o.message_id });
        }
        IngestDisposition::Duplicate => {}
    }
    events
}

/// A queued outbound message.
pub fn queued(m: &Message) -> Event {
    Event::MessageQueued {
        account_id: m.account_id,
        conversation_id: m.conversation_id,
        message_id: m.id,
    }
}

/// The end of a send job's attempt (its [`Event::SendAttempted`]), then what it did to the
/// message: `Sent` or `Failed`. Nothing for other jobs.
pub fn send_attempt(
    job: &Job,
    attempt: i32,
    outcome: AttemptOutcome,
    message: Option<&MessageOutcome>,
) -> Vec<Event> {
    match (job.account_id, job.message_id, &job.kind) {
        (Some(account), Some(msg), JobKind::Send) => {
            attempt_of(account, msg, job.id, attempt, outcome, message)
        }
        _ => Vec::new(),
    }
}

/// [`send_attempt`] from the ids alone (a rescue reads no whole job).
pub fn attempt_of(
    account_id: AccountId,
    message_id: MessageId,
    job_id: JobId,
    attempt: i32,
    outcome: AttemptOutcome,
    message: Option<&MessageOutcome>,
) -> Vec<Event> {
    let mut events =
        vec![Event::SendAttempted { account_id, message_id, job_id, attempt, outcome }];
    match message {
        Some(MessageOutcome::Sent { .. } | MessageOutcome::SentUnlinked { .. }) => {
            events.push(Event::MessageSent { account_id, message_id })
        }
        Some(MessageOutcome::Failed { .. }) => events.push(Event::MessageStatusChanged {
            account_id,
            message_id,
            status: MessageStatus::Failed,
        }),
        None => {}
    }
    events
}

/// A stray copy merged into a send.
pub fn merged(account: AccountId, kept: MessageId, removed: MessageId) -> Event {
    Event::MessageMerged { account_id: account, kept, removed }
}

/// A message failed by a rescue that found its job out of attempts.
pub fn failed(account: AccountId, message: MessageId) -> Event {
    Event::MessageStatusChanged {
        account_id: account,
        message_id: message,
        status: MessageStatus::Failed,
    }
}
