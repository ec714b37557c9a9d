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
            let password = password()?;
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

/// The password: `INBOX_EMAIL_PASSWORD`, else one line of standard input.
fn password() -> Result<String, Error> {
    if let Ok(p) = std::env::var("INBOX_EMAIL_PASSWORD")
        && !p.is_empty()
    {
        return Ok(p);
    }
    eprint!("password (not shown in the command line; end with Enter): ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::msg(format!("cannot read the password: {e}")))?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        return Err(Error::msg("no password: set INBOX_EMAIL_PASSWORD or type it"));
    }
    Ok(p)
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
