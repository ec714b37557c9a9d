//! Assignment: which operator of the service answers a conversation. Claimed, released and
//! transferred with compare-and-set, so that two operators never both get it, each change
//! published as [`Event::ConversationAssigned`].

use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::{Conversation, ConversationId, Event};
use crate::store::StoreError;
use crate::validate;

/// A change of a conversation's assignee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment<'a> {
    /// `operator` takes an unassigned conversation (or keeps one it holds already).
    Claim {
        /// Who claims it.
        operator: &'a str,
    },
    /// `operator` gives back a conversation it holds.
    Release {
        /// Who holds it.
        operator: &'a str,
    },
    /// The holder `from` hands the conversation to `to`.
    Transfer {
        /// Who holds it.
        from: &'a str,
        /// Who gets it.
        to: &'a str,
    },
}

impl Engine {
    /// Claims, releases or transfers a conversation and publishes
    /// [`Event::ConversationAssigned`] when it changed.
    ///
    /// Errors: [`EngineError::AssignedElsewhere`] when the conversation is not in the state
    /// the change needs (claimed by another operator first, or released meanwhile), naming
    /// its current assignee; [`EngineError::UnknownConversation`]; an operator id that is
    /// empty or over the id limit is [`EngineError::Invalid`].
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use channel_core::{*, testing::{MemoryStore, MEMORY_KIND}, state::StateKey};
    /// use channel_core::assignment::Assignment;
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// # let store = Arc::new(MemoryStore::new());
    /// # let engine = Engine::builder(store.clone(), StateKey::generate()).blob_store(BlobStore::in_memory()).build().unwrap();
    /// # let account = store.create_account(NewAccount::new(MEMORY_KIND, "a"), engine.now()).await.unwrap();
    /// # let msg = InboundMessage::text("m1", "chat", IdentityInfo::new("tg:1"), "hi", engine.now());
    /// # let conversation = engine.deliver(account.id, msg).await.unwrap().conversation_id;
    /// engine.assign(conversation, Assignment::Claim { operator: "ana" }).await.unwrap();
    /// let lost = engine.assign(conversation, Assignment::Claim { operator: "ben" }).await;
    /// assert!(matches!(lost, Err(EngineError::AssignedElsewhere { .. })));
    /// let moved = Assignment::Transfer { from: "ana", to: "ben" };
    /// let c = engine.assign(conversation, moved).await.unwrap();
    /// assert_eq!(c.assignee.as_deref(), Some("ben"));
    /// # });
    /// ```
    pub async fn assign(
        &self,
        conversation: ConversationId,
        change: Assignment<'_>,
    ) -> Result<Conversation, EngineError> {
        let limit = self.inner.config.limits.id;
        let (expected, new) = match change {
            Assignment::Claim { operator } => {
                validate::check_str("operator", operator, limit, true)?;
                let current = self
                    .db("conversation", self.inner.store.conversation(conversation))
                    .await
                    .map_err(|e| unknown(conversation, e))?;
                if current.assignee.as_deref() == Some(operator) {
                    return Ok(current);
                }
                (None, Some(operator))
            }
            Assignment::Release { operator } => {
                validate::check_str("operator", operator, limit, true)?;
                (Some(operator), None)
            }
            Assignment::Transfer { from, to } => {
                validate::check_str("from", from, limit, true)?;
                validate::check_str("to", to, limit, true)?;
                (Some(from), Some(to))
            }
        };
        let now = self.now();
        let set = self.inner.store.set_assignee(conversation, expected, new, now);
        let updated = match self.db("set_assignee", set).await {
            Ok(c) => c,
            Err(StoreError::AssigneeChanged { current, .. }) => {
                return Err(EngineError::AssignedElsewhere { conversation, assignee: current });
            }
            Err(e) => return Err(unknown(conversation, e)),
        };
        self.inner
            .events
            .publish(Event::ConversationAssigned {
                account_id: updated.account_id,
                conversation_id: conversation,
                assignee: updated.assignee.clone(),
                previous: expected.map(str::to_owned),
            })
            .await;
        Ok(updated)
    }
}

fn unknown(conversation: ConversationId, e: StoreError) -> EngineError {
    match e {
        StoreError::NotFound { .. } => EngineError::UnknownConversation(conversation),
        e => e.into(),
    }
}
