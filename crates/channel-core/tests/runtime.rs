//! The runtime: channels run under the watchdog while this process holds their account
//! lease; sends go out through them; several processes share one store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use channel_core::clock::TokioClock;
use channel_core::runtime::{Runtime, StaticChannels};
use channel_core::state::StateKey;
use channel_core::testing::{MemoryChannel, MemoryStore};
use channel_core::*;
use common::*;

fn engine(store: &Arc<MemoryStore>, worker: &str) -> Engine {
    Engine::builder(store.clone(), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .clock(Arc::new(TokioClock::starting_at(START)))
        .send_policy(Arc::new(channel_core::send_policy::AllowAll))
        .worker_id(worker.to_owned())
        .build()
        .unwrap()
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(start_paused = true)]
async fn the_runtime_runs_the_channel_delivers_inbound_and_sends_outbound() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, "w1");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now())
        .await
        .unwrap();
    let channel = Arc::new(MemoryChannel::new());
    let runtime = Runtime::builder(
        engine.clone(),
        Arc::new(StaticChannels::new().with(account.id, channel.clone())),
    )
    .start()
    .await
    .unwrap();

    channel.push_inbound(text("m-1", "chat", "tg:5", "hello"));
    let delivered = channel.wait_for_deliveries(1).await;
    let conversation = delivered[0].as_ref().unwrap().conversation_id;
    assert_eq!(store.account(account.id).await.unwrap().connection, ConnectionState::Connected);

    let id = engine.send(None, reply(conversation, "hi back")).await.unwrap();
    channel.wait_for_sends(1).await;
    let s = store.clone();
    let mut sent = false;
    for _ in 0..100 {
        if s.message(id).await.unwrap().status == MessageStatus::Sent {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "the dispatcher sent it through the attached channel");
    assert!(runtime.is_leader());
    assert!(runtime.watchdog().health().healthy);

    let report = runtime.shutdown().await;
    assert!(report.within_deadline(), "{report:?}");
    assert!(engine.channel(account.id).is_none(), "the channel is detached at shutdown");
}

#[tokio::test(start_paused = true)]
async fn two_processes_on_one_store_connect_each_account_once_and_take_over_on_shutdown() {
    let store = Arc::new(MemoryStore::new());
    let e1 = engine(&store, "w1");
    let e2 = engine(&store, "w2");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), e1.now())
        .await
        .unwrap();
    let c1 = Arc::new(MemoryChannel::new());
    let c2 = Arc::new(MemoryChannel::new());
    let r1 =
        Runtime::builder(e1.clone(), Arc::new(StaticChannels::new().with(account.id, c1.clone())))
            .start()
            .await
            .unwrap();
    until("the first process holds the account", || r1.holds_account(account.id)).await;
    let r2 =
        Runtime::builder(e2.clone(), Arc::new(StaticChannels::new().with(account.id, c2.clone())))
            .start()
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(r1.holds_account(account.id) && !r2.holds_account(account.id), "one holder");
    assert!(r1.is_leader() && !r2.is_leader());
    assert_eq!(c2.runs(), 0, "the second process never ran the channel");

    r1.shutdown().await;
    until("the second process takes over", || r2.holds_account(account.id) && r2.is_leader()).await;
    until("its channel runs", || c2.runs() == 1).await;
    c2.push_inbound(text("m-1", "chat", "tg:5", "hello"));
    assert!(c2.wait_for_deliveries(1).await[0].is_ok());
    r2.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_restarted_under_its_id_sends_at_once_what_its_dead_process_had_claimed() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, "w1");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now())
        .await
        .unwrap();
    let conversation = engine
        .deliver(account.id, text("m-1", "chat", "tg:5", "hello"))
        .await
        .unwrap()
        .conversation_id;
    // The previous process of w1 claimed the send, then died (its liveness lock went with it).
    let previous = channel_core::workers::WorkerInfo::this_process("w1", engine.now());
    let lock =
        channel_core::workers::WorkerStore::register_worker(&*store, &previous).await.unwrap();
    let id = engine.send(None, reply(conversation, "in flight")).await.unwrap();
    let claimed =
        store.claim("w1", &[JobKind::Send], 1, Duration::from_secs(90), engine.now()).await;
    assert_eq!(claimed.unwrap().len(), 1);
    drop(lock);

    let channel = Arc::new(MemoryChannel::new());
    let restarted = Runtime::builder(
        engine.clone(),
        Arc::new(StaticChannels::new().with(account.id, channel.clone())),
    )
    .start()
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    channel.wait_for_sends(1).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "sent after {waited:?}, not after the job's lease");
    for _ in 0..100 {
        if store.message(id).await.unwrap().status == MessageStatus::Sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.message(id).await.unwrap().status, MessageStatus::Sent);
    restarted.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_channel_that_needs_login_is_parked_until_reconnect() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, "w1");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now())
        .await
        .unwrap();
    let channel = Arc::new(MemoryChannel::new());
    channel.fail_runs([ChannelError::needs_login("session expired")]);
    let runtime = Runtime::builder(
        engine.clone(),
        Arc::new(StaticChannels::new().with(account.id, channel.clone())),
    )
    .start()
    .await
    .unwrap();
    until("the channel ran once", || channel.runs() == 1).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(channel.runs(), 1, "not restarted while the login is missing");
    let acc = store.account(account.id).await.unwrap();
    assert!(matches!(acc.connection, ConnectionState::NeedsLogin { .. }), "{:?}", acc.connection);
    runtime.reconnect(account.id);
    until("it runs again", || channel.runs() == 2).await;
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_transient_channel_failure_is_restarted_with_backoff() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, "w1");
    let account = store
        .create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), engine.now())
        .await
        .unwrap();
    let channel = Arc::new(MemoryChannel::new());
    channel.fail_runs([ChannelError::transient("connection reset")]);
    let runtime = Runtime::builder(
        engine.clone(),
        Arc::new(StaticChannels::new().with(account.id, channel.clone())),
    )
    .start()
    .await
    .unwrap();
    until("restarted", || channel.runs() == 2).await;
    channel.push_inbound(text("m-1", "chat", "tg:5", "hello"));
    assert!(channel.wait_for_deliveries(1).await[0].is_ok());
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_leaves_the_accounts_it_held_recorded_as_disconnected() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, "w1");
    let new = |name: &str| NewAccount::new(ChannelKind::from_static("memory"), name);
    let running = store.create_account(new("running"), engine.now()).await.unwrap();
    let parked = store.create_account(new("parked"), engine.now()).await.unwrap();
    let channel = Arc::new(MemoryChannel::new());
    let needs_login = Arc::new(MemoryChannel::new());
    needs_login.fail_runs([ChannelError::needs_login("session expired")]);
    let channels = StaticChannels::new()
        .with(running.id, channel.clone())
        .with(parked.id, needs_login.clone());
    let runtime = Runtime::builder(engine.clone(), Arc::new(channels)).start().await.unwrap();
    until("both channels ran", || channel.runs() == 1 && needs_login.runs() == 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.account(running.id).await.unwrap().connection, ConnectionState::Connected);
    let mut events = engine.subscribe();

    runtime.shutdown().await;
    assert_eq!(
        store.account(running.id).await.unwrap().connection,
        ConnectionState::TransientDisconnect { reason: runtime::WORKER_STOPPED.into() },
        "not left `Connected` by a process that is gone"
    );
    assert!(
        matches!(
            store.account(parked.id).await.unwrap().connection,
            ConnectionState::NeedsLogin { .. }
        ),
        "what the user must do is kept"
    );
    assert_eq!(
        events.try_recv().unwrap(),
        Event::AccountStateChanged {
            account_id: running.id,
            state: ConnectionState::TransientDisconnect { reason: runtime::WORKER_STOPPED.into() }
        }
    );
    let lease = Lease::account_name(running.id);
    let other = store.acquire_lease(&lease, "w2", Duration::from_secs(15), engine.now()).await;
    assert!(other.unwrap().is_some(), "the lease is released at once");
}

/// Providers are plug-ins: the in-memory test provider runs its account like any provider;
/// an account of a kind this process has no provider for still lists, is never leased here,
/// and stays as it was for the processes that have its provider.
#[tokio::test(start_paused = true)]
async fn a_runtime_runs_the_kinds_it_has_providers_for_and_leaves_the_others_alone() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, "w1");
    let memory = store
        .create_account(NewAccount::new(testing::MEMORY_KIND, "a"), engine.now())
        .await
        .unwrap();
    let pigeon = store
        .create_account(
            NewAccount::new(ChannelKind::from_static("carrier-pigeon"), "coo"),
            engine.now(),
        )
        .await
        .unwrap();
    let provider = Arc::new(testing::MemoryProvider::new());
    let runtime =
        Runtime::with_providers(engine.clone()).provider(provider.clone()).start().await.unwrap();

    let channel = provider.channel_of(memory.id);
    channel.push_inbound(text("m-1", "chat", "tg:5", "hello"));
    channel.wait_for_deliveries(1).await;
    until("the memory account is connected", || runtime.holds_account(memory.id)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!runtime.holds_account(pigeon.id), "no provider here: left to others");
    assert_eq!(store.account(pigeon.id).await.unwrap().connection, ConnectionState::Connecting);
    assert_eq!(store.accounts().await.unwrap().len(), 2, "listing is not broken");
    runtime.shutdown().await;
}

/// A login is a step machine driven through the runtime that holds the account's lease: a
/// wrong value is retried at the same step; another process is told to leave it to the
/// holder; done, the secret is in the account state.
#[tokio::test(start_paused = true)]
async fn a_login_runs_step_by_step_through_the_runtime_that_holds_the_account() {
    use channel_core::provider::{LoginError, LoginInput, LoginStep};
    let store = Arc::new(MemoryStore::new());
    let (a, b) = (engine(&store, "w1"), engine(&store, "w2"));
    let account =
        store.create_account(NewAccount::new(testing::MEMORY_KIND, "a"), a.now()).await.unwrap();
    let provider = Arc::new(testing::MemoryProvider::new());
    let first =
        Runtime::with_providers(a.clone()).provider(provider.clone()).start().await.unwrap();
    until("the first process holds the account", || first.holds_account(account.id)).await;
    let second = Runtime::with_providers(b.clone()).provider(provider).start().await.unwrap();

    let asked = first.login_step(account.id, "token", LoginInput::none()).await.unwrap();
    assert!(matches!(&asked, LoginStep::Input { name, .. } if name == "token"), "{asked:?}");
    let wrong = first.login_step(account.id, "token", LoginInput::none().with("token", "nope"));
    assert!(matches!(wrong.await, Err(LoginError::InvalidInput { .. })));
    let elsewhere = second
        .login_step(
            account.id,
            "token",
            LoginInput::none().with("token", testing::MEMORY_LOGIN_TOKEN),
        )
        .await;
    assert_eq!(elsewhere, Err(LoginError::Elsewhere(account.id)));
    let done = first
        .login_step(
            account.id,
            "token",
            LoginInput::none().with("token", testing::MEMORY_LOGIN_TOKEN),
        )
        .await
        .unwrap();
    assert_eq!(done, LoginStep::Done { who: Some("a".to_owned()) });
    assert!(a.account_state(account.id).get("memory/logged_in").await.unwrap().is_some());
    let unknown = first.login_step(account.id, "carrier", LoginInput::none()).await;
    assert!(matches!(unknown, Err(LoginError::UnknownFlow { .. })));
    second.shutdown().await;
    first.shutdown().await;
}

/// A provider outside the core that needs a `gateway` in its accounts' configuration.
struct Pigeon;

#[async_trait::async_trait]
impl channel_core::provider::Provider for Pigeon {
    fn kind(&self) -> ChannelKind {
        ChannelKind::from_static("carrier-pigeon")
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn channel(&self, _: &Account, _: &Engine) -> Result<Arc<dyn Channel>, ChannelError> {
        Ok(Arc::new(MemoryChannel::new()))
    }
    fn check_config(
        &self,
        config: &serde_json::Value,
    ) -> Result<(), channel_core::provider::ConfigError> {
        match config.get("loft").and_then(|v| v.as_str()) {
            Some(l) if !l.is_empty() => Ok(()),
            _ => Err(channel_core::provider::ConfigError::new("loft", "must name the pigeon loft")),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_account_is_saved_only_with_a_configuration_its_provider_accepts() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, "w1");
    let runtime = Runtime::with_providers(engine.clone()).provider(Arc::new(Pigeon)).start().await;
    let runtime = runtime.unwrap();
    let kind = ChannelKind::from_static("carrier-pigeon");
    let refused = runtime.add_account(NewAccount::new(kind.clone(), "coo")).await;
    match refused {
        Err(EngineError::AccountConfig(e)) => assert_eq!(e.field, "loft"),
        other => panic!("{other:?}"),
    }
    let unknown = runtime.add_account(NewAccount::new(ChannelKind::from_static("fax"), "f")).await;
    assert!(matches!(unknown, Err(EngineError::NoProvider(k)) if k.as_str() == "fax"));
    assert!(store.accounts().await.unwrap().is_empty(), "nothing saved");
    let config = serde_json::json!({"loft": "roof"});
    tokio::time::sleep(Duration::from_secs(1)).await; // the lease loop's first tick is past
    let added_at = tokio::time::Instant::now();
    let saved = runtime.add_account(NewAccount::new(kind, "coo").with_config(config.clone()));
    let saved = saved.await.unwrap();
    assert_eq!(store.account(saved.id).await.unwrap().config, config);
    until("its account is held", || runtime.holds_account(saved.id)).await;
    assert!(
        added_at.elapsed() < Duration::from_secs(1),
        "taken at once, not at the next lease tick (every {:?}): {:?}",
        engine.config().lease_renew_every(),
        added_at.elapsed()
    );
    // Kept saved but disabled (a server that cannot be reached yet): let go at once.
    runtime.set_account_enabled(saved.id, false).await.unwrap();
    until("its lease is let go", || !runtime.holds_account(saved.id)).await;
    assert!(!store.account(saved.id).await.unwrap().enabled);
    runtime.set_account_enabled(saved.id, true).await.unwrap();
    until("it is taken again", || runtime.holds_account(saved.id)).await;
    let unknown = runtime.set_account_enabled(AccountId::new(), true).await;
    assert!(matches!(unknown, Err(EngineError::UnknownAccount(_))), "{unknown:?}");
    runtime.shutdown().await;
}
