//! The durable feed's promises (see [`crate::feed`]).

use std::sync::Arc;

use super::*;
use crate::feed::{ConsumerStart, FeedEvent, FeedPosition};

/// Everything the feed hands out from `after`, read in pages of `page`.
async fn read_all(store: &dyn Store, mut after: FeedPosition, page: usize) -> Vec<FeedEvent> {
    let mut all: Vec<FeedEvent> = Vec::new();
    loop {
        let batch = store.feed_read(after, page).await.expect("feed_read");
        assert!(batch.len() <= page, "a read returns at most its limit");
        let Some(last) = batch.last() else { return all };
        after = last.position;
        all.extend(batch);
    }
}

/// Everything the feed holds after `after` once every change made so far is readable: a
/// backend may hold events back while older transactions are in flight (on PostgreSQL, any
/// transaction of the cluster), so this writes a marker event and reads until the marker
/// comes, then returns what came before it (markers left out).
pub(super) async fn settled(
    store: &dyn Store,
    account: AccountId,
    after: FeedPosition,
    page: usize,
) -> Vec<FeedEvent> {
    let marker = Event::LoginStepped {
        account_id: account,
        step: format!("marker-{}", uuid::Uuid::new_v4()),
    };
    store.append_events(std::slice::from_ref(&marker), T0).await.expect("append marker");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = read_all(store, after, page).await;
        if let Some(i) = all.iter().position(|e| e.event == marker) {
            let is_marker = |e: &FeedEvent| matches!(&e.event, Event::LoginStepped { step, .. } if step.starts_with("marker-"));
            return all[..i].iter().filter(|e| !is_marker(e)).cloned().collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the marker event never became readable: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn feed_all(store: &dyn Store, account: AccountId, page: usize) -> Vec<FeedEvent> {
    settled(store, account, FeedPosition::START, page).await
}

fn names(events: &[FeedEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.name()).collect()
}

/// Every change writes its events with it, in the order of the changes: a message stored
/// (its conversation opened first), an edit, a deletion, a send queued, its attempt and its
/// sending, a connection state that changed (not one that did not), an assignment and a
/// status change. Reading in pages of one gives the same events as one read, each once.
pub async fn every_change_writes_its_events_with_it_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    let (account, conversation, pending, job_id) = queued_send(store, 10).await;
    let lease = claim_one(store, "w1", 30, at(2)).await;
    let sent = MessageOutcome::Sent { provider_id: "p-out".to_owned(), at: at(3) };
    store.complete(&lease, Some(sent), at(4)).await.expect("complete");
    let edit = InboundEdit {
        provider_id: "in-1".to_owned(),
        text: Some("hi!".to_owned()),
        html: None,
        edited_at: at(5),
    };
    store.apply_edit(account.id, &edit, at(5)).await.expect("edit");
    store.apply_edit(account.id, &edit, at(5)).await.expect("the same edit again");
    let deletion = InboundDeletion { provider_ids: vec!["in-1".to_owned()], deleted_at: at(6) };
    store.apply_deletion(account.id, &deletion, at(6)).await.expect("deletion");
    store.apply_deletion(account.id, &deletion, at(6)).await.expect("the same deletion again");
    store
        .set_connection_state(account.id, &ConnectionState::Connected, at(7))
        .await
        .expect("state");
    store.set_connection_state(account.id, &ConnectionState::Connected, at(8)).await.expect("same");
    store.set_assignee(conversation, None, Some("op-1"), at(9)).await.expect("assign");
    let c = store.conversation(conversation).await.expect("conversation");
    store
        .set_conversation_status(conversation, c.version, ConversationStatus::Closed, at(10))
        .await
        .expect("close");

    let events = feed_all(store, account.id, 100).await;
    assert_eq!(
        names(&events),
        [
            "conversation_opened",
            "message_received",
            "message_queued",
            "send_attempted",
            "message_sent",
            "message_edited",
            "message_deleted",
            "account_state_changed",
            "conversation_assigned",
            "conversation_status_changed",
        ],
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e.event.account_id() == account.id));
    assert!(events.windows(2).all(|w| w[0].position < w[1].position), "strictly increasing");
    assert_eq!(
        events[2].event,
        Event::MessageQueued {
            account_id: account.id,
            conversation_id: conversation,
            message_id: pending.id
        }
    );
    assert_eq!(
        events[3].event,
        Event::SendAttempted {
            account_id: account.id,
            message_id: pending.id,
            job_id,
            attempt: 1,
            outcome: AttemptOutcome::Completed
        }
    );
    assert_eq!(events[3].at, at(4), "an event is written at its change's time");
    assert_eq!(
        events[8].event,
        Event::ConversationAssigned {
            account_id: account.id,
            conversation_id: conversation,
            assignee: Some("op-1".to_owned()),
            previous: None
        }
    );
    assert_eq!(feed_all(store, account.id, 1).await, events, "pages of one give the same events");
}

/// A change that fails, or that changes nothing, writes no event: a refused ingest, a
/// duplicate, a completion with a lost lease, a compare-and-set that lost.
pub async fn a_change_that_fails_or_changes_nothing_writes_no_event(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    let mut bad = inbound("p-1", "t", "alice", "hi", T0);
    bad.text = Some("a\0b".to_owned());
    assert!(store.ingest(request(account.id, bad, LifecyclePolicy::default(), T0)).await.is_err());
    assert!(feed_all(store, account.id, 10).await.is_empty(), "a refused ingest writes no event");

    let first = ingest(store, account.id, inbound("p-1", "t", "alice", "hi", T0), T0).await;
    let before = feed_all(store, account.id, 100).await;
    ingest(store, account.id, inbound("p-1", "t", "alice", "hi", T0), at(1)).await;
    assert_eq!(feed_all(store, account.id, 100).await, before, "a duplicate writes no event");

    let req = send_request(first.conversation_id, "ck-1", 10, at(1));
    store.enqueue_send(req).await.expect("enqueue");
    let lease = claim_one(store, "w1", 1, at(2)).await;
    store.rescue_expired(at(10)).await.expect("rescue");
    let before = feed_all(store, account.id, 100).await;
    assert_eq!(
        names(&before).last(),
        Some(&"send_attempted"),
        "a rescue ends the attempt: {before:#?}"
    );
    let late = MessageOutcome::Sent { provider_id: "p-late".to_owned(), at: at(11) };
    assert!(store.complete(&lease, Some(late), at(11)).await.is_err(), "the lease was lost");
    let c = store.conversation(first.conversation_id).await.expect("conversation");
    let stale = store
        .set_conversation_status(c.id, c.version - 1, ConversationStatus::Closed, at(12))
        .await;
    assert!(stale.is_err(), "a stale version loses");
    assert!(store.set_assignee(c.id, Some("nobody"), Some("op"), at(12)).await.is_err());
    assert_eq!(
        feed_all(store, account.id, 100).await,
        before,
        "nothing that failed wrote an event"
    );
}

/// A consumer registers once, reads after what it acknowledged, and its acknowledgements
/// only move forward; a new consumer starts at the beginning or at the end as asked (the
/// end is `feed_end`, after which only new events come); an unknown consumer cannot
/// acknowledge.
pub async fn feed_consumers_resume_after_their_acknowledgement(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    for n in 0..3 {
        let m = inbound(&format!("p-{n}"), "t", "alice", "hi", at(n));
        ingest(store, account.id, m, at(n)).await;
    }
    let events = feed_all(store, account.id, 100).await;
    assert_eq!(events.len(), 4, "{events:#?}");

    let c =
        store.feed_consumer("replies", ConsumerStart::Beginning, at(10)).await.expect("register");
    assert_eq!((c.position, c.expired, c.registered_at), (FeedPosition::START, false, at(10)));
    let acked = store.feed_ack("replies", events[1].position, at(11)).await.expect("ack");
    assert_eq!((acked.position, acked.seen_at), (events[1].position, at(11)));
    let back = store.feed_ack("replies", events[0].position, at(12)).await.expect("ack back");
    assert_eq!(back.position, events[1].position, "an acknowledgement never moves back");
    let again =
        store.feed_consumer("replies", ConsumerStart::End, at(13)).await.expect("open again");
    assert_eq!(again.position, events[1].position, "a registered consumer keeps its cursor");
    assert_eq!((again.registered_at, again.seen_at), (at(10), at(13)));
    let rest = settled(store, account.id, again.position, 100).await;
    assert_eq!(rest, events[2..].to_vec());

    let late = store.feed_consumer("audit", ConsumerStart::End, at(14)).await.expect("end");
    assert!(late.position >= events[3].position, "at the end: only what comes next");
    assert!(settled(store, account.id, late.position, 10).await.is_empty());
    // The feed's end: where a live reader starts; what comes after it is what is new.
    let end = store.feed_end().await.expect("end");
    assert!(end >= late.position, "{end:?} {late:?}");
    assert!(settled(store, account.id, end, 10).await.is_empty());
    ingest(store, account.id, inbound("p-new", "t", "alice", "more", at(20)), at(20)).await;
    let new = settled(store, account.id, end, 10).await;
    assert_eq!(new.len(), 1, "only the new message's event: {new:#?}");
    assert!(store.feed_end().await.expect("end") >= new[0].position);
    let names: Vec<String> =
        store.feed_consumers().await.expect("list").into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["audit", "replies"]);

    let unknown = store.feed_ack("nobody", events[0].position, at(15)).await;
    assert!(unknown.is_err_and(|e| is_not_found(&e)));
    assert!(
        store.feed_consumer("", ConsumerStart::End, at(15)).await.is_err_and(|e| is_invalid(&e))
    );
}

/// Retention: a prune unregisters consumers unseen since the cutoff, then deletes old
/// events every remaining consumer passed, never one a registered consumer still needs. A
/// read after a pruned position and an expired consumer fail with `FeedCursorExpired`,
/// never a silent skip; a reset registers the consumer again at what is kept.
pub async fn feed_prune_keeps_what_consumers_need_and_expires_idle_ones(store: Arc<dyn Store>) {
    let store = &*store;
    let account = new_account(store, "acc", T0).await;
    for n in 0..4 {
        let m = inbound(&format!("p-{n}"), "t", "alice", "hi", at(n));
        ingest(store, account.id, m, at(n)).await;
    }
    let events = feed_all(store, account.id, 100).await;
    assert_eq!(events.len(), 5);
    store.feed_consumer("slow", ConsumerStart::Beginning, at(0)).await.expect("slow");
    store.feed_consumer("busy", ConsumerStart::Beginning, at(0)).await.expect("busy");
    store.feed_ack("busy", events[2].position, at(50)).await.expect("busy acks");
    store.feed_ack("slow", events[4].position, at(1)).await.expect("slow acks, then idles");

    // `slow` was last seen before the idle cutoff; `busy` holds back what it has not read.
    let pruned = store.feed_prune(at(100), at(20)).await.expect("prune");
    assert_eq!((pruned.consumers, pruned.events), (1, 3), "{pruned:?}");
    let kept = settled(store, account.id, events[2].position, 100).await;
    assert_eq!(kept, events[3..].to_vec(), "what `busy` has not read is kept");
    let expired = store.feed_read(FeedPosition::START, 10).await.expect_err("pruned");
    assert!(matches!(expired, StoreError::FeedCursorExpired { .. }), "{expired:?}");

    let slow = store.feed_consumer("slow", ConsumerStart::Beginning, at(101)).await.expect("get");
    assert!(slow.expired, "an idle consumer is unregistered");
    let ack = store.feed_ack("slow", events[4].position, at(101)).await.expect_err("expired");
    assert!(matches!(ack, StoreError::FeedCursorExpired { .. }), "{ack:?}");
    let reset = store.feed_reset("slow", ConsumerStart::Beginning, at(102)).await.expect("reset");
    assert_eq!((reset.expired, reset.position), (false, events[2].position));

    // Nothing newer than the cutoff goes, whoever passed it.
    store.feed_ack("busy", events[4].position, at(103)).await.expect("busy reads all");
    store.feed_ack("slow", events[4].position, at(103)).await.expect("slow reads all");
    let young = store.feed_prune(at(2), at(0)).await.expect("prune");
    assert_eq!(young.events, 0, "events written after the cutoff stay");
    let old = store.feed_prune(at(200), at(0)).await.expect("prune all");
    assert_eq!(old.events, 2);
    let left = store.feed_read(events[4].position, 10).await.expect("read");
    assert!(left.iter().all(|e| e.event.name() == "login_stepped"), "only markers: {left:#?}");
}
