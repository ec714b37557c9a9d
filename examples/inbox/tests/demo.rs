//! `inbox demo`: the program runs its worker with a Telegram account on the loopback MTProto
//! server and simulated people; its API answers while it runs, the people read answers, and
//! the summary read back from the store shows every message sent, none failed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_demo_answers_people_over_loopback_telegram_and_serves_its_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_inbox"))
        .args(["demo", "--for", "8s", "--data-dir"])
        .arg(dir.path().join("demo"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("inbox demo starts");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut lines = Vec::new();
    let mut api_checked = false;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("API: ") {
            // `API: http://127.0.0.1:PORT/api/v1   token: TOKEN`
            let mut words = rest.split_whitespace();
            let base = words.next().expect("the address").to_owned();
            let token = words.nth(1).expect("the token").to_owned();
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let http = reqwest::Client::new();
                let deadline = std::time::Instant::now() + Duration::from_secs(6);
                loop {
                    let page: serde_json::Value = http
                        .get(format!("{base}/conversations"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("the API answers")
                        .json()
                        .await
                        .expect("JSON");
                    if page["items"].as_array().is_some_and(|a| !a.is_empty()) {
                        break;
                    }
                    assert!(std::time::Instant::now() < deadline, "no conversation over the API");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            api_checked = true;
        }
        lines.push(line);
    }
    let status = child.wait().expect("exit");
    assert!(status.success(), "{lines:#?}");
    assert!(api_checked, "the API's address and token are printed: {lines:#?}");
    let after = lines.iter().find(|l| l.starts_with("== after")).expect("a summary");
    let numbers: Vec<usize> = after.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let (written, answered) = (numbers[0], numbers[1]);
    assert!(written >= 4 && answered >= written - 1, "{after}");
    assert!(lines.iter().any(|l| l.trim_start().starts_with("outbound sent")), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("failed")), "{lines:#?}");
}
