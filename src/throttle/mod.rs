//! Throttling, sans-I/O, clock passed in.
//!
//! * [`bucket`]: a token bucket (rate per second, burst), integer arithmetic.
//! * [`lease`]: one global limit shared by shards through leases from one
//!   bucket, reconciled every `sync_interval`; never over-admits, with the
//!   under-admission bound stated and simulated there.
//!
//! * [`sync`]: the reconciler thread and each shard's side of it; quota
//!   periods and persistence.
//! * [`quota`]: calendar periods (UTC) of usage-plan quotas.
//! * [`store`]: quota counters in a redb file.
//! * [`client_ip`]: the per-client-IP level, a striped shared table with a
//!   stated memory bound.
//!
//! Refusals are counted in `observe::counters`.
//!
//! Levels, in the order `server::shard::Shard::guard` checks them: client
//! IP, API key (403), usage-plan key throttle, route (per stage), stage,
//! the server-wide "account" limit, usage-plan quota; a refusal is a 429
//! (`Limit Exceeded` for a quota).
#![forbid(unsafe_code)]

pub mod bucket;
pub mod client_ip;
pub mod lease;
pub mod quota;
pub mod store;
pub mod sync;
