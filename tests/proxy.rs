//! End-to-end proxying through real sockets: routing, header handling,
//! keep-alive reuse, pipelining, bodies in both directions.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use std::time::Duration;

use common::*;

#[test]
fn proxies_with_params_query_and_forwarded_headers() {
    let origin = Origin::ok("from origin");
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"GET /api/users/7?x=1&y=%20 HTTP/1.1\r\nHost: public.example\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: ftp\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nAccept: text/plain\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "from origin");
    let rid = r.header("x-request-id").expect("request id").to_string();
    assert_eq!(rid.len(), 36);

    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    let q = &reqs[0];
    assert_eq!(q.method, "GET");
    assert_eq!(q.target, "/users/7?x=1&y=%20");
    assert_eq!(q.header("host"), Some(origin.addr.to_string().as_str()));
    assert_eq!(q.header("x-forwarded-for"), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(q.header("x-forwarded-proto"), Some("http"));
    assert_eq!(q.header("x-forwarded-host"), Some("public.example"));
    assert_eq!(q.header("x-request-id"), Some(rid.as_str()));
    assert_eq!(q.header("accept"), Some("text/plain"));
    for hop in [
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(q.header(hop).is_none(), "{hop} must not be forwarded");
    }
}

#[test]
fn strips_hop_by_hop_response_headers() {
    let origin = Origin::start(|_| {
        Reply::Raw(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nx-request-id: from-backend\r\nContent-Length: 2\r\n\r\nok".to_vec())
    });
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let r = gw.connect().get("/api/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-kept"), Some("yes"));
    assert!(r.header("keep-alive").is_none());
    assert!(r.header("connection").is_none());
    assert_ne!(r.header("x-request-id"), Some("from-backend"));
    // X-Internal is named by the backend's Connection header: hop-by-hop.
    assert!(r.header("x-internal").is_none());
}

#[test]
fn trusted_request_id_is_kept_only_when_configured() {
    let origin = Origin::ok("x");
    let gw = TestGateway::start(&proxy_config(origin.addr, "trust_request_id = true"));
    let mut c = gw.connect();
    c.send(b"GET /api/a HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert_eq!(origin.requests()[0].header("x-request-id"), Some("abc-123"));

    let gw2 = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw2.connect();
    c.send(b"GET /mock HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_ne!(r.header("x-request-id"), Some("abc-123"));
}

#[test]
fn keep_alive_reuses_one_backend_connection() {
    let origin = Origin::ok("pong");
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    for _ in 0..20 {
        let r = c.get("/api/ping");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "pong");
    }
    assert_eq!(origin.requests().len(), 20);
    assert_eq!(
        origin.connection_count(),
        1,
        "backend connection must be reused"
    );
    // A second client connection on the same shard reuses it too.
    let r = gw.connect().get("/api/ping");
    assert_eq!(r.status, 200);
    assert_eq!(origin.connection_count(), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(|req| ok(&format!("echo {}", req.target)));
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(
        b"GET /api/one HTTP/1.1\r\nHost: t\r\n\r\nGET /mock HTTP/1.1\r\nHost: t\r\n\r\nPOST /api/two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /api/three HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let bodies: Vec<(u16, String)> = (0..5)
        .map(|_| {
            let r = c.read_response(false).expect("response");
            (r.status, r.text())
        })
        .collect();
    assert_eq!(
        bodies,
        vec![
            (200, "echo /one".to_string()),
            (200, "mocked".to_string()),
            (200, "echo /two".to_string()),
            (404, r#"{"message":"Not Found"}"#.to_string()),
            (200, "echo /three".to_string()),
        ]
    );
    assert_eq!(origin.requests()[1].body, b"abc");
}

#[test]
fn chunked_request_body_is_forwarded_chunked() {
    let origin = Origin::start(|req| ok(&format!("got {} bytes", req.body.len())));
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"POST /api/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.text(), "got 11 bytes");
    let req = &origin.requests()[0];
    assert!(req.chunked);
    assert_eq!(req.body, b"hello world");
    assert!(req.header("content-length").is_none());
}

#[test]
fn chunked_response_goes_chunked_to_1_1_and_close_delimited_to_1_0() {
    let origin = Origin::start(|_| {
        Reply::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n".to_vec())
    });
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    let r = c.get("/api/c");
    assert!(r.chunked);
    assert_eq!(r.text(), "wikipedia");
    // Connection still usable.
    assert_eq!(c.get("/api/c").text(), "wikipedia");

    let mut c = gw.connect();
    c.send(b"GET /api/c HTTP/1.0\r\n\r\n");
    let raw = String::from_utf8(c.read_to_end()).expect("utf8");
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(
        !raw.to_ascii_lowercase().contains("transfer-encoding"),
        "{raw}"
    );
    assert!(
        raw.to_ascii_lowercase().contains("connection: close"),
        "{raw}"
    );
    assert!(raw.ends_with("\r\n\r\nwikipedia"), "{raw}");
}

#[test]
fn response_without_framing_is_rechunked_and_not_reused() {
    let origin =
        Origin::start(|_| Reply::RawThenClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec()));
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    let r = c.get("/api/x");
    assert!(r.chunked);
    assert_eq!(r.text(), "until close");
    assert_eq!(c.get("/api/x").text(), "until close");
    assert_eq!(origin.connection_count(), 2);
}

#[test]
fn http_1_0_with_and_without_keep_alive() {
    let origin = Origin::ok("ten");
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"GET /api/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.text(), "ten");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /mock HTTP/1.0\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.text(), "mocked");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

#[test]
fn connection_close_is_honoured() {
    let origin = Origin::ok("x");
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"GET /api/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

#[test]
fn head_204_and_304_carry_no_body() {
    let origin = Origin::start(|req| match req.target.as_str() {
        "/nc" => Reply::Raw(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec()),
        "/nm" => Reply::Raw(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec()),
        _ => Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec()),
    });
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"HEAD /api/big HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(true).expect("head response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    let r = c.get("/api/nc");
    assert_eq!(r.status, 204);
    assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none());
    let r = c.get("/api/nm");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    // The connection is still in sync after the bodiless responses.
    c.send(b"HEAD /mock HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(true).expect("mock head");
    assert_eq!(r.header("content-length"), Some("6"));
    assert_eq!(c.get("/mock").text(), "mocked");
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let origin = Origin::start(|req| ok(&String::from_utf8_lossy(&req.body)));
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(
        b"PUT /api/doc HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = c.read_response(true).expect("100 continue");
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let r = c.read_response(false).expect("final response");
    assert_eq!((r.status, r.text()), (200, "hello".to_string()));
    assert!(origin.requests()[0].header("expect").is_none());
}

#[test]
fn payloads_pass_through_byte_for_byte() {
    let origin = Origin::start(|req| {
        let mut head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", req.body.len()).into_bytes();
        head.extend_from_slice(&req.body);
        Reply::Raw(head)
    });
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    let body: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let mut req = format!("POST /api/bin HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    let r = c.read_response(false).expect("response");
    assert_eq!(r.body, body);
    assert_eq!(origin.requests()[0].body, body);
}

#[test]
fn large_upload_and_download_stream_through() {
    const UP: usize = 9 * 1024 * 1024;
    const DOWN: usize = 50 * 1024 * 1024;
    let origin = Origin::bulk(DOWN);
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(format!("POST /api/up HTTP/1.1\r\nHost: t\r\nContent-Length: {UP}\r\n\r\n").as_bytes());
    let chunk = vec![b'u'; 1 << 20];
    for _ in 0..9 {
        c.send(&chunk);
    }
    let r = c.read_response(false).expect("upload response");
    assert_eq!(r.text(), UP.to_string());
    let r = c.get("/api/down");
    assert_eq!(r.body.len(), DOWN);
    assert!(r.body.iter().all(|&b| b == b'x'));
}

#[test]
fn stages_and_hosts_select_apis_and_stage_variables() {
    let prod = Origin::ok("prod backend");
    let dev = Origin::ok("dev backend");
    let cfg = format!(
        r#"
[server]
shards = 2
[[server.listen]]
addr = "LISTEN"
tls = false

[[api]]
name = "shop"
hosts = ["shop.example.com", "*.shop.example.com"]
base_path = "/v1"
[[api.stage]]
name = "prod"
variables = {{ backend = "{}" }}
[[api.stage]]
name = "dev"
variables = {{ backend = "{}" }}
[[api.route]]
key = "ANY /items/{{proxy+}}"
integration = {{ type = "http", uri = "http://${{stageVariables.backend}}/items/{{proxy}}" }}

[[api]]
name = "other"
hosts = ["*"]
[[api.route]]
key = "GET /items/{{id}}"
integration = {{ type = "mock", body = "other api" }}
"#,
        prod.addr, dev.addr
    );
    let gw = TestGateway::start(&cfg);
    let mut c = gw.connect();
    let get = |c: &mut Client, host: &str, path: &str| {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let r = c.read_response(false).expect("response");
        (r.status, r.text())
    };
    assert_eq!(
        get(&mut c, "shop.example.com", "/v1/prod/items/a/b"),
        (200, "prod backend".into())
    );
    assert_eq!(
        get(&mut c, "EU.Shop.Example.com:8080", "/v1/dev/items/a"),
        (200, "dev backend".into())
    );
    assert_eq!(
        get(&mut c, "elsewhere.net", "/items/42"),
        (200, "other api".into())
    );
    assert_eq!(get(&mut c, "shop.example.com", "/items/42").0, 404);
    assert_eq!(prod.requests()[0].target, "/items/a/b");
    assert_eq!(dev.requests()[0].target, "/items/a");
}

#[test]
fn two_shards_serve_many_connections() {
    let origin = Origin::ok("hi");
    let cfg = proxy_config(origin.addr, "").replace("shards = 1", "shards = 2");
    let gw = TestGateway::start(&cfg);
    for _ in 0..40 {
        let mut c = gw.connect();
        assert_eq!(c.get("/api/x").text(), "hi");
        assert_eq!(c.get("/mock").text(), "mocked");
    }
    assert_eq!(origin.requests().len(), 40);
}

#[test]
fn websocket_upgrade_is_tunnelled() {
    use std::io::{Read, Write};
    // A raw origin: accepts the upgrade, then echoes bytes upper-cased.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen2 = seen.clone();
    let addr = raw_origin(move |mut s, head| {
        *seen2.lock().expect("lock") = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc\r\n\r\nwelcome");
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let up: Vec<u8> = buf[..n].to_ascii_uppercase();
                    if s.write_all(&up).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let gw = TestGateway::start(&proxy_config(addr, ""));
    let mut c = gw.connect();
    c.send(b"GET /api/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nfirst");
    let r = c.read_response(true).expect("101");
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(r.header("connection"), Some("upgrade"));
    assert_eq!(r.header("sec-websocket-accept"), Some("abc"));
    let mut got = Vec::new();
    let mut want = b"welcomeFIRST".to_vec();
    c.read_exact_into(&mut got, want.len());
    assert_eq!(got, want);
    c.send(b"ping");
    got.clear();
    want = b"PING".to_vec();
    c.read_exact_into(&mut got, want.len());
    assert_eq!(got, want);
    let head = seen.lock().expect("lock").clone();
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    assert!(
        head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{head}"
    );
}

#[test]
fn upgrade_other_than_websocket_is_not_forwarded() {
    let origin = Origin::ok("plain");
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"GET /api/x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!((r.status, r.text()), (200, "plain".to_string()));
    assert!(origin.requests()[0].header("upgrade").is_none());
}

/// Of a client's Upgrade list only `websocket` reaches the backend, and a
/// backend's 101 to anything but WebSocket is a 502, never a tunnel
/// (issue 18, item 15: `h2c` was tunnelled).
#[test]
fn only_a_switch_to_websocket_is_tunnelled() {
    let origin = Origin::start(|req| {
        let proto = if req.target.ends_with("h2c") {
            "h2c"
        } else {
            "websocket, h2c"
        };
        Reply::Raw(
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {proto}\r\nConnection: Upgrade\r\n\r\n")
                .into_bytes(),
        )
    });
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    for path in ["/api/h2c", "/api/both"] {
        let mut c = gw.connect();
        c.send(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response(false).expect("response");
        assert_eq!(r.status, 502, "{path}");
    }
    for req in origin.requests() {
        assert_eq!(
            req.header("upgrade"),
            Some("websocket"),
            "{:?}",
            req.headers
        );
        assert_eq!(req.header_count("upgrade"), 1);
    }
}

#[test]
fn deferred_accept_listeners_serve_and_take_clients_that_wait() {
    let gw = TestGateway::start(
        r#"
[[server.listen]]
addr = "LISTEN"
tls = false
defer_accept = true
[[api]]
name = "d"
[[api.route]]
key = "GET /d"
integration = { type = "mock", body = "deferred" }
"#,
    );
    // A client that sends at once.
    let r = gw.connect().get("/d");
    assert_eq!((r.status, r.text().as_str()), (200, "deferred"));
    // A client that waits before its first bytes is still served (the
    // kernel hands the connection over when they come).
    let mut c = gw.connect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = c.get("/d");
    assert_eq!(r.status, 200);
}
