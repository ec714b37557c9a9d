//! # channel-core
//!
//! The domain model, the contracts and the durable engine of the channel family.
//!
//! * [`model`]: accounts, identities (linked to a contact or unlinked), conversations,
//!   messages, jobs, leases and events.
//! * [`provider::Provider`]: the plug-in of one kind of account (its configuration,
//!   channels, login flows and idempotency keys); [`Channel`]: one account's connection;
//!   [`Store`]: persistence; [`BlobStore`]: attachment bytes.
//! * The [`Engine`]: idempotent ingest ([`Engine::deliver`]), durable sends
//!   ([`Engine::send`] and the [`Dispatcher`](dispatcher::Dispatcher)), history syncs, the
//!   conversation lifecycle ([`Engine::sweep_account`]) and encrypted account state
//!   ([`state`]).
//! * The [`Runtime`](runtime::Runtime): runs it all in a process, sharing a database with
//!   other processes through leases ([`lease_keeper`]).
//! * [`testing`] (feature `testing`): `MemoryStore`, `MemoryChannel`, `MemoryProvider` and
//!   the store conformance suite.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod assignment;
pub mod blob;
pub mod channel;
pub mod clock;
pub mod dispatcher;
mod engine;
mod engine_config;
mod error;
pub mod events;
mod fault;
pub mod feed;
pub mod history;
mod ingest;
mod jobs;
pub mod lease_keeper;
pub mod lifecycle;
pub mod model;
pub mod outbound;
pub mod page;
pub mod provider;
pub mod reads;
pub mod retry;
pub mod runtime;
pub mod send_policy;
pub mod state;
mod state_keys;
pub mod store;
#[cfg(any(feature = "testing", doc))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod validate;
pub mod workers;

pub use blob::{BlobError, BlobStore};
pub use channel::{
    Capabilities, Channel, ChannelError, Fault, FaultKind, HistoryRequest, Inbound,
    KNOWN_IDS_LIMIT, PreparedSend, SendReceipt,
};
pub use engine::{Engine, EngineBuilder};
pub use engine_config::{
    DEFAULT_DB_TIMEOUT, DEFAULT_HISTORY_TIMEOUT, DEFAULT_SEND_TIMEOUT, EngineConfig,
};
pub use error::{EngineError, with_timeout};
pub use ingest::AccountSink;
pub use model::*;
pub use retry::Backoff;
/// The secret types of account state, login inputs and keys (re-exported: the version this
/// crate's signatures use).
pub use secrecy::{self, ExposeSecret, SecretSlice, SecretString};
pub use store::{
    AccountStore, ClaimPreference, ConversationStore, DueConversations, IngestDisposition,
    IngestOutcome, IngestRequest, LeaseStore, MessageStore, Notification, QueueDepth, QueueStore,
    SendRequest, Store, StoreError, StoredInbound,
};

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
