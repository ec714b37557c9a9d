//! Bad input gets a typed error whose message says what to do; nothing panics.

use std::time::Duration;

use channel_watchdog::{
    Backoff, Intensity, LoopSpec, StallConfig, StallDetector, Timeouts, Watchdog, WatchdogBuilder,
    WatchdogError,
};

fn idle(name: &str) -> LoopSpec {
    LoopSpec::new(name, |ctx| async move {
        ctx.cancelled().await;
        Ok(())
    })
}

fn zero_setting(result: Result<impl std::fmt::Debug, WatchdogError>) -> &'static str {
    match result {
        Err(WatchdogError::ZeroDuration { setting }) => setting,
        other => panic!("expected ZeroDuration, got {other:?}"),
    }
}

#[tokio::test]
async fn zero_durations_in_the_builder_are_refused() {
    let zero = Duration::ZERO;
    type Configure = fn(WatchdogBuilder) -> WatchdogBuilder;
    let cases: [(&str, Configure); 8] = [
        ("check_interval", |b| b.check_interval(Duration::ZERO)),
        ("max_silence", |b| b.max_silence(Duration::ZERO)),
        ("grace", |b| b.grace(Duration::ZERO)),
        ("heartbeat", |b| b.heartbeat(Duration::ZERO)),
        ("sink_timeout", |b| b.sink_timeout(Duration::ZERO)),
        ("backoff.initial", |b| b.backoff(Backoff::new(Duration::ZERO, Duration::from_secs(1)))),
        ("intensity.window", |b| b.intensity(Intensity::new(5, Duration::ZERO))),
        ("stall.bound", |b| b.stall_detection(StallConfig::new(Duration::ZERO))),
    ];
    for (setting, configure) in cases {
        assert_eq!(zero_setting(configure(Watchdog::builder()).build()), setting);
    }
    let error = Watchdog::builder().check_interval(zero).build().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("check_interval"), "{message}");
    assert!(message.contains("greater than zero"), "{message}");
}

#[tokio::test]
async fn zero_durations_in_a_loop_spec_are_refused() {
    let watchdog = Watchdog::builder().build().unwrap();
    let zero = Duration::ZERO;
    assert_eq!(zero_setting(watchdog.register(idle("a").max_silence(zero))), "max_silence");
    assert_eq!(zero_setting(watchdog.register(idle("b").grace(zero))), "grace");
    assert_eq!(
        zero_setting(
            watchdog.register(idle("c").backoff(Backoff::new(Duration::from_secs(1), zero)))
        ),
        "backoff.max"
    );
    assert_eq!(
        zero_setting(
            watchdog.register(idle("d").intensity(Intensity::default().stable_after(zero)))
        ),
        "intensity.stable_after"
    );
    // None of the refused loops was registered.
    assert!(watchdog.status().is_empty());
}

#[tokio::test]
async fn other_inconsistent_settings_are_refused() {
    let backoff = Watchdog::builder()
        .backoff(Backoff::new(Duration::from_secs(10), Duration::from_secs(1)))
        .build();
    assert!(matches!(backoff, Err(WatchdogError::BackoffRange { .. })));

    let sink_timeout = Watchdog::builder()
        .heartbeat(Duration::from_secs(5))
        .sink_timeout(Duration::from_secs(6))
        .build()
        .unwrap_err();
    assert!(matches!(sink_timeout, WatchdogError::TooLong { setting: "sink_timeout", .. }));
    assert!(sink_timeout.to_string().contains("must be shorter than `heartbeat`"));

    assert!(matches!(
        Timeouts { media: Duration::ZERO, ..Timeouts::default() }.validate(),
        Err(WatchdogError::ZeroDuration { setting: "timeouts.media" })
    ));
}

#[tokio::test]
async fn a_duplicate_loop_name_is_refused() {
    let watchdog = Watchdog::builder().build().unwrap();
    watchdog.register(idle("imap-idle")).unwrap();
    let error = watchdog.register(idle("imap-idle")).unwrap_err();
    assert!(
        matches!(&error, WatchdogError::DuplicateName { name } if name == "imap-idle"),
        "{error:?}"
    );
    assert!(error.to_string().contains("choose another name"));
    assert_eq!(watchdog.status().len(), 1);
}

#[tokio::test]
async fn an_empty_loop_name_is_refused() {
    let watchdog = Watchdog::builder().build().unwrap();
    assert!(matches!(watchdog.register(idle("  ")), Err(WatchdogError::EmptyName)));
}

#[tokio::test]
async fn registering_after_shutdown_is_refused() {
    let watchdog = Watchdog::builder().build().unwrap();
    watchdog.shutdown(Duration::from_secs(1)).await;
    let error = watchdog.register(idle("late")).unwrap_err();
    assert!(matches!(error, WatchdogError::ShutDown));
    assert!(error.to_string().contains("register loops before calling shutdown()"));
}

#[test]
fn building_outside_a_runtime_is_refused() {
    let error = Watchdog::builder().build().unwrap_err();
    assert!(matches!(error, WatchdogError::NoRuntime));
    assert!(error.to_string().contains("inside a tokio runtime"));
}

#[test]
fn a_stall_detector_with_a_zero_bound_is_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let result = StallDetector::start(runtime.handle(), StallConfig::new(Duration::ZERO));
    assert_eq!(zero_setting(result), "stall.bound");
}
