//! What the gateway counts and reports: per-shard counters, stable metric
//! ids and the Prometheus text format, access logs.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod counters;
pub mod metrics;

/// The clock request latencies are measured with (`crate::clock::latency`).
pub use crate::clock::latency as latency_clock;

/// Writes one line to stderr in a single write, ignoring failure: a closed
/// or full stderr must never take a thread down (`eprintln!` panics when
/// it cannot write), and one write keeps lines whole when two processes
/// share stderr (a binary upgrade).
pub fn stderr_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
