//! Supergroups and broadcast channels through the real grammers client against the loopback
//! server: their own message ids and `pts`, `updates.getChannelDifference`, sends and history.
#![cfg(feature = "testing")]

mod support;
use support::*;

use std::sync::Arc;

use channel_core::testing::RecordingInbound;
use channel_core::{
    AttachmentData, BlobStore, Channel, ChannelError, Direction, HistoryRequest, InboundMessage,
};
use channel_telegram::TelegramChannel;
use channel_telegram::session::UPDATES_KEY;
use channel_telegram::testing::loopback::{LoopbackServer, TestChannel, TestUser};
use grammers_tl_types::{self as tl, Identifiable};

const SEND: u32 = tl::functions::messages::SendMessage::CONSTRUCTOR_ID;
const SEND_MEDIA: u32 = tl::functions::messages::SendMedia::CONSTRUCTOR_ID;
const GET_CHANNEL_DIFFERENCE: u32 = tl::functions::updates::GetChannelDifference::CONSTRUCTOR_ID;
const GET_HISTORY: u32 = tl::functions::messages::GetHistory::CONSTRUCTOR_ID;

/// A server with Bob, a supergroup "Team" (5001) and a public broadcast channel "News" (6001).
struct World {
    server: LoopbackServer,
    bob: TestUser,
    team: TestChannel,
    news: TestChannel,
}

async fn world() -> World {
    let server = LoopbackServer::start().await.unwrap();
    let bob = server.add_user(2002, "Bob", Some("bob"));
    let team = server.add_channel(5001, "Team", true);
    let news = server.add_public_channel(6001, "News", false, "news");
    World { server, bob, team, news }
}

fn thread(channel: &TestChannel) -> String {
    channel.dialog_id().to_string()
}

fn by_text(messages: &[InboundMessage], text: &str) -> InboundMessage {
    messages
        .iter()
        .find(|m| m.text.as_deref() == Some(text))
        .unwrap_or_else(|| panic!("no message {text:?} in {messages:?}"))
        .clone()
}

fn texts(inbound: &RecordingInbound) -> Vec<String> {
    inbound.messages().iter().filter_map(|m| m.text.clone()).collect()
}

/// The channel `pts` stored in the update state (the cursor) for `channel`.
fn stored_channel_pts(inbound: &RecordingInbound, channel: i64) -> Option<i64> {
    let raw = inbound.state(UPDATES_KEY)?;
    let state: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    state["channels"]
        .as_array()?
        .iter()
        .find_map(|c| (c[0].as_i64() == Some(channel)).then(|| c[1].as_i64()).flatten())
}

fn channel_differences(
    server: &LoopbackServer,
) -> Vec<tl::functions::updates::GetChannelDifference> {
    server
        .requests_of(GET_CHANNEL_DIFFERENCE)
        .iter()
        .filter_map(|r| r.decode::<tl::functions::updates::GetChannelDifference>())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supergroup_message_is_delivered_once_in_the_supergroups_thread_with_the_senders_identity()
 {
    let w = world().await;
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;

    let m = w.server.channel_message(w.team.id, Some(w.bob.id), "hello team");
    assert!(inbound.wait_for_messages(1, WAIT).await, "{:?}", inbound.messages());
    // The channel's cursor goes with the message.
    assert_eq!(stored_channel_pts(&inbound, w.team.id), Some(i64::from(m.pts)));
    r.stop_cleanly().await;

    let got = inbound.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(inbound.duplicates(), 0);
    let got = &got[0];
    assert_eq!(got.thread_key, "-1000000005001");
    assert_eq!(got.provider_id, format!("-1000000005001:{}", m.id));
    assert_eq!(got.direction, Direction::Inbound);
    assert_eq!(got.remote.address, "tg:2002");
    assert_eq!(got.remote.display_name.as_deref(), Some("Bob"));
    assert_eq!(got.remote.username.as_deref(), Some("bob"));
    assert_eq!(got.client_key, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supergroup_message_the_owner_sent_from_another_app_is_stored_as_outbound() {
    let w = world().await;
    let me = w.server.me();
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;

    w.server.channel_message(w.team.id, Some(w.bob.id), "question?");
    let mine = w.server.channel_message(w.team.id, Some(me.id), "answered from my phone");
    assert!(inbound.wait_for_messages(2, WAIT).await, "{:?}", inbound.messages());
    r.stop_cleanly().await;

    let got = by_text(&inbound.messages(), "answered from my phone");
    assert_eq!(got.direction, Direction::Outbound);
    assert_eq!(got.client_key, None, "not one of our sends");
    assert_eq!(got.thread_key, thread(&w.team));
    assert_eq!(got.provider_id, format!("{}:{}", thread(&w.team), mine.id));
    assert_eq!(got.remote.address, format!("tg:{}", thread(&w.team)));
    assert_eq!(got.remote.display_name.as_deref(), Some("Team"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_channel_post_is_delivered_with_the_channel_as_remote() {
    let w = world().await;
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;

    let post = w.server.channel_message(w.news.id, None, "breaking news");
    assert!(inbound.wait_for_messages(1, WAIT).await, "{:?}", inbound.messages());
    r.stop_cleanly().await;

    let got = inbound.messages().remove(0);
    assert_eq!(got.direction, Direction::Inbound);
    assert_eq!(got.thread_key, "-1000000006001");
    assert_eq!(got.provider_id, format!("-1000000006001:{}", post.id));
    assert_eq!(got.remote.address, "tg:-1000000006001");
    assert_eq!(got.remote.display_name.as_deref(), Some("News"));
    assert_eq!(got.remote.username.as_deref(), Some("news"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_into_a_broadcast_channel_the_owner_may_not_write_to_fails_permanently() {
    let w = world().await;
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    w.server.channel_message(w.news.id, None, "read only");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    let err = r.channel.send(&outgoing(&thread(&w.news), "k-news", "can I post?")).await;
    assert!(matches!(err, Err(ChannelError::Permanent(_))), "{err:?}");
    assert_eq!(w.server.requests_of(SEND).len(), 1, "asked once, not retried");
    assert!(w.server.messages().iter().all(|m| !m.out));
    r.stop_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_into_a_supergroup_goes_out_once_and_its_echo_is_not_a_second_message() {
    let w = world().await;
    let alice = w.server.add_user(2001, "Alice", None);
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    w.server.incoming(alice.id, "hi in private");
    w.server.channel_message(w.team.id, Some(w.bob.id), "who is on call?");
    assert!(inbound.wait_for_messages(2, WAIT).await, "{:?}", inbound.messages());

    let receipt = r.channel.send(&outgoing(&thread(&w.team), "key-team", "me")).await.unwrap();
    assert!(inbound.wait_for_messages(3, WAIT).await, "the echo: {:?}", inbound.messages());

    // Message ids are per chat: the owner's next private message, sent from another app,
    // has the id our send got in the supergroup. It is not taken for our echo.
    let sent = w.server.messages().into_iter().find(|m| m.random_id.is_some()).unwrap();
    let phone = w.server.outgoing_from_other_app(alice.id, "from my phone");
    assert_eq!(phone.id, sent.id, "the test needs colliding ids");
    assert!(inbound.wait_for_messages(4, WAIT).await, "{:?}", inbound.messages());
    r.stop_cleanly().await;

    assert_eq!(receipt.provider_id, format!("{}:{}", thread(&w.team), sent.id));
    assert_eq!(sent.peer, w.team.peer());
    assert!(sent.out);
    let random_ids: Vec<i64> = w
        .server
        .requests_of(SEND)
        .iter()
        .filter_map(|r| r.decode::<tl::functions::messages::SendMessage>())
        .map(|s| s.random_id)
        .collect();
    assert_eq!(random_ids, [channel_telegram::random_id("key-team")], "sent once");
    assert_eq!(w.server.messages().iter().filter(|m| m.random_id.is_some()).count(), 1);

    let got = inbound.messages();
    let echoes: Vec<_> = got.iter().filter(|m| m.provider_id == receipt.provider_id).collect();
    assert_eq!(echoes.len(), 1, "one message for the send: {got:?}");
    assert_eq!(inbound.duplicates(), 0);
    let echo = echoes[0];
    assert_eq!(echo.client_key.as_deref(), Some("key-team"), "the echo updates the pending row");
    assert_eq!((echo.direction, echo.thread_key.as_str()), (Direction::Outbound, "-1000000005001"));
    let phone = by_text(&got, "from my phone");
    assert_eq!(phone.provider_id, sent.id.to_string());
    assert_eq!(phone.client_key, None, "another chat's message with the same id is not ours");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_sent_into_a_supergroup_is_uploaded_and_stored_once_with_its_bytes() {
    let w = world().await;
    let inbound = account(&w.server);
    let blobs = Arc::new(BlobStore::in_memory());
    let channel = TelegramChannel::new(fast_config()).with_blobs(Arc::clone(&blobs));
    let r = connected_with(&w.server, &inbound, channel).await;
    w.server.channel_message(w.team.id, Some(w.bob.id), "send the notes");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    let notes = blobs
        .put_attachment(&AttachmentData {
            name: Some("notes.txt".to_owned()),
            mime_type: "text/plain".to_owned(),
            data: data.clone().into(),
        })
        .await
        .unwrap();
    let mut message = outgoing(&thread(&w.team), "doc-team", "the notes");
    message.attachments = vec![notes];
    let receipt = r.channel.send(&message).await.unwrap();
    assert!(inbound.wait_for_messages(2, WAIT).await, "the echo: {:?}", inbound.messages());
    r.stop_cleanly().await;

    let sent: Vec<_> = w.server.messages().into_iter().filter(|m| m.media.is_some()).collect();
    assert_eq!(sent.len(), 1, "sent once");
    assert_eq!(sent[0].peer, w.team.peer());
    assert_eq!(sent[0].media.as_ref().unwrap().data, data, "the bytes arrive whole");
    assert_eq!(receipt.provider_id, format!("{}:{}", thread(&w.team), sent[0].id));
    assert_eq!(w.server.requests_of(SEND_MEDIA).len(), 1);
    let echo = by_text(&inbound.messages(), "the notes");
    assert_eq!(echo.provider_id, receipt.provider_id);
    assert_eq!(echo.client_key.as_deref(), Some("doc-team"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_messages_posted_while_stopped_are_caught_up_once_after_a_restart_with_get_channel_difference()
 {
    let w = world().await;
    let alice = w.server.add_user(2001, "Alice", None);
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    let first = w.server.channel_message(w.team.id, Some(w.bob.id), "c0");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    r.stop_cleanly().await;
    assert_eq!(stored_channel_pts(&inbound, w.team.id), Some(i64::from(first.pts)));

    for t in ["c1", "c2", "c3"] {
        w.server.channel_message_silently(w.team.id, Some(w.bob.id), t);
    }
    w.server.incoming_silently(alice.id, "p1");
    assert!(channel_differences(&w.server).is_empty());

    let r = connected(&w.server, &inbound).await;
    assert!(inbound.wait_for_messages(5, WAIT).await, "{:?}", inbound.messages());
    // The cursor moves to the channel's pts with the last message it covers.
    let pts = w.server.channel_pts(w.team.id).map(i64::from);
    assert!(inbound.wait_until(WAIT, |s| stored_channel_pts(s, w.team.id) == pts).await);
    r.stop_cleanly().await;

    let team: Vec<String> = texts(&inbound).into_iter().filter(|t| t.starts_with('c')).collect();
    assert_eq!(team, ["c0", "c1", "c2", "c3"]);
    assert_eq!(by_text(&inbound.messages(), "c2").thread_key, thread(&w.team));
    assert_eq!(by_text(&inbound.messages(), "c2").remote.address, "tg:2002");
    assert!(texts(&inbound).contains(&"p1".to_owned()), "the account's difference too");
    assert_eq!(inbound.duplicates(), 0, "nothing fetched twice");

    // Asked from the stored channel pts, with the access hash Telegram handed out. (grammers
    // may ask twice: a read that finds nothing buffered starts the request, then is dropped.)
    let asked = channel_differences(&w.server);
    assert!(!asked.is_empty());
    let input = tl::enums::InputChannel::from(tl::types::InputChannel {
        channel_id: w.team.id,
        access_hash: w.team.access_hash,
    });
    assert!(asked.iter().all(|a| a.pts == first.pts && a.channel == input), "{asked:?}");

    // Another restart asks from the channel's pts, finds nothing new, stores nothing twice.
    let before = asked.len();
    let r = connected(&w.server, &inbound).await;
    assert!(w.server.wait_for_requests(GET_CHANNEL_DIFFERENCE, before + 1, WAIT).await);
    assert_eq!(
        channel_differences(&w.server)[before].pts,
        w.server.channel_pts(w.team.id).unwrap()
    );
    r.stop_cleanly().await;
    assert_eq!(inbound.message_count(), 5);
    assert_eq!(inbound.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_difference_larger_than_one_page_is_caught_up_in_order_in_pages() {
    let w = world().await;
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    w.server.channel_message(w.team.id, Some(w.bob.id), "m000");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    r.stop_cleanly().await;

    // grammers asks for 100 messages at once: 130 take two pages.
    for i in 1..=130 {
        w.server.channel_message_silently(w.team.id, Some(w.bob.id), &format!("m{i:03}"));
    }
    let r = connected(&w.server, &inbound).await;
    assert!(inbound.wait_for_messages(131, WAIT).await, "{}", inbound.message_count());
    let pts = w.server.channel_pts(w.team.id).map(i64::from);
    assert!(inbound.wait_until(WAIT, |s| stored_channel_pts(s, w.team.id) == pts).await);
    r.stop_cleanly().await;

    let expected: Vec<String> = (0..=130).map(|i| format!("m{i:03}")).collect();
    assert_eq!(texts(&inbound), expected);
    assert_eq!(inbound.duplicates(), 0);
    let asked = channel_differences(&w.server);
    assert!(asked.len() >= 2, "in pages: {asked:?}");
    assert!(asked[1].pts > asked[0].pts, "the second page starts where the first ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_a_channels_pts_while_running_is_filled_with_get_channel_difference() {
    let w = world().await;
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    w.server.channel_message(w.team.id, Some(w.bob.id), "one");
    assert!(inbound.wait_for_messages(1, WAIT).await);

    // "two" is never pushed: "three" arrives with a pts one too far ahead.
    w.server.channel_message_silently(w.team.id, Some(w.bob.id), "two");
    w.server.channel_message(w.team.id, Some(w.bob.id), "three");
    assert!(inbound.wait_for_messages(3, WAIT).await, "{:?}", inbound.messages());
    r.stop_cleanly().await;

    assert_eq!(texts(&inbound), ["one", "two", "three"]);
    assert_eq!(inbound.duplicates(), 0);
    assert!(!channel_differences(&w.server).is_empty());
    let pts = w.server.channel_pts(w.team.id).map(i64::from);
    assert_eq!(stored_channel_pts(&inbound, w.team.id), pts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_long_channel_difference_is_reconciled_from_the_channels_history() {
    let w = world().await;
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    w.server.channel_message(w.team.id, Some(w.bob.id), "c0");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    r.stop_cleanly().await;

    // While offline, more than Telegram gives as a channel difference.
    w.server.set_channel_too_long_after(Some(1));
    for t in ["c1", "c2", "c3"] {
        w.server.channel_message_silently(w.team.id, Some(w.bob.id), t);
    }
    let r = connected(&w.server, &inbound).await;
    assert!(inbound.wait_for_messages(4, WAIT).await, "reconciled: {:?}", inbound.messages());
    assert!(!w.server.requests_of(GET_HISTORY).is_empty());
    // The cursor moves past the gap once the channel is reconciled.
    let pts = w.server.channel_pts(w.team.id).map(i64::from);
    assert!(inbound.wait_until(WAIT, |s| stored_channel_pts(s, w.team.id) == pts).await);

    w.server.set_channel_too_long_after(None);
    w.server.channel_message(w.team.id, Some(w.bob.id), "c4");
    assert!(inbound.wait_for_messages(5, WAIT).await);
    r.stop_cleanly().await;

    assert_eq!(texts(&inbound), ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(inbound.duplicates(), 0, "nothing delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supergroup_history_honours_the_limit_newest_first_and_before() {
    let w = world().await;
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    for i in 0..5 {
        w.server.channel_message(w.team.id, Some(w.bob.id), &format!("m{i}"));
    }
    assert!(inbound.wait_for_messages(5, WAIT).await);

    let page = r
        .channel
        .fetch_history(&HistoryRequest {
            thread_key: Some(thread(&w.team)),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let page_texts: Vec<_> = page.iter().map(|m| m.text.clone().unwrap()).collect();
    assert_eq!(page_texts, ["m4", "m3", "m2"]);
    assert!(page.iter().all(|m| m.thread_key == thread(&w.team)));
    assert_eq!(page[0].remote.address, "tg:2002");
    assert_eq!(page[0].remote.display_name.as_deref(), Some("Bob"));
    assert_eq!(page[0].provider_id, inbound.messages()[4].provider_id, "the same ids as live");

    let older = r
        .channel
        .fetch_history(&HistoryRequest {
            thread_key: Some(thread(&w.team)),
            limit: 10,
            before: Some(page[2].provider_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let older_texts: Vec<_> = older.iter().map(|m| m.text.clone().unwrap()).collect();
    assert_eq!(older_texts, ["m1", "m0"]);
    r.stop_cleanly().await;

    // Asked of the channel with its access hash.
    let asked = w.server.requests_of(GET_HISTORY);
    let asked = asked[0].decode::<tl::functions::messages::GetHistory>().unwrap();
    assert_eq!(
        asked.peer,
        tl::types::InputPeerChannel { channel_id: w.team.id, access_hash: w.team.access_hash }
            .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_in_a_supergroup_names_the_channels_message_not_a_private_one_with_its_id() {
    let w = world().await;
    let alice = w.server.add_user(2001, "Alice", None);
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    let c1 = w.server.channel_message(w.team.id, Some(w.bob.id), "c1");
    // A private message with the same id as the supergroup message: ids are per box.
    let p = w.server.incoming(alice.id, "p1");
    assert!(inbound.wait_for_messages(2, WAIT).await, "{:?}", inbound.messages());
    assert_eq!(p.id, c1.id, "the test needs the clash of ids");

    // updateDeleteChannelMessages names the channel and its own message ids.
    assert_eq!(w.server.delete_in_channel(w.team.id, &[c1.id]), [c1.id]);
    assert!(inbound.wait_until(WAIT, |s| !s.deleted().is_empty()).await, "no deletion arrived");
    // The channel's cursor moves past the deletion, and the next message is delivered.
    let pts = w.server.channel_pts(w.team.id).map(i64::from);
    let c2 = w.server.channel_message(w.team.id, Some(w.bob.id), "c2");
    assert!(inbound.wait_for_messages(3, WAIT).await, "{:?}", inbound.messages());
    assert!(inbound.wait_until(WAIT, |s| stored_channel_pts(s, w.team.id) > pts).await);
    assert_eq!(stored_channel_pts(&inbound, w.team.id), Some(i64::from(c2.pts)));
    r.stop_cleanly().await;

    assert_eq!(
        inbound.deleted(),
        [format!("{}:{}", thread(&w.team), c1.id)],
        "the private message with the same id is not deleted"
    );
    assert_eq!(inbound.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_edits_and_deletions_made_while_stopped_are_applied_after_a_restart() {
    let w = world().await;
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    let c1 = w.server.channel_message(w.team.id, Some(w.bob.id), "c1");
    let c2 = w.server.channel_message(w.team.id, Some(w.bob.id), "c2 draft");
    assert!(inbound.wait_for_messages(2, WAIT).await, "{:?}", inbound.messages());
    // Live, a channel edit arrives as updateEditChannelMessage.
    w.server.edit_in_channel(w.team.id, c2.id, "c2 second draft").unwrap();
    assert!(inbound.wait_until(WAIT, |s| !s.edits().is_empty()).await, "no live edit");
    r.stop_cleanly().await;

    // While stopped: an edit, a deletion and a new message. grammers drops the first two
    // from the channel difference; the channel replays them itself.
    w.server.edit_in_channel(w.team.id, c2.id, "c2 final").unwrap();
    assert_eq!(w.server.delete_in_channel(w.team.id, &[c1.id]), [c1.id]);
    w.server.channel_message_silently(w.team.id, Some(w.bob.id), "c3");
    let r = connected(&w.server, &inbound).await;
    assert!(inbound.wait_for_messages(3, WAIT).await, "{:?}", inbound.messages());
    assert!(
        inbound.wait_until(WAIT, |s| !s.deleted().is_empty() && s.edits().len() >= 2).await,
        "edits {:?}, deletions {:?}",
        inbound.edits(),
        inbound.deleted()
    );
    let pts = w.server.channel_pts(w.team.id).map(i64::from);
    assert!(inbound.wait_until(WAIT, |s| stored_channel_pts(s, w.team.id) == pts).await);
    r.stop_cleanly().await;

    assert_eq!(inbound.deleted(), [format!("{}:{}", thread(&w.team), c1.id)]);
    assert_eq!(
        by_text(&inbound.messages(), "c2 final").provider_id,
        format!("{}:{}", thread(&w.team), c2.id)
    );
    assert_eq!(texts(&inbound), ["c1", "c2 final", "c3"], "an edit is not a new message");
    assert_eq!(inbound.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_joined_on_another_client_while_stopped_is_caught_up_from_the_announced_pts() {
    let w = world().await;
    let alice = w.server.add_user(2001, "Alice", None);
    let inbound = account(&w.server);
    let r = connected(&w.server, &inbound).await;
    w.server.incoming(alice.id, "p0");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    r.stop_cleanly().await;
    assert_eq!(stored_channel_pts(&inbound, w.news.id), None, "News is unknown so far");

    // While stopped: News gets a post, the owner joins it on their phone, two more posts
    // follow, and a private message moves the account's pts.
    w.server.channel_message_silently(w.news.id, None, "before joining");
    let start = w.server.join_channel_elsewhere(w.news.id).unwrap();
    w.server.channel_message_silently(w.news.id, None, "n1");
    w.server.channel_message_silently(w.news.id, None, "n2");
    w.server.incoming_silently(alice.id, "p1");

    let r = connected(&w.server, &inbound).await;
    assert!(inbound.wait_for_messages(4, WAIT).await, "{:?}", inbound.messages());
    let pts = w.server.channel_pts(w.news.id).map(i64::from);
    assert!(
        inbound.wait_until(WAIT, |s| stored_channel_pts(s, w.news.id) == pts).await,
        "the channel's cursor is stored with its messages"
    );
    r.stop_cleanly().await;

    let got = texts(&inbound);
    assert!(got.contains(&"n1".to_owned()) && got.contains(&"n2".to_owned()), "{got:?}");
    assert!(got.contains(&"p1".to_owned()), "{got:?}");
    assert!(!got.contains(&"before joining".to_owned()), "history is not a catch-up: {got:?}");
    assert_eq!(by_text(&inbound.messages(), "n2").thread_key, thread(&w.news));
    assert_eq!(inbound.duplicates(), 0);
    let asked = channel_differences(&w.server);
    assert!(asked.iter().any(|a| a.pts == start), "from the announced pts: {asked:?}");
}
