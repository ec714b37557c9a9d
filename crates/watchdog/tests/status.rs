//! `status()` and `health()` report every loop and serialize to JSON for health endpoints.

use std::time::Duration;

use channel_watchdog::{LoopSpec, LoopState, RestartPolicy, Watchdog};
use serde_json::Value;

fn is_rfc3339_utc(value: &Value) -> bool {
    let Some(s) = value.as_str() else {
        return false;
    };
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
}

#[tokio::test(start_paused = true)]
async fn status_serializes_to_json_with_the_fields() {
    let watchdog = Watchdog::builder().build().unwrap();
    watchdog
        .register(
            LoopSpec::new("imap-idle", |ctx| async move {
                if ctx.run() == 0 {
                    return Err("login failed: bad password".into());
                }
                loop {
                    ctx.ping();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            })
            .max_silence(Duration::from_secs(30))
            .critical(true),
        )
        .unwrap();
    watchdog
        .register(
            LoopSpec::new("cleanup", |_ctx| async { Ok(()) }).policy(RestartPolicy::Transient),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;

    let json = serde_json::to_value(watchdog.status()).unwrap();
    let loops = json.as_array().unwrap();
    assert_eq!(loops.len(), 2);

    let imap = &loops[0];
    assert_eq!(imap["name"], "imap-idle");
    assert_eq!(imap["state"], "running");
    assert!(is_rfc3339_utc(&imap["since"]), "{}", imap["since"]);
    assert_eq!(imap["healthy"], true);
    assert_eq!(imap["critical"], true);
    assert_eq!(imap["policy"], "permanent");
    assert_eq!(imap["run"], 1);
    assert!(imap["last_ping_age_ms"].as_u64().unwrap() <= 3_000);
    assert_eq!(imap["max_silence_ms"], 30_000);
    assert_eq!(imap["restarts_total"], 1);
    assert_eq!(imap["restarts_in_window"], 1);
    assert_eq!(imap["last_error"]["kind"], "error");
    assert_eq!(imap["last_error"]["message"], "login failed: bad password");
    assert!(is_rfc3339_utc(&imap["last_error"]["at"]));

    let cleanup = &loops[1];
    assert_eq!(cleanup["state"], "completed");
    assert_eq!(cleanup["policy"], "transient");
    assert_eq!(cleanup["last_error"], Value::Null);

    let health = serde_json::to_value(watchdog.health()).unwrap();
    for field in
        ["generated_at", "uptime_ms", "beat", "healthy", "critical_ok", "heartbeat_age_ms", "loops"]
    {
        assert!(health.get(field).is_some(), "health report lacks `{field}`");
    }
    assert_eq!(health["healthy"], true);
    assert_eq!(health["uptime_ms"], 5_000);
    assert_eq!(health["loops"].as_array().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_report_serializes_too() {
    let watchdog = Watchdog::builder().build().unwrap();
    watchdog
        .register(LoopSpec::new("idle", |ctx| async move {
            ctx.cancelled().await;
            Ok(())
        }))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let report = watchdog.shutdown(Duration::from_secs(3)).await;
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["deadline_ms"], 3_000);
    assert_eq!(json["loops"][0]["name"], "idle");
    assert_eq!(json["loops"][0]["outcome"], "graceful");
    assert_eq!(json["loops"][0]["state_before"], "running");
    assert_eq!(watchdog.status()[0].state, LoopState::Stopped);
}
