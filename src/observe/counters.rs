//! Counters of one shard, readable from other threads: per route (by a
//! stable metric id, see [`super::metrics::Registry`]) requests by status
//! class, bytes, latency and integration-latency histograms, refusals and
//! cache hits and misses; per shard connections accepted and open, idle
//! backend connections, and refusals by level.
//!
//! Only the owning shard writes its counters, so an increment is a plain
//! load and store (no read-modify-write, no lock, no contended cache
//! line); readers on other threads (the metrics endpoint, tests) see each
//! counter's latest value. A histogram read while it is being written may
//! show a bucket one request ahead of its count; the next scrape agrees.
//!
//! Route counters live in blocks of [`BLOCK`] allocated when a snapshot
//! that needs them is installed (never moved, so a reader needs no lock
//! and a reload keeps every route's history). Histograms are fixed
//! log-linear buckets (1-2.5-5 steps from 10 µs to 60 s) written by hand
//! rather than taken from a histogram crate: recording is a bucket search
//! and two stores, and the scrape thread reads the buckets where they are,
//! with no copy or message to the shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

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

/// Upper bounds of the latency buckets, nanoseconds (the last bucket,
/// `+Inf`, has none).
pub const LATENCY_BOUNDS_NS: [u64; 21] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];
/// Buckets per histogram: one per bound plus `+Inf`.
pub const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// Route counters per block.
pub const BLOCK: usize = 256;
/// Blocks per shard: at most `BLOCK * MAX_BLOCKS` distinct routes over the
/// process's life (a route keeps its id across reloads).
pub const MAX_BLOCKS: usize = 256;

fn bump(c: &AtomicU64) {
    add(c, 1);
}

fn add(c: &AtomicU64, n: u64) {
    // Single writer: a load and a store, no atomic read-modify-write.
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A latency histogram written by one shard.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// The bucket a latency falls in.
#[inline]
pub fn bucket_of(ns: u64) -> usize {
    LATENCY_BOUNDS_NS.partition_point(|&b| b < ns)
}

impl Histogram {
    #[inline]
    pub fn record(&self, ns: u64) {
        bump(&self.buckets[bucket_of(ns)]);
        add(&self.sum_ns, ns);
    }

    fn add_to(&self, out: &mut HistogramCounts) {
        for (o, b) in out.buckets.iter_mut().zip(&self.buckets) {
            *o += read(b);
        }
        out.sum_ns += read(&self.sum_ns);
    }
}

/// A histogram's counts, summed over shards.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistogramCounts {
    /// Per bucket (not cumulative).
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl HistogramCounts {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in
    /// seconds; `None` when empty, `f64::INFINITY` past the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    LATENCY_BOUNDS_NS
                        .get(i)
                        .map_or(f64::INFINITY, |&b| b as f64 / 1e9),
                );
            }
        }
        Some(f64::INFINITY)
    }
}

/// Status classes counted per route: 1xx to 5xx.
pub const STATUS_CLASSES: usize = 5;

/// One route's counters on one shard.
#[derive(Debug, Default)]
pub struct RouteStats {
    by_class: [AtomicU64; STATUS_CLASSES],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    refused: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    latency: Histogram,
    integration: Histogram,
}

/// One finished request, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency: Duration,
    /// Time from sending to the backend to its response head, if the
    /// request reached one.
    pub integration: Option<Duration>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One route's counters summed over shards.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteTotals {
    /// Requests per status class, 1xx first.
    pub by_class: [u64; STATUS_CLASSES],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub refused: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub latency: HistogramCounts,
    pub integration: HistogramCounts,
}

impl RouteTotals {
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }
}

impl RouteStats {
    #[inline]
    fn record(&self, e: &Exchange) {
        let class = usize::from(e.status / 100).clamp(1, STATUS_CLASSES) - 1;
        bump(&self.by_class[class]);
        add(&self.bytes_in, e.bytes_in);
        add(&self.bytes_out, e.bytes_out);
        self.latency.record(nanos(e.latency));
        if let Some(d) = e.integration {
            self.integration.record(nanos(d));
        }
    }

    fn add_to(&self, out: &mut RouteTotals) {
        for (o, c) in out.by_class.iter_mut().zip(&self.by_class) {
            *o += read(c);
        }
        out.bytes_in += read(&self.bytes_in);
        out.bytes_out += read(&self.bytes_out);
        out.refused += read(&self.refused);
        out.cache_hits += read(&self.cache_hits);
        out.cache_misses += read(&self.cache_misses);
        self.latency.add_to(&mut out.latency);
        self.integration.add_to(&mut out.integration);
    }
}

/// Per-shard gauges and totals that are not per route.
#[derive(Debug, Default)]
pub struct ShardGauges {
    pub accepted: AtomicU64,
    pub open_connections: AtomicU64,
    /// Idle backend connections in the shard's pools (set at its tick).
    pub pool_idle: AtomicU64,
    /// Backend connections opened.
    pub pool_opened: AtomicU64,
    /// Backend requests sent on a reused connection.
    pub pool_reused: AtomicU64,
    /// Client TLS handshakes completed, of them resumed, and failed
    /// (timed out, refused for an unknown name, or rejected by either side).
    pub tls_handshakes: AtomicU64,
    pub tls_resumed: AtomicU64,
    pub tls_failures: AtomicU64,
    /// Accepts that failed for want of file descriptors (EMFILE/ENFILE),
    /// and idle keep-alive connections closed to free one.
    pub accept_fd_exhausted: AtomicU64,
    pub idle_reclaimed: AtomicU64,
}

/// One shard's counters.
#[derive(Debug)]
pub struct Counters {
    by_level: [AtomicU64; Level::ALL.len()],
    blocks: Box<[OnceLock<Box<[RouteStats]>>]>,
    pub gauges: ShardGauges,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            by_level: Default::default(),
            blocks: (0..MAX_BLOCKS).map(|_| OnceLock::new()).collect(),
            gauges: ShardGauges::default(),
        }
    }

    /// Makes room for metric ids below `ids` (called when a snapshot is
    /// installed, off the request path; any thread).
    pub fn ensure(&self, ids: usize) {
        for b in self.blocks.iter().take(ids.div_ceil(BLOCK)) {
            b.get_or_init(|| (0..BLOCK).map(|_| RouteStats::default()).collect());
        }
    }

    #[inline]
    fn route_stats(&self, id: u32) -> Option<&RouteStats> {
        let id = id as usize;
        self.blocks.get(id / BLOCK)?.get()?.get(id % BLOCK)
    }

    /// Counts a finished request of metric id `route`. Call only from the
    /// owning shard.
    #[inline]
    pub fn record(&self, route: u32, e: &Exchange) {
        if let Some(r) = self.route_stats(route) {
            r.record(e);
        }
    }

    /// Counts a refusal at `level` of a request for metric id `route` (if
    /// it resolved to one).
    pub fn refused(&self, level: Level, route: Option<u32>) {
        bump(&self.by_level[level as usize]);
        if let Some(r) = route.and_then(|r| self.route_stats(r)) {
            bump(&r.refused);
        }
    }

    /// Counts a cache lookup of metric id `route`.
    pub fn cache_lookup(&self, route: u32, hit: bool) {
        if let Some(r) = self.route_stats(route) {
            bump(if hit { &r.cache_hits } else { &r.cache_misses });
        }
    }

    /// Adds route `route`'s counters to `out`.
    pub fn add_route(&self, route: u32, out: &mut RouteTotals) {
        if let Some(r) = self.route_stats(route) {
            r.add_to(out);
        }
    }

    /// One route's totals on this shard.
    pub fn route(&self, route: u32) -> RouteTotals {
        let mut t = RouteTotals::default();
        self.add_route(route, &mut t);
        t
    }

    pub fn level(&self, level: Level) -> u64 {
        read(&self.by_level[level as usize])
    }

    /// Counts an accepted connection and returns the open count after it.
    pub fn connection_opened(&self) {
        bump(&self.gauges.accepted);
        bump(&self.gauges.open_connections);
    }

    /// Counts a completed client TLS handshake.
    pub fn tls_handshake(&self, resumed: bool) {
        bump(&self.gauges.tls_handshakes);
        if resumed {
            bump(&self.gauges.tls_resumed);
        }
    }

    /// Counts a client TLS handshake that did not complete.
    pub fn tls_failed(&self) {
        bump(&self.gauges.tls_failures);
    }

    /// Counts an accept that failed for want of file descriptors.
    pub fn accept_fd_exhausted(&self) {
        bump(&self.gauges.accept_fd_exhausted);
    }

    /// Counts idle connections closed to free descriptors.
    pub fn idle_reclaimed(&self, n: u64) {
        let c = &self.gauges.idle_reclaimed;
        c.store(read(c) + n, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        let open = &self.gauges.open_connections;
        open.store(read(open).saturating_sub(1), Ordering::Relaxed);
    }

    /// Sets a gauge (owning shard only).
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    pub fn get(gauge: &AtomicU64) -> u64 {
        read(gauge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_level_and_route() {
        let c = Counters::new();
        c.ensure(2);
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
        assert_eq!(c.route(1).refused, 2);
        assert_eq!(c.route(0).refused, 1);
        // Id 9 is in the first block, allocated by ensure(2).
        assert_eq!(c.route(9).refused, 1);
        c.cache_lookup(1, true);
        c.cache_lookup(1, true);
        c.cache_lookup(1, false);
        let r = c.route(1);
        assert_eq!((r.cache_hits, r.cache_misses), (2, 1));
        // Ids beyond the allocated blocks are ignored, never a panic.
        c.cache_lookup(BLOCK as u32 * 3, true);
        c.refused(Level::Route, Some(u32::MAX));
        assert_eq!(c.route(BLOCK as u32 * 3), RouteTotals::default());
    }

    #[test]
    fn blocks_grow_and_keep_counts() {
        let c = Counters::new();
        c.ensure(1);
        let e = Exchange {
            status: 200,
            bytes_in: 10,
            bytes_out: 20,
            latency: Duration::from_micros(30),
            integration: None,
        };
        c.record(0, &e);
        c.record(BLOCK as u32 + 5, &e);
        assert_eq!(c.route(BLOCK as u32 + 5).requests(), 0);
        c.ensure(BLOCK + 6);
        c.record(BLOCK as u32 + 5, &e);
        assert_eq!(c.route(BLOCK as u32 + 5).requests(), 1);
        assert_eq!(c.route(0).requests(), 1);
    }

    #[test]
    fn records_status_class_bytes_and_latency() {
        let c = Counters::new();
        c.ensure(1);
        for (status, us, integ) in [
            (200, 5, None),
            (204, 40, Some(30)),
            (404, 100, None),
            (502, 2_000_000, Some(1_999_000)),
            (101, 1, None),
            (999, 1, None),
        ] {
            c.record(
                0,
                &Exchange {
                    status,
                    bytes_in: 1,
                    bytes_out: 2,
                    latency: Duration::from_micros(us),
                    integration: integ.map(Duration::from_micros),
                },
            );
        }
        let t = c.route(0);
        assert_eq!(t.by_class, [1, 2, 0, 1, 2]);
        assert_eq!((t.bytes_in, t.bytes_out), (6, 12));
        assert_eq!(t.latency.count(), 6);
        assert_eq!(t.integration.count(), 2);
        // 5 µs, 1 µs, 1 µs ≤ 10 µs; 40 µs ≤ 50 µs; 100 µs ≤ 100 µs; 2 s ≤ 2.5 s.
        assert_eq!(t.latency.buckets[0], 3);
        assert_eq!(t.latency.buckets[2], 1);
        assert_eq!(t.latency.buckets[3], 1);
        assert_eq!(t.latency.buckets[16], 1);
        assert_eq!(t.latency.sum_ns, (5 + 40 + 100 + 2_000_000 + 2) * 1000);
        assert_eq!(t.latency.quantile_bound(0.5), Some(10e-6));
        assert_eq!(t.latency.quantile_bound(0.99), Some(2.5));
        assert_eq!(HistogramCounts::default().quantile_bound(0.5), None);
    }

    #[test]
    fn bucket_bounds_are_inclusive() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10_000), 0);
        assert_eq!(bucket_of(10_001), 1);
        assert_eq!(bucket_of(60_000_000_000), BUCKETS - 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn connection_gauges() {
        let c = Counters::new();
        c.connection_opened();
        c.connection_opened();
        c.connection_closed();
        assert_eq!(Counters::get(&c.gauges.accepted), 2);
        assert_eq!(Counters::get(&c.gauges.open_connections), 1);
        c.connection_closed();
        c.connection_closed();
        assert_eq!(Counters::get(&c.gauges.open_connections), 0);
    }
}
