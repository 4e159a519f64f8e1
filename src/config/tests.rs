use super::*;

fn host() -> Host {
    Host::with_cpus(vec![0, 1])
}

fn build(text: &str) -> Result<Snapshot, Vec<ConfigIssue>> {
    from_str(text, "test.toml", &host()).map_err(|e| e.issues())
}

fn paths(text: &str) -> Vec<String> {
    match build(text) {
        Ok(_) => panic!("config should be rejected"),
        Err(issues) => issues.into_iter().map(|i| i.path).collect(),
    }
}

const MINIMAL: &str = r#"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false

[[api]]
name = "demo"
[[api.route]]
key = "GET /hello"
integration = { type = "mock", body = "hi" }
"#;

#[test]
fn bundled_config_is_valid() {
    let text = include_str!("../../config.toml");
    let snap = build(text).expect("bundled config.toml must validate");
    assert!(!snap.apis.is_empty());
}

#[test]
fn minimal_config_uses_documented_defaults() {
    let snap = build(MINIMAL).expect("valid");
    assert_eq!(snap.server.cores, vec![0, 1]);
    assert_eq!(snap.server.limits.max_header_bytes, 10_240);
    assert_eq!(snap.server.limits.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(
        snap.server.timeouts.integration,
        std::time::Duration::from_secs(29)
    );
    assert_eq!(&*snap.server.request_id_header, b"x-request-id");
    // Deferred accept is on unless a listener turns it off.
    assert!(snap.server.listeners.iter().all(|l| l.defer_accept));
    let off =
        build(&MINIMAL.replace("tls = false", "tls = false\ndefer_accept = false")).expect("valid");
    assert!(off.server.listeners.iter().all(|l| !l.defer_accept));
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let text = MINIMAL.replace("tls = false", "tls = false\nbaklog = 5");
    let issues = build(&text).expect_err("unknown key");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].path, "server.listen[0].baklog");
    assert!(issues[0].reason.contains("baklog"), "{}", issues[0].reason);
    assert!(issues[0].reason.contains("line"), "{}", issues[0].reason);
}

#[test]
fn type_errors_name_the_key() {
    let text = MINIMAL.replace("tls = false", "tls = false\nbacklog = \"many\"");
    let issues = build(&text).expect_err("type error");
    assert_eq!(issues[0].path, "server.listen[0].backlog");
}

#[test]
fn every_semantic_error_is_reported() {
    let text = r#"
[server]
shards = 5
[server.limits]
max_headers = 0
[[server.listen]]
addr = "localhost:80"
[[api]]
name = "a"
hosts = ["bad host"]
[[api.route]]
key = "GET /x/{id}"
integration = { type = "http", uri = "http://127.0.0.1:9000/{nope}" }
[[api.route]]
key = "FETCH x"
integration = { type = "mock", status = 700 }
[[api.route]]
key = "GET /x/{other}"
integration = { type = "mock" }
"#;
    let p = paths(text);
    for expected in [
        "server.shards",
        "server.listen[0].addr",
        "server.limits.max_headers",
        "api[0].hosts[0]",
        "api[0].route[0].integration.uri",
        "api[0].route[1].key",
        "api[0].route[1].integration",
        "api[0].route[2].key",
    ] {
        assert!(
            p.iter().any(|x| x == expected),
            "missing {expected} in {p:?}"
        );
    }
}

#[test]
fn tls_and_domain_errors_name_their_field() {
    let text = r#"
[server]
shards = 1
[[server.listen]]
addr = "127.0.0.1:8443"
certificate = "/nonexistent/cert.pem"
key = "/nonexistent/key.pem"
[[server.listen]]
addr = "127.0.0.1:8444"
certificate = "/nonexistent/cert.pem"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
key = "/x.pem"
[[api]]
name = "a"
[[api.route]]
key = "GET /x"
integration = { type = "http", uri = "http://127.0.0.1:9000/", tls = { ca = "/ca.pem" } }
[[api.route]]
key = "GET /y"
integration = { type = "http", uri = "https://127.0.0.1:9000/", tls = { ca = "/nonexistent/ca.pem" } }
[[domain]]
name = "*"
[[domain]]
name = "api.example.com"
mtls = { truststore = "/nonexistent/ca.pem", headers = { subject = "bad header" } }
[[domain.mapping]]
api = "nope"
stage = "$default"
[[domain.mapping]]
base_path = "v1"
api = "a"
stage = "prod"
[[domain.mapping]]
base_path = "{x}"
api = "a"
stage = "$default"
[[domain]]
name = "other.example.com"
"#;
    let p = paths(text);
    assert!(
        !p.iter().any(|x| x.starts_with("domain[2]")),
        "a domain without mappings only brings a certificate: {p:?}"
    );
    for expected in [
        "server.listen[0].certificate",
        "server.listen[1].certificate",
        "server.listen[2].certificate",
        "api[0].route[0].integration.tls",
        "api[0].route[1].integration.tls.ca",
        "domain[0].name",
        "domain[1].mtls.headers.subject",
        "domain[1].mapping[0].api",
        "domain[1].mapping[1].stage",
        "domain[1].mapping[2].base_path",
    ] {
        assert!(
            p.iter().any(|x| x == expected),
            "missing {expected} in {p:?}"
        );
    }
}

#[test]
fn domains_warn_about_mtls_stages_reachable_without_certificates() {
    let dir = std::env::temp_dir().join(format!("tollgate-cfg-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let c = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).expect("rcgen");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, c.cert.pem()).expect("write");
    let text = format!(
        r#"
[server]
shards = 1
state_dir = "{}"
[[server.listen]]
addr = "127.0.0.1:8443"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
unknown_sni = "refuse"
[[api]]
name = "open"
[[api.route]]
key = "GET /x"
integration = {{ type = "mock" }}
[[api]]
name = "closed"
hosts = []
[[api.route]]
key = "GET /x"
integration = {{ type = "mock" }}
[[api]]
name = "nowhere"
hosts = []
[[api.route]]
key = "GET /x"
integration = {{ type = "mock" }}
[[domain]]
name = "m.example.com"
mtls = {{ truststore = "{}" }}
[[domain.mapping]]
base_path = "a"
api = "open"
stage = "$default"
[[domain.mapping]]
base_path = "b"
api = "closed"
stage = "$default"
[[domain]]
name = "n.example.com."
mtls = {{ truststore = "{}" }}
[[api]]
name = "dotted"
hosts = ["dot.example.com."]
[[api.route]]
key = "GET /d"
integration = {{ type = "mock" }}
"#,
        dir.display(),
        ca.display(),
        ca.display()
    );
    let snap = build(&text).expect("valid");
    // A mutual-TLS domain without mappings: its name is served on TLS
    // only (the API behind `*` must not answer it over plain HTTP).
    assert!(snap
        .resolve(Some(b"n.example.com"), b"GET", b"/x")
        .is_none());
    assert!(snap
        .resolve_on(Some(b"n.example.com"), b"GET", b"/x", true)
        .is_some_and(|r| r.api.name == "open"));
    // A final dot in a configured host names the same host.
    assert!(snap
        .resolve(Some(b"dot.example.com"), b"GET", b"/d")
        .is_some_and(|r| r.api.name == "dotted"));
    assert!(snap
        .resolve(Some(b"dot.example.com."), b"GET", b"/d")
        .is_some_and(|r| r.api.name == "dotted"));
    let warned: Vec<&str> = snap.warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(warned.contains(&"domain[0].mapping[0]"), "{warned:?}");
    assert!(
        !warned.contains(&"domain[0].mapping[1]"),
        "hosts = [] closes it"
    );
    assert!(warned.contains(&"api[2].hosts"), "{warned:?}");
    // Domain mappings serve TLS connections only.
    assert!(snap
        .resolve_on(Some(b"m.example.com"), b"GET", b"/b/x", true)
        .is_some_and(|r| r.api.name == "closed"));
    assert!(snap
        .resolve_on(Some(b"m.example.com"), b"GET", b"/b/x", false)
        .is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stage_variable_may_make_a_backend_https() {
    let text = r#"
[server]
shards = 1
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
[[api]]
name = "a"
[[api.stage]]
name = "prod"
variables = { backend = "https://127.0.0.1:9443" }
[[api.route]]
key = "GET /x"
integration = { type = "http", uri = "${stageVariables.backend}/x" }
"#;
    let snap = build(text).expect("valid");
    let r = snap.resolve(None, b"GET", b"/prod/x").expect("route");
    match r.integration() {
        Some(crate::integration::Integration::Http(h)) => {
            assert!(h.https && h.tls.is_some(), "TLS from the substituted URI");
            assert_ne!(h.pool_key, 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_integration_type_is_rejected() {
    let text = MINIMAL.replace("type = \"mock\"", "type = \"lambda\"");
    let issues = build(&text).expect_err("bad type");
    assert!(
        issues[0].path.starts_with("api[0].route[0].integration"),
        "{issues:?}"
    );
}

#[test]
fn shards_forms() {
    let with = |s: &str| {
        MINIMAL.replace(
            "[[server.listen]]",
            &format!("[server]\nshards = {s}\n[[server.listen]]"),
        )
    };
    assert_eq!(build(&with("1")).expect("count").server.cores, vec![0]);
    assert_eq!(build(&with("[1]")).expect("list").server.cores, vec![1]);
    assert_eq!(
        build(&with("\"auto\"")).expect("auto").server.cores,
        vec![0, 1]
    );
    assert_eq!(paths(&with("[7]")), vec!["server.shards[0]"]);
    assert_eq!(paths(&with("\"many\"")), vec!["server.shards"]);
}

#[test]
fn stage_variables_must_exist() {
    let text = r#"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
[[api]]
name = "a"
[[api.stage]]
name = "prod"
variables = { backend = "127.0.0.1:9000" }
[[api.stage]]
name = "dev"
[[api.route]]
key = "ANY /{proxy+}"
integration = { type = "http", uri = "http://${stageVariables.backend}/{proxy}" }
"#;
    let issues = build(text).expect_err("dev lacks the variable");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].path, "api[0].route[0].integration.uri");
    assert!(
        issues[0].reason.contains("stage `dev`"),
        "{}",
        issues[0].reason
    );
}

#[test]
fn resolves_by_host_then_longest_prefix_then_route() {
    let text = r#"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
[[api]]
name = "catchall"
[[api.route]]
key = "$default"
integration = { type = "mock", status = 200 }
[[api]]
name = "pets"
hosts = ["*.example.com"]
base_path = "/v1"
[[api.stage]]
name = "prod"
[[api.stage]]
name = "$default"
[[api.route]]
key = "GET /pets/{id}"
integration = { type = "mock", status = 201 }
[[api]]
name = "exact"
hosts = ["api.example.com"]
[[api.route]]
key = "GET /pets/{id}"
integration = { type = "mock", status = 202 }
"#;
    let snap = build(text).expect("valid");
    let r = |host: &str, path: &str| {
        snap.resolve(Some(host.as_bytes()), b"GET", path.as_bytes())
            .map(|r| {
                (
                    r.api.name.clone(),
                    r.stage.name.clone(),
                    String::from_utf8_lossy(r.path).into_owned(),
                )
            })
    };
    assert_eq!(
        r("api.example.com:443", "/pets/1"),
        Some(("exact".into(), "$default".into(), "/pets/1".into()))
    );
    assert_eq!(
        r("x.example.com", "/v1/prod/pets/1"),
        Some(("pets".into(), "prod".into(), "/pets/1".into()))
    );
    assert_eq!(
        r("x.example.com", "/v1/pets/1"),
        Some(("pets".into(), "$default".into(), "/pets/1".into()))
    );
    // A wildcard host with no matching prefix: no route.
    assert_eq!(r("x.example.com", "/other"), None);
    assert_eq!(
        r("elsewhere.org", "/anything"),
        Some(("catchall".into(), "$default".into(), "/anything".into()))
    );
    // Prefixes match whole segments only.
    assert_eq!(r("x.example.com", "/v1production/pets/1"), None);
}

const PLANS: &str = r#"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false

[[api]]
name = "pets"
[[api.stage]]
name = "prod"
api_key_required = true
[[api.route]]
key = "GET /pets"
integration = { type = "mock", body = "hi" }
[[api.route]]
key = "GET /open"
api_key_required = false
integration = { type = "mock", body = "hi" }
"#;

#[test]
fn keys_and_plans_compile_into_stage_limits() {
    let text = format!(
        r#"{PLANS}
[[api_key]]
name = "alice"
value = "alice-key-0123456789abcdef"
[[usage_plan]]
name = "gold"
stages = ["pets/prod"]
keys = ["alice"]
throttle = {{ rate = 5, burst = 10 }}
quota = {{ limit = 1000, period = "MONTH", offset = 10 }}
"#
    );
    let snap = build(&text).expect("valid");
    let stage = &snap.apis[0].stages[0];
    assert_eq!(stage.key_required, vec![true, false]);
    let alice = snap.keys.id_of("alice").expect("alice");
    let limits = stage.key_plans[&alice];
    let t = limits.throttle.expect("throttle") as usize;
    let q = limits.quota.expect("quota") as usize;
    assert_eq!((snap.limits[t].rate, snap.limits[t].burst), (5, 10));
    assert_eq!((snap.limits[q].rate, snap.limits[q].burst), (0, 1000));
    assert_eq!(snap.quotas.len(), 1);
    assert_eq!(snap.quotas[0].name, "gold/alice");
    assert_eq!(snap.quotas[0].offset, 10);
    assert_eq!(
        snap.route_labels
            .iter()
            .map(|l| l.name())
            .collect::<Vec<_>>(),
        vec!["pets/prod GET /pets", "pets/prod GET /open"]
    );
}

#[test]
fn bad_keys_and_plans_are_reported_with_their_paths() {
    let text = format!(
        r#"{PLANS}
[[api_key]]
name = "short"
value = "too-short"
[[api_key]]
name = "both"
value = "both-key-0123456789abcdefg"
value_sha256 = "00"
[[api_key]]
name = "hashed"
value_sha256 = "not-hex"
[[api_key]]
name = "alice"
value = "alice-key-0123456789abcdef"
[[api_key]]
name = "alice"
value = "alice-key-0123456789abcdXX"
[[usage_plan]]
name = "a"
stages = ["pets/prod", "pets/nope", "nope"]
keys = ["alice", "ghost"]
quota = {{ limit = 5, period = "DAY", offset = 5 }}
[[usage_plan]]
name = "b"
stages = ["pets/prod"]
keys = ["alice"]
"#
    );
    let got = paths(&text);
    for want in [
        "api_key[0].value",
        "api_key[1]",
        "api_key[2].value_sha256",
        "api_key[4].name",
        "usage_plan[0].stages[1]",
        "usage_plan[0].stages[2]",
        "usage_plan[0].keys[1]",
        "usage_plan[0].quota.offset",
        "usage_plan[1].keys[0]",
    ] {
        assert!(got.iter().any(|p| p == want), "{want} missing from {got:?}");
    }
    let bad_period = format!(
        "{PLANS}\n[[usage_plan]]\nname = \"x\"\nstages = [\"pets/prod\"]\nquota = {{ limit = 5, period = \"YEAR\" }}\n"
    );
    assert_eq!(paths(&bad_period), vec!["usage_plan[0].quota.period"]);
}

#[test]
fn a_missing_key_file_is_an_error_on_its_field() {
    let text = PLANS.replace(
        "[[server.listen]]",
        "[server]\napi_keys_file = \"/nonexistent/keys.txt\"\n[[server.listen]]",
    );
    assert_eq!(paths(&text), vec!["server.api_keys_file"]);
}

#[test]
fn keys_load_from_a_key_file() {
    let file = std::env::temp_dir().join(format!("tollgate-keys-{}.txt", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "# name value\nfile-alice file-key-0123456789abcdef\nfile-bob sha256:{}\n",
            "ab".repeat(32)
        ),
    )
    .expect("write");
    let text = PLANS.replace(
        "[[server.listen]]",
        &format!(
            "[server]\napi_keys_file = \"{}\"\n[[server.listen]]",
            file.display()
        ),
    ) + "[[usage_plan]]\nname = \"p\"\nstages = [\"pets/prod\"]\nkeys = [\"file-alice\", \"file-bob\"]\n";
    let snap = build(&text).expect("valid");
    let _ = std::fs::remove_file(&file);
    assert_eq!(snap.keys.len(), 2);
    assert_eq!(
        snap.keys.lookup(b"file-key-0123456789abcdef"),
        snap.keys.id_of("file-alice")
    );
}

#[test]
fn a_zero_burst_with_a_rate_and_a_tiny_client_table_are_rejected() {
    let text = PLANS
        .replace(
            "[[server.listen]]",
            "[server.throttle.client_ip]\nrate = 5\nburst = 0\nmax_clients = 10\n[[server.listen]]",
        )
        .replace(
            "api_key_required = true\n",
            "api_key_required = true\nthrottle = { rate = 10, burst = 0 }\n",
        );
    let got = paths(&text);
    assert_eq!(
        got,
        vec![
            "server.throttle.client_ip.burst",
            "api[0].stage[0].throttle.burst",
            "server.throttle.client_ip.max_clients",
        ]
    );
    // rate 0, burst 0 is the way to block: accepted.
    let block = PLANS.replace(
        "api_key_required = true\n",
        "api_key_required = true\nthrottle = { rate = 0, burst = 0 }\n",
    );
    assert!(build(&block).is_ok());
}

#[test]
fn cache_settings_compile_and_bad_ones_are_reported() {
    let base = r#"
[server.cache]
capacity = "0.5GB"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
[[api]]
name = "c"
[[api.stage]]
name = "prod"
cache = { ttl = "60s" }
[[api.route]]
key = "GET /pets/{id}"
integration = { type = "http", uri = "http://127.0.0.1:9/pets/{id}" }
cache = { key = ["path.id", "query.type"], statuses = [200, 203] }
[[api.route]]
key = "GET /mock"
integration = { type = "mock", body = "hi" }
"#;
    let snap = build(base).expect("valid");
    assert_eq!(snap.cache.as_ref().map(|c| c.capacity), Some(500_000_000));
    let stage = &snap.apis[0].stages[0];
    let rc = stage.route_cache[0].as_ref().expect("cached");
    assert_eq!(rc.ttl, std::time::Duration::from_secs(60));
    assert_eq!(rc.statuses, vec![200, 203]);
    assert_eq!(rc.key.len(), 2);
    assert!(stage.route_cache[1].is_none(), "mock routes are not cached");

    let bad = base
        .replace("capacity = \"0.5GB\"", "capacity = \"lots\"")
        .replace("ttl = \"60s\"", "ttl = \"2h\"");
    assert_eq!(paths(&bad), vec!["server.cache.capacity"]);
    let bad = base
        .replace("ttl = \"60s\"", "ttl = \"2h\"")
        .replace("\"path.id\"", "\"path.nope\"")
        .replace("203", "42");
    let got = paths(&bad);
    for want in [
        "api[0].stage[0].cache.ttl",
        "api[0].route[0].cache.key[0]",
        "api[0].route[0].cache.statuses[1]",
    ] {
        assert!(got.iter().any(|p| p == want), "{want} missing from {got:?}");
    }
    assert_eq!(schema::parse_size("1.6GB"), Some(1_600_000_000));
    assert_eq!(schema::parse_size("64MiB"), Some(64 << 20));
    assert_eq!(schema::parse_size("512"), Some(512));
    assert_eq!(schema::parse_size("5 parsecs"), None);
}

#[test]
fn cache_capacity_takes_tier_names_sizes_and_bytes() {
    let capacity = |v: &str| {
        let text = format!("[server.cache]\ncapacity = {v}\n");
        toml::from_str::<schema::Config>(&text).map(|c| c.server.cache.capacity.0)
    };
    assert_eq!(capacity("\"0.5\"").ok(), Some(500_000_000));
    assert_eq!(capacity("0.5").ok(), Some(500_000_000));
    assert_eq!(capacity("\"13.5\"").ok(), Some(13_500_000_000));
    assert_eq!(capacity("\"237\"").ok(), Some(237_000_000_000));
    assert_eq!(capacity("28.4").ok(), Some(28_400_000_000));
    assert_eq!(capacity("\"58.2\"").ok(), Some(58_200_000_000));
    assert_eq!(capacity("\"6.1\"").ok(), Some(6_100_000_000));
    assert_eq!(capacity("\"1.6GB\"").ok(), Some(1_600_000_000));
    assert_eq!(capacity("\"64MiB\"").ok(), Some(64 << 20));
    assert_eq!(capacity("1048576").ok(), Some(1 << 20));
    let err = capacity("2.5").expect_err("not a tier").to_string();
    assert!(err.contains("not a cache tier"), "{err}");
    let err = capacity("\"lots\"").expect_err("not a size").to_string();
    assert!(err.contains("neither a cache tier"), "{err}");
}

#[test]
fn cached_methods_default_to_get_and_are_checked() {
    let text = |methods: &str| {
        format!(
            r#"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
[[api]]
name = "c"
[[api.stage]]
name = "prod"
cache = {{}}
[[api.route]]
key = "ANY /x"
integration = {{ type = "http", uri = "http://127.0.0.1:9/x" }}
cache = {{ {methods} }}
"#
        )
    };
    let snap = build(&text("")).expect("valid");
    let rc = snap.apis[0].stages[0].route_cache[0]
        .clone()
        .expect("cached");
    assert_eq!(rc.methods, vec![b"GET"[..].into()]);
    let snap = build(&text("methods = [\"GET\", \"POST\"]")).expect("valid");
    let rc = snap.apis[0].stages[0].route_cache[0]
        .clone()
        .expect("cached");
    assert_eq!(rc.methods.len(), 2);
    assert_eq!(
        paths(&text("methods = [\"HEAD\", \"post\"]")),
        vec![
            "api[0].route[0].cache.methods[0]",
            "api[0].route[0].cache.methods[1]"
        ]
    );
}

#[test]
fn a_cache_flush_by_key_removes_one_entry() {
    use crate::cache::store::CachedResponse;
    let cache =
        crate::cache::Cache::new(1 << 20, 1 << 16, 4, None, std::time::Duration::from_secs(1));
    for k in [&b"a/b\0k1"[..], b"a/b\0k2"] {
        cache.store.insert(
            cache.hasher.hash(k),
            CachedResponse {
                key: k.into(),
                status: 200,
                headers: bytes::Bytes::new(),
                body: bytes::Bytes::new(),
                stored_ns: 0,
                expires_ns: u64::MAX,
                vary: None,
                no_stale: false,
                initial_age: 0,
            },
        );
    }
    assert!(cache.flush_key(b"a/b\0k1"));
    assert!(!cache.flush_key(b"a/b\0k1"));
    assert_eq!(cache.store.stats().entries, 1);
    assert_eq!(cache.flush_stage("a", "b"), 1);
}

#[test]
fn partial_and_not_modified_answers_and_slashed_api_names_are_refused() {
    let text = r#"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
[server.cache]
lock_timeout = "2m"
[[api]]
name = "a/b"
[[api.stage]]
name = "prod"
cache = {}
[[api.route]]
key = "GET /x"
integration = { type = "http", uri = "http://127.0.0.1:9/x" }
cache = { statuses = [200, 206, 304], stale_if_error = "2d" }
"#;
    let got = paths(text);
    for want in [
        "api[0].name",
        "api[0].route[0].cache.statuses[1]",
        "api[0].route[0].cache.statuses[2]",
        "api[0].route[0].cache.stale_if_error",
        "server.cache.lock_timeout",
    ] {
        assert!(got.iter().any(|p| p == want), "{want} missing from {got:?}");
    }
}

#[test]
fn a_plan_on_a_stage_without_key_routes_is_a_warning() {
    let text = format!(
        r#"{PLANS}
[[api.stage]]
name = "open"
[[api_key]]
name = "alice"
value = "alice-key-0123456789abcdef"
[[usage_plan]]
name = "p"
stages = ["pets/prod", "pets/open"]
keys = ["alice"]
"#
    );
    // `open` is a second stage of `pets`; GET /pets requires a key only
    // where the stage says so (prod), and no route does in `open`.
    let snap = build(&text).expect("valid");
    let paths: Vec<&str> = snap.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, vec!["usage_plan[0].stages[1]"]);
    assert!(build(include_str!("../../config.toml"))
        .expect("bundled")
        .warnings
        .is_empty());
}

const CANARY: &str = r#"
[[server.listen]]
addr = "127.0.0.1:8080"
tls = false
[[api]]
name = "shop"
[[api.stage]]
name = "prod"
variables = { backend = "127.0.0.1:9001", path = "items" }
canary = { percent = 10.0, variables = { backend = "127.0.0.1:9002" }, sticky = true }
[[api.stage]]
name = "dev"
variables = { backend = "127.0.0.1:9003", path = "items" }
[[api.route]]
key = "GET /mock"
integration = { type = "mock", body = "hi" }
[[api.route]]
key = "ANY /{proxy+}"
integration = { type = "http", uri = "http://${stageVariables.backend}/${stageVariables.path}/{proxy}" }
"#;

fn http_addr(i: Option<&crate::integration::Integration>) -> String {
    match i {
        Some(crate::integration::Integration::Http(h)) => h.addr.to_string(),
        other => panic!("not an http integration: {other:?}"),
    }
}

#[test]
fn a_canary_compiles_with_merged_variables_and_counters_of_its_own() {
    let snap = build(CANARY).expect("valid");
    let prod = &snap.apis[0].stages[0];
    let canary = prod.canary.as_ref().expect("prod has a canary");
    assert_eq!(canary.percent, 10.0);
    assert!(canary.sticky);
    assert!(snap.apis[0].stages[1].canary.is_none());
    // The canary's `backend` wins; the stage's `path` is kept.
    assert_eq!(http_addr(prod.integrations.get(1)), "127.0.0.1:9001");
    assert_eq!(http_addr(canary.integrations.get(1)), "127.0.0.1:9002");
    // Counters: prod's block, prod's canary block, dev's block.
    let names: Vec<String> = snap.route_labels.iter().map(|l| l.name()).collect();
    assert_eq!(
        names,
        vec![
            "shop/prod GET /mock",
            "shop/prod ANY /{proxy+}",
            "shop/prod GET /mock canary",
            "shop/prod ANY /{proxy+} canary",
            "shop/dev GET /mock",
            "shop/dev ANY /{proxy+}",
        ]
    );
    assert_eq!(prod.counter_base, 0);
    assert_eq!(canary.counter_base, 2);
    assert_eq!(snap.apis[0].stages[1].counter_base, 4);
    assert_eq!(snap.route_logs.len(), snap.route_labels.len());
}

#[test]
fn picking_the_canary_switches_integration_metric_and_counter() {
    let snap = build(&CANARY.replace("percent = 10.0", "percent = 100.0")).expect("valid");
    let ids: Box<[u32]> = (0..snap.route_labels.len() as u32)
        .map(|i| 10 + i)
        .collect();
    snap.metric_ids.set(ids).expect("unset");
    let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let mut r = snap.resolve(None, b"GET", b"/prod/a").expect("resolves");
    assert_eq!((r.canary, r.metric, r.counter()), (false, 11, 1));
    assert_eq!(http_addr(r.integration()), "127.0.0.1:9001");
    // Sticky: the random draw is never asked for.
    assert!(r.pick_canary(&snap, ip, || unreachable!()));
    assert_eq!((r.canary, r.metric, r.counter()), (true, 13, 3));
    assert_eq!(http_addr(r.integration()), "127.0.0.1:9002");

    // A stage without a canary never asks either.
    let mut r = snap.resolve(None, b"GET", b"/dev/a").expect("resolves");
    assert!(!r.pick_canary(&snap, ip, || unreachable!()));
    assert_eq!((r.metric, r.counter()), (15, 5));

    // Percent 0, not sticky: never the canary.
    let snap = build(
        &CANARY
            .replace("percent = 10.0", "percent = 0.0")
            .replace("sticky = true", "sticky = false"),
    )
    .expect("valid");
    let mut r = snap.resolve(None, b"GET", b"/prod/a").expect("resolves");
    assert!(!r.pick_canary(&snap, ip, || u64::MAX));
    assert_eq!(http_addr(r.integration()), "127.0.0.1:9001");
}

#[test]
fn bad_canaries_are_reported_with_their_paths() {
    for bad in ["150.0", "-0.5", "nan", "inf"] {
        let text = CANARY.replace("percent = 10.0", &format!("percent = {bad}"));
        assert_eq!(
            paths(&text),
            vec!["api[0].stage[0].canary.percent"],
            "percent {bad}"
        );
    }
    // Percent is required; keys are checked.
    assert_eq!(
        paths(&CANARY.replace("percent = 10.0, ", "")),
        vec!["api[0].stage[0].canary"]
    );
    let text = CANARY.replace("sticky = true", "stiky = true");
    assert_eq!(paths(&text), vec!["api[0].stage[0].canary.stiky"]);
    // A canary variable that breaks a route's URI: the route's path, the
    // canary named.
    let text = CANARY.replace("127.0.0.1:9002", "bad host:x");
    let issues = build(&text).expect_err("bad canary backend");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path, "api[0].route[1].integration.uri");
    assert!(
        issues[0].reason.contains("canary of stage `prod`")
            && issues[0]
                .reason
                .contains("api[0].stage[0].canary.variables"),
        "{}",
        issues[0].reason
    );
    // The stage's own error is reported once, not again for its canary.
    let text = CANARY.replace(", path = \"items\" }\ncanary", " }\ncanary");
    let issues = build(&text).expect_err("prod lacks `path`");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].reason.contains("stage `prod`"), "{issues:?}");
}

#[test]
fn canary_pick_bounds_stickiness_and_distribution() {
    use super::snapshot::canary_pick;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let v4 = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
    // SplitMix64 as a stand-in for the shard's generator.
    let mut seed = 1u64;
    let mut draw = || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for r in [0, 1, u64::MAX / 2, u64::MAX] {
        assert!(!canary_pick(0.0, false, v4(1), r));
        assert!(canary_pick(100.0, false, v4(1), r));
    }
    for i in 0..1000 {
        assert!(!canary_pick(0.0, true, v4(i), 0));
        assert!(canary_pick(100.0, true, v4(i), 0));
    }
    // Sticky: the same address always lands on the same side, whatever
    // the draw; an IPv4-mapped IPv6 address like its IPv4 address.
    for i in 0..1000 {
        let first = canary_pick(37.0, true, v4(i), 0);
        assert_eq!(canary_pick(37.0, true, v4(i), draw()), first);
        let mapped = IpAddr::V6(Ipv4Addr::from(0x0a00_0000 + i).to_ipv6_mapped());
        assert_eq!(canary_pick(37.0, true, mapped, 0), first);
    }
    // Fixed constants: the same answer in every process (a changed hash
    // would move clients between sides on upgrade).
    let picked: Vec<u32> = (0..20)
        .filter(|&i| canary_pick(50.0, true, v4(i), 0))
        .collect();
    assert_eq!(picked, picked_reference());
    // Raising the percentage only adds clients.
    for i in 0..1000 {
        if canary_pick(10.0, true, v4(i), 0) {
            assert!(canary_pick(20.0, true, v4(i), 0));
        }
    }
    // Distribution: over many addresses, and over many draws.
    let n = 100_000u32;
    for pct in [1.0, 10.0, 30.0, 50.0, 90.0] {
        let by_ip = (0..n).filter(|&i| canary_pick(pct, true, v4(i), 0)).count();
        let v6 = (0..n)
            .filter(|&i| {
                let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
                canary_pick(pct, true, IpAddr::V6(a), 0)
            })
            .count();
        let by_draw = (0..n)
            .filter(|_| canary_pick(pct, false, v4(1), draw()))
            .count();
        for (what, got) in [("ipv4", by_ip), ("ipv6", v6), ("draws", by_draw)] {
            let share = got as f64 * 100.0 / f64::from(n);
            assert!(
                (share - pct).abs() < 1.0,
                "{what}: {share:.2} % for {pct} %"
            );
        }
    }
}

/// Which of 10.0.0.0..10.0.0.19 a sticky 50 % canary takes.
fn picked_reference() -> Vec<u32> {
    vec![0, 3, 4, 5, 9, 12, 13, 15, 16, 17, 19]
}

/// `tollgate check` bounds what can never work (issue 18, item 17), with
/// the key path and the reason.
#[test]
fn what_can_never_work_is_refused_with_the_reason() {
    let reasons = |text: &str| -> Vec<(String, String)> {
        match build(text) {
            Ok(_) => panic!("config should be rejected"),
            Err(issues) => issues.into_iter().map(|i| (i.path, i.reason)).collect(),
        }
    };
    // A route key longer than any request target.
    let long = format!("/{}", "a".repeat(1 << 20));
    let r = reasons(&MINIMAL.replace("GET /hello", &format!("GET {long}")));
    assert_eq!(r[0].0, "api[0].route[0].key");
    assert!(r[0].1.contains("max_uri_bytes"), "{r:?}");
    // A mock header block larger than any head a client takes.
    let r = reasons(&MINIMAL.replace(
        r#"body = "hi" }"#,
        &format!(
            r#"body = "hi", headers = {{ x-big = "{}" }} }}"#,
            "b".repeat(1 << 20)
        ),
    ));
    assert_eq!(r[0].0, "api[0].route[0].integration.headers");
    assert!(r[0].1.contains("max_response_header_bytes"), "{r:?}");
    // A stage variable that would build a 1 MB request line.
    let stage = |value: &str| {
        MINIMAL.replace(
            "[[api.route]]",
            &format!("[[api.stage]]\nname = \"prod\"\nvariables = {{ v = \"{value}\" }}\n[[api.route]]"),
        )
        .replace(
            r#"integration = { type = "mock", body = "hi" }"#,
            r#"integration = { type = "http", uri = "http://127.0.0.1:9/${stageVariables.v}" }"#,
        )
    };
    let r = reasons(&stage(&"v".repeat(1 << 20)));
    assert!(
        r.iter()
            .any(|(p, why)| p == "api[0].stage[0].variables.v" && why.contains("512")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|(p, why)| p == "api[0].route[0].integration.uri" && why.contains("max_uri_bytes")),
        "{r:?}"
    );
    assert!(build(&stage(&"v".repeat(500))).is_ok());
    // Userinfo in a backend URI says so.
    let r = reasons(&MINIMAL.replace(
        r#"integration = { type = "mock", body = "hi" }"#,
        r#"integration = { type = "http", uri = "http://user:pw@127.0.0.1:9/x" }"#,
    ));
    assert!(r[0].1.contains("userinfo"), "{r:?}");
}

#[test]
fn a_base_path_must_be_in_normal_form() {
    for (base, want) in [
        ("/v%31", "write `/v1`"),
        ("/a//b", "write `/a/b`"),
        ("/a%2fb", "refused"),
    ] {
        let text = MINIMAL.replace(
            "name = \"demo\"",
            &format!("name = \"demo\"\nbase_path = \"{base}\""),
        );
        let issues = build(&text).expect_err(base);
        assert_eq!(issues[0].path, "api[0].base_path");
        assert!(
            issues[0].reason.contains(want),
            "{base}: {}",
            issues[0].reason
        );
    }
    let text = MINIMAL.replace(
        "name = \"demo\"",
        "name = \"demo\"\nbase_path = \"/v1/caf%C3%A9\"",
    );
    assert!(build(&text).is_ok());
}
