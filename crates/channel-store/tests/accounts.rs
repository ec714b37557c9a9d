//! Accounts through the runtime on the SQL stores, with two workers on one database: create,
//! update (a new configuration restarts the channel in whichever worker runs it, a refused one
//! saves nothing), disable, enable, remove (its state goes, its messages stay); settings live
//! in the database, so every worker applies the same lifecycle policy and send rates.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use channel_core::dispatcher::Dispatcher;
use channel_core::provider::{ConfigError, Provider};
use channel_core::runtime::Runtime;
use channel_core::state::StateKey;
use channel_core::testing::MemoryChannel;
use channel_core::{
    Account, AccountSettings, AccountUpdate, BlobStore, Capabilities, Channel, ChannelError,
    ChannelKind, Engine, EngineError, IdentityInfo, InboundMessage, JobState, LifecyclePolicy,
    MessageStatus, NewAccount, OutboundMessage, Rate, SendRates, Store, StoreError,
};
use serde_json::json;

const KIND: ChannelKind = ChannelKind::from_static("counting");

/// A provider whose accounts need `{"n": <number>}`, recording the configuration of every
/// channel it creates.
#[derive(Default)]
struct Counting {
    created: Mutex<Vec<serde_json::Value>>,
}

impl Counting {
    fn created(&self) -> Vec<serde_json::Value> {
        self.created.lock().unwrap().clone()
    }
}

#[async_trait]
impl Provider for Counting {
    fn kind(&self) -> ChannelKind {
        KIND
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn channel(
        &self,
        account: &Account,
        _: &Engine,
    ) -> Result<Arc<dyn Channel>, ChannelError> {
        self.created.lock().unwrap().push(account.config.clone());
        Ok(Arc::new(MemoryChannel::new()))
    }
    fn check_config(&self, config: &serde_json::Value) -> Result<(), ConfigError> {
        match config.get("n") {
            Some(n) if n.is_number() => Ok(()),
            _ => Err(ConfigError::new("n", "must be a number")),
        }
    }
}

fn engine(store: &Arc<dyn Store>, worker: &str) -> Engine {
    Engine::builder(Arc::clone(store), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .worker_id(worker.to_owned())
        .leases(Duration::from_millis(1500), Duration::from_millis(200))
        .build()
        .expect("engine")
}

async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn accounts_are_managed_through_the_runtime_by_any_worker(store: Arc<dyn Store>) {
    let provider = Arc::new(Counting::default());
    let (a, b) = (engine(&store, "w1"), engine(&store, "w2"));
    let first =
        Runtime::with_providers(a.clone()).provider(provider.clone()).start().await.unwrap();
    let second =
        Runtime::with_providers(b.clone()).provider(provider.clone()).start().await.unwrap();

    let refused = first.add_account(NewAccount::new(KIND, "bad").with_config(json!({}))).await;
    assert!(matches!(refused, Err(EngineError::AccountConfig(_))), "{refused:?}");
    assert!(first.accounts().await.unwrap().is_empty(), "a refused account is not saved");
    let account =
        first.add_account(NewAccount::new(KIND, "a").with_config(json!({"n": 1}))).await.unwrap();
    until("one worker runs the account", async || {
        first.holds_account(account.id) || second.holds_account(account.id)
    })
    .await;
    until("its channel is created", async || provider.created() == vec![json!({"n": 1})]).await;

    // A new configuration, from the worker that may not run it: the channel restarts with it.
    let refused =
        second.update_account(account.id, AccountUpdate::default().config(json!({"n": "x"}))).await;
    assert!(matches!(refused, Err(EngineError::AccountConfig(_))), "{refused:?}");
    assert_eq!(store.account(account.id).await.unwrap().config, json!({"n": 1}), "nothing saved");
    let update = AccountUpdate::default().config(json!({"n": 2})).display_name("renamed");
    let updated = second.update_account(account.id, update).await.unwrap();
    assert_eq!((updated.display_name.as_str(), &updated.config), ("renamed", &json!({"n": 2})));
    until("the channel restarts with it", async || {
        provider.created().last() == Some(&json!({"n": 2}))
    })
    .await;

    // Settings reach both workers.
    let policy = LifecyclePolicy {
        idle_after: Some(Duration::from_secs(600)),
        ..LifecyclePolicy::default()
    };
    let settings = AccountSettings::default().with_lifecycle(policy);
    first.update_account(account.id, AccountUpdate::default().settings(settings)).await.unwrap();
    until("the other worker applies the settings", async || {
        b.account_settings(account.id).await.unwrap() == settings
    })
    .await;

    // Disabled, no one runs it; enabled, one does again.
    second.set_account_enabled(account.id, false).await.unwrap();
    until("no one runs it", async || {
        !first.holds_account(account.id) && !second.holds_account(account.id)
    })
    .await;
    first.set_account_enabled(account.id, true).await.unwrap();
    until("one worker runs it again", async || {
        first.holds_account(account.id) || second.holds_account(account.id)
    })
    .await;
    let listed = second.accounts().await.unwrap();
    assert_eq!(listed.len(), 1);
    until("it is listed connected", async || {
        second.accounts().await.unwrap()[0].connection == channel_core::ConnectionState::Connected
    })
    .await;

    // Removed: no one runs it, its state is gone, its messages stay.
    let hello = InboundMessage::text("m-1", "chat", IdentityInfo::new("tg:1"), "hello", a.now());
    let delivered = a.deliver(account.id, hello).await.unwrap();
    a.account_state(account.id).put("session", b"secret").await.unwrap();
    second.remove_account(account.id, false).await.unwrap();
    until("no one runs the removed account", async || {
        !first.holds_account(account.id) && !second.holds_account(account.id)
    })
    .await;
    assert!(first.accounts().await.unwrap().is_empty());
    assert!(matches!(store.account(account.id).await, Err(StoreError::NotFound { .. })));
    assert!(store.state_entries(account.id).await.unwrap().is_empty(), "its state is purged");
    assert_eq!(store.message(delivered.message_id).await.unwrap().text.as_deref(), Some("hello"));
    let again = first.remove_account(account.id, false).await;
    assert!(matches!(again, Err(EngineError::UnknownAccount(_))), "{again:?}");
    second.shutdown().await;
    first.shutdown().await;
}

async fn an_account_s_own_send_rates_hold_in_every_worker(store: Arc<dyn Store>) {
    let (a, b) = (engine(&store, "w1"), engine(&store, "w2"));
    let rates = SendRates {
        per_account: Rate::per_minute(60).burst(5),
        per_chat: Rate::every(Duration::from_secs(120)),
    };
    let new =
        NewAccount::new(KIND, "a").with_settings(AccountSettings::default().with_send_rates(rates));
    let account = store.create_account(new, a.now()).await.unwrap();
    let hello = InboundMessage::text("m-1", "chat", IdentityInfo::new("tg:1"), "hello", a.now());
    let conversation = a.deliver(account.id, hello).await.unwrap().conversation_id;
    // The worker that sends never set any rate itself: it reads the account's.
    channel_core::testing::attach_channel(&b, account.id, Arc::new(MemoryChannel::new()));
    let one = b.send(None, OutboundMessage::text(conversation, "one")).await.unwrap();
    let two = b.send(None, OutboundMessage::text(conversation, "two")).await.unwrap();
    let dispatcher = Dispatcher::new(b.clone());
    dispatcher.run_once().await.unwrap();
    dispatcher.run_once().await.unwrap();
    // The dispatcher runs both jobs at once: whichever asks first goes, the other waits.
    let mut statuses = Vec::new();
    for id in [one, two] {
        statuses.push((store.message(id).await.unwrap().status, id));
    }
    statuses.sort_by_key(|(s, _)| *s != MessageStatus::Sent);
    let [(first, _), (second, held)] = statuses[..] else { unreachable!() };
    assert_eq!((first, second), (MessageStatus::Sent, MessageStatus::Pending), "one waits");
    let jobs = store.jobs_in_state(JobState::Available, 10).await.unwrap();
    let job = jobs.iter().find(|j| j.message_id == Some(held)).expect("its job waits");
    let wait = Duration::from_millis(u64::try_from(job.run_at.0 - b.now().0).unwrap_or(0));
    assert!(
        wait > Duration::from_secs(100),
        "held back by the account's own 120 s chat rate, not the default 3 s: {wait:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_accounts_are_managed_through_the_runtime_by_any_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = support::sqlite_in(&dir).await;
    accounts_are_managed_through_the_runtime_by_any_worker(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_accounts_are_managed_through_the_runtime_by_any_worker() {
    accounts_are_managed_through_the_runtime_by_any_worker(Arc::new(support::pg::store().await))
        .await;
}

#[tokio::test]
async fn sqlite_an_account_s_own_send_rates_hold_in_every_worker() {
    an_account_s_own_send_rates_hold_in_every_worker(Arc::new(support::sqlite().await)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_an_account_s_own_send_rates_hold_in_every_worker() {
    an_account_s_own_send_rates_hold_in_every_worker(Arc::new(support::pg::store().await)).await;
}
