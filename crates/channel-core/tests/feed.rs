//! The engine's durable feed: consumers wait for events, resume after their acknowledgement
//! when restarted, and fail with a typed error once retention passed them by.

mod common;

use std::time::Duration;

use channel_core::feed::ConsumerStart;
use channel_core::*;
use common::*;

fn hello(id: &str) -> InboundMessage {
    InboundMessage::text(id, "chat", IdentityInfo::new("tg:1"), "hello", START)
}

#[tokio::test(start_paused = true)]
async fn a_waiting_consumer_is_woken_by_a_new_message() {
    let h = harness().await;
    let mut feed = h.engine.feed_consumer("replies", ConsumerStart::End).await.expect("consumer");
    let engine = h.engine.clone();
    let account = h.account.id;
    let reader = tokio::spawn(async move { feed.next_batch(10).await.expect("events") });
    tokio::task::yield_now().await;
    let stored = engine.deliver(account, hello("m-1")).await.expect("deliver");
    let events = reader.await.expect("reader");
    assert!(events.iter().any(|e| e.event
        == Event::MessageReceived {
            account_id: account,
            conversation_id: stored.conversation_id,
            message_id: stored.message_id,
            defects: Vec::new()
        }));
}

#[tokio::test(start_paused = true)]
async fn a_consumer_restarted_before_its_ack_reads_the_same_events_again() {
    let h = harness().await;
    h.engine.deliver(h.account.id, hello("m-1")).await.expect("deliver");
    h.engine.deliver(h.account.id, hello("m-2")).await.expect("deliver");
    let mut first = h.engine.feed_consumer("replies", ConsumerStart::Beginning).await.unwrap();
    let read = first.next_batch(100).await.expect("read");
    assert_eq!(read.len(), 3, "{read:#?}");
    first.ack(read[0].position).await.expect("ack the first");
    drop(first); // the process dies before acknowledging the rest

    let mut again = h.engine.feed_consumer("replies", ConsumerStart::Beginning).await.unwrap();
    assert_eq!(again.acknowledged(), read[0].position);
    assert_eq!(again.next_batch(100).await.expect("read"), read[1..].to_vec());
    assert!(again.poll(100).await.expect("poll").is_empty(), "then nothing more");
    again.rewind();
    assert_eq!(again.poll(100).await.expect("poll"), read[1..].to_vec(), "rewound");
}

#[tokio::test(start_paused = true)]
async fn retention_unregisters_an_idle_consumer_with_a_typed_error() {
    let h = harness_with(|b| b.feed_retention(Duration::from_secs(3600))).await;
    h.engine.deliver(h.account.id, hello("m-1")).await.expect("deliver");
    let mut idle = h.engine.feed_consumer("idle", ConsumerStart::Beginning).await.unwrap();
    let mut busy = h.engine.feed_consumer("busy", ConsumerStart::Beginning).await.unwrap();
    let all = busy.next_batch(100).await.expect("read");
    busy.ack(all.last().expect("events").position).await.expect("ack");

    tokio::time::advance(Duration::from_secs(1800)).await;
    busy.ack(all.last().expect("events").position).await.expect("still seen");
    tokio::time::advance(Duration::from_secs(1801)).await;
    let pruned = h.engine.feed_prune().await.expect("prune");
    assert_eq!(pruned.consumers, 1, "the idle one goes, the busy one stays: {pruned:?}");
    assert_eq!(pruned.events, all.len() as u64, "old events the only registered one passed go");

    let err = idle.next_batch(100).await.expect_err("behind retention");
    assert!(
        matches!(&err, EngineError::Store(StoreError::FeedCursorExpired { consumer }) if consumer == "idle"),
        "{err:?}"
    );
    assert!(err.to_string().contains("reset"), "says what to do: {err}");
    let reopened = h.engine.feed_consumer("idle", ConsumerStart::Beginning).await;
    assert!(matches!(reopened, Err(EngineError::Store(StoreError::FeedCursorExpired { .. }))));
    let mut reset = h.engine.feed_reset("idle", ConsumerStart::End).await.expect("reset");
    assert!(reset.poll(10).await.expect("poll").is_empty(), "reset at the end");
}

#[tokio::test(start_paused = true)]
async fn old_events_every_consumer_passed_are_pruned_and_a_reader_behind_them_is_told() {
    let h = harness_with(|b| b.feed_retention(Duration::from_secs(60))).await;
    h.engine.deliver(h.account.id, hello("m-1")).await.expect("deliver");
    let mut c = h.engine.feed_consumer("c", ConsumerStart::Beginning).await.unwrap();
    let first = c.next_batch(100).await.expect("read");
    c.ack(first.last().expect("events").position).await.expect("ack");
    tokio::time::advance(Duration::from_secs(61)).await;
    h.engine.deliver(h.account.id, hello("m-2")).await.expect("deliver");
    c.ack(first.last().expect("events").position).await.expect("seen");
    assert_eq!(h.engine.feed_prune().await.expect("prune").events, first.len() as u64);
    let behind = h.engine.feed_read(channel_core::feed::FeedPosition::START, 10).await;
    assert!(matches!(behind, Err(EngineError::Store(StoreError::FeedCursorExpired { .. }))));
    let next = c.next_batch(100).await.expect("the consumer reads on");
    assert!(next.iter().any(|e| matches!(e.event, Event::MessageReceived { .. })));
}
