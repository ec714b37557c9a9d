//! Connections of a store: a fixed set handed out one caller at a time.
//!
//! sqlx's general pool tests a connection each time it is returned, which costs a round trip
//! per call (to the worker thread of a SQLite connection, to the server for PostgreSQL).
//! These slots skip that: a connection whose transaction was abandoned (an error, or a call
//! cancelled by its time limit) is marked and rolled back before its next use, and a
//! connection that broke is replaced on its next use. Waiting callers are served in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sqlx::{Connection, Executor};

/// A connection that can run a statement without arguments (`ROLLBACK`, `COMMIT`).
pub(crate) trait RawConn: Connection {
    fn run_raw<'a>(&'a mut self, sql: &'static str) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

impl RawConn for sqlx::SqliteConnection {
    fn run_raw<'a>(&'a mut self, sql: &'static str) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move { self.execute(sql).await.map(|_| ()) })
    }
}

#[cfg(feature = "postgres")]
impl RawConn for sqlx::PgConnection {
    fn run_raw<'a>(&'a mut self, sql: &'static str) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move { self.execute(sql).await.map(|_| ()) })
    }
}
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection and what is known about its state.
pub(crate) struct Slot<C> {
    conn: Option<C>,
    /// A transaction may still be open on the connection.
    needs_rollback: bool,
}

struct Shared<C: Connection> {
    free: Mutex<Vec<Slot<C>>>,
    permits: Arc<Semaphore>,
    size: u32,
    options: C::Options,
    closed: AtomicBool,
}

/// A fixed set of connections to one database.
pub(crate) struct Slots<C: Connection> {
    shared: Arc<Shared<C>>,
}

impl<C: Connection> std::fmt::Debug for Slots<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots").field("size", &self.shared.size).finish_non_exhaustive()
    }
}

/// A connection taken from [`Slots`]; it goes back when dropped.
pub(crate) struct Held<C: Connection> {
    slot: Slot<C>,
    shared: Arc<Shared<C>>,
    _permit: OwnedSemaphorePermit,
}

/// Whether `e` means the connection itself is gone: it broke, or PostgreSQL ended it
/// (`57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now).
pub(crate) fn is_broken(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::WorkerCrashed | sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

impl<C: Connection> Held<C> {
    pub(crate) fn conn(&mut self) -> Result<&mut C, sqlx::Error> {
        self.slot.conn.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Forgets the connection if `e` says it broke: the next use connects again.
    pub(crate) fn check(&mut self, e: &sqlx::Error) {
        if is_broken(e) {
            self.slot.conn = None;
            self.slot.needs_rollback = false;
        }
    }

    pub(crate) fn set_needs_rollback(&mut self, on: bool) {
        self.slot.needs_rollback = on;
    }
}

impl<C: Connection> Drop for Held<C> {
    fn drop(&mut self) {
        let slot = Slot { conn: self.slot.conn.take(), needs_rollback: self.slot.needs_rollback };
        if let Ok(mut free) = self.shared.free.lock() {
            free.push(slot);
        }
    }
}

impl<C: RawConn> Slots<C> {
    /// `size` slots (at least one); with `eager`, their connections are opened now.
    pub(crate) async fn open(
        options: C::Options,
        size: u32,
        eager: bool,
    ) -> Result<Self, sqlx::Error> {
        let size = size.max(1);
        let mut free = Vec::with_capacity(size as usize);
        for _ in 0..size {
            let conn = if eager { Some(C::connect_with(&options).await?) } else { None };
            free.push(Slot { conn, needs_rollback: false });
        }
        Ok(Self {
            shared: Arc::new(Shared {
                free: Mutex::new(free),
                permits: Arc::new(Semaphore::new(size as usize)),
                size,
                options,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// A connection, ready for use: rolled back if it was left in a transaction, connected
    /// if it had none.
    pub(crate) async fn acquire(&self) -> Result<Held<C>, sqlx::Error> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let permit =
            shared.permits.clone().acquire_owned().await.map_err(|_| sqlx::Error::PoolClosed)?;
        let slot = shared
            .free
            .lock()
            .map_err(|_| sqlx::Error::PoolClosed)?
            .pop()
            .ok_or(sqlx::Error::PoolClosed)?;
        let mut held = Held { slot, shared: shared.clone(), _permit: permit };
        if held.slot.needs_rollback {
            if let Some(conn) = held.slot.conn.as_mut() {
                // An error from the database ("no transaction") is fine: there was nothing
                // to roll back.
                if let Err(e) = conn.run_raw("ROLLBACK").await
                    && !matches!(e, sqlx::Error::Database(_))
                {
                    held.check(&e);
                    return Err(e);
                }
            }
            held.slot.needs_rollback = false;
        }
        if held.slot.conn.is_none() {
            held.slot.conn = Some(C::connect_with(&shared.options).await?);
        }
        Ok(held)
    }

    /// Closes every connection once it is returned; later calls fail with `PoolClosed`.
    pub(crate) async fn close(&self) {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::Release);
        if let Ok(all) = shared.permits.acquire_many(shared.size).await {
            let slots: Vec<Slot<C>> = match shared.free.lock() {
                Ok(mut free) => free.drain(..).collect(),
                Err(_) => Vec::new(),
            };
            for slot in slots {
                if let Some(conn) = slot.conn {
                    let _ = conn.close().await;
                }
            }
            drop(all);
        }
        shared.permits.close();
    }
}

/// A write transaction on one connection. On SQLite `BEGIN IMMEDIATE` is sent together with
/// the first statement; on PostgreSQL `BEGIN` goes first. Dropping the transaction without a
/// commit marks the connection for a rollback before its next use.
pub(crate) struct ConnTx<C: Connection> {
    held: Held<C>,
    begun: bool,
    done: bool,
}

impl<C: Connection> ConnTx<C> {
    pub(crate) fn new(held: Held<C>) -> Self {
        Self { held, begun: false, done: false }
    }

    /// Whether the transaction has begun (its first statement was sent).
    pub(crate) fn begun(&self) -> bool {
        self.begun
    }

    /// Notes that the transaction begins now: from here on a rollback is owed unless the
    /// commit goes through.
    pub(crate) fn mark_begun(&mut self) {
        self.begun = true;
        self.held.set_needs_rollback(true);
    }

    pub(crate) fn conn(&mut self) -> Result<&mut C, sqlx::Error> {
        self.held.conn()
    }

    pub(crate) fn check(&mut self, e: &sqlx::Error) {
        self.held.check(e);
    }

    /// Records that the transaction ended (a `COMMIT` or `ROLLBACK` went through): no
    /// rollback is owed.
    pub(crate) fn mark_committed(&mut self) {
        self.done = true;
        self.held.set_needs_rollback(false);
    }
}

impl<C: RawConn> ConnTx<C> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.finish("COMMIT").await
    }

    /// Rolls back now rather than before the connection's next use, so that the row locks
    /// of a failed transaction are let go at once.
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.finish("ROLLBACK").await
    }

    /// Ends the transaction with `statement`; if that fails, the rollback stays owed before
    /// the connection's next use.
    async fn finish(mut self, statement: &'static str) -> Result<(), sqlx::Error> {
        if !self.begun || self.done {
            return Ok(());
        }
        let r = match self.held.conn() {
            Ok(conn) => conn.run_raw(statement).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                self.mark_committed();
                Ok(())
            }
            Err(e) => {
                self.held.check(&e);
                Err(e)
            }
        }
    }
}

impl<C: Connection> Drop for ConnTx<C> {
    fn drop(&mut self) {
        if self.begun && !self.done {
            self.held.set_needs_rollback(true);
        }
    }
}
