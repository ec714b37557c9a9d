//! The channel-core `Store` conformance suite on SQLite, one temporary database file per test.

mod support;

async fn make_store() -> std::sync::Arc<dyn channel_core::Store> {
    std::sync::Arc::new(support::sqlite().await)
}

channel_core::store_conformance_tests!(make_store);
