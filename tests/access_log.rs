//! Access logs end to end: a stage's requests become one line each in the
//! configured format; hostile header bytes never break a JSON line;
//! reopening after a rename starts a new file; a writer that cannot keep
//! up drops and counts lines and never holds a request back.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests time and unwrap

mod common;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tollgate::config::{self, Host};
use tollgate::runtime::{self, Gateway};

fn tmp(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("access-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn config(origin: std::net::SocketAddr, log: &std::path::Path, format: &str) -> String {
    format!(
        r#"
[server]
shards = 1
[server.throttle]
enabled = false
[[server.listen]]
addr = "127.0.0.1:0"
tls = false
[[api_key]]
name = "alice"
value = "alice-key-0123456789abcdef"
[[api]]
name = "logged"
[[api.stage]]
name = "prod"
access_log = {{ destination = "{}", format = '{format}' }}
[[api.stage]]
name = "quiet"
[[api.route]]
key = "GET /m"
integration = {{ type = "mock", body = "mocked" }}
[[api.route]]
key = "ANY /p/{{x}}"
integration = {{ type = "http", uri = "http://{origin}/{{x}}" }}
"#,
        log.display()
    )
}

fn start(text: &str) -> Gateway {
    let snap = config::from_str(text, "log.toml", &Host::detect()).expect("config");
    runtime::start(Arc::new(snap)).expect("start")
}

/// Waits until `path` holds at least `n` lines; returns them.
fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read(path).unwrap_or_default();
        let text = String::from_utf8(text).expect("log lines are UTF-8");
        let v: Vec<String> = text.lines().map(str::to_string).collect();
        if v.len() >= n || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_lines_survive_hostile_input() {
    let origin = Origin::start(|_| {
        Reply::Raw(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec())
    });
    let log = tmp("json.log");
    let gw = start(&config(origin.addr, &log, "json"));
    let addr = gw.addrs()[0];
    let mut c = Client::connect(addr);
    c.send(b"GET /prod/m HTTP/1.1\r\nHost: t\r\nx-api-key: alice-key-0123456789abcdef\r\nUser-Agent: a \"quoted\" \\ agent \xff\xfe\tend\r\n\r\n");
    assert_eq!(c.read_response(false).expect("response").status, 200);
    c.send(b"POST /prod/p/x HTTP/1.1\r\nHost: t\r\ncontent-length: 3\r\n\r\nabc");
    assert_eq!(c.read_response(false).expect("response").status, 503);
    // Not logged: a stage without access_log, and no route.
    assert_eq!(c.get("/quiet/m").status, 200);
    assert_eq!(c.get("/prod/none").status, 404);
    c.send(b"GET /prod/m HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response(false).expect("response").status, 200);

    let got = lines(&log, 3);
    assert_eq!(got.len(), 3, "{got:#?}");
    let v: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[0]["routeKey"], "GET /m");
    assert_eq!(v[0]["path"], "/prod/m");
    assert_eq!(v[0]["stage"], "prod");
    assert_eq!(v[0]["api"], "logged");
    assert_eq!(v[0]["integrationStatus"], serde_json::Value::Null);
    assert_eq!(
        v[0]["userAgent"],
        "a \"quoted\" \\ agent \u{fffd}\u{fffd}\tend"
    );
    assert_eq!(v[0]["requestId"].as_str().map(str::len), Some(36));
    assert_eq!(v[1]["httpMethod"], "POST");
    assert_eq!(v[1]["status"], 503);
    assert_eq!(v[1]["integrationStatus"], 503);
    assert!(v[1]["integrationLatency"].is_u64());
    assert_eq!(v[1]["routeKey"], "ANY /p/{x}");
    assert_eq!(v[2]["protocol"], "HTTP/1.0");
    drop(c);
    gw.stop();
    gw.join();
    let _ = std::fs::remove_file(&log);
}

#[test]
fn templates_name_every_variable_and_rotation_starts_a_new_file() {
    let origin = Origin::ok("x");
    let log = tmp("tpl.log");
    let format =
        "$context.httpMethod $context.path $context.status key=$context.identity.apiKeyId \
                  err=$context.error.message cache=$context.cacheStatus host=$context.domainName";
    let gw = start(&config(origin.addr, &log, format));
    let addr = gw.addrs()[0];
    let mut c = Client::connect(addr);
    c.send(b"GET /prod/m HTTP/1.1\r\nHost: t\r\nx-api-key: alice-key-0123456789abcdef\r\n\r\n");
    c.read_response(false).expect("response");
    let got = lines(&log, 1);
    assert_eq!(
        got,
        ["GET /prod/m 200 key=alice err=- cache=- host=t"],
        "{got:?}"
    );

    // logrotate: move the file, reopen, the next line is in a new file.
    let rotated = tmp("tpl.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    gw.control().reopen_logs();
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"GET /prod/p/x HTTP/1.1\r\nHost: t\r\n\r\n");
    c.read_response(false).expect("response");
    assert_eq!(
        lines(&log, 1),
        ["GET /prod/p/x 200 key=- err=- cache=- host=t"]
    );
    assert_eq!(lines(&rotated, 1).len(), 1);
    gw.stop();
    gw.join();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&rotated);
}

#[test]
fn bad_formats_are_refused_with_their_path() {
    let origin = Origin::ok("x");
    let text = config(origin.addr, &tmp("bad.log"), "$context.nope");
    let e = config::from_str(&text, "bad.toml", &Host::detect()).expect_err("invalid");
    let issues: Vec<String> = e.issues().iter().map(ToString::to_string).collect();
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("api[0].stage[0].access_log.format:")
                && i.contains("$context.nope")),
        "{issues:?}"
    );
}

#[test]
fn a_stalled_writer_drops_and_counts_lines_never_requests() {
    // A FIFO nobody reads: the writer blocks once the pipe is full.
    let fifo = tmp("stall.fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Hold a read end open (non-blocking open) so the writer's open
    // succeeds; never read from it until the end.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open fifo for reading");
    let origin = Origin::ok("x");
    let gw = start(&config(origin.addr, &fifo, "json"));
    let addr = gw.addrs()[0];

    // ~25,000 lines of ~300 bytes: more than the pipe (64 KiB), the
    // writer's queue (64 x 64 KiB) and the shard's buffer (1 MiB) hold.
    let mut c = Client::connect(addr);
    let batch = b"GET /prod/m HTTP/1.1\r\nHost: t\r\n\r\n".repeat(100);
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..250 {
        c.send(&batch);
        for _ in 0..100 {
            if c.read_response(false).expect("response").status == 200 {
                ok += 1;
            }
        }
    }
    assert_eq!(ok, 25_000, "every request answered");
    assert!(started.elapsed() < Duration::from_secs(60));
    // The shard hands its last lines over at its next tick.
    std::thread::sleep(Duration::from_millis(100));
    let (written, dropped) = gw.control().access_log_counts();
    assert!(dropped > 0, "nothing dropped (written {written})");
    assert!(written < 25_000);

    // Unblock the writer, so shutting down can finish writing.
    let drain = std::thread::spawn(move || {
        let mut reader = reader;
        let mut sink = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => break,
            }
        }
        sink
    });
    let control = gw.control();
    gw.stop();
    gw.join();
    drop(control);
    let out = drain.join().expect("drain");
    let n = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    let _ = std::fs::remove_file(&fifo);
    // Every line was either written (the reader got it) or counted.
    assert!(n >= written, "{n} < {written}");
}
