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
use super::quota::{Period, PeriodClock};
use super::store::{QuotaStore, StoreError, Stored};

/// A limit: requests per second and burst; a quota has rate 0, its
/// allowance as burst, and says how it resets and where it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSpec {
    pub rate: u64,
    pub burst: u64,
    pub quota: Option<QuotaSpec>,
}

/// How a quota limit resets and persists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSpec {
    /// The name its counter is stored under (`plan/key`).
    pub name: String,
    pub period: Period,
    /// Subtracted from the allowance in the first period ever seen.
    pub offset: u64,
}

/// A quota's state as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    pub name: String,
    pub limit: u64,
    /// Requests counted this period (leases settled so far).
    pub used: u64,
    pub remaining: u64,
    /// When the period ends, Unix seconds.
    pub resets_at: u64,
}

/// Where and how often quotas are persisted.
pub struct Persistence {
    /// Shared with a successor coordinator across a reload.
    pub store: Arc<QuotaStore>,
    pub flush_interval: Duration,
}

/// Monotonic nanoseconds since the process's first use of it: quota
/// reconcilers outlive a coordinator (a reload carries them over), so their
/// reserve windows use one clock for the whole process.
fn mono_ns() -> u64 {
    crate::clock::process_ns()
}

/// Wall-clock seconds since the Unix epoch (quota periods are calendar
/// periods).
fn unix_now() -> u64 {
    crate::clock::unix_secs()
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

/// One quota limit tracked by the reconciler thread.
struct QuotaTrack {
    limit: usize,
    name: String,
    allowance: u64,
    period: Period,
    clock: PeriodClock,
    /// What the store holds for it, as last written by this coordinator:
    /// an unchanged row is not written again.
    written: Option<Stored>,
}

/// Quota limits, their store, and their period clocks.
struct Quotas {
    tracks: Mutex<Vec<QuotaTrack>>,
    /// `None` also while the store is released to a successor process
    /// (binary upgrade).
    persistence: Mutex<Option<Persistence>>,
    /// Writes of the store that failed (a metric).
    write_failures: std::sync::atomic::AtomicU64,
}

/// What a write of the quota counters records per quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// A new durable mark (what is handed out plus a reserve), applied
    /// once written: shards may be handed quota up to it.
    Reserve,
    /// The mark already applied (the store is handed to a successor,
    /// which starts from it while this process spends up to it).
    Applied,
    /// What is handed out (spent, or in leases): the gateway stops.
    HandedOut,
}

/// Wakes the quota flusher early: a shard's top-up left less than half
/// of a quota's reserve, a period rolled, or the coordinator stops.
#[derive(Debug, Default)]
struct Wake {
    /// (a mark is wanted, stop)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Wake {
    fn mark(&self) {
        lock(&self.state).0 = true;
        self.cv.notify_one();
    }

    fn stop(&self) {
        lock(&self.state).1 = true;
        self.cv.notify_all();
    }

    /// Waits up to `d` or until woken; true once stopping.
    fn wait(&self, d: Duration) -> bool {
        let guard = lock(&self.state);
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, d, |(mark, stop)| !*mark && !*stop)
            .unwrap_or_else(|e| e.into_inner());
        guard.0 = false;
        guard.1
    }
}

impl Quotas {
    /// Starts new periods that have begun by `unix`; true if one did
    /// (its quota needs a mark before anything is handed out).
    fn roll(&self, recs: &[SharedReconciler], unix: u64) -> bool {
        let mut rolled = false;
        for t in lock(&self.tracks).iter_mut() {
            // The reconciler resets once per period, whichever of the
            // coordinators sharing it (across a reload) rolls first.
            if t.clock.roll(unix) && lock(&recs[t.limit]).roll_to(t.clock.start()) {
                rolled = true;
            }
        }
        rolled
    }

    fn usage(&self, recs: &[SharedReconciler]) -> Vec<QuotaUsage> {
        lock(&self.tracks)
            .iter()
            .map(|t| {
                let used = lock(&recs[t.limit]).spent();
                QuotaUsage {
                    name: t.name.clone(),
                    limit: t.allowance,
                    used,
                    remaining: t.allowance.saturating_sub(used),
                    resets_at: t.clock.next_start(),
                }
            })
            .collect()
    }

    /// Writes every counter to the store (what each records: `what`).
    fn flush(&self, recs: &[SharedReconciler], what: Write) -> Result<(), StoreError> {
        let Some(store) = lock(&self.persistence).as_ref().map(|p| p.store.clone()) else {
            return Ok(());
        };
        let _writer = store.writer();
        let now = mono_ns();
        // Read under the locks, write (fsync) without them; only rows
        // that changed since this coordinator last wrote them.
        let mut marks = Vec::new();
        let rows: Vec<(usize, String, Stored)> = lock(&self.tracks)
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let mut rec = lock(&recs[t.limit]);
                let used = match what {
                    Write::Reserve => {
                        let m = rec.plan_mark(now);
                        marks.push((t.limit, m));
                        m.value
                    }
                    Write::Applied => rec.durable().unwrap_or(0).max(rec.handed_out()),
                    Write::HandedOut => rec.handed_out(),
                };
                let row = Stored {
                    period_start: t.clock.start(),
                    used,
                };
                (t.written != Some(row)).then(|| (i, t.name.clone(), row))
            })
            .collect();
        let saved = if rows.is_empty() {
            Ok(())
        } else {
            store.save(rows.iter().map(|(_, n, s)| (n.as_str(), *s)))
        };
        match &saved {
            Ok(()) => {
                let mut tracks = lock(&self.tracks);
                for (i, _, row) in &rows {
                    if let Some(t) = tracks.get_mut(*i) {
                        t.written = Some(*row);
                    }
                }
            }
            Err(_) => {
                self.write_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        // Durable now: shards may be handed quota up to the new marks. A
        // store that cannot be written does not stop admission: counting
        // goes on in memory (the flusher says so once a minute, and
        // `tollgate_quota_store_write_failures_total` counts it); a crash
        // during such an outage can admit again what was handed out since
        // the last successful write.
        for (l, m) in marks {
            lock(&recs[l]).apply_mark(m);
        }
        saved
    }
}

/// Where a quota stands at start: its period and what is used of it,
/// from its stored counter. A counter of the current period continues; an
/// older one means a new period began while stopped (nothing used); no
/// counter means the first period ever (the plan's `offset` counts as
/// used). A stored period *later* than the clock's means the clock went
/// back (a host booting with a stale clock before NTP): the stored period
/// and count are kept rather than starting a fresh allowance.
fn restore(q: &QuotaSpec, unix: u64, stored: Option<Stored>) -> (PeriodClock, u64) {
    let clock = PeriodClock::new(q.period, unix);
    match stored {
        Some(s) if s.period_start == clock.start() => (clock, s.used),
        Some(s) if s.period_start > clock.start() => {
            (PeriodClock::new(q.period, s.period_start), s.used)
        }
        Some(_) => (clock, 0),
        None => (clock, q.offset),
    }
}

/// The running reconciler thread; stops when dropped, after a last flush
/// of the quota counters.
pub struct Coordinator {
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Wakes the quota flusher (and stops it).
    wake: Arc<Wake>,
    /// The reconciler thread, and the quota flusher thread if quotas are
    /// persisted (its fsyncs never delay a tick).
    handles: Vec<JoinHandle<()>>,
    recs: Vec<SharedReconciler>,
    quotas: Arc<Quotas>,
    /// The shards' settle interval.
    interval: Duration,
}

/// What a successor coordinator takes over at a reload: each quota's
/// reconciler (by name, with its period clock, allowance and period), so
/// leases shards hold or settle during the switch count where they
/// belong, and the open store.
pub struct Carry {
    quotas: std::collections::HashMap<String, (SharedReconciler, PeriodClock, u64, Period)>,
}

impl Coordinator {
    /// The quota state a successor continues from (see [`Carry`]).
    pub fn carry(&self) -> Carry {
        let quotas = lock(&self.quotas.tracks)
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    (self.recs[t.limit].clone(), t.clock, t.allowance, t.period),
                )
            })
            .collect();
        Carry { quotas }
    }

    /// The open quota store, if quotas are persisted.
    pub fn store(&self) -> Option<Arc<QuotaStore>> {
        lock(&self.quotas.persistence)
            .as_ref()
            .map(|p| p.store.clone())
    }

    /// Writes every quota counter and closes the store, so another process
    /// (a binary upgrade's successor) can open it; counting goes on in
    /// memory. Returns the flush interval to give back to
    /// [`Coordinator::reacquire_store`] if the successor fails.
    pub fn release_store(&self) -> Result<Option<Duration>, StoreError> {
        // Shards settle what they spent from their leases at their ticks:
        // give them two, so the last write counts every request admitted
        // before the hand-over began.
        std::thread::sleep(2 * self.interval);
        // The marks as applied: the successor starts from them while this
        // process, its store gone, hands out nothing beyond them (and no
        // request waits for a mark that will not come).
        self.quotas.flush(&self.recs, Write::Applied)?;
        self.freeze_quotas(true);
        Ok(lock(&self.quotas.persistence)
            .take()
            .map(|p| p.flush_interval))
    }

    /// Writes every quota counter now.
    pub fn flush_quotas(&self) -> Result<(), StoreError> {
        self.quotas.flush(&self.recs, Write::Reserve)
    }

    /// Stops writing to the store, without a last write (a reload
    /// replaced this coordinator).
    pub fn detach_store(&self) {
        lock(&self.quotas.persistence).take();
    }

    /// Opens the store again after [`Coordinator::release_store`].
    pub fn reacquire_store(
        &self,
        dir: &std::path::Path,
        flush_interval: Duration,
    ) -> Result<(), StoreError> {
        let store = Arc::new(QuotaStore::open(dir)?);
        *lock(&self.quotas.persistence) = Some(Persistence {
            store,
            flush_interval,
        });
        self.freeze_quotas(false);
        // Another process wrote it meanwhile: write every row again.
        for t in lock(&self.quotas.tracks).iter_mut() {
            t.written = None;
        }
        self.quotas.flush(&self.recs, Write::Reserve)
    }

    fn freeze_quotas(&self, frozen: bool) {
        for t in lock(&self.quotas.tracks).iter() {
            lock(&self.recs[t.limit]).freeze(frozen);
        }
    }

    /// Writes of the quota store that failed since start.
    pub fn store_write_failures(&self) -> u64 {
        self.quotas
            .write_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every quota's usage (what shards hold in leases is counted at
    /// their next tick).
    pub fn quota_usage(&self) -> Vec<QuotaUsage> {
        self.quotas.usage(&self.recs)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        self.wake.stop();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        // Shards have settled their leases: what is handed out is what
        // was spent, and the store gets the exact count.
        if let Err(e) = self.quotas.flush(&self.recs, Write::HandedOut) {
            crate::observe::stderr_line(format_args!("tollgate: {e}"));
        }
    }
}

/// Starts the reconciler for `limits` shared by `shards`; returns it and
/// one shard-side throttle per shard. Quota limits start from the counts
/// in `persistence`'s store, and are written back there.
pub fn start(
    limits: &[LimitSpec],
    shards: usize,
    interval: Duration,
    persistence: Option<Persistence>,
) -> Result<(Coordinator, Vec<ShardThrottle>), StartError> {
    start_with(limits, shards, interval, persistence, None)
}

/// [`start`], continuing the quotas of a predecessor (a reload): a quota
/// with the same name, allowance and period keeps its reconciler and
/// period; the others start from the store.
pub fn start_with(
    limits: &[LimitSpec],
    shards: usize,
    interval: Duration,
    persistence: Option<Persistence>,
    carry: Option<Carry>,
) -> Result<(Coordinator, Vec<ShardThrottle>), StartError> {
    let mut carried = carry.map(|c| c.quotas).unwrap_or_default();
    let mailboxes: Vec<Arc<Mailbox>> = (0..shards)
        .map(|_| Arc::new(Mailbox::new(limits.len())))
        .collect();
    let epoch = crate::clock::now();
    let stored = match &persistence {
        Some(p) => p.store.load()?,
        None => Default::default(),
    };
    let unix = unix_now();
    let mut tracks = Vec::new();
    let recs: Vec<SharedReconciler> = limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let rec = match &l.quota {
                None => Reconciler::new(l.rate, l.burst, shards, 0),
                Some(q) => {
                    let same = carried.remove(&q.name).filter(|(_, _, allowance, period)| {
                        *allowance == l.burst && *period == q.period
                    });
                    if let Some((rec, clock, _, _)) = same {
                        tracks.push(QuotaTrack {
                            limit: i,
                            name: q.name.clone(),
                            allowance: l.burst,
                            period: q.period,
                            clock,
                            written: None,
                        });
                        return rec;
                    }
                    let (clock, used) = restore(q, unix, stored.get(&q.name).copied());
                    tracks.push(QuotaTrack {
                        limit: i,
                        name: q.name.clone(),
                        allowance: l.burst,
                        period: q.period,
                        clock,
                        written: None,
                    });
                    Reconciler::quota(l.burst, used, shards, mono_ns())
                }
            };
            let mut rec = rec;
            if persistence.is_some() {
                // Nothing is handed out before the first mark is written.
                rec.persist();
            }
            if let Some(t) = tracks.iter().find(|t| t.limit == i) {
                rec.set_period(t.clock.start());
            }
            Arc::new(Mutex::new(rec))
        })
        .collect();
    let flush_every = persistence.as_ref().map(|p| p.flush_interval);
    let quotas = Arc::new(Quotas {
        tracks: Mutex::new(tracks),
        persistence: Mutex::new(persistence),
        write_failures: std::sync::atomic::AtomicU64::new(0),
    });
    // Record where every quota stands (a first period, an offset) and its
    // first mark at once.
    quotas.flush(&recs, Write::Reserve)?;
    let wake = Arc::new(Wake::default());
    // First leases before any request arrives.
    tick(&recs, &mailboxes, ns_since(epoch), true);
    let shard_sides = mailboxes
        .iter()
        .map(|m| ShardThrottle {
            leases: vec![ShardLease::default(); limits.len()],
            dry_until: vec![0; limits.len()],
            mailbox: m.clone(),
            recs: recs.clone(),
            epoch,
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            wake: wake.clone(),
            awaiting_mark: vec![false; limits.len()],
            refused_awaiting_mark: false,
        })
        .collect();
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let mut handles = Vec::new();
    let (recs2, quotas2, stop2, wake2) = (recs.clone(), quotas.clone(), stop.clone(), wake.clone());
    handles.push(
        std::thread::Builder::new()
            .name("tollgate-throttle".into())
            .spawn(move || {
                while !wait_stop(&stop2, interval) {
                    if quotas2.roll(&recs2, unix_now()) {
                        // A new period hands out nothing until its mark.
                        wake2.mark();
                    }
                    tick(&recs2, &mailboxes, ns_since(epoch), false);
                }
            })
            .map_err(StartError::Thread)?,
    );
    if let Some(every) = flush_every {
        let (recs2, quotas2, wake2) = (recs.clone(), quotas.clone(), wake.clone());
        let flusher = std::thread::Builder::new()
            .name("tollgate-quota".into())
            .spawn(move || {
                // A failing store is said once a minute (and when it
                // recovers), not at every flush.
                let mut failing: Option<Instant> = None;
                // Every `every`, and at once when a quota's reserve runs
                // low: the next marks.
                while !wake2.wait(every) {
                    match quotas2.flush(&recs2, Write::Reserve) {
                        Err(e) => {
                            if failing.is_none_or(|t| crate::clock::since(t) >= Duration::from_secs(60)) {
                                crate::observe::stderr_line(format_args!(
                                    "tollgate: {e} (counting goes on in memory; retried every {every:?})"
                                ));
                                failing = Some(crate::clock::now());
                            }
                        }
                        Ok(()) if failing.take().is_some() => {
                            crate::observe::stderr_line(format_args!(
                                "tollgate: quota store written again"
                            ));
                        }
                        Ok(()) => {}
                    }
                }
            });
        match flusher {
            Ok(h) => handles.push(h),
            Err(e) => {
                // Stop the reconciler thread before failing.
                drop(Coordinator {
                    stop,
                    wake,
                    handles,
                    recs,
                    quotas,
                    interval,
                });
                return Err(StartError::Thread(e));
            }
        }
    }
    Ok((
        Coordinator {
            stop,
            wake,
            handles,
            recs,
            quotas,
            interval,
        },
        shard_sides,
    ))
}

/// Waits up to `d` for the stop flag; true once it is set.
fn wait_stop(stop: &(Mutex<bool>, Condvar), d: Duration) -> bool {
    let guard = lock(&stop.0);
    let (guard, _) = stop
        .1
        .wait_timeout_while(guard, d, |stopped| !*stopped)
        .unwrap_or_else(|e| e.into_inner());
    *guard
}

/// Why the reconciler could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the throttle reconciler thread: {0}")]
    Thread(std::io::Error),
}

fn ns_since(epoch: Instant) -> u64 {
    u64::try_from(crate::clock::since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// One reconciler tick: reports in, grants out. Each mailbox is locked
/// once to take its reports and once to post its grants. A limit no shard
/// asked for since the last tick is skipped (`all` overrides): it gets no
/// new leases, so with thousands of idle per-key limits a tick costs a
/// scan, and the first request after a quiet spell takes a top-up.
fn tick(recs: &[SharedReconciler], mailboxes: &[Arc<Mailbox>], now: u64, all: bool) {
    let taken: Vec<Vec<Report>> = mailboxes
        .iter()
        .map(|m| {
            let mut inner = lock(&m.inner);
            let fresh = vec![Report::default(); inner.reports.len()];
            std::mem::replace(&mut inner.reports, fresh)
        })
        .collect();
    let mut grants: Vec<Vec<u64>> = vec![vec![0; recs.len()]; mailboxes.len()];
    let mut column = Vec::with_capacity(mailboxes.len());
    for (l, rec) in recs.iter().enumerate() {
        column.clear();
        column.extend(taken.iter().map(|r| r[l]));
        if !all && column.iter().all(|r| r.demand == 0) {
            continue;
        }
        let leases = lock(rec).tick(now, &column);
        for (g, lease) in grants.iter_mut().zip(leases) {
            g[l] = lease;
        }
    }
    for (m, g) in mailboxes.iter().zip(grants) {
        let mut undelivered = Vec::new();
        {
            let mut inner = lock(&m.inner);
            for (l, lease) in g.into_iter().enumerate() {
                if lease == 0 {
                    continue;
                }
                if inner.grants[l] == 0 {
                    inner.grants[l] = lease;
                } else {
                    // The shard has not taken the last grant yet (it has
                    // not ticked): do not stack another on it.
                    undelivered.push((l, lease));
                }
            }
        }
        for (l, lease) in undelivered {
            lock(&recs[l]).take_back(lease);
        }
    }
}

/// How soon a shard asks again for quota held back by a durable mark
/// still being written.
const MARK_RETRY_NS: u64 = 1_000_000;

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
    /// Asks the quota flusher for the next durable mark.
    wake: Arc<Wake>,
    /// Per limit: its last top-up was held back by a durable mark still
    /// being written (the quota is not used up).
    awaiting_mark: Vec<bool>,
    /// The last [`ShardThrottle::check`] refused at such a limit.
    refused_awaiting_mark: bool,
}

impl ShardThrottle {
    /// Checks `levels` (indexes into the configured limits), most specific
    /// first. Returns the position in `levels` of the one that refused, or
    /// `None` when every level admitted. A refused request is charged at no
    /// level: those after the refusing one are not asked, those before it
    /// get their token back.
    pub fn check(&mut self, levels: &[u32]) -> Option<usize> {
        self.refused_awaiting_mark = false;
        for (pos, &l) in levels.iter().enumerate() {
            let l = l as usize;
            let Some(lease) = self.leases.get_mut(l) else {
                continue;
            };
            if lease.try_admit() || self.top_up(l) {
                continue;
            }
            self.refused_awaiting_mark = self.awaiting_mark[l];
            // Refused: the levels before this one get their token back
            // (still counted as lent, so this is exact), so a client
            // refused by its quota does not drain the shared limits.
            for &earlier in &levels[..pos] {
                if let Some(lease) = self.leases.get_mut(earlier as usize) {
                    lease.refund();
                }
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
        let needs_mark = rec.needs_mark();
        self.awaiting_mark[l] = got < MILLI && needs_mark;
        if got < MILLI {
            // A quota waiting for its next durable mark is asked again
            // soon (the mark is an fsync away), not only after a tick.
            let wait = if needs_mark {
                MARK_RETRY_NS
            } else {
                rec.wait_for_token_ns(now)
            };
            self.dry_until[l] = now.saturating_add(wait.min(self.interval_ns));
        }
        drop(rec);
        if needs_mark {
            self.wake.mark();
        }
        lease.grant(got);
        // The request that asked was counted as seen already.
        lease.try_admit_again()
    }

    /// Whether the last [`ShardThrottle::check`] refused at a quota that
    /// is not used up but waits for its next durable mark (an fsync away):
    /// the caller may ask again in a moment rather than refuse.
    pub fn refused_awaiting_mark(&self) -> bool {
        self.refused_awaiting_mark
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
            quota: None,
        }];
        let (coord, mut shards) = start(&limits, 2, Duration::from_millis(5), None).expect("start");
        let t0 = crate::clock::now();
        let mut admitted = 0u64;
        // Offer far more than the limit from both shards for 300 ms.
        while crate::clock::since(t0) < Duration::from_millis(300) {
            for s in shards.iter_mut() {
                s.tick();
                for _ in 0..20 {
                    admitted += u64::from(s.check(&[0]).is_none());
                }
            }
            std::thread::yield_now();
        }
        let elapsed = crate::clock::since(t0).as_secs_f64();
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
    fn quotas_restore_by_period() {
        use crate::throttle::quota::Period;
        let q = QuotaSpec {
            name: "p/k".into(),
            period: Period::Day,
            offset: 10,
        };
        let day = 86_400;
        let now = 1_795_624_800; // 2026-11-25 16:40 UTC
        let today = now - now % day;
        let at = |period_start, used| Some(Stored { period_start, used });
        // Same period: the count continues, the offset is not applied again.
        let (c, used) = restore(&q, now, at(today, 42));
        assert_eq!((c.start(), used), (today, 42));
        // An older period: a new one began while stopped.
        assert_eq!(restore(&q, now, at(today - day, 42)).1, 0);
        // Never seen: the offset counts as used in the first period.
        assert_eq!(restore(&q, now, None).1, 10);
        // The clock went back a day: keep the stored period and count, and
        // roll only when the clock reaches that period's end.
        let (mut c, used) = restore(&q, now - day, at(today, 42));
        assert_eq!((c.start(), used), (today, 42));
        assert!(!c.roll(now - day));
        assert!(!c.roll(now));
        assert!(c.roll(today + day));
    }

    #[test]
    fn a_refusal_refunds_earlier_levels() {
        let limits = [
            LimitSpec {
                rate: 0,
                burst: 3,
                quota: None,
            },
            LimitSpec {
                rate: 0,
                burst: 0,
                quota: None,
            },
        ];
        let (_coord, mut shards) =
            start(&limits, 1, Duration::from_millis(5), None).expect("start");
        let s = &mut shards[0];
        s.tick();
        // Level 1 refuses every request; level 0 is asked first each time
        // but keeps its three tokens.
        for _ in 0..10 {
            assert_eq!(s.check(&[0, 1]), Some(1));
        }
        let mut ok = 0;
        for _ in 0..10 {
            ok += u32::from(s.check(&[0]).is_none());
        }
        assert_eq!(ok, 3);
    }

    #[test]
    fn a_refusal_does_not_charge_later_levels() {
        let limits = [
            LimitSpec {
                rate: 0,
                burst: 0,
                quota: None,
            },
            LimitSpec {
                rate: 0,
                burst: 10,
                quota: None,
            },
        ];
        let (_coord, mut shards) =
            start(&limits, 1, Duration::from_millis(5), None).expect("start");
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
