//! A crash (the channel's task dropped, nothing saved on the way out) never loses what a reply
//! needs, never turns a delivered reply into a second message, and an unknown peer is looked
//! up before a send gives up. In process, on a `RecordingInbound`; the process-level proof with
//! `kill -9` is in `tests/crash_process.rs`.
#![cfg(feature = "testing")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use channel_core::testing::RecordingInbound;
use channel_core::{Channel, ChannelError, Direction};
use channel_telegram::TelegramChannel;
use channel_telegram::session::{OUTBOX_KEY, PEERS_KEY, PEERS_NEW_KEY};
use channel_telegram::testing::loopback::{LoopbackServer, Reply, TestPeer};
use grammers_tl_types::{self as tl, Identifiable};
use support::*;

const SEND: u32 = tl::functions::messages::SendMessage::CONSTRUCTOR_ID;
const RESOLVE_USERNAME: u32 = tl::functions::contacts::ResolveUsername::CONSTRUCTOR_ID;
const GET_DIALOGS: u32 = tl::functions::messages::GetDialogs::CONSTRUCTOR_ID;

/// Kills the channel: its task is aborted, so nothing is saved on the way out (no clean
/// stop, no timer tick), like `kill -9`. Only what was written before survives.
async fn crash(r: Running) {
    r.task.abort();
    let _ = r.task.await;
}

/// A sink holding exactly the account state of `inbound` (what a restarted process reads).
fn restarted(inbound: &RecordingInbound) -> Arc<RecordingInbound> {
    let next = Arc::new(RecordingInbound::new());
    for key in [
        channel_telegram::session::SESSION_KEY,
        channel_telegram::session::UPDATES_KEY,
        PEERS_KEY,
        PEERS_NEW_KEY,
        OUTBOX_KEY,
    ] {
        if let Some(v) = inbound.state(key) {
            next.set_state(key, &v);
        }
    }
    next
}

#[tokio::test]
async fn a_peer_first_seen_in_a_message_is_stored_before_the_message_and_a_reply_needs_no_lookup() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let team = server.add_channel(5001, "Team", true);
    let inbound = account(&server);
    // The sync tick (which writes the peer snapshot) never comes in this test.
    let config = fast_config().sync_interval(Duration::from_secs(3600));
    let r = connected_with(&server, &inbound, TelegramChannel::new(config)).await;
    server.incoming(alice.id, "hello");
    server.channel_message(team.id, Some(alice.id), "hello team");
    assert!(inbound.wait_for_messages(2, WAIT).await);
    assert_eq!(inbound.state(PEERS_KEY), None, "no snapshot was written: the journal holds them");
    crash(r).await;

    let after = restarted(&inbound);
    let config = fast_config().sync_interval(Duration::from_secs(3600));
    let r = connected_with(&server, &after, TelegramChannel::new(config)).await;
    let lookups_before =
        server.requests_of(RESOLVE_USERNAME).len() + server.requests_of(GET_DIALOGS).len();
    r.channel.send(&outgoing(&alice.id.to_string(), "1", "hi Alice")).await.unwrap();
    r.channel.send(&outgoing(&team.dialog_id().to_string(), "2", "hi team")).await.unwrap();
    let lookups_after =
        server.requests_of(RESOLVE_USERNAME).len() + server.requests_of(GET_DIALOGS).len();
    assert_eq!(lookups_after, lookups_before, "both peers came from the stored state");
    let out: Vec<_> = server.messages().into_iter().filter(|m| m.out).collect();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].peer, TestPeer::User(alice.id));
    assert_eq!(out[1].peer, team.peer());
    r.stop_cleanly().await;
}

#[tokio::test]
async fn an_unknown_peer_is_looked_up_by_username_then_in_the_dialogs_before_the_send_gives_up() {
    let server = LoopbackServer::start().await.unwrap();
    let bob = server.add_user(2002, "Bob", Some("bob"));
    let carol = server.add_user(2003, "Carol", None);
    server.incoming(carol.id, "I wrote once, long ago");
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    // The cache knows neither: the state was lost (or never had them).
    let mut to_bob = outgoing(&bob.id.to_string(), "b", "hi Bob");
    to_bob.remote.username = Some("bob".to_owned());
    r.channel.send(&to_bob).await.expect("found by the identity's username");
    assert_eq!(server.requests_of(RESOLVE_USERNAME).len(), 1);

    // A look-up that fails for now is not the end of the message.
    server.reply_once(GET_DIALOGS, Reply::rpc_error(500, "INTERNAL"));
    let to_carol = outgoing(&carol.id.to_string(), "c", "hi Carol");
    let err = r.channel.send(&to_carol).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    r.channel.send(&to_carol).await.expect("found among the dialogs");

    let nobody = outgoing("2999", "n", "hi?");
    let err = r.channel.send(&nobody).await.unwrap_err();
    assert!(matches!(&err, ChannelError::Permanent(m) if m.contains("dialogs")), "{err:?}");
    let out: Vec<_> = server.messages().into_iter().filter(|m| m.out).collect();
    assert_eq!(out.len(), 2);
    r.stop_cleanly().await;
}

#[tokio::test]
async fn the_echo_of_a_send_cut_by_a_crash_is_matched_to_its_send_after_the_restart() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = account(&server);
    let r = connected(&server, &inbound).await;
    server.incoming(alice.id, "hello");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    let incoming_id = inbound.messages()[0].provider_id.clone();

    // Telegram accepts the reply; its answer never comes, and the process dies.
    server.reply_once(SEND, Reply::ProcessThenHold);
    let mut reply = outgoing(&alice.id.to_string(), "4242", "hi Alice");
    reply.reply_to = Some(incoming_id);
    let send = tokio::spawn({
        let channel = Arc::clone(&r.channel);
        let reply = reply.clone();
        async move { channel.send(&reply).await }
    });
    assert!(server.wait_for_requests(SEND, 1, WAIT).await);
    assert_eq!(server.messages().iter().filter(|m| m.out).count(), 1, "Telegram has it");
    send.abort();
    crash(r).await;

    // The restarted process gets the message through catch-up, without updateMessageID.
    let after = restarted(&inbound);
    let r = connected(&server, &after).await;
    assert!(after.wait_for_messages(1, WAIT).await);
    let echo = after.messages().into_iter().next().unwrap();
    assert_eq!(echo.direction, Direction::Outbound);
    assert_eq!(echo.client_key.as_deref(), Some("4242"), "known as our send, not another app's");
    // Its entry is gone once the echo is stored; a second copy would not be taken for it.
    assert!(
        after.wait_until(WAIT, |s| s.state(OUTBOX_KEY).is_some_and(|v| v == b"[]".to_vec())).await
    );
    server.outgoing_from_other_app(alice.id, "hi Alice");
    assert!(after.wait_for_messages(2, WAIT).await);
    assert_eq!(after.messages()[1].client_key, None, "the same text from another app is not ours");
    r.stop_cleanly().await;
}
