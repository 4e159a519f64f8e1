//! Starting shards: one glommio executor per configured core, each with
//! its own SO_REUSEPORT listening sockets, and stopping them.
//!
//! Before anything starts, [`preflight`] checks that io_uring can be used
//! here (kernel switch, seccomp, locked-memory limit), so a host that cannot
//! run tollgate gets a one-line cause and fix instead of a panic.

mod preflight;

pub use preflight::{memlock_limit_kib, preflight, probe_ring, PreflightError};

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cache::Cache;
use crate::config::Snapshot;
use crate::observe::counters::{Counters, Level};
use crate::server::{self, shard::Guards, Shard};
use crate::throttle::{
    self,
    client_ip::ClientIpTable,
    store::QuotaStore,
    sync::{Coordinator, LimitSpec, Persistence, QuotaSpec, QuotaUsage, ShardThrottle},
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
    stop: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
    /// The throttle reconciler thread; stops when the gateway is dropped.
    throttle: Option<Coordinator>,
    counters: Vec<Arc<Counters>>,
    snapshot: Arc<Snapshot>,
    cache: Option<Arc<Cache>>,
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
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A handle that can ask the gateway to stop from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Asks every shard to stop accepting and drain.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Refusals so far, by level and by route.
    pub fn refusals(&self) -> Refusals {
        let by_level = Level::ALL
            .iter()
            .map(|&l| (l, self.counters.iter().map(|c| c.level(l)).sum()))
            .collect();
        let by_route = self
            .snapshot
            .route_counters
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), self.counters.iter().map(|c| c.route(i)).sum()))
            .filter(|(_, n)| *n > 0)
            .collect();
        Refusals { by_level, by_route }
    }

    /// Refusals at `level`, per shard.
    pub fn refusals_by_shard(&self, level: Level) -> Vec<u64> {
        self.counters.iter().map(|c| c.level(level)).collect()
    }

    /// The shared response cache (flush it, read its size), if any
    /// stage caches.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }

    /// Cache hits and misses per route (`api/stage METHOD /path`), routes
    /// with lookups only.
    pub fn cache_counts(&self) -> Vec<(String, u64, u64)> {
        self.snapshot
            .route_counters
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (h, m) = self
                    .counters
                    .iter()
                    .map(|c| c.cache(i))
                    .fold((0, 0), |(a, b), (h, m)| (a + h, b + m));
                (name.clone(), h, m)
            })
            .filter(|(_, h, m)| h + m > 0)
            .collect()
    }

    /// Every usage-plan quota: used and remaining this period, per key.
    pub fn quota_usage(&self) -> Vec<QuotaUsage> {
        self.throttle
            .as_ref()
            .map(Coordinator::quota_usage)
            .unwrap_or_default()
    }

    /// Waits until every shard has finished.
    pub fn join(self) {
        for h in self.shards {
            let _ = h.join();
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

/// Opens the listening sockets and starts one shard per configured core.
pub fn start(snapshot: Arc<Snapshot>) -> Result<Gateway, StartError> {
    let rt = snapshot.server.runtime;
    preflight(snapshot.server.cores.len(), rt.io_memory)?;
    raise_nofile_limit();
    let cores = snapshot.server.cores.clone();
    let mut per_shard: Vec<Vec<std::net::TcpListener>> = cores.iter().map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for l in &snapshot.server.listeners {
        let mut addr = l.addr;
        for (i, sockets) in per_shard.iter_mut().enumerate() {
            let sock = bind(addr, l.backlog).map_err(|source| StartError::Bind { addr, source })?;
            if i == 0 {
                // Port 0: every shard binds the port the first one got.
                addr = sock
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
            }
            sockets.push(sock);
        }
        addrs.push(addr);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let drain = snapshot.server.timeouts.drain;
    // One reconciler thread for every throttle limit, if there are any.
    let (coordinator, mut throttles) = start_reconciler(&snapshot, cores.len())?;
    throttles.resize_with(cores.len(), || None);
    let client_ip = snapshot.client_ip.map(|c| {
        (
            Arc::new(ClientIpTable::new(c.rate, c.burst, c.max_clients)),
            std::time::Instant::now(),
        )
    });
    let cache = snapshot
        .cache
        .as_ref()
        .map(|c| Cache::new(c.capacity, c.max_entry, c.segments, c.token, c.lock_timeout));
    let counters: Vec<Arc<Counters>> = cores
        .iter()
        .map(|_| Arc::new(Counters::new(snapshot.route_counters.len())))
        .collect();
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
        };
        let stop_flag = stop.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("tollgate-{i}"))
            .io_memory(rt.io_memory)
            .ring_depth(rt.ring_depth)
            .spin_before_park(rt.spin_before_park)
            .preempt_timer(rt.preempt_timer)
            .spawn(move || async move {
                let shard = Rc::new(Shard::new(i, snap, guards));
                server::run_shard(shard, listeners, stop_flag, drain).await;
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
    Ok(Gateway {
        shards,
        stop,
        addrs,
        throttle: coordinator,
        counters,
        snapshot,
        cache,
    })
}

/// Starts the throttle reconciler for the snapshot's limits (none: no
/// thread), opening the quota store if there are quotas.
#[allow(clippy::type_complexity)]
fn start_reconciler(
    snapshot: &Snapshot,
    shards: usize,
) -> Result<(Option<Coordinator>, Vec<Option<ShardThrottle>>), StartError> {
    if snapshot.limits.is_empty() {
        return Ok((None, Vec::new()));
    }
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
        specs[q.limit as usize].quota = Some(QuotaSpec {
            name: q.name.clone(),
            period: q.period,
            offset: q.offset,
        });
    }
    let persistence = if snapshot.quotas.is_empty() {
        None
    } else {
        let store =
            QuotaStore::open(&snapshot.state_dir).map_err(|e| StartError::Throttle(e.into()))?;
        Some(Persistence {
            store,
            flush_interval: snapshot.quota_flush_interval,
        })
    };
    let (c, t) = throttle::sync::start(&specs, shards, snapshot.sync_interval, persistence)?;
    Ok((Some(c), t.into_iter().map(Some).collect()))
}

/// Raises the soft open-files limit to the hard limit: every client and
/// backend connection is a descriptor, and the soft default (often 1024)
/// is far below what an edge gateway holds. What the hard limit allows is
/// the operator's decision (LimitNOFILE= in tuning/tollgate.service).
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct at the
    // pointer given, which points at `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A listening socket with SO_REUSEPORT and the configured backlog (glommio's
/// own `bind` hard-codes 1024).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, so
    // responses are never held back by Nagle and no per-connection
    // setsockopt is needed.
    sock.set_nodelay(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Non-blocking, so glommio's speculative accept needs no fcntl calls
    // (vendor/glommio/TOLLGATE-PATCH.md, change 3).
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(sock.into())
}
