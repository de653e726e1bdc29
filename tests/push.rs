//! The push job run synchronously against a loopback receiver, on both
//! stores: credentials sealed and sent, suspended licenses not pushed,
//! failures backing off visibly, private addresses refused when asked.

mod common;

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use common::{Backend, TestApp};
use serde_json::{Value, json};

both_stores!(
    credentials_are_sealed_sent_and_never_shown,
    suspended_licenses_are_not_pushed,
    failures_back_off_visibly,
    private_addresses_are_refused_when_asked,
    a_removal_refused_for_good_is_not_retried,
);

/// Every `POST .../api/licensing/token`: (authorization header, token).
type Got = Arc<Mutex<Vec<(String, String)>>>;

async fn receiver(status: u16) -> (String, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/api/licensing/token",
        axum::routing::delete(|| async {
            // An instance that cannot drop its license (as a Consul with no
            // built-in one once answered).
            (
                axum::http::StatusCode::CONFLICT,
                axum::Json(json!({"message": "no built-in license to reset to"})),
            )
        })
        .post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let g = g.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let token = body.0["token"].as_str().unwrap_or_default().to_string();
                g.lock().expect("lock").push((auth, token));
                (
                    axum::http::StatusCode::from_u16(status).expect("status"),
                    // What an internal service might answer: never kept.
                    axum::Json(json!({"internal": "db-password=hunter2"})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/"), got)
}

/// A license and one push-enabled instance on a receiver answering `status`.
async fn push_instance(app: &TestApp, status: u16) -> (String, String, Got) {
    let lid = app.license(json!({})).await["lid"]
        .as_str()
        .expect("lid")
        .to_string();
    let (url, got) = receiver(status).await;
    let (s, inst) = app
        .post(
            &format!("/api/licenses/{lid}/instances"),
            json!({"url": url, "push_enabled": true}),
        )
        .await;
    assert_eq!(s, 201, "{inst}");
    let id = inst["id"].as_str().expect("id").to_string();
    (lid, id, got)
}

async fn run(app: &TestApp) -> charter::push::RunStats {
    charter::licensing::push::run_once(app.state())
        .await
        .expect("push run")
}

async fn credentials_are_sealed_sent_and_never_shown(backend: Backend) {
    let app = TestApp::start(backend).await;
    let lid = app.license(json!({})).await["lid"]
        .as_str()
        .expect("lid")
        .to_string();
    let (url, got) = receiver(200).await;
    let (s, inst) = app
        .post(
            &format!("/api/licenses/{lid}/instances"),
            json!({"url": url, "push_enabled": true,
                   "credentials": {"type": "basic", "username": "grafana-admin", "password": "pa55-w0rd-xyz"}}),
        )
        .await;
    assert_eq!(s, 201, "{inst}");
    let id = inst["id"].as_str().expect("id").to_string();
    assert_eq!(inst["has_credentials"], true);
    assert!(!inst.to_string().contains("pa55-w0rd-xyz"), "{inst}");

    let stats = run(&app).await;
    assert_eq!((stats.delivered, stats.failed), (1, 0));
    let deliveries = got.lock().expect("lock").clone();
    assert_eq!(deliveries.len(), 1);
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("grafana-admin:pa55-w0rd-xyz")
    );
    assert_eq!(deliveries[0].0, expected, "the credentials are sent");
    let (_, history) = app.get(&format!("/api/licenses/{lid}/tokens")).await;
    assert_eq!(history["items"][0]["reason"], "push");
    assert_eq!(history["items"][0]["token"], deliveries[0].1.as_str());

    // Nothing more is due: a second run delivers nothing.
    assert_eq!(run(&app).await, charter::push::RunStats::default());

    // Not in any answer, and not in the database in clear.
    for path in [
        format!("/api/licenses/{lid}/instances"),
        format!("/api/licenses/{lid}/instances/{id}"),
    ] {
        let (_, body) = app.get(&path).await;
        assert!(!body.to_string().contains("pa55"), "{body}");
    }
    let sealed = app
        .state()
        .store
        .claim_push(
            &lid,
            &id,
            "test",
            charter_token::now(),
            charter_token::now() + 1,
        )
        .await;
    let sealed = sealed
        .expect("store")
        .expect("claimable")
        .credentials
        .expect("stored");
    assert!(
        sealed.starts_with("v2:") && !sealed.contains("pa55"),
        "{sealed}"
    );

    // Removing the credentials.
    let (s, inst) = app
        .patch(
            &format!("/api/licenses/{lid}/instances/{id}"),
            json!({"credentials": null}),
        )
        .await;
    assert_eq!((s, inst["has_credentials"].as_bool()), (200, Some(false)));
    // Malformed credentials are a 400 naming the field.
    let (s, body) = app
        .patch(
            &format!("/api/licenses/{lid}/instances/{id}"),
            json!({"credentials": {"type": "basic", "username": "a:b", "password": "x"}}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("credentials.username")),
        "{body}"
    );
    app.stop().await;
}

async fn suspended_licenses_are_not_pushed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (lid, id, got) = push_instance(&app, 200).await;
    app.post(&format!("/api/licenses/{lid}/suspend"), json!({}))
        .await;
    assert_eq!(run(&app).await, charter::push::RunStats::default());
    assert!(
        got.lock().expect("lock").is_empty(),
        "nothing pushed while suspended"
    );
    let (s, body) = app
        .post(
            &format!("/api/licenses/{lid}/instances/{id}/push"),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    app.post(&format!("/api/licenses/{lid}/resume"), json!({}))
        .await;
    assert_eq!(run(&app).await.delivered, 1, "pushed once resumed");
    assert_eq!(got.lock().expect("lock").len(), 1);
    app.stop().await;
}

async fn failures_back_off_visibly(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (lid, id, got) = push_instance(&app, 503).await;
    let stats = run(&app).await;
    assert_eq!((stats.delivered, stats.failed), (0, 1));
    let (_, inst) = app
        .get(&format!("/api/licenses/{lid}/instances/{id}"))
        .await;
    assert_eq!(inst["push_attempts"], 1);
    // The status and its reason, never what the peer answered.
    assert_eq!(
        inst["push_last_error"], "HTTP 503 Service Unavailable",
        "{inst}"
    );
    let next = inst["push_next_at"].as_str().expect("next attempt");
    assert!(
        next > inst["updated_at"].as_str().expect("updated"),
        "retry is later: {inst}"
    );
    assert_eq!(inst["push_at_risk"], true, "it never had a token");
    // Not due yet: the next run leaves it alone.
    assert_eq!(run(&app).await, charter::push::RunStats::default());
    // Push now retries at once and redelivers the same pending token.
    let (s, inst) = app
        .post(
            &format!("/api/licenses/{lid}/instances/{id}/push"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(inst["push_attempts"], 2);
    let got = got.lock().expect("lock").clone();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].1, got[1].1,
        "a failed delivery is retried with the same token"
    );
    let (_, history) = app.get(&format!("/api/licenses/{lid}/tokens")).await;
    assert_eq!(history["total"], 1, "not reissued");
    app.stop().await;
}

async fn private_addresses_are_refused_when_asked(backend: Backend) {
    let data = common::Data::new(backend).await;
    let mut config = data.config();
    config.push.refuse_private = true;
    let server = charter::serve::start(config).await.expect("starts");
    let app = TestApp {
        base: format!("http://{}", server.addr),
        server: Some(server),
        http: reqwest::Client::new(),
        data,
    };
    let (lid, id, got) = push_instance(&app, 200).await;
    assert_eq!(run(&app).await.failed, 1);
    assert!(
        got.lock().expect("lock").is_empty(),
        "nothing sent to a loopback address"
    );
    let (_, inst) = app
        .get(&format!("/api/licenses/{lid}/instances/{id}"))
        .await;
    assert!(
        inst["push_last_error"]
            .as_str()
            .is_some_and(|e| e.contains("private")),
        "{inst}"
    );
    app.stop().await;
}

async fn a_removal_refused_for_good_is_not_retried(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (lid, id, _) = push_instance(&app, 200).await;
    assert_eq!(run(&app).await.delivered, 1, "the first token");
    let (s, _) = app
        .post(&format!("/api/licenses/{lid}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200);
    // The instance answers the removal 409: a permanent refusal.
    let stats = run(&app).await;
    assert_eq!((stats.delivered, stats.failed), (0, 1));
    let (_, inst) = app
        .get(&format!("/api/licenses/{lid}/instances/{id}"))
        .await;
    assert!(
        inst["push_last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("HTTP 409 Conflict") && e.contains("not retried")),
        "{inst}"
    );
    assert_eq!(inst["push_next_at"], Value::Null, "{inst}");
    assert_eq!(inst["push_at_risk"], true, "a person should look: {inst}");
    assert_eq!(inst["removal_pending"], true, "{inst}");
    // Not retried, run after run.
    assert_eq!(run(&app).await, charter::push::RunStats::default());
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("charter_push_instances_at_risk 1"),
        "the at-risk gauge counts it"
    );
    app.stop().await;
}
