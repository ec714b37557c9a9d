//! Ingest through the engine: validation first, attachments in the blob store, sealed
//! cursors, commit, then events.

mod common;

use std::sync::Arc;

use channel_core::state::{StateError, StateKey};
use channel_core::validate::Problem;
use channel_core::*;
use common::*;
use secrecy::ExposeSecret;

#[tokio::test(start_paused = true)]
async fn a_message_handed_to_the_engine_is_stored_once_and_its_event_published_after_commit() {
    let mut h = harness().await;
    let msg = text("m-1", "chat-1", "tg:1", "hello");
    let out = h.engine.deliver(h.account.id, msg.clone()).await.unwrap();
    assert_eq!(out.disposition, IngestDisposition::Stored);

    let events = h.drain_events();
    assert_eq!(
        events,
        vec![
            Event::ConversationOpened {
                account_id: h.account.id,
                conversation_id: out.conversation_id
            },
            Event::MessageReceived {
                account_id: h.account.id,
                conversation_id: out.conversation_id,
                message_id: out.message_id,
                defects: vec![],
            },
        ]
    );
    // Published after the commit: what the event names is readable.
    assert_eq!(h.store.message(out.message_id).await.unwrap().text.as_deref(), Some("hello"));

    let again = h.engine.deliver(h.account.id, msg).await.unwrap();
    assert_eq!(again.disposition, IngestDisposition::Duplicate);
    assert_eq!(again.message_id, out.message_id);
    assert!(h.drain_events().is_empty(), "a duplicate publishes nothing");
    assert_eq!(h.store.messages(out.conversation_id, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_message_delivered_concurrently_through_the_engine_is_stored_once() {
    let h = harness().await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let engine = h.engine.clone();
            let account = h.account.id;
            tokio::spawn(async move {
                engine.deliver(account, text("m-1", "chat", "tg:1", "x")).await.unwrap()
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap().disposition == IngestDisposition::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
}

#[tokio::test(start_paused = true)]
async fn events_carry_ids_never_content() {
    let mut h = harness().await;
    let mut msg = text("m-1", "chat-secret-thread", "secret@address.example", "the secret body");
    msg.remote = msg.remote.with_display_name("Secret Name");
    let out = h.engine.deliver(h.account.id, msg).await.unwrap();
    let id = h.engine.send(None, reply(out.conversation_id, "secret reply")).await.unwrap();
    channel_core::dispatcher::Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    assert_eq!(h.store.message(id).await.unwrap().status, MessageStatus::Sent);
    let events = h.drain_events();
    assert!(events.len() >= 3, "{events:?}");
    for e in events {
        let json = serde_json::to_string(&e).unwrap();
        for secret in ["secret", "Secret", "chat-", "address"] {
            assert!(!json.contains(secret), "event leaks content: {json}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn only_a_wrong_cursor_or_an_unknown_account_is_refused_and_then_nothing_is_written() {
    let h = harness().await;
    let acc = h.account.id;
    let mut m = text("m-1", "chat", "tg:1", "x");
    m.attachments = vec![AttachmentData {
        name: None,
        mime_type: "text/plain".into(),
        data: bytes::Bytes::from_static(b"att"),
    }];
    let mut bad_cursor = m.clone();
    bad_cursor.cursor = Some(CursorUpdate { key: String::new(), value: b"1".to_vec() });
    match h.engine.deliver(acc, bad_cursor).await {
        Err(EngineError::Invalid(v)) => {
            assert_eq!((v.field.as_str(), v.problem), ("cursor.key", Problem::Empty))
        }
        other => panic!("a cursor without a key: {other:?}"),
    }
    let unknown = AccountId::new();
    assert!(matches!(
        h.engine.deliver(unknown, m).await,
        Err(EngineError::UnknownAccount(a)) if a == unknown
    ));
    assert!(h.store.conversations(acc, None, 10).await.unwrap().is_empty());
    assert!(h.store.identities(acc, false).await.unwrap().is_empty());
    assert!(
        !h.engine.blobs().contains(&blob_key_of(b"att")).await.unwrap(),
        "no attachment bytes written for refused messages"
    );
}

fn blob_key_of(bytes: &[u8]) -> String {
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    format!("sha256/{}/{}", &hash[..2], hash)
}

#[tokio::test(start_paused = true)]
async fn attachments_are_stored_content_addressed_and_one_over_the_size_limit_is_left_out_and_recorded()
 {
    let h = harness_with(|b| b.blob_store(BlobStore::in_memory().with_max_size(1024))).await;
    let att = |data: &'static [u8]| AttachmentData {
        name: Some("photo.jpg".into()),
        mime_type: "image/jpeg".into(),
        data: bytes::Bytes::from_static(data),
    };
    let mut a = text("m-1", "chat", "tg:1", "photo");
    a.attachments = vec![att(b"same bytes")];
    let mut b = text("m-2", "chat", "tg:1", "same photo again");
    b.attachments = vec![att(b"same bytes")];
    let a = h.engine.deliver(h.account.id, a).await.unwrap();
    let b = h.engine.deliver(h.account.id, b).await.unwrap();
    let a = h.store.message(a.message_id).await.unwrap().attachments;
    let b = h.store.message(b.message_id).await.unwrap().attachments;
    assert_eq!(a[0].blob_key, b[0].blob_key, "one blob for the same bytes");
    assert_eq!(a[0].size, 10);
    assert_eq!(a[0].blob_key, blob_key_of(b"same bytes"));
    assert_eq!(h.engine.blobs().get(&a[0].blob_key).await.unwrap(), "same bytes");

    let mut big = text("m-3", "chat", "tg:1", "too big");
    big.attachments = vec![AttachmentData {
        name: Some("big.bin".into()),
        mime_type: "a/b".into(),
        data: vec![0u8; 2048].into(),
    }];
    let out = h.engine.deliver(h.account.id, big).await.unwrap();
    let stored = h.store.message(out.message_id).await.unwrap();
    assert!(stored.attachments.is_empty(), "the attachment over the limit is left out");
    assert_eq!(
        stored.defects,
        vec![
            Defect::new(defect::ATTACHMENT_TOO_LARGE)
                .field("attachments[0]")
                .size(2048)
                .limit(1024)
                .left_out(Some("big.bin".into()), "a/b")
        ],
        "and recorded with its name, type and size"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cursor_is_sealed_by_the_engine_before_it_reaches_the_store() {
    let h = harness().await;
    let mut m = text("m-1", "chat", "tg:1", "x");
    m.cursor =
        Some(CursorUpdate { key: "imap:INBOX".into(), value: b"uidvalidity=7;uid=4242".to_vec() });
    h.engine.deliver(h.account.id, m).await.unwrap();
    let raw = h.store.state_get(h.account.id, "imap:INBOX").await.unwrap().unwrap();
    assert!(!raw.windows(4).any(|w| w == b"4242"), "the store holds ciphertext only");
    let plain = h.engine.account_state(h.account.id).get("imap:INBOX").await.unwrap().unwrap();
    assert_eq!(plain.expose_secret(), b"uidvalidity=7;uid=4242");
    let sink = h.engine.account_sink(h.account.id);
    assert_eq!(
        Inbound::state_get(&sink, "imap:INBOX").await.unwrap().as_deref(),
        Some(&b"uidvalidity=7;uid=4242"[..])
    );
}

#[tokio::test(start_paused = true)]
async fn account_state_round_trip_is_encrypted_and_a_wrong_key_is_a_typed_error() {
    let h = harness().await;
    let state = h.engine.account_state(h.account.id);
    state.put("session", b"very secret session blob").await.unwrap();
    assert_eq!(
        state.get("session").await.unwrap().unwrap().expose_secret(),
        b"very secret session blob"
    );
    let raw = h.store.state_get(h.account.id, "session").await.unwrap().unwrap();
    assert!(!raw.windows(6).any(|w| w == b"secret"), "raw bytes do not contain the plaintext");

    let other = Engine::builder(h.store.clone(), StateKey::from_bytes([8; 32]))
        .blob_store(BlobStore::in_memory())
        .build()
        .unwrap();
    let err = other.account_state(h.account.id).get("session").await.unwrap_err();
    assert!(matches!(err, StateError::MissingKey { ref key, .. } if key == "session"), "{err:?}");
    assert!(!err.to_string().contains("very secret"));

    // A value moved to another slot does not open either.
    h.store.state_put(h.account.id, "other-slot", &raw).await.unwrap();
    assert!(matches!(state.get("other-slot").await, Err(StateError::Decrypt { .. })));

    state.delete("session").await.unwrap();
    assert!(state.get("session").await.unwrap().is_none());
    state.put("a", b"1").await.unwrap();
    state.clear().await.unwrap();
    assert!(state.get("a").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_echo_of_our_send_marks_it_sent_without_a_second_message() {
    let mut h = harness().await;
    let conversation = h.conversation("chat").await;
    let id = h.engine.send(None, reply(conversation, "hi")).await.unwrap();
    let key = h.store.message(id).await.unwrap().client_key.unwrap();
    h.drain_events();
    let mut echo = text("p-echo", "chat", "tg:42", "hi");
    echo.direction = Direction::Outbound;
    echo.client_key = Some(key);
    let out = h.engine.deliver(h.account.id, echo).await.unwrap();
    assert_eq!(out.disposition, IngestDisposition::EchoMatched);
    assert_eq!(out.message_id, id);
    assert_eq!(
        h.drain_events(),
        vec![Event::MessageSent { account_id: h.account.id, message_id: id }]
    );
    assert_eq!(h.store.messages(conversation, 10).await.unwrap().len(), 2);
    // The dispatcher then finds it sent and does not send it again.
    channel_core::dispatcher::Dispatcher::new(h.engine.clone()).run_once().await.unwrap();
    assert!(h.channel.sends().is_empty(), "an echoed message is not sent again");
    assert_eq!(h.job_of(id).await.state, JobState::Completed);
}

#[tokio::test(start_paused = true)]
async fn the_sink_reports_connection_state_once_per_change() {
    let mut h = harness().await;
    let sink = h.engine.account_sink(h.account.id);
    let state = ConnectionState::NeedsLogin { reason: "session revoked".into() };
    sink.report_state(state.clone()).await;
    sink.report_state(state.clone()).await;
    assert_eq!(h.store.account(h.account.id).await.unwrap().connection, state);
    assert_eq!(
        h.drain_events(),
        vec![Event::AccountStateChanged { account_id: h.account.id, state }]
    );
}

#[tokio::test(start_paused = true)]
async fn an_engine_without_a_blob_store_is_a_configuration_error() {
    let store = Arc::new(channel_core::testing::MemoryStore::new());
    assert!(matches!(
        Engine::builder(store, StateKey::generate()).build(),
        Err(EngineError::Config(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn the_sink_tells_which_provider_ids_are_stored_already() {
    let h = harness().await;
    h.engine.deliver(h.account.id, text("m-1", "chat", "tg:1", "one")).await.unwrap();
    h.engine.deliver(h.account.id, text("m-2", "chat", "tg:1", "two")).await.unwrap();
    let sink = h.engine.account_sink(h.account.id);
    let ids: Vec<String> = ["m-1", "m-3", "m-2", "m-1"].map(String::from).to_vec();
    let known = sink.known_provider_ids(&ids).await.unwrap();
    assert_eq!(known, ["m-1", "m-2"].map(String::from).into_iter().collect());

    let too_many: Vec<String> = (0..=KNOWN_IDS_LIMIT).map(|i| format!("x-{i}")).collect();
    assert!(matches!(sink.known_provider_ids(&too_many).await, Err(ChannelError::InvalidInput(_))));
}

#[tokio::test(start_paused = true)]
async fn an_edit_through_the_sink_replaces_the_text_and_is_published_once() {
    let mut h = harness().await;
    let out = h.engine.deliver(h.account.id, text("m-1", "chat", "tg:1", "draft")).await.unwrap();
    h.drain_events();
    let sink = h.engine.account_sink(h.account.id);
    let edit = InboundEdit {
        provider_id: "m-1".to_owned(),
        text: Some("final".to_owned()),
        html: None,
        edited_at: Timestamp(h.engine.now().0 + 5_000),
    };
    assert_eq!(sink.edited(edit.clone()).await.unwrap(), Some(out.message_id));
    assert_eq!(sink.edited(edit.clone()).await.unwrap(), Some(out.message_id), "again: no change");
    let stored = h.store.message(out.message_id).await.unwrap();
    assert_eq!(stored.text.as_deref(), Some("final"));
    assert_eq!(stored.edited_at, Some(edit.edited_at));
    assert_eq!(
        h.drain_events(),
        vec![Event::MessageEdited { account_id: h.account.id, message_id: out.message_id }],
        "one event for the change, none for the repeat"
    );

    let unknown = InboundEdit { provider_id: "nope".to_owned(), ..edit.clone() };
    assert_eq!(sink.edited(unknown).await.unwrap(), None);
    // What the provider sends is never refused: a NUL byte is replaced, as on delivery.
    let odd = InboundEdit {
        text: Some("odd\0".to_owned()),
        edited_at: Timestamp(edit.edited_at.0 + 1),
        ..edit
    };
    assert_eq!(sink.edited(odd).await.unwrap(), Some(out.message_id));
    assert_eq!(h.store.message(out.message_id).await.unwrap().text.as_deref(), Some("odd\u{FFFD}"));
}

#[tokio::test(start_paused = true)]
async fn a_deletion_through_the_sink_marks_the_messages_and_is_published_once() {
    let mut h = harness().await;
    let one = h.engine.deliver(h.account.id, text("m-1", "chat", "tg:1", "one")).await.unwrap();
    let two = h.engine.deliver(h.account.id, text("m-2", "chat", "tg:1", "two")).await.unwrap();
    h.drain_events();
    let sink = h.engine.account_sink(h.account.id);
    let deletion = InboundDeletion {
        provider_ids: vec!["m-1".to_owned(), "unknown".to_owned()],
        deleted_at: h.engine.now(),
    };
    assert_eq!(sink.deleted(deletion.clone()).await.unwrap(), vec![one.message_id]);
    assert_eq!(sink.deleted(deletion.clone()).await.unwrap(), vec![], "again: no change");
    let stored = h.store.message(one.message_id).await.unwrap();
    assert_eq!(stored.deleted_at, Some(deletion.deleted_at));
    assert_eq!(stored.text.as_deref(), Some("one"), "the content is kept");
    assert_eq!(h.store.message(two.message_id).await.unwrap().deleted_at, None);
    assert_eq!(
        h.drain_events(),
        vec![Event::MessageDeleted { account_id: h.account.id, message_id: one.message_id }],
        "one event for the change, none for the repeat"
    );

    // An id with a NUL byte is degraded like on delivery (it matches nothing here); it does
    // not stop the deletion of the others.
    let odd =
        InboundDeletion { provider_ids: vec!["m-2".to_owned(), "bad\0".to_owned()], ..deletion };
    assert_eq!(sink.deleted(odd).await.unwrap(), vec![two.message_id]);
    let too_many = InboundDeletion {
        provider_ids: (0..=InboundDeletion::MAX_IDS).map(|i| format!("x{i}")).collect(),
        deleted_at: h.engine.now(),
    };
    assert!(
        matches!(sink.deleted(too_many).await, Err(ChannelError::InvalidInput(_))),
        "a channel that reports more ids at once than the limit made a mistake"
    );
}

#[tokio::test(start_paused = true)]
async fn bytes_that_are_not_utf8_are_stored_replaced_and_flagged_with_the_raw_bytes_kept() {
    let h = harness().await;
    // What a channel does with provider bytes it cannot trust: decode, flag, keep the raw.
    let raw: &[u8] = b"caf\xe9 \x00ok";
    let decoded = validate::DecodedText::from_bytes(raw);
    assert!(decoded.lossy);
    let mut m = text("m-bytes", "chat", "tg:1", &decoded.text);
    m.parse_error = Some("the text was not valid UTF-8".into());
    m.attachments = vec![AttachmentData {
        name: None,
        mime_type: "application/octet-stream".into(),
        data: bytes::Bytes::copy_from_slice(raw),
    }];
    let outcome = h.engine.deliver(h.account.id, m).await.unwrap();

    let stored = h.store.message(outcome.message_id).await.unwrap();
    assert_eq!(stored.text.as_deref(), Some("caf\u{FFFD} \u{FFFD}ok"));
    assert!(stored.parse_error.is_some());
    let blob = &stored.attachments[0];
    assert_eq!(&h.engine.blobs().get(&blob.blob_key).await.unwrap()[..], raw, "kept byte for byte");

    // Decoding valid text changes nothing and flags nothing.
    let clean = validate::DecodedText::from_bytes("grüß".as_bytes());
    assert_eq!((clean.text.as_str(), clean.lossy), ("grüß", false));
}
