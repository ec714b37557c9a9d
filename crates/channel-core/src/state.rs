//! Encrypted account state: the small per-account key-value space where providers keep their
//! sessions and cursors, and nowhere else.
//!
//! Values are sealed with XChaCha20-Poly1305 under a 256-bit [`StateKey`] that the embedding
//! service supplies. Each value gets a fresh random 24-byte nonce; the account id and the key
//! are authenticated as associated data, so a sealed value copied to another slot or another
//! account does not open. A wrong key or a tampered value is a [`StateError::Decrypt`], never a
//! panic. Keys never appear in `Debug` output.
//!
//! Sealed layout: `0x01 ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};

use crate::model::AccountId;
use crate::store::{Store, StoreError};
use crate::with_timeout;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_DOMAIN: &[u8] = b"channel-core/account-state/v1";

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
    /// The key could not be parsed.
    #[error("invalid state key: {0}")]
    InvalidKey(&'static str),
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

/// The 256-bit key that account state is encrypted under. Held in a [`SecretBox`] (zeroed on
/// drop, redacted in `Debug`).
pub struct StateKey(SecretBox<[u8; 32]>);

impl StateKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// A key from 64 hex digits (for example from an environment variable).
    ///
    /// ```
    /// use channel_core::state::StateKey;
    /// let key = StateKey::from_hex(&"00".repeat(32).into()).unwrap();
    /// assert_eq!(format!("{key:?}"), "StateKey([REDACTED])");
    /// assert!(StateKey::from_hex(&"zz".into()).is_err());
    /// ```
    pub fn from_hex(hex_digits: &SecretString) -> Result<Self, StateError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits.expose_secret().trim(), &mut bytes)
            .map_err(|_| StateError::InvalidKey("expected 64 hex digits"))?;
        let key = Self::from_bytes(bytes);
        bytes.fill(0);
        Ok(key)
    }

    /// A new random key (store it somewhere safe: state sealed under it is lost without it).
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey([REDACTED])")
    }
}

/// Seals and opens account-state values under one [`StateKey`].
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
    aead: XChaCha20Poly1305,
}

impl fmt::Debug for StateCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateCipher([REDACTED])")
    }
}

fn associated_data(account: AccountId, key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 17 + key.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.push(0);
    aad.extend_from_slice(account.as_uuid().as_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad
}

impl StateCipher {
    /// A cipher under `key`.
    pub fn new(key: &StateKey) -> Self {
        Self { aead: XChaCha20Poly1305::new(key.0.expose_secret().into()) }
    }

    /// Encrypts `plaintext` for the slot `key` of `account`, with a fresh random nonce.
    pub fn seal(
        &self,
        account: AccountId,
        key: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StateError> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        let aad = associated_data(account, key);
        let ciphertext = self
            .aead
            .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
            .map_err(|_| StateError::Encrypt { key: key.to_owned() })?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts a value sealed for the slot `key` of `account`.
    pub fn open(
        &self,
        account: AccountId,
        key: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, StateError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(StateError::Format { key: key.to_owned() });
        }
        let nonce = XNonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        let aad = associated_data(account, key);
        self.aead
            .decrypt(nonce, Payload { msg: &sealed[1 + NONCE_LEN..], aad: &aad })
            .map_err(|_| StateError::Decrypt { key: key.to_owned() })
    }
}

/// The encrypted state of one account, on top of [`Store::state_get`] and friends.
///
/// ```
/// use std::sync::Arc;
/// use channel_core::state::{AccountState, StateCipher, StateKey};
/// use channel_core::testing::MemoryStore;
/// use channel_core::{ChannelKind, NewAccount, Store, Timestamp};
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
        Self { store, cipher, account, timeout: crate::engine::DEFAULT_DB_TIMEOUT }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_do_not_open_under_another_key_account_or_slot() {
        let a = StateCipher::new(&StateKey::from_bytes([1; 32]));
        let b = StateCipher::new(&StateKey::from_bytes([2; 32]));
        let acc = AccountId::new();
        let sealed = a.seal(acc, "k", b"v").unwrap();
        assert!(matches!(b.open(acc, "k", &sealed), Err(StateError::Decrypt { .. })));
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
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
    }
}
