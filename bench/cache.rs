//! Cost of the cache's hot functions: building a key for a request, and a
//! lookup hit (hash + segment lock + map probe + key check) in a store
//! holding 100,000 small entries, 64 segments.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::time::Duration;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use tollgate::cache::key::{self, KeyInput, KeyParam};
use tollgate::cache::store::{CachedResponse, Lookup};
use tollgate::cache::Cache;

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache");
    g.throughput(Throughput::Elements(1));

    let param = |i: usize| (i == 0).then_some(&b"12345"[..]);
    let header = |n: &str| (n == "accept").then_some(&b"application/json"[..]);
    let input = KeyInput {
        route: 7,
        method: None,
        https: false,
        host: None,
        path: b"/pets/12345",
        query: Some(b"type=dog&page=2"),
        param: &param,
        header: &header,
    };
    let mut kbuf = Vec::with_capacity(256);
    g.bench_function("key_whole_url", |b| {
        b.iter(|| {
            key::build(&mut kbuf, b"pets/prod\0", &[], black_box(&input));
            black_box(kbuf.len())
        })
    });
    let names = vec!["id".to_string()];
    let spec = vec![
        KeyParam::parse("path.id", &names).expect("path"),
        KeyParam::parse("query.type", &names).expect("query"),
        KeyParam::parse("header.accept", &names).expect("header"),
    ];
    g.bench_function("key_three_parameters", |b| {
        b.iter(|| {
            key::build(&mut kbuf, b"pets/prod\0", &spec, black_box(&input));
            black_box(kbuf.len())
        })
    });

    let cache = Cache::new(512 << 20, 1 << 20, 64, None, Duration::from_secs(5));
    let keys: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("pets/prod\0\x07\0\0\0/pets/{i}").into_bytes())
        .collect();
    for k in &keys {
        cache.store.insert(
            cache.hasher.hash(k),
            CachedResponse {
                key: k.as_slice().into(),
                status: 200,
                headers: Bytes::from_static(b"content-type: application/json\r\n"),
                body: Bytes::from_static(b"{\"pet\":\"a dog\"}"),
                stored_ns: 0,
                expires_ns: u64::MAX,
                vary: None,
                no_stale: false,
                initial_age: 0,
            },
        );
    }
    let mut i = 0usize;
    g.bench_function("lookup_hit_100k_entries", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let k = &keys[i];
            let hit = matches!(
                cache.store.get(cache.hasher.hash(k), k, 1),
                Lookup::Fresh(_)
            );
            black_box(hit)
        })
    });
    g.finish();
}

criterion_group!(cache_benches, benches);
criterion_main!(cache_benches);
