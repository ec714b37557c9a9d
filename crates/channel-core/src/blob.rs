//! [`BlobStore`]: attachment bytes, content-addressed, on the `object_store` crate.
//!
//! A blob's key is derived from the SHA-256 of its bytes (`sha256/<first two hex
//! digits>/<64 hex digits>`), so the same bytes stored twice are one blob, and a key read back
//! from the database can be checked before it is used as a path. Writes are atomic and
//! create-only. Blobs of a message that was then refused stay behind unreferenced; that is
//! harmless (a later message with the same bytes reuses them).

use std::fmt;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
/// The object-store interface [`BlobStore::new`] takes (S3, GCS, Azure and local files through
/// the `object_store` crate), re-exported in the version this crate uses.
pub use object_store::{self, ObjectStore};
use object_store::{PutMode, PutPayload};
use sha2::{Digest, Sha256};

use crate::model::{Attachment, AttachmentData};

/// The default largest attachment: 25 MiB, the size most mail servers accept for a whole
/// message and above Telegram's 20 MB bot download limit.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 25 * 1024 * 1024;

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The bytes are larger than the configured limit.
    #[error("attachment of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// No blob under this key.
    #[error("blob {0} not found")]
    NotFound(String),
    /// The key is not a key this store hands out.
    #[error("invalid blob key `{0}`")]
    InvalidKey(String),
    /// The bytes read back do not match their key (corruption on disk).
    #[error("blob {0} is corrupt: its bytes do not match its hash")]
    Corrupt(String),
    /// The object store failed (I/O, permissions).
    #[error("blob store error: {0}")]
    Backend(#[source] object_store::Error),
}

/// A stored blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    /// Where it is.
    pub key: String,
    /// SHA-256 of the bytes, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Content-addressed attachment storage with a size limit.
///
/// ```
/// use channel_core::BlobStore;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let blobs = BlobStore::in_memory().with_max_size(1024);
/// let a = blobs.put(bytes::Bytes::from_static(b"hello")).await.unwrap();
/// let b = blobs.put(bytes::Bytes::from_static(b"hello")).await.unwrap();
/// assert_eq!(a, b, "same bytes, one blob");
/// assert_eq!(blobs.get(&a.key).await.unwrap(), "hello");
/// assert!(blobs.put(vec![0u8; 2048].into()).await.is_err(), "over the limit");
/// # });
/// ```
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    max_size: u64,
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("store", &self.store.to_string())
            .field("max_size", &self.max_size)
            .finish()
    }
}

impl BlobStore {
    /// Blobs in a local directory (created if missing).
    pub fn local(dir: impl AsRef<FsPath>) -> Result<Self, BlobError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            BlobError::Backend(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(BlobError::Backend)?;
        Ok(Self::new(Arc::new(fs)))
    }

    /// Blobs in memory (tests).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(InMemory::new()))
    }

    /// Blobs in any object store (S3, GCS, ... through `object_store`).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, max_size: DEFAULT_MAX_BLOB_SIZE }
    }

    /// Sets the largest blob accepted.
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// The largest blob accepted.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Stores `data` (once per distinct content) and returns its key.
    pub async fn put(&self, data: Bytes) -> Result<StoredBlob, BlobError> {
        let size = data.len() as u64;
        if size > self.max_size {
            return Err(BlobError::TooLarge { size, limit: self.max_size });
        }
        let sha256 = hex::encode(Sha256::digest(&data));
        let key = format!("sha256/{}/{}", &sha256[..2], sha256);
        let path = Path::from(key.as_str());
        match self.store.put_opts(&path, PutPayload::from(data), PutMode::Create.into()).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {
                Ok(StoredBlob { key, sha256, size })
            }
            Err(e) => Err(BlobError::Backend(e)),
        }
    }

    /// Stores an attachment's bytes and returns the attachment as the model keeps it.
    pub async fn put_attachment(
        &self,
        attachment: &AttachmentData,
    ) -> Result<Attachment, BlobError> {
        let blob = self.put(attachment.data.clone()).await?;
        Ok(Attachment {
            name: attachment.name.clone(),
            mime_type: attachment.mime_type.clone(),
            size: blob.size,
            sha256: blob.sha256,
            blob_key: blob.key,
        })
    }

    /// The bytes under `key`, checked against their hash.
    pub async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        let sha256 = parse_key(key).ok_or_else(|| BlobError::InvalidKey(key.to_owned()))?;
        let bytes = match self.store.get(&Path::from(key)).await {
            Ok(r) => r.bytes().await.map_err(BlobError::Backend)?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BlobError::NotFound(key.to_owned()));
            }
            Err(e) => return Err(BlobError::Backend(e)),
        };
        if hex::encode(Sha256::digest(&bytes)) != sha256 {
            return Err(BlobError::Corrupt(key.to_owned()));
        }
        Ok(bytes)
    }

    /// Whether a blob is stored under `key`.
    pub async fn contains(&self, key: &str) -> Result<bool, BlobError> {
        parse_key(key).ok_or_else(|| BlobError::InvalidKey(key.to_owned()))?;
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(BlobError::Backend(e)),
        }
    }
}

/// The hash in a well-formed key.
fn parse_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("sha256/")?;
    let (fan, hash) = rest.split_once('/')?;
    let hex_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (fan.len() == 2 && hash.len() == 64 && hex_ok(hash) && hash.starts_with(fan)).then_some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_directory_store_round_trips_and_deduplicates() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::local(dir.path().join("blobs")).unwrap();
        let a = blobs.put(Bytes::from_static(b"bytes")).await.unwrap();
        let b = blobs.put(Bytes::from_static(b"bytes")).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(blobs.get(&a.key).await.unwrap(), "bytes");
        assert!(blobs.contains(&a.key).await.unwrap());
        let files = walk(dir.path());
        assert_eq!(files, 1, "one file for the same bytes stored twice");
    }

    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() { walk(&e.path()) } else { 1 }
            })
            .sum()
    }

    #[tokio::test]
    async fn keys_that_are_not_ours_are_refused_before_any_io() {
        let blobs = BlobStore::in_memory();
        for bad in ["../etc/passwd", "sha256/zz/abc", "sha256/ab/../../x", ""] {
            assert!(matches!(blobs.get(bad).await, Err(BlobError::InvalidKey(_))), "{bad}");
        }
        let missing = format!("sha256/00/{}", "0".repeat(64));
        assert!(matches!(blobs.get(&missing).await, Err(BlobError::NotFound(_))));
    }

    #[tokio::test]
    async fn the_size_limit_is_a_typed_error() {
        let blobs = BlobStore::in_memory().with_max_size(3);
        assert!(matches!(
            blobs.put(Bytes::from_static(b"four")).await,
            Err(BlobError::TooLarge { size: 4, limit: 3 })
        ));
    }
}
