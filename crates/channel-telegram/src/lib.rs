#![cfg_attr(docsrs, feature(doc_cfg))]
// The README's examples use the `testing` feature: without it, a shorter crate doc.
#![cfg_attr(feature = "testing", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "testing"),
    doc = "The Telegram channel of the channel family, on grammers 0.11: see the README \
           (built into these docs with the `testing` feature)."
)]

pub mod account_config;
mod address;
mod changes;
mod channel;
mod config;
mod echoes;
mod error;
pub mod login;
mod mapping;
mod media;
mod outbox;
pub mod provider;
pub mod session;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use account_config::TelegramAccountConfig;
pub use address::random_id;
pub use channel::TelegramChannel;
pub use config::TelegramConfig;
pub use provider::{KIND, TelegramProvider};
pub use session::{AccountSession, SessionError, StoredSession};
