//! The commands that talk to a running worker through its API: `account`, `conversations`,
//! `messages`, `send`, `status`. Each prints a plain table.

use reqwest::Method;
use serde_json::{Value, json};

use crate::error::Error;
use crate::{AccountCommand, Command, Target};
use inbox::client::Client;

fn client(target: &Target) -> Result<Client, Error> {
    Client::for_data_dir(&target.data_dir, target.api.as_deref()).map_err(Error::msg)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Runs a client command.
pub async fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Account { command, target } => account(command, &client(&target)?).await,
        Command::Conversations { status, limit, target } => {
            let mut path = format!("/conversations?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            let page = client(&target)?.call(Method::GET, &path, None).await.map_err(Error::msg)?;
            println!("{:<38} {:<9} {:<10} last activity", "conversation", "status", "assignee");
            for c in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<9} {:<10} {}",
                    text(&c["id"]),
                    text(&c["status"]),
                    text(&c["assignee"]),
                    text(&c["last_activity_at"])
                );
            }
            Ok(())
        }
        Command::Messages { conversation, limit, target } => {
            let path = format!("/conversations/{conversation}/messages?limit={limit}");
            let page = client(&target)?.call(Method::GET, &path, None).await.map_err(Error::msg)?;
            for m in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{} {:<8} {:<7} {}",
                    text(&m["sent_at"]),
                    text(&m["direction"]),
                    text(&m["status"]),
                    text(&m["text"])
                );
            }
            Ok(())
        }
        Command::Send { conversation, text: body, idempotency_key, attachments, target } => {
            let path = format!("/conversations/{conversation}/messages");
            let mut files = Vec::new();
            for file in &attachments {
                use base64::Engine as _;
                let bytes = std::fs::read(file)
                    .map_err(|e| Error::msg(format!("cannot read {}: {e}", file.display())))?;
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                files.push(json!({
                    "name": name,
                    "mime_type": mime_of(file),
                    "data": base64::engine::general_purpose::STANDARD.encode(bytes),
                }));
            }
            let request =
                json!({ "text": body, "idempotency_key": idempotency_key, "attachments": files });
            let sent = client(&target)?
                .call(Method::POST, &path, Some(&request))
                .await
                .map_err(Error::msg)?;
            println!("queued message {}", text(&sent["message_id"]));
            Ok(())
        }
        Command::Status { target } => {
            let client = client(&target)?;
            let workers = client.call(Method::GET, "/workers", None).await.map_err(Error::msg)?;
            for w in workers.as_array().into_iter().flatten() {
                let alive = if w["alive"] == true { "alive" } else { "dead" };
                println!(
                    "worker {} ({alive}) on {} pid {}, {} accounts, last beat {}",
                    text(&w["id"]),
                    text(&w["host"]),
                    text(&w["pid"]),
                    w["accounts"].as_array().map_or(0, Vec::len),
                    text(&w["beat_at"])
                );
                for l in w["loops"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<50} {:<10} restarts {}",
                        text(&l["name"]),
                        text(&l["state"]),
                        text(&l["restarts"])
                    );
                }
            }
            account(AccountCommand::List, &client).await
        }
        Command::SyncHistory { account, thread, limit, target } => {
            sync_history(&client(&target)?, &account, thread, limit).await
        }
        Command::Simulate(_) | Command::Demo { .. } | Command::Run { .. } => Ok(()),
    }
}

async fn account(command: AccountCommand, client: &Client) -> Result<(), Error> {
    match command {
        AccountCommand::List => {
            let page =
                client.call(Method::GET, "/accounts?limit=500", None).await.map_err(Error::msg)?;
            println!("{:<38} {:<9} {:<8} {:<22} name", "account", "kind", "enabled", "connection");
            for a in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<9} {:<8} {:<22} {}",
                    text(&a["id"]),
                    text(&a["kind"]),
                    text(&a["enabled"]),
                    text(&a["connection"]["state"]),
                    text(&a["display_name"])
                );
            }
            Ok(())
        }
        AccountCommand::AddEmail { name, config } => {
            let config: Value = std::fs::read_to_string(&config)
                .map_err(|e| Error::msg(format!("cannot read {}: {e}", config.display())))
                .and_then(|t| {
                    serde_json::from_str(&t)
                        .map_err(|e| Error::msg(format!("{} is not JSON: {e}", config.display())))
                })?;
            let password = crate::prompt::ask_secret("email password", "INBOX_EMAIL_PASSWORD")?;
            let new = json!({ "kind": "email", "name": name, "config": config });
            let account =
                client.call(Method::POST, "/accounts", Some(&new)).await.map_err(Error::msg)?;
            let id = text(&account["id"]);
            let login = json!({ "flow": "password", "input": { "password": password } });
            match client.call(Method::POST, &format!("/accounts/{id}/login"), Some(&login)).await {
                Ok(_) => {
                    println!("added and logged in: account {id}");
                    Ok(())
                }
                Err(e) => {
                    // Not verified: not kept.
                    let _ = client.call(Method::DELETE, &format!("/accounts/{id}"), None).await;
                    Err(Error::msg(format!(
                        "the servers refused the login, so the account was not kept: {e}"
                    )))
                }
            }
        }
        AccountCommand::Enable { id }
        | AccountCommand::Disable { id }
        | AccountCommand::Remove { id }
            if id.trim().is_empty() =>
        {
            Err(Error::msg("give the account's id (see `inbox account list`)"))
        }
        AccountCommand::LoginTelegram { account, name, config, qr, phone } => {
            login_telegram(client, account, &name, config.as_deref(), qr, phone).await
        }
        AccountCommand::Enable { id } => enabled(client, &id, true).await,
        AccountCommand::Disable { id } => enabled(client, &id, false).await,
        AccountCommand::Remove { id } => {
            client
                .call(Method::DELETE, &format!("/accounts/{id}"), None)
                .await
                .map_err(Error::msg)?;
            println!("removed account {id} (its messages stay)");
            Ok(())
        }
    }
}

async fn enabled(client: &Client, id: &str, on: bool) -> Result<(), Error> {
    let body = json!({ "enabled": on });
    client
        .call(Method::PUT, &format!("/accounts/{id}/enabled"), Some(&body))
        .await
        .map_err(Error::msg)?;
    println!("account {id} {}", if on { "enabled" } else { "disabled" });
    Ok(())
}

/// A file's MIME type from its extension (the common ones; else `application/octet-stream`).
fn mime_of(file: &std::path::Path) -> &'static str {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" => "text/plain",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Queues a history sync and shows its job until it is done.
async fn sync_history(
    client: &Client,
    account: &str,
    thread: Option<String>,
    limit: usize,
) -> Result<(), Error> {
    let body = json!({ "thread_key": thread, "limit": limit });
    let queued = client
        .call(Method::POST, &format!("/accounts/{account}/history"), Some(&body))
        .await
        .map_err(Error::msg)?;
    let job = text(&queued["job_id"]);
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    loop {
        let j =
            client.call(Method::GET, &format!("/jobs/{job}"), None).await.map_err(Error::msg)?;
        let state = text(&j["state"]);
        bar.set_message(format!(
            "history sync {job}: {state} (attempt {} of {})",
            text(&j["attempt"]),
            text(&j["max_attempts"])
        ));
        match state.as_str() {
            "completed" => {
                bar.finish_with_message(format!("history sync {job}: done"));
                return Ok(());
            }
            "discarded" | "cancelled" => {
                bar.abandon_with_message(format!("history sync {job}: {state}"));
                return Err(Error::msg(format!(
                    "the history sync ended {state}: {}",
                    text(&j["last_error"])
                )));
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// How many times a wrong code or password may be typed again.
const RETYPES: usize = 3;

/// `inbox account login-telegram`: adds the account if needed, then walks the login's steps.
async fn login_telegram(
    client: &Client,
    account: Option<String>,
    name: &str,
    config: Option<&std::path::Path>,
    qr: bool,
    phone: Option<String>,
) -> Result<(), Error> {
    let (id, added) = match account {
        Some(id) => (id, false),
        None => {
            let config = match config {
                Some(file) => std::fs::read_to_string(file)
                    .map_err(|e| Error::msg(format!("cannot read {}: {e}", file.display())))
                    .and_then(|t| {
                        serde_json::from_str::<Value>(&t)
                            .map_err(|e| Error::msg(format!("{} is not JSON: {e}", file.display())))
                    })?,
                None => json!({}),
            };
            let new = json!({ "kind": "telegram", "name": name, "config": config });
            let a = client.call(Method::POST, "/accounts", Some(&new)).await.map_err(Error::msg)?;
            (text(&a["id"]), true)
        }
    };
    let result =
        if qr { qr_login(client, &id).await } else { phone_login(client, &id, phone).await };
    match result {
        Ok(who) => {
            println!(
                "logged in{}: account {id}",
                who.map(|w| format!(" as {w}")).unwrap_or_default()
            );
            Ok(())
        }
        Err(e) => {
            if added {
                // Never logged in: not kept.
                let _ = client.call(Method::DELETE, &format!("/accounts/{id}"), None).await;
            }
            Err(e)
        }
    }
}

/// One login step: the API's answer, or its error sentence.
async fn step(client: &Client, id: &str, flow: &str, input: Value) -> Result<Value, String> {
    let body = json!({ "flow": flow, "input": input });
    client.call(Method::POST, &format!("/accounts/{id}/login"), Some(&body)).await
}

/// Answers `Input` steps until `Done`: the code (visible) and the password (hidden), each
/// asked again after a wrong one.
async fn answer_inputs(
    client: &Client,
    id: &str,
    flow: &str,
    mut current: Value,
) -> Result<Option<String>, Error> {
    let mut tries = 0;
    loop {
        match current["step"].as_str() {
            Some("done") => return Ok(current["who"].as_str().map(str::to_owned)),
            Some("input") => {
                let field = &current["fields"][0];
                let (key, label) = (text(&field["id"]), text(&field["label"]));
                if let Some(hint) = current["hint"].as_str() {
                    eprintln!("({hint})");
                }
                let answer = if field["kind"] == "password" || field["kind"] == "token" {
                    crate::prompt::ask_secret(&label, "INBOX_TELEGRAM_PASSWORD")?
                } else {
                    crate::prompt::ask(&label)?
                };
                match step(client, id, flow, json!({ key: answer })).await {
                    Ok(next) => current = next,
                    Err(e) if tries + 1 < RETYPES => {
                        tries += 1;
                        eprintln!("{e}");
                    }
                    Err(e) => return Err(Error::msg(e)),
                }
            }
            other => {
                return Err(Error::msg(format!(
                    "the worker answered a login step this command does not know ({}); use the API",
                    other.unwrap_or("none")
                )));
            }
        }
    }
}

async fn phone_login(
    client: &Client,
    id: &str,
    phone: Option<String>,
) -> Result<Option<String>, Error> {
    let phone = match phone {
        Some(p) => p,
        None => crate::prompt::ask("phone number (international, such as +15550100)")?,
    };
    let first = step(client, id, "phone", json!({ "phone": phone })).await.map_err(Error::msg)?;
    answer_inputs(client, id, "phone", first).await
}

/// Draws the QR code, redraws it when Telegram rotates it, and waits for the scan (and the
/// password after it, with two-step verification).
async fn qr_login(client: &Client, id: &str) -> Result<Option<String>, Error> {
    let mut shown = String::new();
    loop {
        let current = step(client, id, "qr", json!({})).await.map_err(Error::msg)?;
        match current["step"].as_str() {
            Some("display") => {
                let data = text(&current["data"]);
                if data != shown {
                    println!("{}", crate::prompt::qr(&data)?);
                    println!(
                        "Scan this with Telegram on your phone: Settings, Devices, Link Desktop Device. \
                         (It changes every 30 seconds or so; it is redrawn here.)"
                    );
                    shown = data;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            _ => return answer_inputs(client, id, "qr", current).await,
        }
    }
}
