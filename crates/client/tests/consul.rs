//! Replays each request of `seeds/consul-operator-license-api.md` against
//! the consul router: `GET|PUT|DELETE /v1/operator/license` with `dc`.

mod common;

use axum::http::{Method, StatusCode};
use charter_client::api::Dialect;
use charter_client::token::DAY;
use charter_client::{LicenseManager, Source, TokenStatus};
use common::*;
use serde_json::{Value, json};

const PATH: &str = "/v1/operator/license";

/// The reply's shape as the seed shows it, plus `termination_time` and `modules`.
fn assert_reply_shape(body: &Value) {
    assert!(body["Valid"].is_boolean(), "{body}");
    assert!(body["Warnings"].is_array(), "{body}");
    let license = &body["License"];
    for field in [
        "license_id",
        "customer_id",
        "installation_id",
        "issue_time",
        "start_time",
        "expiration_time",
        "termination_time",
        "product",
    ] {
        assert!(license[field].is_string(), "{field}: {body}");
    }
    assert!(license["flags"].is_object(), "{body}");
    assert!(license["features"].is_array(), "{body}");
    assert!(license["modules"].is_array(), "{body}");
    assert!(license["temporary"].is_boolean(), "{body}");
}

#[tokio::test]
async fn get_returns_the_license_without_credentials() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Consul);
    for uri in [PATH, "/v1/operator/license?dc=dc1"] {
        let (status, body) = send(&r, Method::GET, uri, None, "").await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_reply_shape(&body);
        assert_eq!(body["Valid"], true);
        assert_eq!(body["Warnings"], json!([]));
        let l = &body["License"];
        assert_eq!(l["license_id"], "lic-1");
        assert_eq!(l["customer_id"], "acct-42");
        assert_eq!(l["installation_id"], ROOT);
        assert_eq!(l["product"], "grafana-enterprise");
        assert_eq!(l["flags"], json!({"package": "premium"}));
        assert_eq!(l["features"], json!(["reporting", "saml"]));
        assert_eq!(l["temporary"], false);
        // RFC 3339 times.
        assert_eq!(l["issue_time"], "2027-01-15T07:59:00Z");
        assert_eq!(l["start_time"], "2027-01-15T07:59:00Z");
        assert_eq!(
            l["expiration_time"],
            charter_client::fmt_time(NOW + 30 * DAY)
        );
        assert_eq!(
            l["termination_time"],
            charter_client::fmt_time(NOW + 365 * DAY)
        );
    }
}

#[tokio::test]
async fn get_without_a_license_is_not_valid_with_a_reason() {
    let s = setup(None).await;
    let (status, body) = send(&s.router(Dialect::Consul), Method::GET, PATH, None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Valid"], false);
    assert_eq!(body["License"], Value::Null);
    assert_eq!(body["Warnings"], json!(["no license installed"]));
}

#[tokio::test]
async fn put_installs_the_raw_license_blob() {
    let s = setup(None).await;
    let token = valid_token();
    let (status, body) = send(
        &s.router(Dialect::Consul),
        Method::PUT,
        "/v1/operator/license?dc=dc1",
        admin(),
        format!("{token}\n"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_reply_shape(&body);
    assert_eq!(body["Valid"], true);
    assert_eq!(s.stored(), Some(token));
}

#[tokio::test]
async fn put_and_delete_need_operator_write() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Consul);
    let wrong = basic("admin", "nope");
    for auth in [None, Some(wrong.as_str())] {
        let (status, body) = send(&r, Method::PUT, PATH, auth, valid_token()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["message"], "Permission denied");
        let (status, _) = send(&r, Method::DELETE, PATH, auth, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert_eq!(s.stored(), Some(valid_token()));
}

#[tokio::test]
async fn put_refuses_bad_licenses_with_400_and_keeps_the_stored_one() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Consul);
    let mut bodies = bad_tokens();
    bodies.push(("empty", String::new()));
    bodies.push((
        "JSON instead of a blob",
        json!({"license": valid_token()}).to_string(),
    ));
    for (name, body) in bodies {
        let (status, resp) = send(&r, Method::PUT, PATH, admin(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {resp}");
        assert!(resp["message"].is_string(), "{name}");
        assert_eq!(s.stored(), Some(valid_token()), "{name} changed the store");
    }
    let (status, _) = send(&r, Method::PUT, PATH, admin(), vec![0xff_u8, 0xfe, 0x00]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(s.manager.is_valid());
}

async fn with_builtin(builtin: Option<String>, stored: Option<String>) -> Setup {
    let (mut cfg, store, clock) = config(stored);
    cfg.builtin_license = builtin;
    let manager = LicenseManager::start(cfg).await.expect("starts");
    Setup {
        manager,
        store,
        clock,
    }
}

#[tokio::test]
async fn delete_resets_to_the_builtin_license() {
    let mut c = claims();
    c.lid = "builtin".into();
    c.trial = true;
    let builtin = sign(&c);
    let s = with_builtin(Some(builtin), Some(valid_token())).await;
    assert_eq!(s.manager.state_info().source, Some(Source::Stored));
    let (status, body) = send(
        &s.router(Dialect::Consul),
        Method::DELETE,
        "/v1/operator/license?dc=dc1",
        admin(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_reply_shape(&body);
    assert_eq!(body["Valid"], true);
    assert_eq!(body["License"]["license_id"], "builtin");
    assert_eq!(body["License"]["temporary"], true);
    assert_eq!(s.stored(), None, "the installed license is gone");
    assert_eq!(s.manager.state_info().source, Some(Source::BuiltIn));
}

/// Finding 9: without a built-in license, DELETE removes the installed
/// license (so a revocation the issuer pushes reaches such a host): 200,
/// `Valid: false`, `License: null`, and nothing is stored afterwards.
#[tokio::test]
async fn delete_without_a_builtin_license_removes_the_license() {
    let s = with_builtin(None, Some(valid_token())).await;
    assert!(s.manager.is_valid());
    let r = s.router(Dialect::Consul);
    let (status, body) = send(
        &r,
        Method::DELETE,
        "/v1/operator/license?dc=dc1",
        admin(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Valid"], false, "{body}");
    assert_eq!(body["License"], Value::Null, "{body}");
    assert!(body["Warnings"].is_array(), "{body}");
    assert_eq!(s.stored(), None, "the installed license is gone");
    assert_eq!(s.manager.status(), TokenStatus::NotFound);
    assert!(!s.manager.is_valid());
    // GET agrees; a second DELETE is harmless.
    let (_, got) = send(&r, Method::GET, PATH, None, "").await;
    assert_eq!(got["Valid"], false);
    let (status, body) = send(&r, Method::DELETE, PATH, admin(), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Still operator:write.
    let (status, _) = send(&r, Method::DELETE, PATH, None, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn delete_fails_when_the_builtin_license_is_not_valid() {
    let mut later = claims();
    later.nbf = NOW + DAY;
    for builtin in [
        Some(expired_token()),
        Some(wrong_instance_token()),
        Some(sign(&later)),
    ] {
        let s = with_builtin(builtin.clone(), Some(valid_token())).await;
        let (status, body) = send(
            &s.router(Dialect::Consul),
            Method::DELETE,
            PATH,
            admin(),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{builtin:?}: {body}");
        assert!(body["message"].is_string());
        assert_eq!(s.stored(), Some(valid_token()));
        assert_eq!(s.manager.status(), TokenStatus::Valid);
    }
}

#[tokio::test]
async fn expired_license_is_reported_not_valid_with_its_reason() {
    let s = setup(Some(expired_token())).await;
    let (status, body) = send(&s.router(Dialect::Consul), Method::GET, PATH, None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Valid"], false);
    assert_reply_shape(&body);
    let warnings = body["Warnings"].as_array().expect("array");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with("expired at"))),
        "{body}"
    );
}

#[tokio::test]
async fn warnings_appear_inside_the_expiry_windows() {
    let s = setup(Some(valid_token())).await;
    // tok_exp_warn_days = 2: one day before exp the token warning shows.
    s.clock.set(NOW + 29 * DAY);
    let (_, body) = send(&s.router(Dialect::Consul), Method::GET, PATH, None, "").await;
    assert_eq!(body["Valid"], true);
    let warnings: Vec<String> = serde_json::from_value(body["Warnings"].clone()).expect("strings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("license token expires at"),
        "{warnings:?}"
    );
}
