//! End-to-end error handling: every status the gateway produces itself,
//! malformed requests never reaching the backend, failing backends,
//! timeouts with short configured values.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

fn status_of(gw: &TestGateway, raw: &[u8]) -> (u16, String, bool) {
    let mut c = gw.connect();
    c.send(raw);
    let r = c.read_response(false).expect("response");
    let closed = c.is_closed();
    (r.status, r.text(), closed)
}

#[test]
fn malformed_requests_get_4xx_and_never_reach_the_backend() {
    let origin = Origin::ok("should not be called");
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let long_uri = format!("GET /api/{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    let big_header = format!(
        "GET /api/x HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(11_000)
    );
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /api/x HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        (b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(), 400),
        (b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        (b"POST /api/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(), 400),
        (b"POST /api/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), 501),
        (b"GET /api/x HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n b\r\n\r\n".to_vec(), 400),
        (b"GET /api/x HTTP/1.1\nHost: t\n\n".to_vec(), 400),
        (b"GET /api/x HTTP/1.1\r\nHost: t\r\nX-Ctl: a\x01b\r\n\r\n".to_vec(), 400),
        (b"GET /api/x HTTP/1.1\r\nHost : t\r\n\r\n".to_vec(), 400),
        (b"GET /api/x HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        (b"GET /api/../x HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        (b"GET /api/x HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(), 505),
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"POST /api/x HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\n\r\n".to_vec(), 417),
        (long_uri.into_bytes(), 414),
        (big_header.into_bytes(), 431),
        (many_headers.into_bytes(), 431),
        (b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 10485761\r\n\r\n".to_vec(), 413),
        (b"POST /api/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), 400),
    ];
    for (raw, want) in cases {
        let (status, body, closed) = status_of(&gw, &raw);
        assert_eq!(
            status,
            want,
            "{}",
            String::from_utf8_lossy(&raw[..raw.len().min(80)])
        );
        assert!(body.starts_with("{\"message\":"), "JSON error body: {body}");
        assert!(
            closed,
            "connection must close after a framing error: {}",
            String::from_utf8_lossy(&raw[..raw.len().min(60)])
        );
    }
    assert!(
        origin.requests().is_empty(),
        "backend saw {:?}",
        origin.requests()
    );
}

#[test]
fn oversized_chunked_body_gets_413() {
    let origin = Origin::ok("x");
    let gw = TestGateway::start(&proxy_config(
        origin.addr,
        "[server.limits]\nmax_body_bytes = 1000",
    ));
    let mut c = gw.connect();
    c.send(b"POST /api/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("200\r\n{}\r\n", "z".repeat(0x200));
    for _ in 0..3 {
        c.send(chunk.as_bytes());
    }
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 413);
    assert!(origin.requests().is_empty());
}

#[test]
fn no_route_is_404_json_and_keeps_the_connection() {
    let origin = Origin::ok("x");
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), r#"{"message":"Not Found"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").is_some());
    // The discarded body did not desynchronise the connection.
    assert_eq!(c.get("/mock").text(), "mocked");
}

#[test]
fn connection_refused_is_502() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let gw = TestGateway::start(&proxy_config(port, ""));
    let mut c = gw.connect();
    let r = c.get("/api/x");
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), r#"{"message":"Bad Gateway"}"#);
    // The shard survives and the connection stays usable.
    assert_eq!(c.get("/mock").status, 200);
}

#[test]
fn malformed_backend_response_is_502() {
    let origin = Origin::start(|req| match req.target.as_str() {
        "/garbage" => Reply::RawThenClose(b"NOT HTTP AT ALL\r\n\r\n".to_vec()),
        "/badlen" => Reply::RawThenClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
        ),
        _ => Reply::Close,
    });
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    assert_eq!(c.get("/api/garbage").status, 502);
    assert_eq!(c.get("/api/badlen").status, 502);
    assert_eq!(c.get("/api/hangup").status, 502);
    assert_eq!(c.get("/mock").status, 200);
}

#[test]
fn slow_backend_gets_504_after_the_integration_timeout() {
    let origin = Origin::start(|_| Reply::After(Duration::from_millis(1500), Box::new(ok("late"))));
    let gw = TestGateway::start(&proxy_config(
        origin.addr,
        "[server.timeouts]\nintegration = \"200ms\"",
    ));
    let mut c = gw.connect();
    let t = Instant::now();
    let r = c.get("/api/slow");
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), r#"{"message":"Endpoint request timed out"}"#);
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(c.get("/mock").status, 200);
}

#[test]
fn per_route_timeout_overrides_the_server_default() {
    let origin = Origin::start(|_| Reply::After(Duration::from_millis(400), Box::new(ok("late"))));
    let cfg = format!(
        r#"
[[server.listen]]
addr = "LISTEN"
tls = false
[[api]]
name = "t"
[[api.route]]
key = "GET /fast"
integration = {{ type = "http", uri = "http://{0}/", timeout = "100ms" }}
[[api.route]]
key = "GET /patient"
integration = {{ type = "http", uri = "http://{0}/" }}
"#,
        origin.addr
    );
    let gw = TestGateway::start(&cfg);
    let mut c = gw.connect();
    assert_eq!(c.get("/fast").status, 504);
    assert_eq!(c.get("/patient").status, 200);
}

#[test]
fn backend_closing_mid_response_truncates_and_closes() {
    let origin = Origin::start(|_| {
        Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".to_vec())
    });
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    c.send(b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\n");
    let t = Instant::now();
    let raw = c.read_to_end();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("only part"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(5), "client must not hang");
}

#[test]
fn stale_pooled_connection_is_retried_once_for_idempotent_requests() {
    // The origin answers the first request on each connection and hangs up
    // on the second without answering: the gateway's pooled connection
    // looks alive but fails before any response byte.
    let origin = Origin::start(|req| {
        if req.nth_on_conn == 0 {
            ok("fresh")
        } else {
            Reply::Close
        }
    });
    let gw = TestGateway::start(&proxy_config(origin.addr, ""));
    let mut c = gw.connect();
    assert_eq!(c.get("/api/a").text(), "fresh");
    let r = c.get("/api/b");
    assert_eq!((r.status, r.text()), (200, "fresh".to_string()));
    assert_eq!(origin.connection_count(), 2);

    // A POST is not retried: the backend might have acted on it.
    c.send(b"POST /api/c HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nz");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 502);
}

#[test]
fn connect_timeout_is_504() {
    // A listener with a tiny backlog that never accepts: once the queue is
    // full the kernel drops further SYNs and connects hang.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .expect("addr")
            .into(),
    )
    .expect("bind");
    sock.listen(0).expect("listen");
    let addr = sock.local_addr().expect("addr").as_socket().expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    let gw = TestGateway::start(&proxy_config(
        addr,
        "[server.timeouts]\nbackend_connect = \"300ms\"",
    ));
    let mut c = gw.connect();
    let t = Instant::now();
    let r = c.get("/api/x");
    assert_eq!(r.status, 504);
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn slowloris_head_gets_408_and_idle_keepalive_is_closed() {
    let origin = Origin::ok("x");
    let gw = TestGateway::start(&proxy_config(
        origin.addr,
        "[server.timeouts]\nclient_header = \"300ms\"\nkeepalive = \"300ms\"",
    ));
    let mut c = gw.connect();
    c.send(b"GET /mock HTTP/1.1\r\nHost: t\r\n");
    let t = Instant::now();
    let r = c.read_response(false).expect("408");
    assert_eq!(r.status, 408);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(c.is_closed());

    let mut c = gw.connect();
    assert_eq!(c.get("/mock").status, 200);
    let t = Instant::now();
    assert!(c.is_closed(), "idle keep-alive connection must be closed");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn slow_request_body_gets_408() {
    let origin = Origin::ok("x");
    let gw = TestGateway::start(&proxy_config(
        origin.addr,
        "[server.timeouts]\nclient_body = \"300ms\"",
    ));
    let mut c = gw.connect();
    c.send(b"POST /mock HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    let r = c.read_response(false).expect("408");
    assert_eq!(r.status, 408);
    assert!(c.is_closed());
}
