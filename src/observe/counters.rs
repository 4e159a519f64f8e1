//! Counters of one shard, readable from other threads: refusals by level
//! and by route, cache hits and misses by route.
//!
//! Only the owning shard writes its counters, so an increment is a plain
//! load and store (no read-modify-write, no lock, no contended cache
//! line); readers on other threads (tests, later the metrics endpoint) see
//! each counter's latest value.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The per-client-IP limit.
    ClientIp,
    /// A usage plan's per-key throttle.
    Key,
    Route,
    Stage,
    Account,
    /// A usage plan's quota (429 `Limit Exceeded`).
    Quota,
    /// A required API key was missing, unknown or not in a plan for the
    /// stage (403).
    Forbidden,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::ClientIp,
        Level::Key,
        Level::Route,
        Level::Stage,
        Level::Account,
        Level::Quota,
        Level::Forbidden,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::ClientIp => "client_ip",
            Level::Key => "api_key",
            Level::Route => "route",
            Level::Stage => "stage",
            Level::Account => "account",
            Level::Quota => "quota",
            Level::Forbidden => "forbidden",
        }
    }
}

/// One shard's refusals (by level and by route) and cache lookups.
#[derive(Debug)]
pub struct Counters {
    by_level: [AtomicU64; Level::ALL.len()],
    /// Indexed like [`crate::config::Snapshot::route_counters`].
    by_route: Box<[AtomicU64]>,
    /// Cache hits and misses per route (Amazon API Gateway's
    /// CacheHitCount / CacheMissCount), indexed like `by_route`.
    cache_hits: Box<[AtomicU64]>,
    cache_misses: Box<[AtomicU64]>,
}

fn bump(c: &AtomicU64) {
    // Single writer: a load and a store, no atomic read-modify-write.
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Counters {
    pub fn new(routes: usize) -> Counters {
        let zeros = || (0..routes).map(|_| AtomicU64::new(0)).collect();
        Counters {
            by_level: Default::default(),
            by_route: zeros(),
            cache_hits: zeros(),
            cache_misses: zeros(),
        }
    }

    /// Counts a refusal at `level` of a request for route counter `route`
    /// (if it resolved to one). Call only from the owning shard.
    pub fn refused(&self, level: Level, route: Option<u32>) {
        bump(&self.by_level[level as usize]);
        if let Some(c) = route.and_then(|r| self.by_route.get(r as usize)) {
            bump(c);
        }
    }

    /// Counts a cache lookup of route counter `route`.
    pub fn cache_lookup(&self, route: u32, hit: bool) {
        let side = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        if let Some(c) = side.get(route as usize) {
            bump(c);
        }
    }

    /// Cache hits and misses of route counter `route`.
    pub fn cache(&self, route: usize) -> (u64, u64) {
        let read = |v: &[AtomicU64]| v.get(route).map_or(0, |c| c.load(Ordering::Relaxed));
        (read(&self.cache_hits), read(&self.cache_misses))
    }

    pub fn level(&self, level: Level) -> u64 {
        self.by_level[level as usize].load(Ordering::Relaxed)
    }

    pub fn route(&self, route: usize) -> u64 {
        self.by_route
            .get(route)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_level_and_route() {
        let c = Counters::new(2);
        c.refused(Level::Route, Some(1));
        c.refused(Level::Route, Some(1));
        c.refused(Level::Quota, Some(0));
        c.refused(Level::ClientIp, None);
        c.refused(Level::Stage, Some(9));
        assert_eq!(c.level(Level::Route), 2);
        assert_eq!(c.level(Level::Quota), 1);
        assert_eq!(c.level(Level::ClientIp), 1);
        assert_eq!(c.level(Level::Stage), 1);
        assert_eq!(c.level(Level::Account), 0);
        assert_eq!(c.route(1), 2);
        assert_eq!(c.route(0), 1);
        assert_eq!(c.route(9), 0);
        c.cache_lookup(1, true);
        c.cache_lookup(1, true);
        c.cache_lookup(1, false);
        c.cache_lookup(7, true);
        assert_eq!(c.cache(1), (2, 1));
        assert_eq!(c.cache(0), (0, 0));
    }
}
