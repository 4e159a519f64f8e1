//! What metrics cost a request: recording one finished exchange into the
//! shard's counters (status class, bytes, two histograms), the clock
//! reads a request makes for its latency, and rendering a scrape.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests time and unwrap

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::observe::counters::{Counters, Exchange, RouteTotals};
use tollgate::observe::metrics::Exposition;

fn record(c: &mut Criterion) {
    let counters = Counters::new();
    counters.ensure(1024);
    let e = Exchange {
        status: 200,
        bytes_in: 80,
        bytes_out: 180,
        latency: Duration::from_micros(42),
        integration: Some(Duration::from_micros(30)),
    };
    let mut id = 0u32;
    c.bench_function("record_exchange", |b| {
        b.iter(|| {
            // Spread over routes like a mixed workload would.
            id = (id + 7) & 1023;
            counters.record(black_box(id), black_box(&e));
        })
    });
    c.bench_function("record_exchange_with_clock", |b| {
        b.iter(|| {
            // What a proxied request adds: a clock read at its start, at
            // the backend's head and at its end, then the record.
            let start = Instant::now();
            let integ = Instant::now();
            let e = Exchange {
                latency: start.elapsed(),
                integration: Some(integ.elapsed()),
                ..e
            };
            id = (id + 7) & 1023;
            counters.record(black_box(id), &e);
        })
    });
    c.bench_function("refusal_count", |b| {
        b.iter(|| {
            counters.refused(
                black_box(tollgate::observe::counters::Level::Route),
                Some(3),
            )
        })
    });
}

fn scrape(c: &mut Criterion) {
    // 100 routes summed over 2 shards, rendered: the admin thread's work
    // per scrape (off the request path).
    let shards: Vec<Counters> = (0..2)
        .map(|_| {
            let c = Counters::new();
            c.ensure(101);
            for id in 0..101 {
                c.record(
                    id,
                    &Exchange {
                        status: 200,
                        bytes_in: 1,
                        bytes_out: 1,
                        latency: Duration::from_micros(u64::from(id) * 10),
                        integration: None,
                    },
                );
            }
            c
        })
        .collect();
    c.bench_function("scrape_100_routes_2_shards", |b| {
        b.iter(|| {
            let mut e = Exposition::new();
            e.family("tollgate_request_duration_seconds", "histogram", "x");
            for id in 0..101u32 {
                let mut t = RouteTotals::default();
                for s in &shards {
                    s.add_route(id, &mut t);
                }
                let route = id.to_string();
                e.histogram(
                    "tollgate_request_duration_seconds",
                    &[("api", "a"), ("stage", "s"), ("route", &route)],
                    &t.latency,
                );
            }
            black_box(e.finish().len())
        })
    });
}

criterion_group!(benches, record, scrape);
criterion_main!(benches);
