//! The thin dialect layer: connections, transactions, bound arguments and rows for SQLite
//! and PostgreSQL behind one interface, so that every store operation is written once.
//!
//! SQL text is written with `?` placeholders; for PostgreSQL they are rewritten to `$1`, `$2`,
//! ... just before execution. Arguments are bound from [`Arg`], rows are read through
//! [`Row`], whose getters turn decode failures into [`StoreError::Corrupt`].

#[cfg(feature = "postgres")]
use std::borrow::Cow;

use channel_core::StoreError;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row as _, Sqlite, SqliteConnection};

#[cfg(feature = "postgres")]
use crate::conns::RawConn;
use crate::conns::{ConnTx, Slots};

#[cfg(feature = "postgres")]
use sqlx::postgres::{PgArguments, PgRow};
#[cfg(feature = "postgres")]
use sqlx::{PgConnection, Postgres};

/// Which database a [`SqlStore`](crate::SqlStore) talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server (cargo feature `postgres`).
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

pub(crate) type SqliteSlots = Slots<SqliteConnection>;
#[cfg(feature = "postgres")]
pub(crate) type PgSlots = Slots<PgConnection>;

/// The connections of a store.
#[derive(Debug)]
pub(crate) enum Pools {
    /// One writer connection (every write, `BEGIN IMMEDIATE`) and a set of readers.
    Sqlite { write: SqliteSlots, read: SqliteSlots },
    /// One set of connections for everything.
    #[cfg(feature = "postgres")]
    Postgres { conns: PgSlots },
}

impl Pools {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pools::Sqlite { .. } => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Pools::Postgres { .. } => Backend::Postgres,
        }
    }

    pub(crate) fn is_pg(&self) -> bool {
        self.backend() == Backend::Postgres
    }

    /// Starts a write transaction: `BEGIN IMMEDIATE` on the single SQLite writer, a plain
    /// `BEGIN` (read committed) on PostgreSQL, both sent with the first statement.
    pub(crate) async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Pools::Sqlite { write, .. } => Ok(Tx::Sqlite(ConnTx::new(write.acquire().await?))),
            #[cfg(feature = "postgres")]
            Pools::Postgres { conns } => Ok(Tx::Pg(ConnTx::new(conns.acquire().await?))),
        }
    }

    /// An executor for reads outside a transaction.
    pub(crate) fn reader(&self) -> Ex<'_> {
        match self {
            Pools::Sqlite { read, .. } => Ex::SqliteSlots(read),
            #[cfg(feature = "postgres")]
            Pools::Postgres { conns } => Ex::PgSlots(conns),
        }
    }

    /// An executor for a single self-contained write statement (autocommit). On SQLite it is
    /// the writer connection.
    pub(crate) fn autocommit_writer(&self) -> Ex<'_> {
        match self {
            Pools::Sqlite { write, .. } => Ex::SqliteSlots(write),
            #[cfg(feature = "postgres")]
            Pools::Postgres { conns } => Ex::PgSlots(conns),
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Pools::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            #[cfg(feature = "postgres")]
            Pools::Postgres { conns } => conns.close().await,
        }
    }
}

/// An open write transaction. Dropping it without [`Tx::commit`] rolls it back.
pub(crate) enum Tx {
    Sqlite(ConnTx<SqliteConnection>),
    #[cfg(feature = "postgres")]
    Pg(ConnTx<PgConnection>),
}

impl Tx {
    pub(crate) fn ex(&mut self) -> Ex<'_> {
        match self {
            Tx::Sqlite(t) => Ex::SqliteTx(t),
            #[cfg(feature = "postgres")]
            Tx::Pg(t) => Ex::PgTx(t),
        }
    }

    pub(crate) fn is_pg(&self) -> bool {
        match self {
            Tx::Sqlite(_) => false,
            #[cfg(feature = "postgres")]
            Tx::Pg(_) => true,
        }
    }

    /// Commits, unless [`Tx::run_and_commit`] did already.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            #[cfg(feature = "postgres")]
            Tx::Pg(t) => t.commit().await,
        }
    }

    /// Rolls back now. Dropping a transaction only queues its rollback until the connection
    /// is used again, and on PostgreSQL its row locks (`FOR UPDATE`) are held until then:
    /// an operation that fails after locking must roll back at once.
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.rollback().await,
            #[cfg(feature = "postgres")]
            Tx::Pg(t) => t.rollback().await,
        }
    }

    pub(crate) async fn execute(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<u64, sqlx::Error> {
        self.ex().execute(sql, args).await
    }

    /// Runs the last statements of the transaction and commits. On SQLite they and the
    /// `COMMIT` go to the connection in one call; on PostgreSQL they run one by one and the
    /// caller's [`Tx::commit`] commits. Returns the rows of all statements, in order.
    pub(crate) async fn run_and_commit(
        &mut self,
        stmts: &[Sql<'_>],
    ) -> Result<Vec<Row>, sqlx::Error> {
        match self {
            Tx::Sqlite(t) => {
                if stmts.is_empty() {
                    return Ok(Vec::new());
                }
                let mut text = String::with_capacity(
                    stmts.iter().map(|s| s.text.len() + 2).sum::<usize>() + 8,
                );
                let mut args = Vec::with_capacity(stmts.iter().map(|s| s.args.len()).sum());
                for s in stmts {
                    text.push_str(&s.text);
                    text.push_str("; ");
                    args.extend_from_slice(&s.args);
                }
                text.push_str("COMMIT");
                let rows = Ex::SqliteTx(t).fetch_all(&text, &args).await?;
                t.mark_committed();
                Ok(rows)
            }
            #[cfg(feature = "postgres")]
            Tx::Pg(_) => {
                let mut rows = Vec::new();
                for s in stmts {
                    rows.extend(self.fetch_all(&s.text, &s.args).await?);
                }
                Ok(rows)
            }
        }
    }

    pub(crate) async fn fetch_all(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Row>, sqlx::Error> {
        self.ex().fetch_all(sql, args).await
    }

    pub(crate) async fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<Row>, sqlx::Error> {
        self.ex().fetch_optional(sql, args).await
    }
}

/// Where a statement runs: a set of connections (autocommit) or a transaction.
pub(crate) enum Ex<'c> {
    SqliteSlots(&'c SqliteSlots),
    SqliteTx(&'c mut ConnTx<SqliteConnection>),
    #[cfg(feature = "postgres")]
    PgSlots(&'c PgSlots),
    #[cfg(feature = "postgres")]
    PgTx(&'c mut ConnTx<PgConnection>),
}

async fn sqlite_run(
    conn: &mut SqliteConnection,
    sql: &str,
    args: &[Arg<'_>],
    rows: bool,
) -> Result<(u64, Vec<Row>), sqlx::Error> {
    // Our SQL is built from this crate's constants; values are always bound, never spliced.
    let q = bind_sqlite(sqlx::query(sqlx::AssertSqlSafe(sql)), args);
    if rows {
        Ok((0, q.fetch_all(conn).await?.into_iter().map(Row::Sqlite).collect()))
    } else {
        Ok((q.execute(conn).await?.rows_affected(), Vec::new()))
    }
}

#[cfg(feature = "postgres")]
async fn pg_run(
    conn: &mut PgConnection,
    sql: &str,
    args: &[Arg<'_>],
    rows: bool,
) -> Result<(u64, Vec<Row>), sqlx::Error> {
    let sql = pg_sql(sql);
    // Our SQL is built from this crate's constants; values are always bound, never spliced.
    let q = bind_pg(sqlx::query(sqlx::AssertSqlSafe(sql.into_owned())), args);
    if rows {
        Ok((0, q.fetch_all(conn).await?.into_iter().map(Row::Pg).collect()))
    } else {
        Ok((q.execute(conn).await?.rows_affected(), Vec::new()))
    }
}

/// Whether `sql` only reads (a `SELECT`), so that running it twice changes nothing.
#[cfg(feature = "postgres")]
fn is_read_only(sql: &str) -> bool {
    sql.trim_start().get(..6).is_some_and(|w| w.eq_ignore_ascii_case("select"))
}

impl Ex<'_> {
    pub(crate) fn is_pg(&self) -> bool {
        match self {
            Ex::SqliteSlots(_) | Ex::SqliteTx(_) => false,
            #[cfg(feature = "postgres")]
            Ex::PgSlots(_) | Ex::PgTx(_) => true,
        }
    }

    async fn run(
        self,
        sql: &str,
        args: &[Arg<'_>],
        rows: bool,
    ) -> Result<(u64, Vec<Row>), sqlx::Error> {
        match self {
            Ex::SqliteSlots(slots) => {
                let mut held = slots.acquire().await?;
                let r = sqlite_run(held.conn()?, sql, args, rows).await;
                if let Err(e) = &r {
                    held.check(e);
                }
                r
            }
            Ex::SqliteTx(tx) => {
                let sql = if tx.begun() {
                    std::borrow::Cow::Borrowed(sql)
                } else {
                    tx.mark_begun();
                    std::borrow::Cow::Owned(format!("BEGIN IMMEDIATE; {sql}"))
                };
                let r = sqlite_run(tx.conn()?, &sql, args, rows).await;
                if let Err(e) = &r {
                    tx.check(e);
                }
                r
            }
            #[cfg(feature = "postgres")]
            Ex::PgSlots(slots) => {
                let mut held = slots.acquire().await?;
                let r = pg_run(held.conn()?, sql, args, rows).await;
                match r {
                    // A pooled connection the server closed while it sat idle (a restart,
                    // a failover, an idle timeout) fails its next statement before running
                    // it. A read is safe to run again once on a fresh connection, so the
                    // first caller after an outage does not see the dead connection.
                    Err(e) if crate::conns::is_broken(&e) && is_read_only(sql) => {
                        held.check(&e);
                        drop(held);
                        let mut held = slots.acquire().await?;
                        let r = pg_run(held.conn()?, sql, args, rows).await;
                        if let Err(e) = &r {
                            held.check(e);
                        }
                        r
                    }
                    Err(e) => {
                        held.check(&e);
                        Err(e)
                    }
                    ok => ok,
                }
            }
            #[cfg(feature = "postgres")]
            Ex::PgTx(tx) => {
                if !tx.begun() {
                    tx.mark_begun();
                    if let Err(e) = tx.conn()?.run_raw("BEGIN").await {
                        tx.check(&e);
                        return Err(e);
                    }
                }
                let r = pg_run(tx.conn()?, sql, args, rows).await;
                if let Err(e) = &r {
                    tx.check(e);
                }
                r
            }
        }
    }

    pub(crate) async fn execute(self, sql: &str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        Ok(self.run(sql, args, false).await?.0)
    }

    pub(crate) async fn fetch_all(
        self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Row>, sqlx::Error> {
        Ok(self.run(sql, args, true).await?.1)
    }

    /// The first row. Every statement runs to its end (an `UPDATE ... RETURNING` is never cut
    /// short).
    pub(crate) async fn fetch_optional(
        self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.run(sql, args, true).await?.1.into_iter().next())
    }
}

/// A bound argument.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
    Bool(bool),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v.as_str())
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v)
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::OptText(v.as_deref())
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

fn bind_sqlite<'q>(
    mut q: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    args: &[Arg<'_>],
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    for a in args {
        q = match *a {
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Blob(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
        };
    }
    q
}

#[cfg(feature = "postgres")]
fn bind_pg<'q>(
    mut q: sqlx::query::Query<'q, Postgres, PgArguments>,
    args: &[Arg<'_>],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    for a in args {
        q = match *a {
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Blob(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
        };
    }
    q
}

/// Rewrites `?` placeholders to PostgreSQL's `$n`. The SQL of this crate has no `?` inside
/// string literals, so a plain scan is enough.
#[cfg(feature = "postgres")]
pub(crate) fn pg_sql(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0usize;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

/// A result row of either backend.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    #[cfg(feature = "postgres")]
    Pg(PgRow),
}

macro_rules! getter {
    ($name:ident, $t:ty) => {
        pub(crate) fn $name(&self, col: &str) -> Result<$t, StoreError> {
            let r = match self {
                Row::Sqlite(r) => r.try_get::<$t, _>(col),
                #[cfg(feature = "postgres")]
                Row::Pg(r) => r.try_get::<$t, _>(col),
            };
            r.map_err(|e| StoreError::Corrupt(format!("column `{col}`: {e}")))
        }
    };
}

impl Row {
    getter!(text, String);
    getter!(opt_text, Option<String>);
    getter!(int, i64);
    getter!(opt_int, Option<i64>);
    getter!(boolean, bool);
    getter!(blob, Vec<u8>);
}

/// A statement under construction, with its arguments.
pub(crate) struct Sql<'a> {
    pub(crate) text: String,
    pub(crate) args: Vec<Arg<'a>>,
}

impl<'a> Sql<'a> {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), args: Vec::new() }
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder and binds `a` to it.
    pub(crate) fn bind(&mut self, a: impl Into<Arg<'a>>) -> &mut Self {
        self.text.push('?');
        self.args.push(a.into());
        self
    }

    /// Keyset pagination, newest first by `column` then `id`: appends the condition that a
    /// row comes after `before` in that order (when given), then the order and the limit.
    pub(crate) fn keyset_page(
        &mut self,
        column: &str,
        before: Option<&'a channel_core::page::Position>,
        limit: i64,
    ) -> &mut Self {
        if let Some(p) = before {
            self.push(&format!(" AND ({column} < "))
                .bind(p.at.0)
                .push(&format!(" OR ({column} = "))
                .bind(p.at.0)
                .push(" AND id < ")
                .bind(p.id.as_str())
                .push("))");
        }
        self.push(&format!(" ORDER BY {column} DESC, id DESC LIMIT ")).bind(limit)
    }

    /// Appends `(?, ?, ...)` for a non-empty list. The list is padded to a power of two by
    /// repeating its last value, so that few distinct statements reach the statement cache.
    pub(crate) fn in_list(&mut self, values: &[&'a str]) -> &mut Self {
        debug_assert!(!values.is_empty());
        let padded = values.len().next_power_of_two();
        self.text.push('(');
        for i in 0..padded {
            if i > 0 {
                self.text.push_str(", ");
            }
            let v = values.get(i).or(values.last()).copied().unwrap_or("");
            self.bind(v);
        }
        self.text.push(')');
        self
    }
}

/// Where a database error comes from, for retries and error mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DbFailure {
    /// A unique (or primary key) constraint.
    Unique,
    /// A foreign key.
    ForeignKey,
    /// A not-null or check constraint.
    Constraint,
    /// PostgreSQL serialization failure or deadlock: retry the transaction.
    Serialization,
    /// Busy, locked, connection lost, server shutting down, too many connections.
    Unavailable,
    /// The database or its disk is full (SQLite `FULL`, PostgreSQL `53100 disk_full`).
    Full,
    /// A statement timeout or cancellation on the server.
    Cancelled,
    /// Invalid text (PostgreSQL rejects NUL), a value too long.
    BadValue,
    /// Decoding what was read.
    Decode,
    /// Anything else.
    Other,
}

pub(crate) fn classify(e: &sqlx::Error) -> DbFailure {
    use sqlx::error::ErrorKind;
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => DbFailure::Unavailable,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => DbFailure::Decode,
        sqlx::Error::Database(db) => {
            match db.kind() {
                ErrorKind::UniqueViolation => return DbFailure::Unique,
                ErrorKind::ForeignKeyViolation => return DbFailure::ForeignKey,
                ErrorKind::NotNullViolation | ErrorKind::CheckViolation => {
                    return DbFailure::Constraint;
                }
                _ => {}
            }
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if let Ok(n) = code.parse::<i64>() {
                // SQLite (extended) result codes.
                return match n & 0xff {
                    5 | 6 => DbFailure::Unavailable,   // BUSY, LOCKED
                    10 | 14 => DbFailure::Unavailable, // IOERR, CANTOPEN
                    13 => DbFailure::Full,
                    18 | 25 => DbFailure::BadValue, // TOOBIG, RANGE
                    19 => DbFailure::Constraint,
                    _ => DbFailure::Other,
                };
            }
            match code.as_str() {
                "40001" | "40P01" => DbFailure::Serialization,
                "57014" => DbFailure::Cancelled,
                "22021" | "22001" | "22P05" | "54000" => DbFailure::BadValue,
                "53100" => DbFailure::Full, // disk_full
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
                    DbFailure::Unavailable
                }
                "55P03" => DbFailure::Unavailable, // lock_not_available
                _ => DbFailure::Other,
            }
        }
        _ => DbFailure::Other,
    }
}

/// Maps a database error to the contract's error, with `operation` for context.
pub(crate) fn to_store_error(e: sqlx::Error, operation: &'static str) -> StoreError {
    match classify(&e) {
        DbFailure::Unique => StoreError::InvalidInput {
            field: "id",
            reason: format!("already exists ({operation}): {}", db_message(&e)),
        },
        DbFailure::ForeignKey => StoreError::InvalidInput {
            field: "reference",
            reason: format!(
                "refers to a row that does not exist ({operation}): {}",
                db_message(&e)
            ),
        },
        DbFailure::Constraint | DbFailure::BadValue => StoreError::InvalidInput {
            field: "value",
            reason: format!("rejected by the database ({operation}): {}", db_message(&e)),
        },
        DbFailure::Serialization => StoreError::Unavailable(format!(
            "`{operation}` kept conflicting with concurrent transactions: {}",
            db_message(&e)
        )),
        DbFailure::Unavailable | DbFailure::Cancelled => {
            StoreError::Unavailable(format!("`{operation}`: {e}"))
        }
        DbFailure::Full => StoreError::Unavailable(format!(
            "`{operation}`: the database is full ({}): free disk space (or raise the database's size limit); nothing of this operation was written and it can be tried again",
            db_message(&e)
        )),
        DbFailure::Decode => StoreError::Corrupt(format!("`{operation}`: {e}")),
        DbFailure::Other => StoreError::Backend(Box::new(e)),
    }
}

fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.constraint() {
            Some(c) => format!("{} (constraint {c})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}
