//! The authorisation hook: each endpoint asks for the permission its seed
//! names, and a caller the host knows but does not allow gets 403.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode};
use charter_client::api::{self, ApiState, Dialect};
use charter_client::{Authorizer, Denied, Permission};
use common::*;
use serde_json::json;

/// Callers say who they are in `x-role`; a viewer may only read. Every
/// permission asked for is recorded.
#[derive(Default)]
struct Roles {
    asked: Mutex<Vec<&'static str>>,
}

impl Authorizer for Roles {
    fn authorize(&self, headers: &HeaderMap, permission: Permission) -> Result<(), Denied> {
        self.asked.lock().expect("lock").push(permission.as_str());
        let read_only = matches!(
            permission,
            Permission::LicensingRead | Permission::OperatorRead | Permission::ViewLicense
        );
        match headers.get("x-role").and_then(|v| v.to_str().ok()) {
            Some("admin") => Ok(()),
            Some("viewer") if read_only => Ok(()),
            Some("viewer") => Err(Denied::Forbidden),
            _ => Err(Denied::Unauthenticated),
        }
    }
}

async fn call(router: &Router, method: Method, uri: &str, role: &str, body: String) -> StatusCode {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("x-role", role)
        .body(axum::body::Body::from(body))
        .expect("request builds");
    router
        .clone()
        .oneshot(req)
        .await
        .expect("router answers")
        .status()
}

#[tokio::test]
async fn each_endpoint_asks_for_its_seed_permission_and_403s_a_viewer() {
    let s = setup(Some(valid_token())).await;
    let roles = Arc::new(Roles::default());
    let router = api::routers(
        ApiState::new(s.manager.clone(), roles.clone()),
        &Dialect::ALL,
    );
    let token = valid_token();
    let cases = [
        (
            Method::GET,
            "/api/licensing/check",
            String::new(),
            "licensing:read",
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/licensing/token",
            json!({"token": token}).to_string(),
            "licensing:write",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/licensing/token/renew",
            "{}".into(),
            "licensing:write",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::DELETE,
            "/api/licensing/token",
            json!({"instance": ROOT}).to_string(),
            "licensing:delete",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/v1/operator/license",
            String::new(),
            "operator:read",
            StatusCode::OK,
        ),
        (
            Method::PUT,
            "/v1/operator/license",
            token.clone(),
            "operator:write",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::DELETE,
            "/v1/operator/license",
            String::new(),
            "operator:write",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/v1/license",
            String::new(),
            "view_license",
            StatusCode::OK,
        ),
        (
            Method::PUT,
            "/v1/license",
            json!({"license": token}).to_string(),
            "install_new_license",
            StatusCode::FORBIDDEN,
        ),
    ];
    for (method, uri, body, permission, viewer_status) in cases {
        roles.asked.lock().expect("lock").clear();
        let status = call(&router, method.clone(), uri, "viewer", body).await;
        assert_eq!(status, viewer_status, "viewer: {method} {uri}");
        assert_eq!(
            *roles.asked.lock().expect("lock"),
            vec![permission],
            "{method} {uri}"
        );
    }
    assert_eq!(s.stored(), Some(valid_token()), "a viewer changed nothing");
}

#[tokio::test]
async fn unknown_callers_get_each_dialects_code() {
    let s = setup(Some(valid_token())).await;
    let router = api::routers(
        ApiState::new(s.manager.clone(), Arc::new(Roles::default())),
        &Dialect::ALL,
    );
    let cases = [
        (
            Method::GET,
            "/api/licensing/check",
            StatusCode::UNAUTHORIZED,
        ),
        (Method::PUT, "/v1/operator/license", StatusCode::FORBIDDEN),
        (Method::GET, "/v1/license", StatusCode::UNAUTHORIZED),
    ];
    for (method, uri, expected) in cases {
        let status = call(&router, method.clone(), uri, "stranger", String::new()).await;
        assert_eq!(status, expected, "{method} {uri}");
    }
}

#[tokio::test]
async fn the_default_basic_auth_answers_401_with_a_challenge() {
    let s = setup(Some(valid_token())).await;
    let router = s.router(Dialect::Grafana);
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri("/api/licensing/check")
        .body(axum::body::Body::empty())
        .expect("request builds");
    let resp = router.oneshot(req).await.expect("answers");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok());
    assert_eq!(challenge, Some("Basic realm=\"licensing\""));
}
