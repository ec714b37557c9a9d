//! PostgreSQL `LISTEN/NOTIFY`: a background task that listens on the store's topics and
//! feeds a broadcast channel.

use std::time::Duration;

use channel_core::Backoff;

use channel_core::Notification;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The topics every store listens on.
pub const TOPICS: [&str; 2] = ["channel_events", "channel_jobs"];

/// The listener task and its broadcast channel. Dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Hub {
    tx: broadcast::Sender<Notification>,
    task: JoinHandle<()>,
}

impl Hub {
    /// Connects the listener (on its own connection, outside the store's pool) and starts the
    /// task once `LISTEN` is in place, so that nothing sent after this returns is missed.
    pub(crate) async fn start(
        connect: &PgConnectOptions,
        capacity: usize,
    ) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(connect.clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen_all(TOPICS).await?;
        let (tx, _) = broadcast::channel(capacity);
        let sender = tx.clone();
        let task = tokio::spawn(async move {
            let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            let mut failures = 0;
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        failures = 0;
                        // No receiver is not an error: nobody is interested right now.
                        let _ = sender.send(Notification {
                            topic: n.channel().to_owned(),
                            payload: n.payload().to_owned(),
                        });
                    }
                    Ok(None) => {
                        // The connection was lost; the listener reconnects and listens again
                        // on the next call. Notifications sent meanwhile are lost, which the
                        // engine tolerates (they are wake-ups, not data).
                        tracing::warn!("channel-store: notification listener reconnecting");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "channel-store: notification listener failed; retrying");
                        tokio::time::sleep(backoff.ceiling(failures)).await;
                        failures += 1;
                    }
                }
            }
        });
        Ok(Self { tx, task })
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.tx.subscribe()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}
