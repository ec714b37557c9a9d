//! What the store holds, read straight from the run's PostgreSQL database: the people's
//! messages and the reactions to them.

use std::collections::HashMap;

use sqlx::{PgPool, Row};

use crate::reactor::token;

/// A reaction as stored.
#[derive(Clone, Debug)]
pub struct Reaction {
    /// `pending`, `sent` or `failed`.
    pub status: String,
    /// When it was last written (unix ms): for a sent one, when its job completed.
    pub updated_at: i64,
    /// The workers whose attempts at it were taken from them (rescued: the worker died or
    /// was taken over).
    pub rescued_from: Vec<String>,
}

/// A fresh database on the server of `server_url`: its URL.
pub async fn fresh_database(server_url: &str) -> Result<String, String> {
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::PgConnection::connect(server_url)
        .await
        .map_err(|e| format!("cannot connect to {server_url}: {e}"))?;
    let name = format!("chaos_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .map_err(|e| format!("cannot create the database {name}: {e}"))?;
    let (base, query) = server_url.split_once('?').unwrap_or((server_url, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
    Ok(format!("{}/{name}{query}", &base[..path]))
}

/// The people's messages stored: token -> (how many times, account id, first stored at ms).
pub async fn inbound(pool: &PgPool) -> Result<HashMap<u64, (usize, String, i64)>, String> {
    let rows = sqlx::query(
        "SELECT text, account_id, created_at FROM messages \
         WHERE direction = 'inbound' AND text LIKE '%chaos-in-%'",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| format!("reading the stored messages: {e}"))?;
    let mut out: HashMap<u64, (usize, String, i64)> = HashMap::new();
    for row in rows {
        let text: Option<String> = row.try_get("text").unwrap_or(None);
        let Some(n) = text.as_deref().and_then(token) else { continue };
        let account: String = row.try_get("account_id").unwrap_or_default();
        let at: i64 = row.try_get("created_at").unwrap_or_default();
        let e = out.entry(n).or_insert((0, account, at));
        e.0 += 1;
        e.2 = e.2.min(at);
    }
    Ok(out)
}

/// The reactions stored: token -> every outbound message `re chaos-in-N`.
pub async fn reactions(pool: &PgPool) -> Result<HashMap<u64, Vec<Reaction>>, String> {
    let rows = sqlx::query(
        "SELECT m.text, m.status, m.updated_at, \
                string_agg(a.worker, ' ') FILTER (WHERE a.outcome = 'rescued') AS rescued_from \
         FROM messages m LEFT JOIN jobs j ON j.message_id = m.id \
         LEFT JOIN job_attempts a ON a.job_id = j.id \
         WHERE m.direction = 'outbound' AND m.text LIKE 're chaos-in-%' \
         GROUP BY m.id, m.text, m.status, m.updated_at",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| format!("reading the stored reactions: {e}"))?;
    let mut out: HashMap<u64, Vec<Reaction>> = HashMap::new();
    for row in rows {
        let text: Option<String> = row.try_get("text").unwrap_or(None);
        let Some(n) = text.as_deref().and_then(token) else { continue };
        out.entry(n).or_default().push(Reaction {
            status: row.try_get("status").unwrap_or_default(),
            updated_at: row.try_get("updated_at").unwrap_or_default(),
            rescued_from: row
                .try_get::<Option<String>, _>("rescued_from")
                .unwrap_or(None)
                .map(|w| w.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// A send job as its attempts tell it.
#[derive(Clone, Debug)]
pub struct SendJob {
    /// How long from queued to sent (ms), if sent.
    pub sent_after: Option<i64>,
    /// Attempts put back without being spent (claimed where the account's channel does not
    /// run, rate limits, outages).
    pub put_back: i64,
}

/// Every send job of the run.
pub async fn send_jobs(pool: &PgPool) -> Result<Vec<SendJob>, String> {
    let rows = sqlx::query(
        "SELECT j.created_at, \
                max(a.finished_at) FILTER (WHERE a.outcome = 'completed') AS done, \
                count(*) FILTER (WHERE a.outcome = 'snoozed') AS put_back \
         FROM jobs j LEFT JOIN job_attempts a ON a.job_id = j.id \
         WHERE j.kind = 'send' GROUP BY j.id, j.created_at",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| format!("reading the send jobs: {e}"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let created: i64 = row.try_get("created_at").unwrap_or_default();
            let done: Option<i64> = row.try_get("done").unwrap_or(None);
            SendJob {
                sent_after: done.map(|d| d - created),
                put_back: row.try_get("put_back").unwrap_or_default(),
            }
        })
        .collect())
}
