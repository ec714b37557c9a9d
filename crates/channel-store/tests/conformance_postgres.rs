//! The channel-core `Store` conformance suite on PostgreSQL, one fresh database per test
//! (`TEST_DATABASE_URL` names the server).
#![cfg(feature = "postgres")]

mod support;

async fn make_store() -> std::sync::Arc<dyn channel_core::Store> {
    std::sync::Arc::new(support::pg::store().await)
}

channel_core::store_conformance_tests!(make_store);
