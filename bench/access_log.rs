//! Cost of one access log line: [`Format::render`] of the `json`, `clf`
//! and `csv` presets for a realistic record (the request's second already
//! in the time cache, as for all but the first request of a second), the
//! same when every line starts a new second, a record with hostile bytes
//! to escape, and the shard's whole per-request cost (render into its
//! `ShardLog`, batches handed to a writer thread appending to
//! `/dev/null`).
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests time and unwrap

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use tollgate::observe::access_log::{AccessLog, Destination, Format, LogRecord};

fn record() -> LogRecord<'static> {
    LogRecord {
        request_id: b"7f3c9a2e-5b1d-4e8f-9a6c-0d2b4f6e8a1c",
        source_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 23)),
        time: UNIX_EPOCH + Duration::from_millis(1_764_561_865_123),
        method: b"GET",
        route_key: Some("GET /pets/{id}"),
        path: b"/prod/pets/12345",
        status: 200,
        http10: false,
        response_length: 1834,
        latency: Duration::from_micros(3_412),
        integration_latency: Some(Duration::from_micros(2_917)),
        integration_status: Some(200),
        error_message: None,
        user_agent: Some(
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
Chrome/131.0.0.0 Safari/537.36",
        ),
        stage: Some("prod"),
        api: Some("petstore"),
        host: Some(b"api.example.com"),
        api_key_id: Some("partner-a"),
        cache: Some(false),
        canary: false,
        client_cert: None,
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("access_log");
    g.throughput(Throughput::Elements(1));
    let rec = record();
    let mut out = Vec::with_capacity(4096);

    for preset in ["json", "clf", "csv"] {
        let format = Format::parse(preset).expect("preset");
        g.bench_function(format!("render_{preset}"), |b| {
            b.iter(|| {
                out.clear();
                format.render(black_box(&rec), &mut out);
                black_box(out.len())
            })
        });
    }

    // Every line in a new second: the CLF date is computed each time.
    let clf = Format::parse("clf").expect("preset");
    let mut secs = 1_764_561_865u64;
    g.bench_function("render_clf_new_second", |b| {
        b.iter(|| {
            secs += 1;
            let rec = LogRecord {
                time: UNIX_EPOCH + Duration::from_secs(secs),
                ..rec
            };
            out.clear();
            clf.render(black_box(&rec), &mut out);
            black_box(out.len())
        })
    });

    // Quotes, backslashes, CR/LF, control bytes and invalid UTF-8.
    let json = Format::parse("json").expect("preset");
    let hostile = LogRecord {
        path: b"/prod/pets/\"%22\\..\\..\r\n\x01\x7f\xff\xfe/\xc3\xa9t\xc3\xa9",
        user_agent: Some(b"\"><script>alert(1)</script>\x00\x1b[31m\xed\xa0\x80"),
        error_message: Some("Missing Authentication Token"),
        ..rec
    };
    g.bench_function("render_json_hostile", |b| {
        b.iter(|| {
            out.clear();
            json.render(black_box(&hostile), &mut out);
            black_box(out.len())
        })
    });

    // The shard's per-request cost: render into its buffer and hand the
    // batch to the writer thread. Between batches (untimed) the writer is
    // let catch up, so no line is dropped however busy the machine is: a
    // dropped line costs nothing and would flatter the number.
    let log = AccessLog::start(Destination::File(PathBuf::from("/dev/null")), 64)
        .expect("open /dev/null");
    let mut shard = log.shard_buffer();
    let mut offered = 0u64;
    g.bench_function("shard_line_json", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(200);
                let start = Instant::now();
                for _ in 0..n {
                    shard.line(|buf| json.render(black_box(&rec), buf));
                }
                shard.flush();
                timed += start.elapsed();
                left -= n;
                offered += n;
                while log.written() + log.dropped() < offered {
                    shard.flush();
                    std::thread::yield_now();
                }
            }
            timed
        })
    });
    g.finish();
    shard.flush();
    drop(shard);
    log.stop();
    eprintln!(
        "shard_line_json: {} lines written, {} dropped",
        log.written(),
        log.dropped()
    );
}

criterion_group!(access_log, benches);
criterion_main!(access_log);
