//! The registered loops and their shared state, which the monitor scans and the runners update.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, millis};
use crate::context::Beacon;
use crate::intensity::RestartHistory;
use crate::loop_spec::{EscalationFn, Factory};
use crate::shutdown::ShutdownOutcome;
use crate::{Backoff, LastError, LoopState, LoopStatus, RestartPolicy, Timestamp};

/// Locks a mutex, ignoring poisoning: the state behind it stays consistent because no code
/// panics while holding it, and the watchdog must keep working regardless.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// A loop's settings after defaults were applied and values checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) policy: RestartPolicy,
    pub(crate) max_silence: Duration,
    pub(crate) grace: Duration,
    pub(crate) critical: bool,
    pub(crate) backoff: Backoff,
}

/// One registered loop.
pub(crate) struct LoopEntry {
    pub(crate) name: Arc<str>,
    pub(crate) settings: Settings,
    max_silence_ms: u64,
    pub(crate) factory: Factory,
    pub(crate) escalation: Option<EscalationFn>,
    pub(crate) state: Mutex<EntryState>,
    /// Cancelled by shutdown to stop this loop for good.
    pub(crate) stop: CancellationToken,
    /// The runner task, taken by shutdown to wait for it.
    pub(crate) runner: Mutex<Option<JoinHandle<()>>>,
    pub(crate) clock: Arc<Clock>,
    ping_age: metrics::Gauge,
}

/// The mutable part of a loop, behind its mutex. No code awaits or calls user code while
/// holding it.
#[derive(Debug)]
pub(crate) struct EntryState {
    pub(crate) phase: LoopState,
    pub(crate) since: Timestamp,
    pub(crate) beacon: Option<Arc<Beacon>>,
    /// While the current run is watched for silence: the token the monitor cancels when it
    /// finds the run silent.
    pub(crate) watch: Option<CancellationToken>,
    pub(crate) running_since: Option<Instant>,
    /// Abort handle of the current run's task, so shutdown can enforce its deadline itself.
    pub(crate) task: Option<tokio::task::AbortHandle>,
    /// Runs started so far; the current run's number is one less.
    pub(crate) runs_started: u64,
    pub(crate) restarts_total: u64,
    pub(crate) history: RestartHistory,
    pub(crate) last_error: Option<LastError>,
    /// Set by shutdown before it cancels `stop`: the run must be gone by then.
    pub(crate) stop_deadline: Option<Instant>,
    pub(crate) shutdown_outcome: Option<ShutdownOutcome>,
}

impl EntryState {
    pub(crate) fn set_phase(&mut self, phase: LoopState) {
        if self.phase != phase {
            self.phase = phase;
            self.since = Timestamp::now();
        }
    }
}

impl LoopEntry {
    pub(crate) fn new(
        name: Arc<str>,
        settings: Settings,
        history: RestartHistory,
        factory: Factory,
        escalation: Option<EscalationFn>,
        clock: Arc<Clock>,
    ) -> Self {
        let ping_age = metrics::gauge!("watchdog_loop_ping_age_seconds", "loop" => name.clone());
        Self {
            max_silence_ms: millis(settings.max_silence),
            name,
            settings,
            factory,
            escalation,
            state: Mutex::new(EntryState {
                phase: LoopState::Starting,
                since: Timestamp::now(),
                beacon: None,
                watch: None,
                running_since: None,
                task: None,
                runs_started: 0,
                restarts_total: 0,
                history,
                last_error: None,
                stop_deadline: None,
                shutdown_outcome: None,
            }),
            stop: CancellationToken::new(),
            runner: Mutex::new(None),
            clock,
            ping_age,
        }
    }

    /// One monitor check at `now_ms`: if the current run is watched and silent for longer than
    /// `max_silence`, stop watching it and wake its runner.
    pub(crate) fn check_silence(&self, now_ms: u64) {
        let mut st = lock(&self.state);
        let (Some(_), Some(beacon)) = (&st.watch, &st.beacon) else {
            return;
        };
        let age = now_ms.saturating_sub(beacon.last_ping());
        self.ping_age.set(age as f64 / 1000.0);
        if age > self.max_silence_ms
            && let Some(watch) = st.watch.take()
        {
            watch.cancel();
        }
    }

    /// The loop's status as of now.
    pub(crate) fn status(&self) -> LoopStatus {
        let now = Instant::now();
        let now_ms = self.clock.ms_at(now);
        let mut st = lock(&self.state);
        if st.phase == LoopState::Running {
            let since = st.running_since;
            st.history.forget_if_stable(since, now);
        }
        LoopStatus {
            name: self.name.to_string(),
            state: st.phase,
            since: st.since,
            healthy: st.phase.is_healthy(),
            critical: self.settings.critical,
            policy: self.settings.policy,
            run: st.runs_started.saturating_sub(1),
            last_ping_age_ms: st.beacon.as_ref().map(|b| now_ms.saturating_sub(b.last_ping())),
            max_silence: self.settings.max_silence,
            restarts_total: st.restarts_total,
            restarts_in_window: st.history.in_window(now),
            last_error: st.last_error.clone(),
        }
    }

    /// Whether the loop is critical and failed.
    pub(crate) fn critical_failed(&self) -> bool {
        self.settings.critical && lock(&self.state).phase == LoopState::Failed
    }
}

/// All registered loops, in registration order.
#[derive(Default)]
pub(crate) struct Registry {
    inner: RwLock<Loops>,
    closed: AtomicBool,
}

#[derive(Default)]
struct Loops {
    entries: Vec<Arc<LoopEntry>>,
    names: HashSet<Arc<str>>,
}

impl Registry {
    /// Adds `entry` unless its name is taken or the registry is closed; `start` runs under the
    /// registry's lock, so shutdown either sees the loop or the registration fails.
    pub(crate) fn insert(
        &self,
        entry: Arc<LoopEntry>,
        start: impl FnOnce(&Arc<LoopEntry>),
    ) -> Result<(), crate::WatchdogError> {
        let mut loops = write(&self.inner);
        if self.closed.load(Ordering::Acquire) {
            return Err(crate::WatchdogError::ShutDown);
        }
        if loops.names.contains(&entry.name) {
            return Err(crate::WatchdogError::DuplicateName { name: entry.name.to_string() });
        }
        loops.names.insert(entry.name.clone());
        start(&entry);
        loops.entries.push(entry);
        Ok(())
    }

    /// Refuses further registrations; returns the loops registered so far.
    pub(crate) fn close(&self) -> Vec<Arc<LoopEntry>> {
        let loops = write(&self.inner);
        self.closed.store(true, Ordering::Release);
        loops.entries.clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Runs `f` on every loop, in registration order, under the read lock.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&LoopEntry)) {
        for entry in read(&self.inner).entries.iter() {
            f(entry);
        }
    }

    /// The loop named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<LoopEntry>> {
        read(&self.inner).entries.iter().find(|e| &*e.name == name).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        read(&self.inner).entries.len()
    }
}
