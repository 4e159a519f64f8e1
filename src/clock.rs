//! The one module that reads clocks. Everything else asks it, so the
//! rule "no clock read per request" can be checked: `clippy.toml` bans
//! `Instant::now`, `Instant::elapsed`, `SystemTime::now` and
//! `SystemTime::elapsed` everywhere but here.
//!
//! The request path does not call these either: a shard keeps a coarse
//! clock advanced by its tick (`Shard::coarse_now`, `Shard::unix_secs`) and
//! passes `now` into the sans-I/O logic; the latency clock below is the
//! one read a request pays (twice), for its latency figure.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock now (startup, ticks, control-plane waits).
#[inline]
pub fn now() -> Instant {
    Instant::now()
}

/// Time since `t` on the monotonic clock (zero if `t` is in the future).
#[inline]
pub fn since(t: Instant) -> Duration {
    Instant::now().saturating_duration_since(t)
}

/// The wall clock now.
#[inline]
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// Time since wall-clock time `t` (zero if `t` is in the future).
pub fn wall_since(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix_secs() -> u64 {
    secs_of(SystemTime::now())
}

/// Seconds since the Unix epoch of `t` (0 before it).
pub fn secs_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Nanoseconds since the Unix epoch of `t` (0 before it, saturating).
pub fn nanos_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The clock request latencies are measured with: the CPU's time-stamp
/// counter read directly (`quanta`, calibrated once per process), about
/// 7 ns a read where `Instant::now` (clock_gettime through the vDSO)
/// costs about 30 here. Not our core, so a well-kept crate rather than
/// hand-written `rdtsc`.
pub fn latency() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Monotonic nanoseconds since the first call in this process: a clock
/// that outlives any one component (quota reconcilers carried over by a
/// reload share it).
pub fn process_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_move_forward_and_convert() {
        let t = now();
        assert!(since(t) < Duration::from_secs(5));
        assert_eq!(since(t + Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(secs_of(UNIX_EPOCH + Duration::from_secs(7)), 7);
        assert_eq!(nanos_of(UNIX_EPOCH + Duration::from_nanos(9)), 9);
        assert_eq!(secs_of(UNIX_EPOCH - Duration::from_secs(1)), 0);
        let a = process_ns();
        assert!(process_ns() >= a);
        assert!(unix_secs() > 1_700_000_000);
    }
}
