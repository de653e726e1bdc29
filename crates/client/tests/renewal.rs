//! Renewal against a stand-in for the issuer's `POST /api/tokens/renew` on
//! 127.0.0.1:0: success, a refusal that keeps the valid token and is
//! reported, and backoff in the background task.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use charter_client::api::Dialect;
use charter_client::token::{Claims, DAY, ErrorBody, RenewRequest, TokenResponse, Usage};
use charter_client::{
    Clock, LicenseManager, ManualClock, RenewError, Source, TokenStatus, Warning,
};
use common::*;
use serde_json::json;

/// What the stand-in answers next; the last entry repeats.
#[derive(Clone)]
enum Answer {
    Renew,
    /// Renews after a pause (to race an install).
    SlowRenew(u64),
    Refuse(u16, &'static str),
    /// 429 with `Retry-After: <seconds>`.
    Limited(u64),
    WrongInstance,
}

/// When a request came, its `Authorization` header and its body.
type Seen = (Instant, Option<String>, RenewRequest);

#[derive(Clone)]
struct Issuer {
    clock: Arc<ManualClock>,
    script: Arc<Mutex<Vec<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Issuer {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// New claims, issued at `now` as the issuer would.
fn renewed_claims(n: usize, now: i64) -> Claims {
    let mut c = claims();
    c.jti = format!("renewed-{n}");
    c.iat = now;
    c.nbf = now;
    c.exp = c.iat + 30 * DAY;
    c
}

async fn renew(
    State(issuer): State<Issuer>,
    headers: HeaderMap,
    Json(req): Json<RenewRequest>,
) -> Result<Json<TokenResponse>, axum::response::Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let n = {
        let mut seen = issuer.seen.lock().expect("lock");
        seen.push((Instant::now(), auth, req));
        seen.len()
    };
    let answer = {
        let mut script = issuer.script.lock().expect("lock");
        if script.len() > 1 {
            script.remove(0)
        } else {
            script[0].clone()
        }
    };
    if let Answer::SlowRenew(ms) = answer {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match answer {
        Answer::Renew | Answer::SlowRenew(_) => {
            let claims = renewed_claims(n, issuer.clock.now());
            Ok(Json(TokenResponse {
                token: sign(&claims),
                claims,
            }))
        }
        Answer::WrongInstance => {
            let mut claims = renewed_claims(n, issuer.clock.now());
            claims.sub = "https://other.example.com/".into();
            Ok(Json(TokenResponse {
                token: sign(&claims),
                claims,
            }))
        }
        Answer::Refuse(status, message) => Err(axum::response::IntoResponse::into_response((
            StatusCode::from_u16(status).expect("valid status"),
            Json(ErrorBody {
                message: message.into(),
            }),
        ))),
        Answer::Limited(secs) => Err(axum::response::IntoResponse::into_response((
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            Json(ErrorBody {
                message: "too many renewals for this license".into(),
            }),
        ))),
    }
}

/// Starts the stand-in with `script` on a clock shared with the manager;
/// answers its base URL.
async fn issuer(script: Vec<Answer>) -> (String, Issuer) {
    let state = Issuer {
        clock: Arc::new(ManualClock::new(NOW)),
        script: Arc::new(Mutex::new(script)),
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/api/tokens/renew", post(renew))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

fn usage() -> Usage {
    [("users".to_string(), 7), ("shards".to_string(), 2)]
        .into_iter()
        .collect()
}

async fn managed(url: String, issuer: &Issuer) -> Setup {
    let (mut cfg, store, _) = config(Some(valid_token()));
    let clock = issuer.clock.clone();
    cfg.clock = clock.clone();
    cfg.issuer = Some(url);
    cfg.usage = Arc::new(usage);
    let manager = LicenseManager::start(cfg).await.expect("starts");
    Setup {
        manager,
        store,
        clock,
    }
}

#[tokio::test]
async fn renew_now_sends_the_token_and_usage_and_installs_the_answer() {
    let (url, issuer) = issuer(vec![Answer::Renew]).await;
    let s = managed(url, &issuer).await;
    let info = s.manager.renew_now().await.expect("renews");
    assert_eq!(info.status, TokenStatus::Valid);
    assert_eq!(info.source, Some(Source::Renewed));
    assert_eq!(
        info.claims.as_ref().map(|c| c.jti.as_str()),
        Some("renewed-1")
    );
    assert_eq!(info.renewal.last_success_at, Some(NOW));
    assert_eq!(s.stored(), Some(sign(&renewed_claims(1, NOW))));

    let requests = issuer.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1, Some(format!("Bearer {}", valid_token())));
    assert_eq!(requests[0].2.usage, Some(usage()));
}

#[tokio::test]
async fn a_refusal_keeps_the_valid_token_and_is_reported() {
    let (url, issuer) = issuer(vec![
        Answer::Refuse(403, "license lic-1 is suspended"),
        Answer::Renew,
    ])
    .await;
    let s = managed(url, &issuer).await;
    let err = s.manager.renew_now().await.expect_err("refused");
    assert!(
        matches!(&err, RenewError::Refused { status: 403, message } if message == "license lic-1 is suspended"),
        "{err}"
    );
    let info = s.manager.state_info();
    assert_eq!(info.status, TokenStatus::Valid, "still-valid token kept");
    assert_eq!(s.stored(), Some(valid_token()));
    let last = info.renewal.last_error.expect("error reported");
    assert_eq!(last.status, Some(403));
    assert_eq!(last.message, "license lic-1 is suspended");
    assert_eq!(info.renewal.failures, 1);
    assert!(info.warnings.contains(&Warning::RenewalFailed {
        message: "license lic-1 is suspended".into()
    }));

    // The next success clears it.
    s.manager.renew_now().await.expect("renews");
    let info = s.manager.state_info();
    assert_eq!(info.renewal.last_error, None);
    assert!(info.warnings.is_empty());
}

#[tokio::test]
async fn the_grafana_renew_endpoint_asks_the_issuer_now() {
    let (url, issuer) = issuer(vec![
        Answer::Refuse(403, "license lic-1 is suspended"),
        Answer::Refuse(429, "slow down"),
        Answer::Renew,
    ])
    .await;
    let s = managed(url, &issuer).await;
    let r = s.router(Dialect::Grafana);
    let uri = "/api/licensing/token/renew";

    let (status, body) = send(&r, Method::POST, uri, admin(), "{}").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("suspended")),
        "{body}"
    );
    assert_eq!(body["issuer_status"], 403);

    let (status, _) = send(&r, Method::POST, uri, admin(), "{}").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(s.manager.is_valid());

    let (status, body) = send(&r, Method::POST, uri, admin(), "{}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["jti"], "renewed-3");
    assert_eq!(body["sub"], ROOT);
    assert_eq!(body["included_users"], 15);
    assert_eq!(body["prod"], json!(["grafana-enterprise"]));
}

#[tokio::test]
async fn an_unreachable_issuer_is_502_and_keeps_the_token() {
    // Bind and drop: nothing listens on that port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let (_, issuer) = issuer(vec![Answer::Renew]).await;
    let s = managed(url, &issuer).await;
    let (status, body) = send(
        &s.router(Dialect::Grafana),
        Method::POST,
        "/api/licensing/token/renew",
        admin(),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(s.manager.is_valid());
    assert!(s.manager.state_info().renewal.last_error.is_some());
}

#[tokio::test]
async fn a_renewed_token_for_another_instance_is_not_installed() {
    let (url, issuer) = issuer(vec![Answer::WrongInstance]).await;
    let s = managed(url, &issuer).await;
    let err = s.manager.renew_now().await.expect_err("refused");
    assert!(matches!(err, RenewError::BadAnswer(_)), "{err}");
    assert_eq!(s.stored(), Some(valid_token()));
    assert!(s.manager.is_valid());
}

#[tokio::test]
async fn the_background_task_waits_until_due() {
    let (url, issuer) = issuer(vec![Answer::Renew]).await;
    let s = managed(url, &issuer).await;
    let task = s.manager.spawn_background();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(issuer.requests().is_empty(), "iat + 1 day not reached");
    assert_eq!(s.manager.state_info().renewal.due_at, Some(NOW - 60 + DAY));

    let mut rx = s.manager.subscribe();
    s.clock.set(NOW + DAY);
    let renewed = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|i| i.source == Some(Source::Renewed)),
    )
    .await;
    task.abort();
    renewed.expect("renewed in time").expect("sender alive");
    assert_eq!(
        issuer.requests().len(),
        1,
        "renewed once, not again at once"
    );
}

#[tokio::test]
async fn failures_back_off_exponentially_and_never_drop_the_token() {
    let (url, issuer) = issuer(vec![
        Answer::Refuse(503, "maintenance"),
        Answer::Refuse(503, "maintenance"),
        Answer::Refuse(503, "maintenance"),
        Answer::Renew,
    ])
    .await;
    let s = managed(url, &issuer).await;
    s.clock.set(NOW + DAY);
    let mut rx = s.manager.subscribe();
    let task = s.manager.spawn_background();
    let failing = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|i| i.renewal.failures == 2),
    )
    .await
    .expect("two failures in time")
    .expect("sender alive")
    .clone();
    assert!(failing.valid, "token kept while renewals fail");
    assert_eq!(
        failing.renewal.last_error.map(|e| e.status),
        Some(Some(503))
    );
    let renewed = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|i| i.source == Some(Source::Renewed)),
    )
    .await;
    task.abort();
    renewed.expect("renewed in time").expect("sender alive");

    let at: Vec<Instant> = issuer.requests().iter().map(|r| r.0).collect();
    assert_eq!(at.len(), 4);
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Base 100 ms, doubling, jittered into [0.5, 1] of the full delay.
    assert!(gaps[0] >= Duration::from_millis(50), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[2] > gaps[0], "{gaps:?}");
}

#[tokio::test]
async fn backoff_doubles_up_to_the_cap_with_jitter() {
    let s = setup(Some(valid_token())).await;
    for (failures, full_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (10, 800)] {
        for _ in 0..20 {
            let d = s.manager.backoff(failures).as_millis();
            assert!(
                d >= full_ms / 2 && d <= full_ms,
                "{failures} failures: {d} ms not in [{}, {full_ms}]",
                full_ms / 2
            );
        }
    }
}

#[tokio::test]
async fn a_renewal_does_not_overwrite_a_license_installed_meanwhile() {
    let (url, issuer) = issuer(vec![Answer::SlowRenew(300)]).await;
    let s = managed(url, &issuer).await;
    let renewing = tokio::spawn({
        let m = s.manager.clone();
        async move { m.renew_now().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = claims();
    c.jti = "installed-by-hand".into();
    let by_hand = sign(&c);
    s.manager.install(&by_hand).await.expect("installs");
    renewing
        .await
        .expect("task ran")
        .expect("not an error: superseded");
    assert_eq!(issuer.requests().len(), 1);
    assert_eq!(s.stored(), Some(by_hand));
    let info = s.manager.state_info();
    assert_eq!(info.claims.map(|c| c.jti), Some("installed-by-hand".into()));
    assert_eq!(info.renewal.last_error, None);
}

#[tokio::test]
async fn a_rate_limited_renewal_waits_as_long_as_the_issuer_asks() {
    let (url, issuer) = issuer(vec![Answer::Limited(2), Answer::Renew]).await;
    let s = managed(url, &issuer).await;
    s.clock.set(NOW + DAY);
    let mut rx = s.manager.subscribe();
    let task = s.manager.spawn_background();
    let renewed = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|i| i.source == Some(Source::Renewed)),
    )
    .await;
    task.abort();
    renewed.expect("renewed in time").expect("sender alive");
    let at: Vec<Instant> = issuer.requests().iter().map(|r| r.0).collect();
    assert_eq!(at.len(), 2);
    // Backoff alone would retry after 50-100 ms; the issuer asked for 2 s.
    assert!(
        at[1] - at[0] >= Duration::from_secs(2),
        "{:?}",
        at[1] - at[0]
    );
}
