//! The checks of a run, from the store and from the servers' side, and its figures.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Args;
use crate::loopback::Loopback;
use crate::reactor::Reactions;
use crate::recipients;
use crate::server_logs::{self, SmtpdAcceptances};
use crate::traffic::{Account, Sent};

/// A `SIGKILL`.
#[derive(Clone, Debug)]
pub struct Kill {
    /// When (unix ms).
    pub at: i64,
    /// Which worker.
    pub worker: String,
    /// Its pid.
    pub pid: u32,
}

/// One failover.
#[derive(Clone, Debug)]
pub struct Failover {
    /// The worker killed.
    pub worker: String,
    /// The accounts each worker held before.
    pub balance_before: Vec<usize>,
    /// Each of its accounts: ms from the kill until a message written after it was stored.
    pub recovered: Vec<(String, Option<i64>)>,
}

/// The store's outage.
#[derive(Clone, Debug)]
pub struct Outage {
    /// How long PostgreSQL was down.
    pub length: Duration,
    /// Each worker: whether its `/healthz` said 503 naming the database while it lasted.
    pub said: Vec<bool>,
    /// One such answer.
    pub sample: String,
    /// Workers whose process ended during it.
    pub exited: Vec<String>,
    /// How long after the start every worker was healthy again.
    pub healthy_after: Duration,
    /// How long after the restart the last account received a message written after it
    /// (`None`: not every one within the run's wait).
    pub received_after: Option<Duration>,
}

/// What happened in a run.
pub struct Run {
    /// The seed.
    pub seed: u64,
    /// The arguments.
    pub args: Args,
    /// The run's files.
    pub dir: PathBuf,
    /// The people's messages.
    pub sent: Vec<Sent>,
    /// Messages the servers refused to take from the people.
    pub send_errors: Vec<String>,
    /// The kills.
    pub kills: Vec<Kill>,
    /// The failovers.
    pub failovers: Vec<Failover>,
    /// The accounts each worker held at the end.
    pub balance_after: Vec<usize>,
    /// The store's outage.
    pub outage: Outage,
    /// How long the store took to catch up once the people stopped.
    pub settled_in: Duration,
    /// When the set-up ended (unix ms).
    pub setup_done: i64,
    /// The accounts.
    pub accounts: Vec<Account>,
    /// Their ids in the store.
    pub account_ids: Vec<String>,
    /// Each email account's customer's maildir (empty for Telegram).
    pub customers: Vec<PathBuf>,
    /// The run's length.
    pub duration: Duration,
}

/// The outcome: the figures as Markdown and each promise broken.
pub struct Verdict {
    /// The run's files.
    pub dir: PathBuf,
    /// The figures.
    pub markdown: String,
    /// The promises that did not hold, one sentence each.
    pub broken: Vec<String>,
}

/// How far before OpenSMTPD's stamped acceptance a kill may fall and still explain a
/// duplicate mail (ms).
const ACCEPTANCE_SLACK: i64 = 50;

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i])
}

/// Checks the run.
pub async fn judge(
    run: &Run,
    pool: &sqlx::PgPool,
    loopback: &Loopback,
    dovecot_log: &Path,
    smtpd: &SmtpdAcceptances,
    reactions_seen: &Reactions,
) -> Result<Verdict, String> {
    let mut broken = Vec::new();
    let mut md = String::new();
    let stored = crate::store::inbound(pool).await?;
    let reactions = crate::store::reactions(pool).await?;
    let by_n: HashMap<u64, &Sent> = run.sent.iter().map(|s| (s.n, s)).collect();
    let is_email = |s: &Sent| matches!(run.accounts[s.account], Account::Email { .. });

    // Stored once.
    let lost: Vec<u64> =
        run.sent.iter().filter(|s| !stored.contains_key(&s.n)).map(|s| s.n).collect();
    let twice: Vec<u64> = stored.iter().filter(|(_, v)| v.0 > 1).map(|(n, _)| *n).collect();
    let wrong_account: Vec<u64> = stored
        .iter()
        .filter(|(n, v)| by_n.get(n).is_some_and(|s| run.account_ids[s.account] != v.1))
        .map(|(n, _)| *n)
        .collect();
    // One reaction each, final.
    let no_reaction: Vec<u64> =
        run.sent.iter().filter(|s| !reactions.contains_key(&s.n)).map(|s| s.n).collect();
    let double_reaction: Vec<u64> =
        reactions.iter().filter(|(_, r)| r.len() > 1).map(|(n, _)| *n).collect();
    let all_reactions: Vec<&crate::store::Reaction> = reactions.values().flatten().collect();
    let not_final =
        all_reactions.iter().filter(|r| r.status != "sent" && r.status != "failed").count();
    let failed = all_reactions.iter().filter(|r| r.status == "failed").count();

    // At the recipients: Telegram.
    let mut tg_received: HashMap<u64, usize> = HashMap::new();
    for a in &run.accounts {
        if let Account::Telegram { k, .. } = a {
            tg_received.extend(recipients::telegram_replies(loopback, *k).await?);
        }
    }
    let tg_sent: Vec<&Sent> = run.sent.iter().filter(|s| !is_email(s)).collect();
    let tg_dups = tg_received.values().filter(|c| **c > 1).count();
    let tg_missing = tg_sent
        .iter()
        .filter(|s| reactions.get(&s.n).is_some_and(|r| r.iter().any(|x| x.status == "sent")))
        .filter(|s| !tg_received.contains_key(&s.n))
        .count();
    // Email.
    let mut mail: HashMap<u64, Vec<recipients::MailCopy>> = HashMap::new();
    for dir in run.customers.iter().filter(|p| !p.as_os_str().is_empty()) {
        mail.extend(recipients::mail_replies(dir));
    }
    let email_sent: Vec<&Sent> = run.sent.iter().filter(|s| is_email(s)).collect();
    let mail_missing = email_sent
        .iter()
        .filter(|s| reactions.get(&s.n).is_some_and(|r| r.iter().any(|x| x.status == "sent")))
        .filter(|s| !mail.contains_key(&s.n))
        .count();
    let mut mail_dups = Vec::new();
    for (n, copies) in mail.iter().filter(|(_, c)| c.len() > 1) {
        let same_id = copies.iter().all(|c| c.message_id == copies[0].message_id);
        let first = copies.iter().filter_map(|c| smtpd.accepted(&c.smtpd_id)).min();
        let done = reactions.get(n).and_then(|r| r.iter().map(|x| x.updated_at).max());
        let rescued_from: Vec<&String> =
            reactions.get(n).into_iter().flatten().flat_map(|r| &r.rescued_from).collect();
        // The acceptance is stamped when the log reader sees it (every 10 ms), and a message
        // whose last bytes left the worker before its kill is accepted just after it: a kill
        // of the worker whose attempt was taken from it, from ACCEPTANCE_SLACK before the
        // stamp to the completion.
        let kill = match (first, done) {
            (Some(a), Some(d)) => run
                .kills
                .iter()
                .find(|k| {
                    a - ACCEPTANCE_SLACK <= k.at && k.at <= d && rescued_from.contains(&&k.worker)
                })
                .cloned(),
            _ => None,
        };
        mail_dups.push((*n, copies.len(), same_id, first, done, kill));
    }
    let unexplained: Vec<_> =
        mail_dups.iter().filter(|d| !d.2 || d.5.is_none()).map(|d| d.0).collect();

    // From the servers' logs: never connected from two processes at once.
    let dovecot = server_logs::dovecot_sessions(dovecot_log)?;
    // This run's mailboxes only: the log also holds the tests' and earlier runs'.
    let addresses: Vec<&str> = run
        .accounts
        .iter()
        .filter_map(|a| match a {
            Account::Email { address, .. } => Some(address.as_str()),
            Account::Telegram { .. } => None,
        })
        .collect();
    let ours: Vec<server_logs::Session> =
        dovecot.into_iter().filter(|s| addresses.contains(&s.account.as_str())).collect();
    let tg_sessions = server_logs::loopback_sessions(&loopback.sessions)?;
    // A killed process holds nothing after its kill, whatever the server logs later: Dovecot
    // may finish a LOGIN that was on its way when the client died, seconds later.
    let killed: HashMap<u32, i64> = run.kills.iter().map(|k| (k.pid, k.at)).collect();
    let (ours, dovecot_ghosts) = server_logs::until_killed(ours, &killed);
    let (tg_sessions, tg_ghosts) = server_logs::until_killed(tg_sessions, &killed);
    let dovecot_doubles = server_logs::double_connections(&ours);
    let tg_doubles = server_logs::double_connections(&tg_sessions);
    let (dovecot_unnamed, dovecot_gone) = server_logs::unattributed(&ours, run.setup_done, 1000);
    let (tg_unnamed, tg_gone) = server_logs::unattributed(&tg_sessions, run.setup_done, 1000);
    let sends = crate::store::send_jobs(pool).await?;

    // Failover times.
    let mut times: Vec<i64> = Vec::new();
    let mut not_recovered = 0;
    for f in &run.failovers {
        for (_, t) in &f.recovered {
            match t {
                Some(t) => times.push(*t),
                None => not_recovered += 1,
            }
        }
    }
    times.sort_unstable();
    let median = percentile(&times, 0.5);
    let worst = times.last().copied();

    // The promises.
    let mut check = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    let kills_in_crash_phase = run.kills.len() - run.failovers.len();
    check(
        kills_in_crash_phase >= run.args.kills(),
        format!("only {kills_in_crash_phase} kills, {} asked", run.args.kills()),
    );
    check(lost.is_empty(), format!("{} messages lost: {:?}", lost.len(), head(&lost)));
    check(twice.is_empty(), format!("{} messages stored twice: {:?}", twice.len(), head(&twice)));
    check(
        wrong_account.is_empty(),
        format!(
            "{} messages stored under another account: {:?}",
            wrong_account.len(),
            head(&wrong_account)
        ),
    );
    check(
        no_reaction.is_empty(),
        format!("{} messages without a reaction: {:?}", no_reaction.len(), head(&no_reaction)),
    );
    check(
        double_reaction.is_empty(),
        format!(
            "{} messages with two reactions: {:?}",
            double_reaction.len(),
            head(&double_reaction)
        ),
    );
    check(not_final == 0, format!("{not_final} reactions not final (still pending)"));
    check(failed == 0, format!("{failed} reactions failed"));
    check(tg_dups == 0, format!("{tg_dups} Telegram replies received twice"));
    check(
        tg_missing == 0,
        format!("{tg_missing} Telegram replies stored as sent but not received"),
    );
    check(
        mail_missing == 0,
        format!("{mail_missing} mail replies stored as sent but not received"),
    );
    check(
        unexplained.is_empty(),
        format!(
            "{} duplicate mails not explained by a kill between OpenSMTPD's acceptance and the job's completion (or with two Message-IDs): {:?}",
            unexplained.len(),
            head(&unexplained)
        ),
    );
    check(
        dovecot_doubles.is_empty(),
        format!(
            "mailboxes connected from two workers at once (Dovecot's log): {:?}",
            head(&dovecot_doubles)
        ),
    );
    check(
        tg_doubles.is_empty(),
        format!(
            "Telegram accounts connected from two workers at once (loopback sessions): {:?}",
            head(&tg_doubles)
        ),
    );
    check(
        dovecot_unnamed == 0 && tg_unnamed == 0,
        format!(
            "connections the servers could not attribute to a worker after the set-up: Dovecot {dovecot_unnamed}, loopback {tg_unnamed}"
        ),
    );
    check(
        not_recovered == 0,
        format!("{not_recovered} accounts did not receive again after a failover within 180 s"),
    );
    check(
        median.is_some_and(|m| m <= 20_000) || run.failovers.is_empty(),
        format!("failover median {median:?} ms is over 20 s"),
    );
    check(
        worst.is_some_and(|m| m <= 35_000) || run.failovers.is_empty(),
        format!("failover worst {worst:?} ms is over 35 s"),
    );
    let o = &run.outage;
    check(o.exited.is_empty(), format!("workers ended during the store's outage: {:?}", o.exited));
    check(
        o.received_after.is_some(),
        "not every account received again after the store's outage".to_owned(),
    );
    check(
        o.said.iter().all(|s| *s),
        format!(
            "not every worker's /healthz said 503 naming the database during the outage: {:?}",
            o.said
        ),
    );
    check(
        run.send_errors.is_empty(),
        format!(
            "{} messages the servers refused from the people: {:?}",
            run.send_errors.len(),
            head(&run.send_errors)
        ),
    );

    // The figures.
    let email_in = email_sent.len();
    let _ = writeln!(md, "## chaos run (seed {})\n", run.seed);
    let _ = writeln!(
        md,
        "{} workers on PostgreSQL, {} email and {} Telegram accounts, {:.1} messages/s; {:.0} s in all; files in `{}`.\n",
        run.args.workers,
        run.args.email_accounts,
        run.args.telegram_accounts,
        run.args.rate,
        run.duration.as_secs_f64(),
        run.dir.display()
    );
    let _ = writeln!(md, "| figure | value |\n| --- | --- |");
    let row = |md: &mut String, k: &str, v: String| {
        let _ = writeln!(md, "| {k} | {v} |");
    };
    row(
        &mut md,
        "`kill -9` (crash phase + failovers)",
        format!("{} + {}", kills_in_crash_phase, run.failovers.len()),
    );
    row(
        &mut md,
        "people's messages (email / Telegram)",
        format!("{} ({email_in} / {})", run.sent.len(), tg_sent.len()),
    );
    row(&mut md, "lost / stored twice", format!("{} / {}", lost.len(), twice.len()));
    row(
        &mut md,
        "reactions: missing / twice / not final / failed",
        format!("{} / {} / {not_final} / {failed}", no_reaction.len(), double_reaction.len()),
    );
    row(
        &mut md,
        "webhook deliveries (redelivered / refused)",
        format!(
            "{} ({} / {})",
            reactions_seen.deliveries, reactions_seen.redeliveries, reactions_seen.refused
        ),
    );
    row(&mut md, "Telegram replies received twice / missing", format!("{tg_dups} / {tg_missing}"));
    row(
        &mut md,
        "mail replies received twice (explained by a kill) / missing",
        format!("{} ({}) / {mail_missing}", mail_dups.len(), mail_dups.len() - unexplained.len()),
    );
    row(
        &mut md,
        "store caught up after the traffic stopped",
        format!("{:.1} s", run.settled_in.as_secs_f64()),
    );
    for (i, f) in run.failovers.iter().enumerate() {
        let mut t: Vec<i64> = f.recovered.iter().filter_map(|(_, t)| *t).collect();
        t.sort_unstable();
        row(
            &mut md,
            &format!("failover {}: {} killed, held before {:?}", i + 1, f.worker, f.balance_before),
            format!(
                "{} accounts moved, received again after median {:.1} s, worst {:.1} s",
                f.recovered.len(),
                percentile(&t, 0.5).unwrap_or(0) as f64 / 1000.0,
                t.last().copied().unwrap_or(0) as f64 / 1000.0
            ),
        );
    }
    row(
        &mut md,
        "failover over all (median / worst)",
        format!(
            "{:.1} s / {:.1} s",
            median.unwrap_or(0) as f64 / 1000.0,
            worst.unwrap_or(0) as f64 / 1000.0
        ),
    );
    row(&mut md, "held at the end", format!("{:?}", run.balance_after));
    row(
        &mut md,
        &format!("PostgreSQL stopped for {} s under traffic", o.length.as_secs()),
        format!(
            "workers ended: {}; `/healthz` 503 naming the database: {} of {}; all healthy {:.1} s and every account received again {} after the restart",
            o.exited.len(),
            o.said.iter().filter(|s| **s).count(),
            o.said.len(),
            o.healthy_after.as_secs_f64(),
            o.received_after
                .map_or_else(|| "never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        ),
    );
    row(
        &mut md,
        "connected from two workers at once (Dovecot sessions / loopback sessions)",
        format!(
            "{} of {} / {} of {}",
            dovecot_doubles.len(),
            ours.len(),
            tg_doubles.len(),
            tg_sessions.len()
        ),
    );
    row(
        &mut md,
        "connections whose client was gone when the server looked (killed while connecting; reset within 1 s)",
        format!("Dovecot {dovecot_gone}, loopback {tg_gone}"),
    );
    row(
        &mut md,
        "logins the server completed after their client was killed (not counted as held)",
        format!("Dovecot {dovecot_ghosts}, loopback {tg_ghosts}"),
    );
    let mut waits: Vec<i64> = sends.iter().filter_map(|s| s.sent_after).collect();
    waits.sort_unstable();
    let put_back = sends.iter().filter(|s| s.put_back > 0).count();
    row(
        &mut md,
        "sends: queued -> sent (p50 / p99 / max)",
        format!(
            "{} sends: {:.2} s / {:.2} s / {:.2} s",
            sends.len(),
            percentile(&waits, 0.5).unwrap_or(0) as f64 / 1000.0,
            percentile(&waits, 0.99).unwrap_or(0) as f64 / 1000.0,
            waits.last().copied().unwrap_or(0) as f64 / 1000.0
        ),
    );
    row(
        &mut md,
        "sends put back at least once (claimed where the account's channel does not run, or during the outage)",
        format!("{put_back} of {}", sends.len()),
    );
    let _ = writeln!(md);
    if !mail_dups.is_empty() {
        let _ = writeln!(md, "Duplicate mails:\n");
        for (n, copies, same_id, accepted, done, kill) in &mail_dups {
            let kill = kill.as_ref().map_or_else(
                || "no kill in between".to_owned(),
                |k| {
                    let after = k.at - accepted.unwrap_or(k.at);
                    format!("{} (pid {}) killed at {} ({after:+} ms from the acceptance), its attempt rescued", k.worker, k.pid, k.at)
                },
            );
            let _ = writeln!(
                md,
                "- `re chaos-in-{n}`: {copies} copies, {} Message-ID; first accepted by OpenSMTPD at {accepted:?}, job completed at {done:?} (unix ms); {kill}",
                if *same_id { "one" } else { "different" },
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "`/healthz` during the outage: `{}`\n", o.sample.trim());
    if broken.is_empty() {
        let _ = writeln!(md, "Every promise held.");
    } else {
        let _ = writeln!(md, "Broken:\n");
        for b in &broken {
            let _ = writeln!(md, "- {b}");
        }
    }
    Ok(Verdict { dir: run.dir.clone(), markdown: md, broken })
}

fn head<T: Clone>(v: &[T]) -> Vec<T> {
    v.iter().take(10).cloned().collect()
}
