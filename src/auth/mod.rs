//! Authorization decisions, sans-I/O. So far: API keys (`x-api-key`).

pub mod api_key;
