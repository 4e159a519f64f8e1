//! What the gateway counts and reports: per-shard counters, stable metric
//! ids and the Prometheus text format, access logs.

pub mod access_log;
pub mod counters;
pub mod metrics;

/// The clock request latencies are measured with: the CPU's time-stamp
/// counter read directly (`quanta`, calibrated once per process), about
/// 7 ns a read where `Instant::now` (clock_gettime through the vDSO)
/// costs about 30 here; a proxied request reads it four times. Not our
/// core, so a well-kept crate rather than hand-written `rdtsc`.
pub fn latency_clock() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Writes one line to stderr in a single write, ignoring failure: a closed
/// or full stderr must never take a thread down (`eprintln!` panics when
/// it cannot write), and one write keeps lines whole when two processes
/// share stderr (a binary upgrade).
pub fn stderr_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
