//! Trace simulation for choosing the eviction policy: synthetic traces
//! (Zipf, Zipf with scans), a plain LRU to compare against, and a driver
//! that replays a trace through a policy and reports its hit ratio; and
//! synthetic fills for memory measurements. Used by `bench/` and tests;
//! not on any request path.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::store::{CachedResponse, Lookup, Store};

/// A small deterministic generator (xorshift64*), so traces repeat.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Object ids drawn from Zipf(`s`) over `n` objects (id 0 most popular).
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in cdf.iter_mut() {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

/// `len` requests from Zipf(0.99) over `objects`.
pub fn zipf_trace(objects: usize, len: usize, seed: u64) -> Vec<u64> {
    let z = Zipf::new(objects, 0.99);
    let mut rng = Rng::new(seed);
    (0..len).map(|_| z.sample(&mut rng)).collect()
}

/// The Zipf trace with scans mixed in: every `period` requests a scan of
/// `scan_len` objects requested once each (ids never seen before), the
/// shape of a crawler or a batch job walking a catalogue.
pub fn scan_trace(
    objects: usize,
    len: usize,
    period: usize,
    scan_len: usize,
    seed: u64,
) -> Vec<u64> {
    let z = Zipf::new(objects, 0.99);
    let mut rng = Rng::new(seed);
    let mut next_scan_id = objects as u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        for _ in 0..period {
            out.push(z.sample(&mut rng));
        }
        for _ in 0..scan_len {
            out.push(next_scan_id);
            next_scan_id += 1;
        }
    }
    out.truncate(len);
    out
}

/// A cache policy under simulation: equal-size objects.
pub trait Policy {
    /// Requests `id`; true on a hit (a miss inserts it).
    fn access(&mut self, id: u64) -> bool;
}

/// Least recently used, `capacity` objects.
pub struct Lru {
    capacity: usize,
    clock: u64,
    stamp: HashMap<u64, u64>,
    order: BTreeMap<u64, u64>,
}

impl Lru {
    pub fn new(capacity: usize) -> Lru {
        Lru {
            capacity,
            clock: 0,
            stamp: HashMap::new(),
            order: BTreeMap::new(),
        }
    }
}

impl Policy for Lru {
    fn access(&mut self, id: u64) -> bool {
        self.clock += 1;
        let hit = if let Some(old) = self.stamp.insert(id, self.clock) {
            self.order.remove(&old);
            true
        } else {
            false
        };
        self.order.insert(self.clock, id);
        while self.stamp.len() > self.capacity {
            if let Some((_, victim)) = self.order.pop_first() {
                self.stamp.remove(&victim);
            }
        }
        hit
    }
}

/// tollgate's store (one segment) holding about `capacity` equal objects.
pub struct S3Fifo {
    store: Store,
}

fn object(id: u64) -> CachedResponse {
    CachedResponse {
        key: id.to_le_bytes().into(),
        status: 200,
        headers: Bytes::new(),
        body: Bytes::new(),
        stored_ns: 0,
        expires_ns: u64::MAX,
        vary: None,
        no_stale: false,
        initial_age: 0,
    }
}

fn hash(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl S3Fifo {
    pub fn new(capacity: usize) -> S3Fifo {
        let one = object(0).charge();
        S3Fifo {
            store: Store::new(capacity * one, 1),
        }
    }
}

impl Policy for S3Fifo {
    fn access(&mut self, id: u64) -> bool {
        let key = id.to_le_bytes();
        match self.store.get(hash(id), &key, 0) {
            Lookup::Fresh(_) | Lookup::Stale(_) => true,
            Lookup::Miss => {
                self.store.insert(hash(id), object(id));
                false
            }
        }
    }
}

/// Fills `cache` with `count` synthetic responses of `body` bytes (each
/// with its own key, a small head and fresh allocations, like captured
/// responses), for memory measurements.
pub fn fill_synthetic(cache: &super::Cache, count: usize, body: usize) {
    for i in 0..count {
        let key = format!("api/prod\0\x01\0\0\0/objects/{body}/{i}").into_bytes();
        let hash = cache.hasher.hash(&key);
        cache.store.insert(
            hash,
            CachedResponse {
                key: key.into_boxed_slice(),
                status: 200,
                headers: Bytes::from(
                    b"content-type: application/json\r\netag: \"abc\"\r\n".to_vec(),
                ),
                body: Bytes::from(vec![b'x'; body]),
                stored_ns: 0,
                expires_ns: u64::MAX,
                vary: None,
                no_stale: false,
                initial_age: 0,
            },
        );
    }
}

/// Replays `trace` through `policy`; the hit ratio.
pub fn hit_ratio(policy: &mut impl Policy, trace: &[u64]) -> f64 {
    let hits = trace.iter().filter(|&&id| policy.access(id)).count();
    hits as f64 / trace.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recent() {
        let mut l = Lru::new(2);
        assert!(!l.access(1));
        assert!(!l.access(2));
        assert!(l.access(1));
        assert!(!l.access(3)); // evicts 2
        assert!(l.access(1));
        assert!(!l.access(2));
    }

    #[test]
    fn s3fifo_beats_lru_on_zipf_and_on_scans() {
        let objects = 20_000;
        let cap = objects / 20;
        let z = zipf_trace(objects, 200_000, 1);
        let (s3, lru) = (
            hit_ratio(&mut S3Fifo::new(cap), &z),
            hit_ratio(&mut Lru::new(cap), &z),
        );
        assert!(s3 > lru, "zipf: s3-fifo {s3:.4} vs lru {lru:.4}");
        let sc = scan_trace(objects, 200_000, 2_000, 2_000, 2);
        let (s3, lru) = (
            hit_ratio(&mut S3Fifo::new(cap), &sc),
            hit_ratio(&mut Lru::new(cap), &sc),
        );
        assert!(s3 > lru, "scans: s3-fifo {s3:.4} vs lru {lru:.4}");
    }
}
