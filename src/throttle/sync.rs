//! The reconciler thread and the shards' side of it.
//!
//! Each shard owns a [`ShardThrottle`]: one [`ShardLease`] per configured
//! limit, checked on the request path with plain field arithmetic. Every
//! `sync_interval` the shard's tick posts its reports to its [`Mailbox`]
//! and takes the grants waiting there; the reconciler thread runs one
//! [`Reconciler`] per limit on the same interval. A shard whose lease runs
//! dry posts one top-up request per limit per interval and wakes the
//! reconciler, which answers from the bucket's reserve at once. Mailboxes
//! are touched by one shard and the reconciler only, at those moments: the
//! request path itself takes no lock (the one exception is posting a
//! top-up, at most once per limit per interval on an exhausted shard).

use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Top-up requests per limit, in milli-tokens.
    topups: Vec<u64>,
}

/// One shard's exchange with the reconciler.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<MailboxInner>,
    /// Set when grants are waiting, so an exhausted shard can look without
    /// locking.
    grants_ready: AtomicBool,
}

impl Mailbox {
    fn new(limits: usize) -> Mailbox {
        Mailbox {
            inner: Mutex::new(MailboxInner {
                reports: vec![Report::default(); limits],
                grants: vec![0; limits],
                topups: vec![0; limits],
            }),
            grants_ready: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxInner> {
        // A poisoned mailbox only means a panic elsewhere; its numbers are
        // still plain counters.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Wake {
    flag: Mutex<bool>,
    cond: Condvar,
}

/// The running reconciler thread; stops when dropped.
pub struct Coordinator {
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake.cond.notify_all();
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
    let wake = Arc::new(Wake {
        flag: Mutex::new(false),
        cond: Condvar::new(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let ns = move || u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut recs: Vec<Reconciler> = limits
        .iter()
        .map(|l| Reconciler::new(l.rate, l.burst, shards, 0))
        .collect();
    // First leases before any request arrives.
    deliver(&mut recs, &mailboxes, ns(), true);
    let shard_sides = mailboxes
        .iter()
        .map(|m| ShardThrottle {
            leases: vec![ShardLease::default(); limits.len()],
            asked: vec![false; limits.len()],
            mailbox: m.clone(),
            wake: wake.clone(),
        })
        .collect();
    let (stop2, wake2) = (stop.clone(), wake.clone());
    let handle = std::thread::Builder::new()
        .name("tollgate-throttle".into())
        .spawn(move || {
            let mut next_tick = ns() + interval.as_nanos() as u64;
            while !stop2.load(Ordering::Acquire) {
                let now = ns();
                if now >= next_tick {
                    deliver(&mut recs, &mailboxes, now, true);
                    next_tick += interval.as_nanos() as u64;
                    if next_tick < now {
                        next_tick = now + interval.as_nanos() as u64;
                    }
                } else {
                    deliver(&mut recs, &mailboxes, now, false);
                }
                let wait = Duration::from_nanos(next_tick.saturating_sub(ns()));
                let guard = wake2.flag.lock().unwrap_or_else(|e| e.into_inner());
                let (mut guard, _) = wake2
                    .cond
                    .wait_timeout_while(guard, wait, |woken| {
                        !*woken && !stop2.load(Ordering::Acquire)
                    })
                    .unwrap_or_else(|e| e.into_inner());
                *guard = false;
            }
        })?;
    Ok((
        Coordinator {
            stop,
            wake,
            handle: Some(handle),
        },
        shard_sides,
    ))
}

/// A full tick (`tick`) or only top-ups: moves reports in and grants out.
fn deliver(recs: &mut [Reconciler], mailboxes: &[Arc<Mailbox>], now: u64, tick: bool) {
    if tick {
        for (l, rec) in recs.iter_mut().enumerate() {
            let reports: Vec<Report> = mailboxes
                .iter()
                .map(|m| std::mem::take(&mut m.lock().reports[l]))
                .collect();
            let grants = rec.tick(now, &reports);
            for (m, g) in mailboxes.iter().zip(grants) {
                m.lock().grants[l] += g;
            }
        }
        for m in mailboxes {
            m.grants_ready.store(true, Ordering::Release);
        }
    }
    for m in mailboxes {
        let mut inner = m.lock();
        let mut any = false;
        let MailboxInner { topups, grants, .. } = &mut *inner;
        for ((rec, want), grant) in recs
            .iter_mut()
            .zip(topups.iter_mut())
            .zip(grants.iter_mut())
        {
            let want = std::mem::take(want);
            if want > 0 {
                let got = rec.top_up(now, want);
                *grant += got;
                any |= got > 0;
            }
        }
        drop(inner);
        if any {
            m.grants_ready.store(true, Ordering::Release);
        }
    }
}

/// A shard's side of every limit.
pub struct ShardThrottle {
    leases: Vec<ShardLease>,
    /// Whether a top-up was requested for the limit this interval.
    asked: Vec<bool>,
    mailbox: Arc<Mailbox>,
    wake: Arc<Wake>,
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
            if lease.try_admit() {
                continue;
            }
            // Out of lease: take grants that arrived since the tick.
            if self.mailbox.grants_ready.swap(false, Ordering::AcqRel) {
                self.take_grants();
                if self.leases[l].try_admit() {
                    continue;
                }
            }
            if !self.asked[l] {
                self.asked[l] = true;
                let want = 2 * (self.leases[l].seen() + 1) * MILLI;
                self.mailbox.lock().topups[l] += want;
                *self.wake.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
                self.wake.cond.notify_one();
            }
            return Some(pos);
        }
        None
    }

    /// The shard's periodic exchange: report every lease, take grants.
    pub fn tick(&mut self) {
        {
            let mut inner = self.mailbox.lock();
            for (l, lease) in self.leases.iter_mut().enumerate() {
                let r = lease.report();
                let acc = &mut inner.reports[l];
                acc.unused += r.unused;
                acc.demand += r.demand;
            }
        }
        self.asked.iter_mut().for_each(|a| *a = false);
        self.mailbox.grants_ready.store(false, Ordering::Release);
        self.take_grants();
    }

    fn take_grants(&mut self) {
        let mut inner = self.mailbox.lock();
        for (lease, g) in self.leases.iter_mut().zip(inner.grants.iter_mut()) {
            lease.grant(std::mem::take(g));
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
        // Level 1's first lease (half its burst: it has seen no demand yet)
        // is untouched by the five refusals at level 0.
        let mut ok = 0;
        for _ in 0..5 {
            ok += u32::from(s.check(&[1]).is_none());
        }
        assert_eq!(ok, 5);
    }
}
