//! Writes the data of the 0.1.0 fixture databases (`tests/fixtures/0.1.0/`) through this
//! version's store: one account with its configuration, settings and state, two people
//! writing in (one conversation each, one message with an attachment and a defect, one edited
//! later, one deleted), a reply sent and completed, a job left in the queue and a feed
//! consumer. `tests/fixtures_0_1_0.rs` reads the same data back.
//!
//! ```text
//! cargo run -p channel-store --example write_fixture -- sqlite tests/fixtures/0.1.0/store.sqlite
//! cargo run -p channel-store --features postgres --example write_fixture -- postgres "$URL"
//! ```
//!
//! The PostgreSQL database is then dumped as `tests/fixtures/0.1.0/README.md` says.

use std::time::Duration;

use channel_core::feed::{ConsumerStart, FeedStore};
use channel_core::{
    AccountSettings, AccountStore, Attachment, ChannelKind, ConversationId, Defect, Direction,
    IdentityId, IdentityInfo, InboundDeletion, InboundEdit, IngestRequest, JobId, JobKind,
    LifecyclePolicy, MessageId, MessageOutcome, MessageStore, NewAccount, NewJob, Origin,
    QueueStore, SendRequest, StoredInbound, Timestamp,
};
use channel_store::SqlStore;

/// 2026-12-07T00:00:00Z: every time in the fixture is this one plus a few seconds.
const T0: Timestamp = Timestamp(1_796_601_600_000);

fn at(seconds: i64) -> Timestamp {
    Timestamp(T0.0 + seconds * 1000)
}

fn inbound(provider_id: &str, thread: &str, from: &str, text: &str, sent: i64) -> StoredInbound {
    StoredInbound {
        provider_id: provider_id.to_owned(),
        thread_key: thread.to_owned(),
        remote: IdentityInfo::new(from),
        direction: Direction::Inbound,
        origin: Origin::Remote,
        client_key: None,
        text: Some(text.to_owned()),
        html: None,
        reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
        parse_error: None,
        defects: Vec::new(),
        sent_at: at(sent),
        cursor: None,
    }
}

fn ingest(account: channel_core::AccountId, message: StoredInbound, now: i64) -> IngestRequest {
    IngestRequest {
        account_id: account,
        new_message_id: MessageId::new(),
        new_identity_id: IdentityId::new(),
        new_conversation_id: ConversationId::new(),
        message,
        policy: LifecyclePolicy::default(),
        now: at(now),
    }
}

async fn write(store: &SqlStore) -> Result<(), Box<dyn std::error::Error>> {
    let config = serde_json::json!({
        "address": "support@example.org",
        "imap": { "host": "imap.example.org" },
        "smtp": { "host": "smtp.example.org", "port": 587, "security": "starttls" }
    });
    let settings = AccountSettings::default().with_lifecycle(LifecyclePolicy {
        idle_after: Some(Duration::from_secs(3600)),
        ..LifecyclePolicy::default()
    });
    let account = store
        .create_account(
            NewAccount::new(ChannelKind::from_static("email"), "Support")
                .with_config(config)
                .with_settings(settings),
            at(0),
        )
        .await?;
    store.state_put(account.id, "email/cursor/INBOX", b"{\"uidvalidity\":7,\"uidnext\":4}").await?;

    let mut first = inbound(
        "<1@alice.example>",
        "<1@alice.example>",
        "alice@example.com",
        "Hello, my order is late.",
        1,
    );
    first.remote = IdentityInfo::new("alice@example.com").with_display_name("Alice");
    first.attachments.push(Attachment {
        name: Some("order.pdf".to_owned()),
        mime_type: "application/pdf".to_owned(),
        size: 4,
        sha256: "0".repeat(64),
        blob_key: format!("sha256/00/{}", "0".repeat(64)),
    });
    first.defects.push(Defect::new("unknown_charset").field("parts[1]"));
    store.ingest(ingest(account.id, first, 2)).await?;
    let second =
        inbound("<2@alice.example>", "<1@alice.example>", "alice@example.com", "Order 1234.", 3);
    let second = store.ingest(ingest(account.id, second, 4)).await?;
    let bob = inbound(
        "<1@bob.example>",
        "<1@bob.example>",
        "bob@example.net",
        "Please delete my account.",
        5,
    );
    store.ingest(ingest(account.id, bob, 6)).await?;

    let edit = InboundEdit {
        provider_id: "<2@alice.example>".to_owned(),
        text: Some("Order 1234, placed on Monday.".to_owned()),
        html: None,
        edited_at: at(7),
    };
    store.apply_edit(account.id, &edit, at(7)).await?;
    let deletion =
        InboundDeletion { provider_ids: vec!["<1@bob.example>".to_owned()], deleted_at: at(8) };
    store.apply_deletion(account.id, &deletion, at(8)).await?;

    let reply = store
        .enqueue_send(SendRequest {
            message_id: MessageId::new(),
            job_id: JobId::new(),
            conversation_id: second.conversation_id,
            origin: Origin::Service("agent".to_owned()),
            client_key: "<reply-1@support.example.org>".to_owned(),
            text: Some("Sorry, it ships today.".to_owned()),
            html: None,
            subject: Some("Re: order".to_owned()),
            reply_to: Some("<2@alice.example>".to_owned()),
            attachments: Vec::new(),
            max_attempts: 10,
            run_at: at(9),
            now: at(9),
        })
        .await?;
    let leases =
        store.claim("fixture-worker", &[JobKind::Send], 1, Duration::from_secs(15), at(10)).await?;
    for lease in &leases {
        let outcome = MessageOutcome::Sent {
            provider_id: "<reply-1@support.example.org>".to_owned(),
            at: at(11),
        };
        store.complete(lease, Some(outcome), at(11)).await?;
    }
    assert_eq!(leases.len(), 1, "the reply's job {} was claimed", reply.id);

    let mut sync = NewJob::new(JobKind::HistorySync, at(12));
    sync.account_id = Some(account.id);
    sync.payload = serde_json::json!({ "limit": 100 });
    store.enqueue(sync, at(12)).await?;

    store.feed_consumer("fixture-consumer", ConsumerStart::Beginning, at(13)).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["sqlite", path] => {
            if std::path::Path::new(path).exists() {
                return Err(format!("{path} exists: remove it first").into());
            }
            SqlStore::open_sqlite(path).await?
        }
        #[cfg(feature = "postgres")]
        ["postgres", url] => SqlStore::connect_postgres(url).await?,
        _ => {
            return Err(
                "usage: write_fixture sqlite PATH | postgres URL (with --features postgres)".into(),
            );
        }
    };
    write(&store).await?;
    store.close().await;
    Ok(())
}
