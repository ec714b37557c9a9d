//! A real grammers 0.11 client against the loopback MTProto server.
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::time::Duration;

use channel_telegram::testing::loopback::{Fault, LoopbackServer, Reply};
use grammers_client::Client;
use grammers_client::update::Update;
use grammers_mtsender::{SenderPool, UpdatesConfiguration};
use grammers_session::Session;
use grammers_session::storages::MemorySession;
use grammers_session::types::{UpdateState, UpdatesState};
use grammers_tl_types::{self as tl, Identifiable};

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    client: Client,
    pool_handle: grammers_mtsender::SenderPoolHandle,
    updates: grammers_client::client::UpdateStream,
}

async fn connect(server: &LoopbackServer, pts: Option<i32>) -> Running {
    let session = Arc::new(MemorySession::from(server.session_data()));
    if let Some(pts) = pts {
        session
            .set_update_state(UpdateState::All(UpdatesState {
                pts,
                qts: 0,
                date: 1,
                seq: 0,
                channels: Vec::new(),
            }))
            .await
            .unwrap();
    }
    let pool = SenderPool::new(Arc::clone(&session), 12345);
    let client = Client::new(pool.handle.clone());
    let pool_handle = pool.handle.thin.clone();
    tokio::spawn(pool.runner.run());
    let updates =
        client.stream_updates(pool.updates, UpdatesConfiguration { catch_up: true }).await.unwrap();
    Running { client, pool_handle, updates }
}

async fn next_message(updates: &mut grammers_client::client::UpdateStream) -> (i32, String, bool) {
    loop {
        let update = tokio::time::timeout(WAIT, updates.next()).await.expect("an update in time");
        if let Ok(Update::NewMessage(m)) = update {
            return (m.id(), m.text().to_owned(), m.outgoing());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_completes_init_connection_and_get_config() {
    let server = LoopbackServer::start().await.unwrap();
    let r = connect(&server, None).await;
    let state = tokio::time::timeout(WAIT, r.client.invoke(&tl::functions::updates::GetState {}))
        .await
        .expect("answered in time")
        .expect("a state");
    let tl::enums::updates::State::State(state) = state;
    assert_eq!(state.pts, server.pts());
    let config = server.requests_of(tl::functions::help::GetConfig::CONSTRUCTOR_ID);
    assert_eq!(config.len(), 1, "initConnection(help.getConfig) went first");
    assert_eq!(config[0].api_id, Some(12345));
    r.pool_handle.quit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_update_short_message_arrives_as_a_new_message() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", Some("alice"));
    let mut r = connect(&server, None).await;
    // The first next() asks for the state (the self user is cached, the box is empty).
    let next = tokio::spawn(async move {
        let msg = next_message(&mut r.updates).await;
        (msg, r)
    });
    assert!(
        server.wait_for_requests(tl::functions::updates::GetState::CONSTRUCTOR_ID, 1, WAIT).await
    );
    let sent = server.incoming_short(alice.id, "hello over loopback");
    let ((id, text, out), r) = next.await.unwrap();
    assert_eq!((id, text.as_str(), out), (sent.id, "hello over loopback", false));
    r.pool_handle.quit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_fetches_what_arrived_while_offline_with_get_difference() {
    let server = LoopbackServer::start().await.unwrap();
    let alice = server.add_user(2001, "Alice", None);
    let start_pts = server.pts();
    let missed = server.incoming_silently(alice.id, "while you were away");
    let mut r = connect(&server, Some(start_pts)).await;
    let (id, text, _) = next_message(&mut r.updates).await;
    assert_eq!((id, text.as_str()), (missed.id, "while you were away"));
    assert!(!server.requests_of(tl::functions::updates::GetDifference::CONSTRUCTOR_ID).is_empty());
    r.pool_handle.quit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_errors_and_dropped_connections_reach_the_client() {
    let server = LoopbackServer::start().await.unwrap();
    let r = connect(&server, None).await;
    server.reply_once(tl::functions::updates::GetState::CONSTRUCTOR_ID, Reply::flood_wait(1234));
    let err = r.client.invoke(&tl::functions::updates::GetState {}).await.unwrap_err();
    assert!(err.is("FLOOD_WAIT"), "{err}");
    server.reply_once(tl::functions::updates::GetState::CONSTRUCTOR_ID, Reply::DropConnection);
    // grammers' default policy retries an I/O error once, on a new connection.
    let ok =
        tokio::time::timeout(WAIT, r.client.invoke(&tl::functions::updates::GetState {})).await;
    assert!(matches!(ok, Ok(Ok(_))), "{ok:?}");
    assert!(server.accepted_connections() >= 2);
    assert_eq!(server.requests_of(tl::functions::updates::GetState::CONSTRUCTOR_ID).len(), 3);
    // A blackholed server answers nothing.
    server.set_fault(Fault::Blackhole);
    let stalled = tokio::time::timeout(
        Duration::from_millis(300),
        r.client.invoke(&tl::functions::Ping { ping_id: 7 }),
    )
    .await;
    assert!(stalled.is_err(), "no pong from a blackhole");
    server.set_fault(Fault::None);
    server.drop_connections();
    // A request sent while grammers' pool still holds the dropped connection is dropped with
    // it (`InvocationError::Dropped`), which a client retries; the next one gets its pong on
    // a new connection.
    let mut pong = None;
    for ping_id in 8..11 {
        let r = tokio::time::timeout(WAIT, r.client.invoke(&tl::functions::Ping { ping_id })).await;
        match r {
            Ok(Err(grammers_mtsender::InvocationError::Dropped(_))) => continue,
            other => {
                pong = Some(other);
                break;
            }
        }
    }
    assert!(matches!(pong, Some(Ok(Ok(_)))), "{pong:?}");
    r.pool_handle.quit();
}
