//! The run: set-up, the crash phase, the failovers, the settling, then the verdict.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use channel_core::Engine;
use channel_core::state::StateKeys;
use channel_store::SqlStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::Args;
use crate::api::Api;
use crate::clock;
use crate::loopback::Loopback;
use crate::postgres::Postgres;
use crate::reactor::{self, Apis};
use crate::server_logs::SmtpdAcceptances;
use crate::traffic::{Account, Sent, Traffic};
use crate::verdict::{self, Failover, Kill, Outage, Run, Verdict};
use crate::workers::{Fleet, FleetSettings, binary};

const API_ID: i32 = 4242;
const API_HASH: &str = "chaos-app-hash";
const CODE: &str = "13579";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long the run waits for a worker, an account or the store to catch up.
const WAIT: Duration = Duration::from_secs(180);

fn say(what: &str) {
    eprintln!("[chaos {}] {what}", clock::ms(SystemTime::now()) / 1000 % 100_000);
}

/// The run's accounts: (kind and people, id in the store).
struct Accounts {
    list: Vec<Account>,
    ids: Vec<String>,
    customers: Vec<PathBuf>,
}

/// Runs everything; the verdict.
pub async fn run(args: Args) -> Result<Verdict, String> {
    let started = Instant::now();
    let seed = args.seed.unwrap_or_else(rand::random);
    say(&format!("seed {seed} (CHAOS_SEED or --seed {seed} draws this run again)"));
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("chaos-{}", uuid::Uuid::new_v4().simple())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    say(&format!("files in {}", dir.display()));

    let stack = channel_email::testing::try_stack().map_err(|e| e.to_string())?;
    if stack.dir.as_os_str().is_empty() {
        return Err(
            "TEST_MAIL_DIR is not set: run through scripts/chaos, which starts the mail stack"
                .into(),
        );
    }
    let dovecot_log = stack.dir.join("dovecot.log");
    let smtpd = SmtpdAcceptances::follow(stack.dir.join("smtpd").join("smtpd.log"));
    // A server of the run's own: the run stops it under traffic and starts it again.
    let postgres = Postgres::start(dir.join("pg")).await?;
    let database_url = crate::store::fresh_database(&postgres.url()).await?;
    let pool = sqlx::PgPool::connect(&database_url)
        .await
        .map_err(|e| format!("cannot connect to the run's database: {e}"))?;

    let loopback = Arc::new(
        Loopback::start(
            &binary(&args.bin_dir, "loopback-server")?,
            args.telegram_accounts,
            &dir.join("telegram-sessions.log"),
        )
        .await?,
    );
    let apis: Apis = Arc::default();
    let (webhook_url, reactions) = reactor::start(Arc::clone(&apis)).await?;
    let state_keys = hex::encode(rand::random::<[u8; 32]>());
    let mut fleet = Fleet::new(
        FleetSettings {
            bin: binary(&args.bin_dir, "inbox")?,
            dir: dir.clone(),
            database_url: database_url.clone(),
            state_keys: state_keys.clone(),
            webhook_url,
            webhook_secret: WEBHOOK_SECRET.to_owned(),
            telegram_app: (API_ID, API_HASH.to_owned()),
        },
        args.workers,
    )?;
    // The first worker creates the schema; then the others.
    fleet.start(0)?;
    fleet.wait_healthy(0, WAIT).await?;
    for i in 1..args.workers {
        fleet.start(i)?;
    }
    for i in 1..args.workers {
        fleet.wait_healthy(i, WAIT).await?;
    }
    *lock(&apis) = fleet.running_apis();
    say(&format!("{} workers up", args.workers));

    let keys = StateKeys::parse(&state_keys.clone().into()).map_err(|e| e.to_string())?;
    let store = SqlStore::connect_postgres(&database_url).await.map_err(|e| e.to_string())?;
    let engine = Engine::builder(Arc::new(store), keys)
        .worker_id("chaos-harness".to_owned())
        .blob_dir(dir.join("blobs"))
        .build()
        .map_err(|e| e.to_string())?;
    let accounts = add_accounts(&args, &fleet, &loopback, &engine, stack).await?;
    let total = accounts.list.len();
    let balance = wait_balanced(&fleet, &accounts, total).await?;
    say(&format!("{total} accounts connected, held {balance:?}"));
    let setup_done = clock::ms(SystemTime::now());

    // People write in, all along.
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let send_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    // Accounts to write to before the next random one (the failovers' probes).
    let probes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let traffic = {
        let (sent, stop, errors) = (Arc::clone(&sent), Arc::clone(&stop), Arc::clone(&send_errors));
        let probes = Arc::clone(&probes);
        let list = accounts.list.clone();
        let mut traffic = Traffic::new(stack.smtp_port, Arc::clone(&loopback));
        let every = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let mut next: Vec<usize> = std::mem::take(&mut *lock(&probes));
                next.push(rng.random_range(0..list.len()));
                for i in next {
                    match traffic.send(&list, i).await {
                        Ok(s) => lock(&sent).push(s),
                        Err(e) => lock(&errors).push(e),
                    }
                }
            }
            traffic
        })
    };

    // Kills at random moments, each worker started again after a random pause.
    let mut kills = Vec::new();
    say(&format!("crash phase: {} kills", args.kills()));
    for _ in 0..args.kills() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..3500))).await;
        let running: Vec<usize> =
            (0..fleet.workers.len()).filter(|&i| fleet.workers[i].running()).collect();
        let victim = running[rng.random_range(0..running.len())];
        if let Some((at, pid)) = fleet.kill(victim).await {
            kills.push(Kill { at: clock::ms(at), worker: fleet.workers[victim].name.clone(), pid });
        }
        *lock(&apis) = fleet.running_apis();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..2500))).await;
        fleet.start(victim)?;
        fleet.wait_healthy(victim, WAIT).await?;
        *lock(&apis) = fleet.running_apis();
    }
    say(&format!("{} kills done", kills.len()));

    // Failovers: a worker killed and left dead until its accounts receive on the others.
    let mut failovers = Vec::new();
    for f in 0..args.failovers() {
        let before = wait_balanced(&fleet, &accounts, total).await?;
        let holdings = fleet.holdings().await.ok_or("no worker answers GET /workers")?;
        let victim = rng.random_range(0..fleet.workers.len());
        let name = fleet.workers[victim].name.clone();
        let held: Vec<String> =
            holdings.iter().find(|(w, _)| *w == name).map(|(_, a)| a.clone()).unwrap_or_default();
        say(&format!("failover {}: killing {name}, which holds {} accounts", f + 1, held.len()));
        let Some((at, pid)) = fleet.kill(victim).await else {
            return Err(format!("{name} was not running"));
        };
        kills.push(Kill { at: clock::ms(at), worker: name.clone(), pid });
        *lock(&apis) = fleet.running_apis();
        let recovered = wait_received_again(&accounts, &held, at, &sent, &probes, &pool).await?;
        failovers.push(Failover { worker: name.clone(), balance_before: before, recovered });
        fleet.start(victim)?;
        fleet.wait_healthy(victim, WAIT).await?;
        *lock(&apis) = fleet.running_apis();
    }
    let balance_after = wait_balanced(&fleet, &accounts, total).await?;

    // The store stopped under traffic and started again.
    let outage = store_outage(
        &mut fleet,
        &postgres,
        &accounts,
        Duration::from_secs(args.outage_secs),
        &sent,
        &probes,
        &pool,
    )
    .await?;
    *lock(&apis) = fleet.running_apis();

    // Settle: no more messages; every one stored and answered, every answer final.
    stop.store(true, Ordering::SeqCst);
    let _ = traffic.await;
    let sent = lock(&sent).clone();
    say(&format!("{} messages sent; settling", sent.len()));
    let settle_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stored = crate::store::inbound(&pool).await?;
        let reactions = crate::store::reactions(&pool).await?;
        let all_stored = sent.iter().all(|s| stored.contains_key(&s.n));
        let all_final = sent.iter().all(|s| {
            reactions
                .get(&s.n)
                .is_some_and(|r| r.iter().all(|x| x.status == "sent" || x.status == "failed"))
        });
        if (all_stored && all_final) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let settled_in = settle_started.elapsed();

    let run = Run {
        seed,
        args: args.clone(),
        dir: dir.clone(),
        sent,
        send_errors: lock(&send_errors).clone(),
        kills,
        failovers,
        balance_after,
        outage,
        settled_in,
        setup_done,
        accounts: accounts.list.clone(),
        account_ids: accounts.ids.clone(),
        customers: accounts.customers.clone(),
        duration: started.elapsed(),
    };
    let seen = lock(&reactions).clone();
    let verdict = verdict::judge(&run, &pool, &loopback, &dovecot_log, &smtpd, &seen).await?;
    for i in 0..fleet.workers.len() {
        fleet.kill(i).await;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, &verdict.markdown)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(verdict)
}

/// Stops PostgreSQL for `outage` while the people write, asking every worker's `/healthz`
/// twice a second, then starts it again and waits until every worker is healthy.
async fn store_outage(
    fleet: &mut Fleet,
    postgres: &Postgres,
    accounts: &Accounts,
    outage: Duration,
    sent: &Arc<Mutex<Vec<Sent>>>,
    probes: &Arc<Mutex<Vec<usize>>>,
    pool: &sqlx::PgPool,
) -> Result<Outage, String> {
    say(&format!("store outage: PostgreSQL stopped for {outage:?}"));
    postgres.down().await?;
    let down = Instant::now();
    let n = fleet.workers.len();
    let mut answers: Vec<Vec<(u16, String)>> = vec![Vec::new(); n];
    while down.elapsed() < outage {
        for (i, list) in answers.iter_mut().enumerate() {
            if let Some(api) = fleet.api(i) {
                list.push(api.health().await);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut exited = Vec::new();
    for i in 0..n {
        if fleet.exited(i) {
            exited.push(fleet.workers[i].name.clone());
        }
    }
    postgres.up().await?;
    let up = Instant::now();
    for i in 0..n {
        fleet.wait_healthy(i, WAIT).await?;
    }
    let healthy_after = up.elapsed();
    // And every account receives again (their channels stopped when their leases could not be
    // renewed): a message written after the restart, stored.
    let restarted = SystemTime::now() - up.elapsed();
    let received =
        wait_received_again(accounts, &accounts.ids, restarted, sent, probes, pool).await?;
    let mut times: Vec<i64> = received.iter().filter_map(|(_, t)| *t).collect();
    times.sort_unstable();
    let received_after = (times.len() == received.len())
        .then(|| times.last().map(|t| Duration::from_millis(*t as u64)).unwrap_or_default());
    // Each worker said what is wrong: a 503 whose body names the database.
    let said: Vec<bool> = answers
        .iter()
        .map(|a| {
            a.iter()
                .any(|(status, body)| *status == 503 && body.to_lowercase().contains("database"))
        })
        .collect();
    let sample = answers
        .iter()
        .flatten()
        .find(|(status, _)| *status == 503)
        .map(|(_, body)| body.clone())
        .unwrap_or_default();
    say(&format!(
        "store back; workers healthy after {healthy_after:?}, every account received again after {received_after:?}"
    ));
    Ok(Outage { length: outage, said, sample, exited, healthy_after, received_after })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls `POST path` with `body` on each running worker in turn until one takes it (a login
/// step runs where the account is held), retrying until `WAIT`.
async fn on_any(
    fleet: &Fleet,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut last = String::new();
        for api in fleet.running_apis() {
            match api.post(path, body).await {
                Ok(v) => return Ok(v),
                Err(e) => last = e.to_string(),
            }
        }
        if Instant::now() > deadline {
            return Err(format!("POST {path}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Adds the mailboxes and Telegram accounts through the first worker's API, all at once, and
/// logs each in (email: its password; Telegram: phone, then code, after the loopback server's
/// key is put in the account's state).
async fn add_accounts(
    args: &Args,
    fleet: &Fleet,
    loopback: &Loopback,
    engine: &Engine,
    stack: &channel_email::testing::MailStack,
) -> Result<Accounts, String> {
    let api: Api = fleet.api(0).ok_or("worker w0 has no API token")?;
    let boxes = stack.users("chaos-box", args.email_accounts);
    let customers = stack.users("chaos-customer", args.email_accounts);
    let email = boxes.iter().zip(&customers).enumerate().map(|(n, (user, customer))| {
        let api = api.clone();
        async move {
            let config =
                serde_json::to_value(stack.account_config(user)).map_err(|e| e.to_string())?;
            let body = json!({ "kind": "email", "name": format!("box{n}"), "config": config });
            let account =
                api.post("/accounts", &body).await.map_err(|e| format!("adding box{n}: {e}"))?;
            let id = account["id"].as_str().ok_or("an account without an id")?.to_owned();
            let login = json!({ "flow": "password", "input": { "password": user.password } });
            on_any(fleet, &format!("/accounts/{id}/login"), &login).await?;
            let account = Account::Email {
                address: user.address.clone(),
                customer: customer.address.clone(),
            };
            Ok::<_, String>((account, id, stack.maildir(customer)))
        }
    });
    let telegram = (0..args.telegram_accounts).map(|k| {
        let api = api.clone();
        async move {
            let phone = format!("+1555010{k:04}");
            let user = 7000 + k as i64;
            for cmd in [
                "require-login".to_owned(),
                format!("phone {phone} {CODE}"),
                format!("api {API_ID} {API_HASH}"),
                format!("user {user} Person{k}"),
            ] {
                loopback.command(k, &cmd).await?;
            }
            let key = loopback.command(k, "key").await?;
            let mut words = key.split_whitespace().skip(1);
            let dc: i32 = words.next().and_then(|d| d.parse().ok()).ok_or("key: no dc id")?;
            let auth_key: [u8; 256] = words
                .next()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| b.try_into().ok())
                .ok_or("key: not 256 bytes of hex")?;
            let config =
                json!({ "data_centres": { dc.to_string(): loopback.addrs[k].to_string() } });
            let body = json!({ "kind": "telegram", "name": format!("tg{k}"), "config": config });
            let account =
                api.post("/accounts", &body).await.map_err(|e| format!("adding tg{k}: {e}"))?;
            let id = account["id"].as_str().ok_or("an account without an id")?.to_owned();
            let account_id = id.parse().map_err(|e| format!("account id {id}: {e}"))?;
            channel_telegram::testing::loopback::provision_auth_key(
                &engine.account_state(account_id),
                dc,
                auth_key,
            )
            .await
            .map_err(|e| format!("tg{k}'s key: {e}"))?;
            let login = format!("/accounts/{id}/login");
            on_any(fleet, &login, &json!({ "flow": "phone", "input": { "phone": phone } })).await?;
            on_any(fleet, &login, &json!({ "flow": "phone", "input": { "code": CODE } })).await?;
            Ok::<_, String>((Account::Telegram { k, user }, id, PathBuf::new()))
        }
    });
    let (email, telegram) =
        tokio::join!(futures::future::try_join_all(email), futures::future::try_join_all(telegram));
    let mut out = Accounts { list: Vec::new(), ids: Vec::new(), customers: Vec::new() };
    for (account, id, maildir) in email?.into_iter().chain(telegram?) {
        out.list.push(account);
        out.ids.push(id);
        out.customers.push(maildir);
    }
    Ok(out)
}

/// Waits until every running worker holds its share (the even split, give or take one) and
/// every account is connected; the accounts each worker holds.
async fn wait_balanced(
    fleet: &Fleet,
    accounts: &Accounts,
    total: usize,
) -> Result<Vec<usize>, String> {
    let running = fleet.workers.iter().filter(|w| w.running()).count().max(1);
    let (low, high) = ((total / running).saturating_sub(1), total.div_ceil(running) + 1);
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Some(holdings) = fleet.holdings().await {
            let counts: Vec<usize> = holdings.iter().map(|(_, a)| a.len()).collect();
            let connected = connected(fleet, accounts).await;
            if counts.len() == running
                && counts.iter().all(|c| (low..=high).contains(c))
                && connected == total
            {
                return Ok(counts);
            }
            last = format!("held {counts:?}, {connected} of {total} connected");
        }
        if Instant::now() > deadline {
            return Err(format!("not balanced after {WAIT:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many of the run's accounts are connected.
async fn connected(fleet: &Fleet, accounts: &Accounts) -> usize {
    for api in fleet.running_apis() {
        if let Ok(list) = api.get("/accounts?limit=500").await {
            return list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| {
                    a["connection"]["state"] == "connected"
                        && a["id"].as_str().is_some_and(|id| accounts.ids.iter().any(|x| x == id))
                })
                .count();
        }
    }
    0
}

/// After a kill at `killed`: for each account the dead worker held, how long until a message
/// written after the kill was stored (ms; `None`: not within `WAIT`). The people keep
/// writing meanwhile (the traffic task).
async fn wait_received_again(
    accounts: &Accounts,
    held: &[String],
    killed: SystemTime,
    sent: &Arc<Mutex<Vec<Sent>>>,
    probes: &Arc<Mutex<Vec<usize>>>,
    pool: &sqlx::PgPool,
) -> Result<Vec<(String, Option<i64>)>, String> {
    let from = clock::ms(killed);
    let mut recovered: HashMap<String, Option<i64>> =
        held.iter().map(|a| (a.clone(), None)).collect();
    let deadline = Instant::now() + WAIT;
    // Without probes an account might get no message for a while: each waiting account is
    // written to once a second.
    let mut probed = Instant::now() - Duration::from_secs(1);
    while recovered.values().any(Option::is_none) && Instant::now() < deadline {
        if probed.elapsed() >= Duration::from_secs(1) {
            probed = Instant::now();
            let waiting = recovered.iter().filter(|(_, done)| done.is_none());
            let indices = waiting.filter_map(|(id, _)| accounts.ids.iter().position(|x| x == id));
            lock(probes).extend(indices);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let stored = crate::store::inbound(pool).await?;
        let sent_now = lock(sent).clone();
        let now = clock::ms(SystemTime::now());
        for s in sent_now.iter().filter(|s| clock::ms(s.at) >= from) {
            let id = &accounts.ids[s.account];
            if let Some(slot) = recovered.get_mut(id)
                && slot.is_none()
                && stored.contains_key(&s.n)
            {
                *slot = Some(now - from);
            }
        }
    }
    Ok(recovered.into_iter().collect())
}
