//! The Store conformance suite against the reference `MemoryStore`.

use std::sync::Arc;

use channel_core::Store;
use channel_core::testing::MemoryStore;

async fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

channel_core::store_conformance_tests!(memory_store);

mod inline_factory {
    channel_core::store_conformance_tests!(
        async fn make() -> std::sync::Arc<dyn channel_core::Store> {
            std::sync::Arc::new(channel_core::testing::MemoryStore::new())
        }
    );
}
