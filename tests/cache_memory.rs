//! The cache never holds more memory than its capacity: filled far past
//! it with small and with large objects, the heap bytes live (measured by
//! a tracking global allocator) stay within the capacity plus a small
//! fixed slack, because every entry is charged its key, head, body and a
//! bookkeeping overhead (`ENTRY_OVERHEAD`) that covers what the store
//! allocates for it. `cargo bench --bench cache_memory` does the same
//! with a 0.5 GB cache and reports RSS.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::time::Duration;

use tollgate::cache::sim::fill_synthetic;
use tollgate::cache::Cache;

#[path = "support/live_bytes.rs"]
mod live_bytes;

#[test]
fn live_memory_stays_within_the_capacity() {
    let capacity: usize = 32 << 20;
    let before = live_bytes::live();
    let cache = Cache::new(capacity as u64, 1 << 20, 64, None, Duration::from_secs(5));
    // Small objects: three times what fits.
    fill_synthetic(&cache, 3 * capacity / 400, 100);
    let small = live_bytes::live() - before;
    let st = cache.store.stats();
    assert!(st.bytes <= capacity, "accounted {} > {capacity}", st.bytes);
    // Large objects replace them.
    fill_synthetic(&cache, 3 * capacity / (100 << 10), 100 << 10);
    let large = live_bytes::live() - before;
    let slack = 1 << 20;
    println!(
        "capacity {capacity}: small objects {} entries, {small} bytes live; large objects {} entries, {large} bytes live",
        st.entries,
        cache.store.stats().entries
    );
    assert!(small <= capacity + slack, "small: {small} bytes live");
    assert!(large <= capacity + slack, "large: {large} bytes live");
    // And it is used: more than half the capacity is live.
    assert!(small > capacity / 2 && large > capacity / 2);
}
