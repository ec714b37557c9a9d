//! # channel-email
//!
//! The IMAP/SMTP channel of the channel family: [`EmailChannel`] implements
//! [`channel_core::Channel`] for one mailbox.
//!
//! * **Receive** with async-imap on tokio over rustls (implicit TLS or STARTTLS; plaintext
//!   only when the account says so). IDLE when the server has it (renewed every 29 min, a
//!   server silent for 5 min is taken for dead, `DONE` answered within 15 s), polling every
//!   30 s otherwise. Connect, read and write limits live on the stream itself
//!   (an internal timeout stream); any error or timeout throws the session away and the loop
//!   reconnects with jittered backoff (2 s to 80 s).
//! * **Never lose, never duplicate**: per folder, a [`FolderCursor`]
//!   (UIDVALIDITY, UIDNEXT) advances only with the commit of the messages it covers (it
//!   rides on the last message of each batch). UID FETCH uses explicit UID sets in batches
//!   of at most 500 and must end with a tagged OK (an EOF in the middle is an error). The
//!   provider id is the Message-ID (X-Microsoft-Original-Message-ID first; without either, a
//!   hash of the whole message less the trace fields added in transit,
//!   the content id), which the store deduplicates on.
//! * **Parse** with mail-parser; a message that cannot be parsed is delivered raw with
//!   `parse_error` set; every text part the sender wrote is kept; structural defects (missing
//!   boundaries, a header without its blank line, unknown charsets, raw 8-bit header bytes)
//!   are listed with the codes of [`defect`] and the raw message is kept.
//! * **Thread** on the root of References, every id carried along; mail without
//!   them joins a recent thread of the same normalized subject and participant.
//! * **Send** with lettre (pooled, rustls); the Message-ID is the engine's `client_key`;
//!   bad input is refused before anything is sent.
//! * **Sent folder** watched: what the owner sent from other clients arrives as outbound
//!   messages whose `client_key` is their Message-ID, so our own sends are matched, not
//!   stored twice.
//!
//! ```no_run
//! use std::sync::Arc;
//! use channel_email::{EmailChannel, EmailConfig, ServerConfig};
//!
//! # fn main() -> Result<(), channel_core::ChannelError> {
//! let config = EmailConfig::new(
//!     "me@example.org",
//!     ServerConfig::tls("imap.example.org", 993).credentials("me@example.org", "secret"),
//!     ServerConfig::tls("smtp.example.org", 465).credentials("me@example.org", "secret"),
//! );
//! let channel: Arc<dyn channel_core::Channel> = Arc::new(EmailChannel::new(config)?);
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod account;
mod backoff;
mod channel;
mod config;
mod cursor;
pub mod defect;
mod duration;
mod error;
mod fetch;
mod history;
mod idle;
mod imap_session;
mod parse;
mod provider;
mod send;
mod sent_folder;
mod stream;
mod structure;
mod sync;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod thread;
mod thread_index;
mod thread_warmup;
mod verify;
mod watch;

pub use account::{
    EmailAccountConfig, Folders, ImapSettings, PASSWORD_KEY, SmtpAuth, SmtpSettings,
};
pub use channel::EmailChannel;

pub use config::{DEFAULT_BACKOFF, EmailConfig, Security, ServerConfig, StartFrom, Timeouts};
pub use cursor::FolderCursor;
pub use provider::{EmailProvider, FALLBACK_MESSAGE_ID_DOMAIN, KIND, PASSWORD_FLOW};
pub use send::{AttachmentSource, default_subject};
pub use sent_folder::USUAL_SENT_NAMES;
pub use thread_warmup::WARMUP_LIMIT;
pub use verify::{Server, Verified, VerifyError, verify};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
