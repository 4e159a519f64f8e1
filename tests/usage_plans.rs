//! End to end: API keys, usage plans (per-key throttle and quota), the
//! per-client-IP level, the refusal counters, and quotas that survive a
//! restart of the gateway.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use std::time::Duration;

use common::{Client, Origin, TestGateway};
use tollgate::observe::counters::Level;

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdefgh";
const CAROL: &str = "carol-key-0123456789abcdef";

/// A GET with an optional `x-api-key`.
fn get(c: &mut Client, path: &str, key: Option<&str>) -> common::Resp {
    let key = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{key}\r\n").as_bytes());
    c.read_response(false).expect("response")
}

/// An API `pets` whose stage `prod` requires a key except on GET /open,
/// proxied to `origin`; `plans` and `extra_server` are spliced in.
fn config(
    origin: std::net::SocketAddr,
    plans: &str,
    extra_server: &str,
    state: &std::path::Path,
) -> String {
    format!(
        r#"
[server]
shards = 1
state_dir = "{}"
{extra_server}
[[server.listen]]
addr = "LISTEN"
tls = false
[[api_key]]
name = "alice"
value = "{ALICE}"
[[api_key]]
name = "bob"
value_sha256 = "{bob_sha}"
[[api_key]]
name = "carol"
value = "{CAROL}"
[[api]]
name = "pets"
[[api.stage]]
name = "prod"
api_key_required = true
[[api.stage]]
name = "beta"
api_key_required = true
[[api.route]]
key = "GET /pets"
integration = {{ type = "http", uri = "http://{origin}/pets" }}
[[api.route]]
key = "GET /open"
api_key_required = false
integration = {{ type = "http", uri = "http://{origin}/open" }}
{plans}
"#,
        state.display(),
        bob_sha = sha256_hex(BOB),
    )
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn keys_are_required_checked_and_bound_to_stages_by_plans() {
    let origin = Origin::ok("pets");
    let state = common::state_dir("keys");
    let plans = r#"
[[usage_plan]]
name = "basic"
stages = ["pets/prod"]
keys = ["alice", "bob"]
"#;
    let gw = TestGateway::start(&config(origin.addr, plans, "", &state));
    let mut c = gw.connect();

    let r = get(&mut c, "/prod/pets", None);
    assert_eq!(r.status, 403, "missing key");
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    assert_eq!(
        get(&mut c, "/prod/pets", Some("not-a-key-0123456789abcdef")).status,
        403
    );
    assert_eq!(get(&mut c, "/prod/pets", Some("short")).status, 403);
    // A configured key that no plan binds to this stage.
    assert_eq!(get(&mut c, "/prod/pets", Some(CAROL)).status, 403);
    // Alice's plan covers prod, not beta.
    assert_eq!(get(&mut c, "/beta/pets", Some(ALICE)).status, 403);
    assert_eq!(
        origin.requests().len(),
        0,
        "refused requests reached the backend"
    );

    let r = get(&mut c, "/prod/pets", Some(ALICE));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "pets");
    // Bob's key is configured only by its SHA-256 digest.
    assert_eq!(get(&mut c, "/prod/pets", Some(BOB)).status, 200);
    // A route that opts out needs no key; a key sent there is not
    // checked (Amazon API Gateway's behaviour), so even an unknown one passes.
    assert_eq!(get(&mut c, "/prod/open", None).status, 200);
    assert_eq!(
        get(&mut c, "/prod/open", Some("unknown-key-0123456789abc")).status,
        200
    );
    assert_eq!(get(&mut c, "/beta/open", None).status, 200);
    assert_eq!(origin.requests().len(), 5);
    // The key reaches the backend like any header.
    assert_eq!(origin.requests()[0].header("x-api-key"), Some(ALICE));

    let refusals = gw.gateway().refusals();
    let forbidden = refusals
        .by_level
        .iter()
        .find(|(l, _)| *l == Level::Forbidden)
        .map(|(_, n)| *n);
    assert_eq!(forbidden, Some(5));
    assert!(refusals
        .by_route
        .contains(&("pets/prod GET /pets".to_string(), 4)));
    assert!(refusals
        .by_route
        .contains(&("pets/beta GET /pets".to_string(), 1)));
}

#[test]
fn each_key_has_its_own_throttle_and_a_throttled_request_spends_no_quota() {
    let origin = Origin::ok("pets");
    let state = common::state_dir("key-throttle");
    let plans = r#"
[[usage_plan]]
name = "basic"
stages = ["pets/prod"]
keys = ["alice", "bob"]
throttle = { rate = 1, burst = 2 }
quota = { limit = 100, period = "DAY" }
"#;
    let gw = TestGateway::start(&config(origin.addr, plans, "", &state));
    let mut c = gw.connect();
    let statuses: Vec<u16> = (0..5)
        .map(|_| get(&mut c, "/prod/pets", Some(ALICE)).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    let r = get(&mut c, "/prod/pets", Some(ALICE));
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), r#"{"message":"Too Many Requests"}"#);
    assert_eq!(r.header("retry-after"), Some("1"));
    // Bob's bucket is his own.
    assert_eq!(get(&mut c, "/prod/pets", Some(BOB)).status, 200);
    assert_eq!(origin.requests().len(), 3);

    // Leases settle at the shard's next tick.
    std::thread::sleep(Duration::from_millis(100));
    let usage = gw.gateway().quota_usage();
    let alice = usage
        .iter()
        .find(|u| u.name == "basic/alice")
        .expect("alice");
    assert_eq!((alice.used, alice.remaining), (2, 98), "{usage:?}");
    let key_level = gw
        .gateway()
        .refusals()
        .by_level
        .iter()
        .find(|(l, _)| *l == Level::Key)
        .map(|(_, n)| *n);
    assert_eq!(key_level, Some(4));
}

#[test]
fn a_quota_refuses_with_limit_exceeded_and_offset_counts_in_the_first_period() {
    let origin = Origin::ok("pets");
    let state = common::state_dir("quota");
    let plans = r#"
[[usage_plan]]
name = "small"
stages = ["pets/prod", "pets/beta"]
keys = ["alice"]
quota = { limit = 3, period = "DAY" }
[[usage_plan]]
name = "offset"
stages = ["pets/prod"]
keys = ["bob"]
quota = { limit = 5, period = "MONTH", offset = 3 }
"#;
    let gw = TestGateway::start(&config(origin.addr, plans, "", &state));
    let mut c = gw.connect();
    // The quota counts over both of the plan's stages.
    assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 200);
    assert_eq!(get(&mut c, "/beta/pets", Some(ALICE)).status, 200);
    assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 200);
    let r = get(&mut c, "/beta/pets", Some(ALICE));
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), r#"{"message":"Limit Exceeded"}"#);
    // Retry when the day ends (UTC), not in a second.
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=86_400).contains(&retry), "retry-after {retry}");
    assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 429);
    // 5 - offset 3 = 2 in the first period.
    assert_eq!(get(&mut c, "/prod/pets", Some(BOB)).status, 200);
    assert_eq!(get(&mut c, "/prod/pets", Some(BOB)).status, 200);
    assert_eq!(get(&mut c, "/prod/pets", Some(BOB)).status, 429);
    assert_eq!(origin.requests().len(), 5);
    let quota = gw
        .gateway()
        .refusals()
        .by_level
        .iter()
        .find(|(l, _)| *l == Level::Quota)
        .map(|(_, n)| *n);
    assert_eq!(quota, Some(3));
}

#[test]
fn a_quota_holds_exactly_across_two_shards() {
    let state = common::state_dir("quota-shards");
    let text = common::quota_config(&state, 2, 300, "WEEK");
    let gw = TestGateway::start(&text);
    let addr = gw.addr;
    // Many connections, so both shards serve some; paced (2 ms between
    // requests, ~100 ms a connection), so every connection is still
    // sending when the quota runs out (~19 requests in) and each shard
    // refuses some: unpaced, one shard's few connections could finish
    // before it ran out.
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut ok = 0u64;
                for _ in 0..50 {
                    std::thread::sleep(Duration::from_millis(2));
                    let r = get(&mut c, "/prod/x", Some(common::QUOTA_KEY));
                    match r.status {
                        200 => ok += 1,
                        429 => assert_eq!(r.text(), r#"{"message":"Limit Exceeded"}"#),
                        s => panic!("status {s}"),
                    }
                }
                ok
            })
        })
        .collect();
    let admitted: u64 = clients.into_iter().map(|c| c.join().expect("client")).sum();
    assert_eq!(admitted, 300, "800 offered against a quota of 300");
    std::thread::sleep(Duration::from_millis(100));
    let usage = gw.gateway().quota_usage();
    assert_eq!((usage[0].used, usage[0].remaining), (300, 0), "{usage:?}");
    // Both shards served (and refused) some: the quota was shared.
    let per_shard = gw.gateway().refusals_by_shard(Level::Quota);
    assert_eq!(per_shard.iter().sum::<u64>(), 500);
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
}

#[test]
fn quota_counts_survive_a_restart() {
    let origin = Origin::ok("pets");
    let state = common::state_dir("restart");
    let plans = r#"
[[usage_plan]]
name = "small"
stages = ["pets/prod"]
keys = ["alice"]
quota = { limit = 5, period = "DAY" }
"#;
    let text = config(origin.addr, plans, "", &state);
    {
        let gw = TestGateway::start(&text);
        let mut c = gw.connect();
        for _ in 0..3 {
            assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 200);
        }
        // Dropping stops the gateway: shards settle, the counters flush.
    }
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 200);
    assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 200);
    assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 429);
    assert!(state.join("quotas.redb").exists());
}

#[test]
fn the_client_ip_level_limits_each_address_and_comes_first() {
    let origin = Origin::ok("pets");
    let state = common::state_dir("client-ip");
    let gw = TestGateway::start(&config(
        origin.addr,
        "",
        "[server.throttle.client_ip]\nrate = 1\nburst = 3",
        &state,
    ));
    let mut c = gw.connect();
    let statuses: Vec<u16> = (0..5)
        .map(|_| get(&mut c, "/prod/open", None).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // A new connection from the same address shares the bucket; and the
    // IP level is checked before the key (no 403 once it refuses).
    let mut c2 = gw.connect();
    assert_eq!(get(&mut c2, "/prod/pets", None).status, 429);
    let ip = gw
        .gateway()
        .refusals()
        .by_level
        .iter()
        .find(|(l, _)| *l == Level::ClientIp)
        .map(|(_, n)| *n);
    assert_eq!(ip, Some(3));
    assert_eq!(origin.requests().len(), 3);
}

#[test]
fn a_request_refused_by_its_quota_spends_nothing_at_shared_levels() {
    let origin = Origin::ok("pets");
    let state = common::state_dir("refund");
    let plans = r#"
[[usage_plan]]
name = "tiny"
stages = ["pets/prod"]
keys = ["alice"]
quota = { limit = 2, period = "DAY" }
[[usage_plan]]
name = "open"
stages = ["pets/prod"]
keys = ["bob"]
"#;
    // The stage admits 5 requests in all (rate 0: no refill).
    let text = config(origin.addr, plans, "", &state).replace(
        "name = \"prod\"\napi_key_required = true",
        "name = \"prod\"\napi_key_required = true\nthrottle = { rate = 0, burst = 5 }",
    );
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 200);
    assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 200);
    // Alice's quota is used up: her refusals do not drain the stage.
    for _ in 0..10 {
        assert_eq!(get(&mut c, "/prod/pets", Some(ALICE)).status, 429);
    }
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&mut c, "/prod/pets", Some(BOB)).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
}
