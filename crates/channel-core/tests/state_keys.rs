//! State keys with ids: several workers rotate from one key to another while state is
//! written, and a process that meets state under a key it lacks names the key.

use std::sync::Arc;

use channel_core::AccountStore;
use channel_core::state::{StateError, StateKey, StateKeys};
use channel_core::testing::MemoryStore;
use channel_core::{BlobStore, ChannelKind, Engine, NewAccount};
use secrecy::ExposeSecret;

fn engine(store: &Arc<MemoryStore>, keys: StateKeys) -> Engine {
    Engine::builder(store.clone(), keys).blob_store(BlobStore::in_memory()).build().unwrap()
}

#[tokio::test]
async fn rotation_re_encrypts_every_account_and_the_old_key_can_be_retired() {
    let store = Arc::new(MemoryStore::new());
    let old = StateKey::from_bytes([1; 32]);
    let new = StateKey::from_bytes([2; 32]);
    let worker = engine(&store, StateKeys::new(old.clone()));
    let kind = ChannelKind::from_static("memory");
    let mut accounts = Vec::new();
    for name in ["a", "b", "c"] {
        let account = NewAccount::new(kind.clone(), name);
        let account = store.create_account(account, worker.now()).await.unwrap();
        let state = worker.account_state(account.id);
        state.put("session", format!("session of {name}").as_bytes()).await.unwrap();
        state.put("cursor", b"42").await.unwrap();
        accounts.push(account.id);
    }

    // 1. The new key is added everywhere (it opens, the old one still seals).
    let added = engine(&store, StateKeys::new(old.clone()).with(new.clone()));
    assert_eq!(
        added.account_state(accounts[0]).get("cursor").await.unwrap().unwrap().expose_secret(),
        b"42"
    );
    // 2. It becomes the first key everywhere, 3. the rotation re-encrypts everything.
    let rotating = engine(&store, StateKeys::new(new.clone()).with(old.clone()));
    let report = rotating.rotate_state_keys().await.unwrap();
    assert_eq!((report.values, report.rekeyed, report.changed_meanwhile), (6, 6, 0));
    assert_eq!(rotating.rotate_state_keys().await.unwrap().rekeyed, 0, "nothing left");

    // 4. The old key is retired: a worker with only the new key reads everything.
    let retired = engine(&store, StateKeys::new(new.clone()));
    for (account, name) in accounts.iter().zip(["a", "b", "c"]) {
        let session = retired.account_state(*account).get("session").await.unwrap().unwrap();
        assert_eq!(session.expose_secret(), format!("session of {name}").as_bytes());
    }
    // A worker that was never given the new key says which key it lacks.
    let err = worker.account_state(accounts[0]).get("session").await.unwrap_err();
    assert!(
        matches!(&err, StateError::MissingKey { key_id, .. } if *key_id == new.id()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&new.id().to_string()), "{err}");
}

#[tokio::test]
async fn a_rotation_stops_on_a_value_under_a_missing_key_and_names_it() {
    let store = Arc::new(MemoryStore::new());
    let stranger = StateKey::from_bytes([9; 32]);
    let other = engine(&store, StateKeys::new(stranger.clone()));
    let kind = ChannelKind::from_static("memory");
    let account = store.create_account(NewAccount::new(kind, "a"), other.now()).await.unwrap();
    other.account_state(account.id).put("session", b"s").await.unwrap();
    let before = store.state_get(account.id, "session").await.unwrap();

    let rotating = engine(&store, StateKeys::new(StateKey::from_bytes([2; 32])));
    let err = rotating.rotate_state_keys().await.unwrap_err();
    assert!(
        matches!(&err, StateError::MissingKey { key_id, .. } if *key_id == stranger.id()),
        "{err:?}"
    );
    assert_eq!(store.state_get(account.id, "session").await.unwrap(), before, "unchanged");
}

#[test]
fn a_generated_keyring_is_written_0600_and_read_back_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.keys");
    let keys = StateKeys::new(StateKey::generate());
    keys.create_file(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert_eq!(StateKeys::read_file(&path).unwrap().ids(), keys.ids());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(StateKeys::parse(&text.into()).unwrap().ids(), keys.ids());
}
