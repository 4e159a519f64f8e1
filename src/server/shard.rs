//! State one shard owns: its current configuration, backend pools, request
//! id generator, cached Date header, open connections and counters. Shared
//! only within the shard's thread (`Rc`, `Cell`), so nothing here is a lock
//! or an atomic on the request path.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use super::buf::ReadBuf;
use crate::cache::Cache;
use crate::config::Resolved;
use crate::config::Snapshot;
use crate::http::Header;
use crate::observe::access_log::{Destination, ShardLog};
use crate::observe::counters::{Counters, Level};
use crate::throttle::client_ip::ClientIpTable;
use crate::throttle::quota::Period;
use crate::throttle::sync::ShardThrottle;
use crate::upstream::Pool;

/// Working memory a connection holds only while it has a request in
/// progress; idle connections return it to their shard's pool, which keeps
/// an idle keep-alive connection down to its task and socket.
pub struct Buffers {
    pub rbuf: ReadBuf,
    pub wbuf: BytesMut,
    pub ubuf: BytesMut,
    pub req_headers: Vec<Header>,
    pub resp_headers: Vec<Header>,
}

/// Most buffer sets a shard keeps for reuse (about 9 KiB each).
const MAX_POOLED_BUFFERS: usize = 1024;
/// Buffers grown beyond this by a large message are not pooled.
const MAX_POOLED_CAPACITY: usize = 64 * 1024;

/// Why a guard refused a request, and when the client may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub level: Level,
    /// Seconds, for `Retry-After` on a 429: 1 for a throttle (tokens
    /// refill within a second), the time to the next period for a quota.
    pub retry_after: u64,
    /// A quota not used up whose next durable mark is being written: ask
    /// again in a moment (not counted as a refusal yet).
    pub awaiting_mark: bool,
}

/// Seconds from `now` (Unix seconds) until `period`'s next start (at
/// least 1).
fn seconds_until_next(period: Period, now: u64) -> u64 {
    period.next_start(now).saturating_sub(now).max(1)
}

/// The shard's part of the gateway-wide request guards.
pub struct Guards {
    /// This shard's leases of every limit (None: no limits).
    pub throttle: Option<ShardThrottle>,
    /// The shared per-client-IP table and the epoch its clock counts from.
    pub client_ip: Option<(Arc<ClientIpTable>, Instant)>,
    /// This shard's refusal counters (read by other threads).
    pub counters: Arc<Counters>,
    /// The shared response cache, if any stage caches.
    pub cache: Option<Arc<Cache>>,
    /// This shard's buffer for each access log destination, in the order
    /// of [`Snapshot::log_destinations`].
    pub logs: Vec<(Destination, ShardLog)>,
}

impl Guards {
    /// No limits at all (tests, or a configuration without any).
    pub fn none() -> Guards {
        Guards {
            throttle: None,
            client_ip: None,
            counters: Arc::new(Counters::new()),
            cache: None,
            logs: Vec::new(),
        }
    }
}

/// Whether a connection waits for a new request, and until when.
///
/// Keep-alive timeouts are enforced by the shard's tick
/// ([`Shard::expire_idle`]) rather than a timer per wait: a busy shard would
/// otherwise create and cancel a timer for every request.
#[derive(Debug)]
pub struct IdleState {
    pub idle: Cell<bool>,
    pub deadline: Cell<Instant>,
    /// No request has arrived yet: the client has just connected and its
    /// first request may be on its way (see [`Shard::begin_drain`]).
    pub fresh: Cell<bool>,
}

impl IdleState {
    pub fn new(now: Instant) -> IdleState {
        IdleState {
            idle: Cell::new(false),
            deadline: Cell::new(now),
            fresh: Cell::new(true),
        }
    }
}

/// At shutdown, a connection accepted but still waiting for its first
/// request gets this long for it (then it is closed like an idle one).
pub(super) const FRESH_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A backend read that must end by `deadline`.
struct WaitSlot {
    fd: RawFd,
    deadline: Instant,
    expired: bool,
}

/// Unwatches a backend read when dropped (also when its future is).
pub struct BackendWatch<'a> {
    shard: &'a Shard,
    slot: usize,
}

impl BackendWatch<'_> {
    /// Whether the tick shut the read down (its deadline passed): the
    /// read's outcome is then a timeout, whatever it returned, and the
    /// connection must not be used again.
    pub fn fired(&self) -> bool {
        self.shard
            .waits
            .borrow()
            .get(self.slot)
            .and_then(Option::as_ref)
            .is_some_and(|w| w.expired)
    }
}

impl Drop for BackendWatch<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.shard.waits.borrow_mut().get_mut(self.slot) {
            *s = None;
            self.shard.free_waits.borrow_mut().push(self.slot);
        }
    }
}

/// A connection known to the shard, for keep-alive expiry and draining.
struct ConnSlot {
    fd: RawFd,
    idle: Rc<IdleState>,
}

pub struct Shard {
    pub id: usize,
    /// `Rc` around the shared `Arc`: a request clones the shard-local `Rc`
    /// (a plain increment) instead of the `Arc` (an atomic that every
    /// shard would contend on).
    #[allow(clippy::redundant_allocation)]
    snapshot: RefCell<Rc<Arc<Snapshot>>>,
    pub pool: Pool,
    draining: Cell<bool>,
    rng: Cell<u64>,
    date_secs: Cell<u64>,
    /// The shard's clock, advanced by its tick (25 ms resolution): good
    /// enough for keep-alive deadlines, free to read.
    coarse_now: Cell<Instant>,
    date: RefCell<[u8; 29]>,
    conns: RefCell<Vec<Option<ConnSlot>>>,
    free_slots: RefCell<Vec<usize>>,
    /// Backend reads waiting with a deadline (see [`Shard::watch_backend`]).
    waits: RefCell<Vec<Option<WaitSlot>>>,
    free_waits: RefCell<Vec<usize>>,
    buffers: RefCell<Vec<Buffers>>,
    /// This shard's leases of every throttle limit (None: no limits).
    throttle: RefCell<Option<ShardThrottle>>,
    client_ip: RefCell<Option<(Arc<ClientIpTable>, Instant)>>,
    pub counters: Arc<Counters>,
    pub cache: Option<Arc<Cache>>,
    /// The snapshot generation this shard runs.
    generation: Cell<u64>,
    /// Wall clock (Unix ns) and latency clock reading at the last tick:
    /// a request's wall-clock time for its access log line is derived
    /// from its latency clock reading, without a clock_gettime.
    wall_at_tick: Cell<(u64, u64)>,
    /// Access log buffers by destination, in the order of the current
    /// snapshot's `log_destinations` (a request that started on an older
    /// snapshot finds its destination by name).
    pub logs: RefCell<Vec<(Destination, ShardLog)>>,
    /// When the shard last said it is out of descriptors, and last
    /// dropped its idle backend connections for them.
    fd_said: Cell<Option<Instant>>,
    fd_pool_cleared: Cell<Option<Instant>>,
}

/// How often a shard says it is out of descriptors.
const FD_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// How often it drops its idle backend connections for them (not at
/// every failed accept: backend keep-alive would be gone for good).
const FD_POOL_CLEAR_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Idle keep-alive connections closed per failure: enough to let a burst
/// of new clients in, few enough to keep most warm connections.
const RECLAIM_PER_FAILURE: usize = 16;

impl Shard {
    pub fn new(id: usize, snapshot: Arc<Snapshot>, guards: Guards) -> Shard {
        let s = &snapshot.server;
        let pool = Pool::new(s.max_idle_per_backend, s.upstream_idle_timeout);
        let seed = crate::clock::wall()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ ((id as u64 + 1) << 56)
            ^ u64::from(std::process::id()).rotate_left(32);
        let shard = Shard {
            id,
            snapshot: RefCell::new(Rc::new(snapshot)),
            pool,
            draining: Cell::new(false),
            rng: Cell::new(seed | 1),
            date_secs: Cell::new(0),
            coarse_now: Cell::new(crate::clock::now()),
            date: RefCell::new([b' '; 29]),
            conns: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            waits: RefCell::new(Vec::new()),
            free_waits: RefCell::new(Vec::new()),
            buffers: RefCell::new(Vec::new()),
            throttle: RefCell::new(guards.throttle),
            client_ip: RefCell::new(guards.client_ip),
            counters: guards.counters,
            cache: guards.cache,
            generation: Cell::new(0),
            wall_at_tick: Cell::new((0, 0)),
            logs: RefCell::new(guards.logs),
            fd_said: Cell::new(None),
            fd_pool_cleared: Cell::new(None),
        };
        shard.refresh_date();
        shard
    }

    /// Every guard in front of the integration, in order: the client-IP
    /// limit; the API key where the route requires one (403 when missing,
    /// unknown or in no usage plan for the stage); then the throttles,
    /// most specific first — the key's plan, the route, the stage, the
    /// account — and last the key's quota, so a throttled request spends
    /// no quota. A request refused at one level spends nothing at the
    /// levels after it. Returns the refusing level, counted — except a
    /// quota waiting for its next durable mark (`awaiting_mark`), which
    /// the caller asks again with `again` set (the client-IP limit is not
    /// charged twice) and counts with [`Shard::count_refusal`] if it gives
    /// up.
    #[inline]
    pub fn guard(
        &self,
        snap: &Snapshot,
        resolved: Option<&Resolved<'_, '_>>,
        api_key: Option<&[u8]>,
        client: std::net::IpAddr,
        again: bool,
    ) -> Result<(), Refusal> {
        let route = resolved.map(|r| r.metric);
        let refuse = |level| {
            self.counters.refused(level, route);
            Err(Refusal {
                level,
                retry_after: 1,
                awaiting_mark: false,
            })
        };
        if let (Some((table, epoch)), false) = (&*self.client_ip.borrow(), again) {
            // The coarse clock: no clock read per request.
            let since = self.coarse_now().saturating_duration_since(*epoch);
            let now = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
            if !table.check(client, now) {
                return refuse(Level::ClientIp);
            }
        }
        // Levels as limit indexes, with what each is.
        let mut levels = [0u32; 5];
        let mut kinds = [Level::Account; 5];
        let mut n = 0;
        let mut push = |l: Option<u32>, kind: Level| {
            if let Some(l) = l {
                levels[n] = l;
                kinds[n] = kind;
                n += 1;
            }
        };
        let mut quota = None;
        let mut period = None;
        if let Some(r) = resolved {
            if r.stage.key_required.get(r.route as usize) == Some(&true) {
                let plan = api_key
                    .and_then(|k| snap.keys.lookup(k))
                    .and_then(|id| r.stage.key_plans.get(&id));
                let Some(plan) = plan else {
                    return refuse(Level::Forbidden);
                };
                push(plan.throttle, Level::Key);
                quota = plan.quota;
                period = plan.period;
            }
            push(
                r.stage
                    .route_limits
                    .get(r.route as usize)
                    .copied()
                    .flatten(),
                Level::Route,
            );
            push(r.stage.limit, Level::Stage);
        }
        push(snap.account_limit, Level::Account);
        push(quota, Level::Quota);
        if n == 0 {
            return Ok(());
        }
        let (refused, awaiting_mark) = match self.throttle.borrow_mut().as_mut() {
            Some(t) => (t.check(&levels[..n]), t.refused_awaiting_mark()),
            None => (None, false),
        };
        match refused {
            Some(pos) if kinds[pos] == Level::Quota && awaiting_mark => Err(Refusal {
                level: Level::Quota,
                retry_after: 1,
                awaiting_mark: true,
            }),
            Some(pos) if kinds[pos] == Level::Quota => refuse(Level::Quota).map_err(|r| Refusal {
                retry_after: period
                    .map_or(r.retry_after, |p| seconds_until_next(p, self.unix_secs())),
                ..r
            }),
            Some(pos) => refuse(kinds[pos]),
            None => Ok(()),
        }
    }

    /// Counts a refusal [`Shard::guard`] left uncounted (a quota whose
    /// durable mark did not come in time).
    pub fn count_refusal(&self, level: Level, route: Option<u32>) {
        self.counters.refused(level, route);
    }

    /// Switches to a reloaded configuration between requests: new
    /// requests use `swap`'s snapshot, requests in flight finish on the
    /// one they started with. Old throttle leases are settled first, so
    /// what they admitted counts.
    pub fn install(&self, swap: super::Swap) {
        if let Some(throttle) = swap.throttle {
            let mut t = self.throttle.borrow_mut();
            if let Some(old) = t.as_mut() {
                old.tick();
            }
            *t = throttle;
        }
        if let Some(client_ip) = swap.client_ip {
            *self.client_ip.borrow_mut() = client_ip;
        }
        if let Some(logs) = swap.logs {
            // The old buffers hand their lines over as they drop.
            *self.logs.borrow_mut() = logs;
        }
        *self.snapshot.borrow_mut() = Rc::new(swap.snapshot);
        self.generation.set(swap.generation);
    }

    /// The snapshot generation this shard runs.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// The periodic lease exchange with the reconciler.
    pub fn throttle_tick(&self) {
        if let Some(t) = self.throttle.borrow_mut().as_mut() {
            t.tick();
        }
    }

    /// A buffer set for a connection that has work to do.
    pub fn take_buffers(&self) -> Buffers {
        self.buffers.borrow_mut().pop().unwrap_or_else(|| Buffers {
            rbuf: ReadBuf::default(),
            wbuf: BytesMut::with_capacity(4096),
            ubuf: BytesMut::new(),
            req_headers: Vec::with_capacity(32),
            resp_headers: Vec::with_capacity(16),
        })
    }

    /// Takes back the buffers of a connection going idle.
    pub fn give_buffers(&self, mut b: Buffers) {
        if b.wbuf.capacity() > MAX_POOLED_CAPACITY || b.ubuf.capacity() > MAX_POOLED_CAPACITY {
            return;
        }
        b.rbuf.shrink();
        let mut pool = self.buffers.borrow_mut();
        if pool.len() < MAX_POOLED_BUFFERS {
            pool.push(b);
        }
    }

    /// The snapshot new requests use; a request keeps the one it started with.
    #[inline]
    #[allow(clippy::redundant_allocation)]
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        self.snapshot.borrow().clone()
    }

    #[inline]
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts draining: idle keep-alive connections are closed now, busy
    /// ones after their current response. A connection that has not sent
    /// its first request yet gets [`FRESH_GRACE`] for it: the client
    /// connected to send one, which may be in flight, and closing on it
    /// would fail a request that no client may retry.
    pub fn begin_drain(&self) {
        self.draining.set(true);
        let grace = self.coarse_now() + FRESH_GRACE;
        for slot in self.conns.borrow().iter().flatten() {
            if slot.idle.fresh.get() {
                if slot.idle.deadline.get() > grace {
                    slot.idle.deadline.set(grace);
                }
            } else if slot.idle.idle.get() {
                // Wake the pending read with EOF; the connection task then
                // closes normally.
                // SAFETY: shutdown(2) on an fd owned by a live connection
                // task (slots are removed before the stream is dropped).
                unsafe {
                    libc::shutdown(slot.fd, libc::SHUT_RD);
                }
            }
        }
        self.pool.clear();
    }

    /// An accept or a backend connect (`what`) failed for want of
    /// descriptors: count it, say so (at most every 10 s), and free some
    /// ([`Shard::reclaim_idle`]) so the next client or backend gets one.
    /// NGINX logs the error and waits for connections to close; an idle
    /// keep-alive connection can hold its descriptor for the whole
    /// keep-alive timeout.
    pub fn out_of_descriptors(&self, what: &str, e: &std::io::Error) {
        self.counters.accept_fd_exhausted();
        let closed = self.reclaim_idle(RECLAIM_PER_FAILURE);
        let now = self.coarse_now();
        let said = self.fd_said.get();
        if said.is_none_or(|t| now.saturating_duration_since(t) >= FD_LOG_EVERY) {
            self.fd_said.set(Some(now));
            crate::observe::stderr_line(format_args!(
                "tollgate: shard {}: {what} failed: {e}; {} connections open, closing {closed} idle keep-alive ones (raise LimitNOFILE= / ulimit -n; tollgate_accept_fd_exhausted_total counts these)",
                self.id,
                self.open_connections()
            ));
        }
    }

    /// Frees descriptors when accepts fail for want of them: drops the
    /// shard's idle backend connections (at most once a second) and
    /// closes up to `n` idle keep-alive client connections, those idle
    /// longest first (their pending reads end; each task then closes its
    /// socket). Connections still waiting for their first request and
    /// busy ones are left. Returns how many client connections it closed.
    pub fn reclaim_idle(&self, n: usize) -> usize {
        let now = self.coarse_now();
        if self
            .fd_pool_cleared
            .get()
            .is_none_or(|t| now.saturating_duration_since(t) >= FD_POOL_CLEAR_EVERY)
        {
            self.fd_pool_cleared.set(Some(now));
            self.pool.clear();
        }
        let conns = self.conns.borrow();
        let mut idle: Vec<(Instant, RawFd, &IdleState)> = conns
            .iter()
            .flatten()
            .filter(|s| s.idle.idle.get() && !s.idle.fresh.get())
            .map(|s| (s.idle.deadline.get(), s.fd, &*s.idle))
            .collect();
        // Earliest keep-alive deadline = idle longest.
        idle.sort_unstable_by_key(|(deadline, _, _)| *deadline);
        let mut closed = 0;
        for (_, fd, state) in idle.into_iter().take(n) {
            state.idle.set(false);
            // SAFETY: shutdown(2) on an fd owned by a live connection task
            // (slots are removed before the stream is dropped).
            unsafe {
                libc::shutdown(fd, libc::SHUT_RD);
            }
            closed += 1;
        }
        self.counters.idle_reclaimed(closed as u64);
        closed
    }

    /// Connections this shard holds open.
    pub fn open_connections(&self) -> usize {
        self.conns.borrow().iter().flatten().count()
    }

    /// Registers a connection; returns its slot for [`Shard::unregister`].
    pub fn register(&self, fd: RawFd, idle: Rc<IdleState>) -> usize {
        let slot = ConnSlot { fd, idle };
        let mut conns = self.conns.borrow_mut();
        let i = match self.free_slots.borrow_mut().pop() {
            Some(i) => {
                conns[i] = Some(slot);
                i
            }
            None => {
                conns.push(Some(slot));
                conns.len() - 1
            }
        };
        self.counters.connection_opened();
        i
    }

    pub fn unregister(&self, i: usize) {
        if let Some(s) = self.conns.borrow_mut().get_mut(i) {
            *s = None;
            self.free_slots.borrow_mut().push(i);
            self.counters.connection_closed();
        }
    }

    /// A random request id in UUID v4 text form (what Amazon API Gateway's
    /// request ids look like). wyrand: fast and good enough for ids, not
    /// for secrets.
    pub fn request_id(&self, out: &mut [u8; 36]) {
        let a = self.next_u64();
        let b = self.next_u64();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut j = 0;
        for (i, byte) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[j] = b'-';
                j += 1;
            }
            out[j] = HEX[(byte >> 4) as usize];
            out[j + 1] = HEX[(byte & 0xf) as usize];
            j += 2;
        }
    }

    /// A random number from the shard's generator (canary draws): one
    /// multiply, no lock, no syscall.
    #[inline]
    pub(super) fn random_u64(&self) -> u64 {
        self.next_u64()
    }

    fn next_u64(&self) -> u64 {
        let s = self.rng.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.rng.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// The IMF-fixdate for now, formatted at most once a second.
    pub fn with_date<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.date.borrow()[..])
    }

    /// Renders the Date header text if the second changed. Called at the
    /// shard's tick (and at start), not per response: a response's Date
    /// may lag the wall clock by one tick (25 ms) at a second boundary,
    /// and no request pays a clock read for it (NGINX likewise caches its
    /// time per event-loop turn).
    pub fn refresh_date(&self) {
        let now = crate::clock::wall();
        let unix_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.wall_at_tick
            .set((unix_ns, crate::observe::latency_clock().raw()));
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.date_secs.get() {
            let text = httpdate::fmt_http_date(now);
            let mut d = self.date.borrow_mut();
            if text.len() == d.len() {
                d.copy_from_slice(text.as_bytes());
            }
            self.date_secs.set(secs);
        }
    }

    /// Periodic housekeeping: idle backend connections.
    pub fn sweep(&self, now: Instant) {
        self.pool.sweep(now);
    }

    /// Hands buffered access log lines to their writers (at the tick).
    pub fn flush_logs(&self) {
        for (_, l) in self.logs.borrow_mut().iter_mut() {
            l.flush();
        }
    }

    /// Publishes the pool's figures for the metrics endpoint (at the tick).
    pub fn publish_gauges(&self) {
        let g = &self.counters.gauges;
        Counters::set(&g.pool_idle, self.pool.idle_count() as u64);
        Counters::set(&g.pool_opened, self.pool.stats.opened.get());
        Counters::set(&g.pool_reused, self.pool.stats.reused.get());
    }

    /// The wall-clock time of latency clock reading `raw` (one taken since
    /// the last tick or before it).
    pub fn wall_time_of(&self, raw: u64) -> SystemTime {
        let (wall_ns, tick_raw) = self.wall_at_tick.get();
        let clock = crate::observe::latency_clock();
        let wall = if raw >= tick_raw {
            wall_ns
                .saturating_add(u64::try_from(clock.delta(tick_raw, raw).as_nanos()).unwrap_or(0))
        } else {
            wall_ns
                .saturating_sub(u64::try_from(clock.delta(raw, tick_raw).as_nanos()).unwrap_or(0))
        };
        UNIX_EPOCH + std::time::Duration::from_nanos(wall)
    }

    /// Unix seconds at the last tick (the wall clock without a read).
    #[inline]
    pub fn unix_secs(&self) -> u64 {
        self.wall_at_tick.get().0 / 1_000_000_000
    }

    /// The shard's coarse clock (see `coarse_now`).
    #[inline]
    pub fn coarse_now(&self) -> Instant {
        self.coarse_now.get()
    }

    /// Advances the coarse clock and closes keep-alive connections idle past
    /// their deadline: shutting down the read side makes their pending read
    /// return end-of-file, and the connection task closes normally.
    /// Watches a backend read on `fd` that must end by `deadline`: the
    /// shard's tick shuts the socket's read side once it passes, so the
    /// read returns end-of-file and the caller reports a timeout. This
    /// replaces a timer per backend wait (arming and cancelling one cost
    /// io_uring submissions per proxied request); deadlines are kept to
    /// within one tick.
    pub fn watch_backend(&self, fd: RawFd, deadline: Instant) -> BackendWatch<'_> {
        let slot = WaitSlot {
            fd,
            deadline,
            expired: false,
        };
        let mut waits = self.waits.borrow_mut();
        let i = match self.free_waits.borrow_mut().pop() {
            Some(i) => {
                waits[i] = Some(slot);
                i
            }
            None => {
                waits.push(Some(slot));
                waits.len() - 1
            }
        };
        BackendWatch {
            shard: self,
            slot: i,
        }
    }

    pub fn expire_idle(&self, now: Instant) {
        self.coarse_now.set(now);
        self.refresh_date();
        for w in self.waits.borrow_mut().iter_mut().flatten() {
            if !w.expired && w.deadline <= now {
                w.expired = true;
                // SAFETY: shutdown(2) on the fd of a live backend stream:
                // a watch exists only as a local of `read_backend` while it
                // awaits a read on that stream (which it borrows), and
                // unwatches when dropped, also on cancellation, before the
                // stream can be closed.
                unsafe {
                    libc::shutdown(w.fd, libc::SHUT_RD);
                }
            }
        }
        for slot in self.conns.borrow().iter().flatten() {
            if slot.idle.idle.get() && slot.idle.deadline.get() <= now {
                slot.idle.idle.set(false);
                // SAFETY: shutdown(2) on an fd owned by a live connection
                // task (slots are removed before the stream is dropped).
                unsafe {
                    libc::shutdown(slot.fd, libc::SHUT_RD);
                }
            }
        }
    }
}
