//! Encrypted account state: the small per-account key-value space where providers keep their
//! sessions and cursors, and nowhere else.
//!
//! Values are sealed with XChaCha20-Poly1305 under the first 256-bit [`StateKey`] of the
//! [`StateKeys`] that the embedding service supplies (see [`StateKeys`] for the keys file,
//! the environment variable and rotation). Each value gets a fresh random 24-byte nonce; the
//! account id, the slot and the key id are authenticated as associated data, so a sealed value
//! copied to another slot or another account does not open. A wrong key or a tampered value is
//! a [`StateError::Decrypt`], a value under a key this process lacks a
//! [`StateError::MissingKey`] naming its id, never a panic. Keys never appear in `Debug`
//! output.
//!
//! Sealed layout: `0x02 ‖ key id (4 bytes) ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`.
//! Values of the first layout (`0x01 ‖ nonce ‖ ciphertext ‖ tag`, without a key id) still
//! open, under whichever key of the ring opens them, and are re-sealed by a rotation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::SecretSlice;

use crate::model::AccountId;
use crate::state_keys::KEY_ID_LEN;
pub use crate::state_keys::{CHANNEL_STATE_KEYS, StateKey, StateKeyId, StateKeys};
use crate::store::{Store, StoreError};
use crate::with_timeout;

const V1: u8 = 1;
const V2: u8 = 2;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_V1: &[u8] = b"channel-core/account-state/v1";
const AAD_V2: &[u8] = b"channel-core/account-state/v2";

/// Why reading or writing account state failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The value does not open under this key: the key is wrong, or the value was changed or
    /// moved from another slot.
    #[error(
        "account state `{key}` could not be decrypted: wrong state key, or the value was tampered with or moved"
    )]
    Decrypt {
        /// The state key (the slot), not the secret.
        key: String,
    },
    /// The stored bytes are not a sealed value of a known format.
    #[error("account state `{key}` is not a sealed value (unknown format)")]
    Format {
        /// The state key.
        key: String,
    },
    /// The value is sealed under a key this process does not have.
    #[error(
        "account state `{key}` is sealed under state key {key_id}, which this process does not have: add that key to its keyring (the keys file or CHANNEL_STATE_KEYS)"
    )]
    MissingKey {
        /// The state key (the slot).
        key: String,
        /// The id of the missing key.
        key_id: StateKeyId,
    },
    /// The key could not be parsed.
    #[error("invalid state key: {0}")]
    InvalidKey(&'static str),
    /// A keyring (its file or environment variable) could not be read.
    #[error("state keys: {0}")]
    KeysFile(String),
    /// Encryption failed (practically impossible: the value is too large).
    #[error("account state `{key}` could not be encrypted")]
    Encrypt {
        /// The state key.
        key: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Seals account-state values under the sealing key of a [`StateKeys`] and opens them under
/// any of its keys.
///
/// ```
/// use channel_core::state::{StateCipher, StateKey};
/// use channel_core::AccountId;
///
/// let cipher = StateCipher::new(&StateKey::generate());
/// let account = AccountId::new();
/// let sealed = cipher.seal(account, "session", b"secret session").unwrap();
/// assert_eq!(cipher.open(account, "session", &sealed).unwrap(), b"secret session");
/// // Moved to another slot, it does not open.
/// assert!(cipher.open(account, "cursor", &sealed).is_err());
/// ```
pub struct StateCipher {
    /// The sealing key's first.
    keys: Vec<(StateKeyId, XChaCha20Poly1305)>,
}

impl fmt::Debug for StateCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|(id, _)| id.to_string()).collect();
        write!(f, "StateCipher({}, [REDACTED])", ids.join(", "))
    }
}

fn associated_data(domain: &[u8], account: AccountId, key: &str, key_id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(domain.len() + 17 + key_id.len() + key.len());
    aad.extend_from_slice(domain);
    aad.push(0);
    aad.extend_from_slice(account.as_uuid().as_bytes());
    aad.extend_from_slice(key_id);
    aad.extend_from_slice(key.as_bytes());
    aad
}

impl StateCipher {
    /// A cipher with one key, which seals and opens.
    pub fn new(key: &StateKey) -> Self {
        Self::from_keys(&StateKeys::new(key.clone()))
    }

    /// A cipher that seals under `keys`' sealing key and opens under any of them.
    pub fn from_keys(keys: &StateKeys) -> Self {
        let keys =
            keys.iter().map(|k| (k.id(), XChaCha20Poly1305::new(k.bytes().into()))).collect();
        Self { keys }
    }

    /// The id of the key new values are sealed under.
    pub fn sealing_key(&self) -> StateKeyId {
        self.keys[0].0
    }

    /// Encrypts `plaintext` for the slot `key` of `account` under the sealing key, with a
    /// fresh random nonce.
    pub fn seal(
        &self,
        account: AccountId,
        key: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StateError> {
        let (id, aead) = &self.keys[0];
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        let aad = associated_data(AAD_V2, account, key, &id.0);
        let ciphertext = aead
            .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
            .map_err(|_| StateError::Encrypt { key: key.to_owned() })?;
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
        out.push(V2);
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// The id of the key `sealed` is sealed under (`None` for the first layout, which does
    /// not say).
    pub fn key_id_of(sealed: &[u8]) -> Option<StateKeyId> {
        match sealed {
            [V2, rest @ ..] if rest.len() >= KEY_ID_LEN => {
                let mut id = [0u8; KEY_ID_LEN];
                id.copy_from_slice(&rest[..KEY_ID_LEN]);
                Some(StateKeyId(id))
            }
            _ => None,
        }
    }

    /// Decrypts a value sealed for the slot `key` of `account`.
    pub fn open(
        &self,
        account: AccountId,
        key: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, StateError> {
        let decrypt = |aead: &XChaCha20Poly1305, body: &[u8], aad: &[u8]| {
            let nonce = XNonce::from_slice(&body[..NONCE_LEN]);
            aead.decrypt(nonce, Payload { msg: &body[NONCE_LEN..], aad })
        };
        let format = || StateError::Format { key: key.to_owned() };
        match sealed.first() {
            Some(&V2) if sealed.len() >= 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN => {
                let key_id = Self::key_id_of(sealed).ok_or_else(format)?;
                let (_, aead) = self
                    .keys
                    .iter()
                    .find(|(id, _)| *id == key_id)
                    .ok_or_else(|| StateError::MissingKey { key: key.to_owned(), key_id })?;
                let aad = associated_data(AAD_V2, account, key, &key_id.0);
                decrypt(aead, &sealed[1 + KEY_ID_LEN..], &aad)
                    .map_err(|_| StateError::Decrypt { key: key.to_owned() })
            }
            Some(&V1) if sealed.len() >= 1 + NONCE_LEN + TAG_LEN => {
                let aad = associated_data(AAD_V1, account, key, &[]);
                self.keys
                    .iter()
                    .find_map(|(_, aead)| decrypt(aead, &sealed[1..], &aad).ok())
                    .ok_or_else(|| StateError::Decrypt { key: key.to_owned() })
            }
            _ => Err(format()),
        }
    }
}

/// The encrypted state of one account, on top of [`AccountStore::state_get`](crate::AccountStore::state_get) and friends.
///
/// ```
/// use std::sync::Arc;
/// use channel_core::state::{AccountState, StateCipher, StateKey};
/// use channel_core::testing::MemoryStore;
/// use channel_core::{AccountStore, ChannelKind, NewAccount, Timestamp};
/// use secrecy::ExposeSecret;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new());
/// let account = store.create_account(NewAccount::new(ChannelKind::from_static("memory"), "a"), Timestamp(0)).await.unwrap();
/// let state = AccountState::new(store.clone(), Arc::new(StateCipher::new(&StateKey::generate())), account.id);
/// state.put("session", b"token").await.unwrap();
/// assert_eq!(state.get("session").await.unwrap().unwrap().expose_secret(), b"token");
/// // The store only ever sees ciphertext.
/// let raw = store.state_get(account.id, "session").await.unwrap().unwrap();
/// assert!(!raw.windows(5).any(|w| w == b"token"));
/// # });
/// ```
#[derive(Clone)]
pub struct AccountState {
    store: Arc<dyn Store>,
    cipher: Arc<StateCipher>,
    account: AccountId,
    timeout: Duration,
}

impl fmt::Debug for AccountState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountState").field("account", &self.account).finish_non_exhaustive()
    }
}

impl AccountState {
    /// The state of `account`, with the default database timeout (10 s).
    pub fn new(store: Arc<dyn Store>, cipher: Arc<StateCipher>, account: AccountId) -> Self {
        Self { store, cipher, account, timeout: crate::DEFAULT_DB_TIMEOUT }
    }

    /// Sets the timeout of each store call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The decrypted value of `key`, if set.
    pub async fn get(&self, key: &str) -> Result<Option<SecretSlice<u8>>, StateError> {
        let raw = with_timeout("state_get", self.timeout, self.store.state_get(self.account, key))
            .await?;
        match raw {
            None => Ok(None),
            Some(sealed) => Ok(Some(self.cipher.open(self.account, key, &sealed)?.into())),
        }
    }

    /// Encrypts and stores `value` under `key`.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let sealed = self.cipher.seal(self.account, key, value)?;
        with_timeout("state_put", self.timeout, self.store.state_put(self.account, key, &sealed))
            .await?;
        Ok(())
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        with_timeout("state_delete", self.timeout, self.store.state_delete(self.account, key))
            .await?;
        Ok(())
    }

    /// Removes every value of the account (sign-out).
    pub async fn clear(&self) -> Result<(), StateError> {
        with_timeout("state_clear", self.timeout, self.store.state_clear(self.account)).await?;
        Ok(())
    }
}

/// What [`Engine::rotate_state_keys`](crate::Engine::rotate_state_keys) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyRotation {
    /// Values read (every account's state).
    pub values: usize,
    /// Values re-encrypted under the sealing key.
    pub rekeyed: usize,
    /// Values a worker changed while the rotation read them; run the rotation again.
    pub changed_meanwhile: usize,
}

impl crate::Engine {
    /// Re-encrypts every account's state that is not sealed under this engine's sealing key
    /// (the first of its [`StateKeys`]), each value by compare-and-set, so that the other keys
    /// can be retired (the steps are in [`StateKeys`]). A value under a key this engine lacks
    /// stops the rotation with [`StateError::MissingKey`] naming it, having changed nothing
    /// of that value. Run it again until `rekeyed` and `changed_meanwhile` are 0.
    pub async fn rotate_state_keys(&self) -> Result<KeyRotation, StateError> {
        let store = self.store();
        let cipher = &self.inner.cipher;
        let sealing = cipher.sealing_key();
        let mut report = KeyRotation::default();
        for account in self.db("accounts", store.accounts()).await? {
            for (key, sealed) in self.db("state_entries", store.state_entries(account.id)).await? {
                report.values += 1;
                if StateCipher::key_id_of(&sealed) == Some(sealing) {
                    continue;
                }
                let plain = cipher.open(account.id, &key, &sealed)?;
                let resealed = cipher.seal(account.id, &key, &plain)?;
                let replace = store.state_replace(account.id, &key, &sealed, &resealed);
                if self.db("state_replace", replace).await? {
                    report.rekeyed += 1;
                } else {
                    report.changed_meanwhile += 1;
                }
            }
        }
        tracing::info!(
            sealing_key = %sealing,
            values = report.values,
            rekeyed = report.rekeyed,
            changed_meanwhile = report.changed_meanwhile,
            "state keys rotated"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_do_not_open_under_another_key_account_or_slot() {
        let a = StateCipher::new(&StateKey::from_bytes([1; 32]));
        let b = StateCipher::new(&StateKey::from_bytes([2; 32]));
        let acc = AccountId::new();
        let sealed = a.seal(acc, "k", b"v").unwrap();
        let missing = b.open(acc, "k", &sealed);
        let a_id = StateKey::from_bytes([1; 32]).id();
        assert!(
            matches!(&missing, Err(StateError::MissingKey { key_id, .. }) if *key_id == a_id),
            "{missing:?}"
        );
        assert!(missing.unwrap_err().to_string().contains(&a_id.to_string()));
        assert!(matches!(a.open(AccountId::new(), "k", &sealed), Err(StateError::Decrypt { .. })));
        assert!(matches!(a.open(acc, "k2", &sealed), Err(StateError::Decrypt { .. })));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(a.open(acc, "k", &tampered), Err(StateError::Decrypt { .. })));
        assert!(matches!(a.open(acc, "k", b"short"), Err(StateError::Format { .. })));
        assert!(matches!(a.open(acc, "k", &[]), Err(StateError::Format { .. })));
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let c = StateCipher::new(&StateKey::generate());
        let acc = AccountId::new();
        assert_ne!(c.seal(acc, "k", b"same").unwrap(), c.seal(acc, "k", b"same").unwrap());
    }

    #[test]
    fn keys_are_redacted_in_debug_output() {
        let key = StateKey::from_bytes([0xAB; 32]);
        let cipher = StateCipher::new(&key);
        let shown = format!("{key:?} {cipher:?}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
        assert!(shown.contains(&key.id().to_string()), "ids are shown: {shown}");
    }
}
