//! Replays each request of `seeds/grafana-licensing-api.md` against the
//! grafana router and checks status codes and fields, every listed error
//! code, and that refused tokens leave the stored license unchanged.

mod common;

use axum::http::{Method, StatusCode};
use charter_client::TokenStatus;
use charter_client::api::Dialect;
use common::*;
use serde_json::{Value, json};

const CHECK: &str = "/api/licensing/check";
const TOKEN: &str = "/api/licensing/token";

#[tokio::test]
async fn check_answers_true_with_a_valid_license_and_false_without() {
    let with = setup(Some(valid_token())).await;
    let (status, body) = send(
        &with.router(Dialect::Grafana),
        Method::GET,
        CHECK,
        admin(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!(true));

    let without = setup(None).await;
    let (status, body) = send(
        &without.router(Dialect::Grafana),
        Method::GET,
        CHECK,
        admin(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!(false));

    let expired = setup(Some(expired_token())).await;
    let (_, body) = send(
        &expired.router(Dialect::Grafana),
        Method::GET,
        CHECK,
        admin(),
        "",
    )
    .await;
    assert_eq!(body, json!(false));
}

#[tokio::test]
async fn every_endpoint_needs_the_admin_credentials() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Grafana);
    let wrong = basic("admin", "wrong");
    let requests = [
        (Method::GET, CHECK, String::new()),
        (
            Method::POST,
            TOKEN,
            json!({"token": valid_token()}).to_string(),
        ),
        (Method::POST, "/api/licensing/token/renew", "{}".into()),
        (Method::DELETE, TOKEN, json!({"instance": ROOT}).to_string()),
    ];
    for (method, uri, body) in requests {
        for auth in [
            None,
            Some(wrong.as_str()),
            Some("Bearer eyJrIjoiT0tTcG1pUlY2"),
        ] {
            let (status, resp) = send(&r, method.clone(), uri, auth, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {auth:?}"
            );
            assert!(resp["message"].is_string(), "{resp}");
        }
    }
    assert_eq!(s.stored(), Some(valid_token()), "nothing changed");
}

#[tokio::test]
async fn add_license_answers_the_claims_with_status() {
    let s = setup(None).await;
    let token = valid_token();
    let (status, body) = send(
        &s.router(Dialect::Grafana),
        Method::POST,
        TOKEN,
        admin(),
        json!({ "token": token }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], json!(TokenStatus::Valid.code()));
    // Every field of the seed's example is there, with its type.
    for (field, kind) in [
        ("jti", "string"),
        ("iss", "string"),
        ("sub", "string"),
        ("iat", "number"),
        ("exp", "number"),
        ("nbf", "number"),
        ("lexp", "number"),
        ("lid", "string"),
        ("limit_by", "string"),
        ("included_users", "number"),
        ("lic_exp_warn_days", "number"),
        ("tok_exp_warn_days", "number"),
        ("update_days", "number"),
        ("company", "string"),
        ("account", "string"),
        ("slug", "string"),
        ("usage_billing", "bool"),
        ("max_concurrent_user_sessions", "number"),
        ("details_url", "string"),
        ("trial", "bool"),
        ("trial_exp", "number"),
        ("anonymousRatio", "number"),
    ] {
        let v = &body[field];
        let ok = match kind {
            "string" => v.is_string(),
            "number" => v.is_i64(),
            _ => v.is_boolean(),
        };
        assert!(ok, "{field} should be a {kind}: {body}");
    }
    assert_eq!(body["lid"], "lic-1");
    assert_eq!(body["sub"], ROOT);
    assert_eq!(body["included_users"], 15);
    assert_eq!(body["prod"], json!(["grafana-enterprise"]));
    assert_eq!(s.stored(), Some(token));
    assert!(s.manager.is_valid());
}

#[tokio::test]
async fn add_license_refuses_bad_tokens_with_400_and_keeps_the_stored_one() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Grafana);
    let mut bodies: Vec<(String, String)> = bad_tokens()
        .into_iter()
        .map(|(name, t)| (name.to_string(), json!({ "token": t }).to_string()))
        .collect();
    // The seed's own example token is HS256 with no kid.
    bodies.push((
        "seed HS256 example".into(),
        json!({"token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0aGlzIjoiaXMiLCJub3QiOiJhIiwidmFsaWQiOiJsaWNlbnNlIn0.bxDzxIoJlYMwiEYKYT_l2s42z0Y30tY-6KKoyz9RuLE"}).to_string(),
    ));
    bodies.push(("bad JSON".into(), "{\"token\": ".into()));
    bodies.push(("no token field".into(), "{}".into()));
    bodies.push(("token not a string".into(), json!({"token": 5}).to_string()));
    for (name, body) in bodies {
        let (status, resp) = send(&r, Method::POST, TOKEN, admin(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {resp}");
        assert!(resp["message"].is_string(), "{name}: {resp}");
        assert_eq!(s.stored(), Some(valid_token()), "{name} changed the store");
        assert!(s.manager.is_valid(), "{name} dropped the license");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let s = setup(Some(valid_token())).await;
    let huge = json!({ "token": "a".repeat(200_000) }).to_string();
    let (status, _) = send(
        &s.router(Dialect::Grafana),
        Method::POST,
        TOKEN,
        admin(),
        huge,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.stored(), Some(valid_token()));
}

#[tokio::test]
async fn delete_removes_the_license_and_answers_202_empty_object() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Grafana);
    // The seed's request names the instance over http; ours is https.
    let (status, body) = send(
        &r,
        Method::DELETE,
        TOKEN,
        admin(),
        json!({"instance": ROOT}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({}));
    assert_eq!(s.stored(), None);
    assert_eq!(s.manager.status(), TokenStatus::NotFound);
    let (_, check) = send(&r, Method::GET, CHECK, admin(), "").await;
    assert_eq!(check, json!(false));

    // Again, with nothing stored: still 202.
    let (status, body) = send(
        &r,
        Method::DELETE,
        TOKEN,
        admin(),
        json!({"instance": "HTTPS://Grafana.Example.com"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({}));
}

#[tokio::test]
async fn delete_naming_another_instance_is_422_and_keeps_the_license() {
    let s = setup(Some(valid_token())).await;
    let r = s.router(Dialect::Grafana);
    for body in [
        json!({"instance": "http://play.grafana.org/"}),
        json!({"instance": "not a url"}),
        json!({}),
        json!({"instance": 7}),
    ] {
        let (status, resp) = send(&r, Method::DELETE, TOKEN, admin(), body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp}");
        assert!(resp["message"].is_string());
    }
    assert_eq!(s.stored(), Some(valid_token()));
    assert!(s.manager.is_valid());
}

#[tokio::test]
async fn renew_without_an_issuer_is_a_clear_error() {
    let s = setup(Some(valid_token())).await;
    let (status, body) = send(
        &s.router(Dialect::Grafana),
        Method::POST,
        "/api/licensing/token/renew",
        admin(),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["message"], "no issuer is configured");
    assert!(s.manager.is_valid());
}

#[tokio::test]
async fn status_reports_expired_and_wrong_subject_tokens() {
    let cases = [
        (expired_token(), TokenStatus::Expired),
        (wrong_instance_token(), TokenStatus::InvalidSubject),
        (tampered_token(), TokenStatus::Invalid),
    ];
    for (token, expected) in cases {
        let s = setup(Some(token)).await;
        assert_eq!(s.manager.status(), expected);
        assert_eq!(s.manager.status().code(), expected as u8);
        let (_, check) = send(&s.router(Dialect::Grafana), Method::GET, CHECK, admin(), "").await;
        assert_eq!(check, Value::Bool(false));
    }
}

/// Over a real connection: a client sending an over-long body reads its
/// 413, and its keep-alive connection still serves the next request (the
/// body is read and dropped before answering). The license is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_their_413_over_a_real_connection() {
    let s = setup(Some(valid_token())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = s.router(Dialect::Grafana);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = reqwest::Client::new();
    let auth = admin().expect("admin");
    let huge = json!({ "token": "a".repeat(1024 * 1024) }).to_string();
    for i in 0..20 {
        let res = http
            .post(format!("{base}{TOKEN}"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {i}: no answer: {e}"));
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "attempt {i}");
        let check = http
            .get(format!("{base}{CHECK}"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {i}: the next request failed: {e}"));
        assert_eq!(check.text().await.expect("body"), "true");
    }
    assert_eq!(s.stored(), Some(valid_token()));
}
