//! Two engines in "two processes" (each with its own `SqlStore` and pool) on one PostgreSQL
//! database: what one does reaches the other through `LISTEN/NOTIFY`, end to end through the
//! engine, the runtime's notification loop and the event bus. Needs PostgreSQL (see
//! `support::pg`).
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use channel_core::runtime::{Runtime, StaticChannels};
use channel_core::state::StateKey;
use channel_core::testing::MemoryChannel;
use channel_core::{
    AccountId, BlobStore, ChannelKind, Engine, Event, IdentityInfo, InboundMessage, NewAccount,
    OutboundMessage, Timestamp, send_policy::AllowAll,
};
use channel_store::SqlStore;

/// Far longer than any wait below: a dispatcher that acts sooner was woken.
const POLL: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(20);

fn engine(store: SqlStore, worker: &str) -> Engine {
    Engine::builder(Arc::new(store), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .send_policy(Arc::new(AllowAll))
        .poll_interval(POLL)
        .worker_id(worker.to_owned())
        .build()
        .expect("engine")
}

/// Engine `a` and engine `b` on one fresh database, and an account both see.
async fn two_engines() -> (Engine, Engine, AccountId) {
    let url = support::pg::fresh_database().await;
    let a = SqlStore::builder().max_connections(6).connect_postgres(&url).await.expect("store a");
    let b = SqlStore::builder().max_connections(6).connect_postgres(&url).await.expect("store b");
    let (a, b) = (engine(a, "process-a"), engine(b, "process-b"));
    let account = b
        .store()
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "shared"), b.now())
        .await
        .expect("account")
        .id;
    (a, b, account)
}

fn hello(provider_id: &str) -> InboundMessage {
    InboundMessage::text(
        provider_id,
        "chat-1",
        IdentityInfo::new("tg:5"),
        "hello",
        Timestamp(1_700_000_000_000),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_process_reach_the_subscribers_of_another() {
    let (a, b, account) = two_engines().await;
    // Process a runs (its notification loop forwards other processes' events) but holds no
    // channel.
    let runtime = Runtime::builder(a.clone(), Arc::new(StaticChannels::new()))
        .start()
        .await
        .expect("runtime a");
    let mut events_a = a.subscribe();

    let outcome = b.deliver(account, hello("m-1")).await.expect("deliver in b");

    let received = tokio::time::timeout(WAIT, async {
        loop {
            match events_a.recv().await {
                Ok(Event::MessageReceived { message_id, .. }) => return message_id,
                Ok(_) => continue,
                Err(e) => panic!("event stream of a ended: {e}"),
            }
        }
    })
    .await
    .expect("the event reached process a");
    assert_eq!(received, outcome.message_id);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_queued_by_one_process_wakes_the_dispatcher_of_another() {
    let (a, b, account) = two_engines().await;
    let conversation =
        b.deliver(account, hello("m-1")).await.expect("deliver in b").conversation_id;

    // Process a holds the account and its channel; its dispatcher waits up to POLL.
    let channel = Arc::new(MemoryChannel::new());
    let runtime =
        Runtime::builder(a.clone(), Arc::new(StaticChannels::new().with(account, channel.clone())))
            .start()
            .await
            .expect("runtime a");
    tokio::time::timeout(WAIT, async {
        while a.channel(account).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("process a attached the channel");

    // Process b, which runs no dispatcher, queues a send.
    let id = b
        .send(
            None,
            OutboundMessage {
                conversation_id: conversation,
                text: Some("hi from b".to_owned()),
                html: None,
                subject: None,
                idempotency_key: None,
                reply_to: None,
                attachments: vec![],
                label: "chat_manual".to_owned(),
            },
        )
        .await
        .expect("send in b");

    let sends = tokio::time::timeout(WAIT, channel.wait_for_sends(1))
        .await
        .expect("process a's dispatcher was woken long before its poll interval");
    assert_eq!(sends[0].text.as_deref(), Some("hi from b"));
    tokio::time::timeout(WAIT, async {
        while b.store().message(id).await.expect("message").status
            != channel_core::MessageStatus::Sent
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("recorded sent");
    runtime.shutdown().await;
}
