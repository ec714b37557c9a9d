//! `TelegramChannel` through the real grammers client against the loopback server.
#![cfg(feature = "testing")]

mod support;
use support::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use channel_core::testing::RecordingInbound;
use channel_core::{
    Channel, ChannelError, ConnectionState, Direction, HistoryRequest, PreparedSend,
};
use channel_telegram::session::{SESSION_KEY, UPDATES_KEY};
use channel_telegram::testing::loopback::{Fault, LoopbackServer, Reply};
use grammers_tl_types::{self as tl, Identifiable};

const SEND: u32 = tl::functions::messages::SendMessage::CONSTRUCTOR_ID;
const PING: u32 = tl::functions::Ping::CONSTRUCTOR_ID;

fn random_ids(server: &LoopbackServer) -> Vec<i64> {
    server
        .requests_of(SEND)
        .iter()
        .filter_map(|r| r.decode::<tl::functions::messages::SendMessage>())
        .map(|s| s.random_id)
        .collect()
}

fn sent_by_owner(server: &LoopbackServer) -> usize {
    server.messages().iter().filter(|m| m.random_id.is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_outgoing_and_group_messages_are_delivered_once_with_sender_identity() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", Some("alice"));
    let bob = server.add_user(2002, "Bob", None);
    server.add_chat(77, "Team");
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;

    let a = server.incoming(alice.id, "hi from alice");
    let b = server.outgoing_from_other_app(alice.id, "sent from my phone");
    let c = server.group_message(77, bob.id, "hello team");
    let d = server.incoming_short(bob.id, "short one");
    assert!(inbound.wait_for_messages(4, WAIT).await, "{:?}", inbound.messages());

    // A dropped connection: grammers treats it as a gap, reconnects and asks for the
    // difference; what it fetches again is not stored twice.
    let diffs = server.requests_of(GET_DIFFERENCE).len();
    server.drop_connections();
    assert!(server.wait_for_requests(GET_DIFFERENCE, diffs + 1, WAIT).await);
    server.incoming(alice.id, "after the reconnect");
    assert!(inbound.wait_for_messages(5, WAIT).await, "{:?}", inbound.messages());
    r.stop().await.unwrap();
    assert!(server.accepted_connections() >= 2);

    let got = inbound.messages();
    assert_eq!(got.len(), 5, "{got:?}");
    let by_text = |t: &str| got.iter().find(|m| m.text.as_deref() == Some(t)).unwrap().clone();
    let m = by_text("hi from alice");
    assert_eq!(m.provider_id, a.id.to_string());
    assert_eq!(m.thread_key, "2001");
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.remote.address, "tg:2001");
    assert_eq!(m.remote.display_name.as_deref(), Some("Alice"));
    assert_eq!(m.remote.username.as_deref(), Some("alice"));
    let m = by_text("sent from my phone");
    assert_eq!((m.direction, m.client_key.clone()), (Direction::Outbound, None));
    assert_eq!(m.provider_id, b.id.to_string());
    let m = by_text("hello team");
    assert_eq!((m.thread_key.as_str(), m.remote.address.as_str()), ("-77", "tg:2002"));
    assert_eq!(m.provider_id, c.id.to_string());
    assert_eq!(by_text("short one").provider_id, d.id.to_string());
    assert!(inbound.state(UPDATES_KEY).is_some(), "the update state went with the messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_send_returns_its_id_and_its_echo_carries_the_client_key() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", Some("alice"));
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    let first = server.incoming(alice.id, "question?");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    let mut msg = outgoing("2001", "key-1", "answer!");
    msg.reply_to = Some(first.id.to_string());
    let receipt = r.channel.send(&msg).await.unwrap();
    assert!(inbound.wait_for_messages(2, WAIT).await);
    r.stop().await.unwrap();

    let echo = inbound.messages().into_iter().find(|m| m.direction == Direction::Outbound).unwrap();
    assert_eq!(echo.provider_id, receipt.provider_id);
    assert_eq!(echo.client_key.as_deref(), Some("key-1"));
    assert_eq!(echo.reply_to, Some(first.id.to_string()));
    let stored = server.messages();
    assert_eq!(stored.last().unwrap().reply_to, Some(first.id));
    assert_eq!(random_ids(&server), vec![channel_telegram::random_id("key-1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_connection_drops_is_retried_with_the_same_random_id_and_stored_once() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "hello");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    // The server stores the message, then the connection dies before the answer.
    server.reply_once(SEND, Reply::ProcessThenDrop);
    let receipt = r.channel.send(&outgoing("2001", "key-drop", "are you there?")).await.unwrap();
    let ids = random_ids(&server);
    assert_eq!(ids.len(), 2, "retried once on a new connection");
    assert_eq!(ids[0], ids[1], "with the same random_id");
    assert_eq!(sent_by_owner(&server), 1, "Telegram deduplicated the retry");
    let sent =
        server.messages().into_iter().find(|m| m.out).expect("the message the server stored");
    assert_eq!(receipt.provider_id, sent.id.to_string(), "a private chat's message: its bare id");

    // The answer never comes: our timeout, then the engine's retry with the same key.
    server.reply_once(SEND, Reply::ProcessThenDrop);
    server.reply_once(SEND, Reply::NoReply);
    let err = tokio::time::timeout(WAIT, r.channel.send(&outgoing("2001", "key-2", "again")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    r.channel.send(&outgoing("2001", "key-2", "again")).await.unwrap();
    let ids = random_ids(&server);
    assert_eq!(ids.len(), 5);
    assert!(ids[2..].iter().all(|id| *id == ids[2]));
    assert_eq!(sent_by_owner(&server), 2);
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_and_slowmode_waits_map_to_rate_limited_with_the_wait() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "hello");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    server.reply_once(SEND, Reply::flood_wait(7));
    let started = Instant::now();
    let err = r.channel.send(&outgoing("2001", "k", "x")).await.unwrap_err();
    assert_eq!(err, ChannelError::RateLimited { retry_after: Duration::from_secs(7) });
    assert!(started.elapsed() < Duration::from_secs(2), "not slept on inside grammers");
    server.reply_once(SEND, Reply::rpc_error(400, "SLOWMODE_WAIT_30"));
    let err = r.channel.send(&outgoing("2001", "k", "x")).await.unwrap_err();
    assert_eq!(err, ChannelError::RateLimited { retry_after: Duration::from_secs(30) });
    server.reply_once(SEND, Reply::rpc_error(400, "PEER_FLOOD"));
    let err = r.channel.send(&outgoing("2001", "k", "x")).await.unwrap_err();
    assert!(matches!(err, ChannelError::Permanent(_)), "{err:?}");
    assert_eq!(sent_by_owner(&server), 0);
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_send_puts_the_account_in_needs_login() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "hello");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    server.reply_once(SEND, Reply::auth_key_unregistered());
    let err = r.channel.send(&outgoing("2001", "k", "x")).await.unwrap_err();
    assert!(matches!(err, ChannelError::NeedsLogin(_)), "{err:?}");
    assert!(
        inbound.connection_states().iter().any(|s| matches!(s, ConnectionState::NeedsLogin { .. }))
    );
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_stops_the_loop_with_needs_login() {
    let server = LoopbackServer::start().await.unwrap();
    server.on(Some(PING), |_| Some(Reply::rpc_error(401, "SESSION_REVOKED")));
    let inbound = account(&server);
    let r = run(&inbound).await;
    let result = tokio::time::timeout(WAIT, r.task).await.expect("run ends");
    assert!(matches!(result.unwrap(), Err(ChannelError::NeedsLogin(_))));
    assert!(matches!(inbound.connection_states().last(), Some(ConnectionState::NeedsLogin { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_missing_session_is_a_needs_login_error_not_a_panic() {
    let server = LoopbackServer::start().await.unwrap();
    for stored in [
        Some(&b"{not json"[..]),
        Some(&br#"{"version":9,"home_dc":2,"dcs":[],"me":null}"#[..]),
        None,
    ] {
        let inbound = Arc::new(RecordingInbound::new());
        if let Some(bytes) = stored {
            inbound.set_state(SESSION_KEY, bytes);
        }
        let r = run(&inbound).await;
        let result = tokio::time::timeout(WAIT, r.task).await.expect("run ends").unwrap();
        assert!(matches!(result, Err(ChannelError::NeedsLogin(_))), "{result:?}");
        assert!(matches!(
            inbound.connection_states().last(),
            Some(ConnectionState::NeedsLogin { .. })
        ));
    }
    assert_eq!(server.accepted_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_connection_is_detected_and_rebuilt_within_the_liveness_bound_with_no_message_lost()
 {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "before");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    server.set_fault(Fault::Blackhole);
    let stalled_at = Instant::now();
    server.incoming(alice.id, "during the stall"); // the push is lost
    let detected = inbound
        .wait_for_state(WAIT, |s| {
            matches!(s, ConnectionState::TransientDisconnect { reason } if reason.contains("stalled"))
        })
        .await;
    assert!(detected, "{:?}", inbound.connection_states());
    // ping interval 200 ms + deadline 300 ms, with slack for a loaded machine.
    assert!(stalled_at.elapsed() < Duration::from_secs(3), "{:?}", stalled_at.elapsed());

    server.set_fault(Fault::None);
    assert!(inbound.wait_for_messages(2, WAIT).await, "caught up: {:?}", inbound.messages());
    assert_eq!(inbound.messages()[1].text.as_deref(), Some("during the stall"));
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_stored_update_state() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "one");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    r.stop().await.unwrap();
    let stored = inbound.state(UPDATES_KEY).unwrap();

    server.incoming_silently(alice.id, "two");
    server.incoming_silently(alice.id, "three");
    let before = server.requests_of(GET_DIFFERENCE).len();
    let r = run(&inbound).await;
    assert!(inbound.wait_for_messages(3, WAIT).await, "{:?}", inbound.messages());
    r.stop().await.unwrap();

    let texts: Vec<_> = inbound.messages().iter().map(|m| m.text.clone().unwrap()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(inbound.duplicates(), 0, "nothing fetched twice");
    let diff = &server.requests_of(GET_DIFFERENCE)[before];
    let diff = diff.decode::<tl::functions::updates::GetDifference>().unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(i64::from(diff.pts), stored["pts"].as_i64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_does_not_advance_the_cursor_and_the_message_comes_again() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    inbound.fail_next_deliveries(1);
    server.incoming(alice.id, "kept");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    r.stop().await.unwrap();
    assert_eq!(inbound.messages()[0].text.as_deref(), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_honours_the_limit_newest_first_and_before() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", Some("alice"));
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(server.incoming(alice.id, &format!("m{i}")));
    }
    assert!(inbound.wait_for_messages(5, WAIT).await);

    let page = r
        .channel
        .fetch_history(&HistoryRequest {
            thread_key: Some("2001".into()),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let texts: Vec<_> = page.iter().map(|m| m.text.clone().unwrap()).collect();
    assert_eq!(texts, ["m4", "m3", "m2"]);
    assert_eq!(page[0].remote.display_name.as_deref(), Some("Alice"));
    let older = r
        .channel
        .fetch_history(&HistoryRequest {
            thread_key: Some("2001".into()),
            limit: 10,
            before: Some(page[2].provider_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let texts: Vec<_> = older.iter().map(|m| m.text.clone().unwrap()).collect();
    assert_eq!(texts, ["m1", "m0"]);
    let err = r.channel.fetch_history(&HistoryRequest::default()).await.unwrap_err();
    assert!(matches!(err, ChannelError::InvalidInput(_)));
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_before_anything_is_sent() {
    let server = LoopbackServer::start().await.unwrap();
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    let cases = [
        outgoing("not-a-chat", "k", "x"),
        PreparedSend { text: None, ..outgoing("2001", "k", "x") },
        outgoing("2001", "k", &"x".repeat(5000)),
    ];
    for msg in &cases {
        let err = r.channel.send(msg).await.unwrap_err();
        assert!(matches!(err, ChannelError::InvalidInput(_)), "{err:?}");
    }
    // A user the session has never seen (no access hash).
    let err = r.channel.send(&outgoing("5555", "k", "x")).await.unwrap_err();
    assert!(matches!(err, ChannelError::Permanent(_)), "{err:?}");
    assert!(server.requests_of(SEND).is_empty());
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_answered_random_id_duplicate_succeeds_with_the_original_message() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    server.answer_duplicate_sends_with_error(true);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "hello");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    // Stored by the server, answer lost; the retry is answered RANDOM_ID_DUPLICATE. grammers
    // retries once on a new connection; should that fail too on a loaded machine, the engine
    // would retry later with the same client key, as done here.
    server.reply_once(SEND, Reply::ProcessThenDrop);
    let message = outgoing("2001", "key-dup", "sent once");
    let mut attempts = 0;
    let receipt = loop {
        attempts += 1;
        match r.channel.send(&message).await {
            Ok(receipt) => break receipt,
            Err(e) if e.is_transient() && attempts < 3 => continue,
            Err(e) => panic!("a duplicate random_id means the message was sent: {e:?}"),
        }
    };
    let ids = random_ids(&server);
    assert!(ids.len() >= 2, "retried");
    assert!(ids.iter().all(|id| *id == ids[0]), "with the same random_id");
    assert_eq!(sent_by_owner(&server), 1, "sent once");
    let original = server.messages().into_iter().find(|m| m.out).unwrap();
    assert_eq!(receipt.provider_id, original.id.to_string());

    // The engine retrying again later gets the same receipt.
    let again = r.channel.send(&outgoing("2001", "key-dup", "sent once")).await.unwrap();
    assert_eq!(again.provider_id, receipt.provider_id);
    assert_eq!(sent_by_owner(&server), 1);

    assert!(inbound.wait_for_messages(2, WAIT).await);
    r.stop().await.unwrap();
    let stored: Vec<_> =
        inbound.messages().into_iter().filter(|m| m.provider_id == receipt.provider_id).collect();
    assert_eq!(stored.len(), 1, "the echo is stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_long_difference_is_reconciled_from_history_with_nothing_skipped_or_stored_twice() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let bob = server.add_user(2002, "Bob", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "a0");
    server.incoming(bob.id, "b0");
    assert!(inbound.wait_for_messages(2, WAIT).await);
    r.stop().await.unwrap();

    // While offline, more than Telegram will give as a difference.
    server.set_too_long_after(Some(2));
    for t in ["a1", "a2", "a3"] {
        server.incoming_silently(alice.id, t);
    }
    for t in ["b1", "b2"] {
        server.incoming_silently(bob.id, t);
    }
    let r = run(&inbound).await;
    assert!(inbound.wait_for_messages(7, WAIT).await, "reconciled: {:?}", inbound.messages());
    assert!(!server.requests_of(tl::functions::messages::GetHistory::CONSTRUCTOR_ID).is_empty());
    // The cursor moves past the gap once the chats are reconciled.
    let pts = server.pts();
    assert!(
        inbound
            .wait_until(WAIT, |s| {
                s.state(UPDATES_KEY)
                    .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                    .and_then(|v| v["pts"].as_i64())
                    == Some(i64::from(pts))
            })
            .await
    );
    server.set_too_long_after(None);
    server.incoming(alice.id, "a4");
    assert!(inbound.wait_for_messages(8, WAIT).await);
    r.stop().await.unwrap();

    let texts = |prefix: char| -> Vec<String> {
        inbound
            .messages()
            .iter()
            .filter_map(|m| m.text.clone())
            .filter(|t| t.starts_with(prefix))
            .collect()
    };
    assert_eq!(texts('a'), ["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(texts('b'), ["b0", "b1", "b2"]);
    assert_eq!(inbound.duplicates(), 0, "nothing delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_inside_a_difference_loses_none_of_its_messages() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "m0");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    r.stop().await.unwrap();

    for t in ["m1", "m2", "m3"] {
        server.incoming_silently(alice.id, t);
    }
    // The difference brings m1..m3 with one final state; m2's delivery fails.
    inbound.fail_deliveries_after(1, 1);
    let r = run(&inbound).await;
    assert!(inbound.wait_for_messages(4, WAIT).await, "{:?}", inbound.messages());
    r.stop().await.unwrap();
    let texts: Vec<_> = inbound.messages().iter().map(|m| m.text.clone().unwrap()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_replace_the_stored_text_live_and_when_caught_up_after_a_restart() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    let m = server.incoming(alice.id, "first draft");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    // Edited while the channel runs: pushed as updateEditMessage.
    server.edit(m.id, "second draft").unwrap();
    assert!(inbound.wait_until(WAIT, |s| !s.edits().is_empty()).await, "no edit arrived");
    assert_eq!(inbound.messages()[0].text.as_deref(), Some("second draft"));
    r.stop().await.unwrap();

    // Edited while it was stopped: found in the difference on restart.
    server.edit(m.id, "final text").unwrap();
    let r = run(&inbound).await;
    assert!(
        inbound.wait_until(WAIT, |s| s.edits().len() >= 2).await,
        "the offline edit was not caught up: {:?}",
        inbound.edits()
    );
    r.stop().await.unwrap();

    let messages = inbound.messages();
    assert_eq!(messages.len(), 1, "an edit is not a new message: {messages:?}");
    assert_eq!(messages[0].text.as_deref(), Some("final text"));
    let edits = inbound.edits();
    assert!(edits.iter().all(|e| e.provider_id == m.id.to_string()), "{edits:?}");
    assert!(edits.iter().all(|e| e.edited_at > messages[0].sent_at), "{edits:?}");
    assert_eq!(inbound.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_mark_stored_messages_live_and_when_caught_up_after_a_restart() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    server.add_chat(77, "Group");
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    let first = server.incoming(alice.id, "one");
    let second = server.group_message(77, alice.id, "two");
    let third = server.incoming(alice.id, "three");
    assert!(inbound.wait_for_messages(3, WAIT).await);

    // Deleted while the channel runs: pushed as updateDeleteMessages, which names bare ids
    // of the account's private chats and basic groups, and they are the provider ids.
    assert_eq!(server.delete(&[first.id, second.id]), [first.id, second.id]);
    assert!(inbound.wait_until(WAIT, |s| s.deleted().len() >= 2).await, "no deletion arrived");
    let want_live = [first.id.to_string(), second.id.to_string()];
    assert_eq!(inbound.deleted(), want_live);
    r.stop().await.unwrap();

    // Deleted while it was stopped: found in the difference on restart.
    assert_eq!(server.delete(&[third.id]), [third.id]);
    let r = run(&inbound).await;
    assert!(
        inbound.wait_until(WAIT, |s| s.deleted().len() >= 3).await,
        "the offline deletion was not caught up: {:?}",
        inbound.deleted()
    );
    // A message arriving after the deletion is delivered as usual: catch-up went on.
    server.incoming(alice.id, "four");
    assert!(inbound.wait_for_messages(4, WAIT).await);
    r.stop().await.unwrap();

    assert_eq!(inbound.deleted(), [&want_live[..], &[third.id.to_string()]].concat());
    assert_eq!(inbound.message_count(), 4, "a deletion removes no stored message");
    assert_eq!(inbound.duplicates(), 0);
}
