//! The cache never holds more memory than its capacity: filled far past
//! it with small and with large objects, the heap bytes live (measured by
//! a tracking global allocator) stay within the capacity plus a small
//! fixed slack, because every entry is charged its key, head, body and a
//! bookkeeping overhead (`ENTRY_OVERHEAD`) that covers what the store
//! allocates for it. `cargo bench --bench cache_memory` does the same
//! with a 0.5 GB cache and reports RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tollgate::cache::store::CachedResponse;
use tollgate::cache::Cache;

struct Tracking;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// tracks the bytes live.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

fn fill(cache: &Cache, count: usize, body: usize) {
    for i in 0..count {
        let key = format!("api/prod\0\x01\0\0\0/objects/{body}/{i}").into_bytes();
        let hash = cache.hasher.hash(&key);
        cache.store.insert(
            hash,
            CachedResponse {
                key: key.into_boxed_slice(),
                status: 200,
                headers: Bytes::from(
                    b"content-type: application/json\r\netag: \"abc\"\r\n".to_vec(),
                ),
                body: Bytes::from(vec![b'x'; body]),
                stored_ns: 0,
                expires_ns: u64::MAX,
                vary: None,
            },
        );
    }
}

#[test]
fn live_memory_stays_within_the_capacity() {
    let capacity: usize = 32 << 20;
    let before = LIVE.load(Ordering::Relaxed);
    let cache = Cache::new(capacity as u64, 1 << 20, 64, None, Duration::from_secs(5));
    // Small objects: three times what fits.
    fill(&cache, 3 * capacity / 400, 100);
    let small = LIVE.load(Ordering::Relaxed) - before;
    let st = cache.store.stats();
    assert!(st.bytes <= capacity, "accounted {} > {capacity}", st.bytes);
    // Large objects replace them.
    fill(&cache, 3 * capacity / (100 << 10), 100 << 10);
    let large = LIVE.load(Ordering::Relaxed) - before;
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
