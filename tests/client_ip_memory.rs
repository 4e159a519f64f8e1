//! The per-client-IP table's memory bound, measured with a global
//! allocator that tracks live heap bytes: a flood of distinct addresses
//! must not grow the table beyond the bound stated in
//! `src/throttle/client_ip.rs` (about 75 bytes per `max_clients`).
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tollgate::throttle::client_ip::ClientIpTable;

#[path = "support/live_bytes.rs"]
mod live_bytes;

#[test]
fn a_flood_of_distinct_addresses_stays_within_the_stated_bound() {
    let max = 100_000;
    let before = live_bytes::live();
    let t = ClientIpTable::new(1, 10, max);
    // Three million distinct clients (IPv4 and IPv6), all active: nothing
    // is idle, so eviction must drop active entries to stay bounded.
    for n in 0..1_500_000u32 {
        t.check(IpAddr::V4(Ipv4Addr::from(n)), u64::from(n));
        let v6 = Ipv6Addr::from(u128::from(n) << 64 | 1);
        t.check(IpAddr::V6(v6), u64::from(n));
    }
    let used = live_bytes::live() - before;
    let bound = 75 * max + 64 * 1024;
    assert!(t.len() <= max, "{} addresses tracked", t.len());
    assert!(t.len() >= max / 2, "{} addresses tracked", t.len());
    assert!(
        used <= bound,
        "{used} bytes for {max} clients (bound {bound})"
    );
    println!(
        "{} clients tracked in {used} bytes ({:.1} bytes per max_clients)",
        t.len(),
        used as f64 / max as f64
    );
}
