//! The response cache, sans-I/O: the shared segmented store (`store`),
//! keys (`key`), Cache-Control rules (`control`), the policy simulation
//! (`sim`), and the handle shards share ([`Cache`]).
#![forbid(unsafe_code)]

pub mod control;
pub mod key;
pub mod sim;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use crate::auth::api_key::KeyDigest;

/// The cache as shards use it: the store, the key hasher, the clock's
/// epoch, and who may force a refresh.
#[derive(Debug)]
pub struct Cache {
    pub store: store::Store,
    pub hasher: key::KeyHasher,
    epoch: Instant,
    /// Responses larger than this are passed through.
    pub max_entry: usize,
    /// SHA-256 of the invalidation token, if one is configured.
    pub token: Option<KeyDigest>,
    /// How long a coalesced miss waits for the request fetching its key.
    pub lock_timeout: std::time::Duration,
}

/// Header carrying the invalidation token with `Cache-Control: max-age=0`.
pub const TOKEN_HEADER: &str = "x-cache-invalidate-token";

impl Cache {
    /// A cache of `capacity` accounted bytes in up to `segments` segments,
    /// fewer if needed so that each can hold four of the largest entries.
    pub fn new(
        capacity: u64,
        max_entry: u64,
        segments: usize,
        token: Option<KeyDigest>,
        lock_timeout: std::time::Duration,
    ) -> Arc<Cache> {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        let max_entry = usize::try_from(max_entry).unwrap_or(usize::MAX);
        let fit = (capacity / max_entry.saturating_mul(4).max(1)).max(1);
        let n = segments.min(fit).max(1);
        // Round down to a power of two.
        let n = 1usize << (usize::BITS - 1 - n.leading_zeros());
        let store = store::Store::new(capacity, n);
        let max_entry = max_entry.min(store.max_entry());
        Arc::new(Cache {
            store,
            hasher: key::KeyHasher::default(),
            epoch: crate::clock::now(),
            max_entry,
            token,
            lock_timeout,
        })
    }

    /// The cache clock: nanoseconds since it was made.
    pub fn now_ns(&self) -> u64 {
        self.ns_at(crate::clock::now())
    }

    /// `at` on the cache clock (shards pass their coarse clock, so a hit
    /// reads no clock).
    pub fn ns_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether `presented` is the invalidation token or the admin token
    /// (`admin`, its digest, if the admin listener has one).
    pub fn authorized(&self, presented: Option<&[u8]>, admin: Option<KeyDigest>) -> bool {
        use sha2::Digest;
        let Some(p) = presented else {
            return false;
        };
        if self.token.is_none() && admin.is_none() {
            return false;
        }
        let digest = <[u8; 32]>::from(sha2::Sha256::digest(p));
        self.token == Some(digest) || admin == Some(digest)
    }

    /// Removes every entry.
    pub fn flush_all(&self) -> usize {
        self.store.remove_prefix(b"")
    }

    /// Removes one stage's entries.
    pub fn flush_stage(&self, api: &str, stage: &str) -> usize {
        self.store.remove_prefix(&stage_prefix(api, stage))
    }

    /// Removes the entry stored under `key`.
    pub fn flush_key(&self, key: &[u8]) -> bool {
        self.store.remove(self.hasher.hash(key), key)
    }
}

/// The prefix every key of a stage starts with.
pub fn stage_prefix(api: &str, stage: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(api.len() + stage.len() + 2);
    p.extend_from_slice(api.as_bytes());
    p.push(b'/');
    p.extend_from_slice(stage.as_bytes());
    p.push(0);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn the_invalidation_token_or_the_admin_token_authorizes() {
        let digest = |s: &str| <[u8; 32]>::from(sha2::Sha256::digest(s.as_bytes()));
        let d = std::time::Duration::from_secs(1);
        let with = Cache::new(1 << 20, 1 << 16, 4, Some(digest("inv")), d);
        let without = Cache::new(1 << 20, 1 << 16, 4, None, d);
        let admin = Some(digest("adm"));
        assert!(with.authorized(Some(b"inv"), None));
        assert!(with.authorized(Some(b"adm"), admin));
        assert!(without.authorized(Some(b"adm"), admin));
        assert!(!with.authorized(Some(b"adm"), None));
        assert!(!with.authorized(Some(b"nope"), admin));
        assert!(!with.authorized(None, admin));
        assert!(!without.authorized(Some(b""), None));
    }
}
