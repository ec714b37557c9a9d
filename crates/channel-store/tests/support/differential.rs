//! A differential check: the same random workload through `MemoryStore` (the reference) and a
//! SQL store must give the same outcomes and the same stored rows.

use std::time::Duration;

use channel_core::testing::MemoryStore;
use channel_core::{
    AccountId, ChannelKind, ConversationId, ConversationStatus, CursorUpdate, Direction,
    IdentityId, IdentityInfo, IngestRequest, JobId, LifecyclePolicy, MessageId, NewAccount,
    OnClosed, Origin, SendRequest, Store, StoredInbound, Timestamp,
};
use channel_core::{AccountStore, ConversationStore, MessageStore};

/// A small deterministic generator (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn inbound(rng: &mut Rng, step: u64, used: &[String], sent_at: Timestamp) -> StoredInbound {
    let provider_id = if !used.is_empty() && rng.chance(15) {
        used[rng.below(used.len() as u64) as usize].clone()
    } else {
        format!("p-{step}")
    };
    let reply_to = if !used.is_empty() && rng.chance(30) {
        Some(used[rng.below(used.len() as u64) as usize].clone())
    } else {
        None
    };
    let mut references = Vec::new();
    if rng.chance(20) {
        for _ in 0..rng.below(4) {
            if rng.chance(50) && !used.is_empty() {
                references.push(used[rng.below(used.len() as u64) as usize].clone());
            } else {
                references.push(format!("unknown-{}", rng.below(1000)));
            }
        }
    }
    let outbound = rng.chance(15);
    let mut remote = IdentityInfo::new(format!("addr-{}", rng.below(12)));
    if rng.chance(30) {
        remote = remote.with_display_name(format!("Name {}", rng.below(3)));
    }
    if rng.chance(10) {
        remote = remote.with_username(format!("user{}", rng.below(3)));
    }
    StoredInbound {
        provider_id,
        thread_key: format!("thread-{}", rng.below(8)),
        remote,
        direction: if outbound { Direction::Outbound } else { Direction::Inbound },
        origin: if outbound { Origin::OtherApp } else { Origin::Remote },
        client_key: if outbound && rng.chance(60) {
            Some(format!("ck-{}", rng.below(10)))
        } else {
            None
        },
        text: Some(format!("text {step}")),
        html: if rng.chance(10) { Some(format!("<p>{step}</p>")) } else { None },
        reply_to,
        references,
        attachments: Vec::new(),
        parse_error: None,
        defects: Vec::new(),
        sent_at,
        cursor: if rng.chance(50) {
            Some(CursorUpdate {
                key: format!("cursor-{}", rng.below(2)),
                value: step.to_be_bytes().to_vec(),
            })
        } else {
            None
        },
    }
}

/// Runs the workload on `sql` and on a `MemoryStore` and compares everything.
pub async fn check_against_memory(sql: &dyn Store, seed: u64, steps: u64) {
    let memory = MemoryStore::new();
    let mut rng = Rng::new(seed);
    let t0 = Timestamp(1_700_000_000_000);
    let mut accounts = Vec::new();
    for n in 0..2 {
        let new = NewAccount::new(ChannelKind::from_static("memory"), format!("acc-{n}"));
        let a = memory.create_account(new.clone(), t0).await.expect("memory account");
        let b = sql.create_account(new, t0).await.expect("sql account");
        assert_eq!(a, b);
        accounts.push(a.id);
    }
    let mut used: Vec<String> = Vec::new();
    let mut step = 0u64;
    let mut now = t0;
    while step < steps {
        now = now.plus(Duration::from_secs(1 + rng.below(120)));
        let action = rng.below(100);
        if action < 8 {
            // Close, idle or reopen a conversation through the compare-and-set.
            let account = accounts[rng.below(2) as usize];
            let convs = memory.conversations(account, None, 1000).await.expect("conversations");
            if convs.is_empty() {
                continue;
            }
            let c = &convs[rng.below(convs.len() as u64) as usize];
            let status = match rng.below(4) {
                0 => ConversationStatus::Idle,
                1 => ConversationStatus::Closed,
                2 => ConversationStatus::Expired,
                _ => ConversationStatus::Open,
            };
            let a = memory.set_conversation_status(c.id, c.version, status, now).await;
            let b = sql.set_conversation_status(c.id, c.version, status, now).await;
            assert_eq!(a.is_ok(), b.is_ok(), "set_conversation_status: {a:?} vs {b:?}");
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a, b);
            }
            continue;
        }
        if action < 14 {
            // Queue a send in a conversation (its client key may be echoed later).
            let account = accounts[rng.below(2) as usize];
            let convs = memory.conversations(account, None, 1000).await.expect("conversations");
            if convs.is_empty() {
                continue;
            }
            let c = &convs[rng.below(convs.len() as u64) as usize];
            let req = SendRequest {
                message_id: MessageId::new(),
                job_id: JobId::new(),
                conversation_id: c.id,
                origin: Origin::Service("test".into()),
                client_key: format!("ck-{}", rng.below(10)),
                text: Some("reply".into()),
                html: None,
                subject: (rng.below(2) == 0).then(|| "Re: hi".to_owned()),
                reply_to: None,
                attachments: Vec::new(),
                max_attempts: 3,
                run_at: now,
                now,
            };
            let a = memory.enqueue_send(req.clone()).await;
            let b = sql.enqueue_send(req).await;
            assert_eq!(a.is_ok(), b.is_ok(), "enqueue_send: {a:?} vs {b:?}");
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a, b);
            }
            continue;
        }
        // A batch of inbound messages.
        let big = rng.chance(20);
        let size = 1 + rng.below(if big { 60 } else { 6 });
        let mut batch = Vec::new();
        for _ in 0..size {
            step += 1;
            let account = accounts[rng.below(2) as usize];
            let message = inbound(&mut rng, step, &used, now);
            used.push(message.provider_id.clone());
            let policy = LifecyclePolicy {
                on_closed: if rng.chance(50) { OnClosed::Reopen } else { OnClosed::StartNew },
                expire_after: if rng.chance(30) { Some(Duration::from_secs(3600)) } else { None },
                ..LifecyclePolicy::default()
            };
            batch.push(IngestRequest {
                account_id: account,
                new_message_id: MessageId::new(),
                new_identity_id: IdentityId::new(),
                new_conversation_id: ConversationId::new(),
                message,
                policy,
                now,
            });
        }
        let a = memory.ingest_batch(&batch).await.expect("memory ingest_batch");
        let b = if batch.len() == 1 {
            vec![sql.ingest(batch.remove(0)).await.expect("sql ingest")]
        } else {
            sql.ingest_batch(&batch).await.expect("sql ingest_batch")
        };
        assert_eq!(a, b, "ingest outcomes at step {step}");
    }
    compare(&memory, sql, &accounts).await;
}

async fn compare(memory: &MemoryStore, sql: &dyn Store, accounts: &[AccountId]) {
    for &account in accounts {
        assert_eq!(
            memory.identities(account, false).await.expect("identities"),
            sql.identities(account, false).await.expect("identities"),
            "identities"
        );
        let a = memory.conversations(account, None, 10_000).await.expect("conversations");
        let b = sql.conversations(account, None, 10_000).await.expect("conversations");
        assert_eq!(a, b, "conversations");
        for c in &a {
            assert_eq!(
                memory.messages(c.id, 10_000).await.expect("messages"),
                sql.messages(c.id, 10_000).await.expect("messages"),
                "messages of {}",
                c.id
            );
        }
        for key in ["cursor-0", "cursor-1"] {
            assert_eq!(
                memory.state_get(account, key).await.expect("state"),
                sql.state_get(account, key).await.expect("state"),
                "cursor {key}"
            );
        }
    }
}
