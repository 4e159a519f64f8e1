//! One global limit shared by many shards: leases carved from one bucket.
//!
//! The reconciler owns the global [`TokenBucket`]. Every `sync_interval`
//! each shard reports the lease tokens it did not use and how many requests
//! it saw; the reconciler returns the unused tokens to the bucket, and
//! hands out new leases: each shard's share of the bucket in proportion to
//! its recent demand (an exponentially weighted average over intervals that
//! saw traffic, so an idle gap does not erase which shard the traffic was
//! on), but no more than twice what it used last interval (with a floor, so
//! a quiet shard can admit its first requests at once). What is not leased
//! stays in the bucket as a reserve; a shard whose lease runs dry between
//! ticks takes a top-up from it at once (`sync.rs`: under the limit's lock,
//! only on exhaustion). Admission itself is a plain field on the shard.
//!
//! Bounds:
//! * **Never over-admits.** Every admitted request spends a token that came
//!   out of the global bucket, so over any interval the node admits at most
//!   what one bucket admits: `burst + rate × t` (asserted in every
//!   simulation below).
//! * **Under-admission** comes from tokens stranded in a lease while another
//!   shard turns requests away; every lease returns at the next tick, and a
//!   lease is at most twice its shard's last demand, so at most about twice
//!   one interval's traffic of the shards whose demand just fell is held
//!   back, for at most one interval. It shrinks with `sync_interval`.
//! * Leases are whole tokens (a fraction of one admits nothing and would
//!   be stranded), and lent tokens count against the bucket's capacity
//!   until the shard reports them spent or unused, so bucket plus leases
//!   never hold more than one burst: no over-admission in any window, not
//!   only since the start (`idle_then_flood_admits_no_more_than_one_bucket`).
//! * Measured in simulation (tests below: 10 ms interval, immediate top-ups,
//!   5–6 s): uniform over-limit load 0.02% short of one ideal bucket, 90/10
//!   skew 0.16%, all traffic on one of 8 shards 0.06%, under the limit 0%,
//!   20 ms bursts at 10× the limit every 200 ms on one shard 0%; 10.1% when
//!   each burst lands on a different, idle shard (the previous burst's
//!   shard still holds its lease for up to one interval). Asserted bounds:
//!   1%, and 15% for the moving bursts.

use super::bucket::{TokenBucket, MILLI};

/// Weight of the newest interval in the demand average.
const DEMAND_ALPHA: f64 = 0.5;
/// Demand a shard is assumed to have at least, so a shard with no traffic
/// yet still gets a small lease and can admit its first requests.
const DEMAND_FLOOR: f64 = 0.5;

/// A shard's side of one limit: its lease and what it saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLease {
    /// Milli-tokens this shard may spend until the next tick.
    lease: u64,
    /// Requests seen since the last report (admitted or not).
    seen: u64,
    /// Milli-tokens granted since the last report.
    granted: u64,
}

/// What a shard tells the reconciler at a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Lease milli-tokens not spent, handed back.
    pub unused: u64,
    /// Requests seen since the previous report.
    pub demand: u64,
    /// Milli-tokens granted since the previous report (settles the loan).
    pub granted: u64,
}

impl ShardLease {
    /// Admits one request if the lease has a token.
    #[inline]
    pub fn try_admit(&mut self) -> bool {
        self.seen += 1;
        if self.lease >= MILLI {
            self.lease -= MILLI;
            true
        } else {
            false
        }
    }

    /// Hands back the unspent lease and the demand seen (at a tick).
    pub fn report(&mut self) -> Report {
        let r = Report {
            unused: self.lease,
            demand: self.seen,
            granted: self.granted,
        };
        self.lease = 0;
        self.seen = 0;
        self.granted = 0;
        r
    }

    /// Admits one more request without counting it as seen again (after a
    /// top-up for a request [`ShardLease::try_admit`] already counted).
    pub fn try_admit_again(&mut self) -> bool {
        if self.lease >= MILLI {
            self.lease -= MILLI;
            true
        } else {
            false
        }
    }

    /// Gives back the token an admitted request took, when a later level
    /// refused that request.
    pub fn refund(&mut self) {
        self.lease += MILLI;
    }

    /// Requests seen since the last report.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Installs the lease the reconciler granted.
    pub fn grant(&mut self, lease: u64) {
        self.lease = self.lease.saturating_add(lease);
        self.granted = self.granted.saturating_add(lease);
    }
}

/// The reconciler's side of one limit.
#[derive(Debug, Clone)]
pub struct Reconciler {
    bucket: TokenBucket,
    demand: Vec<f64>,
    /// Milli-tokens shards reported spent (lent and not returned) since
    /// creation or the last [`Reconciler::reset`]: a quota's usage.
    spent: u64,
    /// A quota: no leases at ticks, and top-ups shrink with what is left
    /// (see [`Reconciler::top_up`]).
    quota: bool,
}

impl Reconciler {
    /// A limit of `rate` per second with `burst`, shared by `shards`.
    pub fn new(rate: u64, burst: u64, shards: usize, now_ns: u64) -> Reconciler {
        Reconciler {
            bucket: TokenBucket::new(rate, burst, now_ns),
            demand: vec![DEMAND_FLOOR; shards],
            spent: 0,
            quota: false,
        }
    }

    /// A quota: `limit` requests that do not refill with time, of which
    /// `used` are already spent this period.
    pub fn quota(limit: u64, used: u64, shards: usize, now_ns: u64) -> Reconciler {
        let tokens = limit.saturating_sub(used).saturating_mul(MILLI);
        Reconciler {
            bucket: TokenBucket::with_tokens(0, limit, tokens, now_ns),
            demand: vec![DEMAND_FLOOR; shards],
            spent: used.saturating_mul(MILLI),
            quota: true,
        }
    }

    /// Requests reported spent so far (settled leases only: what shards
    /// still hold is counted at their next tick).
    pub fn spent(&self) -> u64 {
        self.spent / MILLI
    }

    /// Starts a new quota period: the bucket is full again and nothing is
    /// spent.
    pub fn reset(&mut self) {
        self.bucket.fill();
        self.spent = 0;
    }

    fn settle_one(&mut self, granted: u64, unused: u64) {
        self.spent = self
            .spent
            .saturating_add(granted.saturating_sub(unused.min(granted)));
        self.bucket.settle(granted, unused);
    }

    /// One tick: takes every shard's report (`reports[i]` from shard `i`)
    /// and returns the new lease for each, in milli-tokens.
    pub fn tick(&mut self, now_ns: u64, reports: &[Report]) -> Vec<u64> {
        // Weights move only when there was traffic: an idle gap keeps the
        // last split, so a shard whose bursts recur finds its share waiting.
        let busy = reports.iter().any(|r| r.demand > 0);
        for (i, r) in reports.iter().enumerate() {
            self.settle_one(r.granted, r.unused);
            let d = &mut self.demand[i];
            if busy {
                *d = (DEMAND_ALPHA * r.demand as f64 + (1.0 - DEMAND_ALPHA) * *d).max(DEMAND_FLOOR);
            }
        }
        if self.quota {
            // A quota does not refill: tokens parked in one shard's lease
            // could refuse another shard's request while the quota is not
            // used up. Shards take quota only by top-ups.
            return vec![0; reports.len()];
        }
        let total = self.bucket.available(now_ns);
        let weight: f64 = self.demand.iter().sum();
        let floor = self.bucket.capacity() / (2 * self.demand.len().max(1) as u64);
        // Each shard gets its demand-weighted share, but no more than twice
        // what it used last; the rest stays in the bucket as a reserve that
        // shards draw on between ticks ([`Reconciler::top_up`]).
        let leases: Vec<u64> = self
            .demand
            .iter()
            .zip(reports)
            .map(|(d, r)| {
                let share = ((total as f64) * d / weight).floor() as u64;
                let cap = (2 * r.demand + 1).saturating_mul(MILLI).max(floor);
                // Whole tokens only: a fraction of a token in a lease can
                // admit nothing, so it stays in the reserve for top-ups.
                share.min(cap) / MILLI * MILLI
            })
            .collect();
        leases
            .iter()
            .map(|&l| self.bucket.lend(now_ns, l))
            .collect()
    }

    /// Serves a shard that ran out of lease between ticks: up to `want`
    /// milli-tokens from the reserve.
    ///
    /// A quota's top-up is also at most a quarter of what is left split
    /// over the shards (at least one token): near exhaustion shards take
    /// one token per request, so no shard refuses while another holds
    /// a spare part of the last few tokens.
    pub fn top_up(&mut self, now_ns: u64, want: u64) -> u64 {
        let want = if self.quota {
            let left = self.bucket.available(now_ns);
            let share = left / (4 * self.demand.len().max(1) as u64) / MILLI * MILLI;
            want.min(share.max(MILLI))
        } else {
            want
        };
        self.bucket.lend(now_ns, want)
    }

    /// Settles a shard's report at once (`granted` lent, `unused` back),
    /// so returned tokens are in the bucket for the next top-up.
    pub fn settle(&mut self, granted: u64, unused: u64) {
        self.settle_one(granted, unused);
    }

    /// Takes back a lease that was never delivered.
    pub fn take_back(&mut self, lease: u64) {
        self.bucket.settle(lease, lease);
    }

    /// Nanoseconds until the reserve holds a token again.
    pub fn wait_for_token_ns(&mut self, now_ns: u64) -> u64 {
        self.bucket.refill(now_ns);
        self.bucket.wait_for_token_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shards take a quota in top-ups; every `sync_ms` they settle.
    /// Returns admitted, and how many were refused while the quota was
    /// not yet used up.
    fn simulate_quota(
        limit: u64,
        shards: usize,
        sync_ms: u64,
        ms: u64,
        arrivals: impl Fn(u64, usize) -> u64,
    ) -> (u64, u64) {
        let mut rec = Reconciler::quota(limit, 0, shards, 0);
        let mut leases = vec![ShardLease::default(); shards];
        let (mut admitted, mut early) = (0, 0);
        for t in 0..ms {
            for (s, lease) in leases.iter_mut().enumerate() {
                for _ in 0..arrivals(t, s) {
                    let ok = lease.try_admit() || {
                        lease.grant(rec.top_up(t * MS, 2 * (lease.seen() + 1) * MILLI));
                        lease.try_admit_again()
                    };
                    admitted += u64::from(ok);
                    early += u64::from(!ok && admitted < limit);
                }
            }
            if (t + 1) % sync_ms == 0 {
                for lease in leases.iter_mut() {
                    let r = lease.report();
                    rec.settle(r.granted, r.unused);
                }
            }
        }
        (admitted, early)
    }

    #[test]
    fn a_quota_is_never_exceeded_and_refuses_early_only_briefly() {
        // 4 shards, 90/10-ish skew, far more offered than the quota.
        let (admitted, early) = simulate_quota(10_000, 4, 10, 2_000, |t, s| {
            if s == 0 {
                9
            } else {
                (t % 3 == 0) as u64
            }
        });
        assert_eq!(admitted, 10_000);
        println!("quota sim: admitted {admitted}, refused early {early}");
        // Refusals before the end come only from the last few tokens held
        // in another shard's top-up, for less than one interval.
        assert!(early <= 4 * 10 * 10, "{early} refused early");
        // One request at a time, round-robin over shards (new connections
        // landing anywhere): exact, nothing refused early.
        let (admitted, early) = simulate_quota(50, 4, 10, 400, |t, s| (t as usize % 4 == s) as u64);
        assert_eq!((admitted, early), (50, 0));
    }

    #[test]
    fn a_quota_is_taken_one_token_at_a_time_near_its_end() {
        let mut q = Reconciler::quota(100, 90, 2, 0);
        // No leases at ticks.
        assert_eq!(q.tick(0, &[Report::default(); 2]), vec![0, 0]);
        // 10 left, 2 shards: a quarter split over the shards is below one
        // token, so each top-up is one token whatever was asked.
        assert_eq!(q.top_up(0, 50 * MILLI), MILLI);
        let mut big = Reconciler::quota(10_000, 0, 2, 0);
        assert_eq!(big.top_up(0, 50 * MILLI), 50 * MILLI);
        assert_eq!(big.top_up(0, 5_000 * MILLI), 1243 * MILLI);
        // Spent counts what shards report used.
        q.settle(MILLI, 0);
        assert_eq!(q.spent(), 91);
        q.reset();
        assert_eq!(q.spent(), 0);
        assert_eq!(q.top_up(0, 1000 * MILLI), 12 * MILLI);
    }

    const MS: u64 = 1_000_000;

    /// Runs `shards` shards against one limit for `ms` milliseconds of
    /// simulated time. `arrivals(ms, shard)` is how many requests reach that
    /// shard in that millisecond. Returns (admitted by the shards, admitted
    /// by one ideal bucket fed the same requests).
    fn simulate(
        rate: u64,
        burst: u64,
        shards: usize,
        sync_ms: u64,
        ms: u64,
        arrivals: impl Fn(u64, usize) -> u64,
    ) -> (u64, u64) {
        let mut rec = Reconciler::new(rate, burst, shards, 0);
        let mut leases = vec![ShardLease::default(); shards];
        let first = rec.tick(0, &vec![Report::default(); shards]);
        for (l, g) in leases.iter_mut().zip(first) {
            l.grant(g);
        }
        let mut ideal = TokenBucket::new(rate, burst, 0);
        let (mut admitted, mut ideal_admitted) = (0, 0);
        for t in 0..ms {
            let now = t * MS;
            for (s, lease) in leases.iter_mut().enumerate() {
                for _ in 0..arrivals(t, s) {
                    // A shard that ran dry takes a top-up from the reserve
                    // at once (as `sync::ShardThrottle` does).
                    let ok = lease.try_admit() || {
                        lease.grant(rec.top_up(now, 2 * (lease.seen() + 1) * MILLI));
                        lease.try_admit_again()
                    };
                    admitted += u64::from(ok);
                    ideal_admitted += u64::from(ideal.try_take(now));
                }
            }
            if (t + 1) % sync_ms == 0 {
                let reports: Vec<Report> = leases.iter_mut().map(ShardLease::report).collect();
                let grants = rec.tick(now + MS, &reports);
                for (l, g) in leases.iter_mut().zip(grants) {
                    l.grant(g);
                }
            }
        }
        (admitted, ideal_admitted)
    }

    /// Asserts the documented bounds: never above the single-bucket ceiling,
    /// and within `tolerance` (a fraction) of what one ideal bucket admits.
    fn check(
        name: &str,
        (admitted, ideal): (u64, u64),
        rate: u64,
        burst: u64,
        ms: u64,
        tolerance: f64,
    ) {
        let ceiling = burst + rate * ms / 1000;
        assert!(
            admitted <= ceiling,
            "{name}: admitted {admitted} > ceiling {ceiling}"
        );
        let shortfall = ideal.saturating_sub(admitted) as f64 / ideal.max(1) as f64;
        assert!(
            shortfall <= tolerance,
            "{name}: admitted {admitted} vs ideal {ideal} ({:.2}% short, allowed {:.2}%)",
            shortfall * 100.0,
            tolerance * 100.0
        );
    }

    #[test]
    fn uniform_load_over_limit() {
        // 4 shards, 1000 rps limit, 2000 rps offered evenly, 5 s.
        let r = simulate(1000, 100, 4, 10, 5000, |t, _| u64::from(t % 2 == 0));
        check("uniform", r, 1000, 100, 5000, 0.01);
    }

    #[test]
    fn skewed_90_10_load() {
        // 2 shards: 90% of 3000 rps on shard 0, 10% on shard 1.
        let r = simulate(1000, 100, 2, 10, 5000, |t, s| match s {
            0 => 2 + u64::from(t % 10 != 0),
            _ => u64::from(t % 10 < 3),
        });
        check("skewed", r, 1000, 100, 5000, 0.01);
    }

    #[test]
    fn all_traffic_on_one_shard_can_use_the_whole_limit() {
        let r = simulate(1000, 100, 8, 10, 5000, |_, s| if s == 3 { 2 } else { 0 });
        check("one shard", r, 1000, 100, 5000, 0.01);
    }

    #[test]
    fn bursty_load_on_one_shard() {
        // Bursts of 20 ms at 10x the limit, 200 ms apart, on shard 2.
        let r = simulate(1000, 200, 4, 10, 6000, |t, s| {
            if t % 200 < 20 && s == 2 {
                10
            } else {
                0
            }
        });
        check("bursty, same shard", r, 1000, 200, 6000, 0.01);
    }

    /// Each burst lands on a shard that was idle: it starts with a small
    /// lease and lives on top-ups from the reserve until the next tick.
    #[test]
    fn bursty_load_moving_between_shards() {
        let r = simulate(1000, 200, 4, 10, 6000, |t, s| {
            let burst_no = t / 200;
            if t % 200 < 20 && s == (burst_no % 4) as usize {
                10
            } else {
                0
            }
        });
        check("bursty, moving", r, 1000, 200, 6000, 0.15);
    }

    /// Leases lent during an idle second must not add to a full bucket:
    /// a flood after the gap admits no more than one bucket would, in any
    /// window, not just since the start.
    #[test]
    fn idle_then_flood_admits_no_more_than_one_bucket() {
        let (rate, burst, shards) = (1000, 100, 2);
        let mut rec = Reconciler::new(rate, burst, shards, 0);
        let mut leases = vec![ShardLease::default(); shards];
        let mut in_flood = 0u64;
        for t in 0..1100u64 {
            let now = t * MS;
            if t >= 1000 {
                for lease in leases.iter_mut() {
                    for _ in 0..50 {
                        let ok = lease.try_admit() || {
                            lease.grant(rec.top_up(now, 2 * (lease.seen() + 1) * MILLI));
                            lease.try_admit_again()
                        };
                        in_flood += u64::from(ok);
                    }
                }
            }
            if (t + 1) % 10 == 0 {
                let reports: Vec<Report> = leases.iter_mut().map(ShardLease::report).collect();
                for (l, g) in leases.iter_mut().zip(rec.tick(now + MS, &reports)) {
                    l.grant(g);
                }
            }
        }
        let window_ceiling = burst + rate * 100 / 1000 + 1;
        assert!(
            in_flood <= window_ceiling,
            "flood admitted {in_flood} > {window_ceiling}"
        );
        assert!(
            in_flood >= window_ceiling * 9 / 10,
            "flood admitted only {in_flood}"
        );
    }

    #[test]
    fn under_the_limit_everything_is_admitted() {
        let r = simulate(1000, 100, 4, 10, 3000, |t, s| {
            u64::from(t % 8 == s as u64 * 2)
        });
        assert_eq!(r.0, r.1);
    }

    #[test]
    fn idle_shard_returns_its_lease() {
        let mut rec = Reconciler::new(1000, 100, 2, 0);
        let mut leases = vec![ShardLease::default(); 2];
        // Shard 0 busy, shard 1 idle for a few ticks.
        let mut last = Vec::new();
        for tick in 1..=6u64 {
            let mut reports = Vec::new();
            for (i, l) in leases.iter_mut().enumerate() {
                if i == 0 {
                    for _ in 0..50 {
                        l.try_admit();
                    }
                }
                reports.push(l.report());
            }
            last = rec.tick(tick * 10 * MS, &reports);
            for (l, g) in leases.iter_mut().zip(last.iter()) {
                l.grant(*g);
            }
        }
        assert!(last[1] * 20 < last[0], "idle shard still holds {:?}", last);
    }
}
