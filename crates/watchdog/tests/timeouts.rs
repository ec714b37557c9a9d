//! `timeout()` returns a typed error naming the operation and the limit; `Timeouts` carries the
//! defaults of the system this crate replaces.

use std::time::Duration;

use channel_watchdog::{TimeoutError, Timeouts, timeout};

#[tokio::test(start_paused = true)]
async fn a_slow_operation_times_out_with_a_typed_error_naming_it() {
    let started = tokio::time::Instant::now();
    let result = timeout(
        "resolve_peer",
        Duration::from_secs(15),
        tokio::time::sleep(Duration::from_secs(60)),
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    assert_eq!(error, TimeoutError::new("resolve_peer", Duration::from_secs(15)));
    let message = error.to_string();
    assert!(message.contains("resolve_peer"), "{message}");
    assert!(message.contains("15s"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_fast_operation_returns_its_output() {
    let result = timeout(String::from("database"), Duration::from_secs(10), async {
        tokio::time::sleep(Duration::from_secs(9)).await;
        "row"
    })
    .await;
    assert_eq!(result, Ok("row"));
}

#[test]
fn the_default_timeouts_are_those_of_the_replaced_system() {
    let t = Timeouts::default();
    assert_eq!(t.send, Duration::from_secs(30));
    assert_eq!(t.resolve_peer, Duration::from_secs(15));
    assert_eq!(t.media, Duration::from_secs(60));
    assert_eq!(t.database, Duration::from_secs(10));
    assert_eq!(t.loop_cycle, Duration::from_secs(120));
    assert!(t.validate().is_ok());
}
