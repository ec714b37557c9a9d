//! The end-of-run summary, read back from the store: what a service would show on its admin
//! page.

use std::collections::BTreeMap;
use std::sync::Arc;

use channel_core::testing::MemoryChannel;
use channel_core::{
    ConversationStatus, IngestDisposition, JobState, MessageId, MessageStatus, Store,
};

use crate::error::{Error, ResultExt};
use crate::short;

const ALL: usize = 100_000;

/// Prints the summary of everything in the store, and what this run delivered.
pub async fn print(store: &Arc<dyn Store>, channel: &MemoryChannel, run: u64) -> Result<(), Error> {
    let accounts = store.accounts().await.context("cannot list the accounts")?;
    println!();
    println!("== summary, read back from the store (run #{run} on this database) ==");
    println!("accounts: {}", accounts.len());
    for a in &accounts {
        println!(
            "  {}  {:<8} {:<30} {}, last reported state: {}",
            short(a.id),
            a.kind.as_str(),
            a.display_name,
            if a.enabled { "enabled" } else { "disabled" },
            a.connection.name()
        );
    }

    let (mut linked, mut unlinked) = (0, 0);
    let mut conversations: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut messages: BTreeMap<(&'static str, &'static str), usize> = BTreeMap::new();
    let mut with_attachments = 0;
    let mut autoreplies = 0;
    for a in &accounts {
        for identity in store.identities(a.id, false).await.context("cannot list identities")? {
            if identity.is_unlinked() {
                unlinked += 1;
            } else {
                linked += 1;
            }
        }
        let convs =
            store.conversations(a.id, None, ALL).await.context("cannot list conversations")?;
        for c in &convs {
            *conversations.entry(c.status.as_str()).or_default() += 1;
            for m in store.messages(c.id, ALL).await.context("cannot list messages")? {
                *messages.entry((m.direction.as_str(), m.status.as_str())).or_default() += 1;
                if !m.attachments.is_empty() {
                    with_attachments += 1;
                }
                if m.origin.to_stored() == "service:autoreply" {
                    autoreplies += 1;
                }
            }
        }
    }
    println!(
        "identities: {} ({linked} linked to a contact, {unlinked} unlinked)",
        linked + unlinked
    );

    let total: usize = conversations.values().sum();
    let by_status: Vec<String> = [
        ConversationStatus::Open,
        ConversationStatus::Idle,
        ConversationStatus::Closed,
        ConversationStatus::Expired,
    ]
    .iter()
    .map(|s| format!("{} {}", s.as_str(), conversations.get(s.as_str()).copied().unwrap_or(0)))
    .collect();
    println!("conversations: {total} ({})", by_status.join(", "));

    let total: usize = messages.values().sum();
    println!("messages: {total} ({with_attachments} with attachments, {autoreplies} auto-replies)");
    for ((direction, status), n) in &messages {
        println!("  {direction:<8} {status:<8} {n:>4}");
    }
    let pending = messages
        .iter()
        .filter(|((_, s), _)| *s == MessageStatus::Pending.as_str())
        .map(|(_, n)| n)
        .sum::<usize>();
    if pending > 0 {
        println!("  ({pending} pending: their send jobs run on the next start)");
    }

    let dead = store
        .jobs_in_state(JobState::Discarded, ALL)
        .await
        .context("cannot list the dead-letter jobs")?;
    println!("dead letter (discarded jobs): {}", dead.len());
    for job in &dead {
        println!(
            "  {} job {}  message {}  attempts {}/{}  error: {}",
            job.kind,
            short(job.id),
            job.message_id.map_or_else(|| "-".to_owned(), short),
            job.attempt,
            job.max_attempts,
            job.last_error.as_deref().unwrap_or("-")
        );
    }

    // Every `Channel::send` call of this run, by message: retries reuse the client key, so a
    // provider that deduplicates on it (Telegram's random_id, an email Message-ID) sends once.
    let sends = channel.sends();
    let mut by_message: Vec<(MessageId, Vec<&str>)> = Vec::new();
    for s in &sends {
        match by_message.iter_mut().find(|(id, _)| *id == s.message_id) {
            Some((_, keys)) => keys.push(&s.client_key),
            None => by_message.push((s.message_id, vec![&s.client_key])),
        }
    }
    println!(
        "sends this run: {} attempt{} for {} message{}",
        sends.len(),
        plural(sends.len()),
        by_message.len(),
        plural(by_message.len())
    );
    for (id, keys) in &by_message {
        let status = match store.message(*id).await {
            Ok(m) => m.status.as_str(),
            Err(_) => "?",
        };
        let same_key = keys.windows(2).all(|w| w[0] == w[1]);
        println!(
            "  message {}  {} attempt{}  {status}{}",
            short(id),
            keys.len(),
            plural(keys.len()),
            match (keys.len(), same_key) {
                (1, _) => "",
                (_, true) => "  (every attempt with the same client key)",
                (_, false) => "  (client keys differ!)",
            }
        );
    }

    let deliveries = channel.deliveries();
    let count = |d: IngestDisposition| {
        deliveries.iter().filter(|r| r.as_ref().is_ok_and(|o| o.disposition == d)).count()
    };
    let failed = deliveries.iter().filter(|r| r.is_err()).count();
    println!(
        "this run: {} deliveries -> {} stored, {} duplicates (already in the store, not stored \
         again){}",
        deliveries.len(),
        count(IngestDisposition::Stored),
        count(IngestDisposition::Duplicate),
        if failed > 0 { format!(", {failed} failed") } else { String::new() },
    );
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
