//! The conversation lifecycle through the engine: sweeps idle, close and expire
//! conversations with compare-and-set; later messages open the next conversation.

mod common;

use std::time::Duration;

use channel_core::dispatcher::Dispatcher;
use channel_core::*;
use common::*;

/// Stores the account's lifecycle policy in its settings, as every worker reads it.
async fn set_policy(h: &Harness, policy: LifecyclePolicy) {
    let settings = AccountSettings::default().with_lifecycle(policy);
    let update = AccountUpdate::default().settings(settings);
    h.engine.update_account(h.account.id, update).await.unwrap();
}

fn policy(on_closed: OnClosed) -> LifecyclePolicy {
    LifecyclePolicy {
        idle_after: Some(Duration::from_secs(600)),
        close_after: Some(Duration::from_secs(3600)),
        expire_after: None,
        on_closed,
    }
}

#[tokio::test(start_paused = true)]
async fn the_sweep_idles_then_closes_quiet_conversations_and_a_later_message_opens_the_next_one() {
    let mut h = harness().await;
    set_policy(&h, policy(OnClosed::StartNew)).await;
    let first = h.conversation("chat").await;
    let busy = h.conversation("busy").await;
    h.drain_events();

    tokio::time::advance(Duration::from_secs(601)).await;
    h.engine.deliver(h.account.id, text("busy-2", "busy", "tg:42", "still here")).await.unwrap();
    h.drain_events();
    let report = h.engine.sweep_account(h.account.id).await.unwrap();
    assert_eq!((report.idled, report.closed), (1, 0));
    assert_eq!(h.store.conversation(first).await.unwrap().status, ConversationStatus::Idle);
    assert_eq!(
        h.store.conversation(busy).await.unwrap().status,
        ConversationStatus::Open,
        "active ones stay open"
    );
    assert_eq!(
        h.drain_events(),
        vec![Event::ConversationStatusChanged {
            account_id: h.account.id,
            conversation_id: first,
            status: ConversationStatus::Idle
        }]
    );

    tokio::time::advance(Duration::from_secs(3000)).await;
    let report = h.engine.sweep_account(h.account.id).await.unwrap();
    assert_eq!(report.closed, 1);
    assert_eq!(h.store.conversation(first).await.unwrap().status, ConversationStatus::Closed);
    h.drain_events();

    let next =
        h.engine.deliver(h.account.id, text("later", "chat", "tg:42", "me again")).await.unwrap();
    assert_ne!(next.conversation_id, first, "a closed conversation is followed by the next one");
    assert!(next.conversation_opened);
    assert_eq!(
        h.drain_events()[0],
        Event::ConversationOpened {
            account_id: h.account.id,
            conversation_id: next.conversation_id
        }
    );
    assert_eq!(h.store.conversation(first).await.unwrap().status, ConversationStatus::Closed);
}

#[tokio::test(start_paused = true)]
async fn with_reopen_a_message_reopens_the_closed_conversation_and_publishes_it() {
    let mut h = harness().await;
    set_policy(&h, policy(OnClosed::Reopen)).await;
    let first = h.conversation("chat").await;
    tokio::time::advance(Duration::from_secs(3601)).await;
    assert_eq!(h.engine.sweep_account(h.account.id).await.unwrap().closed, 1);
    h.drain_events();
    let again =
        h.engine.deliver(h.account.id, text("later", "chat", "tg:42", "me again")).await.unwrap();
    assert_eq!(again.conversation_id, first);
    assert!(h.drain_events().contains(&Event::ConversationStatusChanged {
        account_id: h.account.id,
        conversation_id: first,
        status: ConversationStatus::Open
    }));
}

#[tokio::test(start_paused = true)]
async fn expired_conversations_are_never_reopened() {
    let h = harness().await;
    let p = LifecyclePolicy {
        expire_after: Some(Duration::from_secs(86_400)),
        on_closed: OnClosed::Reopen,
        ..Default::default()
    };
    set_policy(&h, p).await;
    let first = h.conversation("chat").await;
    for hour in 1..=25 {
        tokio::time::advance(Duration::from_secs(3600)).await;
        h.engine
            .deliver(h.account.id, text(&format!("m{hour}"), "chat", "tg:42", "x"))
            .await
            .unwrap();
    }
    assert_eq!(
        h.engine.sweep_account(h.account.id).await.unwrap().expired,
        1,
        "expiry counts from the opening"
    );
    assert_eq!(h.store.conversation(first).await.unwrap().status, ConversationStatus::Expired);
    let next = h.engine.deliver(h.account.id, text("after", "chat", "tg:42", "x")).await.unwrap();
    assert_ne!(next.conversation_id, first);
}

#[tokio::test(start_paused = true)]
async fn sweeps_are_scheduled_once_per_account_and_run_through_the_queue() {
    let h = harness().await;
    set_policy(&h, policy(OnClosed::StartNew)).await;
    let first = h.conversation("chat").await;
    tokio::time::advance(Duration::from_secs(3601)).await;
    assert_eq!(h.engine.schedule_sweeps().await.unwrap(), 1);
    assert_eq!(h.engine.schedule_sweeps().await.unwrap(), 0, "one unfinished sweep per account");
    let d = Dispatcher::new(h.engine.clone());
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert_eq!(h.store.conversation(first).await.unwrap().status, ConversationStatus::Closed);
    assert_eq!(
        h.store.jobs_in_state(JobState::Completed, 10).await.unwrap()[0].kind,
        JobKind::LifecycleSweep
    );
    assert_eq!(
        h.engine.schedule_sweeps().await.unwrap(),
        1,
        "the next sweep can be queued once it finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_racing_messages_never_leaves_two_open_conversations_for_a_thread() {
    let h = harness().await;
    // Everything is due at once: a zero close period.
    let p = LifecyclePolicy { close_after: Some(Duration::ZERO), ..Default::default() };
    set_policy(&h, p).await;
    let engine = h.engine.clone();
    let account = h.account.id;
    let deliveries = tokio::spawn(async move {
        for i in 0..200 {
            engine
                .deliver(account, text(&format!("m{i}"), &format!("t{}", i % 4), "tg:1", "x"))
                .await
                .unwrap();
        }
    });
    while !deliveries.is_finished() {
        h.engine.sweep_account(h.account.id).await.unwrap();
        tokio::task::yield_now().await;
    }
    deliveries.await.unwrap();
    let all = h.store.conversations(h.account.id, None, 10_000).await.unwrap();
    for t in 0..4 {
        let active =
            all.iter().filter(|c| c.thread_key == format!("t{t}") && c.status.is_active()).count();
        assert!(active <= 1, "thread t{t} has {active} active conversations");
    }
}

#[tokio::test(start_paused = true)]
async fn operators_claim_release_and_transfer_a_conversation_and_each_change_is_published() {
    use channel_core::assignment::Assignment;
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    h.drain_events();

    let claimed = h.engine.assign(conversation, Assignment::Claim { operator: "ana" }).await;
    assert_eq!(claimed.unwrap().assignee.as_deref(), Some("ana"));
    let again = h.engine.assign(conversation, Assignment::Claim { operator: "ana" }).await;
    assert_eq!(again.unwrap().assignee.as_deref(), Some("ana"), "claiming twice is harmless");
    match h.engine.assign(conversation, Assignment::Claim { operator: "ben" }).await {
        Err(EngineError::AssignedElsewhere { assignee, .. }) => {
            assert_eq!(assignee.as_deref(), Some("ana"))
        }
        r => panic!("ben must not get it: {r:?}"),
    }
    let not_his = h.engine.assign(conversation, Assignment::Release { operator: "ben" }).await;
    assert!(matches!(not_his, Err(EngineError::AssignedElsewhere { .. })));
    let moved = Assignment::Transfer { from: "ana", to: "ben" };
    assert_eq!(
        h.engine.assign(conversation, moved).await.unwrap().assignee.as_deref(),
        Some("ben")
    );
    let released = h.engine.assign(conversation, Assignment::Release { operator: "ben" }).await;
    assert_eq!(released.unwrap().assignee, None);
    let empty = h.engine.assign(conversation, Assignment::Claim { operator: "" }).await;
    assert!(matches!(empty, Err(EngineError::Invalid(_))));
    let unknown = h.engine.assign(ConversationId::new(), Assignment::Claim { operator: "x" }).await;
    assert!(matches!(unknown, Err(EngineError::UnknownConversation(_))));

    let assigned: Vec<(Option<String>, Option<String>)> = h
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::ConversationAssigned { assignee, previous, .. } => Some((assignee, previous)),
            _ => None,
        })
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(assigned, vec![(s("ana"), None), (s("ben"), s("ana")), (None, s("ben"))]);
}
