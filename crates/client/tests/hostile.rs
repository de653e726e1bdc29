//! Hostile input on every endpoint that takes a license: algorithm
//! confusion, `alg: none`, a known `kid` with another algorithm, oversized
//! and non-UTF-8 bodies, SQL in strings. Each gets a clear 4xx and the stored
//! license stays as it was.

mod common;

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use charter_client::api::Dialect;
use common::*;
use serde_json::{Value, json};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("serialises"))
}

/// Tokens with our real `kid` and claims, but an algorithm we never accept.
fn confused_tokens() -> Vec<(&'static str, String)> {
    let kid = keyring().signing_key().kid().to_string();
    let payload = b64(&serde_json::to_value(claims()).expect("claims serialise"));
    let with = |alg: &str, sig: &str| {
        format!(
            "{}.{payload}.{sig}",
            b64(&json!({"alg": alg, "typ": "JWT", "kid": kid}))
        )
    };
    vec![
        ("HS256 with our kid", with("HS256", "c2lnbmF0dXJl")),
        ("alg none", with("none", "")),
        ("RS256 for an EdDSA key", with("RS256", "c2lnbmF0dXJl")),
        ("no kid", {
            let token = valid_token();
            let rest = token.split_once('.').expect("dots").1.to_string();
            format!("{}.{rest}", b64(&json!({"alg": "EdDSA", "typ": "JWT"})))
        }),
        ("four parts", format!("{}.x", valid_token())),
        ("16 KiB + 1", "a".repeat(16 * 1024 + 1)),
    ]
}

/// The license-taking requests of every dialect, wrapping `token`.
fn puts(token: &str) -> Vec<(Dialect, Method, &'static str, String, StatusCode)> {
    vec![
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            json!({ "token": token }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Dialect::Consul,
            Method::PUT,
            "/v1/operator/license",
            token.to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Dialect::Redis,
            Method::PUT,
            "/v1/license",
            json!({ "license": token }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
    ]
}

#[tokio::test]
async fn algorithm_confusion_is_refused_everywhere() {
    let s = setup(Some(valid_token())).await;
    for (name, token) in confused_tokens() {
        for (dialect, method, uri, body, expected) in puts(&token) {
            let (status, resp) = send(&s.router(dialect), method, uri, admin(), body).await;
            assert_eq!(status, expected, "{name} on {uri}: {resp}");
            assert!(resp["message"].is_string(), "{name} on {uri}");
            assert_eq!(s.stored(), Some(valid_token()), "{name} on {uri}");
        }
    }
    assert!(s.manager.is_valid());
}

#[tokio::test]
async fn huge_and_binary_bodies_are_clear_4xx() {
    let s = setup(Some(valid_token())).await;
    let huge = "x".repeat(1 << 20);
    for (dialect, method, uri, _, _) in puts("") {
        let (status, _) = send(
            &s.router(dialect),
            method.clone(),
            uri,
            admin(),
            huge.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
        let (status, _) = send(
            &s.router(dialect),
            method,
            uri,
            admin(),
            vec![0xc3_u8, 0x28, 0xa0, 0xa1],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
    }
    let (status, _) = send(
        &s.router(Dialect::Grafana),
        Method::DELETE,
        "/api/licensing/token",
        admin(),
        huge,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.stored(), Some(valid_token()));
}

#[tokio::test]
async fn sql_and_nonsense_in_strings_change_nothing() {
    let s = setup(Some(valid_token())).await;
    let sql = "'; DROP TABLE licenses; --";
    let (status, _) = send(
        &s.router(Dialect::Grafana),
        Method::DELETE,
        "/api/licensing/token",
        admin(),
        json!({ "instance": sql }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for (dialect, method, uri, body, expected) in puts(sql) {
        let (status, _) = send(&s.router(dialect), method, uri, admin(), body).await;
        assert_eq!(status, expected, "{uri}");
    }
    let (status, body) = send(
        &s.router(Dialect::Consul),
        Method::GET,
        "/v1/operator/license?dc=%27%3B%20DROP%20TABLE%20x%3B",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "dc is only a name: {body}");
    let (status, _) = send(
        &s.router(Dialect::Consul),
        Method::GET,
        &format!("/v1/operator/license?dc={}", "d".repeat(300)),
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(s.stored(), Some(valid_token()));
    assert!(s.manager.is_valid());
}
