//! API keys and usage plans: validated and compiled into the key table,
//! each stage's key → limits map, and the quota list.

use std::collections::HashMap;

use super::schema::Config;
use super::snapshot::{Api, Limit};
use super::ConfigIssue;
use crate::auth::api_key::{self, KeyId, KeyTable};
use crate::throttle::quota::Period;

/// A key's limits on one stage, from its usage plan: indexes into
/// [`super::Snapshot::limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    pub throttle: Option<u32>,
    pub quota: Option<u32>,
    /// The quota's period (for `Retry-After` when it is used up).
    pub period: Option<Period>,
}

/// One (usage plan, key) quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaInfo {
    /// Index into [`super::Snapshot::limits`].
    pub limit: u32,
    /// `plan/key`: the name its counter is stored under.
    pub name: String,
    pub period: Period,
    /// Requests allowed per period.
    pub count: u64,
    /// Subtracted from the first period's allowance.
    pub offset: u64,
}

/// Compiles `[[api_key]]`, `server.api_keys_file` and `[[usage_plan]]`,
/// filling each stage's `key_plans`. Problems go to `issue`.
pub(super) fn build(
    config: &Config,
    apis: &mut [Api],
    limits: &mut Vec<Limit>,
    issue: &mut impl FnMut(String, String),
    warnings: &mut Vec<ConfigIssue>,
) -> (KeyTable, Vec<QuotaInfo>) {
    let mut keys = KeyTable::default();
    for (i, k) in config.api_keys.iter().enumerate() {
        let path = format!("api_key[{i}]");
        if k.name.trim().is_empty() || k.name.contains(char::is_whitespace) {
            issue(
                format!("{path}.name"),
                "must be a name without spaces".into(),
            );
            continue;
        }
        let digest = match (&k.value, &k.value_sha256) {
            (Some(v), None) => {
                api_key::digest_of_value(v).map_err(|e| (format!("{path}.value"), e))
            }
            (None, Some(h)) => {
                api_key::parse_digest(h).map_err(|e| (format!("{path}.value_sha256"), e))
            }
            _ => {
                issue(path, "set exactly one of `value` and `value_sha256`".into());
                continue;
            }
        };
        match digest.and_then(|d| {
            keys.insert(&k.name, d)
                .map_err(|e| (format!("{path}.name"), e))
        }) {
            Ok(_) => {}
            Err((p, e)) => issue(p, e.to_string()),
        }
    }
    if let Some(file) = &config.server.api_keys_file {
        let path = "server.api_keys_file".to_string();
        match std::fs::read_to_string(file) {
            Err(e) => issue(path, format!("cannot read {}: {e}", file.display())),
            Ok(text) => match api_key::parse_key_file(&text) {
                Err(errors) => {
                    for e in errors {
                        issue(path.clone(), format!("{}: {e}", file.display()));
                    }
                }
                Ok(list) => {
                    for k in list {
                        if let Err(e) = keys.insert(&k.name, k.digest) {
                            issue(
                                path.clone(),
                                format!("{}: line {}: {e}", file.display(), k.line),
                            );
                        }
                    }
                }
            },
        }
    }

    let mut quotas = Vec::new();
    // (api, stage, key) → plan that binds them: one plan per key per stage.
    let mut bound: HashMap<(usize, usize, KeyId), usize> = HashMap::new();
    for (pi, plan) in config.usage_plans.iter().enumerate() {
        let path = format!("usage_plan[{pi}]");
        if plan.name.trim().is_empty() || plan.name.contains(['/', ' ']) {
            issue(
                format!("{path}.name"),
                "must be a name without `/` or spaces".into(),
            );
        }
        if config.usage_plans[..pi].iter().any(|o| o.name == plan.name) {
            issue(
                format!("{path}.name"),
                format!("usage plan `{}` is defined twice", plan.name),
            );
        }
        let mut stages = Vec::new();
        for (si, s) in plan.stages.iter().enumerate() {
            match find_stage(apis, s) {
                Some(found) => {
                    let (a, st) = found;
                    if !apis[a].stages[st].key_required.iter().any(|&k| k) {
                        warnings.push(ConfigIssue {
                            path: format!("{path}.stages[{si}]"),
                            reason: format!(
                                "no route of `{s}` requires an API key, so this plan meters nothing there (set api_key_required on the stage or its routes)"
                            ),
                        });
                    }
                    stages.push(found)
                }
                None => issue(
                    format!("{path}.stages[{si}]"),
                    format!("`{s}` is not an `API/STAGE` of this configuration"),
                ),
            }
        }
        if plan.stages.is_empty() {
            issue(
                format!("{path}.stages"),
                "must list at least one `API/STAGE`".into(),
            );
        }
        if let Some(q) = &plan.quota {
            if q.offset >= q.limit && q.limit > 0 {
                issue(
                    format!("{path}.quota.offset"),
                    format!("{} must be below the limit {}", q.offset, q.limit),
                );
            }
        }
        for (ki, name) in plan.keys.iter().enumerate() {
            let Some(key) = keys.id_of(name) else {
                issue(
                    format!("{path}.keys[{ki}]"),
                    format!("no API key is named `{name}`"),
                );
                continue;
            };
            let throttle = plan.throttle.map(|t| {
                limits.push(Limit {
                    rate: t.rate,
                    burst: t.burst,
                });
                (limits.len() - 1) as u32
            });
            let quota = plan.quota.map(|q| {
                limits.push(Limit {
                    rate: 0,
                    burst: q.limit,
                });
                let limit = (limits.len() - 1) as u32;
                quotas.push(QuotaInfo {
                    limit,
                    name: format!("{}/{name}", plan.name),
                    period: q.period,
                    count: q.limit,
                    offset: q.offset,
                });
                limit
            });
            for &(a, s) in &stages {
                if let Some(&other) = bound.get(&(a, s, key)) {
                    issue(
                        format!("{path}.keys[{ki}]"),
                        format!(
                            "key `{name}` is already in usage plan `{}` for stage `{}/{}`; a key may be in one plan per stage",
                            config.usage_plans[other].name, apis[a].name, apis[a].stages[s].name
                        ),
                    );
                    continue;
                }
                bound.insert((a, s, key), pi);
                apis[a].stages[s].key_plans.insert(
                    key,
                    KeyLimits {
                        throttle,
                        quota,
                        period: plan.quota.map(|q| q.period),
                    },
                );
            }
        }
    }
    (keys, quotas)
}

/// Checks every throttle in the configuration: a bucket of size 0 admits
/// nothing, so `burst = 0` is allowed only with `rate = 0` (the documented
/// way to block); and the client-IP table needs one entry per stripe.
pub(super) fn check_limits(config: &Config, issue: &mut impl FnMut(String, String)) {
    let mut check = |path: String, rate: u64, burst: u64| {
        if burst == 0 && rate > 0 {
            issue(
                format!("{path}.burst"),
                format!("0 admits nothing (burst is the bucket size): use at least 1 with rate {rate}, or rate = 0 to block"),
            );
        }
    };
    let th = &config.server.throttle;
    if th.enabled {
        check("server.throttle".into(), th.rate, th.burst);
    }
    if let Some(c) = &th.client_ip {
        check("server.throttle.client_ip".into(), c.rate, c.burst);
    }
    for (ai, a) in config.apis.iter().enumerate() {
        for (si, st) in a.stages.iter().enumerate() {
            if let Some(t) = st.throttle {
                check(format!("api[{ai}].stage[{si}].throttle"), t.rate, t.burst);
            }
        }
        for (ri, r) in a.routes.iter().enumerate() {
            if let Some(t) = r.throttle {
                check(format!("api[{ai}].route[{ri}].throttle"), t.rate, t.burst);
            }
        }
    }
    for (pi, p) in config.usage_plans.iter().enumerate() {
        if let Some(t) = p.throttle {
            check(format!("usage_plan[{pi}].throttle"), t.rate, t.burst);
        }
    }
    if let Some(c) = &th.client_ip {
        let min = crate::throttle::client_ip::STRIPES;
        if c.max_clients < min {
            issue(
                "server.throttle.client_ip.max_clients".into(),
                format!(
                    "{} is below the minimum {min} (one entry per table stripe)",
                    c.max_clients
                ),
            );
        }
    }
}

/// `API/STAGE` → (api index, stage index).
fn find_stage(apis: &[Api], name: &str) -> Option<(usize, usize)> {
    let (api, stage) = name.split_once('/')?;
    let ai = apis.iter().position(|a| a.name == api)?;
    let si = apis[ai].stages.iter().position(|s| s.name == stage)?;
    Some((ai, si))
}
