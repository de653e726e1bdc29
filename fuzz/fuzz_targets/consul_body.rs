//! The consul dialect's request body parser, through its router: any body is
//! answered, never with a 5xx, never a panic.
#![no_main]

use axum::http::Method;
use charter_client::api::Dialect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    charter_fuzz::send(Dialect::Consul, Method::PUT, "/v1/operator/license", data);
});
