//! What the gateway counts and reports: per-shard counters, stable metric
//! ids and the Prometheus text format, access logs.

pub mod access_log;
pub mod counters;
pub mod metrics;
