//! The renew endpoint's limits, on both stores: per license (counted once the
//! token is proven) and per client address (counted first), answered with
//! 429, `Retry-After` and a message naming the limit; refused renewals record
//! nothing, and the window ends.

mod common;

use common::{Backend, TestApp};
use serde_json::{Value, json};

both_stores!(
    renewals_are_limited_per_license_and_address,
    the_window_ends,
    clients_behind_a_trusted_proxy_are_told_apart
);

async fn renew_raw(app: &TestApp, token: &str) -> (u16, Option<u64>, Value) {
    let res = app
        .http
        .post(app.url("/api/tokens/renew"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = res.json().await.expect("JSON body");
    (status, retry, body)
}

/// Renews `token` as forwarded for `forwarded_for`; on 200 `token` becomes
/// the renewed one (so each renewal is new, not an idempotent retry).
async fn renew_from(app: &TestApp, token: &mut String, forwarded_for: &str) -> u16 {
    let (s, body) = common::send(
        app.http
            .post(app.url("/api/tokens/renew"))
            .bearer_auth(&*token)
            .header("x-forwarded-for", forwarded_for),
    )
    .await;
    if s == 200 {
        *token = body["token"].as_str().expect("token").to_string();
    }
    s
}

async fn token_for(app: &TestApp, instance: &str) -> (String, String) {
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (s, issued) = app.issue(&lid, instance).await;
    assert_eq!(s, 201, "{issued}");
    (lid, issued["token"].as_str().expect("token").to_string())
}

async fn renewals_are_limited_per_license_and_address(backend: Backend) {
    let app = TestApp::start_with(backend, |a| {
        a.renew_limit_per_license = Some(3);
        a.renew_limit_per_address = Some(7);
        a.renew_limit_window_secs = Some(60);
    })
    .await;
    let (lid1, t1) = token_for(&app, "https://one.example/").await;
    let (lid2, t2) = token_for(&app, "https://two.example/").await;

    // License 1: three renewals, then 429 naming the license limit.
    for _ in 0..3 {
        let (s, _, body) = renew_raw(&app, &t1).await;
        assert_eq!(s, 200, "{body}");
    }
    let (s, retry, body) = renew_raw(&app, &t1).await;
    assert_eq!(s, 429, "{body}");
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    let msg = body["message"].as_str().expect("message");
    assert!(msg.contains("license"), "{msg}");

    // A forged token is refused as such and cannot use up license 2's allowance.
    let mut forged = t2.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ASCII");
    let (s, _, body) = renew_raw(&app, &forged).await;
    assert_eq!(s, 401, "{body}");

    // License 2 has its own allowance, until the address runs out (7 hits).
    let (s, _, body) = renew_raw(&app, &t2).await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = renew_raw(&app, &t2).await;
    assert_eq!(s, 200, "{body}");
    let (s, retry, body) = renew_raw(&app, &t2).await;
    assert_eq!(s, 429, "{body}");
    assert!(retry.is_some());
    let msg = body["message"].as_str().expect("message");
    assert!(msg.contains("address"), "{msg}");
    // Even without a token: the address comes first.
    let (s, _) = common::send(app.http.post(app.url("/api/tokens/renew"))).await;
    assert_eq!(s, 429);

    // Refusals recorded nothing: an issue and one (idempotent) renewal each.
    for lid in [&lid1, &lid2] {
        let (_, history) = app.get(&format!("/api/licenses/{lid}/tokens")).await;
        assert_eq!(history["total"], 2, "{history}");
    }
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = metrics
        .lines()
        .find(|l| l.contains("renewals_refused") && l.contains("rate_limited"))
        .unwrap_or_else(|| panic!("no rate_limited metric in\n{metrics}"));
    assert!(line.ends_with(" 3"), "{line}");
    app.stop().await;
}

async fn the_window_ends(backend: Backend) {
    let app = TestApp::start_with(backend, |a| {
        a.renew_limit_per_license = Some(1);
        a.renew_limit_window_secs = Some(1);
    })
    .await;
    let (_, t) = token_for(&app, "https://one.example/").await;
    assert_eq!(renew_raw(&app, &t).await.0, 200);
    let (s, retry, _) = renew_raw(&app, &t).await;
    assert_eq!((s, retry), (429, Some(1)));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, _, body) = renew_raw(&app, &t).await;
    assert_eq!(s, 200, "{body}");
    app.stop().await;
}

/// Behind a trusted proxy (here the loopback peer) each forwarded client has
/// its own address limit and is audited under its own address; a peer that is
/// not trusted cannot pick an address with `X-Forwarded-For`.
async fn clients_behind_a_trusted_proxy_are_told_apart(backend: Backend) {
    let limits = |a: &mut charter::config::ServeArgs| {
        a.renew_limit_per_license = Some(0);
        a.renew_limit_per_address = Some(2);
    };
    let app = TestApp::start_with(backend, |a| {
        limits(a);
        a.trusted_proxies = Some("127.0.0.0/8, ::1".into());
    })
    .await;
    let (_, mut t) = token_for(&app, "https://one.example/").await;
    let t = &mut t;
    // What the client wrote on the left is ignored: the proxy appended the
    // address it saw, and that is the client.
    let a = "6.6.6.6, 203.0.113.1";
    assert_eq!(renew_from(&app, t, a).await, 200);
    assert_eq!(renew_from(&app, t, "9.9.9.9, 203.0.113.1").await, 200);
    assert_eq!(renew_from(&app, t, a).await, 429);
    // Another client behind the same proxy has its own allowance.
    assert_eq!(renew_from(&app, t, "203.0.113.2").await, 200);
    let (s, audit) = app.get("/api/audit?action=token.renew&per_page=10").await;
    assert_eq!(s, 200, "{audit}");
    let ips: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["ip"].as_str())
        .collect();
    assert!(ips.contains(&"203.0.113.2"), "{audit}");
    assert!(ips.contains(&"203.0.113.1"), "{audit}");
    assert!(
        !ips.iter()
            .any(|ip| ip.starts_with("127.") || *ip == "6.6.6.6"),
        "{audit}"
    );
    app.stop().await;

    // No trusted proxies: the header is ignored and the peer is the client.
    let app = TestApp::start_with(backend, limits).await;
    let (_, mut t) = token_for(&app, "https://one.example/").await;
    let t = &mut t;
    assert_eq!(renew_from(&app, t, "203.0.113.1").await, 200);
    assert_eq!(renew_from(&app, t, "203.0.113.2").await, 200);
    assert_eq!(renew_from(&app, t, "203.0.113.3").await, 429);
    app.stop().await;
}
