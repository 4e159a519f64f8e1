//! The response store: one cache shared by all shards, split into
//! independently locked segments chosen by key hash, each evicting with
//! S3-FIFO (Yang et al., SOSP 2023).
//!
//! Why S3-FIFO and why by hand: it is scan-resistant (a new entry first
//! sits in a small FIFO and reaches the main FIFO only if it is hit
//! there, or if it comes back while remembered in the ghost set), a hit
//! only bumps a small counter (no list surgery under the lock, unlike
//! LRU), and it needs nothing beyond a hash map and three queues.
//! `bench/cache_policy.rs` compares its hit ratio with LRU at equal
//! capacity on a Zipf(0.99) trace and on a scan-heavy one.
//!
//! Memory is accounted in bytes: every entry is charged its key, its
//! stored head and body, and [`ENTRY_OVERHEAD`] for the map slot, queue
//! slot and reference-counted box; a segment never holds more than its
//! share of the capacity, so the cache never holds more than `capacity`
//! of accounted bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Bytes charged per entry beyond its key, head and body: the hash map
/// slot (hash, metadata), one queue slot, the `Arc` allocation and its
/// `CachedResponse` fields. Rounded up from their sizes
/// (`tests::overhead_covers_the_bookkeeping`).
pub const ENTRY_OVERHEAD: usize = 400;

/// Share of a segment's capacity for the small (probationary) FIFO.
const SMALL_SHARE: usize = 10;
/// Highest access count kept per entry.
const MAX_FREQ: u8 = 3;

/// A stored response: the head without per-response fields (status,
/// headers as a block ending in CRLF, no Date, request id or framing) and
/// the body, both shared without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub key: Box<[u8]>,
    pub status: u16,
    pub headers: Bytes,
    pub body: Bytes,
    /// When it was stored and until when it is fresh (ns, cache clock).
    pub stored_ns: u64,
    pub expires_ns: u64,
    /// Set on the entry stored under a URL's key when its response said
    /// `Vary`: the lower-case header names whose request values pick the
    /// variant, stored under [`crate::cache::key::variant`] keys. Such an
    /// entry is never served itself.
    pub vary: Option<Box<[Box<[u8]>]>>,
    /// `must-revalidate` / `proxy-revalidate`: never served past its TTL
    /// (no stale-while-revalidate, no stale-if-error).
    pub no_stale: bool,
    /// The backend's `Age` when stored, seconds: added to the age sent.
    pub initial_age: u64,
}

impl CachedResponse {
    /// Accounted size.
    pub fn charge(&self) -> usize {
        let vary = self
            .vary
            .as_ref()
            .map_or(0, |v| v.iter().map(|n| n.len() + 16).sum());
        self.key.len() + self.headers.len() + self.body.len() + vary + ENTRY_OVERHEAD
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

#[derive(Debug)]
struct Slot {
    value: Arc<CachedResponse>,
    freq: u8,
    queue: Queue,
    /// Distinguishes this insertion from earlier ones of the same hash
    /// still queued (queues are cleaned lazily).
    gen: u32,
}

/// One segment: S3-FIFO over its share of the capacity.
/// Keys are already ahash outputs: the maps use them as they are instead
/// of hashing them again.
#[derive(Debug, Default, Clone, Copy)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type PrehashedState = std::hash::BuildHasherDefault<Prehashed>;

#[derive(Debug, Default)]
struct Segment {
    map: HashMap<u64, Slot, PrehashedState>,
    small: VecDeque<(u64, u32)>,
    main: VecDeque<(u64, u32)>,
    ghost: HashSet<u64, PrehashedState>,
    ghost_order: VecDeque<u64>,
    small_bytes: usize,
    main_bytes: usize,
    next_gen: u32,
    /// Keys a request is fetching from the backend right now (request
    /// coalescing: other requests for them wait instead of fetching).
    filling: HashSet<u64, PrehashedState>,
    /// Keys whose last fetch could not be stored, until when (ns): requests
    /// for them go to the backend at once instead of queueing behind one
    /// another's claims (Varnish's hit-for-miss).
    uncacheable: HashMap<u64, u64, PrehashedState>,
    /// Keys whose last fetch failed (the backend unreachable, timed out or
    /// answering 5xx), and when (ns): requests that waited for that fetch
    /// are answered from an expired entry (`stale_if_error`) instead of
    /// each trying the backend in turn.
    failed: HashMap<u64, u64, PrehashedState>,
}

/// How long a key whose response could not be stored is fetched without
/// coalescing.
pub const HIT_FOR_MISS_NS: u64 = 10_000_000_000;

/// How long a failed fetch's mark is kept at least (see
/// [`Store::failed_since`]).
const FAILED_MEMORY_NS: u64 = 60_000_000_000;

/// The outcome of [`Store::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    Busy,
    Uncacheable,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Fresh(Arc<CachedResponse>),
    /// Past its TTL: usable only where staleness is allowed.
    Stale(Arc<CachedResponse>),
    Miss,
}

/// Counters of one cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub entries: usize,
    pub bytes: usize,
}

#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded(Mutex<Segment>);

/// The shared response store.
#[derive(Debug)]
pub struct Store {
    segments: Box<[Padded]>,
    segment_capacity: usize,
    capacity: usize,
}

impl Store {
    /// A store of `capacity` accounted bytes in `segments` segments
    /// (rounded to a power of two).
    pub fn new(capacity: usize, segments: usize) -> Store {
        let n = segments.clamp(1, 4096).next_power_of_two();
        Store {
            segments: (0..n).map(|_| Padded::default()).collect(),
            segment_capacity: capacity / n,
            capacity,
        }
    }

    /// Capacity in accounted bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest entry a segment can hold.
    pub fn max_entry(&self) -> usize {
        self.segment_capacity / 2
    }

    fn segment(&self, hash: u64) -> std::sync::MutexGuard<'_, Segment> {
        // The high bits pick the segment; the map uses the whole hash.
        let i = (hash >> 40) as usize & (self.segments.len() - 1);
        self.segments[i].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks `key` (hashed to `hash`) up at `now_ns`; a hit counts as an
    /// access.
    pub fn get(&self, hash: u64, key: &[u8], now_ns: u64) -> Lookup {
        let mut seg = self.segment(hash);
        let Some(slot) = seg.map.get_mut(&hash) else {
            return Lookup::Miss;
        };
        if *slot.value.key != *key {
            return Lookup::Miss;
        }
        slot.freq = (slot.freq + 1).min(MAX_FREQ);
        let v = slot.value.clone();
        if now_ns < v.expires_ns {
            Lookup::Fresh(v)
        } else {
            Lookup::Stale(v)
        }
    }

    /// Claims the right to fetch `hash` from the backend at `now_ns`:
    /// `Claimed`, `Busy` when another request holds it, `Uncacheable`
    /// when its last fetch could not be stored (fetch without a claim).
    pub fn claim(&self, hash: u64, now_ns: u64) -> Claim {
        let mut seg = self.segment(hash);
        match seg.uncacheable.get(&hash) {
            Some(&until) if now_ns < until => return Claim::Uncacheable,
            Some(_) => {
                seg.uncacheable.remove(&hash);
            }
            None => {}
        }
        if seg.filling.insert(hash) {
            Claim::Claimed
        } else {
            Claim::Busy
        }
    }

    /// Gives a claim up. `uncacheable_until_ns` marks the key as not
    /// worth waiting for until then (its response could not be stored);
    /// `failed_at_ns` records that its fetch failed then.
    pub fn release(&self, hash: u64, uncacheable_until_ns: Option<u64>, failed_at_ns: Option<u64>) {
        let mut seg = self.segment(hash);
        seg.filling.remove(&hash);
        if let Some(at) = failed_at_ns {
            // Bounded like the marks below; a mark matters only to the
            // requests waiting when it is made.
            if seg.failed.len() >= seg.map.len().max(1024) {
                seg.failed
                    .retain(|_, &mut t| t.saturating_add(FAILED_MEMORY_NS) > at);
                if seg.failed.len() >= seg.map.len().max(1024) {
                    seg.failed.clear();
                }
            }
            seg.failed.insert(hash, at);
        }
        if let Some(until) = uncacheable_until_ns {
            // Bounded like the ghost set: drop expired marks first.
            if seg.uncacheable.len() >= seg.map.len().max(1024) {
                seg.uncacheable
                    .retain(|_, &mut u| u > until.saturating_sub(HIT_FOR_MISS_NS));
                if seg.uncacheable.len() >= seg.map.len().max(1024) {
                    seg.uncacheable.clear();
                }
            }
            seg.uncacheable.insert(hash, until);
        }
    }

    /// Whether a fetch of `hash` failed at or after `since_ns`.
    pub fn failed_since(&self, hash: u64, since_ns: u64) -> bool {
        self.segment(hash)
            .failed
            .get(&hash)
            .is_some_and(|&at| at >= since_ns)
    }

    /// Whether a request is fetching `hash` now.
    pub fn is_filling(&self, hash: u64) -> bool {
        self.segment(hash).filling.contains(&hash)
    }

    /// Stores `value` under `hash`, replacing what was there, evicting
    /// until it fits. Returns false (and stores nothing) when the entry is
    /// larger than [`Store::max_entry`].
    pub fn insert(&self, hash: u64, value: CachedResponse) -> bool {
        let charge = value.charge();
        if charge > self.max_entry() {
            return false;
        }
        let mut seg = self.segment(hash);
        seg.remove(hash);
        let to_main = seg.ghost.remove(&hash);
        let gen = seg.next_gen;
        seg.next_gen = seg.next_gen.wrapping_add(1);
        let queue = if to_main { Queue::Main } else { Queue::Small };
        seg.map.insert(
            hash,
            Slot {
                value: Arc::new(value),
                freq: 0,
                queue,
                gen,
            },
        );
        match queue {
            Queue::Small => {
                seg.small.push_back((hash, gen));
                seg.small_bytes += charge;
            }
            Queue::Main => {
                seg.main.push_back((hash, gen));
                seg.main_bytes += charge;
            }
        }
        seg.evict(self.segment_capacity);
        true
    }

    /// Removes one key; true if it was there.
    pub fn remove(&self, hash: u64, key: &[u8]) -> bool {
        let mut seg = self.segment(hash);
        match seg.map.get(&hash) {
            Some(s) if *s.value.key == *key => seg.remove(hash),
            _ => false,
        }
    }

    /// Removes every entry whose key starts with `prefix` (a stage's
    /// entries share one); all of them when it is empty.
    pub fn remove_prefix(&self, prefix: &[u8]) -> usize {
        let mut removed = 0;
        for s in self.segments.iter() {
            let mut seg = s.0.lock().unwrap_or_else(|e| e.into_inner());
            let doomed: Vec<u64> = seg
                .map
                .iter()
                .filter(|(_, slot)| slot.value.key.starts_with(prefix))
                .map(|(h, _)| *h)
                .collect();
            for h in doomed {
                removed += usize::from(seg.remove(h));
            }
        }
        removed
    }

    /// Entries and accounted bytes held now.
    pub fn stats(&self) -> StoreStats {
        let mut st = StoreStats::default();
        for s in self.segments.iter() {
            let seg = s.0.lock().unwrap_or_else(|e| e.into_inner());
            st.entries += seg.map.len();
            st.bytes += seg.small_bytes + seg.main_bytes;
        }
        st
    }
}

impl Segment {
    /// Drops `hash` from the map; its queue slot is skipped later.
    fn remove(&mut self, hash: u64) -> bool {
        let Some(slot) = self.map.remove(&hash) else {
            return false;
        };
        let charge = slot.value.charge();
        match slot.queue {
            Queue::Small => self.small_bytes -= charge,
            Queue::Main => self.main_bytes -= charge,
        }
        true
    }

    /// Whether a queued (hash, gen) still names a live entry.
    fn live(&self, hash: u64, gen: u32, queue: Queue) -> bool {
        self.map
            .get(&hash)
            .is_some_and(|s| s.gen == gen && s.queue == queue)
    }

    /// Evicts until the segment holds at most `capacity` bytes.
    fn evict(&mut self, capacity: usize) {
        while self.small_bytes + self.main_bytes > capacity {
            if self.small_bytes > capacity / SMALL_SHARE || self.main.is_empty() {
                self.evict_small();
            } else {
                self.evict_main();
            }
        }
        // Bookkeeping sized for an earlier peak of many small entries is
        // given back once a few large ones hold the bytes, so memory
        // follows the accounted bytes, not the largest entry count seen.
        let n = self.map.len();
        if self.map.capacity() > 4 * n + 64 {
            self.map.shrink_to(2 * n);
            self.small.shrink_to(2 * n);
            self.main.shrink_to(2 * n);
            self.ghost.shrink_to(2 * n);
            self.ghost_order.shrink_to(2 * n);
        }
        // Lazily deleted queue slots must not pile up without bound.
        if self.small.len() + self.main.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.small.retain(|&(h, g)| {
                map.get(&h)
                    .is_some_and(|s| s.gen == g && s.queue == Queue::Small)
            });
            self.main.retain(|&(h, g)| {
                map.get(&h)
                    .is_some_and(|s| s.gen == g && s.queue == Queue::Main)
            });
        }
    }

    /// The small FIFO's oldest entry moves to the main FIFO if it was hit
    /// while probationary, else it is evicted and remembered as a ghost.
    fn evict_small(&mut self) {
        while let Some((h, g)) = self.small.pop_front() {
            if !self.live(h, g, Queue::Small) {
                continue;
            }
            let Some(slot) = self.map.get_mut(&h) else {
                continue;
            };
            let charge = slot.value.charge();
            self.small_bytes -= charge;
            if slot.freq > 0 {
                slot.freq = 0;
                slot.queue = Queue::Main;
                self.main_bytes += charge;
                self.main.push_back((h, g));
            } else {
                self.map.remove(&h);
                self.remember(h);
            }
            return;
        }
        // Nothing live in the small FIFO.
        self.small_bytes = 0;
        if !self.main.is_empty() {
            self.evict_main();
        }
    }

    /// The main FIFO's oldest entry gets another round if it was hit
    /// (its count goes down by one), else it is evicted.
    fn evict_main(&mut self) {
        while let Some((h, g)) = self.main.pop_front() {
            if !self.live(h, g, Queue::Main) {
                continue;
            }
            let Some(slot) = self.map.get_mut(&h) else {
                continue;
            };
            if slot.freq > 0 {
                slot.freq -= 1;
                self.main.push_back((h, g));
                continue;
            }
            let charge = slot.value.charge();
            self.map.remove(&h);
            self.main_bytes -= charge;
            return;
        }
        self.main_bytes = 0;
    }

    /// Remembers an evicted probationary key, bounded like the main FIFO's
    /// entry count.
    fn remember(&mut self, hash: u64) {
        if self.ghost.insert(hash) {
            self.ghost_order.push_back(hash);
        }
        let bound = self.map.len().max(64);
        while self.ghost_order.len() > bound {
            if let Some(old) = self.ghost_order.pop_front() {
                self.ghost.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(key: &str, body: usize, expires: u64) -> CachedResponse {
        CachedResponse {
            key: key.as_bytes().into(),
            status: 200,
            headers: Bytes::from_static(b"content-type: text/plain\r\n"),
            body: Bytes::from(vec![b'x'; body]),
            stored_ns: 0,
            expires_ns: expires,
            vary: None,
            no_stale: false,
            initial_age: 0,
        }
    }

    #[test]
    fn hits_expire_and_keys_are_verified() {
        let s = Store::new(1 << 20, 4);
        assert!(s.insert(7, resp("a", 10, 100)));
        assert!(matches!(s.get(7, b"a", 50), Lookup::Fresh(_)));
        assert!(matches!(s.get(7, b"a", 100), Lookup::Stale(_)));
        // Same hash, other key: never served.
        assert_eq!(s.get(7, b"b", 50), Lookup::Miss);
        assert!(s.remove(7, b"a"));
        assert_eq!(s.get(7, b"a", 50), Lookup::Miss);
        assert_eq!(s.stats(), StoreStats::default());
    }

    #[test]
    fn accounted_bytes_never_exceed_the_capacity() {
        let cap = 64 * 1024;
        let s = Store::new(cap, 4);
        for i in 0..10_000u64 {
            let size = (i as usize * 7919) % 3000;
            s.insert(
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                resp(&format!("k{i}"), size, 1),
            );
            let st = s.stats();
            assert!(st.bytes <= cap, "{} > {cap} after {i}", st.bytes);
        }
        // Too large for a segment: refused, nothing evicted for it.
        let before = s.stats();
        assert!(!s.insert(1, resp("big", cap, 1)));
        assert_eq!(s.stats(), before);
    }

    #[test]
    fn a_hit_in_probation_earns_a_place_in_main() {
        // One segment of room for about 10 entries; the small FIFO holds one.
        let one = resp("k0", 100, u64::MAX).charge();
        let s = Store::new(10 * one, 1);
        let h = |i: u64| i << 41;
        s.insert(h(0), resp("k0", 100, u64::MAX));
        let _ = s.get(h(0), b"k0", 0);
        // A scan of 100 one-hit entries.
        for i in 1..=100 {
            s.insert(h(i), resp(&format!("k{i}"), 100, u64::MAX));
        }
        assert!(
            matches!(s.get(h(0), b"k0", 0), Lookup::Fresh(_)),
            "scan evicted the hot entry"
        );
        assert!(s.stats().entries <= 10);
    }

    #[test]
    fn a_ghost_comes_back_into_main() {
        let one = resp("k0", 100, u64::MAX).charge();
        let s = Store::new(10 * one, 1);
        let h = |i: u64| i << 41;
        s.insert(h(0), resp("k0", 100, u64::MAX));
        for i in 1..=20 {
            s.insert(h(i), resp(&format!("k{i}"), 100, u64::MAX));
        }
        assert_eq!(s.get(h(0), b"k0", 0), Lookup::Miss);
        // Re-inserted while remembered: straight into main, so another
        // scan does not evict it.
        s.insert(h(0), resp("k0", 100, u64::MAX));
        for i in 21..=40 {
            s.insert(h(i), resp(&format!("k{i}"), 100, u64::MAX));
        }
        assert!(matches!(s.get(h(0), b"k0", 0), Lookup::Fresh(_)));
    }

    #[test]
    fn one_claim_per_key() {
        let s = Store::new(1 << 20, 4);
        assert_eq!(s.claim(5, 0), Claim::Claimed);
        assert_eq!(s.claim(5, 0), Claim::Busy);
        assert!(s.is_filling(5));
        assert_eq!(s.claim(6, 0), Claim::Claimed);
        s.release(5, None, None);
        assert!(!s.is_filling(5));
        assert_eq!(s.claim(5, 0), Claim::Claimed);
        // Released as uncacheable: no claims (and no waiting) until then.
        s.release(5, Some(100), None);
        assert_eq!(s.claim(5, 50), Claim::Uncacheable);
        assert_eq!(s.claim(5, 100), Claim::Claimed);
        // Released after a failed fetch: seen by those waiting since.
        assert!(!s.failed_since(5, 0));
        s.release(5, None, Some(200));
        assert!(s.failed_since(5, 150) && s.failed_since(5, 200));
        assert!(!s.failed_since(5, 201) && !s.failed_since(6, 0));
    }

    #[test]
    fn prefixes_flush_a_stage_or_everything() {
        let s = Store::new(1 << 20, 8);
        for i in 0..50u64 {
            let stage = if i % 2 == 0 { "api/a\0" } else { "api/b\0" };
            s.insert(i << 40 | i, resp(&format!("{stage}{i}"), 10, 1));
        }
        assert_eq!(s.remove_prefix(b"api/a\0"), 25);
        assert_eq!(s.stats().entries, 25);
        assert_eq!(s.remove_prefix(b""), 25);
        assert_eq!(s.stats(), StoreStats::default());
    }

    #[test]
    fn overhead_covers_the_bookkeeping() {
        let per_entry = std::mem::size_of::<(u64, Slot)>()
            + 1
            + std::mem::size_of::<(u64, u32)>()
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<CachedResponse>()
            + 8; // ghost set slot when evicted
                 // The map may hold up to 8/7 slots per entry and double on growth.
        assert!(2 * per_entry <= ENTRY_OVERHEAD, "{per_entry} per entry");
    }
}
