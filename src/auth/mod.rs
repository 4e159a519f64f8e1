//! Authorization decisions, sans-I/O. So far: API keys (`x-api-key`).
#![forbid(unsafe_code)]

pub mod api_key;
