//! Stage canaries end to end: a share of a stage's requests goes to the
//! routes compiled with the canary's stage variables (here: another
//! backend), randomly per request or sticky per client address; canary
//! requests are counted in series of their own (`canary="true"`) and
//! logged to the stage's access log; bad settings are rejected with their
//! key path.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests time and unwrap

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tollgate::admin;
use tollgate::config::{self, AdminSettings, Host};

/// One stage `prod` whose only route proxies to
/// `${stageVariables.backend}`: `v1` for the stage, `v2` for its canary.
fn config(v1: SocketAddr, v2: SocketAddr, canary: &str, shards: usize, extra: &str) -> String {
    format!(
        r#"
[server]
shards = {shards}
[server.throttle]
enabled = false
[[server.listen]]
addr = "LISTEN"
tls = false
[[api]]
name = "shop"
[[api.stage]]
name = "prod"
variables = {{ backend = "{v1}" }}
canary = {{ {canary}, variables = {{ backend = "{v2}" }} }}
{extra}
[[api.route]]
key = "ANY /{{proxy+}}"
integration = {{ type = "http", uri = "http://${{stageVariables.backend}}/{{proxy}}" }}
"#
    )
}

fn origins() -> (Origin, Origin) {
    (Origin::ok("v1"), Origin::ok("v2"))
}

/// Sends `n` GETs on one keep-alive connection; returns how many the
/// canary backend (`v2`) answered.
fn count_v2(gw: &TestGateway, n: usize) -> usize {
    let mut c = gw.connect();
    (0..n)
        .filter(|i| {
            let r = c.get(&format!("/prod/item/{i}"));
            assert_eq!(r.status, 200);
            match r.text().as_str() {
                "v1" => false,
                "v2" => true,
                other => panic!("unexpected body {other:?}"),
            }
        })
        .count()
}

#[test]
fn percent_zero_sends_nothing_to_the_canary() {
    let (v1, v2) = origins();
    let gw = TestGateway::start(&config(v1.addr, v2.addr, "percent = 0.0", 1, ""));
    assert_eq!(count_v2(&gw, 100), 0);
    assert_eq!(v1.requests().len(), 100);
    assert!(v2.requests().is_empty());
}

#[test]
fn percent_hundred_sends_everything_to_the_canary() {
    let (v1, v2) = origins();
    let gw = TestGateway::start(&config(v1.addr, v2.addr, "percent = 100.0", 1, ""));
    assert_eq!(count_v2(&gw, 100), 100);
    assert!(v1.requests().is_empty());
    // The canary's backend gets the request as the stage's would.
    let reqs = v2.requests();
    assert_eq!(reqs.len(), 100);
    assert_eq!(reqs[7].target, "/item/7");
    assert_eq!(reqs[7].header("host"), Some(v2.addr.to_string().as_str()));
}

#[test]
fn a_random_canary_takes_about_its_share() {
    let (v1, v2) = origins();
    let gw = TestGateway::start(&config(v1.addr, v2.addr, "percent = 30.0", 1, ""));
    let n = count_v2(&gw, 1000);
    assert!((200..=400).contains(&n), "{n} of 1000 went to the canary");
    assert_eq!(v2.requests().len(), n);
    assert_eq!(v1.requests().len(), 1000 - n);
}

#[test]
fn a_sticky_canary_keeps_a_client_on_one_side() {
    let (v1, v2) = origins();
    // Two shards where the host has them: the choice must not depend on
    // the shard a connection lands on.
    let shards = Host::detect().cpus.len().min(2);
    let gw = TestGateway::start(&config(
        v1.addr,
        v2.addr,
        "percent = 50.0, sticky = true",
        shards,
        "",
    ));
    // Every test client is 127.0.0.1: one side for all 200 requests, over
    // 20 connections.
    let n: usize = (0..20).map(|_| count_v2(&gw, 10)).sum();
    assert!(n == 0 || n == 200, "{n} of 200 went to the canary");
    assert_eq!(v2.requests().len(), n);
    assert_eq!(v1.requests().len(), 200 - n);
}

#[test]
fn bad_canary_settings_are_rejected_with_their_paths() {
    let text = |canary: &str| {
        config(
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
            canary,
            1,
            "",
        )
        .replace("LISTEN", "127.0.0.1:0")
    };
    let issues =
        |canary: &str| match config::from_str(&text(canary), "canary.toml", &Host::detect()) {
            Ok(_) => panic!("`{canary}` should be rejected"),
            Err(e) => e.issues(),
        };
    for bad in ["percent = 150.0", "percent = -1.0", "percent = nan"] {
        let found = issues(bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "api[0].stage[0].canary.percent");
    }
    let found = issues("percent = 10.0, weight = 1");
    assert_eq!(found[0].path, "api[0].stage[0].canary.weight");
    // Bounds are allowed.
    for ok in ["percent = 0.0", "percent = 100.0", "percent = 5"] {
        config::from_str(&text(ok), "canary.toml", &Host::detect())
            .unwrap_or_else(|e| panic!("`{ok}`: {e}"));
    }
}

/// Sum of the samples of `name` whose labels include every `want` and,
/// unless `canary`, no `canary` label.
fn value(text: &str, name: &str, want: &[(&str, &str)], canary: bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels.contains("canary=\"true\"") == canary
                && want
                    .iter()
                    .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().expect("number"))
        .sum()
}

fn scrape(addr: SocketAddr) -> String {
    let mut c = Client::connect(addr);
    c.send(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
    let r = c.read_response(false).expect("admin answers");
    assert_eq!(r.status, 200);
    let text = r.text();
    // Series of one family with and without `canary` are valid text.
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads it");
    assert!(!parsed.samples.is_empty());
    text
}

/// Waits until `path` holds at least `n` lines; returns them.
fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let v: Vec<String> = text.lines().map(str::to_string).collect();
        if v.len() >= n || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn canary_requests_are_counted_apart_and_logged_with_the_stage() {
    let (v1, v2) = origins();
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("canary-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let access_log = format!(
        "access_log = {{ destination = \"{}\", format = '$context.stage $context.routeKey $context.status $context.isCanaryRequest' }}",
        log.display()
    );
    let gw = TestGateway::start(&config(v1.addr, v2.addr, "percent = 40.0", 1, &access_log));
    let admin = admin::start(
        gw.gateway().control(),
        &AdminSettings {
            addr: "127.0.0.1:0".parse().expect("addr"),
            token: None,
        },
    )
    .expect("admin starts");

    let n = 200;
    let canary = count_v2(&gw, n);
    assert!(canary > 0 && canary < n, "{canary} of {n}: both sides used");
    // A request answered without its backend (here: a route miss) is
    // counted where it belongs too; a miss has no stage.
    let mut c = gw.connect();
    c.send(b"GET /other HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("response").status, 404);

    let route = [
        ("api", "shop"),
        ("stage", "prod"),
        ("route", "ANY /{proxy+}"),
        ("status", "2xx"),
    ];
    // A request is counted when its exchange ends, just after the client
    // has the response: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape(admin.addr());
        let total = value(&text, "tollgate_requests_total", &route, true)
            + value(&text, "tollgate_requests_total", &route, false);
        if total >= n as f64 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        value(&text, "tollgate_requests_total", &route, true),
        v2.requests().len() as f64,
        "{text}"
    );
    assert_eq!(
        value(&text, "tollgate_requests_total", &route, false),
        v1.requests().len() as f64,
        "{text}"
    );
    // The canary's series carry the label everywhere, and only they do.
    let hist = &route[..3];
    assert_eq!(
        value(&text, "tollgate_request_duration_seconds_count", hist, true),
        canary as f64
    );
    assert_eq!(
        value(
            &text,
            "tollgate_integration_duration_seconds_count",
            hist,
            false
        ),
        (n - canary) as f64
    );
    assert!(text.contains(
        "tollgate_requests_total{api=\"shop\",stage=\"prod\",route=\"ANY /{proxy+}\",canary=\"true\",status=\"2xx\"}"
    ));
    assert!(text.contains(
        "tollgate_requests_total{api=\"shop\",stage=\"prod\",route=\"ANY /{proxy+}\",status=\"2xx\"}"
    ));
    assert!(!text.contains("canary=\"false\""));
    assert!(!text.contains("route=\"unmatched\",canary"));

    // Both sides are in the stage's access log.
    let lines = log_lines(&log, n);
    assert_eq!(lines.len(), n, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l == "prod ANY /{proxy+} 200 true" || l == "prod ANY /{proxy+} 200 false"),
        "{lines:?}"
    );
    let in_log = lines.iter().filter(|l| l.ends_with(" true")).count();
    assert_eq!(in_log, canary, "the log marks exactly the canary requests");
    drop(admin);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn canary_requests_bypass_the_stage_cache() {
    let (v1, v2) = origins();
    let cached = "cache = { ttl = \"60s\" }";
    // Every request a canary: none is answered from or stored in the
    // stage's cache.
    let gw = TestGateway::start(&config(v1.addr, v2.addr, "percent = 100.0", 1, cached));
    let mut c = gw.connect();
    for _ in 0..5 {
        assert_eq!(c.get("/prod/same").text(), "v2");
    }
    assert_eq!(v2.requests().len(), 5);
    let entries = |gw: &TestGateway| gw.gateway().cache().map(|c| c.store.stats().entries);
    assert_eq!(entries(&gw), Some(0));
    drop(c);
    drop(gw);
    // The same stage without canary traffic caches as usual.
    let gw = TestGateway::start(&config(v1.addr, v2.addr, "percent = 0.0", 1, cached));
    let mut c = gw.connect();
    for _ in 0..5 {
        assert_eq!(c.get("/prod/same").text(), "v1");
    }
    assert_eq!(v1.requests().len(), 1);
    assert_eq!(entries(&gw), Some(1));
}
