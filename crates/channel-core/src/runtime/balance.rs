//! Balanced workers: with `n` live workers, each holds about `1/n` of the accounts it can
//! run. Each worker prefers the accounts whose hash with its id is highest (rendezvous
//! hashing), so that workers reach for different accounts; it acquires up to its share, and
//! hands over what it holds beyond its share only when it was over for two ticks in a row
//! (hysteresis: a worker that joins or leaves for a moment moves nothing).

use std::collections::BTreeSet;

use crate::model::AccountId;

/// What the lease loop does with the accounts this tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Accounts to try to acquire, best first (the keeper stops at `acquire_up_to`).
    pub(crate) try_acquire: Vec<AccountId>,
    /// How many new accounts to acquire at most.
    pub(crate) acquire_up_to: usize,
    /// Held accounts to hand over (disconnect, then release).
    pub(crate) hand_over: Vec<AccountId>,
    /// Whether this worker holds more than its share now.
    pub(crate) over: bool,
}

/// This worker's share of `total` accounts among `workers` live ones.
pub(crate) fn share(total: usize, workers: usize) -> usize {
    total.div_ceil(workers.max(1))
}

/// The weight of `account` for `worker` (FNV-1a of both ids).
fn weight(worker: &str, account: AccountId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in worker.bytes().chain(account.to_string().into_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The plan of worker `me` for this tick: `candidates` are the enabled accounts it can run,
/// `held` those it holds (or is handing over), `cooling` accounts it handed over recently
/// (not taken again yet), `workers` the live workers, `was_over` whether it was over its
/// share on the previous tick.
pub(crate) fn plan(
    me: &str,
    candidates: &[AccountId],
    held: &BTreeSet<AccountId>,
    cooling: &BTreeSet<AccountId>,
    workers: usize,
    was_over: bool,
) -> Plan {
    let share = share(candidates.len(), workers);
    let mine: Vec<AccountId> = candidates.iter().copied().filter(|a| held.contains(a)).collect();
    let over = mine.len() > share;
    let mut hand_over = Vec::new();
    if over && was_over {
        let mut by_weight = mine.clone();
        by_weight.sort_by_key(|a| weight(me, *a));
        hand_over = by_weight.into_iter().take(mine.len() - share).collect();
    }
    let mut try_acquire: Vec<AccountId> =
        candidates.iter().copied().filter(|a| !held.contains(a) && !cooling.contains(a)).collect();
    try_acquire.sort_by_key(|a| std::cmp::Reverse(weight(me, *a)));
    Plan { try_acquire, acquire_up_to: share.saturating_sub(mine.len()), hand_over, over }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(n: usize) -> Vec<AccountId> {
        (0..n).map(|_| AccountId::new()).collect()
    }

    #[test]
    fn shares_are_within_one() {
        assert_eq!(share(30, 3), 10);
        assert_eq!(share(31, 3), 11);
        assert_eq!(share(5, 0), 5, "alone when no worker is known");
    }

    #[test]
    fn a_worker_over_its_share_hands_over_only_on_the_second_tick() {
        let all = accounts(30);
        let held: BTreeSet<AccountId> = all.iter().copied().collect();
        let first = plan("w-1", &all, &held, &BTreeSet::new(), 3, false);
        assert!(first.over && first.hand_over.is_empty(), "hysteresis");
        assert_eq!(first.acquire_up_to, 0);
        let second = plan("w-1", &all, &held, &BTreeSet::new(), 3, true);
        assert_eq!(second.hand_over.len(), 20);
        assert!(second.hand_over.iter().all(|a| held.contains(a)));
    }

    #[test]
    fn workers_prefer_different_accounts() {
        let all = accounts(30);
        let none = BTreeSet::new();
        let a = plan("worker-a", &all, &none, &none, 3, false);
        let b = plan("worker-b", &all, &none, &none, 3, false);
        assert_eq!(a.acquire_up_to, 10);
        let first_a: BTreeSet<_> = a.try_acquire[..10].iter().collect();
        let first_b: BTreeSet<_> = b.try_acquire[..10].iter().collect();
        assert!(first_a.intersection(&first_b).count() < 10, "rendezvous order differs");
        let cooling: BTreeSet<AccountId> = all[..5].iter().copied().collect();
        let c = plan("worker-c", &all, &none, &cooling, 3, false);
        assert!(c.try_acquire.iter().all(|x| !cooling.contains(x)));
    }
}
