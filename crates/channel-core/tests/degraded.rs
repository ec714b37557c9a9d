//! Promise 5: nothing a provider delivers is refused as a whole. A message over a limit, or
//! with content a store cannot hold, is stored degraded with its defects listed; a batch is
//! never held hostage by one message; a message the store refuses even so leaves a
//! placeholder so that the account goes on.

mod common;

use channel_core::validate::{FULL_TEXT_NAME, Limits, shortened_id};
use channel_core::*;
use common::*;

fn codes(m: &Message) -> Vec<&str> {
    m.defects.iter().map(|d| d.code.as_str()).collect()
}

fn attachment(name: &str, size: usize) -> AttachmentData {
    AttachmentData {
        name: Some(name.into()),
        mime_type: "application/pdf".into(),
        data: vec![7u8; size].into(),
    }
}

/// Each case alone, followed by an ordinary message: both are stored, the case with the
/// defects named, in one batch.
#[tokio::test(start_paused = true)]
async fn every_unstorable_case_is_stored_degraded_and_the_message_behind_it_is_stored_too() {
    let mut h = harness_with(|b| b.blob_store(BlobStore::in_memory().with_max_size(4 << 20))).await;
    let long = |n: usize| "x".repeat(n);
    type Case = (&'static str, Box<dyn Fn(&mut InboundMessage)>, &'static [&'static str]);
    let cases: Vec<Case> = vec![
        ("nul in text", Box::new(|m| m.text = Some("a\0b".into())), &["nul_replaced"]),
        ("nul in html", Box::new(|m| m.html = Some("<p>\0</p>".into())), &["nul_replaced"]),
        (
            "nul in a display name",
            Box::new(|m| m.remote.display_name = Some("A\0".into())),
            &["nul_replaced"],
        ),
        (
            "1,000 references",
            Box::new(|m| m.references = (0..1000).map(|i| format!("<r{i}@x>")).collect()),
            &["references_dropped"],
        ),
        ("2,000-byte id", Box::new(move |m| m.provider_id = long(2000)), &["id_shortened"]),
        ("empty id", Box::new(|m| m.provider_id.clear()), &["id_missing"]),
        ("2,000-byte thread key", Box::new(move |m| m.thread_key = long(2000)), &["id_shortened"]),
        (
            "2,000-byte reply-to",
            Box::new(move |m| m.reply_to = Some(long(2000))),
            &["id_shortened"],
        ),
        (
            "2,000-byte display name",
            Box::new(move |m| m.remote.display_name = Some(long(2000))),
            &["name_truncated"],
        ),
        ("empty address", Box::new(|m| m.remote.address.clear()), &["address_missing"]),
        ("2 MB text", Box::new(move |m| m.text = Some(long(2_000_000))), &["text_truncated"]),
        (
            "150 attachments",
            Box::new(|m| {
                m.attachments = (0..150).map(|i| attachment(&format!("{i}.pdf"), 8)).collect()
            }),
            &["attachment_over_count"; 50],
        ),
        (
            "an attachment over the blob limit",
            Box::new(|m| m.attachments = vec![attachment("big.pdf", 5 << 20)]),
            &["attachment_too_large"],
        ),
        (
            "a huge parse error",
            Box::new(move |m| m.parse_error = Some(long(10_000))),
            &["parse_error_truncated"],
        ),
    ];
    for (i, (what, spoil, expected)) in cases.iter().enumerate() {
        let mut bad = text(&format!("bad-{i}"), &format!("chat-{i}"), "tg:1", "bad");
        spoil(&mut bad);
        let canary = text(&format!("canary-{i}"), "canary", "tg:2", "canary");
        let outs = h
            .engine
            .deliver_batch(h.account.id, vec![bad, canary])
            .await
            .unwrap_or_else(|e| panic!("{what}: the batch was refused: {e}"));
        assert!(
            outs.iter().all(|o| o.disposition == IngestDisposition::Stored),
            "{what}: both stored"
        );
        let stored = h.store.message(outs[0].message_id).await.unwrap();
        assert_eq!(codes(&stored), expected.to_vec(), "{what}: the defects name what changed");
        let canary = h.store.message(outs[1].message_id).await.unwrap();
        assert!(canary.defects.is_empty(), "{what}: the canary is stored as delivered");
        let received: Vec<Vec<String>> = h
            .drain_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::MessageReceived { defects, .. } => Some(defects),
                _ => None,
            })
            .collect();
        let expected_codes: Vec<String> = expected.iter().map(|c| c.to_string()).collect();
        assert_eq!(received, vec![expected_codes, vec![]], "{what}: the events carry the codes");
    }
}

#[tokio::test(start_paused = true)]
async fn a_text_over_the_limit_is_cut_at_the_limit_and_kept_whole_as_an_attachment() {
    let h = harness().await;
    let whole = "é".repeat(600_000); // 1.2 MB, two bytes a character
    let out = h.engine.deliver(h.account.id, text("m-1", "chat", "tg:1", &whole)).await.unwrap();
    let stored = h.store.message(out.message_id).await.unwrap();
    let cut = stored.text.as_deref().unwrap();
    assert!(cut.len() <= Limits::DEFAULT.text && whole.starts_with(cut));
    assert!(cut.len() > Limits::DEFAULT.text - 2, "cut at the limit, on a character boundary");
    let kept = &stored.attachments[0];
    assert_eq!(
        (kept.name.as_deref(), kept.mime_type.as_str()),
        (Some(FULL_TEXT_NAME), "text/plain")
    );
    assert_eq!(h.engine.blobs().get(&kept.blob_key).await.unwrap(), whole.as_bytes());
    assert_eq!(
        stored.defects,
        vec![
            Defect::new(defect::TEXT_TRUNCATED)
                .field("text")
                .size(whole.len() as u64)
                .limit(Limits::DEFAULT.text as u64)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn over_long_ids_are_shortened_stably_so_duplicates_and_replies_still_meet() {
    let h = harness().await;
    let long_id = format!("<{}@example.org>", "a".repeat(3000));
    let first =
        h.engine.deliver(h.account.id, text(&long_id, &long_id, "tg:1", "one")).await.unwrap();
    let again =
        h.engine.deliver(h.account.id, text(&long_id, &long_id, "tg:1", "one")).await.unwrap();
    assert_eq!(again.disposition, IngestDisposition::Duplicate, "the same long id is one message");
    assert_eq!(again.message_id, first.message_id);
    let mut reply = text("<reply@example.org>", "<reply@example.org>", "tg:1", "two");
    reply.reply_to = Some(long_id.clone());
    reply.references = vec![long_id.clone()];
    let reply = h.engine.deliver(h.account.id, reply).await.unwrap();
    assert_eq!(reply.conversation_id, first.conversation_id, "the reply finds its thread");
    let stored = h.store.message(first.message_id).await.unwrap();
    assert_eq!(stored.provider_id.as_deref(), Some(shortened_id(&long_id).as_str()));
}

#[tokio::test(start_paused = true)]
async fn references_over_the_limit_keep_the_root_and_the_nearest_parents() {
    let h = harness().await;
    let root = h.engine.deliver(h.account.id, text("<root@x>", "<root@x>", "tg:1", "root")).await;
    let root = root.unwrap();
    let mut deep = text("<deep@x>", "<root@x>-other", "tg:1", "deep");
    deep.references = std::iter::once("<root@x>".to_owned())
        .chain((0..2000).map(|i| format!("<mid{i}@x>")))
        .collect();
    let out = h.engine.deliver(h.account.id, deep).await.unwrap();
    assert_eq!(out.conversation_id, root.conversation_id, "threaded on the kept root");
    let stored = h.store.message(out.message_id).await.unwrap();
    assert_eq!(codes(&stored), ["references_dropped"]);
    assert_eq!(stored.defects[0].size, Some(2001));
}

#[tokio::test(start_paused = true)]
async fn a_batch_with_bad_messages_stores_all_of_them_in_order_and_the_cursor_moves() {
    let h = harness().await;
    let batch: Vec<InboundMessage> = (0..6)
        .map(|i| {
            let body = if i % 2 == 1 { format!("bad\0{i}") } else { format!("good {i}") };
            let mut m = text(&format!("m-{i}"), "chat", "tg:1", &body);
            m.cursor = Some(CursorUpdate { key: "cursor".into(), value: vec![i] });
            m
        })
        .collect();
    let outs = h.engine.deliver_batch(h.account.id, batch).await.unwrap();
    assert_eq!(outs.len(), 6);
    let conv = outs[0].conversation_id;
    let stored = h.store.messages(conv, 10).await.unwrap();
    let ids: Vec<_> = stored.iter().map(|m| m.provider_id.clone().unwrap()).collect();
    assert_eq!(ids, ["m-0", "m-1", "m-2", "m-3", "m-4", "m-5"]);
    let state = h.engine.account_state(h.account.id).get("cursor").await.unwrap().unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&state).to_vec(), vec![5u8]);
}

/// The engine is configured with a text limit above the store's: the store refuses the
/// message, and a placeholder takes its place; the messages around it are stored as they
/// are, in order, and the cursor moves.
#[tokio::test(start_paused = true)]
async fn a_message_the_store_refuses_leaves_a_placeholder_and_the_batch_goes_on() {
    let mut h = harness_with(|b| b.limits(Limits { text: 8 << 20, ..Limits::DEFAULT })).await;
    let mut raw = text("m-2", "chat", "tg:1", &"y".repeat(2 << 20));
    raw.attachments = vec![AttachmentData {
        name: Some("message.eml".into()),
        mime_type: "message/rfc822".into(),
        data: bytes::Bytes::from_static(b"Subject: raw form\r\n\r\nbody"),
    }];
    raw.cursor = Some(CursorUpdate { key: "cursor".into(), value: vec![2] });
    let mut last = text("m-3", "chat", "tg:1", "after");
    last.cursor = Some(CursorUpdate { key: "cursor".into(), value: vec![3] });
    let batch = vec![text("m-1", "chat", "tg:1", "before"), raw, last];
    let outs = h.engine.deliver_batch(h.account.id, batch).await.unwrap();
    assert_eq!(outs.len(), 3);
    let placeholder = h.store.message(outs[1].message_id).await.unwrap();
    assert_eq!(placeholder.provider_id.as_deref(), Some("m-2"), "it keeps its provider id");
    assert_eq!(placeholder.text, None);
    assert!(placeholder.parse_error.as_deref().unwrap().contains("text"), "the reason");
    assert_eq!(codes(&placeholder), ["placeholder"]);
    assert_eq!(placeholder.attachments.len(), 1, "the raw form is kept");
    assert_eq!(placeholder.attachments[0].mime_type, "message/rfc822");
    let texts: Vec<_> = h
        .store
        .messages(outs[0].conversation_id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, [Some("before".to_owned()), None, Some("after".to_owned())]);
    let state = h.engine.account_state(h.account.id).get("cursor").await.unwrap().unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&state).to_vec(), vec![3u8]);
    let again = h
        .engine
        .deliver(h.account.id, text("m-2", "chat", "tg:1", &"y".repeat(2 << 20)))
        .await
        .unwrap();
    assert_eq!(again.disposition, IngestDisposition::Duplicate, "fetched again, stored once");
    let defects: Vec<_> = h
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::MessageReceived { message_id, defects, .. } => Some((message_id, defects)),
            _ => None,
        })
        .collect();
    assert_eq!(defects[1], (outs[1].message_id, vec!["placeholder".to_owned()]));
}

#[tokio::test(start_paused = true)]
async fn degraded_messages_are_listed_by_defect_code_newest_first() {
    let h = harness().await;
    h.engine.deliver(h.account.id, text("m-1", "chat", "tg:1", "a\0")).await.unwrap();
    h.engine.deliver(h.account.id, text("m-2", "chat", "tg:1", "fine")).await.unwrap();
    let mut refs = text("m-3", "chat", "tg:1", "b\0");
    refs.references = (0..600).map(|i| format!("<{i}@x>")).collect();
    h.engine.deliver(h.account.id, refs).await.unwrap();
    let ids = |list: Vec<Message>| -> Vec<String> {
        list.into_iter().map(|m| m.provider_id.unwrap()).collect()
    };
    let all = h.store.messages_with_defects(h.account.id, None, 10).await.unwrap();
    assert_eq!(ids(all).len(), 2, "the message stored as delivered is not listed");
    let nul = h.store.messages_with_defects(h.account.id, Some("nul_replaced"), 10).await.unwrap();
    let mut nul = ids(nul);
    nul.sort();
    assert_eq!(nul, ["m-1", "m-3"]);
    let dropped =
        h.store.messages_with_defects(h.account.id, Some("references_dropped"), 10).await.unwrap();
    assert_eq!(ids(dropped), ["m-3"]);
    let none = h.store.messages_with_defects(h.account.id, Some("text_truncated"), 10).await;
    assert!(none.unwrap().is_empty());
}
