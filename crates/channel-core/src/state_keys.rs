//! The state keyring: the keys account state is sealed and opened under, with their ids, and
//! its file format.
//!
//! # The keys file
//!
//! A text file (created with mode 0600 by [`StateKeys::create_file`]), one key per line as 64
//! hex digits; anything after the digits on the line, and every line starting with `#`, is a
//! comment. The **first** key seals new state; every key opens state sealed under it. The
//! [`CHANNEL_STATE_KEYS`] environment variable holds the same text (lines, or keys separated
//! by commas), for deployments that pass secrets through the environment.
//!
//! ```text
//! # channel state keys: the first line seals, every line opens.
//! 6f1c…e2a9  added 2026-12-06
//! 0b7d…41c3  retire after the rotation
//! ```
//!
//! A key's **id** is derived from the key (the first 8 hex digits of a SHA-256 of it), so it
//! needs no name and cannot be mistyped; sealed values carry it, and a process that meets
//! state under a key it lacks says which id is missing ([`StateError::MissingKey`]).
//!
//! # Rotating keys while several workers run
//!
//! 1. Generate a key ([`StateKey::generate`]) and add it as the **second** line of every
//!    worker's keyring; restart them. Every worker can now open state sealed under it.
//! 2. Move it to the first line everywhere; restart. New state is sealed under it.
//! 3. Rotate ([`Engine::rotate_state_keys`](crate::Engine::rotate_state_keys)): every
//!    account's state still under another key is re-encrypted under the first key (each value
//!    by compare-and-set, so a value a worker writes meanwhile is never overwritten). It
//!    reports how many values it re-encrypted; run it until that is 0.
//! 4. Retire the old key: remove its line everywhere.
//!
//! When every worker restarts at once, steps 1 and 2 are one.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

use crate::state::StateError;

/// The environment variable a keyring is read from by [`StateKeys::from_env`].
pub const CHANNEL_STATE_KEYS: &str = "CHANNEL_STATE_KEYS";

/// The length of a key id in bytes (8 hex digits).
pub(crate) const KEY_ID_LEN: usize = 4;

/// The id of a [`StateKey`]: derived from the key, shown as 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateKeyId(pub(crate) [u8; KEY_ID_LEN]);

impl fmt::Display for StateKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for StateKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateKeyId({self})")
    }
}

/// The 256-bit key that account state is encrypted under, with its id. Held in a
/// [`SecretBox`] (zeroed on drop, redacted in `Debug`).
pub struct StateKey {
    id: StateKeyId,
    secret: SecretBox<[u8; 32]>,
}

impl StateKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::new_with_prefix(b"channel-core/state-key-id/v1\0").chain_update(bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.finalize()[..KEY_ID_LEN]);
        Self { id: StateKeyId(id), secret: SecretBox::new(Box::new(bytes)) }
    }

    /// A key from 64 hex digits (for example from an environment variable).
    ///
    /// ```
    /// use channel_core::state::StateKey;
    /// let key = StateKey::from_hex(&"00".repeat(32).into()).unwrap();
    /// assert_eq!(format!("{key:?}"), format!("StateKey({}, [REDACTED])", key.id()));
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

    /// A new random key (keep it somewhere safe: state sealed under it is lost without it).
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    /// The key's id.
    pub fn id(&self) -> StateKeyId {
        self.id
    }

    /// The key as 64 hex digits, for writing it out.
    pub fn to_hex(&self) -> SecretString {
        hex::encode(self.secret.expose_secret()).into()
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        self.secret.expose_secret()
    }
}

impl Clone for StateKey {
    fn clone(&self) -> Self {
        Self::from_bytes(*self.secret.expose_secret())
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateKey({}, [REDACTED])", self.id)
    }
}

/// The keys a process seals and opens account state under: the first seals, every key opens.
///
/// The keys file is text, one key per line as 64 hex digits (a comment may follow them;
/// lines starting with `#` are comments), the sealing key first; [`CHANNEL_STATE_KEYS`] holds
/// the same text, or keys separated by commas. Each key's id is derived from the key (8 hex
/// digits). Rotating while several workers run: add the new key as a second line everywhere;
/// make it the first everywhere; run
/// [`Engine::rotate_state_keys`](crate::Engine::rotate_state_keys) until it re-encrypts
/// nothing; remove the old line.
///
/// ```
/// use channel_core::state::{StateKey, StateKeys};
/// use secrecy::ExposeSecret;
///
/// let old = StateKey::generate();
/// let new = StateKey::generate();
/// let (new_hex, old_hex) = (new.to_hex(), old.to_hex());
/// let text = format!("# rotating\n{}\n{}  # old\n", new_hex.expose_secret(), old_hex.expose_secret());
/// let keys = StateKeys::parse(&text.into()).unwrap();
/// assert_eq!(keys.sealing().id(), new.id());
/// assert_eq!(keys.ids(), vec![new.id(), old.id()]);
/// ```
#[derive(Clone, Debug)]
pub struct StateKeys {
    keys: Vec<StateKey>,
}

impl From<StateKey> for StateKeys {
    fn from(key: StateKey) -> Self {
        Self { keys: vec![key] }
    }
}

impl StateKeys {
    /// A keyring whose sealing key is `sealing`.
    pub fn new(sealing: StateKey) -> Self {
        sealing.into()
    }

    /// Adds a key that opens state (it does not seal); a key already present is ignored.
    pub fn with(mut self, key: StateKey) -> Self {
        if !self.keys.iter().any(|k| k.id == key.id) {
            self.keys.push(key);
        }
        self
    }

    /// The key new state is sealed under.
    pub fn sealing(&self) -> &StateKey {
        &self.keys[0]
    }

    /// Every key's id, the sealing key's first.
    pub fn ids(&self) -> Vec<StateKeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// The key with this id.
    pub fn get(&self, id: StateKeyId) -> Option<&StateKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &StateKey> {
        self.keys.iter()
    }

    /// Parses the keys file format (see [`StateKeys::create_file`]): one key of 64 hex digits
    /// per line or comma-separated, comments after `#` or after the digits.
    pub fn parse(text: &SecretString) -> Result<Self, StateError> {
        let mut keys: Option<StateKeys> = None;
        let entries = text
            .expose_secret()
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim_start().starts_with('#'))
            .flat_map(|(n, line)| line.split(',').map(move |entry| (n, entry)));
        for (n, entry) in entries {
            let Some(digits) = entry.split_whitespace().next() else { continue };
            let key = StateKey::from_hex(&digits.to_owned().into()).map_err(|_| {
                StateError::KeysFile(format!(
                    "line {} is not a key: each line holds 64 hex digits (a comment may follow them, or start the line with #)",
                    n + 1
                ))
            })?;
            keys = Some(match keys {
                None => key.into(),
                Some(k) => k.with(key),
            });
        }
        keys.ok_or_else(|| StateError::KeysFile("it holds no key".to_owned()))
    }

    /// The keys file text of this keyring, the sealing key first, each line commented with
    /// its id.
    pub fn to_file_text(&self) -> SecretString {
        let mut text = String::from(
            "# channel state keys: 64 hex digits per line; the first line seals new state, every line opens.\n",
        );
        for key in &self.keys {
            text.push_str(key.to_hex().expose_secret());
            text.push_str("  # id ");
            text.push_str(&key.id.to_string());
            text.push('\n');
        }
        text.into()
    }

    /// Reads a keys file. A file that others can read is refused (`chmod 600` it).
    pub fn read_file(path: &Path) -> Result<Self, StateError> {
        let io = |e: std::io::Error| {
            StateError::KeysFile(format!("cannot read {}: {e}", path.display()))
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(StateError::KeysFile(format!(
                    "{} can be read by other users (mode {:o}): run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&text.into()).map_err(|e| match e {
            StateError::KeysFile(why) => StateError::KeysFile(format!("{}: {why}", path.display())),
            other => other,
        })
    }

    /// Writes this keyring to a new file with mode 0600; an existing file is never
    /// overwritten (the keys in it would be lost).
    pub fn create_file(&self, path: &Path) -> Result<(), StateError> {
        let io = |e: std::io::Error| {
            StateError::KeysFile(format!("cannot create {}: {e}", path.display()))
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(self.to_file_text().expose_secret().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// The keyring in the [`CHANNEL_STATE_KEYS`] environment variable, if it is set.
    pub fn from_env() -> Result<Option<Self>, StateError> {
        match std::env::var(CHANNEL_STATE_KEYS) {
            Ok(text) => Self::parse(&text.into()).map(Some).map_err(|e| match e {
                StateError::KeysFile(why) => {
                    StateError::KeysFile(format!("{CHANNEL_STATE_KEYS}: {why}"))
                }
                other => other,
            }),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(StateError::KeysFile(format!("{CHANNEL_STATE_KEYS} is not UTF-8 text")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_from_the_key_and_stable() {
        let a = StateKey::from_bytes([1; 32]);
        assert_eq!(a.id(), StateKey::from_bytes([1; 32]).id());
        assert_ne!(a.id(), StateKey::from_bytes([2; 32]).id());
        assert_eq!(a.id().to_string().len(), 8);
    }

    #[test]
    fn the_file_text_parses_back_to_the_same_keys_in_order() {
        let keys = StateKeys::new(StateKey::generate()).with(StateKey::generate());
        let back = StateKeys::parse(&keys.to_file_text()).unwrap();
        assert_eq!(back.ids(), keys.ids());
    }

    #[test]
    fn bad_entries_are_named_and_secrets_never_shown() {
        let err = StateKeys::parse(&"# c\n\nnot-a-key-but-secretish\n".to_owned().into());
        let shown = err.unwrap_err().to_string();
        assert!(shown.contains("line 3"), "{shown}");
        assert!(!shown.contains("secretish"), "{shown}");
        let empty = StateKeys::parse(&"# only a comment\n".to_owned().into()).unwrap_err();
        assert!(empty.to_string().contains("holds no key"), "{empty}");
    }

    #[cfg(unix)]
    #[test]
    fn files_are_created_0600_never_overwritten_and_refused_when_readable_by_others() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.keys");
        let keys = StateKeys::new(StateKey::generate());
        keys.create_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(StateKeys::read_file(&path).unwrap().ids(), keys.ids());
        assert!(keys.create_file(&path).is_err(), "never overwrites a keys file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = StateKeys::read_file(&path).unwrap_err().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
    }
}
