//! End to end: the response cache in front of an HTTP integration.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests time and unwrap

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Origin, Reply, TestGateway};

const TOKEN: &str = "flush-token-0123456789abcdef";

/// An origin that numbers the requests it sees (from 1) and answers each
/// with `reply(number, request)`; the count is shared with the test.
fn numbered(
    reply: impl Fn(usize, &common::Req) -> Reply + Send + Sync + 'static,
) -> (Origin, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let o = Origin::start(move |req| reply(n2.fetch_add(1, Ordering::SeqCst) + 1, req));
    (o, n)
}

/// An origin that numbers its answers, so a test can tell a cached one:
/// `/nostore` says `Cache-Control: no-store`, `/missing` is a 404,
/// `/big` is 3000 bytes, anything else a small 200.
fn origin() -> (Origin, Arc<AtomicUsize>) {
    numbered(move |i, req| {
        let path = req.target.split('?').next().unwrap_or("");
        let (status, extra, body) = match path {
            "/nostore" => (
                "200 OK",
                "Cache-Control: no-store\r\n",
                format!("answer {i}"),
            ),
            "/private" => (
                "200 OK",
                "Cache-Control: private\r\n",
                format!("answer {i}"),
            ),
            "/short" => (
                "200 OK",
                "Cache-Control: max-age=1\r\n",
                format!("answer {i}"),
            ),
            "/missing" => ("404 Not Found", "", format!("answer {i}")),
            "/big" => ("200 OK", "", "x".repeat(3000)),
            _ => ("200 OK", "X-Origin: yes\r\n", format!("answer {i}")),
        };
        Reply::Raw(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    })
}

fn config(origin: std::net::SocketAddr, stage_cache: &str, server_cache: &str) -> String {
    format!(
        r#"
[server.cache]
capacity = "1MB"
max_entry_bytes = 2048
invalidation_token = "{TOKEN}"
{server_cache}
[[server.listen]]
addr = "LISTEN"
tls = false
[[api]]
name = "c"
[[api.stage]]
name = "prod"
cache = {{ {stage_cache} }}
[[api.route]]
key = "GET /pets/{{id}}"
integration = {{ type = "http", uri = "http://{origin}/pets/{{id}}" }}
cache = {{ key = ["path.id", "header.accept"] }}
[[api.route]]
key = "GET /short-ttl"
integration = {{ type = "http", uri = "http://{origin}/hello" }}
cache = {{ ttl = "1s" }}
[[api.route]]
key = "GET /uncached"
integration = {{ type = "http", uri = "http://{origin}/hello" }}
cache = {{ enabled = false }}
[[api.route]]
key = "ANY /{{proxy+}}"
integration = {{ type = "http", uri = "http://{origin}/{{proxy}}" }}
"#
    )
}

/// Runs `n` clients, each on its own connection, released together;
/// their results in order.
fn together<T: Send + 'static>(
    addr: std::net::SocketAddr,
    n: usize,
    f: impl Fn(&mut Client) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let f = Arc::new(f);
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let (b, f) = (barrier.clone(), f.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                b.wait();
                f(&mut c)
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect()
}

fn get(c: &mut Client, path: &str, extra: &str) -> common::Resp {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
    c.read_response(false).expect("response")
}

#[test]
fn repeated_gets_are_served_from_the_cache() {
    let (o, n) = origin();
    let gw = TestGateway::start(&config(o.addr, "ttl = \"300s\"", ""));
    let mut c = gw.connect();
    let first = get(&mut c, "/prod/hello", "");
    assert_eq!((first.status, first.text()), (200, "answer 1".to_string()));
    assert_eq!(first.header("age"), None, "a miss is not aged");
    for _ in 0..4 {
        let r = get(&mut c, "/prod/hello", "");
        assert_eq!((r.status, r.text()), (200, "answer 1".to_string()));
        assert_eq!(r.header("x-origin"), Some("yes"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert!(r.header("date").is_some());
        assert!(r.header("x-request-id").is_some());
        // Served from the cache: it says how old it is.
        assert_eq!(r.header("age"), Some("0"));
    }
    // HEAD is answered from the GET's entry, without a body.
    c.send(b"HEAD /prod/hello HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = c.read_response(true).expect("head");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("8"));
    assert_eq!(n.load(Ordering::SeqCst), 1, "the backend saw one request");
    // Another URL is another entry; the query string is part of the key.
    assert_eq!(get(&mut c, "/prod/hello?a=1", "").text(), "answer 2");
    assert_eq!(get(&mut c, "/prod/hello?a=1", "").text(), "answer 2");
    assert_eq!(get(&mut c, "/prod/other", "").text(), "answer 3");
    let counts = gw.gateway().cache_counts();
    assert_eq!(counts, vec![("c/prod ANY /{proxy+}".to_string(), 6, 3)]);
}

#[test]
fn entries_expire_and_backend_rules_are_respected() {
    let (o, n) = origin();
    let gw = TestGateway::start(&config(o.addr, "ttl = \"300s\"", ""));
    let mut c = gw.connect();
    // Route TTL of 1 s.
    assert_eq!(get(&mut c, "/prod/short-ttl", "").text(), "answer 1");
    assert_eq!(get(&mut c, "/prod/short-ttl", "").text(), "answer 1");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&mut c, "/prod/short-ttl", "").text(), "answer 2");
    // no-store, private: never stored; max-age caps the TTL.
    for path in ["/prod/nostore", "/prod/private"] {
        let a = get(&mut c, path, "").text();
        let b = get(&mut c, path, "").text();
        assert_ne!(a, b, "{path} was cached");
    }
    let short = get(&mut c, "/prod/short", "").text();
    std::thread::sleep(Duration::from_millis(600));
    let r = get(&mut c, "/prod/short", "");
    assert_eq!(r.text(), short);
    assert!(
        matches!(r.header("age"), Some("0") | Some("1")),
        "{:?}",
        r.header("age")
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_ne!(get(&mut c, "/prod/short", "").text(), short);
    // Only 200s are stored; too large entries pass through.
    let m = get(&mut c, "/prod/missing", "");
    assert_eq!(m.status, 404);
    assert_ne!(get(&mut c, "/prod/missing", "").text(), m.text());
    let before = n.load(Ordering::SeqCst);
    assert_eq!(get(&mut c, "/prod/big", "").body.len(), 3000);
    assert_eq!(get(&mut c, "/prod/big", "").body.len(), 3000);
    assert_eq!(n.load(Ordering::SeqCst), before + 2);
    // A route with caching off, and a request with credentials.
    assert_ne!(
        get(&mut c, "/prod/uncached", "").text(),
        get(&mut c, "/prod/uncached", "").text()
    );
    let counted = |gw: &TestGateway| {
        gw.gateway()
            .cache_counts()
            .iter()
            .fold((0, 0), |(h, m), c| (h + c.1, m + c.2))
    };
    let before = counted(&gw);
    let a = get(&mut c, "/prod/creds", "Authorization: Bearer x\r\n").text();
    assert_ne!(
        get(&mut c, "/prod/creds", "Authorization: Bearer x\r\n").text(),
        a
    );
    assert_eq!(
        counted(&gw),
        before,
        "credentials bypass: neither hit nor miss"
    );
}

#[test]
fn the_stage_may_ignore_backend_cache_headers() {
    let (o, _) = origin();
    let gw = TestGateway::start(&config(o.addr, "ignore_backend_cache_control = true", ""));
    let mut c = gw.connect();
    let a = get(&mut c, "/prod/nostore", "").text();
    assert_eq!(get(&mut c, "/prod/nostore", "").text(), a);
}

#[test]
fn key_parameters_select_what_makes_an_entry() {
    let (o, _) = origin();
    let gw = TestGateway::start(&config(o.addr, "", ""));
    let mut c = gw.connect();
    // key = path.id + header.accept: the query string does not count.
    let a = get(&mut c, "/prod/pets/1?page=1", "Accept: text/plain\r\n").text();
    assert_eq!(
        get(&mut c, "/prod/pets/1?page=2", "Accept: text/plain\r\n").text(),
        a
    );
    assert_ne!(
        get(&mut c, "/prod/pets/2", "Accept: text/plain\r\n").text(),
        a
    );
    assert_ne!(
        get(&mut c, "/prod/pets/1", "Accept: application/json\r\n").text(),
        a
    );
}

#[test]
fn max_age_0_needs_the_token_and_unauthorized_attempts_follow_the_stage() {
    let (o, _) = origin();
    // Default: ignore with a warning header.
    let gw = TestGateway::start(&config(o.addr, "", ""));
    let mut c = gw.connect();
    let a = get(&mut c, "/prod/hello", "").text();
    let r = get(&mut c, "/prod/hello", "Cache-Control: max-age=0\r\n");
    assert_eq!(r.text(), a);
    assert!(r.header("warning").is_some_and(|w| w.starts_with("199 ")));
    let r = get(
        &mut c,
        "/prod/hello",
        &format!("Cache-Control: max-age=0\r\nx-cache-invalidate-token: {TOKEN}\r\n"),
    );
    assert_ne!(r.text(), a, "an authorized refresh refetches");
    let refreshed = r.text();
    assert_eq!(
        get(&mut c, "/prod/hello", "").text(),
        refreshed,
        "and stores the new answer"
    );
    drop(gw);

    let (o, _) = origin();
    let gw = TestGateway::start(&config(o.addr, "unauthorized = \"fail\"", ""));
    let mut c = gw.connect();
    let a = get(&mut c, "/prod/hello", "").text();
    let r = get(&mut c, "/prod/hello", "Cache-Control: max-age=0\r\n");
    assert_eq!(
        (r.status, r.text()),
        (403, r#"{"message":"Forbidden"}"#.to_string())
    );
    // Only max-age=0 asks for a refresh: a browser's hard reload
    // (`no-cache`) is answered from the cache, not refused.
    let r = get(
        &mut c,
        "/prod/hello",
        "Cache-Control: no-cache\r\nPragma: no-cache\r\n",
    );
    assert_eq!((r.status, r.text()), (200, a));
    drop(gw);

    let (o, _) = origin();
    let gw = TestGateway::start(&config(o.addr, "unauthorized = \"ignore\"", ""));
    let mut c = gw.connect();
    let a = get(&mut c, "/prod/hello", "").text();
    let r = get(&mut c, "/prod/hello", "Cache-Control: max-age=0\r\n");
    assert_eq!((r.status, r.text()), (200, a), "ignored");
    assert!(r.header("warning").is_none(), "and silently");
    drop(gw);

    // The admin token may refresh entries too.
    let (o, _) = origin();
    let text = format!(
        "{}\n[server.admin]\naddr = \"127.0.0.1:0\"\ntoken = \"admin-token-0123456789abcdef\"\n",
        config(o.addr, "unauthorized = \"fail\"", "")
    );
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    let a = get(&mut c, "/prod/hello", "").text();
    let r = get(
        &mut c,
        "/prod/hello",
        "Cache-Control: max-age=0\r\nx-cache-invalidate-token: admin-token-0123456789abcdef\r\n",
    );
    assert_eq!(r.status, 200);
    assert_ne!(r.text(), a, "the admin token refreshes");
    drop(gw);

    let (o, _) = origin();
    let gw = TestGateway::start(&config(o.addr, "require_authorization = false", ""));
    let mut c = gw.connect();
    let a = get(&mut c, "/prod/hello", "").text();
    assert_ne!(
        get(&mut c, "/prod/hello", "Cache-Control: max-age=0\r\n").text(),
        a
    );
}

#[test]
fn the_invalidation_token_never_reaches_the_backend() {
    let leaked = Arc::new(AtomicUsize::new(0));
    let l = leaked.clone();
    let (o, n) = numbered(move |i, req| {
        if req.header("x-cache-invalidate-token").is_some() {
            l.fetch_add(1, Ordering::SeqCst);
        }
        common::ok(&format!("answer {i}"))
    });
    let gw = TestGateway::start(&config(o.addr, "", ""));
    let mut c = gw.connect();
    let token = format!("x-cache-invalidate-token: {TOKEN}\r\n");
    // An authorized refresh, a wrong token, a route that is not cached.
    let a = get(&mut c, "/prod/hello", &token).text();
    let b = get(
        &mut c,
        "/prod/hello",
        &format!("Cache-Control: max-age=0\r\n{token}"),
    )
    .text();
    assert_ne!(a, b, "the refresh went to the backend");
    get(
        &mut c,
        "/prod/hello",
        "Cache-Control: max-age=0\r\nX-Cache-Invalidate-Token: wrong\r\n",
    );
    get(&mut c, "/prod/uncached", &token);
    assert_eq!(n.load(Ordering::SeqCst), 3);
    assert_eq!(leaked.load(Ordering::SeqCst), 0);
}

#[test]
fn throttling_comes_before_the_cache_and_flushes_work() {
    let (o, n) = origin();
    let text = config(o.addr, "", "").replace(
        "name = \"prod\"\n",
        "name = \"prod\"\nthrottle = { rate = 0, burst = 3 }\n",
    );
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    for _ in 0..3 {
        assert_eq!(get(&mut c, "/prod/hello", "").status, 200);
    }
    assert_eq!(
        get(&mut c, "/prod/hello", "").status,
        429,
        "a cached answer is still throttled"
    );
    assert_eq!(n.load(Ordering::SeqCst), 1);
    drop(gw);

    let (o, n) = origin();
    let gw = TestGateway::start(&config(o.addr, "", ""));
    let mut c = gw.connect();
    get(&mut c, "/prod/hello", "");
    get(&mut c, "/prod/other", "");
    let cache = gw.gateway().cache().expect("cache");
    assert_eq!(cache.store.stats().entries, 2);
    assert_eq!(cache.flush_stage("c", "beta"), 0);
    assert_eq!(cache.flush_stage("c", "prod"), 2);
    get(&mut c, "/prod/hello", "");
    assert_eq!(n.load(Ordering::SeqCst), 3);
    assert_eq!(cache.flush_all(), 1);
    assert_eq!(cache.store.stats().entries, 0);
}

/// A config with one cached route to `origin`, `route_cache` spliced in.
fn one_route(origin: std::net::SocketAddr, route_cache: &str) -> String {
    format!(
        r#"
[server]
shards = 2
[server.cache]
capacity = "1MB"
max_entry_bytes = 2048
[[server.listen]]
addr = "LISTEN"
tls = false
[[api]]
name = "c"
[[api.stage]]
name = "prod"
cache = {{ ttl = "300s" }}
[[api.route]]
key = "GET /x"
integration = {{ type = "http", uri = "http://{origin}/x" }}
cache = {{ {route_cache} }}
"#
    )
}

/// [`one_route`] with the route `GET /{p}` (any one-segment path) instead
/// of `GET /x`.
fn any_path_route(origin: std::net::SocketAddr, route_cache: &str) -> String {
    one_route(origin, route_cache)
        .replace("key = \"GET /x\"", "key = \"GET /{p}\"")
        .replace("/x\" }", "/{p}\" }")
}

#[test]
fn concurrent_misses_make_one_backend_request() {
    let (o, n) = numbered(move |i, _| {
        let body = format!("answer {i}");
        Reply::After(
            Duration::from_millis(300),
            Box::new(Reply::Raw(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )),
        )
    });
    let gw = TestGateway::start(&one_route(o.addr, ""));
    let answers = together(gw.addr, 100, |c| {
        let r = get(c, "/prod/x", "");
        (r.status, r.text())
    });
    for a in answers {
        assert_eq!(a, (200, "answer 1".to_string()));
    }
    assert_eq!(
        n.load(Ordering::SeqCst),
        1,
        "100 concurrent misses, one backend request"
    );
    let counts = gw.gateway().cache_counts();
    assert_eq!(counts[0].1 + counts[0].2, 100);
    assert_eq!(counts[0].2, 1, "one miss: {counts:?}");
}

#[test]
fn stale_if_error_answers_for_a_backend_that_is_down() {
    for (window, want) in [("stale_if_error = \"60s\"", 200u16), ("", 502)] {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let o = Origin::start(move |_| {
            if n2.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold".to_vec())
            } else {
                Reply::Close
            }
        });
        let route_cache = if window.is_empty() {
            "ttl = \"1s\"".to_string()
        } else {
            format!("ttl = \"1s\", {window}")
        };
        let gw = TestGateway::start(&one_route(o.addr, &route_cache));
        let mut c = gw.connect();
        assert_eq!(get(&mut c, "/prod/x", "").text(), "old");
        std::thread::sleep(Duration::from_millis(1100));
        let r = get(&mut c, "/prod/x", "");
        assert_eq!(r.status, want, "window `{window}`");
        if want == 200 {
            assert_eq!(r.text(), "old");
        }
    }
}

#[test]
fn requests_waiting_on_a_failing_fetch_get_the_stale_answer() {
    // The backend answers once, then fails slowly: a 503 after 1 s.
    // Waiters on the one refetch get the expired entry (stale_if_error)
    // when it fails (lock_timeout 5 s) or when their wait times out
    // (lock_timeout 100 ms), and none tries the backend itself (all ten
    // are waiting long before the refetch fails).
    for lock_timeout in ["5s", "100ms"] {
        let (o, n) = numbered(|i, _| {
            if i == 1 {
                common::ok("old")
            } else {
                let failed = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
                Reply::After(
                    Duration::from_millis(1000),
                    Box::new(Reply::Raw(failed.to_vec())),
                )
            }
        });
        let text = one_route(o.addr, "ttl = \"1s\", stale_if_error = \"60s\"").replace(
            "max_entry_bytes = 2048\n",
            &format!("max_entry_bytes = 2048\nlock_timeout = \"{lock_timeout}\"\n"),
        );
        let gw = TestGateway::start(&text);
        assert_eq!(get(&mut gw.connect(), "/prod/x", "").text(), "old");
        std::thread::sleep(Duration::from_millis(1100));
        let answers = together(gw.addr, 10, |c| {
            let r = get(c, "/prod/x", "");
            (r.status, r.text())
        });
        for a in answers {
            assert_eq!(a, (200, "old".to_string()), "lock_timeout {lock_timeout}");
        }
        assert_eq!(
            n.load(Ordering::SeqCst),
            2,
            "one refetch (lock_timeout {lock_timeout})"
        );
    }
}

#[test]
fn conditional_misses_fill_the_cache_and_get_304() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let (o, n) = numbered(move |_, req| {
        let validators = ["if-none-match", "if-modified-since"]
            .iter()
            .filter_map(|h| req.header(h).map(str::to_string))
            .collect::<Vec<_>>();
        s2.lock().expect("seen").extend(validators);
        let cookie = if req.target.contains("cookie") {
            "Set-Cookie: s=1\r\n"
        } else {
            ""
        };
        Reply::Raw(
            format!("HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nLast-Modified: Tue, 24 Nov 2026 10:00:00 GMT\r\nCache-Control: max-age=600\r\n{cookie}Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
                .into_bytes(),
        )
    });
    let text = any_path_route(o.addr, "");
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    // A revalidation on a cold cache: the backend is asked for the whole
    // answer, the client gets a 304, the cache the 200.
    c.send(b"GET /prod/a HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"v1\"\r\n\r\n");
    let r = c.read_response(true).expect("304");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(get(&mut c, "/prod/a", "").text(), "hello");
    // A validator that does not match: the full answer, stored.
    let r = get(
        &mut c,
        "/prod/b",
        "If-Modified-Since: Mon, 23 Nov 2026 10:00:00 GMT\r\n",
    );
    assert_eq!((r.status, r.text()), (200, "hello".to_string()));
    c.send(b"GET /prod/b HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Tue, 24 Nov 2026 10:00:00 GMT\r\n\r\n");
    assert_eq!(c.read_response(true).expect("304").status, 304);
    assert_eq!(n.load(Ordering::SeqCst), 2, "one fetch per URL");
    assert!(
        seen.lock().expect("seen").is_empty(),
        "validators kept back"
    );
    // An answer the cache may not store is relayed whole, Set-Cookie and
    // all, even when the kept-back validator matches it.
    let r = get(&mut c, "/prod/cookie", "If-None-Match: \"v1\"\r\n");
    assert_eq!((r.status, r.text()), (200, "hello".to_string()));
    assert_eq!(r.header("set-cookie"), Some("s=1"));
    assert_eq!(n.load(Ordering::SeqCst), 3);
    // Range requests still go to the backend as they are, unstored.
    let r = get(&mut c, "/prod/c", "Range: bytes=0-1\r\n");
    assert_eq!(r.status, 200);
    get(&mut c, "/prod/c", "");
    assert_eq!(n.load(Ordering::SeqCst), 5);
}

#[test]
fn stale_while_revalidate_serves_the_old_answer_during_a_refresh() {
    let (o, n) = numbered(move |i, _| {
        let body = format!("answer {i}");
        let raw = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        if i == 1 {
            Reply::Raw(raw)
        } else {
            Reply::After(Duration::from_millis(500), Box::new(Reply::Raw(raw)))
        }
    });
    let gw = TestGateway::start(&one_route(
        o.addr,
        "ttl = \"1s\", stale_while_revalidate = \"30s\"",
    ));
    let mut c = gw.connect();
    assert_eq!(get(&mut c, "/prod/x", "").text(), "answer 1");
    std::thread::sleep(Duration::from_millis(1100));
    // The first request after expiry gets the expired answer at once and
    // its connection refreshes the entry (the backend takes 500 ms)...
    let t = std::time::Instant::now();
    let r = get(&mut Client::connect(gw.addr), "/prod/x", "");
    assert_eq!(r.text(), "answer 1");
    assert!(r.header("age").is_some_and(|a| a != "0"), "an old answer");
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "waited {:?}",
        t.elapsed()
    );
    // ...as do others while the refresh runs...
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    assert_eq!(get(&mut c, "/prod/x", "").text(), "answer 1");
    assert!(t.elapsed() < Duration::from_millis(300));
    // ...and many at once: all answered from the old entry, and none
    // refreshes it again (one refresh is running).
    let answers = together(gw.addr, 20, |c| get(c, "/prod/x", "").text());
    assert!(answers.iter().all(|a| a == "answer 1"), "{answers:?}");
    // Once the refresh is done, the new answer is served: one refresh,
    // however many requests got the old answer meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(&mut c, "/prod/x", "").text() != "answer 2" {
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

#[test]
fn vary_keeps_one_entry_per_variant() {
    let (o, n) = numbered(move |i, req| {
        let lang = req.header("accept-language").unwrap_or("none").to_string();
        let body = format!("{lang} {i}");
        let vary = if req.target.contains("star") {
            "*"
        } else {
            "Accept-Language"
        };
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nVary: {vary}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let gw = TestGateway::start(&config(o.addr, "", ""));
    let mut c = gw.connect();
    let en = "Accept-Language: en\r\n";
    let fr = "Accept-Language: fr\r\n";
    assert_eq!(get(&mut c, "/prod/v", en).text(), "en 1");
    assert_eq!(get(&mut c, "/prod/v", fr).text(), "fr 2");
    assert_eq!(get(&mut c, "/prod/v", en).text(), "en 1");
    assert_eq!(get(&mut c, "/prod/v", fr).text(), "fr 2");
    assert_eq!(get(&mut c, "/prod/v", "").text(), "none 3");
    assert_eq!(get(&mut c, "/prod/v", "").text(), "none 3");
    assert_eq!(n.load(Ordering::SeqCst), 3);
    // Vary: * is never stored.
    let a = get(&mut c, "/prod/star", en).text();
    assert_ne!(get(&mut c, "/prod/star", en).text(), a);
}

#[test]
fn other_methods_are_cached_only_when_a_route_opts_in() {
    let (o, n) = origin();
    let text =
        one_route(o.addr, "methods = [\"POST\"]").replace("key = \"GET /x\"", "key = \"ANY /x\"");
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    let post = |c: &mut Client| {
        c.send(b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        c.read_response(false).expect("response").text()
    };
    let first = post(&mut c);
    assert_eq!(post(&mut c), first, "the opted-in POST is cached");
    assert_eq!(n.load(Ordering::SeqCst), 1);
    // GET is not in the route's list: not cached, and not served the
    // POST's entry.
    let g1 = get(&mut c, "/prod/x", "").text();
    let g2 = get(&mut c, "/prod/x", "").text();
    assert_ne!(g1, first);
    assert_ne!(g1, g2);
    // The connection stayed usable after a hit that had a request body.
    assert_eq!(post(&mut c), first);
}

#[test]
fn large_hits_are_written_whole_and_in_order_when_pipelined() {
    let body: String = (0..100_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let b2 = body.clone();
    let o = Origin::start(move |req| {
        let text = if req.target.contains("small") {
            "small".to_string()
        } else {
            b2.clone()
        };
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )
            .into_bytes(),
        )
    });
    let text = one_route(o.addr, "")
        .replace("capacity = \"1MB\"", "capacity = \"4MB\"")
        .replace("max_entry_bytes = 2048", "max_entry_bytes = 200000")
        .replace("key = \"GET /x\"", "key = \"GET /{p}\"")
        .replace("/x\" }", "/{p}\" }");
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    assert_eq!(get(&mut c, "/prod/big", "").text(), body);
    assert_eq!(get(&mut c, "/prod/small", "").text(), "small");
    // Hits for both, pipelined in one write: big, small, big.
    c.send(b"GET /prod/big HTTP/1.1\r\nHost: t\r\n\r\nGET /prod/small HTTP/1.1\r\nHost: t\r\n\r\nGET /prod/big HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("1").text(), body);
    assert_eq!(c.read_response(false).expect("2").text(), "small");
    assert_eq!(c.read_response(false).expect("3").text(), body);
    let counts = gw.gateway().cache_counts();
    assert_eq!((counts[0].1, counts[0].2), (3, 2), "{counts:?}");
}

#[test]
fn unstorable_answers_do_not_make_concurrent_requests_queue() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let o = Origin::start(move |_| {
        n2.fetch_add(1, Ordering::SeqCst);
        Reply::After(
            Duration::from_millis(300),
            Box::new(Reply::Raw(
                b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nok"
                    .to_vec(),
            )),
        )
    });
    let gw = TestGateway::start(&one_route(o.addr, ""));
    let slowest = together(gw.addr, 20, |c| {
        let t = std::time::Instant::now();
        assert_eq!(get(c, "/prod/x", "").status, 200);
        t.elapsed()
    })
    .into_iter()
    .max()
    .unwrap_or_default();
    // One after another (each waiting for the previous claim) would take
    // 20 × 300 ms, or the 5 s lock timeout; once the first answer proves
    // unstorable the others fetch at once.
    assert!(slowest < Duration::from_millis(2500), "slowest {slowest:?}");
    assert_eq!(n.load(Ordering::SeqCst), 20);
}

#[test]
fn chunked_answers_are_stored_and_cookies_never_are() {
    let (o, _) = numbered(move |i, req| {
        if req.target.contains("cookie") {
            let body = format!("cookie {i}");
            return Reply::Raw(
                format!(
                    "HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            );
        }
        let body = format!("chunked {i}");
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
            .into_bytes(),
        )
    });
    let gw = TestGateway::start(&config(o.addr, "ignore_backend_cache_control = true", ""));
    let mut c = gw.connect();
    assert_eq!(get(&mut c, "/prod/chunks", "").text(), "chunked 1");
    let r = get(&mut c, "/prod/chunks", "");
    assert_eq!(r.text(), "chunked 1");
    assert_eq!(r.header("content-length"), Some("9"));
    // Even with backend cache headers ignored, Set-Cookie is never stored.
    let a = get(&mut c, "/prod/cookie", "").text();
    assert_ne!(get(&mut c, "/prod/cookie", "").text(), a);
}

#[test]
fn stale_if_error_covers_backend_5xx_and_hosts_and_upgrades_are_kept_apart() {
    let (o, _) = numbered(move |i, _| {
        if i == 2 {
            return Reply::Raw(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown".to_vec(),
            );
        }
        let body = format!("answer {i}");
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let gw = TestGateway::start(&one_route(o.addr, "ttl = \"1s\", stale_if_error = \"60s\""));
    let mut c = gw.connect();
    assert_eq!(get(&mut c, "/prod/x", "").text(), "answer 1");
    std::thread::sleep(Duration::from_millis(1100));
    // The backend answers 503: the expired entry stands in.
    let r = get(&mut c, "/prod/x", "");
    assert_eq!((r.status, r.text()), (200, "answer 1".to_string()));
    // The next fetch succeeds and is stored.
    assert_eq!(get(&mut c, "/prod/x", "").text(), "answer 3");
    assert_eq!(get(&mut c, "/prod/x", "").text(), "answer 3");
    // Another Host is another entry (whole-URL keys include it).
    c.send(b"GET /prod/x HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(
        c.read_response(false).expect("other host").text(),
        "answer 4"
    );
    // A WebSocket upgrade is never answered from the cache.
    c.send(b"GET /prod/x HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert_eq!(c.read_response(false).expect("upgrade").text(), "answer 5");
}

/// An origin whose every answer is `hello` with an `ETag` ("v1") and a
/// `Last-Modified`, fresh for 600 s.
fn validated_origin() -> Origin {
    Origin::start(|_| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nLast-Modified: Tue, 24 Nov 2026 10:00:00 GMT\r\nCache-Control: max-age=600\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        )
    })
}

#[test]
fn hits_answer_304_to_a_matching_validator() {
    let o = validated_origin();
    let gw = TestGateway::start(&one_route(o.addr, ""));
    let mut c = gw.connect();
    assert_eq!(get(&mut c, "/prod/x", "").text(), "hello");
    // If-None-Match (weak comparison) matches: 304 with the validators.
    c.send(b"GET /prod/x HTTP/1.1\r\nHost: t\r\nIf-None-Match: W/\"v1\"\r\n\r\n");
    let r = c.read_response(true).expect("304");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("cache-control"), Some("max-age=600"));
    assert_eq!(r.header("content-type"), None);
    // Another tag: the full answer.
    let r = get(&mut c, "/prod/x", "If-None-Match: \"v0\"\r\n");
    assert_eq!((r.status, r.text()), (200, "hello".to_string()));
    // If-Modified-Since at or after Last-Modified: 304; before: 200.
    c.send(b"GET /prod/x HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Tue, 24 Nov 2026 10:00:00 GMT\r\n\r\n");
    assert_eq!(c.read_response(true).expect("304").status, 304);
    let r = get(
        &mut c,
        "/prod/x",
        "If-Modified-Since: Mon, 23 Nov 2026 10:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200);
    // The connection is still in step after bodiless 304s.
    assert_eq!(get(&mut c, "/prod/x", "").text(), "hello");
}

#[test]
fn hits_answer_byte_ranges() {
    let o = validated_origin();
    let gw = TestGateway::start(&one_route(o.addr, ""));
    let mut c = gw.connect();
    // A miss passes Range through (this origin ignores it) and fills
    // nothing; the plain GET fills the entry.
    assert_eq!(
        get(&mut c, "/prod/x", "Range: bytes=0-1\r\n").text(),
        "hello"
    );
    assert_eq!(get(&mut c, "/prod/x", "").text(), "hello");
    let part = |c: &mut Client, extra: &str| {
        let r = get(c, "/prod/x", extra);
        let range = r.header("content-range").map(str::to_string);
        (r.status, r.text(), range)
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        part(&mut c, "Range: bytes=1-3\r\n"),
        (206, "ell".into(), some("bytes 1-3/5"))
    );
    assert_eq!(
        part(&mut c, "Range: bytes=-2\r\n"),
        (206, "lo".into(), some("bytes 3-4/5"))
    );
    assert_eq!(
        part(&mut c, "Range: bytes=2-99\r\n"),
        (206, "llo".into(), some("bytes 2-4/5"))
    );
    assert_eq!(
        part(&mut c, "Range: bytes=7-\r\n"),
        (416, String::new(), some("bytes */5"))
    );
    // Several ranges, or an If-Range naming another representation: whole.
    assert_eq!(
        part(&mut c, "Range: bytes=0-0,2-2\r\n"),
        (200, "hello".into(), None)
    );
    assert_eq!(
        part(&mut c, "Range: bytes=0-0\r\nIf-Range: \"v0\"\r\n"),
        (200, "hello".into(), None)
    );
    assert_eq!(
        part(&mut c, "Range: bytes=0-0\r\nIf-Range: \"v1\"\r\n"),
        (206, "h".into(), some("bytes 0-0/5"))
    );
    // HEAD ignores Range; the connection is still in step.
    c.send(b"HEAD /prod/x HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\n\r\n");
    assert_eq!(c.read_response(true).expect("head").status, 200);
    assert_eq!(get(&mut c, "/prod/x", "").text(), "hello");
    assert_eq!(o.requests().len(), 2);
}

#[test]
fn expires_bounds_the_ttl_and_must_revalidate_is_never_served_stale() {
    let (o, _) = numbered(|i, req| {
        let extra = if req.target.contains("expires") {
            // Expires one second after Date.
            "Date: Tue, 24 Nov 2026 10:00:00 GMT\r\nExpires: Tue, 24 Nov 2026 10:00:01 GMT\r\n"
        } else if i == 1 {
            "Cache-Control: max-age=1, must-revalidate\r\n"
        } else {
            ""
        };
        if req.target.contains("revalidate") && i > 1 {
            return Reply::Close;
        }
        let body = format!("answer {i}");
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let text = any_path_route(o.addr, "stale_if_error = \"60s\"");
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    // must-revalidate: after its max-age the backend is down, and the
    // expired entry is not served despite stale_if_error.
    assert_eq!(get(&mut c, "/prod/revalidate", "").text(), "answer 1");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&mut c, "/prod/revalidate", "").status, 502);
    // Expires one second after Date: stored for one second.
    let a = get(&mut c, "/prod/expires", "").text();
    assert_eq!(get(&mut c, "/prod/expires", "").text(), a);
    std::thread::sleep(Duration::from_millis(1100));
    assert_ne!(get(&mut c, "/prod/expires", "").text(), a);
}

#[test]
fn large_not_modified_hits_send_no_body_and_backend_age_counts() {
    let body = "z".repeat(40_000);
    let b2 = body.clone();
    let o = Origin::start(move |_| {
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nETag: \"big\"\r\nAge: 5\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\n\r\n{b2}",
                b2.len()
            )
            .into_bytes(),
        )
    });
    let text = one_route(o.addr, "")
        .replace("capacity = \"1MB\"", "capacity = \"4MB\"")
        .replace("max_entry_bytes = 2048", "max_entry_bytes = 200000");
    let gw = TestGateway::start(&text);
    let mut c = gw.connect();
    assert_eq!(get(&mut c, "/prod/x", "").text(), body);
    c.send(b"GET /prod/x HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"big\"\r\n\r\n");
    let r = c.read_response(true).expect("304");
    assert_eq!(r.status, 304);
    // In step: the next answer on the connection is the full hit, with
    // one Age that includes the backend's 5 s.
    let r = get(&mut c, "/prod/x", "");
    assert_eq!(r.text(), body);
    assert_eq!(
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("age"))
            .count(),
        1
    );
    let age: u64 = r.header("age").and_then(|a| a.parse().ok()).expect("age");
    assert!((5..=6).contains(&age), "age {age}");
}

/// Invalid freshness information from a backend (`max-age=-1`) means
/// stale (RFC 9111 §4.2.1): nothing is served from the cache for it
/// (issue 18, item 14: it was stored for the stage TTL).
#[test]
fn an_invalid_max_age_is_stale() {
    for cc in ["max-age=-1", "max-age", "s-maxage=x"] {
        let origin = Origin::start(move |_| {
            Reply::Raw(
                format!("HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nContent-Length: 2\r\n\r\nhi")
                    .into_bytes(),
            )
        });
        let gw = TestGateway::start(&one_route(origin.addr, ""));
        let mut c = gw.connect();
        for _ in 0..3 {
            assert_eq!(get(&mut c, "/prod/x", "").status, 200);
        }
        assert_eq!(origin.requests().len(), 3, "{cc}: served from the cache");
    }
}

/// A GET with a body is neither answered from the cache nor stored
/// (issue 18, item 16: a backend reflecting the body poisoned the entry).
#[test]
fn a_get_with_a_body_bypasses_the_cache() {
    let origin = Origin::start(|req| {
        let body = format!("saw {}", String::from_utf8_lossy(&req.body));
        Reply::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let gw = TestGateway::start(&one_route(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"GET /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nEVIL");
    assert_eq!(c.read_response(false).expect("r").text(), "saw EVIL");
    c.send(b"GET /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nEVIL\r\n0\r\n\r\n");
    assert_eq!(c.read_response(false).expect("r").text(), "saw EVIL");
    // A plain GET gets its own answer, then it from the cache.
    assert_eq!(get(&mut c, "/prod/x", "").text(), "saw ");
    assert_eq!(get(&mut c, "/prod/x", "").text(), "saw ");
    assert_eq!(origin.requests().len(), 3);
    // And a body-carrying GET does not get the cached answer either.
    c.send(b"GET /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nZ");
    assert_eq!(c.read_response(false).expect("r").text(), "saw Z");
}
