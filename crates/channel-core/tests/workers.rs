//! Workers on one store: balanced (each holds about its share of the accounts), rebalanced
//! when a worker joins or leaves, an account never run by two workers at once, and a
//! worker's heartbeat row readable by people.

mod common;

use std::sync::Arc;
use std::time::Duration;

use channel_core::clock::TokioClock;
use channel_core::runtime::{Runtime, StaticChannels};
use channel_core::state::StateKey;
use channel_core::testing::{MemoryChannel, MemoryStore};
use channel_core::*;
use common::*;

const ACCOUNTS: usize = 30;

fn engine(store: &Arc<MemoryStore>, worker: &str) -> Engine {
    Engine::builder(store.clone(), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
        .clock(Arc::new(TokioClock::starting_at(START)))
        .send_policy(Arc::new(channel_core::send_policy::AllowAll))
        .worker_id(worker.to_owned())
        .build()
        .unwrap()
}

struct Fleet {
    store: Arc<MemoryStore>,
    accounts: Vec<AccountId>,
    workers: Vec<(String, Runtime)>,
}

impl Fleet {
    async fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let mut accounts = Vec::new();
        for n in 0..ACCOUNTS {
            let new = NewAccount::new(ChannelKind::from_static("memory"), format!("a{n}"));
            accounts.push(store.create_account(new, START).await.unwrap().id);
        }
        Self { store, accounts, workers: Vec::new() }
    }

    async fn start(&mut self, name: &str) {
        let mut channels = StaticChannels::new();
        for a in &self.accounts {
            channels = channels.with(*a, Arc::new(MemoryChannel::new()));
        }
        let runtime = Runtime::builder(engine(&self.store, name), Arc::new(channels))
            .start()
            .await
            .expect("runtime");
        self.workers.push((name.to_owned(), runtime));
    }

    /// How many accounts each worker holds.
    fn held(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|(_, r)| self.accounts.iter().filter(|a| r.holds_account(**a)).count())
            .collect()
    }

    /// No account has a channel attached in two workers.
    fn never_twice(&self) {
        for a in &self.accounts {
            let running = self.workers.iter().filter(|(_, r)| r.engine().channel(*a).is_some());
            assert!(running.count() <= 1, "account {a} runs in two workers at once");
        }
    }

    /// Advances time in steps of 100 ms for `secs`, checking at each step that no account
    /// runs twice; returns when every worker holds its share within one (and all are held).
    async fn until_balanced(&self, secs: u64) -> Vec<usize> {
        let share = ACCOUNTS as f64 / self.workers.len() as f64;
        for _ in 0..secs * 10 {
            self.never_twice();
            let held = self.held();
            let balanced = held.iter().all(|&n| (n as f64 - share).abs() <= 1.0)
                && held.iter().sum::<usize>() == ACCOUNTS;
            if balanced {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not balanced within {secs} s: {:?}", self.held());
    }
}

#[tokio::test(start_paused = true)]
async fn three_workers_hold_a_third_each_and_rebalance_when_one_joins_or_leaves() {
    let mut fleet = Fleet::new().await;
    fleet.start("w1").await;
    fleet.start("w2").await;
    assert_eq!(fleet.until_balanced(60).await.iter().sum::<usize>(), ACCOUNTS);

    // A third joins: within two lease periods (2 × 15 s) each holds 10 ± 1.
    fleet.start("w3").await;
    let held = fleet.until_balanced(30).await;
    assert!(held.iter().all(|&n| (9..=11).contains(&n)), "{held:?}");

    // One leaves: the other two take its accounts, again within two lease periods.
    let (_, gone) = fleet.workers.remove(1);
    gone.shutdown().await;
    let held = fleet.until_balanced(30).await;
    assert_eq!(held, vec![15, 15]);
    for (_, r) in fleet.workers.drain(..) {
        r.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_row_tells_its_loops_and_accounts_and_goes_with_its_worker() {
    let mut fleet = Fleet::new().await;
    fleet.start("w1").await;
    fleet.until_balanced(30).await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    let (_, runtime) = &fleet.workers[0];
    let rows = runtime.workers().await.expect("workers");
    assert_eq!(rows.len(), 1);
    let me = &rows[0];
    assert!(me.alive && me.id == "w1" && me.pid == std::process::id());
    assert_eq!(me.accounts.len(), ACCOUNTS, "the accounts it holds");
    let names: Vec<&str> = me.loops.iter().map(|l| l.name.as_str()).collect();
    for expected in ["dispatcher", "leader", "leases", "heartbeat"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    assert!(me.loops.iter().all(|l| l.state == "running"), "{:?}", me.loops);
    assert!(!me.is_stale(runtime.engine().now(), runtime.engine().config().heartbeat_interval()));

    let (_, runtime) = fleet.workers.remove(0);
    let engine = runtime.engine().clone();
    runtime.shutdown().await;
    assert!(engine.store().workers().await.expect("workers").is_empty(), "gone with it");
}
