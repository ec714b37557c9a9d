//! Edits and deletions of stored messages: from the update stream, and, for supergroups and
//! channels, replayed from their differences on every connect.
//!
//! grammers 0.11 sets a channel's pts to a channel difference's final pts *before* it
//! processes the difference's `other_updates` (`MessageBox::apply_channel_difference`), so it
//! drops each of them as already seen: edits and deletions made in a channel while the
//! account was away never reach the update stream. New messages are not affected (they come
//! as `new_messages`). So on every connect, before grammers starts its own catch-up, the
//! channel asks `updates.getChannelDifference` itself from each channel's committed pts and
//! applies the edits and deletions it finds, leaving grammers' state alone: grammers then
//! asks the same and delivers the new messages. Applying an edit or a deletion twice changes
//! nothing, so a repeat is harmless.

use std::time::Duration;

use channel_core::{ChannelError, Inbound, InboundDeletion};
use grammers_client::Client;
use grammers_tl_types as tl;

use crate::error::classify;
use crate::mapping;

/// Pages of a channel's difference read at most per connect (100 updates each).
const MAX_PAGES: usize = 10;

/// Applies the edit or deletion that `update` carries, if any; returns after the engine's
/// commit. Deletions are split to [`InboundDeletion::MAX_IDS`] (Telegram sends at most 100).
pub(crate) async fn apply(
    inbound: &dyn Inbound,
    update: &tl::enums::Update,
) -> Result<(), ChannelError> {
    let edited = match update {
        tl::enums::Update::EditMessage(u) => mapping::edit(&u.message),
        tl::enums::Update::EditChannelMessage(u) => mapping::edit(&u.message),
        _ => None,
    };
    if let Some(edit) = edited {
        inbound.edited(edit).await?;
    }
    if let Some(deletion) = mapping::deletion(update) {
        for ids in deletion.provider_ids.chunks(InboundDeletion::MAX_IDS) {
            inbound
                .deleted(InboundDeletion {
                    provider_ids: ids.to_vec(),
                    deleted_at: deletion.deleted_at,
                })
                .await?;
        }
    }
    Ok(())
}

/// Reads the difference of `channel` from `pts` (at most [`MAX_PAGES`] pages, each request
/// under `timeout`) and applies the edits and deletions in it. A `channelDifferenceTooLong`
/// or a difference longer than [`MAX_PAGES`] ends the replay: what it skipped is lost
/// (logged).
pub(crate) async fn replay_channel(
    client: &Client,
    inbound: &dyn Inbound,
    channel: tl::enums::InputChannel,
    mut pts: i32,
    timeout: Duration,
) -> Result<(), ChannelError> {
    for _ in 0..MAX_PAGES {
        let request = tl::functions::updates::GetChannelDifference {
            force: false,
            channel: channel.clone(),
            filter: tl::enums::ChannelMessagesFilter::Empty,
            pts,
            limit: 100,
        };
        let difference = tokio::time::timeout(timeout, client.invoke(&request))
            .await
            .map_err(|_| ChannelError::Timeout {
                operation: "telegram.get_channel_difference".to_owned(),
                after: timeout,
            })?
            .map_err(|e| classify(&e))?;
        match difference {
            tl::enums::updates::ChannelDifference::Empty(_) => return Ok(()),
            tl::enums::updates::ChannelDifference::TooLong(_) => {
                tracing::warn!(
                    "a channel's difference is too long: its edits and deletions while away are not replayed"
                );
                return Ok(());
            }
            tl::enums::updates::ChannelDifference::Difference(d) => {
                for update in &d.other_updates {
                    inbound.alive();
                    apply(inbound, update).await?;
                }
                if d.r#final || d.pts <= pts {
                    return Ok(());
                }
                pts = d.pts;
            }
        }
    }
    tracing::warn!(
        pages = MAX_PAGES,
        "a channel's difference is longer than the replay reads: later edits and deletions while away are not replayed"
    );
    Ok(())
}
