//! State key rotation on the SQL stores: every account's state is re-encrypted under the new
//! key while a worker keeps writing, and the old key can then be retired.

mod support;

use std::sync::Arc;

use channel_core::state::{StateError, StateKey, StateKeys};
use channel_core::{BlobStore, ChannelKind, Engine, NewAccount, Store};
use secrecy::ExposeSecret;

fn engine(store: &Arc<dyn Store>, keys: StateKeys) -> Engine {
    Engine::builder(Arc::clone(store), keys).blob_store(BlobStore::in_memory()).build().unwrap()
}

async fn rotation_re_encrypts_every_account_and_retires_the_old_key(store: Arc<dyn Store>) {
    let (old, new) = (StateKey::from_bytes([1; 32]), StateKey::from_bytes([2; 32]));
    let before = engine(&store, StateKeys::new(old.clone()));
    let mut accounts = Vec::new();
    for name in ["a", "b"] {
        let account = NewAccount::new(ChannelKind::from_static("memory"), name);
        let account = store.create_account(account, before.now()).await.unwrap();
        before.account_state(account.id).put("session", name.as_bytes()).await.unwrap();
        before.account_state(account.id).put("cursor", b"7").await.unwrap();
        accounts.push(account.id);
    }
    // Every worker has the new key first; one of them keeps writing during the rotation.
    let rotating = engine(&store, StateKeys::new(new.clone()).with(old.clone()));
    let writer = engine(&store, StateKeys::new(new.clone()).with(old.clone()));
    let writer_state = writer.account_state(accounts[0]);
    let write = writer_state.put("cursor", b"8");
    let (report, written) = tokio::join!(rotating.rotate_state_keys(), write);
    written.unwrap();
    let report = report.unwrap();
    assert_eq!(report.values, 4);
    assert!(report.rekeyed + report.changed_meanwhile <= 4, "{report:?}");
    let again = rotating.rotate_state_keys().await.unwrap();
    assert_eq!((again.rekeyed, again.changed_meanwhile), (0, 0), "nothing under the old key");

    let retired = engine(&store, StateKeys::new(new.clone()));
    let cursor = retired.account_state(accounts[0]).get("cursor").await.unwrap().unwrap();
    assert_eq!(cursor.expose_secret(), b"8", "the write made meanwhile is kept");
    let session = retired.account_state(accounts[1]).get("session").await.unwrap().unwrap();
    assert_eq!(session.expose_secret(), b"b");
    let err = before.account_state(accounts[1]).get("session").await.unwrap_err();
    assert!(
        matches!(&err, StateError::MissingKey { key_id, .. } if *key_id == new.id()),
        "{err:?}"
    );
}

#[tokio::test]
async fn sqlite_rotation_re_encrypts_every_account_and_retires_the_old_key() {
    rotation_re_encrypts_every_account_and_retires_the_old_key(Arc::new(support::sqlite().await))
        .await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_rotation_re_encrypts_every_account_and_retires_the_old_key() {
    let store = Arc::new(support::pg::store().await);
    rotation_re_encrypts_every_account_and_retires_the_old_key(store).await;
}
