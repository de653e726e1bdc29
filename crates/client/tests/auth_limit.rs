//! The default admin auth limits failed attempts per client address
//! (finding 14): after 10 wrong passwords in 5 minutes, every request from
//! that address needing credentials gets 429 with `Retry-After` in the
//! dialect's error shape, even with the right password; other addresses are
//! not affected.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use charter_client::BasicAuth;
use charter_client::api::{self, ApiState, Dialect};
use common::*;
use serde_json::Value;
use tower::ServiceExt;

/// Sends `method uri` from `from` (as `ConnectInfo`, as a server made with
/// `into_make_service_with_connect_info` sets it), answers the status, the
/// `Retry-After` header and the body.
async fn from(
    router: &Router,
    from: &str,
    method: Method,
    uri: &str,
    auth: Option<&str>,
) -> (StatusCode, Option<u64>, Value) {
    let ip: IpAddr = from.parse().expect("an address");
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let mut req = req.body(Body::empty()).expect("request builds");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    let resp = router.clone().oneshot(req).await.expect("router answers");
    let status = resp.status();
    let retry = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body reads");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, retry, body)
}

fn router(s: &Setup, auth: BasicAuth) -> Router {
    api::routers(
        ApiState::new(s.manager.clone(), Arc::new(auth)),
        &Dialect::ALL,
    )
}

const CHECK: &str = "/api/licensing/check";

#[tokio::test]
async fn ten_wrong_passwords_lock_the_address_out_for_a_while() {
    let s = setup(Some(valid_token())).await;
    let r = router(&s, BasicAuth::new(ADMIN.0, ADMIN.1));
    let wrong = basic(ADMIN.0, "guess");
    for n in 0..10 {
        let (status, retry, _) = from(&r, "192.0.2.1", Method::GET, CHECK, Some(&wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {n}");
        assert_eq!(retry, None);
    }
    // The right password no longer helps from there; the answer says when.
    let (status, retry, body) = from(&r, "192.0.2.1", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry = retry.expect("Retry-After");
    assert!((1..=300).contains(&retry), "{retry}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("try again")),
        "{body}"
    );
    // Every dialect, in its shape.
    for (method, uri) in [
        (Method::PUT, "/v1/operator/license"),
        (Method::GET, "/v1/license"),
        (Method::POST, "/api/licensing/token/renew"),
    ] {
        let (status, retry, body) = from(&r, "192.0.2.1", method, uri, admin()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{uri}: {body}");
        assert!(retry.is_some(), "{uri}");
        assert!(body["message"].is_string(), "{uri}: {body}");
    }
    // Consul's GET needs no credentials, so it is not limited.
    let (status, _, _) = from(&r, "192.0.2.1", Method::GET, "/v1/operator/license", None).await;
    assert_eq!(status, StatusCode::OK);

    // Another address is not affected; IPv4-mapped IPv6 is the same address.
    let (status, _, _) = from(&r, "192.0.2.2", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = from(&r, "::ffff:192.0.2.1", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn only_wrong_credentials_count_and_a_success_resets() {
    let s = setup(Some(valid_token())).await;
    let r = router(&s, BasicAuth::new(ADMIN.0, ADMIN.1));
    let wrong = basic("root", ADMIN.1);
    // No credentials at all (a browser before the challenge) is no guess.
    for _ in 0..20 {
        let (status, _, _) = from(&r, "192.0.2.3", Method::GET, CHECK, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..9 {
        from(&r, "192.0.2.3", Method::GET, CHECK, Some(&wrong)).await;
    }
    let (status, _, _) = from(&r, "192.0.2.3", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::OK, "9 failures are allowed");
    for _ in 0..9 {
        from(&r, "192.0.2.3", Method::GET, CHECK, Some(&wrong)).await;
    }
    let (status, _, _) = from(&r, "192.0.2.3", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::OK, "the success reset the count");
}

#[tokio::test]
async fn ipv6_clients_count_per_64_and_the_window_ends() {
    let s = setup(Some(valid_token())).await;
    let r = router(
        &s,
        BasicAuth::new(ADMIN.0, ADMIN.1).with_failure_limit(3, Duration::from_millis(300)),
    );
    let wrong = basic(ADMIN.0, "guess");
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
        from(&r, host, Method::GET, CHECK, Some(&wrong)).await;
    }
    let (status, retry, _) = from(&r, "2001:db8:1:2::9", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "one /64");
    assert_eq!(retry, Some(1), "rounded up to a second");
    let (status, _, _) = from(&r, "2001:db8:1:3::1", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::OK, "another /64");

    tokio::time::sleep(Duration::from_millis(350)).await;
    let (status, _, _) = from(&r, "2001:db8:1:2::9", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::OK, "the window has passed");

    // A limit of 0 turns it off.
    let r = router(
        &s,
        BasicAuth::new(ADMIN.0, ADMIN.1).with_failure_limit(0, Duration::from_secs(300)),
    );
    for _ in 0..50 {
        from(&r, "192.0.2.9", Method::GET, CHECK, Some(&wrong)).await;
    }
    let (status, _, _) = from(&r, "192.0.2.9", Method::GET, CHECK, admin()).await;
    assert_eq!(status, StatusCode::OK);
}

/// Through a real socket: a server made with
/// `into_make_service_with_connect_info` (as `charter instance` is) passes
/// the peer's address to the limit.
#[tokio::test]
async fn a_server_with_connect_info_limits_its_peers() {
    let s = setup(Some(valid_token())).await;
    let app = router(&s, BasicAuth::new(ADMIN.0, ADMIN.1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let http = reqwest::Client::new();
    let url = format!("http://{addr}{CHECK}");
    for _ in 0..10 {
        let resp = http
            .get(&url)
            .basic_auth(ADMIN.0, Some("guess"))
            .send()
            .await
            .expect("answers");
        assert_eq!(resp.status(), 401);
    }
    let resp = http
        .get(&url)
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
}
