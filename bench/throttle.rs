//! Cost of the per-request throttle check: three levels (route, stage,
//! server), each a shard-local lease check, as the pipeline will run them.
//! The throttling issue's target is under 30 ns for three levels.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use tollgate::throttle::bucket::{TokenBucket, MILLI};
use tollgate::throttle::lease::ShardLease;

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
    g.finish();
}

criterion_group!(throttle, benches);
criterion_main!(throttle);
