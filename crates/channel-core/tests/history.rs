//! History syncs through the durable queue.

mod common;

use std::sync::Arc;
use std::time::Duration;

use channel_core::dispatcher::Dispatcher;
use channel_core::testing::MemoryChannel;
use channel_core::*;
use common::*;

fn page(n: usize) -> Vec<InboundMessage> {
    (0..n).map(|i| text(&format!("h{i}"), "chat", "tg:42", &format!("old {i}"))).collect()
}

#[tokio::test(start_paused = true)]
async fn a_history_sync_ingests_the_page_with_dedup() {
    let h = harness().await;
    h.channel.set_history(page(5));
    h.engine.deliver(h.account.id, text("h3", "chat", "tg:42", "old 3")).await.unwrap();
    h.engine.deliver(h.account.id, text("h4", "chat", "tg:42", "old 4")).await.unwrap();

    let job = h.engine.request_history(h.account.id, HistoryRequest::default()).await.unwrap();
    let again = h.engine.request_history(h.account.id, HistoryRequest::default()).await.unwrap();
    assert_eq!(job, again, "the same unfinished request is one job");
    let d = Dispatcher::new(h.engine.clone());
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert_eq!(h.store.job(job).await.unwrap().state, JobState::Completed);
    assert_eq!(h.channel.history_requests()[0].limit, 100, "default page size");
    let conv = h.store.active_conversation(h.account.id, "chat").await.unwrap().unwrap();
    assert_eq!(h.store.messages(conv.id, 100).await.unwrap().len(), 5, "each message once");

    h.engine.request_history(h.account.id, HistoryRequest::default()).await.unwrap();
    d.run_once().await.unwrap();
    assert_eq!(
        h.store.messages(conv.id, 100).await.unwrap().len(),
        5,
        "a second sync adds nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn history_page_size_is_capped_and_fetch_errors_are_retried() {
    let h = harness().await;
    h.channel.set_history(page(3));
    h.channel.fail_history([ChannelError::transient("flood wait")]);
    let req = HistoryRequest { limit: 10_000, ..Default::default() };
    let job = h.engine.request_history(h.account.id, req).await.unwrap();
    let d = Dispatcher::new(h.engine.clone());
    d.run_once().await.unwrap();
    assert_eq!(h.store.job(job).await.unwrap().state, JobState::Retryable);
    tokio::time::advance(Duration::from_secs(2)).await;
    d.run_once().await.unwrap();
    assert_eq!(h.store.job(job).await.unwrap().state, JobState::Completed);
    assert!(h.channel.history_requests().iter().all(|r| r.limit == 500), "capped at 500");
    assert!(h.store.message_by_provider_id(h.account.id, "h2").await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn invalid_history_messages_are_skipped_not_fatal() {
    let h = harness().await;
    let mut msgs = page(2);
    msgs.push(text("bad", "chat", "tg:42", "nul\0"));
    let report = h.engine.ingest_history(h.account.id, msgs).await.unwrap();
    assert_eq!((report.fetched, report.stored, report.skipped), (3, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_channel_without_history_refuses_the_request_and_discards_a_job_queued_before() {
    let h = harness().await;
    // Queued while a channel that fetches history was attached (here, or in another process).
    let queued = h.engine.request_history(h.account.id, HistoryRequest::default()).await.unwrap();
    let no_history =
        Arc::new(MemoryChannel::new().with_capabilities(h.channel.capabilities().history(false)));
    no_history.set_history(page(3));
    channel_core::testing::attach_channel(&h.engine, h.account.id, no_history.clone());

    let other = HistoryRequest { thread_key: Some("other".into()), ..Default::default() };
    let refused = h.engine.request_history(h.account.id, other).await;
    assert!(
        matches!(refused, Err(EngineError::Unsupported { capability: "history", .. })),
        "{refused:?}"
    );

    let d = Dispatcher::new(h.engine.clone());
    assert_eq!(d.run_once().await.unwrap(), 1, "only the job queued before exists");
    let job = h.store.job(queued).await.unwrap();
    assert_eq!(job.state, JobState::Discarded);
    assert!(job.last_error.as_deref().unwrap_or_default().contains("does not fetch history"));
    assert!(no_history.history_requests().is_empty(), "the channel was never asked");
    assert!(h.store.message_by_provider_id(h.account.id, "h0").await.unwrap().is_none());
}
