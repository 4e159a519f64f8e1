//! Hot reload: a validated snapshot installed in every shard between
//! requests, with listeners, throttles, client-IP table, access logs and
//! metric ids brought along (see docs/architecture.md, "Reload").

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{
    bind_shards, limit_specs, open_logs, shard_logs, start_reconciler, Bound, Control, StartError,
    State,
};
use crate::config::Snapshot;
use crate::observe::access_log::AccessLog;
use crate::observe::stderr_line;
use crate::server::Swap;
use crate::throttle::client_ip::ClientIpTable;
use crate::throttle::sync::{Coordinator, ShardThrottle};

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("no configuration file to reload (started without one)")]
    NoSource,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the gateway is stopping")]
    Stopping,
    #[error("a previous reload has not reached every shard yet; try again")]
    Busy,
}

impl ReloadError {
    /// Every problem as `path: reason` lines.
    pub fn issues(&self) -> Vec<String> {
        match self {
            ReloadError::Config(e) => e.issues().iter().map(ToString::to_string).collect(),
            e => vec![e.to_string()],
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub generation: u64,
    /// Settings that changed but apply only at the next start.
    pub restart_needed: Vec<&'static str>,
    pub listeners_opened: Vec<SocketAddr>,
    pub listeners_closed: Vec<SocketAddr>,
    /// Throttle buckets were rebuilt (their settings changed).
    pub throttle_rebuilt: bool,
    pub warnings: Vec<String>,
}

impl Control {
    /// Loads the configuration file again (with its profile) and applies
    /// it; on any error the running configuration stays.
    pub fn reload_from_source(&self) -> Result<ReloadReport, ReloadError> {
        let source = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ReloadError::NoSource)?;
        let loaded = crate::config::load_with_profile(
            &source.0,
            source.1.as_deref(),
            &crate::config::Host::detect(),
        );
        match loaded {
            Ok(snap) => self.reload(snap),
            Err(e) => {
                let e = ReloadError::Config(e);
                let mut st = self.state();
                st.failed_reloads += 1;
                st.last_error = Some(e.issues().join("; "));
                Err(e)
            }
        }
    }

    /// Applies a validated configuration: every shard switches between
    /// requests (requests in flight finish on the old one), new listen
    /// addresses are opened before anything changes and removed ones
    /// closed, throttles whose settings changed are rebuilt (quotas keep
    /// their counts), and cache entries stay valid (keys name routes by
    /// stable ids; a route pointed at another backend serves its stored
    /// answers until their TTL). Settings that need a restart are
    /// reported, not applied.
    pub fn reload(&self, new: Snapshot) -> Result<ReloadReport, ReloadError> {
        let mut st = self.state();
        let result = self.apply(&mut st, new);
        match &result {
            Ok(_) => {
                st.reloads += 1;
                st.last_error = None;
            }
            Err(e) => {
                st.failed_reloads += 1;
                st.last_error = Some(e.issues().join("; "));
            }
        }
        result
    }

    fn apply(&self, st: &mut State, new: Snapshot) -> Result<ReloadReport, ReloadError> {
        if self.stopping() {
            return Err(ReloadError::Stopping);
        }
        if self.upgrading.load(Ordering::Acquire) {
            return Err(ReloadError::Busy);
        }
        if self
            .mailboxes
            .iter()
            .any(|m| m.applied.load(Ordering::Acquire) < st.generation)
        {
            return Err(ReloadError::Busy);
        }
        // Every shard runs the current generation: nothing replaced
        // earlier is in use any more.
        st.lingering.clear();
        let old = st.snapshot.clone();
        let shards = self.cores.len();
        let mut report = ReloadReport {
            generation: st.generation,
            restart_needed: restart_needed(&old, &new),
            listeners_opened: Vec::new(),
            listeners_closed: Vec::new(),
            throttle_rebuilt: false,
            warnings: new.warnings.iter().map(ToString::to_string).collect(),
        };

        // New listen addresses first: if one cannot be bound, nothing
        // has changed yet.
        let mut opened: Vec<Vec<(SocketAddr, std::net::TcpListener)>> =
            (0..shards).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        for l in &new.server.listeners {
            if let Some(b) = st.listeners.iter().find(|b| b.configured == l.addr) {
                listeners.push(b.clone());
                continue;
            }
            let socks = bind_shards(l, shards)
                .map_err(|(addr, source)| ReloadError::Bind { addr, source })?;
            let b = Bound::new(l.addr, &socks);
            report.listeners_opened.push(b.bound);
            listeners.push(b);
            for (i, (_, s)) in socks.into_iter().enumerate() {
                opened[i].push((l.addr, s));
            }
        }
        let gone: Vec<&Bound> = st
            .listeners
            .iter()
            .filter(|b| !listeners.contains(b))
            .collect();
        report.listeners_closed = gone.iter().map(|b| b.bound).collect();
        // Shards know listeners by their configured address.
        let closed: Vec<SocketAddr> = gone.iter().map(|b| b.configured).collect();

        // Access logs: writers for new destinations (a file that cannot
        // be opened refuses the reload), new shard buffers if the list
        // changed.
        let logs_changed = !st
            .logs
            .iter()
            .map(|(d, _)| d)
            .eq(new.log_destinations.iter());
        let opened_logs = if logs_changed {
            Some(open_logs(&new.log_destinations, &st.logs)?)
        } else {
            None
        };

        // Throttles: kept as they are unless their settings changed (the
        // last step that can fail; nothing has changed before it).
        let specs = (limit_specs(&new), new.sync_interval);
        let mut throttles: Vec<Option<Option<ShardThrottle>>> = (0..shards).map(|_| None).collect();
        let mut retired = None;
        if specs != st.limit_specs {
            // The store as of now, so quotas the successor does not carry
            // over (their allowance or period changed) start from it.
            if let Some(Err(e)) = st.throttle.as_ref().map(Coordinator::flush_quotas) {
                stderr_line(format_args!("tollgate: {e}"));
            }
            let carry = st.throttle.as_ref().map(Coordinator::carry);
            let store = st.throttle.as_ref().and_then(Coordinator::store);
            let (coordinator, sides) = start_reconciler(&new, shards, carry, store, false)?;
            let mut sides = sides.into_iter();
            for slot in throttles.iter_mut() {
                *slot = Some(sides.next().flatten());
            }
            retired = std::mem::replace(&mut st.throttle, coordinator);
            // The retired reconciler writes nothing more: its counts of
            // carried quotas are the new one's, the others it would
            // overwrite with stale values.
            if let Some(r) = retired.as_ref() {
                r.detach_store();
            }
            st.limit_specs = specs;
            report.throttle_rebuilt = true;
        }
        // Writers of destinations the new configuration no longer has.
        let retired_logs: Vec<Arc<AccessLog>> = match opened_logs {
            Some(l) => std::mem::replace(&mut st.logs, l)
                .into_iter()
                .filter(|(d, _)| !new.log_destinations.contains(d))
                .map(|(_, l)| l)
                .collect(),
            None => Vec::new(),
        };
        let client_ip = if new.client_ip == old.client_ip {
            None
        } else {
            st.client_ip = new.client_ip.map(|c| {
                (
                    Arc::new(ClientIpTable::new(c.rate, c.burst, c.max_clients)),
                    crate::clock::now(),
                )
            });
            Some(st.client_ip.clone())
        };

        // Stable metric ids for the new routes.
        let ids = self.registry.assign(&new.route_labels);
        let _ = new.metric_ids.set(ids);
        for c in &self.counters {
            c.ensure(self.registry.len());
        }

        let new = Arc::new(new);
        st.generation += 1;
        let generation = st.generation;
        for ((mb, listen), throttle) in self.mailboxes.iter().zip(opened).zip(throttles) {
            let swap = Swap {
                generation,
                snapshot: new.clone(),
                throttle,
                client_ip: client_ip.clone(),
                listen,
                close: closed.clone(),
                logs: logs_changed.then(|| shard_logs(&st.logs)),
            };
            *mb.swap.lock().unwrap_or_else(|p| p.into_inner()) = Some(swap);
            mb.posted.store(generation, Ordering::Release);
        }
        // Shards switch at their next tick (25 ms); the old reconciler
        // stops once none uses it.
        let deadline = crate::clock::now() + SWITCH_WAIT;
        while crate::clock::now() < deadline
            && !self.stopping()
            && self
                .mailboxes
                .iter()
                .any(|m| m.applied.load(Ordering::Acquire) < generation)
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let switched = self
            .mailboxes
            .iter()
            .all(|m| m.applied.load(Ordering::Acquire) >= generation);
        if switched {
            drop(retired);
            // Writers no shard uses any more write what they were sent,
            // then stop.
            for l in retired_logs {
                l.stop();
                st.retired_log_counts.0 += l.written();
                st.retired_log_counts.1 += l.dropped();
            }
        } else {
            // A shard is late (or the gateway is stopping): what it may
            // still use stays alive until every shard has switched.
            st.lingering.push(Box::new((retired, retired_logs)));
        }
        st.snapshot = new;
        st.listeners = listeners;
        st.loaded_at = crate::clock::wall();
        report.generation = generation;
        Ok(report)
    }
}

/// How long a reload waits for every shard to switch (each does at its
/// next tick, 25 ms, unless it is stuck).
const SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Settings that differ between `old` and `new` but apply only at start.
fn restart_needed(old: &Snapshot, new: &Snapshot) -> Vec<&'static str> {
    let mut v = Vec::new();
    let (o, n) = (&old.server, &new.server);
    if o.cores != n.cores {
        v.push("server.shards");
    }
    if o.runtime != n.runtime {
        v.push("server.runtime");
    }
    if o.max_idle_per_backend != n.max_idle_per_backend
        || o.upstream_idle_timeout != n.upstream_idle_timeout
    {
        v.push("server.upstream");
    }
    if old.cache != new.cache {
        v.push("server.cache");
    }
    if o.admin != n.admin {
        v.push("server.admin");
    }
    if old.state_dir != new.state_dir {
        v.push("server.state_dir");
    }
    if old.sync_interval != new.sync_interval {
        // The reconciler takes it at once; shards keep the tick they
        // started with.
        v.push("server.throttle.sync_interval");
    }
    if o.timeouts.drain != n.timeouts.drain {
        v.push("server.timeouts.drain");
    }
    for l in &n.listeners {
        if o.listeners
            .iter()
            .any(|p| p.addr == l.addr && p.backlog != l.backlog)
        {
            v.push("server.listen.backlog");
            break;
        }
    }
    for l in &n.listeners {
        if o.listeners
            .iter()
            .any(|p| p.addr == l.addr && p.defer_accept != l.defer_accept)
        {
            v.push("server.listen.defer_accept");
            break;
        }
    }
    v
}
