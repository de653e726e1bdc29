//! Replays each request of `seeds/redis-enterprise-license-api.md` against
//! the redis router: `GET|PUT /v1/license`.

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use charter_client::api::Dialect;
use charter_client::token::{DAY, Usage};
use charter_client::{LicenseManager, TokenStatus};
use common::*;
use serde_json::{Value, json};

const PATH: &str = "/v1/license";

/// A manager whose host reports `usage`.
async fn with_usage(stored: Option<String>, usage: &[(&str, i64)]) -> Setup {
    let (mut cfg, store, clock) = config(stored);
    let usage: Usage = usage.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    cfg.usage = Arc::new(move || usage.clone());
    let manager = LicenseManager::start(cfg).await.expect("starts");
    Setup {
        manager,
        store,
        clock,
    }
}

fn assert_seed_fields(body: &Value) {
    for field in ["license", "cluster_name", "key", "owner"] {
        assert!(body[field].is_string(), "{field}: {body}");
    }
    for field in ["activation_date", "expiration_date"] {
        assert!(body[field].is_string(), "{field}: {body}");
    }
    assert!(body["expired"].is_boolean(), "{body}");
    assert!(body["features"].is_array(), "{body}");
    for field in [
        "shards_limit",
        "ram_shards_limit",
        "ram_shards_in_use",
        "flash_shards_limit",
        "flash_shards_in_use",
    ] {
        assert!(body[field].is_i64(), "{field}: {body}");
    }
}

#[tokio::test]
async fn get_returns_the_license_details() {
    let s = with_usage(
        Some(valid_token()),
        &[("ram_shards", 12), ("flash_shards", 3)],
    )
    .await;
    let (status, body) = send(&s.router(Dialect::Redis), Method::GET, PATH, admin(), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_seed_fields(&body);
    assert_eq!(body["license"], valid_token());
    assert_eq!(body["key"], valid_token());
    assert_eq!(body["expired"], false);
    assert_eq!(body["cluster_name"], "grafana.example.com");
    assert_eq!(body["owner"], "Grafana Labs");
    assert_eq!(body["features"], json!(["reporting", "saml"]));
    assert_eq!(body["activation_date"], "2027-01-15T07:59:00Z");
    assert_eq!(
        body["expiration_date"],
        charter_client::fmt_time(NOW + 30 * DAY)
    );
    assert_eq!(body["shards_limit"], 400);
    assert_eq!(body["ram_shards_limit"], 300);
    assert_eq!(body["flash_shards_limit"], 100);
    assert_eq!(body["ram_shards_in_use"], 12);
    assert_eq!(body["flash_shards_in_use"], 3);
}

#[tokio::test]
async fn get_without_a_license_is_404() {
    let s = setup(None).await;
    let (status, body) = send(&s.router(Dialect::Redis), Method::GET, PATH, admin(), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "no license installed");
}

#[tokio::test]
async fn get_reports_an_expired_license_as_expired() {
    let s = setup(Some(expired_token())).await;
    let (status, body) = send(&s.router(Dialect::Redis), Method::GET, PATH, admin(), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expired"], true);
}

#[tokio::test]
async fn both_methods_need_credentials() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Redis);
    let (status, _) = send(&r, Method::GET, PATH, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = json!({"license": valid_token()}).to_string();
    let (status, _) = send(&r, Method::PUT, PATH, Some(&basic("x", "y")), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn put_installs_a_license() {
    let s = setup(None).await;
    let mut c = claims();
    c.jti = "second".into();
    let token = sign(&c);
    let (status, body) = send(
        &s.router(Dialect::Redis),
        Method::PUT,
        PATH,
        admin(),
        json!({ "license": token }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_seed_fields(&body);
    assert_eq!(body["license"], token);
    assert_eq!(s.stored(), Some(token));
    assert_eq!(s.manager.status(), TokenStatus::Valid);
}

#[tokio::test]
async fn put_refuses_bad_json_and_corrupt_licenses_with_400() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Redis);
    let mut bodies: Vec<(String, String)> = bad_tokens()
        .into_iter()
        .map(|(n, t)| (n.to_string(), json!({ "license": t }).to_string()))
        .collect();
    // The seed's example license string is not a token we can verify.
    bodies.push((
        "seed example".into(),
        json!({"license": "----- LICENSE START -----\ndi+iK...KniI9\n----- LICENSE END -----\n"})
            .to_string(),
    ));
    bodies.push(("bad JSON".into(), "{license:".into()));
    bodies.push(("not an object".into(), "[]".into()));
    bodies.push(("no license key".into(), "{}".into()));
    bodies.push((
        "extra key".into(),
        json!({"license": valid_token(), "force": true}).to_string(),
    ));
    for (name, body) in bodies {
        let (status, resp) = send(&r, Method::PUT, PATH, admin(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {resp}");
        assert!(resp["message"].is_string(), "{name}");
        assert_eq!(s.stored(), Some(valid_token()), "{name} changed the store");
    }
    assert!(s.manager.is_valid());
}

#[tokio::test]
async fn put_refuses_limits_below_usage_with_406_naming_the_limit() {
    let s = with_usage(Some(valid_token()), &[("shards", 250), ("users", 10)]).await;
    let mut c = claims();
    c.jti = "smaller".into();
    c.limits.insert("shards_limit".into(), 200);
    let smaller = sign(&c);
    let (status, body) = send(
        &s.router(Dialect::Redis),
        Method::PUT,
        PATH,
        admin(),
        json!({ "license": smaller }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{body}");
    assert_eq!(body["limit"], "shards_limit");
    assert_eq!(body["allowed"], 200);
    assert_eq!(body["in_use"], 250);
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("shards_limit"), "{message}");
    assert_eq!(s.stored(), Some(valid_token()));

    // Seats count too: 10 users in use, a license for 5.
    c.limits.insert("shards_limit".into(), 400);
    c.included_users = 5;
    let (status, body) = send(
        &s.router(Dialect::Redis),
        Method::PUT,
        PATH,
        admin(),
        json!({ "license": sign(&c) }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{body}");
    assert_eq!(body["limit"], "included_users");
    assert_eq!(s.stored(), Some(valid_token()));

    // Enough room: accepted.
    c.included_users = 10;
    let ok = sign(&c);
    let (status, _) = send(
        &s.router(Dialect::Redis),
        Method::PUT,
        PATH,
        admin(),
        json!({ "license": ok }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.stored(), Some(ok));
}
