//! Proof on the real servers: the corpus of malformed and hostile mail (`tests/corpus` and the
//! large cases generated at test time) placed byte for byte into Dovecot by IMAP APPEND, an
//! ordinary canary mail behind every case, read by the real `EmailChannel` and stored by the
//! engine on SQLite and on PostgreSQL (`TEST_DATABASE_URL`) with a 25 MiB blob limit.
//!
//! What must hold: every canary is stored in the same catch-up (every message is delivered
//! exactly once: no batch is fetched again), each case is stored once with the defects it
//! must have, and nothing the sender wrote is lost.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use channel_core::state::StateKey;
use channel_core::store::IngestOutcome;
use channel_core::validate::{Limits, degrade_inbound};
use channel_core::{
    AccountId, BlobStore, Channel, ChannelError, ConnectionState, Engine, Inbound, InboundDeletion,
    InboundEdit, InboundMessage, Message, MessageId, NewAccount, Store,
};
use channel_email::testing::{FolderRole, to_inbound};
use channel_email::{EmailChannel, FolderCursor};
use support::corpus::{Seen, canary, cases, with_trace_fields};
use support::{User, stack};
use tokio_util::sync::CancellationToken;

const BLOB_LIMIT: u64 = 25 << 20;
const WAIT: Duration = Duration::from_secs(240);

/// The engine's sink, counting what the channel delivers by provider id.
struct Counting {
    inner: Arc<dyn Inbound>,
    delivered: Mutex<HashMap<String, usize>>,
}

impl Counting {
    fn count(&self, m: &InboundMessage) {
        *self.delivered.lock().unwrap().entry(m.provider_id.clone()).or_default() += 1;
    }
    fn deliveries(&self) -> HashMap<String, usize> {
        self.delivered.lock().unwrap().clone()
    }
}

#[async_trait]
impl Inbound for Counting {
    async fn deliver(&self, message: InboundMessage) -> Result<IngestOutcome, ChannelError> {
        self.count(&message);
        self.inner.deliver(message).await
    }
    async fn deliver_batch(
        &self,
        messages: Vec<InboundMessage>,
    ) -> Result<Vec<IngestOutcome>, ChannelError> {
        messages.iter().for_each(|m| self.count(m));
        self.inner.deliver_batch(messages).await
    }
    async fn edited(&self, edit: InboundEdit) -> Result<Option<MessageId>, ChannelError> {
        self.inner.edited(edit).await
    }
    async fn deleted(&self, deletion: InboundDeletion) -> Result<Vec<MessageId>, ChannelError> {
        self.inner.deleted(deletion).await
    }
    async fn known_provider_ids(
        &self,
        provider_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, ChannelError> {
        self.inner.known_provider_ids(provider_ids).await
    }
    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        self.inner.state_get(key).await
    }
    async fn state_put(&self, key: &str, value: &[u8]) -> Result<(), ChannelError> {
        self.inner.state_put(key, value).await
    }
    async fn state_delete(&self, key: &str) -> Result<(), ChannelError> {
        self.inner.state_delete(key).await
    }
    async fn report_state(&self, state: ConnectionState) {
        self.inner.report_state(state).await
    }
    fn alive(&self) {
        self.inner.alive()
    }
}

/// APPENDs `messages` to `folder` over one IMAP session, byte for byte.
async fn append_all(user: &User, folder: &str, messages: &[Vec<u8>]) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack().imap_port)).await.unwrap();
    let mut client = async_imap::Client::new(tcp);
    let _greeting = client.read_response().await.expect("greeting");
    let mut session =
        client.login(&user.address, &user.password).await.map_err(|(e, _)| e).expect("login");
    for raw in messages {
        session.append(folder, None, None, raw).await.expect("append");
    }
    let _ = session.logout().await;
}

/// The provider id the engine stores `raw` under.
fn stored_id(raw: &[u8]) -> String {
    let m = to_inbound(raw, FolderRole::Inbox, None);
    degrade_inbound(m, &Limits::DEFAULT, BLOB_LIMIT).provider_id
}

async fn find(store: &Arc<dyn Store>, account: AccountId, id: &str) -> Option<Message> {
    store.message_by_provider_id(account, id).await.expect("store")
}

async fn corpus_through_the_engine(store: Arc<dyn Store>) {
    let st = stack();
    let user = st.user("corpus");
    let cases = cases(true);
    let two_folders = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/no-message-id-filed-in-two-folders.eml"),
    )
    .unwrap();

    // INBOX: every case with a canary behind it, then the message without a Message-ID as
    // delivered (trace fields added); Sent: the same message as a client filed it.
    let mut inbox = Vec::new();
    let mut canaries = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (id, raw) = canary(i);
        inbox.push(case.raw.clone());
        inbox.push(raw);
        canaries.push(id);
    }
    inbox.push(with_trace_fields(&two_folders));
    let (last_canary, raw) = canary(cases.len());
    inbox.push(raw);
    canaries.push(last_canary);
    append_all(&user, "INBOX", &inbox).await;
    append_all(&user, "Sent", std::slice::from_ref(&two_folders)).await;

    let engine = Engine::builder(store.clone(), StateKey::generate())
        .blob_store(BlobStore::in_memory().with_max_size(BLOB_LIMIT))
        .build()
        .expect("engine");
    let account = store
        .create_account(NewAccount::new(channel_email::KIND, &user.address), engine.now())
        .await
        .expect("account")
        .id;
    let channel = Arc::new(EmailChannel::new(st.config(&user).batch_size(4)).expect("channel"));
    channel_core::testing::attach_channel(&engine, account, channel.clone());
    let sink = Arc::new(Counting {
        inner: Arc::new(engine.account_sink(account)),
        delivered: Mutex::new(HashMap::new()),
    });
    let cancel = CancellationToken::new();
    let task = {
        let (c, s, k) = (channel.clone(), sink.clone(), cancel.clone());
        tokio::spawn(async move { c.run(s, k).await })
    };

    // Every canary is stored, and the INBOX cursor has passed every message.
    let deadline = tokio::time::Instant::now() + WAIT;
    let inbox_key = FolderCursor::key("INBOX");
    loop {
        let mut missing = 0;
        for id in &canaries {
            if find(&store, account, id).await.is_none() {
                missing += 1;
            }
        }
        let cursor = engine
            .account_state(account)
            .get(&inbox_key)
            .await
            .expect("state")
            .and_then(|v| FolderCursor::decode(secrecy::ExposeSecret::expose_secret(&v)));
        if missing == 0 && cursor.is_some_and(|c| c.uid_next as usize > inbox.len()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} canaries not stored, cursor {cursor:?}; deliveries {:?}",
            sink.deliveries().values().sum::<usize>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nothing was fetched twice: every message of INBOX was delivered exactly once (the one
    // without a Message-ID a second time from Sent).
    let two_folder_id = stored_id(&two_folders);
    for (id, n) in sink.deliveries() {
        let expected = if id == two_folder_id { 2 } else { 1 };
        assert_eq!(n, expected, "{id:.80} delivered {n} times");
    }

    // Each case stored once, with its defects, nothing lost.
    for case in &cases {
        let id = stored_id(&case.raw);
        let m = find(&store, account, &id)
            .await
            .unwrap_or_else(|| panic!("{} not stored under {id:.80}", case.name));
        let seen = Seen {
            text: m.text.clone(),
            defects: m.defects.iter().map(|d| d.code.clone()).collect(),
            attachments: m
                .attachments
                .iter()
                .map(|a| (a.name.clone(), a.mime_type.clone(), a.size))
                .collect(),
        };
        case.check(&seen);
        for a in m.attachments.iter().filter(|a| a.name.as_deref() == Some("message.eml")) {
            let bytes = engine.blobs().get(&a.blob_key).await.expect("raw blob");
            assert_eq!(&bytes[..], &case.raw[..], "{}: the raw message byte for byte", case.name);
        }
    }
    let alerts: Vec<String> = cases
        .iter()
        .filter(|c| c.name.starts_with("alert-without-message-id"))
        .map(|c| stored_id(&c.raw))
        .collect();
    assert_eq!(alerts.len(), 2);
    assert_ne!(alerts[0], alerts[1], "two alerts differing only in their body: two messages");

    // The message without a Message-ID, in INBOX and in Sent: stored once.
    let once = find(&store, account, &two_folder_id).await.expect("the two-folder message");
    let thread = store.messages(once.conversation_id, 100).await.expect("messages");
    assert_eq!(
        thread.iter().filter(|m| m.provider_id.as_deref() == Some(two_folder_id.as_str())).count(),
        1
    );
    assert_eq!(stored_id(&with_trace_fields(&two_folders)), two_folder_id);

    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_corpus_is_stored_degraded_and_never_blocks_the_canaries_on_sqlite() {
    let store = channel_store::SqlStore::open_sqlite_temporary().await.expect("sqlite");
    corpus_through_the_engine(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_corpus_is_stored_degraded_and_never_blocks_the_canaries_on_postgres() {
    let url = fresh_postgres_database().await;
    let store = channel_store::SqlStore::connect_postgres(&url).await.expect("postgres");
    corpus_through_the_engine(Arc::new(store)).await;
}

/// A fresh database on the server of `TEST_DATABASE_URL` (locally
/// `postgres://postgres@127.0.0.1:5432/postgres`), named `test_<secs>_<random>` like the
/// store's own tests name theirs (they drop those older than an hour).
async fn fresh_postgres_database() -> String {
    use sqlx::{Connection, Executor};
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("PostgreSQL at TEST_DATABASE_URL (scripts/test starts one)");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = format!("test_{secs}_{:016x}", rand::random::<u64>());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .expect("create database");
    let _ = admin.close().await;
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url.as_str(), None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| scheme_end + i).unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
