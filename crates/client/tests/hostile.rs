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

/// `header.payload.signature` with our claims, signed by our Ed25519 key
/// under any header, or keyed by HMAC.
fn forge(header: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let payload = b64(&serde_json::to_value(claims()).expect("claims serialise"));
    let input = format!("{}.{payload}", b64(header));
    let sig = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
    format!("{input}.{sig}")
}

fn our_key() -> aws_lc_rs::signature::Ed25519KeyPair {
    let body: String = signing_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body");
    aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).expect("Ed25519 key")
}

#[tokio::test]
async fn forged_headers_and_hostile_bodies_per_dialect() {
    use aws_lc_rs::signature::KeyPair;
    let s = setup(Some(valid_token())).await;
    let kid = keyring().signing_key().kid().to_string();
    let kp = our_key();
    let public = kp.public_key().as_ref().to_vec();
    let jwks = serde_json::to_string(&keyring().jwks()).expect("jwks");
    let hmac = |secret: Vec<u8>| {
        move |input: &[u8]| {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
            aws_lc_rs::hmac::sign(&key, input).as_ref().to_vec()
        }
    };
    let ed = |input: &[u8]| kp.sign(input).as_ref().to_vec();
    let head = |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid});
    let tokens = vec![
        (
            "HS256 keyed with the public key",
            forge(&head("HS256", &kid), hmac(public.clone())),
        ),
        (
            "HS256 keyed with the JWKS",
            forge(&head("HS256", &kid), hmac(jwks.into_bytes())),
        ),
        (
            "alg none, no signature",
            forge(&head("none", &kid), |_| Vec::new()),
        ),
        (
            "kid with a path",
            forge(&head("EdDSA", "../../etc/passwd"), ed),
        ),
        (
            "kid with a NUL",
            forge(&head("EdDSA", &format!("{kid}\u{0}")), ed),
        ),
        ("kid of 4 KiB", forge(&head("EdDSA", &"k".repeat(4096)), ed)),
        (
            "kid a number",
            forge(&json!({"alg": "EdDSA", "kid": 1}), ed),
        ),
        (
            "crit header",
            forge(&json!({"alg": "EdDSA", "kid": kid, "crit": ["x"]}), ed),
        ),
        ("SQL", "'; DROP TABLE licenses; --".to_string()),
        ("NUL", "a\u{0}b.c.d".to_string()),
    ];
    // A real signature under our own header is accepted: the forgeries differ only where named.
    let (status, body) = send(
        &s.router(Dialect::Grafana),
        Method::POST,
        "/api/licensing/token",
        admin(),
        json!({ "token": forge(&head("EdDSA", &kid), ed) }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "control: {body}");
    let stored = s.stored();
    for (name, token) in tokens {
        for (dialect, method, uri, body, expected) in puts(&token) {
            let (status, resp) = send(&s.router(dialect), method, uri, admin(), body).await;
            assert_eq!(status, expected, "{name} on {uri}: {resp}");
            assert_eq!(s.stored(), stored, "{name} on {uri}");
        }
    }

    // Bodies of the wrong shape: deep JSON, wrong types, numbers, NUL.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let shapes: Vec<(Dialect, Method, &str, String)> = vec![
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            deep.clone(),
        ),
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            json!({"token": 5}).to_string(),
        ),
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            json!({"token": -1e308}).to_string(),
        ),
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            json!({"token": null}).to_string(),
        ),
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            json!({"token": ["a"]}).to_string(),
        ),
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            json!({"token": "a\u{0}"}).to_string(),
        ),
        (
            Dialect::Grafana,
            Method::DELETE,
            "/api/licensing/token",
            deep.clone(),
        ),
        (
            Dialect::Grafana,
            Method::DELETE,
            "/api/licensing/token",
            json!({"instance": 18446744073709551616_f64}).to_string(),
        ),
        (
            Dialect::Consul,
            Method::PUT,
            "/v1/operator/license",
            deep.clone(),
        ),
        (
            Dialect::Consul,
            Method::PUT,
            "/v1/operator/license",
            "-1".to_string(),
        ),
        (
            Dialect::Consul,
            Method::PUT,
            "/v1/operator/license",
            "\u{0}".to_string(),
        ),
        (
            Dialect::Consul,
            Method::PUT,
            "/v1/operator/license?dc=%00",
            valid_token(),
        ),
        (Dialect::Redis, Method::PUT, "/v1/license", deep),
        (
            Dialect::Redis,
            Method::PUT,
            "/v1/license",
            json!({"license": 9_223_372_036_854_775_807_i64}).to_string(),
        ),
        (
            Dialect::Redis,
            Method::PUT,
            "/v1/license",
            json!({"license": -1}).to_string(),
        ),
        (
            Dialect::Redis,
            Method::PUT,
            "/v1/license",
            json!({"license": {"$ne": ""}}).to_string(),
        ),
        (
            Dialect::Redis,
            Method::PUT,
            "/v1/license",
            json!({"license": "x\u{0}"}).to_string(),
        ),
        (Dialect::Redis, Method::PUT, "/v1/license", "[]".to_string()),
    ];
    for (dialect, method, uri, body) in shapes {
        let short = body.chars().take(40).collect::<String>();
        let (status, resp) = send(&s.router(dialect), method, uri, admin(), body).await;
        assert!(status.is_client_error(), "{uri} {short}: {status} {resp}");
        assert_eq!(s.stored(), stored, "{uri} {short}");
    }

    // Grafana's DELETE names an instance: credentials, odd schemes, NUL are not ours.
    for instance in [
        "https://user:pw@grafana.example.com/",
        "gopher://grafana.example.com/",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "https://grafana.example.com/\u{0}",
        "",
    ] {
        let (status, resp) = send(
            &s.router(Dialect::Grafana),
            Method::DELETE,
            "/api/licensing/token",
            admin(),
            json!({ "instance": instance }).to_string(),
        )
        .await;
        assert!(status.is_client_error(), "{instance:?}: {status} {resp}");
        assert_eq!(s.stored(), stored, "{instance:?}");
    }

    // Wrong content types.
    for (dialect, method, uri, body) in [
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            json!({"token": valid_token()}).to_string(),
        ),
        (
            Dialect::Redis,
            Method::PUT,
            "/v1/license",
            json!({"license": valid_token()}).to_string(),
        ),
    ] {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", admin().expect("admin"))
            .header("content-type", "text/plain")
            .body(axum::body::Body::from(body))
            .expect("request");
        let resp = tower::ServiceExt::oneshot(s.router(dialect), req)
            .await
            .expect("answers");
        // Either refused as the wrong type, or read as JSON anyway: never a 5xx.
        assert!(!resp.status().is_server_error(), "{uri}: {}", resp.status());
    }
    assert!(s.manager.is_valid());
}
