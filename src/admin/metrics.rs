//! `GET /metrics`: every shard's counters summed into the Prometheus text
//! format. Runs on the admin thread; shards are not asked anything (their
//! counters are single-writer atomics read in place).

use std::time::UNIX_EPOCH;

use crate::observe::counters::{Counters, Level, RouteTotals};
use crate::observe::metrics::Exposition;
use crate::runtime::Control;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A per-route counter family: name, help, and how to read it.
type RouteFamily = (&'static str, &'static str, fn(&RouteTotals) -> u64);
/// A per-shard family: name, type, help, and how to read it.
type ShardFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Counters) -> u64,
);

/// The exposition text for the gateway behind `control`.
pub fn render(control: &Control) -> String {
    let (registry, counters) = control.metrics();
    let labels = registry.labels();
    let totals: Vec<RouteTotals> = (0..labels.len() as u32)
        .map(|id| {
            let mut t = RouteTotals::default();
            for c in counters {
                c.add_route(id, &mut t);
            }
            t
        })
        .collect();
    let active: Vec<usize> = totals
        .iter()
        .enumerate()
        .filter(|(_, t)| t.requests() + t.refused + t.cache_hits + t.cache_misses > 0)
        .map(|(i, _)| i)
        .collect();
    // A stage canary's series carry `canary="true"`; every other series
    // keeps the three labels (label sets may differ within a family).
    let route_labels = |i: usize| {
        let l = &labels[i];
        let mut v = Vec::with_capacity(5);
        v.extend([
            ("api", l.api.as_str()),
            ("stage", l.stage.as_str()),
            ("route", l.route.as_str()),
        ]);
        if l.canary {
            v.push(("canary", "true"));
        }
        v
    };
    let mut e = Exposition::new();

    e.family(
        "tollgate_requests_total",
        "counter",
        "Requests answered, by API, stage, route and status class.",
    );
    for &i in &active {
        for (class, n) in CLASSES.iter().zip(totals[i].by_class) {
            if n > 0 {
                let mut l = route_labels(i);
                l.push(("status", class));
                e.sample("tollgate_requests_total", &l, n);
            }
        }
    }
    e.family(
        "tollgate_request_duration_seconds",
        "histogram",
        "Time from a request's head to the end of its response.",
    );
    for &i in &active {
        if totals[i].latency.count() > 0 {
            e.histogram(
                "tollgate_request_duration_seconds",
                &route_labels(i),
                &totals[i].latency,
            );
        }
    }
    e.family(
        "tollgate_integration_duration_seconds",
        "histogram",
        "Time from sending a request to the backend to its response head.",
    );
    for &i in &active {
        if totals[i].integration.count() > 0 {
            e.histogram(
                "tollgate_integration_duration_seconds",
                &route_labels(i),
                &totals[i].integration,
            );
        }
    }
    let per_route: [RouteFamily; 5] = [
        (
            "tollgate_request_bytes_total",
            "Request bytes received (head and declared body).",
            |t| t.bytes_in,
        ),
        (
            "tollgate_response_bytes_total",
            "Response bytes sent (head and body).",
            |t| t.bytes_out,
        ),
        (
            "tollgate_throttled_total",
            "Requests refused by a throttle, quota or API-key check.",
            |t| t.refused,
        ),
        (
            "tollgate_cache_hits_total",
            "Requests answered from the response cache (CacheHitCount).",
            |t| t.cache_hits,
        ),
        (
            "tollgate_cache_misses_total",
            "Cache lookups that went to the backend (CacheMissCount).",
            |t| t.cache_misses,
        ),
    ];
    for (name, help, get) in per_route {
        e.family(name, "counter", help);
        for &i in &active {
            e.sample(name, &route_labels(i), get(&totals[i]));
        }
    }

    e.family(
        "tollgate_refusals_total",
        "counter",
        "Requests refused, by the guard that refused them.",
    );
    for l in Level::ALL {
        let n: u64 = counters.iter().map(|c| c.level(l)).sum();
        e.sample("tollgate_refusals_total", &[("level", l.name())], n);
    }

    let shard_ids: Vec<String> = (0..counters.len()).map(|i| i.to_string()).collect();
    let per_shard: [ShardFamily; 10] = [
        (
            "tollgate_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            |c| Counters::get(&c.gauges.accepted),
        ),
        (
            "tollgate_connections_open",
            "gauge",
            "Client connections open.",
            |c| Counters::get(&c.gauges.open_connections),
        ),
        (
            "tollgate_upstream_idle_connections",
            "gauge",
            "Idle keep-alive backend connections in the shard's pools.",
            |c| Counters::get(&c.gauges.pool_idle),
        ),
        (
            "tollgate_upstream_connections_opened_total",
            "counter",
            "Backend connections opened.",
            |c| Counters::get(&c.gauges.pool_opened),
        ),
        (
            "tollgate_upstream_reused_total",
            "counter",
            "Backend requests sent on a pooled connection.",
            |c| Counters::get(&c.gauges.pool_reused),
        ),
        (
            "tollgate_tls_handshakes_total",
            "counter",
            "Client TLS handshakes completed.",
            |c| Counters::get(&c.gauges.tls_handshakes),
        ),
        (
            "tollgate_tls_resumed_total",
            "counter",
            "Client TLS handshakes that resumed a session.",
            |c| Counters::get(&c.gauges.tls_resumed),
        ),
        (
            "tollgate_tls_handshake_failures_total",
            "counter",
            "Client TLS handshakes that failed, timed out or were refused.",
            |c| Counters::get(&c.gauges.tls_failures),
        ),
        (
            "tollgate_accept_fd_exhausted_total",
            "counter",
            "Accepts that failed because the process is out of file descriptors (EMFILE/ENFILE).",
            |c| Counters::get(&c.gauges.accept_fd_exhausted),
        ),
        (
            "tollgate_idle_connections_reclaimed_total",
            "counter",
            "Idle keep-alive client connections closed to free file descriptors for new clients.",
            |c| Counters::get(&c.gauges.idle_reclaimed),
        ),
    ];
    for (name, kind, help, get) in per_shard {
        e.family(name, kind, help);
        for (c, id) in counters.iter().zip(&shard_ids) {
            e.sample(name, &[("shard", id)], get(c));
        }
    }

    if let Some(cache) = control.cache() {
        let st = cache.store.stats();
        e.family(
            "tollgate_cache_entries",
            "gauge",
            "Responses held by the cache.",
        );
        e.sample("tollgate_cache_entries", &[], st.entries as u64);
        e.family(
            "tollgate_cache_bytes",
            "gauge",
            "Bytes the cache accounts for (keys, responses, overhead).",
        );
        e.sample("tollgate_cache_bytes", &[], st.bytes as u64);
        e.family(
            "tollgate_cache_capacity_bytes",
            "gauge",
            "The cache's capacity.",
        );
        e.sample(
            "tollgate_cache_capacity_bytes",
            &[],
            cache.store.capacity() as u64,
        );
    }

    let quotas = control.quota_usage();
    if !quotas.is_empty() {
        e.family(
            "tollgate_quota_used",
            "gauge",
            "Requests counted against a usage-plan quota this period (plan/key).",
        );
        for q in &quotas {
            e.sample("tollgate_quota_used", &[("quota", &q.name)], q.used);
        }
        e.family(
            "tollgate_quota_limit",
            "gauge",
            "A usage-plan quota's allowance per period (plan/key).",
        );
        for q in &quotas {
            e.sample("tollgate_quota_limit", &[("quota", &q.name)], q.limit);
        }
        e.family(
            "tollgate_quota_store_write_failures_total",
            "counter",
            "Writes of the quota store (state_dir/quotas.redb) that failed; while they fail, counting goes on in memory only.",
        );
        e.sample(
            "tollgate_quota_store_write_failures_total",
            &[],
            control.quota_store_write_failures(),
        );
    }

    let (written, dropped) = control.access_log_counts();
    e.family(
        "tollgate_access_log_lines_total",
        "counter",
        "Access log lines written.",
    );
    e.sample("tollgate_access_log_lines_total", &[], written);
    e.family(
        "tollgate_access_log_dropped_total",
        "counter",
        "Access log lines dropped because the writer fell behind.",
    );
    e.sample("tollgate_access_log_dropped_total", &[], dropped);

    let snap = control.snapshot();
    if !snap.tls.listeners.is_empty() {
        e.family(
            "tollgate_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When each TLS listener's certificates expire (Unix time), by site (`default` or the domain name).",
        );
        for (addr, table) in &snap.tls.listeners {
            let listener = addr.to_string();
            for site in table.sites() {
                if let Some(t) = site.not_after.and_then(|t| u64::try_from(t).ok()) {
                    e.sample(
                        "tollgate_tls_certificate_expiry_timestamp_seconds",
                        &[
                            ("listener", &listener),
                            ("site", site.name.as_deref().unwrap_or("default")),
                        ],
                        t,
                    );
                }
            }
        }
    }

    let status = control.status();
    e.family(
        "tollgate_config_generation",
        "gauge",
        "Configuration generation (0 at start, +1 per successful reload).",
    );
    e.sample("tollgate_config_generation", &[], status.generation);
    e.family(
        "tollgate_config_reloads_total",
        "counter",
        "Reloads, by result.",
    );
    e.sample(
        "tollgate_config_reloads_total",
        &[("result", "ok")],
        status.reloads,
    );
    e.sample(
        "tollgate_config_reloads_total",
        &[("result", "error")],
        status.failed_reloads,
    );
    e.family(
        "tollgate_start_time_seconds",
        "gauge",
        "When the process started, Unix seconds.",
    );
    e.sample(
        "tollgate_start_time_seconds",
        &[],
        status
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    e.family("tollgate_build_info", "gauge", "Version of this build.");
    e.sample("tollgate_build_info", &[("version", status.version)], 1);
    e.finish()
}
