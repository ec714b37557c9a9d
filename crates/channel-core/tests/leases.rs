//! LeaseKeeper: the leader lease and account leases shared by several processes.

use std::sync::Arc;
use std::time::Duration;

use channel_core::clock::TokioClock;
use channel_core::lease_keeper::LeaseKeeper;
use channel_core::testing::MemoryStore;
use channel_core::{Lease, Timestamp};

fn keeper(store: &Arc<MemoryStore>, name: &str, clock: TokioClock) -> LeaseKeeper {
    LeaseKeeper::new(store.clone(), name, Arc::new(clock))
}

#[tokio::test(start_paused = true)]
async fn one_process_holds_a_lease_and_keeps_it_by_renewing() {
    let store = Arc::new(MemoryStore::new());
    let clock = TokioClock::starting_at(Timestamp(1_000_000));
    let mut a = keeper(&store, "a", clock);
    let mut b = keeper(&store, "b", clock);
    let wanted = vec![Lease::LEADER.to_owned(), "account:x".to_owned()];
    assert_eq!(a.tick(&wanted).await.gained.len(), 2);
    for _ in 0..10 {
        tokio::time::advance(LeaseKeeper::DEFAULT_RENEW_EVERY).await;
        assert!(a.tick(&wanted).await.lost.is_empty(), "renewing keeps it");
        assert!(b.tick(&wanted).await.gained.is_empty(), "the other process never gets it");
    }
    assert!(a.holds(Lease::LEADER) && !b.holds(Lease::LEADER));
}

#[tokio::test(start_paused = true)]
async fn a_process_that_stops_renewing_loses_its_lease_to_another() {
    let store = Arc::new(MemoryStore::new());
    let clock = TokioClock::starting_at(Timestamp(1_000_000));
    let mut a = keeper(&store, "a", clock);
    let mut b = keeper(&store, "b", clock);
    let wanted = vec![Lease::LEADER.to_owned()];
    a.tick(&wanted).await;
    let term = a.lease(Lease::LEADER).unwrap().term;
    // a hangs past the TTL.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(!a.holds(Lease::LEADER), "a stops trusting its lease before it expires");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(b.tick(&wanted).await.gained, wanted);
    assert!(b.lease(Lease::LEADER).unwrap().term > term, "the new holder has a higher term");
    assert_eq!(a.tick(&wanted).await.lost, wanted, "the old holder learns it lost the lease");
}

#[tokio::test(start_paused = true)]
async fn released_leases_are_taken_over_at_once() {
    let store = Arc::new(MemoryStore::new());
    let clock = TokioClock::starting_at(Timestamp(1_000_000));
    let mut a = keeper(&store, "a", clock);
    let mut b = keeper(&store, "b", clock);
    let wanted = vec!["account:1".to_owned()];
    a.tick(&wanted).await;
    a.release_all().await;
    assert_eq!(b.tick(&wanted).await.gained, wanted);
    // Not wanted any more: released.
    assert_eq!(b.tick(&[]).await.lost, wanted);
    assert_eq!(a.tick(&wanted).await.gained, wanted);
}
