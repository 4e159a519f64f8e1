//! RSS of a filled cache: `cargo bench --bench cache_memory` fills a
//! 0.5 GB cache (Amazon API Gateway's smallest tier) three times over with
//! small objects, then with large ones, and prints the process RSS at each
//! step (with mimalloc, the gateway's allocator). Under `cargo test` it
//! does the same with 16 MB.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::time::Duration;

// The gateway's allocator, so RSS is what `tollgate run` would show.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tollgate::cache::sim::fill_synthetic;
use tollgate::cache::Cache;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let capacity: u64 = if full { 500_000_000 } else { 16 << 20 };
    let base = rss_kib();
    let cache = Cache::new(capacity, 1 << 20, 64, None, Duration::from_secs(5));
    println!(
        "cache capacity {} MB; RSS before filling {} MB",
        capacity / 1_000_000,
        base / 1024
    );
    for (name, body) in [
        ("small (200 B bodies)", 200),
        ("large (100 KiB bodies)", 100 << 10),
    ] {
        fill_synthetic(&cache, 3 * capacity as usize / (body + 100), body);
        let st = cache.store.stats();
        let rss = rss_kib();
        println!(
            "after 3x capacity of {name}: {} entries, {} MB accounted, RSS {} MB (+{} MB over the start, {:.2}x capacity)",
            st.entries,
            st.bytes / 1_000_000,
            rss / 1024,
            (rss - base) / 1024,
            (rss - base) as f64 * 1024.0 / capacity as f64
        );
    }
}
