//! The durable event feed (see [`channel_core::feed`]): events written in the transactions of
//! the changes they report, read in `(tx, seq)` order. On PostgreSQL each row keeps its
//! transaction's id (`pg_current_xact_id()`, the column's default) and a read hands out only
//! rows of transactions older than its snapshot's `xmin`, the oldest transaction still in
//! flight: no row can ever appear behind a position already handed out. On SQLite one writer
//! commits at a time, `tx` stays 0 and the order is the number's.

use async_trait::async_trait;
use channel_core::feed::{
    ConsumerStart, FeedConsumerInfo, FeedEvent, FeedPosition, FeedPruned, FeedStore,
};
use channel_core::{Event, StoreError, Timestamp};

use crate::db::{Arg, Ex, Row, Sql, Tx};
use crate::error::{Res, invalid};
use crate::{SqlStore, codec, write_tx};

/// Rows per `INSERT` (2 arguments each).
const CHUNK: usize = 500;

/// Longest consumer name.
const MAX_NAME: usize = 200;

/// An event as a row to insert (owned: statements borrow it).
pub(crate) struct EventRow {
    at: i64,
    payload: String,
}

/// The rows of `events`, written at `now`.
pub(crate) fn rows(events: &[Event], now: Timestamp) -> Res<Vec<EventRow>> {
    events
        .iter()
        .map(|e| Ok(EventRow { at: now.0, payload: codec::to_json("event", e)? }))
        .collect()
}

/// Appends `(at, payload), ...` for `rows` (typed on PostgreSQL, where a
/// `VALUES` list outside an `INSERT` needs them).
pub(crate) fn push_values<'a>(q: &mut Sql<'a>, rows: &'a [EventRow], pg: bool) {
    for (n, r) in rows.iter().enumerate() {
        if n > 0 {
            q.push(", ");
        }
        q.push("(");
        push_row(q, r, pg);
        q.push(")");
    }
}

/// Appends `at, payload` of one row (typed on PostgreSQL), without the parentheses.
pub(crate) fn push_row<'a>(q: &mut Sql<'a>, r: &'a EventRow, pg: bool) {
    let (bigint, text) = if pg { ("::bigint", "::text") } else { ("", "") };
    q.bind(r.at).push(bigint).push(", ").bind(r.payload.as_str()).push(text);
}

/// The statements that insert `rows` (none for none).
pub(crate) fn inserts(rows: &[EventRow]) -> Vec<Sql<'_>> {
    rows.chunks(CHUNK)
        .map(|chunk| {
            let mut q = Sql::new("INSERT INTO channel_events (at, payload) VALUES ");
            push_values(&mut q, chunk, false);
            q
        })
        .collect()
}

/// Appends an `INSERT` of `rows` that writes them only where a condition holds; the caller
/// appends the condition (SQL) after it.
pub(crate) fn push_insert_where<'a>(q: &mut Sql<'a>, rows: &'a [EventRow], pg: bool) {
    q.push("INSERT INTO channel_events (at, payload) SELECT v.column1, v.column2 FROM (VALUES ");
    push_values(q, rows, pg);
    q.push(") AS v WHERE ");
}

/// Writes `events` in the open transaction.
pub(crate) async fn append(tx: &mut Tx, events: &[Event], now: Timestamp) -> Res<()> {
    let rows = rows(events, now)?;
    for q in inserts(&rows) {
        tx.execute(&q.text, &q.args).await?;
    }
    Ok(())
}

/// Only rows of finished transactions below every one still in flight (PostgreSQL).
const PG_VISIBLE: &str = "tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

fn check_name(name: &str) -> Res<()> {
    if name.trim().is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        return Err(invalid("consumer", format!("must be a name of 1 to {MAX_NAME} bytes")));
    }
    Ok(())
}

fn position(row: &Row) -> Result<FeedPosition, StoreError> {
    Ok(FeedPosition { tx: row.int("tx")?, seq: row.int("seq")? })
}

fn consumer(row: &Row) -> Result<FeedConsumerInfo, StoreError> {
    Ok(FeedConsumerInfo {
        name: row.text("name")?,
        position: position(row)?,
        registered_at: Timestamp(row.int("registered_at")?),
        seen_at: Timestamp(row.int("seen_at")?),
        expired: row.boolean("expired")?,
    })
}

const CONSUMER_COLS: &str = "name, tx, seq, registered_at, seen_at, expired";

/// Everything up to here was pruned.
async fn pruned(ex: Ex<'_>) -> Res<FeedPosition> {
    match ex.fetch_optional("SELECT tx, seq FROM feed_pruned WHERE id = 1", &[]).await? {
        Some(row) => Ok(position(&row)?),
        None => Ok(FeedPosition::START),
    }
}

/// Where a consumer registered now at `start` begins.
async fn start_position(ex: Ex<'_>, start: ConsumerStart) -> Res<FeedPosition> {
    match start {
        ConsumerStart::End => end(ex).await,
        _ => pruned(ex).await,
    }
}

/// The position of the last event a read can hand out now (the pruned floor when there is
/// none), in one query.
async fn end(ex: Ex<'_>) -> Res<FeedPosition> {
    let visible = if ex.is_pg() { PG_VISIBLE } else { "1 = 1" };
    let sql = format!(
        "SELECT tx, seq FROM (SELECT tx, seq FROM channel_events WHERE {visible} \
         ORDER BY tx DESC, seq DESC LIMIT 1) AS last \
         UNION ALL SELECT tx, seq FROM feed_pruned WHERE id = 1"
    );
    let rows = ex.fetch_all(&sql, &[]).await?;
    let mut at = FeedPosition::START;
    for row in &rows {
        at = at.max(position(row)?);
    }
    Ok(at)
}

async fn upsert_consumer(
    tx: &mut Tx,
    name: &str,
    start: ConsumerStart,
    now: Timestamp,
    reset: bool,
) -> Res<FeedConsumerInfo> {
    check_name(name)?;
    let at = start_position(tx.ex(), start).await?;
    let on_conflict = if reset {
        "tx = excluded.tx, seq = excluded.seq, registered_at = excluded.registered_at, \
         seen_at = excluded.seen_at, expired = excluded.expired"
    } else {
        "seen_at = CASE WHEN feed_consumers.expired THEN feed_consumers.seen_at \
         ELSE excluded.seen_at END"
    };
    let sql = format!(
        "INSERT INTO feed_consumers ({CONSUMER_COLS}) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET {on_conflict} RETURNING {CONSUMER_COLS}"
    );
    let args = [
        Arg::Text(name),
        Arg::Int(at.tx),
        Arg::Int(at.seq),
        Arg::Int(now.0),
        Arg::Int(now.0),
        Arg::Bool(false),
    ];
    match tx.fetch_optional(&sql, &args).await? {
        Some(row) => Ok(consumer(&row)?),
        None => Err(StoreError::Corrupt("a consumer upsert returned no row".to_owned()).into()),
    }
}

async fn ack(tx: &mut Tx, name: &str, at: FeedPosition, now: Timestamp) -> Res<FeedConsumerInfo> {
    let sql = format!("SELECT {CONSUMER_COLS} FROM feed_consumers WHERE name = ?");
    let Some(row) = tx.fetch_optional(&sql, &[Arg::Text(name)]).await? else {
        return Err(StoreError::not_found("consumer", name).into());
    };
    let current = consumer(&row)?;
    if current.expired {
        return Err(StoreError::FeedCursorExpired { consumer: name.to_owned() }.into());
    }
    let to = current.position.max(at);
    let sql = format!(
        "UPDATE feed_consumers SET tx = ?, seq = ?, seen_at = ? WHERE name = ? \
         RETURNING {CONSUMER_COLS}"
    );
    let args = [Arg::Int(to.tx), Arg::Int(to.seq), Arg::Int(now.0), Arg::Text(name)];
    match tx.fetch_optional(&sql, &args).await? {
        Some(row) => Ok(consumer(&row)?),
        None => Err(StoreError::not_found("consumer", name).into()),
    }
}

async fn prune(tx: &mut Tx, written_before: Timestamp, idle_before: Timestamp) -> Res<FeedPruned> {
    let expired = tx
        .fetch_all(
            "UPDATE feed_consumers SET expired = ? WHERE expired = ? AND seen_at < ? RETURNING name",
            &[Arg::Bool(true), Arg::Bool(false), Arg::Int(idle_before.0)],
        )
        .await?;
    let floor = tx
        .fetch_optional(
            "SELECT tx, seq FROM feed_consumers WHERE expired = ? ORDER BY tx, seq LIMIT 1",
            &[Arg::Bool(false)],
        )
        .await?
        .map(|row| position(&row))
        .transpose()?;
    // The last event to go: written before the cutoff, passed by every consumer, and (on
    // PostgreSQL) of a finished transaction. Everything up to it goes, so what is kept is
    // always a suffix of the feed.
    let mut q = Sql::new("SELECT tx, seq FROM channel_events WHERE at < ");
    q.bind(written_before.0);
    if let Some(f) = &floor {
        q.push(" AND (tx, seq) <= (").bind(f.tx).push(", ").bind(f.seq).push(")");
    }
    if tx.is_pg() {
        q.push(" AND ").push(PG_VISIBLE);
    }
    q.push(" ORDER BY tx DESC, seq DESC LIMIT 1");
    let last = match tx.fetch_optional(&q.text, &q.args).await? {
        Some(row) => position(&row)?,
        None => return Ok(FeedPruned { events: 0, consumers: expired.len() as u64 }),
    };
    let deleted = tx
        .fetch_all(
            "DELETE FROM channel_events WHERE (tx, seq) <= (?, ?) RETURNING seq",
            &[Arg::Int(last.tx), Arg::Int(last.seq)],
        )
        .await?;
    tx.execute(
        "UPDATE feed_pruned SET tx = ?, seq = ? WHERE id = 1 AND (tx, seq) < (?, ?)",
        &[Arg::Int(last.tx), Arg::Int(last.seq), Arg::Int(last.tx), Arg::Int(last.seq)],
    )
    .await?;
    Ok(FeedPruned { events: deleted.len() as u64, consumers: expired.len() as u64 })
}

async fn read(store: &SqlStore, after: FeedPosition, limit: usize) -> Res<Vec<FeedEvent>> {
    let limit = i64::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
    let mut q = Sql::new("SELECT tx, seq, at, payload FROM channel_events WHERE ");
    if store.is_pg() {
        q.push("(tx, seq) > (")
            .bind(after.tx)
            .push(", ")
            .bind(after.seq)
            .push(") AND ")
            .push(PG_VISIBLE)
            .push(" ORDER BY tx, seq LIMIT ")
            .bind(limit);
    } else {
        q.push("seq > ").bind(after.seq).push(" ORDER BY seq LIMIT ").bind(limit);
    }
    let rows = store.pools().reader().fetch_all(&q.text, &q.args).await?;
    // Checked after the read: a prune between the two is seen, never a silent gap.
    if after < pruned(store.pools().reader()).await? {
        return Err(StoreError::FeedCursorExpired { consumer: String::new() }.into());
    }
    rows.iter()
        .map(|row| {
            let payload = row.text("payload")?;
            let event = serde_json::from_str(&payload).map_err(|e| {
                StoreError::Corrupt(format!("an event of the feed cannot be read: {e}"))
            })?;
            Ok(FeedEvent { position: position(row)?, at: Timestamp(row.int("at")?), event })
        })
        .collect()
}

#[async_trait]
impl FeedStore for SqlStore {
    async fn append_events(&self, events: &[Event], now: Timestamp) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.run("append_events", async { write_tx!(self, |tx| append(tx, events, now).await?) })
            .await
    }

    async fn feed_read(
        &self,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        self.run("feed_read", read(self, after, limit)).await
    }

    async fn feed_consumer(
        &self,
        name: &str,
        start: ConsumerStart,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError> {
        self.run("feed_consumer", async {
            write_tx!(self, |tx| upsert_consumer(tx, name, start, now, false).await?)
        })
        .await
    }

    async fn feed_reset(
        &self,
        name: &str,
        start: ConsumerStart,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError> {
        self.run("feed_reset", async {
            write_tx!(self, |tx| upsert_consumer(tx, name, start, now, true).await?)
        })
        .await
    }

    async fn feed_ack(
        &self,
        name: &str,
        position: FeedPosition,
        now: Timestamp,
    ) -> Result<FeedConsumerInfo, StoreError> {
        self.run("feed_ack", async { write_tx!(self, |tx| ack(tx, name, position, now).await?) })
            .await
    }

    async fn feed_end(&self) -> Result<FeedPosition, StoreError> {
        self.run("feed_end", end(self.pools().reader())).await
    }

    async fn feed_consumers(&self) -> Result<Vec<FeedConsumerInfo>, StoreError> {
        self.run("feed_consumers", async {
            let sql = format!("SELECT {CONSUMER_COLS} FROM feed_consumers ORDER BY name");
            let rows = self.pools().reader().fetch_all(&sql, &[]).await?;
            Ok(rows.iter().map(consumer).collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn feed_prune(
        &self,
        written_before: Timestamp,
        idle_before: Timestamp,
    ) -> Result<FeedPruned, StoreError> {
        self.run("feed_prune", async {
            write_tx!(self, |tx| prune(tx, written_before, idle_before).await?)
        })
        .await
    }
}
