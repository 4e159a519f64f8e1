//! What the gateway counts, per shard, for tests and (later) the metrics
//! endpoint.

pub mod counters;
