//! APIs, stages and routes: validated and compiled into route tables,
//! per-stage integrations (stage variables substituted), limits, cache
//! settings, and the host/path mounts requests are resolved by.

use std::collections::HashMap;
use std::sync::Arc;

use std::collections::BTreeMap;

use super::schema::{
    AccessLogConfig, Config, IntegrationConfig, LimitsConfig, RouteConfig, TimeoutsConfig,
};
use super::snapshot::StageLog;
use super::snapshot::{Api, Canary, Guard, Limit, Stage};
use crate::integration::{
    substitute_stage_variables, HttpIntegration, Integration, IntegrationError, MockIntegration,
};
use crate::observe::access_log::{Destination, Format};
use crate::observe::metrics::RouteLabels;
use crate::router::{RouteKey, RouteTable};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostPattern {
    Any,
    Exact(Box<[u8]>),
    /// `*.example.com` stored as `.example.com`.
    Suffix(Box<[u8]>),
}

impl HostPattern {
    pub(super) fn parse(s: &str) -> Option<HostPattern> {
        // A final dot names the same host (requests drop theirs too).
        let s = match s.strip_suffix('.') {
            Some(t) if !t.is_empty() => t,
            _ => s,
        };
        let lower = s.to_ascii_lowercase();
        let ok = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if lower == "*" {
            Some(HostPattern::Any)
        } else if let Some(suffix) = lower.strip_prefix("*.") {
            ok(suffix).then(|| HostPattern::Suffix(format!(".{suffix}").into_bytes().into()))
        } else {
            ok(&lower).then(|| HostPattern::Exact(lower.into_bytes().into()))
        }
    }

    /// Match quality: higher is more specific; `None` for no match.
    pub(super) fn score(&self, host: &[u8]) -> Option<usize> {
        match self {
            HostPattern::Any => Some(0),
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h).then_some(usize::MAX),
            HostPattern::Suffix(s) => (host.len() > s.len()
                && host[host.len() - s.len()..].eq_ignore_ascii_case(s))
            .then_some(s.len()),
        }
    }
}

/// Where an (API, stage) pair is reachable: host pattern plus path prefix.
#[derive(Debug, Clone)]
pub struct Mount {
    pub(super) host: HostPattern,
    /// Path prefix without trailing slash; empty for the root.
    pub(super) prefix: Box<[u8]>,
    pub(super) api: u32,
    pub(super) stage: u32,
    /// A custom domain's mapping: served on TLS connections only.
    pub(super) tls_only: bool,
}

/// What [`compile`] produces.
pub(super) struct Compiled {
    pub apis: Vec<Api>,
    pub mounts: Vec<Mount>,
    /// Per-route metric labels, indexed by a stage's `counter_base` plus
    /// the route id.
    pub route_labels: Vec<RouteLabels>,
    /// Access logs, indexed like `route_labels`.
    pub route_logs: Vec<Option<Arc<StageLog>>>,
    /// Every access log destination, in first-use order.
    pub log_destinations: Vec<Destination>,
}

/// Compiles a stage's access log settings; `dests` collects destinations.
fn compile_log(
    l: &AccessLogConfig,
    spath: &str,
    dests: &mut Vec<Destination>,
    issue: &mut impl FnMut(String, String),
) -> Option<Arc<StageLog>> {
    let format = match Format::parse(&l.format) {
        Ok(f) => f,
        Err(e) => {
            issue(format!("{spath}.access_log.format"), e.to_string());
            return None;
        }
    };
    let dest = match l.destination.trim() {
        "" => {
            issue(
                format!("{spath}.access_log.destination"),
                "must be \"stdout\" or a file path".into(),
            );
            return None;
        }
        "stdout" | "-" => Destination::Stdout,
        path => Destination::File(path.into()),
    };
    let sink = match dests.iter().position(|d| *d == dest) {
        Some(i) => i,
        None => {
            dests.push(dest);
            dests.len() - 1
        }
    };
    Some(Arc::new(StageLog {
        format,
        sink: sink as u32,
    }))
}

/// Amazon API Gateway's stage variable limits: at most 100 per stage, names
/// of letters, digits and `_` up to 64 characters, values up to 512
/// characters. (A longer value could only build a request line no
/// backend takes.)
pub const MAX_STAGE_VARIABLES: usize = 100;
pub const MAX_STAGE_VARIABLE_NAME: usize = 64;
pub const MAX_STAGE_VARIABLE_VALUE: usize = 512;

fn check_variables(
    vars: &BTreeMap<String, String>,
    path: &str,
    issue: &mut impl FnMut(String, String),
) {
    if vars.len() > MAX_STAGE_VARIABLES {
        issue(
            path.to_string(),
            format!(
                "{} variables: at most {MAX_STAGE_VARIABLES} per stage (Amazon API Gateway's limit)",
                vars.len()
            ),
        );
    }
    for (name, value) in vars {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_STAGE_VARIABLE_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            issue(
                format!("{path}.{name}"),
                format!("a name is 1 to {MAX_STAGE_VARIABLE_NAME} letters, digits or `_`"),
            );
        }
        let chars = value.chars().count();
        if chars > MAX_STAGE_VARIABLE_VALUE {
            issue(
                format!("{path}.{name}"),
                format!(
                    "the value is {chars} characters: at most {MAX_STAGE_VARIABLE_VALUE} (Amazon API Gateway's limit)"
                ),
            );
        }
    }
}

/// Compiles route `r`'s integration with stage variables `vars`; an error
/// comes with its key path (under `ipath`, the route's `integration`).
fn compile_integration(
    r: &RouteConfig,
    key: Option<&RouteKey>,
    ipath: &str,
    vars: &BTreeMap<String, String>,
    t: &TimeoutsConfig,
    limits: &LimitsConfig,
) -> Result<Integration, (String, IntegrationError)> {
    match &r.integration {
        IntegrationConfig::Http {
            uri,
            timeout,
            preserve_host,
            tls,
        } => {
            let names = key.map(|k| k.param_names()).unwrap_or_default();
            let mut h = substitute_stage_variables(uri, vars)
                .and_then(|u| {
                    HttpIntegration::compile(
                        &u,
                        &names,
                        timeout.unwrap_or(t.integration),
                        *preserve_host,
                    )
                })
                .map_err(|e| (format!("{ipath}.uri"), e))?;
            if h.literal_len() > limits.max_uri_bytes {
                return Err((
                    format!("{ipath}.uri"),
                    IntegrationError::TooLarge {
                        what: "the backend request target (stage variables substituted)",
                        len: h.literal_len(),
                        limit: limits.max_uri_bytes,
                        why: "server.limits.max_uri_bytes: backends refuse longer request lines",
                    },
                ));
            }
            // Decided on the substituted URI: a stage variable may hold
            // the scheme.
            if h.https {
                let (backend, key) =
                    super::tls::backend(h.host_name(), tls.as_ref()).map_err(|(field, e)| {
                        (
                            format!("{ipath}.{field}"),
                            IntegrationError::Tls(e.to_string()),
                        )
                    })?;
                h.tls = Some(backend);
                h.pool_key = key;
            } else if tls.is_some() {
                return Err((format!("{ipath}.tls"), IntegrationError::TlsOnPlain));
            }
            Ok(Integration::Http(h))
        }
        IntegrationConfig::Mock {
            status,
            headers,
            body,
        } => {
            let m = MockIntegration::compile(*status, headers, body)
                .map_err(|e| (ipath.to_string(), e))?;
            if m.headers.len() > limits.max_response_header_bytes {
                return Err((
                    format!("{ipath}.headers"),
                    IntegrationError::TooLarge {
                        what: "the header block",
                        len: m.headers.len(),
                        limit: limits.max_response_header_bytes,
                        why: "server.limits.max_response_header_bytes, the limit a backend's head is held to",
                    },
                ));
            }
            if m.body.len() as u64 > limits.max_body_bytes {
                return Err((
                    format!("{ipath}.body"),
                    IntegrationError::TooLarge {
                        what: "the body",
                        len: m.body.len(),
                        limit: limits.max_body_bytes as usize,
                        why: "server.limits.max_body_bytes",
                    },
                ));
            }
            Ok(Integration::Mock(m))
        }
    }
}

/// Compiles every `[[api]]`; stage and route limits are appended to
/// `limits`, problems go to `issue`.
pub(super) fn compile(
    config: &Config,
    t: &TimeoutsConfig,
    limits: &mut Vec<Limit>,
    issue: &mut impl FnMut(String, String),
) -> Compiled {
    let mut apis = Vec::new();
    let mut mounts: Vec<Mount> = Vec::new();
    let mut route_labels: Vec<RouteLabels> = Vec::new();
    let mut route_logs = Vec::new();
    let mut log_destinations = Vec::new();
    for (ai, a) in config.apis.iter().enumerate() {
        let apath = format!("api[{ai}]");
        if a.name.trim().is_empty() {
            issue(format!("{apath}.name"), "must not be empty".into());
        } else if a.name.contains('/') || a.name.chars().any(char::is_control) {
            // `API/STAGE` names in usage plans and cache keys rely on it.
            issue(
                format!("{apath}.name"),
                format!("`{}` must not contain `/` or control characters", a.name),
            );
        }
        if config.apis[..ai].iter().any(|o| o.name == a.name) {
            issue(
                format!("{apath}.name"),
                format!("API name `{}` is used twice", a.name),
            );
        }
        let base = a.base_path.trim_end_matches('/');
        if !base.is_empty() && (!base.starts_with('/') || base.contains(['{', '}', '?', '#', ' ']))
        {
            issue(
                format!("{apath}.base_path"),
                format!("`{}` must be a literal path starting with `/`", a.base_path),
            );
        } else {
            // Request paths are normalised before they meet it: a base
            // path in another form could never match.
            match crate::http::normal_form(base) {
                Ok(normal) if normal != base => issue(
                    format!("{apath}.base_path"),
                    format!(
                        "`{}` is not in the form request paths are normalised to: write `{normal}`",
                        a.base_path
                    ),
                ),
                Ok(_) => {}
                Err(why) => issue(
                    format!("{apath}.base_path"),
                    format!("`{}`: {why} (such a request is refused)", a.base_path),
                ),
            }
        }
        // `hosts = []`: reachable only through custom domain mappings
        // (Amazon API Gateway's disabled default endpoint).
        let mut hosts = Vec::new();
        for (hi, h) in a.hosts.iter().enumerate() {
            match HostPattern::parse(h) {
                Some(p) => hosts.push(p),
                None => issue(
                    format!("{apath}.hosts[{hi}]"),
                    format!("`{h}` is not a host name, `*.suffix` or `*`"),
                ),
            }
        }

        let mut routes = RouteTable::new();
        let mut keys = Vec::new();
        for (ri, r) in a.routes.iter().enumerate() {
            let rpath = format!("{apath}.route[{ri}].key");
            // A route whose path is longer than any request target the
            // gateway takes can never match.
            let path_len = r
                .key
                .trim()
                .split_once(' ')
                .map_or(0, |(_, p)| p.trim().len());
            if path_len + base.len() > config.server.limits.max_uri_bytes {
                issue(
                    rpath,
                    format!(
                        "the path is {} bytes (with the base path): longer than server.limits.max_uri_bytes ({}), so no request can match it",
                        path_len + base.len(),
                        config.server.limits.max_uri_bytes
                    ),
                );
                keys.push(None);
                continue;
            }
            match r.key.parse::<RouteKey>() {
                Ok(k) => {
                    if let Err(e) = routes.insert(&k) {
                        issue(rpath, e.to_string());
                    }
                    keys.push(Some(k));
                }
                Err(e) => {
                    issue(rpath, format!("`{}`: {e}", r.key));
                    keys.push(None);
                }
            }
        }
        if a.routes.is_empty() {
            issue(
                format!("{apath}.route"),
                "an API needs at least one route".into(),
            );
        }

        let default_stage = [super::schema::StageConfig {
            name: "$default".into(),
            variables: Default::default(),
            throttle: None,
            api_key_required: false,
            cache: None,
            access_log: None,
            canary: None,
        }];
        let stage_cfgs: &[_] = if a.stages.is_empty() {
            &default_stage
        } else {
            &a.stages
        };
        let mut stages = Vec::new();
        for (si, st) in stage_cfgs.iter().enumerate() {
            let spath = format!("{apath}.stage[{si}]");
            let valid_name = st.name == "$default"
                || (!st.name.is_empty()
                    && st
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            if !valid_name {
                issue(
                    format!("{spath}.name"),
                    format!(
                        "`{}` must be `$default` or letters, digits, `-` and `_`",
                        st.name
                    ),
                );
            }
            check_variables(&st.variables, &format!("{spath}.variables"), issue);
            if let Some(c) = &st.canary {
                check_variables(&c.variables, &format!("{spath}.canary.variables"), issue);
            }
            if stage_cfgs[..si].iter().any(|o| o.name == st.name) {
                issue(
                    format!("{spath}.name"),
                    format!("stage `{}` is defined twice", st.name),
                );
            }
            let mut integrations = Vec::new();
            // Routes whose integration compiled for the stage: only these
            // are reported again for the canary (no duplicate issues).
            let mut stage_ok = Vec::with_capacity(a.routes.len());
            for (ri, r) in a.routes.iter().enumerate() {
                let ipath = format!("{apath}.route[{ri}].integration");
                if let IntegrationConfig::Http {
                    timeout: Some(timeout),
                    ..
                } = &r.integration
                {
                    if timeout.is_zero() {
                        issue(
                            format!("{ipath}.timeout"),
                            "must be greater than zero".into(),
                        );
                    }
                }
                match compile_integration(
                    r,
                    keys[ri].as_ref(),
                    &ipath,
                    &st.variables,
                    t,
                    &config.server.limits,
                ) {
                    Ok(i) => {
                        integrations.push(i);
                        stage_ok.push(true);
                    }
                    Err((p, e)) => {
                        let reason = if a.stages.is_empty() {
                            e.to_string()
                        } else {
                            format!("{e} (in stage `{}`)", st.name)
                        };
                        issue(p, reason);
                        stage_ok.push(false);
                    }
                }
            }
            let prefix = if st.name == "$default" {
                base.to_string()
            } else {
                format!("{base}/{}", st.name)
            };
            for h in &hosts {
                if let Some(other) = mounts
                    .iter()
                    .find(|m| m.host == *h && *m.prefix == *prefix.as_bytes())
                {
                    issue(
                        spath.to_string(),
                        format!(
                            "API `{}` stage `{}` is reachable at the same host and path prefix `{prefix}` as API `{}`",
                            a.name, st.name, config.apis[other.api as usize].name
                        ),
                    );
                }
                mounts.push(Mount {
                    host: h.clone(),
                    prefix: prefix.as_bytes().into(),
                    api: ai as u32,
                    stage: si as u32,
                    tls_only: false,
                });
            }
            let mut add_limit = |t: &Option<super::schema::ThrottleConfig>| {
                t.map(|t| {
                    limits.push(Limit {
                        rate: t.rate,
                        burst: t.burst,
                    });
                    (limits.len() - 1) as u32
                })
            };
            let limit = add_limit(&st.throttle);
            let route_limits: Vec<Option<u32>> =
                a.routes.iter().map(|r| add_limit(&r.throttle)).collect();
            let key_required: Vec<bool> = a
                .routes
                .iter()
                .map(|r| r.api_key_required.unwrap_or(st.api_key_required))
                .collect();
            let guards: Vec<Guard> = a
                .routes
                .iter()
                .zip(&key_required)
                .zip(&route_limits)
                .map(|((r, &key), &limit)| Guard {
                    key,
                    limit,
                    mock: matches!(r.integration, IntegrationConfig::Mock { .. }),
                })
                .collect();
            let any_guarded = guards.iter().any(|g| g.guards());
            let param_names: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    k.as_ref()
                        .map(|k| k.param_names().into_iter().map(String::from).collect())
                        .unwrap_or_default()
                })
                .collect();
            let (cache, route_cache) =
                super::caching::compile_stage(a, &apath, st, &spath, &param_names, issue);
            let counter_base = route_labels.len() as u32;
            route_labels.extend(a.routes.iter().map(|r| RouteLabels {
                api: a.name.clone(),
                stage: st.name.clone(),
                route: r.key.clone(),
                canary: false,
            }));
            let log = st
                .access_log
                .as_ref()
                .and_then(|l| compile_log(l, &spath, &mut log_destinations, issue));
            route_logs.extend(a.routes.iter().map(|_| log.clone()));
            let canary = st.canary.as_ref().map(|c| {
                let cpath = format!("{spath}.canary");
                if !(0.0..=100.0).contains(&c.percent) {
                    issue(
                        format!("{cpath}.percent"),
                        format!("{} is not a percentage from 0.0 to 100.0", c.percent),
                    );
                }
                // Amazon API Gateway's `stageVariableOverrides`: the
                // canary's values win over the stage's.
                let mut vars = st.variables.clone();
                vars.extend(c.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
                let mut canary_integrations = Vec::with_capacity(a.routes.len());
                for (ri, r) in a.routes.iter().enumerate() {
                    let ipath = format!("{apath}.route[{ri}].integration");
                    match compile_integration(
                        r,
                        keys[ri].as_ref(),
                        &ipath,
                        &vars,
                        t,
                        &config.server.limits,
                    ) {
                        Ok(i) => canary_integrations.push(i),
                        // The stage's own error, already reported.
                        Err(_) if !stage_ok[ri] => {}
                        Err((p, e)) => issue(
                            p,
                            format!(
                                "{e} (in the canary of stage `{}`: see {cpath}.variables)",
                                st.name
                            ),
                        ),
                    }
                }
                // A second block of counters, labelled `canary: true`, so
                // canary requests are counted and logged on their own.
                let counter_base = route_labels.len() as u32;
                route_labels.extend(a.routes.iter().map(|r| RouteLabels {
                    api: a.name.clone(),
                    stage: st.name.clone(),
                    route: r.key.clone(),
                    canary: true,
                }));
                route_logs.extend(a.routes.iter().map(|_| log.clone()));
                Canary {
                    percent: c.percent,
                    sticky: c.sticky,
                    integrations: canary_integrations,
                    counter_base,
                }
            });
            stages.push(Stage {
                name: st.name.clone(),
                integrations,
                limit,
                route_limits,
                key_required,
                guards,
                any_guarded,
                key_plans: HashMap::new(),
                counter_base,
                cache,
                route_cache,
                canary,
            });
        }
        let leniency = config.server.ambiguous_paths.leniency();
        let any_guarded = stages.iter().any(|s| s.any_guarded);
        let lenient = (any_guarded && !leniency.is_off())
            .then(|| crate::router::lenient::LenientTable::build(&keys, leniency));
        apis.push(Api {
            name: a.name.clone(),
            routes,
            route_keys: a.routes.iter().map(|r| r.key.clone()).collect(),
            stages,
            lenient,
        });
    }
    Compiled {
        apis,
        mounts,
        route_labels,
        route_logs,
        log_destinations,
    }
}
