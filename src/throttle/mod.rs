//! Throttling, sans-I/O, clock passed in.
//!
//! * [`bucket`]: a token bucket (rate per second, burst), integer arithmetic.
//! * [`lease`]: one global limit shared by shards through leases from one
//!   bucket, reconciled every `sync_interval`; never over-admits, with the
//!   under-admission bound stated and simulated there.
//!
//! * [`sync`]: the reconciler thread and each shard's side of it.
//!
//! Wired levels: route (per stage), stage, and the server-wide "account"
//! limit, checked in that order; a refusal is a 429. Usage plans, API keys,
//! quotas and a per-client-IP level are not built yet.

pub mod bucket;
pub mod client_ip;
pub mod counters;
pub mod lease;
pub mod quota;
pub mod store;
pub mod sync;
