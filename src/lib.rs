//! The Charter issuer: configuration, HTTP API, domain rules and storage.
//! `main.rs` only parses the command line and dispatches here.

pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod instance;
pub mod licensing;
pub mod metrics;
pub mod portal;
pub mod push;
pub mod ratelimit;
pub mod sealed;
pub mod serve;
