//! Idempotent sends through the engine on the SQL stores: the service's key, unique per
//! account, gives the same message however often (and however concurrently) the send is
//! repeated, and the same key with other content is an error; the subject is stored.

mod support;

use std::sync::Arc;

use channel_core::state::StateKey;
use channel_core::{
    BlobStore, ChannelKind, ConversationId, Engine, EngineError, IdentityInfo, InboundMessage,
    JobState, NewAccount, OutboundMessage,
};
use channel_store::SqlStore;

async fn engine_with_conversation(store: SqlStore) -> (Engine, ConversationId) {
    let engine = Engine::builder(Arc::new(store), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .build()
        .expect("engine");
    let account = NewAccount::new(ChannelKind::from_static("memory"), "a");
    let account = engine.store().create_account(account, engine.now()).await.expect("account");
    let hello =
        InboundMessage::text("m-1", "chat", IdentityInfo::new("tg:1"), "hello", engine.now());
    let out = engine.deliver(account.id, hello).await.expect("deliver");
    (engine, out.conversation_id)
}

async fn the_same_key_is_one_message_even_when_sent_concurrently(store: SqlStore) {
    let (engine, conversation) = engine_with_conversation(store).await;
    let send = OutboundMessage::text(conversation, "your order shipped")
        .subject("Order 7")
        .idempotency_key("order-7-shipped");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (engine, send) = (engine.clone(), send.clone());
            tokio::spawn(async move { engine.send(None, send).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task").expect("send"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one message for one key: {ids:?}");
    let jobs = engine.store().jobs_in_state(JobState::Available, 100).await.expect("jobs");
    assert_eq!(jobs.len(), 1, "one send job");
    let stored = engine.store().message(ids[0]).await.expect("message");
    assert_eq!(stored.subject.as_deref(), Some("Order 7"));

    let other = OutboundMessage::text(conversation, "other").idempotency_key("order-7-shipped");
    let conflict = engine.send(None, other).await;
    assert!(matches!(conflict, Err(EngineError::IdempotencyConflict { .. })), "{conflict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_the_same_key_is_one_message_even_when_sent_concurrently() {
    the_same_key_is_one_message_even_when_sent_concurrently(support::sqlite().await).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_the_same_key_is_one_message_even_when_sent_concurrently() {
    the_same_key_is_one_message_even_when_sent_concurrently(support::pg::store().await).await;
}
