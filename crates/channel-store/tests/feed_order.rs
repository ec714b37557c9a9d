//! The feed never hands out an event past one whose transaction is still in flight, on
//! PostgreSQL, where concurrent transactions commit out of the order of their event numbers.

mod support;

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;

    use channel_core::feed::{FeedPosition, FeedStore};
    use channel_core::state::StateKey;
    use channel_core::{
        AccountStore, BlobStore, ChannelKind, Engine, Event, IdentityInfo, InboundMessage,
        NewAccount, Timestamp,
    };
    use channel_store::SqlStore;
    use sqlx::{Connection, Executor, PgConnection};

    use super::support;

    fn inbound(id: &str) -> InboundMessage {
        InboundMessage::text(id, "chat", IdentityInfo::new("tg:1"), "hello", Timestamp(1))
    }

    /// An event written by a transaction left open (as another worker's ingest in flight).
    async fn open_transaction_with_event(url: &str, account: &str) -> PgConnection {
        let mut held = PgConnection::connect(url).await.expect("connect");
        held.execute("BEGIN").await.expect("begin");
        let payload = serde_json::to_string(&Event::LoginStepped {
            account_id: account.parse().expect("id"),
            step: "held".to_owned(),
        })
        .expect("json");
        sqlx::query("INSERT INTO channel_events (at, payload) VALUES (1, $1)")
            .bind(payload)
            .execute(&mut held)
            .await
            .expect("insert in the open transaction");
        held
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_never_passes_an_event_whose_transaction_commits_later() {
        let url = support::pg::fresh_database().await;
        let store = Arc::new(SqlStore::connect_postgres(&url).await.expect("store"));
        let engine = Engine::builder(store.clone(), StateKey::from_bytes([7; 32]))
            .blob_store(BlobStore::in_memory())
            .build()
            .expect("engine");
        let account = NewAccount::new(ChannelKind::from_static("memory"), "a");
        let account = store.create_account(account, Timestamp(0)).await.expect("account");

        // A transaction takes a lower event number and stays open...
        let mut held = open_transaction_with_event(&url, &account.id.to_string()).await;
        // ... while a later one (the ingest: higher numbers) commits.
        engine.deliver(account.id, inbound("m-1")).await.expect("deliver");
        let early = store.feed_read(FeedPosition::START, 100).await.expect("read");
        assert!(
            early.is_empty(),
            "nothing is handed out while an older transaction is in flight: {early:#?}"
        );

        held.execute("COMMIT").await.expect("commit the held transaction");
        let all = store.feed_read(FeedPosition::START, 100).await.expect("read");
        let names: Vec<&str> = all.iter().map(|e| e.event.name()).collect();
        assert_eq!(
            names,
            ["login_stepped", "conversation_opened", "message_received"],
            "the held event first, then the later transaction's"
        );

        // The other order of numbers: a transaction that took its id first writes its event
        // after a later transaction committed; it still comes before it.
        let mut first = PgConnection::connect(&url).await.expect("connect");
        first.execute("BEGIN").await.expect("begin");
        sqlx::query("SELECT pg_current_xact_id()").execute(&mut first).await.expect("xid");
        let after = all.last().expect("events").position;
        engine.deliver(account.id, inbound("m-2")).await.expect("deliver");
        let payload = serde_json::to_string(&Event::LoginStepped {
            account_id: account.id,
            step: "late".to_owned(),
        })
        .expect("json");
        sqlx::query("INSERT INTO channel_events (at, payload) VALUES (2, $1)")
            .bind(payload)
            .execute(&mut first)
            .await
            .expect("insert");
        assert!(store.feed_read(after, 100).await.expect("read").is_empty());
        first.execute("COMMIT").await.expect("commit");
        let next = store.feed_read(after, 100).await.expect("read");
        let names: Vec<&str> = next.iter().map(|e| e.event.name()).collect();
        assert_eq!(names, ["login_stepped", "message_received"], "{next:#?}");
        assert!(
            next[0].position.seq > next[1].position.seq,
            "numbered after, ordered before: it was in flight first"
        );
    }
}
