//! Promise 5 on Telegram, through the real grammers client, the loopback server and the
//! engine on SQLite: a document over the blob limit and a text the store cannot hold (a NUL
//! byte) are stored degraded with their defects, and the ordinary message behind them is
//! stored in the same catch-up; nothing is fetched again and again.
#![cfg(feature = "testing")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use channel_core::state::StateKey;
use channel_core::{BlobStore, Engine, Message, NewAccount, defect};
use channel_store::SqlStore;
use channel_telegram::TelegramChannel;
use channel_telegram::session::{SESSION_KEY, UPDATES_KEY};
use channel_telegram::testing::loopback::LoopbackServer;
use support::{GET_DIFFERENCE, WAIT, fast_config};
use tokio_util::sync::CancellationToken;

const BLOB_LIMIT: u64 = 256 * 1024;

async fn stored(engine: &Engine, account: channel_core::AccountId, n: usize) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let convs = engine.store().conversations(account, None, 10).await.expect("conversations");
        let mut all = Vec::new();
        for c in convs {
            all.extend(engine.store().messages(c.id, 100).await.expect("messages"));
        }
        if all.len() >= n {
            all.sort_by_key(|m| m.provider_id.clone());
            return all;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {} of {n} stored", all.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_over_the_blob_limit_and_a_text_with_a_nul_byte_are_stored_degraded_and_the_message_behind_them_too()
 {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let store = SqlStore::open_sqlite_temporary().await.expect("store");
    let blobs = BlobStore::in_memory().with_max_size(BLOB_LIMIT);
    let engine = Engine::builder(Arc::new(store), StateKey::from_bytes([7; 32]))
        .blob_store(blobs.clone())
        .build()
        .expect("engine");
    let account = engine
        .store()
        .create_account(NewAccount::new(channel_telegram::KIND, "tg"), engine.now())
        .await
        .expect("account")
        .id;
    engine
        .account_state(account)
        .put(SESSION_KEY, &server.stored_session().to_bytes())
        .await
        .expect("session");

    let channel = Arc::new(TelegramChannel::new(fast_config()).with_blobs(Arc::new(blobs)));
    let start = || {
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (channel, cancel) = (Arc::clone(&channel), cancel.clone());
            let sink: Arc<dyn channel_core::Inbound> = Arc::new(engine.account_sink(account));
            async move { channel_core::Channel::run(&*channel, sink, cancel).await }
        });
        (cancel, task)
    };
    // A first connection records where the account's updates stand.
    let (cancel, task) = start();
    let deadline = tokio::time::Instant::now() + WAIT;
    while engine.account_state(account).get(UPDATES_KEY).await.expect("state").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the update state was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    task.await.expect("run does not panic").expect("run ends cleanly");

    // Everything arrives while the account is not connected: one catch-up fetches it all.
    server.incoming_file(
        alice.id,
        "the report",
        "report.pdf",
        "application/pdf",
        vec![1u8; 300_000],
    );
    server.incoming_silently(alice.id, "odd \0 text");
    server.incoming_silently(alice.id, "canary");
    let diffs_before = server.requests_of(GET_DIFFERENCE).len();
    let (cancel, task) = start();
    let messages = stored(&engine, account, 3).await;
    let by_text = |t: &str| {
        messages
            .iter()
            .find(|m| m.text.as_deref() == Some(t))
            .unwrap_or_else(|| panic!("{t:?} not stored: {messages:?}"))
    };
    let report = by_text("the report");
    assert!(report.attachments.is_empty(), "the document over the limit is left out");
    assert_eq!(report.defects.len(), 1);
    let d = &report.defects[0];
    assert_eq!(d.code, defect::ATTACHMENT_TOO_LARGE);
    assert_eq!((d.size, d.limit), (Some(300_000), Some(BLOB_LIMIT)));
    let left_out = d.left_out.as_ref().expect("what was left out");
    assert_eq!(left_out.mime_type, "application/pdf");
    let odd = by_text("odd \u{FFFD} text");
    assert_eq!(odd.defects.iter().map(|d| d.code.as_str()).collect::<Vec<_>>(), ["nul_replaced"]);
    assert!(by_text("canary").defects.is_empty());
    assert!(server.requests_of(GET_DIFFERENCE).len() > diffs_before, "they came through catch-up");
    assert_eq!(messages.len(), 3, "each stored once");
    cancel.cancel();
    task.await.expect("run does not panic").expect("run ends cleanly");
}
