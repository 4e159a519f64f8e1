//! The per-client-IP level (like NGINX `limit_req`): a token bucket per
//! client address, in one table shared by all shards so a client gets its
//! limit once however its connections spread over shards.
//!
//! The table is split into [`STRIPES`] independently locked stripes chosen
//! by a keyed hash of the address, so two shards contend only when they
//! check addresses in the same stripe at the same instant (NGINX takes one
//! lock for its whole zone). Written by hand: it is on the request path.
//!
//! Memory is bounded: at most `max_clients` addresses are tracked. A
//! stripe that fills first drops idle entries (a bucket that has refilled
//! to its burst is the same as no entry) and, if that frees less than an
//! eighth of it, drops arbitrary entries until an eighth is free, so a
//! flood of new addresses costs amortised constant time per insert. A
//! dropped active client starts again with a full burst: the table errs
//! towards admitting. Each entry is 32 bytes plus one control byte, and a
//! stripe holds at most 7/16 of its slots (see [`per_stripe`]), so the
//! tables take at most 33 × 16/7 ≈ 75 bytes × `max_clients` (75 MB for
//! the default million; `tests/client_ip_memory.rs` measures it), and
//! track between half of `max_clients` and all of it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

use super::bucket::MILLI;

/// Number of independently locked stripes.
pub const STRIPES: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Milli-tokens after the last refill.
    tokens: u64,
    /// When `tokens` was last brought up to date.
    last_ns: u64,
}

#[derive(Debug, Default)]
struct Stripe {
    map: HashMap<u128, Entry>,
}

/// One stripe on its own cache lines, so neighbouring stripes' locks do
/// not share a line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded(Mutex<Stripe>);

/// Buckets per client address.
#[derive(Debug)]
pub struct ClientIpTable {
    stripes: Box<[Padded]>,
    rate: u64,
    capacity: u64,
    per_stripe: usize,
    hasher: std::collections::hash_map::RandomState,
}

/// Entries per stripe for `max_clients` in all: at most half of a hash
/// table's capacity, rounded down so that the table stays at one
/// power-of-two size. Removing entries leaves tombstones; a full table
/// holding at most half its capacity is rehashed in place instead of
/// doubling, so a stripe never outgrows `per_stripe × 16/7` slots.
fn per_stripe(max_clients: usize) -> usize {
    let target = max_clients.div_ceil(STRIPES).max(1);
    if target < 8 {
        return target;
    }
    // Largest power-of-two bucket count whose half-capacity (7/16 of it)
    // fits the target.
    let buckets = (target * 16 / 7 + 1).next_power_of_two() / 2;
    buckets * 7 / 16
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl ClientIpTable {
    /// `rate` per second with `burst` per address; at most `max_clients`
    /// addresses tracked.
    pub fn new(rate: u64, burst: u64, max_clients: usize) -> ClientIpTable {
        ClientIpTable {
            stripes: (0..STRIPES).map(|_| Padded::default()).collect(),
            rate,
            capacity: burst.saturating_mul(MILLI),
            per_stripe: per_stripe(max_clients),
            hasher: Default::default(),
        }
    }

    /// Refills `e` to `now_ns`. The clock advances only by the time the
    /// earned milli-tokens cost, so the remainder of a milli-token carries
    /// over to the next refill (no rate lost to rounding).
    fn refill(&self, e: &mut Entry, now_ns: u64) {
        if now_ns <= e.last_ns {
            return;
        }
        if e.tokens >= self.capacity || self.rate == 0 {
            e.last_ns = now_ns;
            return;
        }
        let per_sec = u128::from(self.rate) * u128::from(MILLI);
        let elapsed = u128::from(now_ns - e.last_ns);
        let earned = elapsed * per_sec / 1_000_000_000;
        let room = u128::from(self.capacity - e.tokens);
        if earned >= room {
            e.tokens = self.capacity;
            e.last_ns = now_ns;
        } else {
            // earned < room ≤ capacity, so it fits in u64; the time it cost
            // is at most `elapsed`.
            e.tokens += earned as u64;
            // Rounded up: never credits time that earned nothing.
            e.last_ns += (earned * 1_000_000_000).div_ceil(per_sec) as u64;
        }
    }

    /// Admits one request from `ip` at `now_ns` if its bucket has a token.
    pub fn check(&self, ip: IpAddr, now_ns: u64) -> bool {
        let k = key(ip);
        let stripe = &self.stripes[(self.hasher.hash_one(k) as usize) % STRIPES];
        let mut s = stripe.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = s.map.get_mut(&k) {
            self.refill(e, now_ns);
            return if e.tokens >= MILLI {
                e.tokens -= MILLI;
                true
            } else {
                false
            };
        }
        if self.capacity < MILLI {
            return false;
        }
        if s.map.len() >= self.per_stripe {
            self.make_room(&mut s, now_ns);
        }
        s.map.insert(
            k,
            Entry {
                tokens: self.capacity - MILLI,
                last_ns: now_ns,
            },
        );
        true
    }

    /// Frees at least an eighth of a full stripe: idle entries first.
    fn make_room(&self, s: &mut Stripe, now_ns: u64) {
        s.map.retain(|_, e| {
            self.refill(e, now_ns);
            e.tokens < self.capacity
        });
        let target = self.per_stripe - self.per_stripe.div_ceil(8);
        let mut excess = s.map.len().saturating_sub(target);
        if excess > 0 {
            s.map.retain(|_, _| {
                if excess > 0 {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MS: u64 = 1_000_000;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let t = ClientIpTable::new(10, 3, 1000);
        let a = ip(1);
        let b = ip(2);
        assert!((0..3).all(|_| t.check(a, 0)));
        assert!(!t.check(a, 0));
        assert!(t.check(b, 0), "another client is unaffected");
        // 10 per second: one token after 100 ms.
        assert!(!t.check(a, 99 * MS));
        assert!(t.check(a, 100 * MS));
        assert!(!t.check(a, 100 * MS));
    }

    #[test]
    fn frequent_checks_lose_no_rate_to_rounding() {
        // 100 per second checked every 9 µs for 10 s: 100 × 10 + burst 1.
        for (rate, step_ns) in [(100, 9_000), (10, 99_000), (7, 1_234)] {
            let t = ClientIpTable::new(rate, 1, 10);
            let a = ip(3);
            let mut ok = 0;
            let mut now = 0;
            while now <= 10_000 * MS {
                ok += u64::from(t.check(a, now));
                now += step_ns;
            }
            assert!(
                (rate * 10..=rate * 10 + 1).contains(&ok),
                "rate {rate} every {step_ns} ns: {ok} admitted"
            );
        }
    }

    #[test]
    fn slow_rates_accumulate_and_zero_blocks() {
        let t = ClientIpTable::new(1, 1, 10);
        let a = ip(7);
        assert!(t.check(a, 0));
        for ms in (1..1000).step_by(7) {
            assert!(!t.check(a, ms * MS), "at {ms} ms");
        }
        assert!(t.check(a, 1000 * MS));
        let blocked = ClientIpTable::new(0, 0, 10);
        assert!(!blocked.check(a, 0));
    }

    #[test]
    fn stripes_fit_one_table_size() {
        assert_eq!(per_stripe(STRIPES), 1);
        for max in [10_000, 100_000, 1_000_000, 10_000_000] {
            let p = per_stripe(max);
            assert!(p * STRIPES <= max && p * STRIPES * 2 > max, "{max}: {p}");
        }
    }

    #[test]
    fn tracked_addresses_stay_bounded_under_a_flood() {
        let max = 20_000;
        let t = ClientIpTable::new(1, 5, max);
        // A million distinct addresses, each active (bucket not full).
        for n in 0..1_000_000u32 {
            assert!(t.check(ip(n), u64::from(n)));
        }
        assert!(t.len() <= max, "{} tracked", t.len());
    }

    #[test]
    fn idle_entries_are_evicted_before_active_ones() {
        let mut t = ClientIpTable::new(1, 2, 100_000);
        t.per_stripe = 8;
        let mut stripe = Stripe::default();
        let now = 10_000 * MS;
        // Six active clients (buckets not full at `now`), two idle ones.
        for k in 0..6u128 {
            stripe.map.insert(
                k,
                Entry {
                    tokens: 0,
                    last_ns: now,
                },
            );
        }
        for k in 6..8u128 {
            stripe.map.insert(
                k,
                Entry {
                    tokens: MILLI,
                    last_ns: 0,
                },
            );
        }
        t.make_room(&mut stripe, now);
        let mut kept: Vec<u128> = stripe.map.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, (0..6).collect::<Vec<_>>(), "only the idle went");
        // All active: arbitrary ones go until an eighth is free.
        for k in 10..12u128 {
            stripe.map.insert(
                k,
                Entry {
                    tokens: 0,
                    last_ns: now,
                },
            );
        }
        t.make_room(&mut stripe, now);
        assert_eq!(stripe.map.len(), 7);
    }
}
