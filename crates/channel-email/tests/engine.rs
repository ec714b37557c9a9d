//! End to end through the real engine: Dovecot + OpenSMTPD -> `EmailChannel` ->
//! `channel_core::Engine` on a `MemoryStore`, and a reply back through `Engine::send` and the
//! dispatcher.

mod support;

use std::sync::Arc;
use std::time::Duration;

use channel_core::dispatcher::Dispatcher;
use channel_core::state::StateKey;
use channel_core::testing::MemoryStore;
use channel_core::{AccountStore, ConversationStore, MessageStore};
use channel_core::{
    BlobStore, Channel, Direction, Engine, IdentityInfo, MessageId, MessageStatus, NewAccount,
    Origin, OutboundMessage, PreparedSend,
};
use channel_email::{EmailChannel, FolderCursor};
use support::{RecordingInbound, stack};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_stored_once_through_the_engine_and_a_reply_goes_out_through_the_dispatcher() {
    let st = stack();
    let (alice, bob) = (st.user("alice"), st.user("bob"));

    // Bob's account lives in the engine; his channel files its sends in Sent and watches Sent.
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::builder(store.clone(), StateKey::generate())
        .blob_store(BlobStore::in_memory())
        .provider(Arc::new(channel_email::EmailProvider::new()))
        .build()
        .expect("engine");
    let account = store
        .create_account(NewAccount::new(channel_email::KIND, &bob.address), engine.now())
        .await
        .expect("account")
        .id;
    let bob_channel =
        Arc::new(EmailChannel::new(st.config(&bob).append_sent(true)).expect("channel"));
    channel_core::testing::attach_channel(&engine, account, bob_channel.clone());
    let cancel = CancellationToken::new();
    let bob_task = {
        let (c, sink, k) =
            (bob_channel.clone(), Arc::new(engine.account_sink(account)), cancel.clone());
        tokio::spawn(async move { c.run(sink, k).await })
    };

    // Alice (outside the engine) writes to Bob over SMTP.
    let alice_sink = Arc::new(RecordingInbound::new());
    let alice_channel =
        Arc::new(EmailChannel::new(st.config(&alice).watch_sent(false)).expect("channel"));
    let alice_task = {
        let (c, s, k) = (alice_channel.clone(), alice_sink.clone(), cancel.clone());
        tokio::spawn(async move { c.run(s, k).await })
    };
    let first = format!("<e2e-{}@example.org>", rand::random::<u64>());
    alice_channel
        .send(&PreparedSend {
            message_id: MessageId::new(),
            client_key: first.clone(),
            thread_key: first.clone(),
            remote: IdentityInfo::new(&bob.address),
            text: Some("Hello Bob, through the engine".to_owned()),
            html: None,
            subject: None,
            reply_to: None,
            references: Vec::new(),
            attachments: Vec::new(),
        })
        .await
        .expect("alice's mail submitted");

    let received = eventually("alice's mail in bob's store", || {
        let store = store.clone();
        let first = first.clone();
        async move { store.message_by_provider_id(account, &first).await.expect("store") }
    })
    .await;
    assert_eq!(received.direction, Direction::Inbound);
    assert_eq!(received.origin, Origin::Remote);
    assert_eq!(received.text.as_deref().map(str::trim), Some("Hello Bob, through the engine"));
    let conversation = store.conversation(received.conversation_id).await.expect("conversation");
    assert_eq!(conversation.thread_key, first, "the thread is keyed by its root Message-ID");
    let identity = store.identity(received.identity_id).await.expect("identity");
    assert_eq!(identity.address, alice.address.to_lowercase());
    assert_eq!(conversation.primary_identity, identity.id);

    // Bob answers through the engine: a pending row and a job, sent by the dispatcher.
    let reply_id = engine
        .send(
            Some(account),
            OutboundMessage {
                conversation_id: conversation.id,
                text: Some("Hi Alice, got it".to_owned()),
                html: None,
                subject: None,
                idempotency_key: None,
                reply_to: Some(first.clone()),
                attachments: Vec::new(),
                label: "agent".to_owned(),
            },
        )
        .await
        .expect("queued");
    assert_eq!(store.message(reply_id).await.unwrap().status, MessageStatus::Pending);
    let dispatcher = Dispatcher::new(engine.clone());
    let sent = eventually("the reply sent", || {
        let (dispatcher, store) = (dispatcher.clone(), store.clone());
        async move {
            dispatcher.run_once().await.expect("dispatcher");
            let m = store.message(reply_id).await.expect("message");
            (m.status == MessageStatus::Sent).then_some(m)
        }
    })
    .await;
    let reply_message_id = sent.provider_id.clone().expect("the provider id of a sent message");
    assert_eq!(
        sent.client_key.as_deref(),
        Some(reply_message_id.as_str()),
        "the Message-ID is the client key"
    );

    // It reaches Alice's mailbox as a reply in the same thread.
    alice_sink.expect_within("bob's reply", WAIT, |s| s.stored(&reply_message_id).is_some()).await;
    let at_alice = alice_sink.stored(&reply_message_id).unwrap().message;
    assert_eq!(at_alice.remote.address, bob.address.to_lowercase());
    assert_eq!(at_alice.reply_to.as_deref(), Some(first.as_str()));
    assert_eq!(at_alice.thread_key, first);

    // Bob's channel finds its own copy in Sent: matched to the sent row, not stored again.
    let sent_cursor = FolderCursor::key("Sent");
    eventually("the Sent copy read", || {
        let engine = engine.clone();
        let key = sent_cursor.clone();
        async move {
            let value = engine.account_state(account).get(&key).await.expect("state")?;
            use secrecy::ExposeSecret;
            let cursor = FolderCursor::decode(value.expose_secret())?;
            (cursor.uid_next >= 2).then_some(())
        }
    })
    .await;
    let thread = store.messages(conversation.id, 100).await.expect("messages");
    assert_eq!(thread.len(), 2, "alice's mail and bob's reply, each once: {thread:#?}");
    let ours = thread.iter().find(|m| m.id == reply_id).expect("the reply is in the conversation");
    assert_eq!(ours.direction, Direction::Outbound);
    assert_eq!(ours.status, MessageStatus::Sent);
    assert!(
        matches!(ours.origin, Origin::Service(_)),
        "still our send, not 'other app': {:?}",
        ours.origin
    );

    cancel.cancel();
    bob_task.await.unwrap().unwrap();
    alice_task.await.unwrap().unwrap();
    assert_eq!(store.messages(conversation.id, 100).await.unwrap().len(), 2);
}
