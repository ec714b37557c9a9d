//! The monitor: one task that, every check interval, advances the coarse clock and scans every
//! loop's last ping. It is the only periodic work per loop, which keeps thousands of idle loops
//! cheap (no timer per loop).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Shared;

/// Runs until `stop` is cancelled.
pub(crate) async fn run(shared: Arc<Shared>, check_interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(check_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now_ms = shared.clock.tick();
        // The scan takes the registry's read lock and each loop's mutex briefly and never awaits;
        // loops run in their own tasks, so a loop that panics or hangs cannot stop it.
        shared.registry.for_each(|entry| entry.check_silence(now_ms));
    }
}
