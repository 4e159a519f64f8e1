//! The reconciler thread and the shards' side of it.
//!
//! Each shard owns a [`ShardThrottle`]: one [`ShardLease`] per configured
//! limit, checked on the request path with plain field arithmetic. Every
//! `sync_interval` the shard's tick hands its leases back to each limit's
//! bucket at once (under that limit's lock, so no token sits in transit
//! where no shard can use it), posts the demand it saw to its [`Mailbox`]
//! and takes the grants waiting there; the reconciler thread runs one
//! [`Reconciler`] per limit on the same interval and leases by demand. A shard whose lease runs
//! dry takes a top-up from the limit's reserve at once, under that limit's
//! lock; if the reserve is empty too, it refuses without asking again
//! until a token can have been earned. So an admitted request with lease
//! left takes no lock, a shard never refuses while the bucket still holds
//! a token for it, and a flood of refused requests locks at most once per
//! token interval per shard.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::bucket::MILLI;
use super::lease::{Reconciler, Report, ShardLease};

/// A limit: requests per second and burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    pub rate: u64,
    pub burst: u64,
}

#[derive(Debug, Default)]
struct MailboxInner {
    /// Accumulated reports per limit, not yet taken by the reconciler.
    reports: Vec<Report>,
    /// Granted milli-tokens per limit, not yet taken by the shard.
    grants: Vec<u64>,
}

/// One shard's exchange with the reconciler thread.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<MailboxInner>,
}

impl Mailbox {
    fn new(limits: usize) -> Mailbox {
        Mailbox {
            inner: Mutex::new(MailboxInner {
                reports: vec![Report::default(); limits],
                grants: vec![0; limits],
            }),
        }
    }
}

/// Locks, treating a poisoned lock as usable: what it guards is plain
/// counters, consistent after any panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type SharedReconciler = Arc<Mutex<Reconciler>>;

/// The running reconciler thread; stops when dropped.
pub struct Coordinator {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts the reconciler for `limits` shared by `shards`; returns it and
/// one shard-side throttle per shard.
pub fn start(
    limits: &[LimitSpec],
    shards: usize,
    interval: Duration,
) -> std::io::Result<(Coordinator, Vec<ShardThrottle>)> {
    let mailboxes: Vec<Arc<Mailbox>> = (0..shards)
        .map(|_| Arc::new(Mailbox::new(limits.len())))
        .collect();
    let epoch = Instant::now();
    let recs: Vec<SharedReconciler> = limits
        .iter()
        .map(|l| Arc::new(Mutex::new(Reconciler::new(l.rate, l.burst, shards, 0))))
        .collect();
    // First leases before any request arrives.
    tick(&recs, &mailboxes, ns_since(epoch));
    let shard_sides = mailboxes
        .iter()
        .map(|m| ShardThrottle {
            leases: vec![ShardLease::default(); limits.len()],
            dry_until: vec![0; limits.len()],
            mailbox: m.clone(),
            recs: recs.clone(),
            epoch,
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
        })
        .collect();
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop2 = stop.clone();
    let handle = std::thread::Builder::new()
        .name("tollgate-throttle".into())
        .spawn(move || loop {
            let guard = lock(&stop2.0);
            let (guard, _) = stop2
                .1
                .wait_timeout_while(guard, interval, |stopped| !*stopped)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
            drop(guard);
            tick(&recs, &mailboxes, ns_since(epoch));
        })?;
    Ok((
        Coordinator {
            stop,
            handle: Some(handle),
        },
        shard_sides,
    ))
}

fn ns_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One reconciler tick: reports in, grants out.
fn tick(recs: &[SharedReconciler], mailboxes: &[Arc<Mailbox>], now: u64) {
    for (l, rec) in recs.iter().enumerate() {
        let reports: Vec<Report> = mailboxes
            .iter()
            .map(|m| std::mem::take(&mut lock(&m.inner).reports[l]))
            .collect();
        let mut rec = lock(rec);
        let grants = rec.tick(now, &reports);
        for (m, g) in mailboxes.iter().zip(grants) {
            let mut inner = lock(&m.inner);
            if inner.grants[l] == 0 {
                inner.grants[l] = g;
            } else {
                // The shard has not taken the last grant yet (it has not
                // ticked): do not stack another on it.
                rec.take_back(g);
            }
        }
    }
}

/// A shard's side of every limit.
pub struct ShardThrottle {
    leases: Vec<ShardLease>,
    /// Per limit: the reserve was empty; do not ask again before this time.
    dry_until: Vec<u64>,
    mailbox: Arc<Mailbox>,
    recs: Vec<SharedReconciler>,
    epoch: Instant,
    /// The tick returns idle shards' leases to the bucket, so an empty
    /// bucket is looked at again after at most one interval.
    interval_ns: u64,
}

impl ShardThrottle {
    /// Checks `levels` (indexes into the configured limits), most specific
    /// first. Returns the position in `levels` of the one that refused, or
    /// `None` when every level admitted. Levels after a refusing one are
    /// not charged.
    pub fn check(&mut self, levels: &[u32]) -> Option<usize> {
        for (pos, &l) in levels.iter().enumerate() {
            let l = l as usize;
            let Some(lease) = self.leases.get_mut(l) else {
                continue;
            };
            if lease.try_admit() || self.top_up(l) {
                continue;
            }
            return Some(pos);
        }
        None
    }

    /// An exhausted lease takes more from the limit's reserve at once (a
    /// lock shared with the other shards, taken only here); when the
    /// reserve is empty too, the shard does not ask again until a token
    /// can have been earned, so a refused flood costs no locking.
    fn top_up(&mut self, l: usize) -> bool {
        let now = ns_since(self.epoch);
        if now < self.dry_until[l] {
            return false;
        }
        // A grant may be waiting that this shard's tick has not taken yet.
        let waiting = std::mem::take(&mut lock(&self.mailbox.inner).grants[l]);
        let lease = &mut self.leases[l];
        if waiting > 0 {
            lease.grant(waiting);
            if lease.try_admit_again() {
                return true;
            }
        }
        let want = 2 * (lease.seen() + 1) * MILLI;
        let mut rec = lock(&self.recs[l]);
        let got = rec.top_up(now, want);
        if got < MILLI {
            let wait = rec.wait_for_token_ns(now).min(self.interval_ns);
            self.dry_until[l] = now.saturating_add(wait);
        }
        drop(rec);
        lease.grant(got);
        // The request that asked was counted as seen already.
        lease.try_admit_again()
    }

    /// The shard's periodic exchange: hand every lease back to its bucket
    /// at once (so no token waits in transit where no shard can use it),
    /// post the demand seen, and take the grants waiting.
    pub fn tick(&mut self) {
        let reports: Vec<Report> = self.leases.iter_mut().map(ShardLease::report).collect();
        for (rec, r) in self.recs.iter().zip(&reports) {
            if r.granted > 0 || r.unused > 0 {
                lock(rec).settle(r.granted, r.unused);
            }
        }
        let mut inner = lock(&self.mailbox.inner);
        for (l, (lease, r)) in self.leases.iter_mut().zip(&reports).enumerate() {
            inner.reports[l].demand += r.demand;
            lease.grant(std::mem::take(&mut inner.grants[l]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_shards_share_one_limit_through_the_thread() {
        let limits = [LimitSpec {
            rate: 100,
            burst: 50,
        }];
        let (coord, mut shards) = start(&limits, 2, Duration::from_millis(5)).expect("start");
        let t0 = Instant::now();
        let mut admitted = 0u64;
        // Offer far more than the limit from both shards for 300 ms.
        while t0.elapsed() < Duration::from_millis(300) {
            for s in shards.iter_mut() {
                s.tick();
                for _ in 0..20 {
                    admitted += u64::from(s.check(&[0]).is_none());
                }
            }
            std::thread::yield_now();
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let ceiling = 50.0 + 100.0 * elapsed;
        assert!(
            (admitted as f64) <= ceiling,
            "admitted {admitted} > {ceiling:.0}"
        );
        assert!(
            (admitted as f64) >= 0.7 * ceiling,
            "admitted {admitted} of {ceiling:.0}"
        );
        drop(coord);
    }

    #[test]
    fn a_refusal_does_not_charge_later_levels() {
        let limits = [
            LimitSpec { rate: 0, burst: 0 },
            LimitSpec { rate: 0, burst: 10 },
        ];
        let (_coord, mut shards) = start(&limits, 1, Duration::from_millis(5)).expect("start");
        let s = &mut shards[0];
        s.tick();
        for _ in 0..5 {
            assert_eq!(s.check(&[0, 1]), Some(0));
        }
        // Level 1 still has its whole burst: the five refusals at level 0
        // charged nothing after it.
        let mut ok = 0;
        for _ in 0..20 {
            ok += u32::from(s.check(&[1]).is_none());
        }
        assert_eq!(ok, 10);
    }
}
