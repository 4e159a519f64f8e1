//! Starting shards: one glommio executor per configured core, each with
//! its own SO_REUSEPORT listening sockets, and stopping them.
//!
//! Before anything starts, [`preflight`] checks that io_uring can be used
//! here (kernel switch, seccomp, locked-memory limit), so a host that cannot
//! run tollgate gets a one-line cause and fix instead of a panic.

mod listen;
mod preflight;
mod reload;
mod upgrade;
pub mod watch;

pub use preflight::{memlock_limit_kib, preflight, probe_ring, PreflightError};
pub use reload::{ReloadError, ReloadReport};
pub use upgrade::{Inherited, UpgradeError};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use listen::{bind_shards, inherit_or_bind, raise_nofile_limit};

use crate::cache::Cache;
use crate::config::Snapshot;
use crate::observe::access_log::{AccessLog, Destination, ShardLog};
use crate::observe::counters::{Counters, Level};
use crate::observe::metrics::Registry;
use crate::observe::stderr_line;
use crate::server::{self, shard::Guards, Mailbox, Shard};
use crate::throttle::{
    self,
    client_ip::ClientIpTable,
    store::QuotaStore,
    sync::{Carry, Coordinator, LimitSpec, Persistence, QuotaSpec, QuotaUsage, ShardThrottle},
};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Throttle(#[from] throttle::sync::StartError),
    #[error("cannot open access log {dest}: {source}")]
    AccessLog {
        dest: String,
        source: std::io::Error,
    },
    #[error("cannot start shard {shard} on core {core}: {reason}")]
    Shard {
        shard: usize,
        core: usize,
        reason: String,
    },
}

/// A running gateway.
pub struct Gateway {
    shards: Vec<ExecutorJoinHandle<()>>,
    control: Arc<Control>,
}

/// Requests refused by the guards, summed over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusals {
    /// Per level, in [`Level::ALL`] order.
    pub by_level: Vec<(Level, u64)>,
    /// Per route (`api/stage METHOD /path`), routes with refusals only.
    pub by_route: Vec<(String, u64)>,
}

impl Gateway {
    /// Bound addresses, one per configured listener (ports resolved).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.control.addrs()
    }

    /// The handle the admin listener and signal handlers use: reload,
    /// metrics, status, cache flushes, stop.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// A handle that can ask the gateway to stop from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.control.stop.clone())
    }

    /// Asks every shard to stop accepting and drain.
    pub fn stop(&self) {
        self.control.stop.store(true, Ordering::Release);
    }

    /// Refusals so far, by level and by route.
    pub fn refusals(&self) -> Refusals {
        self.control.refusals()
    }

    /// Refusals at `level`, per shard.
    pub fn refusals_by_shard(&self, level: Level) -> Vec<u64> {
        self.control
            .counters
            .iter()
            .map(|c| c.level(level))
            .collect()
    }

    /// The shared response cache (flush it, read its size), if any
    /// stage caches.
    pub fn cache(&self) -> Option<&Cache> {
        self.control.cache.as_deref()
    }

    /// Cache hits and misses per route (`api/stage METHOD /path`), routes
    /// with lookups only.
    pub fn cache_counts(&self) -> Vec<(String, u64, u64)> {
        self.control.cache_counts()
    }

    /// Every usage-plan quota: used and remaining this period, per key.
    pub fn quota_usage(&self) -> Vec<QuotaUsage> {
        self.control.quota_usage()
    }

    /// Waits until every shard has finished.
    pub fn join(self) {
        for h in self.shards {
            let _ = h.join();
        }
        // The last quota flush, after every shard settled its leases;
        // access log writers write what the shards handed over, then stop.
        let mut st = self.control.state();
        // Parts a reload retired while a shard was late: their writers
        // write what they hold; the retired reconciler no longer persists.
        st.lingering.clear();
        st.throttle = None;
        for (_, l) in std::mem::take(&mut st.logs) {
            l.stop();
            st.retired_log_counts.0 += l.written();
            st.retired_log_counts.1 += l.dropped();
        }
    }
}

/// Cloneable stop switch.
#[derive(Clone)]
pub struct Stopper(Arc<AtomicBool>);

impl Stopper {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// One listening address as configured and as bound (port 0 resolved),
/// with the descriptor of each shard's socket on it (handed to a
/// successor at a binary upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    configured: SocketAddr,
    bound: SocketAddr,
    fds: Vec<std::os::fd::RawFd>,
}

impl Bound {
    fn new(configured: SocketAddr, socks: &[(SocketAddr, std::net::TcpListener)]) -> Bound {
        use std::os::fd::AsRawFd;
        Bound {
            configured,
            bound: socks.first().map_or(configured, |(a, _)| *a),
            fds: socks.iter().map(|(_, s)| s.as_raw_fd()).collect(),
        }
    }
}

/// What a reload may replace, under one lock (reloads run one at a time).
struct State {
    snapshot: Arc<Snapshot>,
    generation: u64,
    loaded_at: SystemTime,
    listeners: Vec<Bound>,
    throttle: Option<Coordinator>,
    limit_specs: (Vec<LimitSpec>, std::time::Duration),
    client_ip: Option<(Arc<ClientIpTable>, Instant)>,
    /// Access log writers, indexed like the snapshot's `log_destinations`.
    logs: Vec<(Destination, Arc<AccessLog>)>,
    /// Lines written and dropped by writers a reload retired.
    retired_log_counts: (u64, u64),
    /// What a reload replaced while some shard had not switched yet in
    /// time (kept alive until every shard has).
    lingering: Vec<Box<dyn std::any::Any + Send>>,
    reloads: u64,
    failed_reloads: u64,
    last_error: Option<String>,
}

/// The running gateway as other threads see it: the admin listener,
/// signal handlers, tests. Nothing here is touched on the request path
/// except the per-shard mailboxes, which shards look at on their tick.
pub struct Control {
    stop: Arc<AtomicBool>,
    registry: Registry,
    counters: Vec<Arc<Counters>>,
    mailboxes: Vec<Arc<Mailbox>>,
    cache: Option<Arc<Cache>>,
    cores: Vec<usize>,
    started: SystemTime,
    state: Mutex<State>,
    /// Where `reload_from_source` reads the configuration.
    source: Mutex<Option<(PathBuf, Option<PathBuf>)>>,
    /// The command that started this process (for a binary upgrade).
    command: Mutex<Option<(PathBuf, Vec<std::ffi::OsString>)>>,
    /// A binary upgrade is under way (reloads wait).
    upgrading: AtomicBool,
}

/// Figures for `GET /status`.
#[derive(Debug, Clone)]
pub struct Status {
    pub version: &'static str,
    pub started: SystemTime,
    pub uptime: std::time::Duration,
    pub cores: Vec<usize>,
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub listeners: Vec<SocketAddr>,
    pub reloads: u64,
    pub failed_reloads: u64,
    pub last_error: Option<String>,
    pub source: Option<PathBuf>,
}

impl Control {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration new requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state().snapshot.clone()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.state().listeners.iter().map(|b| b.bound).collect()
    }

    /// Asks every shard to stop accepting and drain.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The metric registry and every shard's counters.
    pub fn metrics(&self) -> (&Registry, &[Arc<Counters>]) {
        (&self.registry, &self.counters)
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }

    /// Access log lines written and dropped, every destination.
    pub fn access_log_counts(&self) -> (u64, u64) {
        let st = self.state();
        st.logs
            .iter()
            .fold(st.retired_log_counts, |(w, d), (_, l)| {
                (w + l.written(), d + l.dropped())
            })
    }

    /// Reopens every access log file (SIGUSR1, after logrotate moved it).
    pub fn reopen_logs(&self) {
        for (_, l) in &self.state().logs {
            l.reopen();
        }
    }

    /// Whether [`Control::set_source`] named a configuration file.
    pub fn has_source(&self) -> bool {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Remembers the files `reload_from_source` reads.
    pub fn set_source(&self, config: PathBuf, profile: Option<PathBuf>) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some((config, profile));
    }

    /// Remembers the executable and arguments a binary upgrade starts.
    pub fn set_command(&self, exe: PathBuf, args: Vec<std::ffi::OsString>) {
        *self.command.lock().unwrap_or_else(|p| p.into_inner()) = Some((exe, args));
    }

    /// Binary upgrade: starts the executable at the path this process was
    /// started from (the new binary, once it was replaced there) with the
    /// same arguments, hands it every listening socket and `admin` and the
    /// quota store (closed here after a last write; quotas the two
    /// processes count while both serve are each counted from that write),
    /// and waits up to `wait` until it serves. Returns its pid; the caller
    /// then drains this process. On failure this process keeps serving and
    /// takes the store back.
    pub fn upgrade(
        &self,
        admin: Option<std::os::fd::RawFd>,
        wait: std::time::Duration,
    ) -> Result<u32, UpgradeError> {
        let (exe, args) = self
            .command
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(UpgradeError::Spawn {
                exe: "(unknown)".into(),
                source: std::io::Error::other("started without a command line"),
            })?;
        if self.stopping() {
            return Err(UpgradeError::Stopping);
        }
        // No reload until this upgrade is over: the quota store is handed
        // back and forth, and a draining process must not start another.
        if self.upgrading.swap(true, Ordering::AcqRel) {
            return Err(UpgradeError::Busy);
        }
        let result = self.upgrade_locked(admin, wait, &exe, &args);
        self.upgrading.store(false, Ordering::Release);
        result
    }

    fn upgrade_locked(
        &self,
        admin: Option<std::os::fd::RawFd>,
        wait: std::time::Duration,
        exe: &std::path::Path,
        args: &[std::ffi::OsString],
    ) -> Result<u32, UpgradeError> {
        // Under the state lock (no reload changes listeners meanwhile) only
        // until the child holds its copies of the sockets.
        let (successor, released, state_dir) = {
            let st = self.state();
            if self.stopping() {
                return Err(UpgradeError::Stopping);
            }
            let listeners: Vec<(SocketAddr, Vec<std::os::fd::RawFd>)> = st
                .listeners
                .iter()
                .map(|b| (b.bound, b.fds.clone()))
                .collect();
            let released = match st.throttle.as_ref().map(Coordinator::release_store) {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    stderr_line(format_args!("tollgate: upgrade: quota store: {e}"));
                    None
                }
                None => None,
            };
            let spawned = upgrade::spawn_successor(exe, args, &listeners, admin);
            (spawned, released, st.snapshot.state_dir.clone())
        };
        let result = successor.and_then(|s| s.wait_ready(wait));
        if result.is_err() {
            if let Some(every) = released {
                let st = self.state();
                if let Some(Err(e)) = st
                    .throttle
                    .as_ref()
                    .map(|c| c.reacquire_store(&state_dir, every))
                {
                    stderr_line(format_args!("tollgate: quota store: {e}"));
                }
            }
        }
        result
    }

    pub fn status(&self) -> Status {
        let st = self.state();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            started: self.started,
            uptime: crate::clock::wall_since(self.started),
            cores: self.cores.clone(),
            generation: st.generation,
            loaded_at: st.loaded_at,
            listeners: st.listeners.iter().map(|b| b.bound).collect(),
            reloads: st.reloads,
            failed_reloads: st.failed_reloads,
            last_error: st.last_error.clone(),
            source: self
                .source
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|(c, _)| c.clone()),
        }
    }

    pub fn refusals(&self) -> Refusals {
        let snap = self.snapshot();
        let by_level = Level::ALL
            .iter()
            .map(|&l| (l, self.counters.iter().map(|c| c.level(l)).sum()))
            .collect();
        let by_route = snap
            .route_labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let id = snap.metric_id(i as u32);
                let n = self.counters.iter().map(|c| c.route(id).refused).sum();
                (l.name(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Refusals { by_level, by_route }
    }

    pub fn cache_counts(&self) -> Vec<(String, u64, u64)> {
        let snap = self.snapshot();
        snap.route_labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let id = snap.metric_id(i as u32);
                let (h, m) = self
                    .counters
                    .iter()
                    .map(|c| c.route(id))
                    .fold((0, 0), |(h, m), t| (h + t.cache_hits, m + t.cache_misses));
                (l.name(), h, m)
            })
            .filter(|(_, h, m)| h + m > 0)
            .collect()
    }

    pub fn quota_usage(&self) -> Vec<QuotaUsage> {
        self.state()
            .throttle
            .as_ref()
            .map(Coordinator::quota_usage)
            .unwrap_or_default()
    }

    /// Failed writes of the quota store (the running coordinator's).
    pub fn quota_store_write_failures(&self) -> u64 {
        self.state()
            .throttle
            .as_ref()
            .map_or(0, Coordinator::store_write_failures)
    }
}

/// Opens the listening sockets and starts one shard per configured core.
pub fn start(snapshot: Arc<Snapshot>) -> Result<Gateway, StartError> {
    start_with(snapshot, &mut Inherited::default())
}

/// [`start`], taking listening sockets from a predecessor where it handed
/// some over for a listen address (a binary upgrade).
pub fn start_with(
    snapshot: Arc<Snapshot>,
    inherited: &mut Inherited,
) -> Result<Gateway, StartError> {
    let rt = snapshot.server.runtime;
    preflight(snapshot.server.cores.len(), rt.io_memory)?;
    raise_nofile_limit();
    let cores = snapshot.server.cores.clone();
    let mut per_shard: Vec<Vec<(SocketAddr, std::net::TcpListener)>> =
        cores.iter().map(|_| Vec::new()).collect();
    let mut listeners = Vec::new();
    for l in &snapshot.server.listeners {
        let socks = inherit_or_bind(l, cores.len(), inherited.take(l.addr))
            .map_err(|(addr, source)| StartError::Bind { addr, source })?;
        listeners.push(Bound::new(l.addr, &socks));
        // Each shard takes every shards-th socket (more than one when the
        // predecessor had more shards).
        // Shards know a listener by its configured address (its TLS
        // settings are looked up by it).
        for (i, (_, s)) in socks.into_iter().enumerate() {
            per_shard[i % cores.len()].push((l.addr, s));
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let drain = snapshot.server.timeouts.drain;
    // One reconciler thread for every throttle limit, if there are any.
    let (coordinator, mut throttles) =
        start_reconciler(&snapshot, cores.len(), None, None, inherited.is_successor())?;
    throttles.resize_with(cores.len(), || None);
    let client_ip = snapshot.client_ip.map(|c| {
        (
            Arc::new(ClientIpTable::new(c.rate, c.burst, c.max_clients)),
            crate::clock::now(),
        )
    });
    let cache = snapshot
        .cache
        .as_ref()
        .map(|c| Cache::new(c.capacity, c.max_entry, c.segments, c.token, c.lock_timeout));
    let logs = open_logs(&snapshot.log_destinations, &[])?;
    let registry = Registry::new();
    let _ = snapshot
        .metric_ids
        .set(registry.assign(&snapshot.route_labels));
    let counters: Vec<Arc<Counters>> = cores
        .iter()
        .map(|_| {
            let c = Arc::new(Counters::new());
            c.ensure(registry.len());
            c
        })
        .collect();
    let mailboxes: Vec<Arc<Mailbox>> = cores.iter().map(|_| Arc::new(Mailbox::default())).collect();
    let control = Arc::new(Control {
        stop: stop.clone(),
        registry,
        counters: counters.clone(),
        mailboxes: mailboxes.clone(),
        cache: cache.clone(),
        cores: cores.clone(),
        started: crate::clock::wall(),
        state: Mutex::new(State {
            snapshot: snapshot.clone(),
            generation: 0,
            loaded_at: crate::clock::wall(),
            listeners,
            throttle: coordinator,
            limit_specs: (limit_specs(&snapshot), snapshot.sync_interval),
            client_ip: client_ip.clone(),
            logs: logs.clone(),
            retired_log_counts: (0, 0),
            lingering: Vec::new(),
            reloads: 0,
            failed_reloads: 0,
            last_error: None,
        }),
        source: Mutex::new(None),
        command: Mutex::new(None),
        upgrading: AtomicBool::new(false),
    });
    let mut shards = Vec::new();
    for (i, ((core, listeners), throttle)) in cores
        .iter()
        .copied()
        .zip(per_shard)
        .zip(throttles)
        .enumerate()
    {
        let snap = snapshot.clone();
        let guards = Guards {
            throttle,
            client_ip: client_ip.clone(),
            counters: counters[i].clone(),
            cache: cache.clone(),
            logs: shard_logs(&logs),
        };
        let stop_flag = stop.clone();
        let mailbox = mailboxes[i].clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("tollgate-{i}"))
            .io_memory(rt.io_memory)
            .ring_depth(rt.ring_depth)
            .spin_before_park(rt.spin_before_park)
            .preempt_timer(rt.preempt_timer)
            .spawn(move || async move {
                let shard = Rc::new(Shard::new(i, snap, guards));
                server::run_shard(shard, listeners, stop_flag, drain, mailbox).await;
            })
            .map_err(|e| StartError::Shard {
                shard: i,
                core,
                reason: e.to_string(),
            });
        match handle {
            Ok(h) => shards.push(h),
            Err(e) => {
                stop.store(true, Ordering::Release);
                for h in shards {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    watch::spawn(&control);
    Ok(Gateway { shards, control })
}

/// One shard's buffers for every writer.
fn shard_logs(logs: &[(Destination, Arc<AccessLog>)]) -> Vec<(Destination, ShardLog)> {
    logs.iter()
        .map(|(d, l)| (d.clone(), l.shard_buffer()))
        .collect()
}

/// Opens the quota store; a binary upgrade's successor retries for up to
/// 3 s while its predecessor releases it.
fn open_store(dir: &std::path::Path, retry: bool) -> Result<QuotaStore, StartError> {
    if !retry {
        return QuotaStore::open(dir).map_err(|e| StartError::Throttle(e.into()));
    }
    let deadline = crate::clock::now() + std::time::Duration::from_secs(3);
    loop {
        match QuotaStore::open(dir) {
            Ok(s) => return Ok(s),
            Err(e) if crate::clock::now() >= deadline => {
                return Err(StartError::Throttle(e.into()))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// Access log writers for `dests`, reusing those in `existing`.
fn open_logs(
    dests: &[Destination],
    existing: &[(Destination, Arc<AccessLog>)],
) -> Result<Vec<(Destination, Arc<AccessLog>)>, StartError> {
    dests
        .iter()
        .map(|d| {
            if let Some((_, l)) = existing.iter().find(|(e, _)| e == d) {
                return Ok((d.clone(), l.clone()));
            }
            AccessLog::start(d.clone(), LOG_QUEUE_BATCHES)
                .map(|l| (d.clone(), l))
                .map_err(|source| StartError::AccessLog {
                    dest: match d {
                        Destination::Stdout => "stdout".into(),
                        Destination::File(p) => p.display().to_string(),
                    },
                    source,
                })
        })
        .collect()
}

/// Batches (up to 64 KiB each) queued per access log writer before
/// shards keep lines in their own buffers.
const LOG_QUEUE_BATCHES: usize = 64;

/// Every limit the snapshot configures, in its index order.
fn limit_specs(snapshot: &Snapshot) -> Vec<LimitSpec> {
    let mut specs: Vec<LimitSpec> = snapshot
        .limits
        .iter()
        .map(|l| LimitSpec {
            rate: l.rate,
            burst: l.burst,
            quota: None,
        })
        .collect();
    for q in &snapshot.quotas {
        if let Some(s) = specs.get_mut(q.limit as usize) {
            s.quota = Some(QuotaSpec {
                name: q.name.clone(),
                period: q.period,
                offset: q.offset,
            });
        }
    }
    specs
}

/// Starts the throttle reconciler for the snapshot's limits (none: no
/// thread), with the quota store (`store` when a predecessor has it open)
/// and a predecessor's quotas to continue (`carry`).
#[allow(clippy::type_complexity)]
fn start_reconciler(
    snapshot: &Snapshot,
    shards: usize,
    carry: Option<Carry>,
    store: Option<Arc<QuotaStore>>,
    successor: bool,
) -> Result<(Option<Coordinator>, Vec<Option<ShardThrottle>>), StartError> {
    if snapshot.limits.is_empty() {
        return Ok((None, Vec::new()));
    }
    let specs = limit_specs(snapshot);
    let persistence = if snapshot.quotas.is_empty() {
        None
    } else {
        let store = match store {
            Some(s) => s,
            None => Arc::new(open_store(&snapshot.state_dir, successor)?),
        };
        Some(Persistence {
            store,
            flush_interval: snapshot.quota_flush_interval,
        })
    };
    let (c, t) =
        throttle::sync::start_with(&specs, shards, snapshot.sync_interval, persistence, carry)?;
    Ok((Some(c), t.into_iter().map(Some).collect()))
}
