//! Eviction policy choice: hit ratio of tollgate's S3-FIFO store against
//! plain LRU at equal capacity, on a Zipf(0.99) trace and on the same
//! trace with scans of one-time objects mixed in (a crawler walking a
//! catalogue). `cargo bench --bench cache_policy` prints the table; under
//! `cargo test` it replays a short trace only.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use tollgate::cache::sim::{hit_ratio, scan_trace, zipf_trace, Lru, S3Fifo};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (objects, len) = if full {
        (1_000_000, 10_000_000)
    } else {
        (10_000, 100_000)
    };
    let traces = [
        ("zipf(0.99)", zipf_trace(objects, len, 1)),
        (
            "zipf(0.99) + scans (1/3 of requests)",
            scan_trace(objects, len, objects / 50, objects / 100, 2),
        ),
    ];
    println!("{objects} objects, {len} requests per trace; hit ratio at equal capacity (objects)");
    println!("| trace | capacity | S3-FIFO | LRU | S3-FIFO − LRU |");
    println!("|---|---:|---:|---:|---:|");
    for (name, trace) in &traces {
        for pct in [0.1, 1.0, 10.0] {
            let cap = ((objects as f64) * pct / 100.0) as usize;
            let s3 = hit_ratio(&mut S3Fifo::new(cap), trace);
            let lru = hit_ratio(&mut Lru::new(cap), trace);
            println!(
                "| {name} | {pct}% ({cap}) | {:.2}% | {:.2}% | {:+.2} pts |",
                100.0 * s3,
                100.0 * lru,
                100.0 * (s3 - lru)
            );
        }
    }
}
