//! Cost of the per-request guards: the throttle check with three and five
//! levels through the shard's real [`ShardThrottle::check`] (leases, with
//! top-ups when one runs dry), the lease arithmetic alone, the API key
//! lookup (SHA-256 of the presented key plus a map probe) and the shared
//! per-client-IP table. The throttling issue's target is under 30 ns for
//! three levels.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use tollgate::auth::api_key::{digest_of_value, KeyTable};
use tollgate::throttle::bucket::{TokenBucket, MILLI};
use tollgate::throttle::client_ip::ClientIpTable;
use tollgate::throttle::lease::ShardLease;
use tollgate::throttle::quota::Period;
use tollgate::throttle::sync::{self, LimitSpec, QuotaSpec};

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("throttle");
    g.throughput(Throughput::Elements(1));

    // Admitted path: every level has tokens (refilled between batches).
    let mut levels = [
        ShardLease::default(),
        ShardLease::default(),
        ShardLease::default(),
    ];
    g.bench_function("three_levels_admit", |b| {
        b.iter(|| {
            for l in levels.iter_mut() {
                l.grant(MILLI);
            }
            let ok = levels.iter_mut().all(|l| l.try_admit());
            black_box(ok)
        })
    });

    // Rejected path: the first level is empty (later levels are not charged).
    let mut empty = [
        ShardLease::default(),
        ShardLease::default(),
        ShardLease::default(),
    ];
    g.bench_function("three_levels_reject", |b| {
        b.iter(|| black_box(empty.iter_mut().all(|l| l.try_admit())))
    });

    // A single token bucket with the clock passed in (per-IP level shape).
    let mut bucket = TokenBucket::new(1_000_000, 1_000, 0);
    let mut now = 0u64;
    g.bench_function("token_bucket_try_take", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(bucket.try_take(black_box(now)))
        })
    });

    // The shard's real check: 3 levels (route, stage, account) and 5
    // (key throttle, route, stage, account, quota), limits far above the
    // offered rate, one shard, the reconciler thread running.
    let big = |quota: Option<QuotaSpec>| LimitSpec {
        rate: 1_000_000_000_000,
        burst: 1_000_000_000_000,
        quota,
    };
    let limits = [
        big(None),
        big(None),
        big(None),
        big(None),
        big(Some(QuotaSpec {
            name: "bench/key".into(),
            period: Period::Month,
            offset: 0,
        })),
    ];
    let (_coord, mut shards) =
        sync::start(&limits, 1, Duration::from_millis(10), None).expect("start");
    let shard = &mut shards[0];
    // A shard ticks every sync interval (10 ms): at ~100k requests/s that
    // is every 1,000 requests; the tick's cost is included.
    let mut calls = 0u32;
    let mut check = |levels: &[u32]| {
        calls += 1;
        if calls.is_multiple_of(1000) {
            shard.tick();
        }
        shard.check(levels)
    };
    g.bench_function("shard_check_3_levels", |b| {
        b.iter(|| black_box(check(black_box(&[1, 2, 3]))))
    });
    g.bench_function("shard_check_5_levels_with_quota", |b| {
        b.iter(|| black_box(check(black_box(&[0, 1, 2, 3, 4]))))
    });

    // API key lookup among 1,000 keys.
    let mut keys = KeyTable::default();
    for i in 0..1000 {
        let v = format!("key-{i:04}-0123456789abcdefghij");
        keys.insert(&format!("k{i}"), digest_of_value(&v).expect("valid"))
            .expect("insert");
    }
    let presented = b"key-0500-0123456789abcdefghij";
    g.bench_function("api_key_lookup", |b| {
        b.iter(|| black_box(keys.lookup(black_box(presented))))
    });

    // Per-client-IP table holding 100,000 clients, checks spread over them.
    let table = ClientIpTable::new(1_000_000, 1_000_000, 1_000_000);
    for n in 0..100_000u32 {
        table.check(IpAddr::V4(Ipv4Addr::from(n)), 0);
    }
    let mut n = 0u32;
    g.bench_function("client_ip_check", |b| {
        b.iter(|| {
            n = (n + 7919) % 100_000;
            black_box(table.check(IpAddr::V4(Ipv4Addr::from(n)), 1_000))
        })
    });
    g.finish();
}

criterion_group!(throttle, benches);
criterion_main!(throttle);
