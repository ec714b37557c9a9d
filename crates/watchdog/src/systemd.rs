//! systemd integration (feature `systemd`): `READY=1` once the watchdog is built, `WATCHDOG=1`
//! every `WATCHDOG_USEC / 2` while the heartbeat is fresh and no critical loop is failed, and
//! `STOPPING=1` when shutdown begins.
//!
//! Without `NOTIFY_SOCKET` in the environment (not started by systemd) every notification is a
//! no-op; without `WATCHDOG_USEC` (no `WatchdogSec=` in the unit) no `WATCHDOG=1` is sent.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Shared;

fn notify(state: NotifyState<'_>) {
    if let Err(error) = sd_notify::notify(&[state]) {
        tracing::warn!(%error, "could not notify systemd");
    }
}

/// Sends `READY=1`.
pub(crate) fn ready() {
    notify(NotifyState::Ready);
}

/// Sends `STOPPING=1`.
pub(crate) fn stopping() {
    notify(NotifyState::Stopping);
}

/// Half the watchdog period systemd asked for, if it asked.
pub(crate) fn pet_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| (period / 2).max(Duration::from_millis(1)))
}

/// Sends `WATCHDOG=1` every `every` while the watchdog is healthy enough, until `stop`.
pub(crate) async fn pet(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut withheld = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if shared.may_pet_systemd() {
            notify(NotifyState::Watchdog);
            withheld = false;
        } else if !withheld {
            tracing::error!(
                "withholding systemd WATCHDOG=1: the heartbeat is stale or a critical loop failed"
            );
            withheld = true;
        }
    }
}
