//! End to end: one limit held across 2 shards. Clients on several
//! connections offer far more than the limit for 5 s; the count of
//! admitted requests must match the limit (an assertion on counts, not on
//! speed).
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests time and unwrap

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestGateway;

#[test]
fn a_1000_rps_limit_admits_1000_per_second_across_two_shards() {
    const RATE: u64 = 1000;
    const BURST: u64 = 100;
    // The bucket starts filling when the gateway starts: the ceiling
    // counts from before that.
    let since = Instant::now();
    let gw = TestGateway::start(&format!(
        r#"
[server]
shards = 2
[server.throttle]
enabled = true
rate = {RATE}
burst = {BURST}
[[server.listen]]
addr = "LISTEN"
tls = false
[[api]]
name = "t"
[[api.route]]
key = "GET /x"
integration = {{ type = "mock", body = "ok" }}
"#
    ));
    let ok = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let run_for = Duration::from_secs(5);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (ok, limited, addr) = (ok.clone(), limited.clone(), gw.addr);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                let req = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
                let mut buf = [0u8; 4096];
                while start.elapsed() < run_for {
                    s.write_all(req).expect("write");
                    let mut have = 0;
                    // Responses are small and fit one read; wait for the
                    // whole head and body.
                    loop {
                        let n = s.read(&mut buf[have..]).expect("read");
                        assert!(n > 0, "gateway closed");
                        have += n;
                        let text = &buf[..have];
                        let done =
                            text.windows(4)
                                .position(|w| w == b"\r\n\r\n")
                                .is_some_and(|h| {
                                    let head =
                                        String::from_utf8_lossy(&text[..h]).to_ascii_lowercase();
                                    let len: usize = head
                                        .lines()
                                        .find_map(|l| l.strip_prefix("content-length: "))
                                        .and_then(|v| v.trim().parse().ok())
                                        .unwrap_or(0);
                                    have >= h + 4 + len
                                });
                        if done {
                            break;
                        }
                    }
                    if buf.starts_with(b"HTTP/1.1 200") {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else if buf.starts_with(b"HTTP/1.1 429") {
                        limited.fetch_add(1, Ordering::Relaxed);
                    } else {
                        panic!(
                            "unexpected response {:?}",
                            String::from_utf8_lossy(&buf[..have])
                        );
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let secs = since.elapsed().as_secs_f64();
    let admitted = ok.load(Ordering::Relaxed);
    let refused = limited.load(Ordering::Relaxed);
    let ceiling = BURST as f64 + RATE as f64 * secs;
    println!("admitted {admitted}, refused {refused} in {secs:.2} s; ceiling {ceiling:.0}");
    assert!(
        refused > admitted,
        "the load must exceed the limit for the test to mean anything"
    );
    assert!(
        admitted as f64 <= ceiling,
        "over-admitted: {admitted} > {ceiling:.0}"
    );
    assert!(
        admitted as f64 >= 0.95 * RATE as f64 * secs,
        "under-admitted: {admitted} < 95% of {:.0}",
        RATE as f64 * secs
    );
}
