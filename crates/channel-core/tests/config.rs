//! Engine settings: every field of `EngineConfig` has a builder method, and out-of-range
//! values are refused with a typed error.

use std::sync::Arc;
use std::time::Duration;

use channel_core::state::StateKey;
use channel_core::testing::MemoryStore;
use channel_core::*;

fn builder() -> EngineBuilder {
    Engine::builder(Arc::new(MemoryStore::new()), StateKey::from_bytes([7; 32]))
        .blob_store(BlobStore::in_memory())
}

#[test]
fn every_setting_has_a_builder_method() {
    let engine = builder()
        .sweep_interval(Duration::from_secs(7))
        .rescue_interval(Duration::from_secs(3))
        .claim_batch(4)
        .poll_interval(Duration::from_secs(9))
        .needs_login_snooze(Duration::from_secs(60))
        .elsewhere_snooze(Duration::from_secs(1))
        .sweep_batch(50)
        .event_capacity(64)
        .build()
        .unwrap();
    let c = engine.config();
    assert_eq!(c.sweep_interval(), Duration::from_secs(7));
    assert_eq!(c.rescue_interval(), Duration::from_secs(3));
    assert_eq!((c.claim_batch(), c.sweep_batch(), c.event_capacity()), (4, 50, 64));
    assert_eq!(c.poll_interval(), Duration::from_secs(9));
    assert_eq!(c.needs_login_snooze(), Duration::from_secs(60));
    assert_eq!(c.elsewhere_snooze(), Duration::from_secs(1));
}

#[test]
fn zero_settings_are_refused_with_a_typed_error() {
    let refused = |b: EngineBuilder| match b.build() {
        Err(EngineError::InvalidSetting { setting, .. }) => setting,
        other => panic!("expected InvalidSetting, got {other:?}"),
    };
    assert_eq!(refused(builder().sweep_interval(Duration::ZERO)), "sweep_interval");
    assert_eq!(refused(builder().rescue_interval(Duration::ZERO)), "rescue_interval");
    assert_eq!(refused(builder().poll_interval(Duration::ZERO)), "poll_interval");
    assert_eq!(refused(builder().needs_login_snooze(Duration::ZERO)), "needs_login_snooze");
    assert_eq!(refused(builder().elsewhere_snooze(Duration::ZERO)), "elsewhere_snooze");
    assert_eq!(refused(builder().db_timeout(Duration::ZERO)), "db_timeout");
    assert_eq!(refused(builder().claim_batch(0)), "claim_batch");
    assert_eq!(refused(builder().sweep_batch(0)), "sweep_batch");
    assert_eq!(refused(builder().event_capacity(0)), "event_capacity");
    assert_eq!(
        refused(builder().leases(Duration::from_secs(15), Duration::ZERO)),
        "lease_renew_every"
    );
    assert_eq!(
        refused(builder().retry(retry::RetryPolicy { max_attempts: 0, ..Default::default() })),
        "retry.max_attempts"
    );
    assert_eq!(refused(builder().worker_id(String::new())), "worker_id");
    // A history page larger than any channel fetches is refused, never silently cut.
    assert_eq!(refused(builder().history_limits(100, 1000)), "history_max");
    assert!(builder().history_limits(100, 500).build().is_ok());
    let slow = retry::Backoff::new(Duration::from_secs(60), Duration::from_secs(1));
    assert_eq!(
        refused(builder().retry(retry::RetryPolicy { backoff: slow, ..Default::default() })),
        "retry.backoff.max"
    );
    let e = builder().sweep_interval(Duration::ZERO).build().unwrap_err();
    assert!(!e.is_transient());
    assert!(e.to_string().contains("sweep_interval"), "{e}");
}

#[test]
fn settings_that_contradict_each_other_are_refused_by_name() {
    let refused = |b: EngineBuilder| match b.build() {
        Err(EngineError::InvalidSetting { setting, .. }) => setting,
        other => panic!("expected InvalidSetting, got {other:?}"),
    };
    assert_eq!(refused(builder().history_limits(200, 100)), "history_limit");
    assert_eq!(refused(builder().job_lease_ttl(Duration::from_secs(30))), "job_lease_ttl");
    assert_eq!(
        refused(builder().leases(Duration::from_secs(5), Duration::from_secs(5))),
        "lease_renew_every"
    );
    let c = builder().history_limits(50, 200).build().unwrap().config().clone();
    assert_eq!((c.history_limit(), c.history_max()), (50, 200));
}
