//! Throttling, sans-I/O, clock passed in.
//!
//! * [`bucket`]: a token bucket (rate per second, burst), integer arithmetic.
//! * [`lease`]: one global limit shared by shards through leases from one
//!   bucket, reconciled every `sync_interval`; never over-admits, with the
//!   under-admission bound stated and simulated there.
//!
//! Not wired into the request pipeline yet: the throttling issue (levels,
//! usage plans, API keys, quotas, the reconciler thread and 429s) builds on
//! these.

pub mod bucket;
pub mod lease;
