//! The domain model: accounts, identities, conversations, messages, jobs, leases and events.

mod account;
mod account_settings;
mod conversation;
pub mod defect;
mod event;
mod identity;
mod ids;
mod job;
mod lease;
mod message;
mod timestamp;

pub use account::{
    Account, ChannelKind, ConnectionState, InvalidKind, NewAccount, UnknownValue, UserAction,
};
pub use account_settings::{AccountSettings, AccountUpdate, Rate, SendRates};
pub use conversation::{Conversation, ConversationStatus, LifecyclePolicy, OnClosed};
pub use defect::{Defect, LeftOut};
pub use event::Event;
pub use identity::{Identity, IdentityInfo};
pub use ids::{AccountId, ContactId, ConversationId, IdentityId, JobId, MessageId};
pub use job::{
    AttemptOutcome, Enqueued, Job, JobAttempt, JobKind, JobLease, JobState, MessageOutcome, NewJob,
};
pub use lease::Lease;
pub use message::{
    Attachment, AttachmentData, CursorUpdate, Direction, InboundDeletion, InboundEdit,
    InboundMessage, Message, MessageStatus, Origin, OutboundMessage,
};
pub use timestamp::Timestamp;
