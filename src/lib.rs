//! tollgate: a self-hosted API gateway for Linux edge hosts.
//!
//! See `docs/architecture.md` for the module map and request pipeline.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod http;
pub mod integration;
pub mod observe;
pub mod router;
pub mod runtime;
pub mod server;
pub mod throttle;
pub mod tls;
pub mod tune;
pub mod upstream;
