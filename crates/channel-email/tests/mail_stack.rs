//! The email channel against a real Dovecot and a real SMTP server on loopback.
//!
//! Start the servers with `scripts/test` (or let the support start them: it needs
//! `dovecot-imapd dovecot-lmtpd opensmtpd` installed).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use channel_core::{
    Attachment, Channel, ChannelError, ConnectionState, Direction, HistoryRequest, IdentityInfo,
    MessageId, PreparedSend,
};
use channel_email::{AttachmentSource, EmailChannel, EmailConfig, FolderCursor};
use support::{PrivateDovecot, RecordingInbound, User, imap_append, raw_mail, stack};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<Result<(), ChannelError>>,
}

impl Running {
    async fn stop(self) -> Result<(), ChannelError> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the channel stops within 10 s of cancellation")
            .expect("the channel task does not panic")
    }
}

fn start(channel: &Arc<EmailChannel>, sink: &Arc<RecordingInbound>) -> Running {
    let cancel = CancellationToken::new();
    let (c, s, k) = (channel.clone(), sink.clone(), cancel.clone());
    let task = tokio::spawn(async move { c.run(s, k).await });
    Running { cancel, task }
}

async fn wait_connected(sink: &RecordingInbound) {
    sink.expect_within("connected", WAIT, |s| {
        s.connection_states().contains(&ConnectionState::Connected)
    })
    .await;
}

fn outgoing(to: &User, client_key: &str, text: &str) -> PreparedSend {
    PreparedSend {
        message_id: MessageId::new(),
        client_key: client_key.to_owned(),
        thread_key: client_key.to_owned(),
        remote: IdentityInfo::new(&to.address),
        text: Some(text.to_owned()),
        html: None,
        subject: None,
        reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
    }
}

fn key(tag: &str) -> String {
    format!("<{tag}-{}@example.org>", rand::random::<u64>())
}

fn channel(config: EmailConfig) -> Arc<EmailChannel> {
    Arc::new(EmailChannel::new(config).expect("valid config"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_submitted_over_smtp_arrives_through_idle_in_well_under_a_second() {
    let st = stack();
    let (alice, bob) = (st.user("alice"), st.user("bob"));
    let bob_sink = Arc::new(RecordingInbound::new());
    let bob_channel = channel(st.config(&bob));
    let running = start(&bob_channel, &bob_sink);
    wait_connected(&bob_sink).await;
    // Give the loop the moment to enter IDLE after its first catch-up.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let alice_channel = channel(st.config(&alice).watch_sent(false));
    let id = key("idle");
    let sent_at = tokio::time::Instant::now();
    let receipt = alice_channel.send(&outgoing(&bob, &id, "pushed by IDLE")).await.expect("sent");
    assert_eq!(receipt.provider_id, id);
    bob_sink
        .expect_within("the message", Duration::from_secs(5), |s| s.stored(&id).is_some())
        .await;
    let latency = sent_at.elapsed();
    assert!(latency < Duration::from_secs(2), "IDLE push took {latency:?}");

    let m = bob_sink.stored(&id).unwrap().message;
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.remote.address, alice.address.to_lowercase());
    assert_eq!(m.thread_key, id);
    assert_eq!(m.text.as_deref().map(str::trim), Some("pushed by IDLE"));
    assert!(m.cursor.is_some(), "the last message of a batch carries the cursor");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_which_instance_and_process_hold_each_connection() {
    let st = stack();
    let carol = st.user("carol-id");
    let sink = Arc::new(RecordingInbound::new());
    let instance = format!("worker-{}", key("id").trim_matches(['<', '>']).replace('@', "-"));
    let running = start(&channel(st.config(&carol).client_instance(&instance)), &sink);
    wait_connected(&sink).await;
    running.stop().await.unwrap();
    // Dovecot (imap_id_log = *) logs the ID before the login, on the login's session: every
    // login of carol's from the channel's start on names this instance and this process (the
    // test's own check that carol exists logged in before, without an ID). A connection
    // stopped between its ID and its login leaves an ID without a login; Dovecot's log
    // process writes a moment after.
    let login = format!("Login: user=<{}>", carol.address);
    let named = format!("x-pid={}, x-instance={instance}:", std::process::id());
    let session_of = |line: &str| {
        line.split("session=<").nth(1).and_then(|s| s.split('>').next()).map(str::to_owned)
    };
    let mut logins: Vec<String> = Vec::new();
    let mut log = String::new();
    for _ in 0..50 {
        log = std::fs::read_to_string(st.dir.join("dovecot.log")).expect("Dovecot's log");
        let lines: Vec<&str> = log.lines().collect();
        let first_id = lines.iter().position(|l| l.contains("ID sent:") && l.contains(&named));
        logins = first_id
            .map(|i| {
                lines[i..]
                    .iter()
                    .filter(|l| l.contains(&login))
                    .filter_map(|l| session_of(l))
                    .collect()
            })
            .unwrap_or_default();
        if !logins.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!logins.is_empty(), "no login of {} named {instance} in Dovecot's log", carol.address);
    for session in &logins {
        assert!(
            log.lines().any(|l| l.contains("ID sent:")
                && l.contains(&named)
                && l.contains(&format!("session=<{session}>"))),
            "the login {session} of {} is named by an ID with this process and {instance}",
            carol.address,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idle_in_dovecot_the_channel_polls() {
    let dovecot = PrivateDovecot::start("imap_capability = IMAP4rev1 SASL-IR LITERAL+ ID ENABLE");
    let bob = dovecot.user("bob");
    let sink = Arc::new(RecordingInbound::new());
    let ch = channel(
        support::account_config(&bob, dovecot.imap_port, stack().smtp_port).watch_sent(false),
    );
    let running = start(&ch, &sink);
    wait_connected(&sink).await;
    let id = key("poll");
    imap_append(
        dovecot.imap_port,
        &bob,
        "INBOX",
        &raw_mail("x@example.org", &bob.address, &id, "s", "polled"),
    )
    .await;
    // Poll interval is 300 ms in the tests.
    sink.expect_within("the polled message", Duration::from_secs(5), |s| s.stored(&id).is_some())
        .await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_dovecot_restart_the_channel_reconnects_and_loses_nothing() {
    let dovecot = PrivateDovecot::start("");
    let bob = dovecot.user("bob");
    let sink = Arc::new(RecordingInbound::new());
    let ch = channel(support::account_config(&bob, dovecot.imap_port, stack().smtp_port));
    let running = start(&ch, &sink);
    wait_connected(&sink).await;
    let first = key("before");
    imap_append(
        dovecot.imap_port,
        &bob,
        "INBOX",
        &raw_mail("x@example.org", &bob.address, &first, "s", "1"),
    )
    .await;
    sink.expect_messages(1, WAIT).await;

    dovecot.stop();
    sink.expect_within("a transient disconnect", WAIT, |s| {
        s.connection_states()
            .iter()
            .any(|c| matches!(c, ConnectionState::TransientDisconnect { .. }))
    })
    .await;
    dovecot.start_again();
    let second = key("after");
    imap_append(
        dovecot.imap_port,
        &bob,
        "INBOX",
        &raw_mail("x@example.org", &bob.address, &second, "s", "2"),
    )
    .await;
    sink.expect_within("the message after the restart", WAIT, |s| s.stored(&second).is_some())
        .await;
    assert_eq!(sink.message_count(), 2);
    assert_eq!(sink.duplicates(), 0, "nothing delivered twice");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uidvalidity_change_rescans_by_message_id_and_fetches_only_what_is_unknown() {
    let dovecot = PrivateDovecot::start("");
    let bob = dovecot.user("bob");
    for i in 0..3 {
        let raw =
            raw_mail("x@example.org", &bob.address, &format!("<uv{i}@example.org>"), "s", "b");
        imap_append(dovecot.imap_port, &bob, "INBOX", &raw).await;
    }
    let sink = Arc::new(RecordingInbound::new());
    let ch = channel(
        support::account_config(&bob, dovecot.imap_port, stack().smtp_port).watch_sent(false),
    );
    let running = start(&ch, &sink);
    sink.expect_messages(3, WAIT).await;
    running.stop().await.unwrap();

    let out = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(dovecot.conf())
        .args(["mailbox", "update", "--uid-validity", "12345", "-u", &bob.address, "INBOX"])
        .output()
        .expect("doveadm");
    assert!(out.status.success(), "doveadm: {}", String::from_utf8_lossy(&out.stderr));
    let raw = raw_mail("x@example.org", &bob.address, "<uv-new@example.org>", "s", "b");
    imap_append(dovecot.imap_port, &bob, "INBOX", &raw).await;

    let running = start(&ch, &sink);
    sink.expect_within("the new message", WAIT, |s| s.stored("<uv-new@example.org>").is_some())
        .await;
    running.stop().await.unwrap();
    assert_eq!(sink.message_count(), 4, "every message stored once");
    assert_eq!(sink.duplicates(), 0, "the known messages were not fetched and delivered again");
    assert_eq!(sink.deliveries(), 4, "only the unknown message was delivered after the change");
    let cursor = FolderCursor::decode(&sink.state(&FolderCursor::key("INBOX")).unwrap()).unwrap();
    assert_eq!(cursor.uid_validity, 12345);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_stopped_halfway_through_a_mailbox_resumes_from_its_cursor() {
    let st = stack();
    let bob = st.user("bob");
    for i in 0..40 {
        let raw = raw_mail(
            "x@example.org",
            &bob.address,
            &format!("<half{i}-{}@example.org>", bob.address),
            "s",
            "b",
        );
        imap_append(st.imap_port, &bob, "INBOX", &raw).await;
    }
    let sink = Arc::new(RecordingInbound::new());
    let ch = channel(st.config(&bob).batch_size(5).watch_sent(false));
    let running = start(&ch, &sink);
    sink.expect_messages(10, WAIT).await;
    running.stop().await.unwrap();
    let at_stop = sink.message_count();
    let cursor = FolderCursor::decode(&sink.state(&FolderCursor::key("INBOX")).unwrap()).unwrap();
    assert!(at_stop < 40 || cursor.uid_next == 41, "stopped halfway ({at_stop} of 40)");
    assert_eq!(cursor.uid_next as usize, at_stop + 1, "the cursor covers exactly what was stored");

    let running = start(&ch, &sink);
    sink.expect_messages(40, WAIT).await;
    running.stop().await.unwrap();
    assert_eq!(sink.message_count(), 40);
    assert_eq!(sink.duplicates(), 0, "resumed from the cursor, nothing fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sent_folder_is_captured_once_and_our_own_sends_carry_their_key() {
    let st = stack();
    let (alice, carol) = (st.user("alice"), st.user("carol"));
    let sink = Arc::new(RecordingInbound::new());
    let ch = channel(st.config(&alice).append_sent(true));
    let running = start(&ch, &sink);
    wait_connected(&sink).await;

    // Mail the owner sent from another client, filed in Sent by that client.
    let other = key("other-client");
    imap_append(
        st.imap_port,
        &alice,
        "Sent",
        &raw_mail(&alice.address, &carol.address, &other, "s", "from my phone"),
    )
    .await;
    sink.expect_within("the other client's mail", WAIT, |s| s.stored(&other).is_some()).await;
    let m = sink.stored(&other).unwrap().message;
    assert_eq!(m.direction, Direction::Outbound);
    assert_eq!(m.remote.address, carol.address.to_lowercase());
    assert_eq!(m.client_key.as_deref(), Some(other.as_str()));

    // Our own send, appended to Sent: found there with its client key (the engine matches it).
    let ours = key("ours");
    ch.send(&outgoing(&carol, &ours, "from the service")).await.expect("sent");
    sink.expect_within("our own copy", WAIT, |s| s.stored(&ours).is_some()).await;
    assert_eq!(sink.stored(&ours).unwrap().message.client_key.as_deref(), Some(ours.as_str()));
    // Give a late second delivery the chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.message_count(), 2);
    assert_eq!(sink.duplicates(), 0);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_thread_between_two_accounts_lands_in_one_conversation_on_each_side() {
    let st = stack();
    let (alice, bob) = (st.user("alice"), st.user("bob"));
    let (a_sink, b_sink) = (Arc::new(RecordingInbound::new()), Arc::new(RecordingInbound::new()));
    let a = channel(st.config(&alice).append_sent(true));
    let b = channel(st.config(&bob).append_sent(true));
    let (ra, rb) = (start(&a, &a_sink), start(&b, &b_sink));
    wait_connected(&a_sink).await;
    wait_connected(&b_sink).await;

    let m1 = key("m1");
    a.send(&outgoing(&bob, &m1, "hello bob")).await.unwrap();
    b_sink.expect_within("m1", WAIT, |s| s.stored(&m1).is_some()).await;

    let m2 = key("m2");
    let mut reply = outgoing(&alice, &m2, "hello alice");
    // As the engine sends it: in the conversation's thread, keyed by its root.
    reply.thread_key = m1.clone();
    reply.reply_to = Some(m1.clone());
    reply.references = vec![m1.clone()];
    b.send(&reply).await.unwrap();
    a_sink.expect_within("m2", WAIT, |s| s.stored(&m2).is_some()).await;

    let m3 = key("m3");
    let mut again = outgoing(&bob, &m3, "and again");
    again.thread_key = m1.clone();
    again.reply_to = Some(m2.clone());
    again.references = vec![m1.clone(), m2.clone()];
    a.send(&again).await.unwrap();
    b_sink.expect_within("m3", WAIT, |s| s.stored(&m3).is_some()).await;
    a_sink.expect_within("all three on alice's side", WAIT, |s| s.message_count() >= 3).await;
    b_sink.expect_within("all three on bob's side", WAIT, |s| s.message_count() >= 3).await;

    for (side, sink) in [("alice", &a_sink), ("bob", &b_sink)] {
        let stored: Vec<_> = [&m1, &m2, &m3].iter().map(|id| sink.stored(id).expect(id)).collect();
        assert!(
            stored.iter().all(|s| s.conversation == stored[0].conversation),
            "{side}: one conversation for the thread"
        );
        assert!(
            stored.iter().all(|s| s.message.thread_key == m1),
            "{side}: thread key is the root"
        );
    }
    assert_eq!(b_sink.stored(&m3).unwrap().message.references, vec![m1.clone(), m2.clone()]);
    ra.stop().await.unwrap();
    rb.stop().await.unwrap();

    // The replies answer with the thread's subject, as a mail client would.
    assert_eq!(subject_in_maildir(&st.maildir(&bob), &m1).as_deref(), Some("hello bob"));
    assert_eq!(subject_in_maildir(&st.maildir(&alice), &m2).as_deref(), Some("Re: hello bob"));
    assert_eq!(subject_in_maildir(&st.maildir(&bob), &m3).as_deref(), Some("Re: hello bob"));
}

/// The Subject of the message with `message_id` delivered into `maildir` (INBOX).
fn subject_in_maildir(maildir: &std::path::Path, message_id: &str) -> Option<String> {
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else { continue };
        for entry in entries.flatten() {
            let raw = std::fs::read(entry.path()).ok()?;
            let parsed = mail_parser::MessageParser::default().parse_headers(&raw)?;
            if parsed.message_id().map(|id| format!("<{id}>")).as_deref() == Some(message_id) {
                return parsed.subject().map(str::to_owned);
            }
        }
    }
    None
}

struct Blobs(HashMap<String, Bytes>);

#[async_trait]
impl AttachmentSource for Blobs {
    async fn read(&self, blob_key: &str) -> Result<Bytes, ChannelError> {
        self.0.get(blob_key).cloned().ok_or_else(|| ChannelError::permanent("no such blob"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_round_trip_byte_for_byte() {
    let st = stack();
    let (alice, bob) = (st.user("alice"), st.user("bob"));
    let binary: Vec<u8> =
        (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let blobs = Blobs(HashMap::from([("b1".to_owned(), Bytes::from(binary.clone()))]));
    let a = Arc::new(
        EmailChannel::new(st.config(&alice).watch_sent(false))
            .unwrap()
            .with_attachments(Arc::new(blobs)),
    );
    let b_sink = Arc::new(RecordingInbound::new());
    let b = channel(st.config(&bob).watch_sent(false));
    let rb = start(&b, &b_sink);

    let id = key("att");
    let mut msg = outgoing(&bob, &id, "see attached");
    msg.attachments = vec![Attachment {
        name: Some("data.bin".to_owned()),
        mime_type: "application/octet-stream".to_owned(),
        size: binary.len() as u64,
        sha256: String::new(),
        blob_key: "b1".to_owned(),
    }];
    a.send(&msg).await.unwrap();
    b_sink.expect_within("the attachment", WAIT, |s| s.stored(&id).is_some()).await;
    let m = b_sink.stored(&id).unwrap().message;
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(m.attachments[0].name.as_deref(), Some("data.bin"));
    assert_eq!(m.attachments[0].mime_type, "application/octet-stream");
    assert!(m.attachments[0].data[..] == binary[..], "bytes differ");
    assert_eq!(m.text.as_deref().map(str::trim), Some("see attached"));
    rb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_is_sent() {
    let st = stack();
    let (alice, bob) = (st.user("alice"), st.user("bob"));
    let a = channel(st.config(&alice).watch_sent(false));
    let injected = key("crlf");
    let e = a
        .send_with_subject(&outgoing(&bob, &injected, "x"), "hi\r\nBcc: victim@example.org")
        .await
        .unwrap_err();
    assert!(matches!(e, ChannelError::InvalidInput(_)), "{e:?}");
    let mut bad_to = outgoing(&bob, &key("bad"), "x");
    bad_to.remote = IdentityInfo::new("bob@example.org\r\nRCPT TO:<victim@example.org>");
    assert!(matches!(a.send(&bad_to).await.unwrap_err(), ChannelError::InvalidInput(_)));
    bad_to.remote = IdentityInfo::new("not an address");
    assert!(matches!(a.send(&bad_to).await.unwrap_err(), ChannelError::InvalidInput(_)));

    // A good message afterwards is the only one that arrives.
    let good = key("good");
    a.send(&outgoing(&bob, &good, "fine")).await.unwrap();
    let sink = Arc::new(RecordingInbound::new());
    let b = channel(st.config(&bob).watch_sent(false));
    let rb = start(&b, &sink);
    sink.expect_within("the good message", WAIT, |s| s.stored(&good).is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.message_count(), 1);
    rb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mime_is_stored_raw_with_a_flag_and_does_not_block_the_next() {
    let st = stack();
    let bob = st.user("bob");
    let garbage = b"Subject: no sender, broken MIME\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n\r\n\xff\xfe\xfd\r\n--zz".to_vec();
    imap_append(st.imap_port, &bob, "INBOX", &garbage).await;
    let next = key("next");
    imap_append(
        st.imap_port,
        &bob,
        "INBOX",
        &raw_mail("x@example.org", &bob.address, &next, "s", "ok"),
    )
    .await;
    let sink = Arc::new(RecordingInbound::new());
    let b = channel(st.config(&bob).watch_sent(false));
    let rb = start(&b, &sink);
    sink.expect_messages(2, WAIT).await;
    rb.stop().await.unwrap();
    let msgs = sink.messages();
    let bad = &msgs[0];
    assert!(bad.parse_error.is_some(), "flagged");
    assert_eq!(bad.attachments[0].mime_type, "message/rfc822");
    assert_eq!(&bad.attachments[0].data[..], &garbage[..], "kept raw, byte for byte");
    assert!(sink.stored(&next).unwrap().message.parse_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_stop_the_channel_with_needs_login() {
    let st = stack();
    let mut bob = st.user("bob");
    bob.password = "wrong".to_owned();
    let sink = Arc::new(RecordingInbound::new());
    let b = channel(st.config(&bob));
    let r = tokio::time::timeout(WAIT, b.run(sink.clone(), CancellationToken::new()))
        .await
        .expect("gives up");
    assert!(matches!(r, Err(ChannelError::NeedsLogin(_))), "{r:?}");
    assert!(
        sink.connection_states().iter().any(|s| matches!(s, ConnectionState::NeedsLogin { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_fetched_again_not_skipped() {
    let st = stack();
    let bob = st.user("bob");
    let id = key("retry");
    imap_append(
        st.imap_port,
        &bob,
        "INBOX",
        &raw_mail("x@example.org", &bob.address, &id, "s", "b"),
    )
    .await;
    let sink = Arc::new(RecordingInbound::new());
    sink.fail_next_deliveries(2);
    let b = channel(st.config(&bob).watch_sent(false));
    let rb = start(&b, &sink);
    sink.expect_within("the message after two failed deliveries", WAIT, |s| {
        s.stored(&id).is_some()
    })
    .await;
    rb.stop().await.unwrap();
    assert_eq!(sink.message_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_returns_the_newest_messages_of_a_thread() {
    let st = stack();
    let bob = st.user("bob");
    let root = key("root");
    imap_append(
        st.imap_port,
        &bob,
        "INBOX",
        &raw_mail("x@example.org", &bob.address, &root, "s", "root"),
    )
    .await;
    for i in 0..5 {
        let raw = format!(
            "From: x@example.org\r\nTo: {}\r\nSubject: Re: s\r\nMessage-ID: <h{i}-{root_inner}>\r\nReferences: {root}\r\nDate: Tue, 1 Jul 2025 10:0{i}:00 +0000\r\n\r\nreply {i}\r\n",
            bob.address,
            root_inner = root.trim_matches(['<', '>']),
        );
        imap_append(st.imap_port, &bob, "INBOX", raw.as_bytes()).await;
    }
    imap_append(
        st.imap_port,
        &bob,
        "INBOX",
        &raw_mail("y@example.org", &bob.address, &key("unrelated"), "s", "x"),
    )
    .await;
    let b = channel(st.config(&bob));
    let page = b
        .fetch_history(&HistoryRequest {
            thread_key: Some(root.clone()),
            limit: 3,
            ..HistoryRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    assert!(page.iter().all(|m| m.thread_key == root));
    assert!(page.iter().all(|m| m.cursor.is_none()), "history moves no cursor");
    let all = b.fetch_history(&HistoryRequest::default()).await.unwrap();
    assert_eq!(all.len(), 7);
    let bad = HistoryRequest { thread_key: Some("<a\r\nb>".into()), ..HistoryRequest::default() };
    assert!(matches!(b.fetch_history(&bad).await.unwrap_err(), ChannelError::InvalidInput(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_200_network_faults_nothing_is_lost_and_nothing_is_stored_twice() {
    use support::fault_proxy::FaultProxy;
    let st = stack();
    let bob = st.user("bob");
    let total = 150;
    for i in 0..100 {
        let raw = raw_mail(
            "x@example.org",
            &bob.address,
            &format!("<f{i}-{}@example.org>", bob.address),
            "s",
            "b",
        );
        imap_append(st.imap_port, &bob, "INBOX", &raw).await;
    }
    let proxy = FaultProxy::start(st.imap_port, 200).await;
    let mut timeouts = support::test_timeouts();
    // Blackholes are found by the stream's read limit.
    timeouts.read = Duration::from_millis(700);
    // A blackholed IDLE is found by the inactivity limit.
    timeouts.idle_inactivity = Duration::from_millis(1500);
    timeouts.connect = Duration::from_secs(2);
    let config = support::account_config(&bob, proxy.port, st.smtp_port)
        .timeouts(timeouts)
        .backoff(channel_core::Backoff::new(Duration::from_millis(5), Duration::from_millis(40)))
        .batch_size(7)
        .watch_sent(false);
    let sink = Arc::new(RecordingInbound::new());
    let ch = channel(config);
    let running = start(&ch, &sink);
    // More mail arrives while the faults go on.
    for i in 100..total {
        let raw = raw_mail(
            "x@example.org",
            &bob.address,
            &format!("<f{i}-{}@example.org>", bob.address),
            "s",
            "b",
        );
        imap_append(st.imap_port, &bob, "INBOX", &raw).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    while proxy.counts.total() < 200 {
        assert!(tokio::time::Instant::now() < deadline, "only {}", proxy.counts.summary());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sink.expect_messages(total, Duration::from_secs(60)).await;
    running.stop().await.unwrap();
    eprintln!("{}", proxy.counts.summary());
    assert!(proxy.counts.total() >= 200, "{}", proxy.counts.summary());
    assert_eq!(sink.message_count(), total, "nothing lost");
    assert_eq!(sink.duplicates(), 0, "nothing delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_without_thread_headers_joins_the_thread_of_its_subject_and_sender() {
    let st = stack();
    let bob = st.user("bob");
    let tag = rand::random::<u32>();
    let mail = |from: &str, id: &str, subject: &str, date: &str| {
        format!(
            "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: {id}\r\nDate: {date}\r\n\r\nbody\r\n",
            bob.address
        )
        .into_bytes()
    };
    let (first, reply, stranger, months_later) =
        (key("fb-first"), key("fb-reply"), key("fb-stranger"), key("fb-later"));
    let subject = format!("Quote {tag}");
    let cases = [
        mail("carol@example.net", &first, &subject, "Tue, 1 Jul 2025 10:00:00 +0000"),
        // A client that drops References: only the subject and the sender tie it to the thread.
        mail(
            "Carol <CAROL@example.net>",
            &reply,
            &format!("AW: RE:  quote   {tag}"),
            "Tue, 1 Jul 2025 12:00:00 +0000",
        ),
        mail(
            "dave@example.net",
            &stranger,
            &format!("Re: Quote {tag}"),
            "Tue, 1 Jul 2025 12:30:00 +0000",
        ),
        mail(
            "carol@example.net",
            &months_later,
            &format!("Re: Quote {tag}"),
            "Mon, 1 Sep 2025 10:00:00 +0000",
        ),
    ];
    for raw in &cases {
        imap_append(st.imap_port, &bob, "INBOX", raw).await;
    }
    let sink = Arc::new(RecordingInbound::new());
    let ch = channel(st.config(&bob).watch_sent(false));
    let running = start(&ch, &sink);
    sink.expect_messages(4, WAIT).await;
    running.stop().await.unwrap();
    let stored = |id: &str| sink.stored(id).expect(id);
    assert_eq!(
        stored(&reply).message.thread_key,
        first,
        "same subject and sender within the window"
    );
    assert_eq!(stored(&reply).conversation, stored(&first).conversation);
    assert_eq!(
        stored(&stranger).message.thread_key,
        stranger,
        "another sender starts its own thread"
    );
    assert_eq!(stored(&months_later).message.thread_key, months_later, "outside the 7-day window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_without_thread_headers_finds_its_thread_after_a_restart() {
    let st = stack();
    let bob = st.user("bob");
    let tag = rand::random::<u32>();
    let mail = |id: &str, subject: &str, date: &str| {
        format!(
            "From: Carol <carol@example.net>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: {id}\r\nDate: {date}\r\n\r\nbody\r\n",
            bob.address
        )
        .into_bytes()
    };
    let (first, reply) = (key("rs-first"), key("rs-reply"));
    // Dates near now, as real mail has them: the refill reads what arrived within the window.
    let now = std::time::SystemTime::now();
    let rfc2822 = |t: std::time::SystemTime| {
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        mail_parser::DateTime::from_timestamp(secs).to_rfc822()
    };
    imap_append(
        st.imap_port,
        &bob,
        "INBOX",
        &mail(&first, &format!("Invoice {tag}"), &rfc2822(now - Duration::from_secs(3600))),
    )
    .await;

    let sink = Arc::new(RecordingInbound::new());
    let before = channel(st.config(&bob).watch_sent(false));
    let running = start(&before, &sink);
    sink.expect_messages(1, WAIT).await;
    running.stop().await.unwrap();

    // A new process: a fresh channel with an empty index, resuming from the stored cursor.
    imap_append(
        st.imap_port,
        &bob,
        "INBOX",
        &mail(&reply, &format!("Re: invoice {tag}"), &rfc2822(now)),
    )
    .await;
    let after = channel(st.config(&bob).watch_sent(false));
    let running = start(&after, &sink);
    sink.expect_messages(2, WAIT).await;
    running.stop().await.unwrap();

    assert_eq!(sink.duplicates(), 0, "the refill reads headers and delivers nothing");
    let stored = |id: &str| sink.stored(id).expect(id);
    assert_eq!(
        stored(&reply).message.thread_key,
        first,
        "the reply joins the thread the channel saw before it restarted"
    );
    assert_eq!(stored(&reply).conversation, stored(&first).conversation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_the_service_gives_is_the_mails_subject() {
    let st = stack();
    let (alice, bob) = (st.user("alice"), st.user("bob"));
    let alice_channel = channel(st.config(&alice).watch_sent(false));
    let mut message = outgoing(&bob, &key("subject"), "your order left our warehouse");
    message.subject = Some("Order 7 shipped".to_owned());
    alice_channel.send(&message).await.expect("sent");
    let maildir = st.maildir(&bob);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mails: Vec<String> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(maildir.join(d)).ok())
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect();
        if let Some(mail) = mails.iter().find(|m| m.contains("your order left")) {
            // The maildir holds the message with LF line ends.
            let subject = mail.lines().find(|l| l.starts_with("Subject: "));
            assert_eq!(subject.map(str::trim_end), Some("Subject: Order 7 shipped"), "{mail}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the mail never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
