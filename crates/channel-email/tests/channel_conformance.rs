//! The channel conformance suite on `EmailChannel`: a real Dovecot and OpenSMTPD on loopback
//! (see `tests/mail_stack.rs`), one fresh account and one fresh peer per case. The peer
//! writes over SMTP with its own channel; the account files its sends in Sent
//! (`append_sent`), so their copies come back through the Sent folder it watches.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use channel_core::testing::channel_conformance::{
    self as conformance, ChannelUnderTest, PeerCopy, SendDedup, Written,
};
use channel_core::{
    Channel, Direction, HistoryRequest, IdentityInfo, InboundMessage, MessageId, PreparedSend,
};
use channel_email::{EmailChannel, EmailConfig};
use support::{MailStack, User, imap_append, raw_mail, stack};

/// A fresh account and a fresh peer on the shared mail stack.
struct EmailAccount {
    st: &'static MailStack,
    account: User,
    peer: User,
    channel: Arc<EmailChannel>,
    /// The peer's mail program: sends over SMTP, reads its mailbox over IMAP.
    peer_channel: EmailChannel,
}

impl EmailAccount {
    fn new() -> Self {
        let st = stack();
        let mut users = st.users("conformance", 2);
        let (peer, account) = (users.pop().expect("peer"), users.pop().expect("account"));
        let channel = Arc::new(Self::channel_of(st, &account));
        let peer_channel =
            EmailChannel::new(st.config(&peer).watch_sent(false)).expect("valid config");
        Self { st, account, peer, channel, peer_channel }
    }

    fn config(st: &MailStack, account: &User) -> EmailConfig {
        st.config(account).append_sent(true)
    }

    fn channel_of(st: &MailStack, account: &User) -> EmailChannel {
        EmailChannel::new(Self::config(st, account)).expect("valid config")
    }

    /// A fresh Message-ID of the form the provider gives client keys.
    fn message_id() -> String {
        format!("<{}@example.org>", MessageId::new().as_uuid().simple())
    }

    /// Mail to `to`, as an engine prepares it: a new thread, keyed by its own Message-ID.
    fn mail(to: &User, message_id: &str, text: &str) -> PreparedSend {
        PreparedSend {
            message_id: MessageId::new(),
            client_key: message_id.to_owned(),
            thread_key: message_id.to_owned(),
            remote: IdentityInfo::new(&to.address),
            text: Some(text.to_owned()),
            html: None,
            subject: None,
            reply_to: None,
            references: Vec::new(),
            attachments: Vec::new(),
        }
    }

    /// Pages through `channel`'s mailbox (Inbox and Sent) for messages of the thread
    /// `thread_key`, or all of them.
    async fn mailbox(channel: &EmailChannel, thread_key: Option<&str>) -> Vec<InboundMessage> {
        let request = HistoryRequest {
            thread_key: thread_key.map(str::to_owned),
            limit: HistoryRequest::MAX_LIMIT,
            ..HistoryRequest::default()
        };
        channel.fetch_history(&request).await.expect("the mailbox can be read")
    }
}

#[async_trait]
impl ChannelUnderTest for EmailAccount {
    fn channel(&self) -> Arc<dyn Channel> {
        self.channel.clone()
    }

    fn restarted(&self) -> Arc<dyn Channel> {
        Arc::new(Self::channel_of(self.st, &self.account))
    }

    /// Sent over SMTP by the peer's channel; returns once Dovecot has filed it in the
    /// account's Inbox (OpenSMTPD delivers in the background), so that mail written one after
    /// the other lands in that order.
    async fn peer_writes(&self, text: &str) -> Written {
        let id = Self::message_id();
        let receipt =
            self.peer_channel.send(&Self::mail(&self.account, &id, text)).await.expect("sent");
        assert_eq!(receipt.provider_id, id);
        let deadline = tokio::time::Instant::now() + self.patience();
        // A second connection of the account's, looking for the mail by its Message-ID.
        let probe = Self::channel_of(self.st, &self.account);
        while Self::mailbox(&probe, Some(&id)).await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "{id} never reached the inbox");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Written {
            provider_id: id.clone(),
            thread_key: id,
            remote: self.peer.address.to_lowercase(),
        }
    }

    /// Filed in the account's Sent folder by "another mail program" (IMAP APPEND).
    async fn owner_writes_elsewhere(&self, text: &str) -> Written {
        let id = Self::message_id();
        let raw = raw_mail(&self.account.address, &self.peer.address, &id, text, text);
        imap_append(self.st.imap_port, &self.account, "Sent", &raw).await;
        Written {
            provider_id: id.clone(),
            thread_key: id,
            remote: self.peer.address.to_lowercase(),
        }
    }

    /// Every mail in the peer's inbox, one entry per delivered copy.
    async fn peer_copies(&self) -> Vec<PeerCopy> {
        Self::mailbox(&self.peer_channel, None)
            .await
            .into_iter()
            .filter(|m| m.direction == Direction::Inbound)
            .map(|m| PeerCopy { id: m.provider_id, text: m.text })
            .collect()
    }

    fn prepared_send(&self, text: &str) -> PreparedSend {
        Self::mail(&self.peer, &Self::message_id(), text)
    }

    /// SMTP has no idempotency key: each accepted send is delivered, but with the
    /// Message-ID derived from the client key, the same on every attempt.
    fn send_dedup(&self) -> SendDedup {
        SendDedup::SameId
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery() {
    conformance::delivery(&EmailAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_resumption() {
    conformance::cursor_resumption(&EmailAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_matching() {
    conformance::echo_matching(&EmailAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_idempotency() {
    let account = EmailAccount::new();
    conformance::send_idempotency(&account).await.expect_held();
    // The promise holds through two real deliveries, not because one send was spared.
    let copies = account.peer_copies().await;
    let sent_twice: Vec<_> = copies
        .iter()
        .filter(|c| c.text.as_deref().is_some_and(|t| t.contains("sent twice")))
        .collect();
    assert_eq!(sent_twice.len(), 2, "both sends were delivered: {copies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits() {
    conformance::history_limits(&EmailAccount::new()).await.expect_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation() {
    conformance::cancellation(&EmailAccount::new()).await.expect_held();
}
