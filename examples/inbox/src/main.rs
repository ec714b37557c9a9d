//! `inbox`: the channel worker program.
//!
//! - `inbox demo`: `inbox run`'s worker with a Telegram account on the loopback MTProto
//!   server and simulated people (`demo.rs`).
//! - `inbox` (or `inbox simulate`): the scripted simulation below.
//! - `inbox run`: the worker a deployment runs, with its HTTP API (`inbox::worker`).
//! - `inbox account list|add-email|enable|disable|remove`, `inbox conversations`,
//!   `inbox messages`, `inbox send`, `inbox status`: talk to a running worker through its API.
//!
//! The simulation opens (or creates) a store under `./target/inbox`, runs one demo account on the
//! in-memory channel through the real `Runtime` (supervised loops under the watchdog, the
//! dispatcher, lifecycle sweeps), simulates people writing in, answers every new conversation
//! with an auto-reply, and prints a summary read back from the store. Run it twice: the
//! second run finds the same messages already stored.
//!
//! ```sh
//! cargo run -p inbox                  # 10 seconds
//! cargo run -p inbox -- --seconds 20
//! RUST_LOG=debug cargo run -p inbox
//! ```
//!
//! See `examples/inbox/README.md` for how to read the output.

mod commands;
#[cfg(feature = "demo")]
mod demo;
mod error;
mod prompt;
mod setup;
mod simulation;
mod summary;

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use channel_core::retry::RetryPolicy;
use channel_core::runtime::{Runtime, StaticChannels};
use channel_core::state::StateError;
use channel_core::testing::MemoryChannel;
use channel_core::{
    AccountId, AccountSettings, AccountUpdate, Channel, Engine, Event, LifecyclePolicy, OnClosed,
    Store,
};
use channel_watchdog::LoopStatus;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tokio::sync::broadcast;
use tracing_subscriber::EnvFilter;

use crate::error::{Error, ResultExt};
use crate::setup::{KeySource, Paths};

/// How long the demo runs by default.
const DEFAULT_SECONDS: u64 = 10;
/// The short lifecycle policy of the demo account, so that conversations visibly go idle and
/// close within a run (a service would use hours or days).
const DEMO_LIFECYCLE: LifecyclePolicy = LifecyclePolicy {
    idle_after: Some(Duration::from_millis(1500)),
    close_after: Some(Duration::from_secs(3)),
    expire_after: None,
    on_closed: OnClosed::StartNew,
};
/// The account-state slot where the demo counts its runs.
const RUNS_KEY: &str = "inbox-demo:runs";

/// `inbox run`: until Ctrl-C or SIGTERM.
async fn run_worker(options: inbox::worker::WorkerOptions) -> Result<(), Error> {
    let worker = inbox::worker::start(options.clone()).await.map_err(Error::msg)?;
    println!(
        "inbox worker running; API on http://{}/api/v1 (token in {})",
        worker.addr,
        options.data_dir.join("api.token").display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    worker.shutdown().await;
    Ok(())
}

/// The command line (`inbox --help`).
#[derive(Debug, Parser)]
#[command(
    name = "inbox",
    version,
    about = "The channel worker: Telegram and email conversations, stored once, answered through a durable queue.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command: the simulation.
    #[command(flatten)]
    simulate: DemoArgs,
}

/// The simulation's options.
#[derive(Debug, Clone, clap::Args)]
struct DemoArgs {
    /// How long the simulation runs, in seconds.
    #[arg(long, short, default_value_t = DEFAULT_SECONDS)]
    seconds: u64,
    /// Also serve the HTTP API there (such as 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

/// Which worker a command talks to.
#[derive(Debug, Clone, clap::Args)]
struct Target {
    /// The worker's data directory (its API's address and token are there).
    #[arg(long, env = "INBOX_DATA_DIR", default_value = "./inbox-data", global = true)]
    data_dir: std::path::PathBuf,
    /// The API's address instead of the one the worker wrote (http://host:port/api/v1).
    #[arg(long, env = "INBOX_API", global = true)]
    api: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The demo: `inbox run`'s worker with a Telegram account on the loopback MTProto server
    /// and simulated people writing in, until Ctrl-C (or `--for`).
    Demo {
        /// Stop after this long (such as 30s or 2m), then print a summary.
        #[arg(long = "for", value_parser = parse_duration)]
        run_for: Option<Duration>,
        /// Where the HTTP API listens.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// The demo's data directory (made fresh every run).
        #[arg(long, default_value = "./target/inbox/demo")]
        data_dir: std::path::PathBuf,
    },
    /// A scripted simulation on the in-memory channel: duplicates, a retried send, the dead
    /// letter, the lifecycle (the default command).
    Simulate(DemoArgs),
    /// The worker a deployment runs, with its HTTP API, until Ctrl-C or SIGTERM. Settings
    /// come from the defaults, then the TOML file, then INBOX_* environment variables, then
    /// these flags (see `inbox.example.toml`).
    Run {
        /// A TOML configuration file (every setting is described in inbox.example.toml).
        #[arg(long, env = "INBOX_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// The data directory (created 0700): database, blobs, state keys, API token
        /// [default: ./inbox-data].
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// A postgres:// URL shared by several workers (needs the `postgres` feature).
        #[arg(long)]
        database_url: Option<String>,
        /// Where the HTTP API listens [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// This worker's id [default: a fresh one per process].
        #[arg(long)]
        worker_id: Option<String>,
        /// The Telegram app's id (my.telegram.org); with the hash, Telegram accounts run here.
        #[arg(long)]
        telegram_api_id: Option<i32>,
        /// The Telegram app's hash (better in the file or INBOX_TELEGRAM_API_HASH: the
        /// command line is visible to other users of the machine).
        #[arg(long)]
        telegram_api_hash: Option<String>,
        /// Logs as JSON lines (for a log collector) instead of text.
        #[arg(long)]
        json_logs: bool,
        /// `/metrics` asks for the API token too (default: open, as Prometheus scrapes).
        #[arg(long)]
        metrics_behind_token: bool,
    },
    /// Accounts of the running worker.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Conversations, newest activity first.
    Conversations {
        /// Only these (open, idle, closed, expired).
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// The messages of a conversation, newest first.
    Messages {
        /// The conversation's id.
        conversation: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Queues a text message in a conversation, with files if given.
    Send {
        /// The conversation's id.
        conversation: String,
        /// The text.
        text: String,
        /// The same key again sends nothing more.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// A file to attach (again for more).
        #[arg(long = "attach")]
        attachments: Vec<std::path::PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Fetches an account's older history (one page, 100 by default, at most 500), showing
    /// its progress until it is done.
    SyncHistory {
        /// The account's id.
        account: String,
        /// Only this chat or thread (its thread key).
        #[arg(long)]
        thread: Option<String>,
        /// How many messages.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// The worker processes and their loops, and the accounts.
    Status {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Lists the accounts and their connection state.
    List,
    /// Adds an email account, verified by logging in before it is kept. The password comes
    /// from INBOX_EMAIL_PASSWORD or is read from standard input, never from the command line.
    AddEmail {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// The account's configuration: a JSON file (address, imap, smtp, ...).
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Logs a Telegram account in: asks for the phone number, the code Telegram sends and
    /// (with two-step verification) the password, which is not shown as it is typed (or
    /// INBOX_TELEGRAM_PASSWORD); with `--qr`, draws a QR code to scan with Telegram on a
    /// phone instead (Settings, Devices, Link Desktop Device), redrawn as it rotates.
    LoginTelegram {
        /// An account already added (see `inbox account list`); without it, a new one is
        /// added first (and removed again if the login fails).
        #[arg(long)]
        account: Option<String>,
        /// The new account's name.
        #[arg(long, default_value = "Telegram")]
        name: String,
        /// The new account's configuration, a JSON file, if it needs one.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Log in by scanning a QR code instead of with the phone number.
        #[arg(long, conflicts_with = "phone")]
        qr: bool,
        /// The phone number, in international form (asked for when missing).
        #[arg(long)]
        phone: Option<String>,
    },
    /// Enables an account.
    Enable {
        /// The account's id.
        id: String,
    },
    /// Disables an account (its worker disconnects it).
    Disable {
        /// The account's id.
        id: String,
    },
    /// Removes an account (its messages stay).
    Remove {
        /// The account's id.
        id: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inbox: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inbox: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses `30s`, `2m`, `500ms`, `1h` or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let bad = || format!("`{text}` is not a duration such as 30s or 2m");
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(bad()),
    }
}

fn init_logs(with_elapsed: bool, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else if with_elapsed {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_timer(Elapsed(std::time::Instant::now()))
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

async fn dispatch(cli: Cli) -> Result<(), Error> {
    let command = cli.command.unwrap_or(Command::Simulate(cli.simulate));
    match command {
        Command::Simulate(args) => {
            init_logs(true, false);
            run(args).await
        }
        #[cfg(feature = "demo")]
        Command::Demo { run_for, listen, data_dir } => {
            init_logs(false, false);
            demo::run(demo::DemoOptions { listen, run_for, data_dir }).await
        }
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => Err(Error::msg(
            "this build has no demo: build the program with its `demo` feature (on by default)",
        )),
        Command::Run {
            config,
            data_dir,
            database_url,
            listen,
            worker_id,
            telegram_api_id,
            telegram_api_hash,
            json_logs,
            metrics_behind_token,
        } => {
            let flags = inbox::config::Overrides {
                data_dir,
                database_url,
                listen,
                worker_id,
                json_logs,
                metrics_behind_token,
                telegram: inbox::config::TelegramOverrides {
                    api_id: telegram_api_id,
                    api_hash: telegram_api_hash,
                },
            };
            let options = inbox::worker::WorkerOptions::load(config.as_deref(), &flags)
                .map_err(|e| Error::msg(e.to_string()))?;
            init_logs(false, options.json_logs);
            run_worker(options).await
        }
        other => commands::run(other).await,
    }
}

/// Serves the HTTP API on `addr` until `stop` fires; prints where and the token.
async fn start_api(
    addr: std::net::SocketAddr,
    engine: &Engine,
    watchdog: channel_watchdog::Watchdog,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let token_file = std::path::Path::new(setup::BASE_DIR).join("api.token");
    let token = inbox::api::token(&token_file).map_err(Error::msg)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    let state = inbox::api::ApiState::new(engine.clone(), token.clone())
        .watchdog(watchdog)
        .metrics(metrics, true);
    let listener = inbox::api::bind(addr).await.map_err(Error::msg)?;
    let bound = listener.local_addr().context("cannot read the bound address")?;
    println!("API on http://{bound}/api/v1 (token: {token}, kept in {})", token_file.display());
    let stopping = state.stopping();
    let router = inbox::api::router(state);
    Ok(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.await;
            stopping.cancel();
        };
        if let Err(e) = inbox::api::serve(listener, router, stopped).await {
            tracing::warn!(error = %e, "the HTTP API stopped");
        }
    }))
}

async fn run(args: DemoArgs) -> Result<(), Error> {
    // The store, the key, the account.
    let paths = Paths::from_env();
    let (state_key, key_source) = setup::state_keys(&paths.key_file)?;
    match &key_source {
        KeySource::Environment => tracing::info!("account-state keys from CHANNEL_STATE_KEYS"),
        KeySource::File(p) => tracing::info!("account-state key read from {}", p.display()),
        KeySource::Generated(p) => tracing::info!(
            "generated a new account-state key and kept it in {} (never printed; \
             keep it with the database: encrypted account state cannot be read without it)",
            p.display()
        ),
    }
    let sql = setup::open_store(&paths).await?;
    tracing::info!(
        database = %paths.database_for_log(),
        backend = ?sql.backend(),
        blobs = %paths.blobs.display(),
        "store open, schema up to date"
    );
    let store: Arc<dyn Store> = Arc::new(sql.clone());
    let (account, created) = setup::demo_account(&store).await?;
    tracing::info!(
        account = %short(account.id),
        "{}",
        if created { "demo account created" } else { "demo account found: reusing it" }
    );

    // The engine: a short lifecycle, quick retries and sweeps, short leases, so that
    // everything happens within a run of a few seconds.
    let backoff = channel_core::Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
    let engine = Engine::builder(Arc::clone(&store), state_key)
        .retry(RetryPolicy { backoff, ..RetryPolicy::DEFAULT })
        .sweep_interval(Duration::from_secs(1))
        .rescue_interval(Duration::from_secs(1))
        .leases(Duration::from_secs(6), Duration::from_secs(2))
        .blob_dir(&paths.blobs)
        .build()
        .context("cannot build the engine")?;
    let settings = AccountSettings::default().with_lifecycle(DEMO_LIFECYCLE);
    engine
        .update_account(account.id, AccountUpdate::default().settings(settings))
        .await
        .context("cannot store the demo account's lifecycle policy")?;
    let run_number = count_run(&engine, account.id, &paths).await?;

    // Events, logged as they are published (ids only: events carry no content).
    let event_log = tokio::spawn(log_events(engine.subscribe()));
    let autoresponder_events = engine.subscribe();

    // The runtime: lease, account loop, dispatcher, leader (rescues and sweeps).
    let channel = Arc::new(MemoryChannel::new());
    let channels = StaticChannels::new().with(account.id, Arc::clone(&channel) as Arc<dyn Channel>);
    let runtime = Runtime::builder(engine.clone(), Arc::new(channels))
        .channel_max_silence(Duration::from_secs(30))
        .shutdown_deadline(Duration::from_secs(5))
        .start()
        .await
        .context("cannot start the runtime")?;
    runtime
        .watchdog()
        .register(simulation::autoresponder(
            engine.clone(),
            Arc::clone(&channel),
            simulation::Faults::planned(),
            autoresponder_events,
        ))
        .context("cannot start the auto-responder")?;
    wait_for_account(&runtime, account.id).await;

    // The HTTP API, when asked for.
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = match args.listen {
        Some(addr) => {
            Some(start_api(addr, &engine, runtime.watchdog().clone(), api_stopped).await?)
        }
        None => None,
    };

    // The simulated people, then the quiet period until the deadline or Ctrl-C.
    let traffic = tokio::spawn(simulation::run_traffic(
        engine.clone(),
        Arc::clone(&channel),
        account.id,
        run_number,
    ));
    let deadline = tokio::time::sleep(Duration::from_secs(args.seconds));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(deadline, ctrl_c);
    let mut status_every = tokio::time::interval(Duration::from_secs(2));
    status_every.tick().await;
    loop {
        tokio::select! {
            () = &mut deadline => {
                tracing::info!("{} s are up: shutting down", args.seconds);
                break;
            }
            signal = &mut ctrl_c => {
                match signal {
                    Ok(()) => tracing::info!("Ctrl-C: shutting down"),
                    Err(e) => tracing::warn!(error = %e, "cannot listen for Ctrl-C; shutting down"),
                }
                break;
            }
            _ = status_every.tick() => log_status(&runtime.watchdog().status()),
        }
    }

    if traffic.is_finished() {
        match traffic.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the simulation stopped early"),
            Err(e) => tracing::warn!(error = %e, "the simulation task failed"),
        }
    } else {
        traffic.abort();
        tracing::info!("stopped the simulation before it finished");
    }
    log_status(&runtime.watchdog().status());
    let _ = api_stop.send(());
    if let Some(api) = api {
        let _ = api.await;
    }
    let report = runtime.shutdown().await;
    tracing::info!(
        graceful = report.all_graceful(),
        within_deadline = report.within_deadline(),
        "runtime shut down: loops stopped, leases released"
    );
    // Let the last events be logged.
    tokio::time::sleep(Duration::from_millis(50)).await;
    event_log.abort();

    let result = summary::print(&store, &channel, run_number).await;
    sql.close().await;
    result
}

/// Counts this run in the demo account's encrypted state, which also checks that the state
/// key opens what earlier runs wrote.
async fn count_run(engine: &Engine, account: AccountId, paths: &Paths) -> Result<u64, Error> {
    let state = engine.account_state(account);
    let previous = match state.get(RUNS_KEY).await {
        Ok(v) => v
            .and_then(|v| std::str::from_utf8(v.expose_secret()).ok()?.parse::<u64>().ok())
            .unwrap_or(0),
        Err(e @ (StateError::Decrypt { .. } | StateError::MissingKey { .. })) => {
            return Err(Error::msg(format!(
                "the demo account's state does not open with these state keys ({e}): the \
                 database was written under another key. Set CHANNEL_STATE_KEYS to that key, or delete {} and \
                 the database ({}) to start over",
                paths.key_file.display(),
                paths.database_for_log()
            )));
        }
        Err(e) => return Err(e).context("cannot read the demo account's state"),
    };
    let run = previous + 1;
    state.put(RUNS_KEY, run.to_string().as_bytes()).await.context("cannot write account state")?;
    tracing::info!(run, "run #{run} on this database (counted in the encrypted account state)");
    Ok(run)
}

/// Waits until this process holds the account's lease and runs its channel. A previous run
/// that was killed leaves its lease behind until it expires (6 s here).
async fn wait_for_account(runtime: &Runtime, account: AccountId) {
    let waiting = tokio::time::Instant::now();
    let mut told = false;
    while !runtime.holds_account(account) {
        if waiting.elapsed() > Duration::from_secs(10) {
            tracing::warn!("the account's lease is still held elsewhere; going on without it");
            return;
        }
        if !told && waiting.elapsed() > Duration::from_millis(500) {
            tracing::info!(
                "waiting for the account's lease (held by an earlier run until it expires)"
            );
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(account = %short(account), "this process holds the account's lease");
}

/// Logs every event as it comes. Events carry ids and states only.
async fn log_events(mut events: broadcast::Receiver<Event>) {
    use broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(target: "inbox::event", missed = n, "event log fell behind");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        match event {
            Event::MessageReceived { conversation_id, message_id, .. } => tracing::info!(
                target: "inbox::event",
                conversation = %short(conversation_id),
                message_id = %short(message_id),
                "message_received"
            ),
            Event::MessageSent { message_id, .. } => tracing::info!(
                target: "inbox::event",
                message_id = %short(message_id),
                "message_sent"
            ),
            Event::MessageStatusChanged { message_id, status, .. } => tracing::info!(
                target: "inbox::event",
                message_id = %short(message_id),
                %status,
                "message_status_changed"
            ),
            Event::ConversationOpened { conversation_id, .. } => tracing::info!(
                target: "inbox::event",
                conversation = %short(conversation_id),
                "conversation_opened"
            ),
            Event::ConversationStatusChanged { conversation_id, status, .. } => tracing::info!(
                target: "inbox::event",
                conversation = %short(conversation_id),
                %status,
                "conversation_status_changed"
            ),
            Event::AccountStateChanged { account_id, state } => tracing::info!(
                target: "inbox::event",
                account = %short(account_id),
                state = state.name(),
                "account_state_changed"
            ),
            other => tracing::info!(target: "inbox::event", ?other, "event"),
        }
    }
}

/// One line with every supervised loop: `name=state/restarts`.
fn log_status(loops: &[LoopStatus]) {
    let loops: Vec<String> = loops
        .iter()
        .map(|l| {
            let name = match l.name.strip_prefix("account:") {
                Some(id) => format!("account:{}", short(id)),
                None => l.name.clone(),
            };
            let state = format!("{:?}", l.state).to_lowercase();
            format!("{name}={state}/{}", l.restarts_total)
        })
        .collect();
    tracing::info!(target: "inbox::watchdog", "loops (state/restarts): {}", loops.join(" "));
}

/// An id shortened to its last 8 hex digits (`#1a2b3c4d`) for the log. Full ids are in the
/// database.
pub fn short(id: impl Display) -> String {
    let s = id.to_string();
    let tail = s.char_indices().rev().nth(7).map_or(0, |(i, _)| i);
    format!("#{}", &s[tail..])
}

/// Log timestamps as seconds since the start (`  1.234s`).
struct Elapsed(std::time::Instant);

impl tracing_subscriber::fmt::time::FormatTime for Elapsed {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>7.3}s", self.0.elapsed().as_secs_f64())
    }
}
