//! `chaos`: the project's crash and failover harness, run by `scripts/chaos`.
//!
//! It runs `inbox run` workers (the debug build) as processes on one PostgreSQL database,
//! against the real Dovecot and OpenSMTPD and the loopback MTProto server run as a process of
//! its own, with email and Telegram accounts. People write in through both; a service (the
//! webhook endpoint of [`reactor`]) answers every message through the event feed. Meanwhile
//! workers are killed with `SIGKILL` at random moments and started again, and then, several
//! times, one is killed and left dead while its accounts move to the others.
//!
//! The verdict is read from the store and from the servers' side: every message stored once,
//! exactly one reaction per message and every reaction final; at the recipients, no Telegram
//! reply twice and every duplicate mail explained by a kill; the failover times; and from
//! Dovecot's log and the loopback server's sessions, no account connected from two processes
//! at once. It prints the figures (Markdown with `--report FILE`) and exits 1 when a promise
//! does not hold.

mod api;
mod clock;
mod loopback;
mod postgres;
mod reactor;
mod recipients;
mod scenario;
mod server_logs;
mod store;
mod traffic;
mod verdict;
mod workers;

use std::path::PathBuf;

use clap::Parser;

/// Crashes, failovers and the checks of the outcome (see the crate's documentation).
#[derive(Parser, Debug, Clone)]
#[command(name = "chaos", version)]
pub struct Args {
    /// The short run of `scripts/test`: 10 kills and one failover.
    #[arg(long)]
    pub short: bool,
    /// `SIGKILL`s at random moments (default 50; 10 with `--short`).
    #[arg(long)]
    pub kills: Option<usize>,
    /// Failovers: a worker killed and left dead until its accounts receive on the others
    /// (default 3; 1 with `--short`).
    #[arg(long)]
    pub failovers: Option<usize>,
    /// Workers.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Email accounts.
    #[arg(long, default_value_t = 20)]
    pub email_accounts: usize,
    /// Telegram accounts.
    #[arg(long, default_value_t = 10)]
    pub telegram_accounts: usize,
    /// People's messages per second, over all accounts.
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// How long PostgreSQL is stopped under traffic, in seconds (longer than the leases'
    /// 15 s: every account is given up and taken again).
    #[arg(long, default_value_t = 10)]
    pub outage_secs: u64,
    /// The random seed (printed; the same seed draws the same kills and messages).
    #[arg(long, env = "CHAOS_SEED")]
    pub seed: Option<u64>,
    /// Where the `inbox` and `loopback-server` binaries are.
    #[arg(long, default_value = "target/debug")]
    pub bin_dir: PathBuf,
    /// Where the run keeps its files (workers' logs, data directories); default a new
    /// directory under the system's temporary one, removed when every promise held.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Writes the figures to this file as Markdown.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

impl Args {
    /// The kills of this run.
    pub fn kills(&self) -> usize {
        self.kills.unwrap_or(if self.short { 10 } else { 50 })
    }

    /// The failovers of this run.
    pub fn failovers(&self) -> usize {
        self.failovers.unwrap_or(if self.short { 1 } else { 3 })
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let keep = args.dir.is_some();
    match scenario::run(args).await {
        Ok(verdict) => {
            println!("{}", verdict.markdown);
            if verdict.broken.is_empty() && !keep {
                // Its own temporary directory (workers' data and logs, PostgreSQL): kept only
                // when a promise broke, to be read.
                let _ = std::fs::remove_dir_all(&verdict.dir);
            }
            if !verdict.broken.is_empty() {
                eprintln!("chaos: {} promise(s) broken:", verdict.broken.len());
                for b in &verdict.broken {
                    eprintln!("  - {b}");
                }
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2);
        }
    }
}
