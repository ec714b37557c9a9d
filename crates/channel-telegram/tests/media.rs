//! Sending photos and documents through the real grammers client against the loopback server.
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::time::Duration;

use channel_core::testing::RecordingInbound;
use channel_core::{
    Attachment, AttachmentData, BlobStore, Channel, ChannelError, ConnectionState, IdentityInfo,
    PreparedSend, SendReceipt,
};
use channel_telegram::session::SESSION_KEY;
use channel_telegram::testing::loopback::{LoopbackServer, Reply};
use channel_telegram::{TelegramChannel, TelegramConfig};
use grammers_tl_types::{self as tl, Identifiable};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const SEND_MEDIA: u32 = tl::functions::messages::SendMedia::CONSTRUCTOR_ID;
const SAVE_PART: u32 = tl::functions::upload::SaveFilePart::CONSTRUCTOR_ID;

struct Setup {
    server: LoopbackServer,
    inbound: Arc<RecordingInbound>,
    blobs: Arc<BlobStore>,
    channel: Arc<TelegramChannel>,
    cancel: CancellationToken,
}

async fn setup(config: TelegramConfig, with_blobs: bool) -> Setup {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let inbound = Arc::new(RecordingInbound::new());
    inbound.set_state(SESSION_KEY, &server.stored_session().to_bytes());
    let blobs = Arc::new(BlobStore::in_memory());
    let mut channel = TelegramChannel::new(config);
    if with_blobs {
        channel = channel.with_blobs(Arc::clone(&blobs));
    }
    let channel = Arc::new(channel);
    let cancel = CancellationToken::new();
    tokio::spawn({
        let channel = Arc::clone(&channel);
        let inbound: Arc<dyn channel_core::Inbound> = inbound.clone();
        let cancel = cancel.clone();
        async move { channel.run(inbound, cancel).await }
    });
    assert!(inbound.wait_for_state(WAIT, |s| *s == ConnectionState::Connected).await);
    server.wait_for_requests(tl::functions::updates::GetState::CONSTRUCTOR_ID, 1, WAIT).await;
    // Alice writes first, so that her access hash is known.
    server.incoming(alice.id, "send me the report");
    assert!(inbound.wait_for_messages(1, WAIT).await);
    Setup { server, inbound, blobs, channel, cancel }
}

fn config() -> TelegramConfig {
    TelegramConfig::new(4242)
        .send_timeout(Duration::from_secs(3))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
}

async fn stored(blobs: &BlobStore, name: &str, mime: &str, data: Vec<u8>) -> Attachment {
    blobs
        .put_attachment(&AttachmentData {
            name: Some(name.to_owned()),
            mime_type: mime.to_owned(),
            data: data.into(),
        })
        .await
        .unwrap()
}

fn message(key: &str, caption: Option<&str>, attachments: Vec<Attachment>) -> PreparedSend {
    PreparedSend {
        message_id: channel_core::MessageId::new(),
        client_key: key.to_owned(),
        thread_key: "2001".to_owned(),
        remote: IdentityInfo::new("tg:2001"),
        text: caption.map(str::to_owned),
        html: None,
        subject: None,
        reply_to: None,
        references: Vec::new(),
        attachments,
    }
}

/// Sends as the engine would: a retryable error is tried again with the same message.
async fn send(channel: &TelegramChannel, m: &PreparedSend) -> SendReceipt {
    for _ in 0..3 {
        match channel.send(m).await {
            Ok(r) => return r,
            Err(e) if e.is_transient() => continue,
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("not sent in 3 attempts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_is_uploaded_in_parts_and_sent_once_under_its_random_id_even_when_retried() {
    let s = setup(config(), true).await;
    let data: Vec<u8> = (0..1_300_000u32).map(|i| (i % 251) as u8).collect();
    let pdf = stored(&s.blobs, "report.pdf", "application/pdf", data.clone()).await;

    // The server stores the message, then the connection dies before the answer.
    s.server.reply_once(SEND_MEDIA, Reply::ProcessThenDrop);
    let receipt = send(&s.channel, &message("doc-1", Some("the report"), vec![pdf])).await;

    let sent: Vec<_> = s.server.messages().into_iter().filter(|m| m.media.is_some()).collect();
    assert_eq!(sent.len(), 1, "sent once");
    let media = sent[0].media.clone().unwrap();
    assert_eq!(media.data, data, "the bytes arrive whole");
    assert_eq!(
        (media.photo, media.name.as_str(), media.mime_type.as_deref()),
        (false, "report.pdf", Some("application/pdf"))
    );
    assert_eq!(sent[0].text, "the report");
    assert_eq!(receipt.provider_id, sent[0].id.to_string());
    assert!(s.server.requests_of(SAVE_PART).len() >= 3, "1.3 MB in 512 KiB parts");
    let random_ids: Vec<i64> = s
        .server
        .requests_of(SEND_MEDIA)
        .iter()
        .filter_map(|r| r.decode::<tl::functions::messages::SendMedia>())
        .map(|r| r.random_id)
        .collect();
    assert!(random_ids.len() >= 2, "retried");
    assert!(random_ids.iter().all(|id| *id == channel_telegram::random_id("doc-1")));
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_png_goes_as_a_photo_without_a_caption() {
    let s = setup(config(), true).await;
    let png = stored(&s.blobs, "chart.png", "image/png", vec![7u8; 2048]).await;
    send(&s.channel, &message("photo-1", None, vec![png])).await;
    let sent: Vec<_> = s.server.messages().into_iter().filter_map(|m| m.media).collect();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].photo);
    assert_eq!(sent[0].data, vec![7u8; 2048]);
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_unreadable_or_several_attachments_are_refused_before_anything_is_sent() {
    let s = setup(config().max_upload_size(1000), true).await;
    let big = stored(&s.blobs, "big.bin", "application/octet-stream", vec![1u8; 2000]).await;
    let small = stored(&s.blobs, "a.txt", "text/plain", vec![2u8; 10]).await;
    let err = s.channel.send(&message("k1", None, vec![big])).await.unwrap_err();
    assert!(matches!(err, ChannelError::InvalidInput(_)), "oversized: {err:?}");
    let err =
        s.channel.send(&message("k2", None, vec![small.clone(), small.clone()])).await.unwrap_err();
    assert!(matches!(err, ChannelError::InvalidInput(_)), "two attachments: {err:?}");
    let missing = Attachment { blob_key: format!("sha256/{}", "0".repeat(64)), ..small.clone() };
    let err = s.channel.send(&message("k3", None, vec![missing])).await.unwrap_err();
    assert!(matches!(err, ChannelError::Permanent(_)), "missing blob: {err:?}");
    let err =
        s.channel.send(&message("k4", Some(&"x".repeat(1025)), vec![small])).await.unwrap_err();
    assert!(matches!(err, ChannelError::InvalidInput(_)), "long caption: {err:?}");
    assert!(s.server.requests_of(SAVE_PART).is_empty());
    assert!(s.server.requests_of(SEND_MEDIA).is_empty());
    s.cancel.cancel();

    let s = setup(config(), false).await;
    let small = stored(&s.blobs, "a.txt", "text/plain", vec![2u8; 10]).await;
    let err = s.channel.send(&message("k5", None, vec![small])).await.unwrap_err();
    assert!(matches!(err, ChannelError::Permanent(_)), "no blob store: {err:?}");
    s.cancel.cancel();
}

const GET_FILE: u32 = tl::functions::upload::GetFile::CONSTRUCTOR_ID;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 253) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_document_is_downloaded_with_its_name_type_and_bytes() {
    let s = setup(config(), true).await;
    let data = pattern(1_200_000);
    let sent =
        s.server.incoming_file(2001, "see attached", "notes.txt", "text/plain", data.clone());
    assert!(s.inbound.wait_for_messages(2, WAIT).await);
    let got = s.inbound.messages().pop().unwrap();
    assert_eq!(got.provider_id, sent.id.to_string());
    assert_eq!(got.text.as_deref(), Some("see attached"));
    assert_eq!(got.attachments.len(), 1);
    let a = &got.attachments[0];
    assert_eq!((a.name.as_deref(), a.mime_type.as_str()), (Some("notes.txt"), "text/plain"));
    assert_eq!(a.data.as_ref(), data.as_slice(), "the bytes arrive whole");
    assert!(s.server.requests_of(GET_FILE).len() >= 3, "in 512 KiB parts");
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_download_limit_is_delivered_without_its_bytes() {
    let s = setup(config().max_download_size(1000), true).await;
    s.server.incoming_file(2001, "too big", "big.bin", "application/octet-stream", pattern(2000));
    assert!(s.inbound.wait_for_messages(2, WAIT).await);
    let got = s.inbound.messages().pop().unwrap();
    assert_eq!(got.text.as_deref(), Some("too big"));
    assert!(got.attachments.is_empty());
    assert!(s.server.requests_of(GET_FILE).is_empty(), "nothing downloaded");
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_times_out_fails_the_delivery_and_the_message_comes_again_whole() {
    let s = setup(config().media_timeout(Duration::from_millis(300), Duration::ZERO), true).await;
    s.server.reply_once(GET_FILE, Reply::NoReply);
    let data = pattern(100_000);
    s.server.incoming_file(2001, "slow", "slow.bin", "application/octet-stream", data.clone());
    assert!(
        s.inbound
            .wait_for_state(WAIT, |st| matches!(
                st,
                ConnectionState::TransientDisconnect { reason } if reason.contains("download_media")
            ))
            .await,
        "{:?}",
        s.inbound.connection_states()
    );
    assert!(s.inbound.wait_for_messages(2, WAIT).await);
    let got = s.inbound.messages().pop().unwrap();
    assert_eq!(got.attachments[0].data.as_ref(), data.as_slice());
    assert_eq!(s.inbound.duplicates(), 0);
    s.cancel.cancel();
}
