//! The grafana dialect's request body parser, through its router: any body is
//! answered, never with a 5xx, never a panic.
#![no_main]

use axum::http::Method;
use charter_client::api::Dialect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    charter_fuzz::send(Dialect::Grafana, Method::POST, "/api/licensing/token", data);
    charter_fuzz::send(
        Dialect::Grafana,
        Method::DELETE,
        "/api/licensing/token",
        data,
    );
});
