//! The immutable, validated form of a configuration that shards run on.
//!
//! Building it checks everything a running gateway could trip over later
//! (addresses, route keys, URIs, limits) and pre-computes everything the
//! request path needs (route tries, integrations per stage with stage
//! variables substituted, mock responses rendered).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::caching::{CacheSpec, RouteCache, StageCache};
use super::plans::{KeyLimits, QuotaInfo};
use crate::auth::api_key::{KeyDigest, KeyId, KeyTable};

use super::apis::Mount;
use super::schema::{Config, Shards};
use super::{ConfigIssue, Host};
use crate::http::{Limits, MAX_HEADER_SLOTS};
use crate::integration::Integration;
use crate::observe::access_log::{Destination, Format};
use crate::observe::metrics::{RouteLabels, UNMATCHED};
use crate::router::{Params, RouteId, RouteTable};

/// A listening socket to open on every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub backlog: u32,
    /// TCP_DEFER_ACCEPT: accept once the client's first bytes are in.
    pub defer_accept: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub client_header: Duration,
    pub client_body: Duration,
    pub client_send: Duration,
    pub keepalive: Duration,
    pub backend_connect: Duration,
    pub integration: Duration,
    pub tunnel_idle: Duration,
    pub drain: Duration,
}

/// Server-wide settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// One shard per entry, pinned to that CPU.
    pub cores: Vec<usize>,
    pub listeners: Vec<Listener>,
    /// Lower-case name of the request id header.
    pub request_id_header: Box<[u8]>,
    pub trust_request_id: bool,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub max_idle_per_backend: usize,
    pub upstream_idle_timeout: Duration,
    pub runtime: Runtime,
    /// The admin listener, if enabled.
    pub admin: Option<AdminSettings>,
}

/// Where the admin listener binds and the token it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    pub token: Option<KeyDigest>,
}

/// Executor settings for each shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    pub io_memory: usize,
    pub ring_depth: usize,
    pub spin_before_park: Duration,
    pub preempt_timer: Duration,
}

/// A stage of an API: its integrations, indexed by route id.
#[derive(Debug)]
pub struct Stage {
    pub name: String,
    pub integrations: Vec<Integration>,
    /// Index into [`Snapshot::limits`] of the stage's throttle.
    pub limit: Option<u32>,
    /// Per route id: index into [`Snapshot::limits`] of its throttle.
    pub route_limits: Vec<Option<u32>>,
    /// Per route id: whether the route requires an API key.
    pub key_required: Vec<bool>,
    /// Per route id: what guards it on its own, for the lenient-spelling
    /// check (see [`Guard`]).
    pub guards: Vec<Guard>,
    /// Some route has a guard another route lacks.
    pub any_guarded: bool,
    /// The keys a usage plan admits on this stage, with their limits. A
    /// key not in this map is refused where a key is required.
    pub key_plans: HashMap<KeyId, KeyLimits>,
    /// Index of route 0's labels in [`Snapshot::route_labels`].
    pub counter_base: u32,
    /// The stage's cache settings, if it caches.
    pub cache: Option<StageCache>,
    /// Per route id: its cache, where it is cached.
    pub route_cache: Vec<Option<RouteCache>>,
    /// The stage's canary, if it has one.
    pub canary: Option<Canary>,
}

/// A stage's canary: the stage's routes compiled with the canary's stage
/// variables, and counters of their own. Everything else (keys, plans,
/// throttles, cache) is the stage's.
#[derive(Debug)]
pub struct Canary {
    /// Share of the stage's requests, 0.0 to 100.0.
    pub percent: f64,
    /// Chosen by a hash of the client IP address instead of a random draw.
    pub sticky: bool,
    /// Integrations, indexed by route id like [`Stage::integrations`].
    pub integrations: Vec<Integration>,
    /// Index of route 0's canary labels in [`Snapshot::route_labels`]
    /// (labels with `canary: true`).
    pub counter_base: u32,
}

impl Canary {
    /// Whether a request from `client_ip` goes to the canary; `random`
    /// is asked for a draw only when the canary is not sticky.
    #[inline]
    pub fn pick(&self, client_ip: IpAddr, random: impl FnOnce() -> u64) -> bool {
        let r = if self.sticky { 0 } else { random() };
        canary_pick(self.percent, self.sticky, client_ip, r)
    }
}

/// Whether a request goes to the canary: `percent` (0.0 to 100.0) of the
/// values of a 64-bit number do. With `sticky` the number is a fixed hash
/// of the client's address (the same client gets the same side on every
/// shard and in every process, and raising `percent` only adds clients);
/// otherwise it is `random_u64`, a fresh draw per request.
#[inline]
pub(super) fn canary_pick(percent: f64, sticky: bool, client_ip: IpAddr, random_u64: u64) -> bool {
    let x = if sticky {
        ip_hash(client_ip)
    } else {
        random_u64
    };
    // The top 53 bits as a fraction in [0, 1): 0 % never, 100 % always.
    let fraction = (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    fraction * 100.0 < percent
}

/// A hash of an IP address with fixed constants (FNV-1a, then the
/// SplitMix64 finaliser to spread the bits), stable across processes. An
/// IPv4-mapped IPv6 address hashes like the IPv4 address.
fn ip_hash(ip: IpAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => feed(&v4.octets()),
        IpAddr::V6(v6) => feed(&v6.octets()),
    }
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stage's access log: its format and which destination it writes to.
#[derive(Debug)]
pub struct StageLog {
    pub format: Format,
    /// Index into [`Snapshot::log_destinations`].
    pub sink: u32,
}

/// The per-client-IP throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIpLimit {
    pub rate: u64,
    pub burst: u64,
    pub max_clients: usize,
}

/// One throttle limit, shared by all shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u64,
    pub burst: u64,
}

/// A compiled API.
#[derive(Debug)]
pub struct Api {
    pub name: String,
    pub routes: RouteTable,
    /// Route keys as written, indexed by route id.
    pub route_keys: Vec<String>,
    pub stages: Vec<Stage>,
    /// The routes read leniently (`server.ambiguous_paths`), when some
    /// stage has a guarded route to protect.
    pub lenient: Option<crate::router::lenient::LenientTable>,
}

/// What a route does that a broader route reached by another spelling
/// of its path would not: a lenient spelling (`router::lenient`) that
/// the exact match sends to a route lacking one of these is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guard {
    /// An API key is required (the route's or the stage's setting).
    pub key: bool,
    /// The route's own throttle (index into [`Snapshot::limits`]).
    pub limit: Option<u32>,
    /// The gateway answers itself (a `mock`, often a block: 403/404).
    pub mock: bool,
}

impl Guard {
    /// Whether reaching `other` instead of `self` would skip something
    /// `self` does.
    pub fn skipped_by(&self, other: &Guard) -> bool {
        (self.key && !other.key)
            || (self.limit.is_some() && self.limit != other.limit)
            || (self.mock && !other.mock)
    }

    /// Whether a broader route could skip it.
    pub fn guards(&self) -> bool {
        self.key || self.limit.is_some() || self.mock
    }
}

/// The outcome of resolving a request to a route.
#[derive(Debug)]
pub struct Resolved<'s, 'p> {
    pub api: &'s Api,
    pub stage: &'s Stage,
    pub route: RouteId,
    /// The route's metric id (see [`Snapshot::metric_id`]); the canary's
    /// once [`Resolved::pick_canary`] chose it.
    pub metric: u32,
    /// The request goes to the stage's canary.
    pub canary: bool,
    /// The integrations and route counter block in use: the stage's, or
    /// its canary's once chosen (so neither accessor branches).
    integrations: &'s [Integration],
    counter_base: u32,
    pub params: Params,
    /// The path after the API and stage prefixes; parameters index into it.
    pub path: &'p [u8],
    /// Index of the mount (host and path prefix) that was chosen.
    pub mount: u32,
}

impl<'s> Resolved<'s, '_> {
    /// This request's route's guards.
    fn guard(&self) -> Guard {
        self.stage
            .guards
            .get(self.route as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Whether one of `routes` of `stage` has a guard this request's
    /// route lacks.
    fn skips_one_of(&self, stage: &Stage, routes: &[RouteId]) -> bool {
        let mine = self.guard();
        routes.iter().any(|&r| {
            stage
                .guards
                .get(r as usize)
                .is_some_and(|g| g.skipped_by(&mine))
        })
    }

    /// The integration the request goes to: the canary's when chosen.
    #[inline]
    pub fn integration(&self) -> Option<&'s Integration> {
        self.integrations.get(self.route as usize)
    }

    /// The route counter: index into [`Snapshot::route_labels`] and
    /// [`Snapshot::route_logs`] (the canary's block when chosen).
    #[inline]
    pub fn counter(&self) -> u32 {
        self.counter_base + self.route
    }

    /// Decides whether the request goes to the stage's canary (a stage
    /// without one: a single branch) and, if so, switches the integration
    /// and metric id to the canary's. `random` is asked for a draw only
    /// for a canary that is not sticky. Call it once, right after
    /// [`Snapshot::resolve`].
    #[inline]
    pub fn pick_canary(
        &mut self,
        snap: &Snapshot,
        client_ip: IpAddr,
        random: impl FnOnce() -> u64,
    ) -> bool {
        let stage: &'s Stage = self.stage;
        let Some(c) = &stage.canary else {
            return false;
        };
        if c.pick(client_ip, random) {
            self.canary = true;
            self.integrations = &c.integrations;
            self.counter_base = c.counter_base;
            self.metric = snap.metric_id(c.counter_base + self.route);
        }
        self.canary
    }
}

/// A validated, compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub server: ServerSettings,
    pub apis: Vec<Api>,
    mounts: Vec<Mount>,
    /// Per mount: its path prefix read leniently (see
    /// [`Snapshot::ambiguous`]).
    mount_readings: Vec<Box<[u8]>>,
    /// The readings `server.ambiguous_paths` checks.
    leniency: crate::router::lenient::Leniency,
    /// Some API has a route with a guard another may lack, and some
    /// reading is checked: [`Snapshot::ambiguous`] has work to do.
    lenient_mounts: bool,
    /// Names of custom domains with mutual TLS: never served on plain
    /// connections, whatever mounts their name matches.
    mtls_hosts: Vec<super::apis::HostPattern>,
    /// Every throttle limit: the account limit (if enabled) first, then
    /// stage and route limits.
    pub limits: Vec<Limit>,
    /// Index of the account limit in `limits`.
    pub account_limit: Option<u32>,
    /// How often shards exchange lease tokens with the reconciler.
    pub sync_interval: Duration,
    /// Configured API keys.
    pub keys: KeyTable,
    /// Every (usage plan, key) quota; each is also a limit (rate 0).
    pub quotas: Vec<QuotaInfo>,
    pub quota_flush_interval: Duration,
    pub state_dir: PathBuf,
    pub client_ip: Option<ClientIpLimit>,
    /// Per-route metric labels, indexed by a stage's `counter_base` plus
    /// the route id; a stage with a canary has a second block (labels with
    /// `canary: true`) at its canary's `counter_base`.
    pub route_labels: Vec<RouteLabels>,
    /// Per route counter: the stage's access log, if it logs.
    pub route_logs: Vec<Option<Arc<StageLog>>>,
    /// Every access log destination; `StageLog::sink` indexes it.
    pub log_destinations: Vec<Destination>,
    /// Stable metric ids of `route_labels`, set when the snapshot is
    /// installed (see [`crate::observe::metrics::Registry`]).
    pub metric_ids: OnceLock<Box<[u32]>>,
    /// The shared response cache, if any stage caches.
    pub cache: Option<CacheSpec>,
    /// TLS listeners' certificates and custom domains' sites.
    pub tls: super::tls::TlsSetup,
    /// Settings that are valid but probably not what was meant; printed by
    /// `tollgate check` and `tollgate run`.
    pub warnings: Vec<ConfigIssue>,
    /// The configuration it was built from, defaults filled in (served
    /// by the admin listener's `GET /config` with secrets redacted).
    pub config: Config,
}

impl Snapshot {
    /// The metric id of route counter `counter` (a stage's `counter_base`
    /// plus the route id); [`UNMATCHED`] before the snapshot is installed.
    #[inline]
    pub fn metric_id(&self, counter: u32) -> u32 {
        self.metric_ids
            .get()
            .and_then(|ids| ids.get(counter as usize))
            .copied()
            .unwrap_or(UNMATCHED)
    }

    /// Finds API, stage and route for a request on a plain connection.
    /// `host` is the Host header (port allowed), `path` the request path.
    pub fn resolve<'s, 'p>(
        &'s self,
        host: Option<&[u8]>,
        method: &[u8],
        path: &'p [u8],
    ) -> Option<Resolved<'s, 'p>> {
        self.resolve_on(host, method, path, false)
    }

    /// [`Snapshot::resolve`] for a connection that is TLS (`tls`) or not:
    /// custom domains' mappings serve TLS connections only.
    pub fn resolve_on<'s, 'p>(
        &'s self,
        host: Option<&[u8]>,
        method: &[u8],
        path: &'p [u8],
        tls: bool,
    ) -> Option<Resolved<'s, 'p>> {
        let host = host.map(crate::http::host_name).unwrap_or_default();
        if !tls && self.mtls_hosts.iter().any(|p| p.score(host).is_some()) {
            return None;
        }
        // The most specific host pattern decides the API set; a request
        // never falls through to a less specific host (like NGINX server
        // blocks and Amazon API Gateway custom domains).
        let top = self
            .mounts
            .iter()
            .filter(|m| tls || !m.tls_only)
            .filter_map(|m| m.host.score(host))
            .max()?;
        let mut best: Option<(&Mount, usize)> = None;
        for (i, m) in self.mounts.iter().enumerate() {
            if (m.tls_only && !tls)
                || m.host.score(host) != Some(top)
                || !prefix_matches(&m.prefix, path)
            {
                continue;
            }
            if best.is_none_or(|(b, _)| m.prefix.len() > b.prefix.len()) {
                best = Some((m, i));
            }
        }
        let (mount, mount_index) = best?;
        let rest = &path[mount.prefix.len()..];
        let rest: &'p [u8] = if rest.is_empty() { b"/" } else { rest };
        let api = &self.apis[mount.api as usize];
        let stage = &api.stages[mount.stage as usize];
        let m = api.routes.find(method, rest)?;
        Some(Resolved {
            api,
            stage,
            metric: self.metric_id(stage.counter_base + m.route),
            canary: false,
            integrations: &stage.integrations,
            counter_base: stage.counter_base,
            route: m.route,
            params: m.params,
            path: rest,
            mount: mount_index as u32,
        })
    }

    /// Whether a lenient reading of the request path (`router::lenient`,
    /// per `server.ambiguous_paths`) reaches a route that has a guard `r`'s
    /// route lacks (an API key, a throttle of its own, a mock answer): in
    /// `r`'s API, or through another mount of the host (a base path, stage
    /// or custom-domain mapping spelled `/ADMIN` or `/admin;x` that the
    /// exact match missed). Such a request is refused, since its backend
    /// might serve the guarded resource unguarded. `full_path` is the
    /// normalised request path, `scratch` holds the readings. Costs a
    /// branch when nothing is guarded and a scan for a path that reads
    /// the same either way.
    pub fn ambiguous(
        &self,
        r: &Resolved<'_, '_>,
        host: Option<&[u8]>,
        method: &[u8],
        full_path: &[u8],
        tls: bool,
        scratch: &mut Vec<u8>,
    ) -> bool {
        if !self.lenient_mounts || !self.leniency.may_differ(full_path) {
            return false;
        }
        // Within the API the exact match chose.
        if let Some(lenient) = &r.api.lenient {
            if let Some(routes) = lenient.find(method, r.path, scratch) {
                if !routes.contains(&r.route) && r.skips_one_of(r.stage, routes) {
                    return true;
                }
            }
        }
        // Across mounts: the prefix the whole path reads as.
        self.leniency.reading(full_path, scratch);
        let host = host.map(crate::http::host_name).unwrap_or_default();
        let Some(top) = self
            .mounts
            .iter()
            .filter(|m| tls || !m.tls_only)
            .filter_map(|m| m.host.score(host))
            .max()
        else {
            return false;
        };
        let mut best: Option<(usize, &[u8])> = None;
        for (i, m) in self.mounts.iter().enumerate() {
            let reading = &self.mount_readings[i];
            if (m.tls_only && !tls)
                || m.host.score(host) != Some(top)
                || !prefix_matches(reading, scratch)
            {
                continue;
            }
            if best.is_none_or(|(_, b)| reading.len() > b.len()) {
                best = Some((i, reading));
            }
        }
        let Some((i, prefix)) = best else {
            return false;
        };
        if i as u32 == r.mount || *self.mount_readings[r.mount as usize] == *prefix {
            return false;
        }
        // Another mount: refused if any of its routes has a guard this
        // request's route lacks (what that mount would have answered for
        // the reading matters less than that its prefix was missed).
        let m = &self.mounts[i];
        let stage = &self.apis[m.api as usize].stages[m.stage as usize];
        let mine = r.guard();
        stage.guards.iter().any(|g| g.skipped_by(&mine))
    }

    /// Builds a snapshot, collecting every problem found.
    pub fn build(config: &Config, host: &Host) -> Result<Snapshot, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut issue = |path: String, reason: String| issues.push(ConfigIssue { path, reason });
        let s = &config.server;

        let cores = match &s.shards {
            Shards::Named(n) if n == "auto" => host.cpus.clone(),
            Shards::Named(n) if n == "physical" => host.physical_cpus(),
            Shards::Named(n) => {
                issue(
                    "server.shards".into(),
                    format!("`{n}` is not \"auto\", \"physical\", a number of shards, or a list of cores"),
                );
                Vec::new()
            }
            Shards::Count(0) => {
                issue("server.shards".into(), "must be at least 1".into());
                Vec::new()
            }
            Shards::Count(n) if *n > host.cpus.len() => {
                issue(
                    "server.shards".into(),
                    format!("{n} shards requested but only {} cores are available to this process ({:?})", host.cpus.len(), host.cpus),
                );
                Vec::new()
            }
            Shards::Count(n) => host.cpus[..*n].to_vec(),
            Shards::Cores(list) => {
                if list.is_empty() {
                    issue("server.shards".into(), "core list is empty".into());
                }
                let mut seen = Vec::new();
                for (i, c) in list.iter().enumerate() {
                    if !host.cpus.contains(c) {
                        issue(
                            format!("server.shards[{i}]"),
                            format!(
                                "core {c} is not available to this process (available: {:?})",
                                host.cpus
                            ),
                        );
                    } else if seen.contains(c) {
                        issue(
                            format!("server.shards[{i}]"),
                            format!("core {c} is listed twice"),
                        );
                    }
                    seen.push(*c);
                }
                list.clone()
            }
        };

        let admin = if s.admin.enabled {
            let token = super::caching::secret(
                s.admin.token.as_deref(),
                s.admin.token_sha256.as_deref(),
                "server.admin",
                "token",
                &mut issue,
            );
            match s.admin.addr.parse::<SocketAddr>() {
                Ok(addr) => Some(AdminSettings { addr, token }),
                Err(_) => {
                    issue(
                        "server.admin.addr".into(),
                        format!("`{}` is not an IP:port address", s.admin.addr),
                    );
                    None
                }
            }
        } else {
            None
        };

        let mut listeners = Vec::new();
        if s.listen.is_empty() {
            issue(
                "server.listen".into(),
                "at least one listener is required, e.g. [[server.listen]] addr = \"127.0.0.1:8080\" tls = false".into(),
            );
        }
        for (i, l) in s.listen.iter().enumerate() {
            let path = format!("server.listen[{i}]");
            match l.addr.parse::<SocketAddr>() {
                Ok(addr) => {
                    if listeners.iter().any(|x: &Listener| x.addr == addr) {
                        issue(format!("{path}.addr"), format!("{addr} is listed twice"));
                    }
                    listeners.push(Listener {
                        addr,
                        backlog: l.backlog.unwrap_or(s.backlog),
                        defer_accept: l.defer_accept,
                    });
                }
                Err(_) => issue(
                    format!("{path}.addr"),
                    format!("`{}` is not an IP:port address", l.addr),
                ),
            }
            if l.backlog == Some(0) {
                issue(format!("{path}.backlog"), "must be at least 1".into());
            }
        }

        let rid = s.request_id_header.to_ascii_lowercase();
        let reserved = matches!(
            rid.as_str(),
            "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "upgrade"
                | "expect"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "date"
        );
        if reserved {
            issue(
                "server.request_id_header".into(),
                format!(
                    "`{}` is a header the gateway manages itself; choose another name",
                    s.request_id_header
                ),
            );
        } else if !crate::integration::valid_header_name(&rid) {
            issue(
                "server.request_id_header".into(),
                format!("`{}` is not a valid header name", s.request_id_header),
            );
        }

        let l = &s.limits;
        let mut check_range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                issue(
                    format!("server.limits.{key}"),
                    format!("{v} is outside the allowed range {lo}..={hi}"),
                );
            }
        };
        check_range("max_header_bytes", l.max_header_bytes as u64, 256, 1 << 20);
        check_range("max_uri_bytes", l.max_uri_bytes as u64, 16, 1 << 20);
        check_range(
            "max_headers",
            l.max_headers as u64,
            1,
            MAX_HEADER_SLOTS as u64 - 1,
        );
        check_range("max_body_bytes", l.max_body_bytes, 0, 1 << 40);
        check_range(
            "max_response_header_bytes",
            l.max_response_header_bytes as u64,
            1024,
            1 << 20,
        );
        let t = &s.timeouts;
        for (key, d) in [
            ("client_header", t.client_header),
            ("client_body", t.client_body),
            ("client_send", t.client_send),
            ("keepalive", t.keepalive),
            ("backend_connect", t.backend_connect),
            ("integration", t.integration),
            ("tunnel_idle", t.tunnel_idle),
        ] {
            if d.is_zero() {
                issue(
                    format!("server.timeouts.{key}"),
                    "must be greater than zero".into(),
                );
            }
        }
        if s.backlog == 0 {
            issue("server.backlog".into(), "must be at least 1".into());
        }
        let rt = &s.runtime;
        if !(4096..=(1 << 30)).contains(&rt.io_memory) {
            issue(
                "server.runtime.io_memory".into(),
                format!(
                    "{} is outside the allowed range 4096..=1073741824 bytes",
                    rt.io_memory
                ),
            );
        }
        if !rt.ring_depth.is_power_of_two() || !(16..=32768).contains(&rt.ring_depth) {
            issue(
                "server.runtime.ring_depth".into(),
                format!("{} must be a power of two from 16 to 32768", rt.ring_depth),
            );
        }
        if rt.preempt_timer.is_zero() {
            issue(
                "server.runtime.preempt_timer".into(),
                "must be greater than zero".into(),
            );
        }
        if s.upstream.idle_timeout.is_zero() {
            issue(
                "server.upstream.idle_timeout".into(),
                "must be greater than zero".into(),
            );
        }

        let mut limits: Vec<Limit> = Vec::new();
        let th = &s.throttle;
        let account_limit = if th.enabled {
            limits.push(Limit {
                rate: th.rate,
                burst: th.burst,
            });
            Some(0)
        } else {
            None
        };
        if th.sync_interval.is_zero() || th.sync_interval > Duration::from_secs(1) {
            issue(
                "server.throttle.sync_interval".into(),
                "must be between 1ms and 1s".into(),
            );
        }
        let super::apis::Compiled {
            mut apis,
            mut mounts,
            route_labels,
            route_logs,
            log_destinations,
        } = super::apis::compile(config, t, &mut limits, &mut issue);
        if config.apis.is_empty() {
            issue("api".into(), "at least one [[api]] is required".into());
        }
        let mut warnings = Vec::new();
        let (keys, quotas) =
            super::plans::build(config, &mut apis, &mut limits, &mut issue, &mut warnings);
        if th.quota_flush_interval.is_zero() {
            issue(
                "server.throttle.quota_flush_interval".into(),
                "must be greater than zero".into(),
            );
        }
        let client_ip = th.client_ip.map(|c| ClientIpLimit {
            rate: c.rate,
            burst: c.burst,
            max_clients: c.max_clients,
        });
        super::plans::check_limits(config, &mut issue);
        let cache = super::caching::compile_server(config, &mut issue);
        let leniency = config.server.ambiguous_paths.leniency();
        let tls = super::tls::compile(config, &apis, &mut mounts, &mut issue, &mut warnings);

        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Snapshot {
            server: ServerSettings {
                cores,
                listeners,
                request_id_header: rid.into_bytes().into(),
                trust_request_id: s.trust_request_id,
                limits: Limits {
                    max_header_bytes: l.max_header_bytes,
                    max_uri_bytes: l.max_uri_bytes,
                    max_headers: l.max_headers,
                    max_body_bytes: l.max_body_bytes,
                    max_response_header_bytes: l.max_response_header_bytes,
                },
                timeouts: Timeouts {
                    client_header: t.client_header,
                    client_body: t.client_body,
                    client_send: t.client_send,
                    keepalive: t.keepalive,
                    backend_connect: t.backend_connect,
                    integration: t.integration,
                    tunnel_idle: t.tunnel_idle,
                    drain: t.drain,
                },
                max_idle_per_backend: s.upstream.max_idle_per_backend,
                upstream_idle_timeout: s.upstream.idle_timeout,
                admin,
                runtime: Runtime {
                    io_memory: rt.io_memory,
                    ring_depth: rt.ring_depth,
                    spin_before_park: rt.spin_before_park,
                    preempt_timer: rt.preempt_timer,
                },
            },
            mount_readings: mounts
                .iter()
                .map(|m| {
                    let mut out = Vec::new();
                    if !m.prefix.is_empty() {
                        leniency.reading(&m.prefix, &mut out);
                    }
                    out.into_boxed_slice()
                })
                .collect(),
            leniency,
            lenient_mounts: !leniency.is_off() && apis.iter().any(|a| a.lenient.is_some()),
            apis,
            mounts,
            mtls_hosts: config
                .domains
                .iter()
                .filter(|d| d.mtls.is_some())
                .filter_map(|d| super::apis::HostPattern::parse(&d.name))
                .filter(|p| *p != super::apis::HostPattern::Any)
                .collect(),
            limits,
            account_limit,
            sync_interval: th.sync_interval,
            keys,
            quotas,
            quota_flush_interval: th.quota_flush_interval,
            state_dir: s.state_dir.clone(),
            client_ip,
            route_labels,
            route_logs,
            log_destinations,
            metric_ids: OnceLock::new(),
            cache,
            tls,
            warnings,
            config: config.clone(),
        })
    }
}

/// `prefix` matches `path` at a segment boundary; empty matches all.
fn prefix_matches(prefix: &[u8], path: &[u8]) -> bool {
    prefix.is_empty()
        || (path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/'))
}
