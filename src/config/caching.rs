//! Response-cache settings: validated and compiled per stage and route.

use std::time::Duration;

use super::schema::{
    ApiConfig, Config, IntegrationConfig, StageConfig, UnauthorizedInvalidation, MAX_CACHE_TTL,
};
use crate::auth::api_key::{self, KeyDigest};
use crate::cache::key::KeyParam;
use crate::cache::store::ENTRY_OVERHEAD;

/// Longest stale window.
const MAX_STALE: Duration = Duration::from_secs(86_400);

/// A stage's cache behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageCache {
    /// Every key of the stage starts with this (`api/stage` NUL).
    pub prefix: Box<[u8]>,
    pub ignore_backend_cache_control: bool,
    pub require_authorization: bool,
    pub unauthorized: UnauthorizedInvalidation,
}

/// A cached route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    pub ttl: Duration,
    /// Empty: the whole URL.
    pub key: Vec<KeyParam>,
    /// Statuses stored.
    pub statuses: Vec<u16>,
    /// Methods cached, upper case (HEAD also reads GET entries).
    pub methods: Vec<Box<[u8]>>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// The shared cache's size and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub capacity: u64,
    pub max_entry: u64,
    pub segments: usize,
    pub lock_timeout: Duration,
    pub token: Option<KeyDigest>,
}

/// Compiles stage `st` of API `a`: its cache settings and, per route, the
/// route's cache (None where caching is off or the route is not proxied).
pub(super) fn compile_stage(
    a: &ApiConfig,
    apath: &str,
    st: &StageConfig,
    spath: &str,
    param_names: &[Vec<String>],
    issue: &mut impl FnMut(String, String),
) -> (Option<StageCache>, Vec<Option<RouteCache>>) {
    let none = || a.routes.iter().map(|_| None).collect();
    let Some(sc) = &st.cache else {
        for (ri, r) in a.routes.iter().enumerate() {
            if r.cache.as_ref().is_some_and(|c| c.enabled == Some(true)) {
                issue(
                    format!("{apath}.route[{ri}].cache.enabled"),
                    format!(
                        "stage `{}` has no cache: add `cache = {{ enabled = true }}` to it",
                        st.name
                    ),
                );
            }
        }
        return (None, none());
    };
    if sc.ttl > MAX_CACHE_TTL {
        issue(
            format!("{spath}.cache.ttl"),
            format!("{:?} is above the maximum of 3600s", sc.ttl),
        );
    }
    let stage = StageCache {
        prefix: crate::cache::stage_prefix(&a.name, &st.name).into(),
        ignore_backend_cache_control: sc.ignore_backend_cache_control,
        require_authorization: sc.require_authorization,
        unauthorized: sc.unauthorized,
    };
    let routes = a
        .routes
        .iter()
        .enumerate()
        .map(|(ri, r)| {
            let rc = r.cache.clone().unwrap_or_default();
            let rpath = format!("{apath}.route[{ri}].cache");
            let ttl = rc.ttl.unwrap_or(sc.ttl);
            if ttl > MAX_CACHE_TTL {
                issue(
                    format!("{rpath}.ttl"),
                    format!("{ttl:?} is above the maximum of 3600s"),
                );
            }
            for (name, window) in [
                ("stale_while_revalidate", rc.stale_while_revalidate),
                ("stale_if_error", rc.stale_if_error),
            ] {
                if window.is_some_and(|w| w > MAX_STALE) {
                    issue(format!("{rpath}.{name}"), "must be at most 1 day".into());
                }
            }
            let names = param_names.get(ri).map(Vec::as_slice).unwrap_or_default();
            let mut key = Vec::new();
            for (ki, k) in rc.key.iter().enumerate() {
                match KeyParam::parse(k, names) {
                    Ok(p) => key.push(p),
                    Err(e) => issue(format!("{rpath}.key[{ki}]"), e.to_string()),
                }
            }
            for (si, s) in rc.statuses.iter().enumerate() {
                if !(200..=599).contains(s) || *s == 206 || *s == 304 {
                    issue(
                        format!("{rpath}.statuses[{si}]"),
                        format!("{s} cannot be stored: use final statuses other than 206 and 304 (they answer one request's Range or condition)"),
                    );
                }
            }
            let mut methods: Vec<Box<[u8]>> = Vec::new();
            for (mi, m) in rc.methods.iter().enumerate() {
                let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
                if !valid || m == "HEAD" {
                    issue(
                        format!("{rpath}.methods[{mi}]"),
                        format!("`{m}` must be an upper-case method other than HEAD (HEAD reads GET entries)"),
                    );
                } else {
                    methods.push(m.as_bytes().into());
                }
            }
            if rc.methods.is_empty() {
                methods.push(b"GET"[..].into());
            }
            let proxied = matches!(r.integration, IntegrationConfig::Http { .. });
            let on = rc.enabled.unwrap_or(sc.enabled) && !ttl.is_zero() && proxied;
            on.then(|| RouteCache {
                ttl,
                stale_while_revalidate: rc.stale_while_revalidate.unwrap_or_default(),
                stale_if_error: rc.stale_if_error.unwrap_or_default(),
                key,
                methods,
                statuses: if rc.statuses.is_empty() {
                    vec![200]
                } else {
                    rc.statuses.clone()
                },
            })
        })
        .collect();
    (Some(stage), routes)
}

/// The shared cache's settings (also when no stage caches yet: a reload
/// may turn caching on).
pub(super) fn compile_server(
    config: &Config,
    issue: &mut impl FnMut(String, String),
) -> Option<CacheSpec> {
    let c = &config.server.cache;
    if c.max_entry_bytes.0 == 0 {
        issue(
            "server.cache.max_entry_bytes".into(),
            "must be at least 1".into(),
        );
    }
    // Room for two of the largest entries with their key, head and
    // bookkeeping (a segment holds entries up to half its size).
    let largest = c
        .max_entry_bytes
        .0
        .saturating_add(ENTRY_OVERHEAD as u64 + 8192);
    if c.capacity.0 < largest.saturating_mul(2) {
        issue(
            "server.cache.capacity".into(),
            format!(
                "{} bytes cannot hold two entries of max_entry_bytes ({}) with their keys, heads and bookkeeping: at least {}",
                c.capacity.0,
                c.max_entry_bytes.0,
                largest.saturating_mul(2)
            ),
        );
    }
    if c.lock_timeout.is_zero() || c.lock_timeout > Duration::from_secs(60) {
        issue(
            "server.cache.lock_timeout".into(),
            "must be between 1ms and 60s".into(),
        );
    }
    if c.segments == 0 || !c.segments.is_power_of_two() || c.segments > 4096 {
        issue(
            "server.cache.segments".into(),
            format!("{} must be a power of two from 1 to 4096", c.segments),
        );
    }
    let token = secret(
        c.invalidation_token.as_deref(),
        c.invalidation_token_sha256.as_deref(),
        "server.cache",
        "invalidation_token",
        issue,
    );
    Some(CacheSpec {
        capacity: c.capacity.0,
        max_entry: c.max_entry_bytes.0,
        segments: c.segments,
        lock_timeout: c.lock_timeout,
        token,
    })
}

/// A secret given as plain text (`{name}`) or as a SHA-256 hex digest
/// (`{name}_sha256`) under `section`, as its digest.
pub(super) fn secret(
    plain: Option<&str>,
    sha256: Option<&str>,
    section: &str,
    name: &str,
    issue: &mut impl FnMut(String, String),
) -> Option<KeyDigest> {
    match (plain, sha256) {
        (Some(_), Some(_)) => {
            issue(
                section.into(),
                format!("set at most one of `{name}` and `{name}_sha256`"),
            );
            None
        }
        (Some(t), None) => match api_key::digest_of_value(t) {
            Ok(d) => Some(d),
            Err(e) => {
                issue(format!("{section}.{name}"), e.to_string());
                None
            }
        },
        (None, Some(h)) => match api_key::parse_digest(h) {
            Ok(d) => Some(d),
            Err(e) => {
                issue(format!("{section}.{name}_sha256"), e.to_string());
                None
            }
        },
        (None, None) => None,
    }
}
