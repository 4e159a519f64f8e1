//! Hot reload: under continuous load, twenty reloads alternating two
//! configurations and one invalid one fail no request; routes switch;
//! listeners open and close; quotas keep counting across a reload that
//! rebuilds the throttles.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tollgate::config::{self, Host};
use tollgate::runtime::{self, Control, Gateway};

fn config_file(name: &str, text: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reload-{name}-{}.toml", std::process::id()));
    std::fs::write(&p, text).expect("write config");
    p
}

fn start(path: &std::path::Path) -> Gateway {
    let snap = config::load(path, &Host::detect()).expect("valid config");
    let gw = runtime::start(Arc::new(snap)).expect("start");
    gw.control().set_source(path.to_path_buf(), None);
    gw
}

/// Config `version` ("A" or "B"): `/both` answers with the version, and
/// only that version has `/only-{version}`.
fn versioned(version: &str, listen: &str, shards: usize) -> String {
    format!(
        r#"
[server]
shards = {shards}
[server.throttle]
enabled = false
[[server.listen]]
addr = "{listen}"
tls = false
[[api]]
name = "r"
[[api.route]]
key = "GET /both"
integration = {{ type = "mock", body = "{version}" }}
[[api.route]]
key = "GET /only-{version}"
integration = {{ type = "mock", body = "only {version}" }}
"#
    )
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn reloads_under_load_fail_no_request() {
    let shards = Host::detect().cpus.len().min(2);
    // Bind a fixed port so both versions name the same listener.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let a = versioned("A", &listen, shards);
    let b = versioned("B", &listen, shards);
    let path = config_file("load", &a);
    let gw = start(&path);
    let addr: SocketAddr = listen.parse().expect("addr");
    let control = gw.control();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let mut load = Vec::new();
    for t in 0..4 {
        let (stop, ok, failures, seen) = (stop.clone(), ok.clone(), failures.clone(), seen.clone());
        load.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                // Every fourth request on a new connection: accepts keep
                // working across reloads too.
                if n % 4 == 3 {
                    c = Client::connect(addr);
                }
                n += 1;
                if c.try_send(b"GET /both HTTP/1.1\r\nHost: t\r\n\r\n")
                    .is_err()
                {
                    failures
                        .lock()
                        .expect("lock")
                        .push(format!("thread {t}: send failed"));
                    return;
                }
                match c.read_response(false) {
                    Some(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        seen.lock().expect("lock").insert(r.text());
                    }
                    Some(r) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("thread {t}: status {}", r.status)),
                    None => {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("thread {t}: no response"));
                        return;
                    }
                }
            }
        }));
    }

    std::thread::sleep(Duration::from_millis(100));
    for i in 0..20 {
        let text = if i % 2 == 0 { &b } else { &a };
        std::fs::write(&path, text).expect("write");
        let r = control.reload_from_source().expect("valid reload");
        assert_eq!(r.generation, i + 1);
        assert!(r.restart_needed.is_empty(), "{:?}", r.restart_needed);
        if i == 9 {
            // One invalid configuration in the middle: refused with the
            // key path and reason, the running one stays.
            std::fs::write(&path, text.replace("GET /both", "GET /both/{p+}/x")).expect("write");
            let e = control.reload_from_source().expect_err("invalid reload");
            let issues = e.issues().join("\n");
            assert!(issues.contains("api[0].route[0].key"), "{issues}");
            assert_eq!(control.status().failed_reloads, 1);
            assert_eq!(control.status().generation, 10);
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Release);
    for t in load {
        t.join().expect("load thread");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let served = ok.load(Ordering::Relaxed);
    assert!(served > 200, "load too light to mean anything: {served}");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.contains("A") && seen.contains("B"), "{seen:?}");

    // The last reload (i = 19) installed A: its routes, not B's.
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/both").text(), "A");
    assert_eq!(c.get("/only-A").status, 200);
    assert_eq!(c.get("/only-B").status, 404);
    assert_eq!(control.status().reloads, 20);
    gw.stop();
    gw.join();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn listeners_open_and_close_on_reload() {
    let extra = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        l.local_addr().expect("addr")
    };
    let one = versioned("A", "127.0.0.1:0", 1);
    let path = config_file("listen", &one);
    let gw = start(&path);
    let control: Arc<Control> = gw.control();
    let first = gw.addrs()[0];
    let two = format!("{one}\n[[server.listen]]\naddr = \"{extra}\"\ntls = false\n");
    std::fs::write(&path, &two).expect("write");
    let r = control.reload_from_source().expect("reload");
    assert_eq!(r.listeners_opened, vec![extra]);
    assert!(wait_for(|| std::net::TcpStream::connect(extra).is_ok()));
    assert_eq!(Client::connect(extra).get("/both").text(), "A");
    // The first listener (port 0 in the file) is the same socket still.
    assert_eq!(Client::connect(first).get("/both").text(), "A");
    assert_eq!(gw.addrs(), vec![first, extra]);

    // An address that cannot be bound refuses the whole reload.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("blocker");
    let taken = blocker.local_addr().expect("addr");
    let bad = format!(
        "{}\n[[server.listen]]\naddr = \"{taken}\"\ntls = false\n",
        versioned("B", "127.0.0.1:0", 1)
    );
    std::fs::write(&path, &bad).expect("write");
    let e = control.reload_from_source().expect_err("port in use");
    assert!(e.to_string().contains(&taken.to_string()), "{e}");
    assert_eq!(Client::connect(first).get("/both").text(), "A");

    std::fs::write(&path, &one).expect("write");
    let r = control.reload_from_source().expect("reload");
    assert_eq!(r.listeners_closed, vec![extra]);
    assert!(
        wait_for(|| std::net::TcpStream::connect(extra).is_err()),
        "removed listener still accepts"
    );
    assert_eq!(Client::connect(first).get("/both").text(), "A");
    gw.stop();
    gw.join();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn quota_keeps_counting_when_a_reload_rebuilds_throttles() {
    let state = state_dir("reload-quota");
    let base = quota_config(&state, 1, 10, "DAY").replace("LISTEN", "127.0.0.1:0");
    let path = config_file("quota", &base);
    let gw = start(&path);
    let addr = gw.addrs()[0];
    for _ in 0..4 {
        assert_eq!(keyed_get(addr).status, 200);
    }
    // A new route throttle: the limits change, so the reconciler is
    // rebuilt; the quota must carry its count over.
    let changed = base.replace(
        "key = \"GET /x\"",
        "key = \"GET /x\"\nthrottle = { rate = 1000, burst = 1000 }",
    );
    std::fs::write(&path, &changed).expect("write");
    let r = gw.control().reload_from_source().expect("reload");
    assert!(r.throttle_rebuilt);
    let usage = gw.quota_usage();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].used, 4, "{usage:?}");
    let mut admitted = 0;
    for _ in 0..10 {
        if keyed_get(addr).status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 6, "the quota's 10 span the reload");
    gw.stop();
    gw.join();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&state);
}
