//! [`LeaseKeeper`]: acquires and renews named leases (the leader lease, one lease per account)
//! through the store, so that several worker processes can share one database: each account
//! is connected by the process holding its lease, and only the leader schedules sweeps and
//! rescues jobs.
//!
//! Call [`LeaseKeeper::tick`] every `renew_every` (5 s) with the names you want; leases live
//! `ttl` (15 s). A lease whose renewal keeps failing (database down) is given up locally a
//! little before it would expire, so two processes never act on one account at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::with_timeout;
use crate::model::{Lease, Timestamp};
use crate::store::{Store, StoreError};

/// Leases gained and lost in one [`LeaseKeeper::tick`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseChanges {
    /// Names now held that were not before.
    pub gained: Vec<String>,
    /// Names held before that are not any more (taken over, expired, or no longer wanted and
    /// released).
    pub lost: Vec<String>,
}

/// Keeps named leases for one process.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use channel_core::{lease_keeper::LeaseKeeper, testing::MemoryStore, clock::SystemClock, Lease};
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new());
/// let mut a = LeaseKeeper::new(store.clone(), "proc-a", Arc::new(SystemClock));
/// let mut b = LeaseKeeper::new(store.clone(), "proc-b", Arc::new(SystemClock));
/// let wanted = [Lease::LEADER.to_owned()];
/// assert_eq!(a.tick(&wanted).await.gained, vec![Lease::LEADER.to_owned()]);
/// assert!(b.tick(&wanted).await.gained.is_empty(), "one leader at a time");
/// assert!(a.holds(Lease::LEADER));
/// # });
/// ```
pub struct LeaseKeeper {
    store: Arc<dyn Store>,
    holder: String,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    db_timeout: Duration,
    held: HashMap<String, Lease>,
}

impl fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("holder", &self.holder)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LeaseKeeper {
    /// The default time to live of a lease: 15 s.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
    /// The default renewal period: 5 s.
    pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(5);

    /// A keeper for process `holder`, with the default TTL and a 10 s database timeout.
    pub fn new(store: Arc<dyn Store>, holder: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            holder: holder.into(),
            clock,
            ttl: Self::DEFAULT_TTL,
            db_timeout: crate::DEFAULT_DB_TIMEOUT,
            held: HashMap::new(),
        }
    }

    /// Sets the time to live and the database timeout (keep the timeout well under the TTL).
    pub fn with_ttl(mut self, ttl: Duration, db_timeout: Duration) -> Self {
        self.ttl = ttl;
        self.db_timeout = db_timeout.min(ttl / 3);
        self
    }

    /// Whether the lease `name` is held (and not about to run out).
    pub fn holds(&self, name: &str) -> bool {
        self.held.get(name).is_some_and(|l| self.safe(l, self.clock.now()))
    }

    /// The held lease `name` (its term is the fencing token).
    pub fn lease(&self, name: &str) -> Option<&Lease> {
        self.held.get(name)
    }

    /// The names held.
    pub fn held(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(String::as_str)
    }

    /// A lease is trusted until a third of its TTL before it expires.
    fn safe(&self, lease: &Lease, now: Timestamp) -> bool {
        now < lease.expires_at.minus(self.ttl / 3)
    }

    /// Renews held leases that are still wanted, tries to acquire wanted ones not held, and
    /// releases held ones no longer wanted.
    pub async fn tick(&mut self, wanted: &[String]) -> LeaseChanges {
        self.tick_limited(wanted, usize::MAX).await
    }

    /// [`tick`](Self::tick), acquiring at most `new_accounts` account leases
    /// ([`Lease::account_name`]) it does not hold yet, in the order of `wanted`: how a
    /// balanced worker takes no more than its share.
    pub async fn tick_limited(&mut self, wanted: &[String], new_accounts: usize) -> LeaseChanges {
        let mut gained_accounts = 0usize;
        let mut changes = LeaseChanges::default();
        let names: Vec<String> = self.held.keys().cloned().collect();
        for name in names {
            let Some(lease) = self.held.get(&name).cloned() else { continue };
            if !wanted.contains(&name) {
                self.held.remove(&name);
                if let Err(e) =
                    with_timeout("release_lease", self.db_timeout, self.store.release_lease(&lease))
                        .await
                {
                    tracing::debug!(lease = %name, error = %e, "release failed; the lease will expire");
                }
                changes.lost.push(name);
                continue;
            }
            let now = self.clock.now();
            let renewed = with_timeout(
                "renew_lease",
                self.db_timeout,
                self.store.renew_lease(&lease, self.ttl, now),
            )
            .await;
            match renewed {
                Ok(l) => {
                    self.held.insert(name, l);
                }
                Err(StoreError::LeaseLost { .. }) => {
                    tracing::warn!(lease = %name, "lease lost to another process");
                    self.held.remove(&name);
                    changes.lost.push(name);
                }
                Err(e) => {
                    if !self.safe(&lease, self.clock.now()) {
                        tracing::warn!(lease = %name, error = %e, "lease could not be renewed in time; giving it up");
                        self.held.remove(&name);
                        changes.lost.push(name);
                    } else {
                        tracing::debug!(lease = %name, error = %e, "lease renewal failed; retrying next tick");
                    }
                }
            }
        }
        for name in wanted {
            if self.held.contains_key(name) {
                continue;
            }
            let account = name.starts_with("account:");
            if account && gained_accounts >= new_accounts {
                continue;
            }
            let now = self.clock.now();
            let acquire = self.store.acquire_lease(name, &self.holder, self.ttl, now);
            match with_timeout("acquire_lease", self.db_timeout, acquire).await {
                Ok(Some(l)) => {
                    self.held.insert(name.clone(), l);
                    changes.gained.push(name.clone());
                    gained_accounts += usize::from(account);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(lease = %name, error = %e, "could not acquire lease"),
            }
        }
        changes
    }

    /// Releases every held lease (graceful shutdown), so other processes take over at once.
    pub async fn release_all(&mut self) {
        for (name, lease) in self.held.drain() {
            if let Err(e) =
                with_timeout("release_lease", self.db_timeout, self.store.release_lease(&lease))
                    .await
            {
                tracing::debug!(lease = %name, error = %e, "release failed; the lease will expire");
            }
        }
    }
}
