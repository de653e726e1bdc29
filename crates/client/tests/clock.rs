//! The clock rollback guard against a clock that ran ahead and one set back
//! (finding 5): a forward jump does not lock the instance out, a fresh token
//! from the issuer heals it, a deleted `license.seen` falls back to the
//! newest time the issuer vouched for, and operators can reset the guard.
//! The issuer is a stand-in on 127.0.0.1:0 with its own clock (real time).

mod common;

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use charter_client::store::SEEN_FILE;
use charter_client::token::{Claims, DAY, REVOCATIONS_TYP, TokenResponse};
use charter_client::{
    Clock, FileStore, LicenseManager, ManualClock, TokenStatus, TokenStore, Warning,
};
use common::*;
use serde_json::{Value, json};

/// A token as the issuer signs it at `iat`: valid for 7 days (the default
/// token lifetime, shorter than the 10-day jump).
fn token_at(iat: i64, jti: &str) -> (String, Claims) {
    let mut c = claims();
    c.jti = jti.into();
    c.iat = iat;
    c.nbf = iat;
    c.exp = iat + 7 * DAY;
    (sign(&c), c)
}

/// The stand-in's real time.
#[derive(Clone)]
struct Issuer {
    clock: Arc<ManualClock>,
}

async fn renew(State(issuer): State<Issuer>) -> Json<TokenResponse> {
    let (token, claims) = token_at(issuer.clock.now(), "renewed");
    Json(TokenResponse { token, claims })
}

async fn revocations(State(issuer): State<Issuer>) -> Json<Value> {
    let iat = issuer.clock.now();
    let payload =
        json!({"iss": "https://issuer.example/", "iat": iat, "exp": iat + 3600, "revoked": []});
    let token = keyring()
        .signing_key()
        .sign_payload(REVOCATIONS_TYP, payload.to_string().as_bytes())
        .expect("signs");
    Json(json!({ "token": token, "revoked": [] }))
}

async fn jwks() -> Json<charter_client::token::JwkSet> {
    Json(keyring().jwks())
}

/// Starts the stand-in (renew, revocations, JWKS) at real time `now`.
async fn issuer(now: i64) -> (String, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now));
    let app = Router::new()
        .route("/api/tokens/renew", post(renew))
        .route("/api/revocations", get(revocations))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(Issuer {
            clock: clock.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), clock)
}

/// A manager over the data dir `dir` with the instance's clock at `now`.
async fn start(dir: &Path, issuer: Option<&str>, now: i64) -> (LicenseManager, Arc<ManualClock>) {
    let store = Arc::new(FileStore::open(dir).expect("store opens"));
    let (mut cfg, _, _) = config(None);
    let clock = Arc::new(ManualClock::new(now));
    cfg.store = store;
    cfg.clock = clock.clone();
    cfg.issuer = issuer.map(str::to_string);
    let m = LicenseManager::start(cfg).await.expect("starts");
    (m, clock)
}

fn recorded_seen(dir: &Path) -> Option<i64> {
    FileStore::open(dir)
        .expect("store opens")
        .load_latest_seen()
        .expect("reads")
}

fn rollback_reported(m: &LicenseManager) -> bool {
    m.warnings()
        .iter()
        .any(|w| matches!(w, Warning::ClockRollback { .. }))
}

/// One run with the clock 10 days ahead, then the right time again: the
/// license stays valid (judged at most 2 days ahead), and a token freshly
/// issued is installed and resets the guard. The old code judged at the
/// latest time seen forever: check false, the fresh token refused "expired".
#[tokio::test]
async fn a_clock_run_ahead_once_does_not_lock_the_instance_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, real) = issuer(NOW).await;
    let (token, _) = token_at(NOW - 60, "first");
    FileStore::open(dir.path())
        .expect("opens")
        .save(&token)
        .expect("saves");

    // One run with the clock 10 days ahead (no issuer in reach then).
    let (m, clock) = start(dir.path(), None, NOW).await;
    assert!(m.is_valid());
    clock.set(NOW + 10 * DAY);
    m.tick().await;
    assert_eq!(m.status(), TokenStatus::Expired, "as the clock says");
    drop(m);
    assert!(recorded_seen(dir.path()).is_some_and(|s| s >= NOW + 10 * DAY));

    // The clock is right again, and the instance talks to its issuer.
    real.set(NOW + 3600);
    let (m, clock) = start(dir.path(), Some(&url), NOW + 3600).await;
    assert!(
        m.is_valid(),
        "judged at most 2 days ahead of the token's iat: {:?}",
        m.state_info()
    );
    assert!(m.effective_now() <= NOW - 60 + 2 * DAY);

    // A token freshly issued is taken, and the guard follows the clock again.
    let info = m.renew_now().await.expect("a fresh token is installed");
    assert_eq!(info.status, TokenStatus::Valid);
    assert_eq!(
        info.claims.as_ref().map(|c| c.jti.as_str()),
        Some("renewed")
    );
    assert_eq!(m.effective_now(), NOW + 3600, "reset by the fresh iat");
    assert!(!rollback_reported(&m), "{:?}", m.warnings());
    m.tick().await;
    assert!(
        recorded_seen(dir.path()).is_some_and(|s| s <= NOW + 3600 + 60),
        "the record follows: {:?}",
        recorded_seen(dir.path())
    );

    // Installing a token just issued heals an offline instance too.
    let (token, _) = token_at(NOW + 3700, "installed");
    drop(m);
    drop(clock);
    let (m, _) = start(dir.path(), None, NOW + 10 * DAY).await;
    m.tick().await;
    drop(m);
    let (m, _) = start(dir.path(), None, NOW + 3720).await;
    assert!(
        rollback_reported(&m),
        "offline: the full latest time seen counts"
    );
    m.install(&token)
        .await
        .expect("a token issued now installs");
    assert!(m.is_valid());
    assert!(!rollback_reported(&m));
}

/// A revocation poll heals it as well: its `iat` is a fresh issuer time.
#[tokio::test]
async fn a_revocation_poll_resets_a_clock_run_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, real) = issuer(NOW).await;
    let (token, _) = token_at(NOW - 60, "first");
    FileStore::open(dir.path())
        .expect("opens")
        .save(&token)
        .expect("saves");
    let (m, clock) = start(dir.path(), Some(&url), NOW).await;
    clock.set(NOW + 10 * DAY);
    m.state_info();
    clock.set(NOW + 600);
    real.set(NOW + 600);
    assert!(rollback_reported(&m));
    assert!(
        m.is_valid(),
        "capped at 2 days past the newest verified time"
    );
    m.refresh_revocations().await.expect("list taken");
    assert!(!rollback_reported(&m), "{:?}", m.warnings());
    assert_eq!(m.effective_now(), NOW + 600);
}

/// A clock set back is still caught, also with `license.seen` deleted: the
/// guard falls back to the newest time the issuer vouched for, here the
/// recorded revocation list's `iat`. The old code fell back to the token's
/// `iat` and the expired token was valid again.
#[tokio::test]
async fn a_deleted_seen_record_falls_back_to_the_newest_verified_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, real) = issuer(NOW + 8 * DAY).await;
    let (token, _) = token_at(NOW - 60, "first");
    FileStore::open(dir.path())
        .expect("opens")
        .save(&token)
        .expect("saves");

    // Eight days on, the token has expired; a revocation list was polled.
    let (m, _) = start(dir.path(), Some(&url), NOW + 8 * DAY).await;
    m.refresh_revocations().await.expect("list taken");
    assert_eq!(m.status(), TokenStatus::Expired);
    m.tick().await;
    drop(m);

    // Clock set back into the token's lifetime and the record deleted; the
    // issuer is out of reach.
    std::fs::remove_file(dir.path().join(SEEN_FILE)).expect("record deleted");
    drop(real);
    let (m, _) = start(dir.path(), Some("http://127.0.0.1:9"), NOW + DAY).await;
    assert_eq!(m.status(), TokenStatus::Expired, "not valid again");
    assert!(m.effective_now() >= NOW + 8 * DAY);
    assert!(rollback_reported(&m));

    // Without any record at all, the token's own iat is the floor.
    let dir = tempfile::tempdir().expect("tempdir");
    FileStore::open(dir.path())
        .expect("opens")
        .save(&token)
        .expect("saves");
    let (m, _) = start(dir.path(), None, NOW - 30 * DAY).await;
    assert_eq!(m.effective_now(), NOW - 60);
    assert!(rollback_reported(&m));
}

/// The operator's reset: forgets the latest time seen (and its record) and
/// issuer times ahead of the clock; earlier issuer times still count.
#[tokio::test]
async fn the_guard_can_be_reset_by_the_operator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (token, _) = token_at(NOW - 60, "first");
    FileStore::open(dir.path())
        .expect("opens")
        .save(&token)
        .expect("saves");
    let (m, clock) = start(dir.path(), None, NOW + 10 * DAY).await;
    m.tick().await;
    drop(m);
    clock.set(NOW);
    let (m, _) = start(dir.path(), None, NOW).await;
    assert_eq!(
        m.status(),
        TokenStatus::Expired,
        "offline: judged at the latest time seen"
    );
    let info = m.reset_clock_guard().await.expect("resets");
    assert_eq!(info.status, TokenStatus::Valid);
    assert!(!rollback_reported(&m));
    assert_eq!(recorded_seen(dir.path()), Some(NOW));
    drop(m);
    let (m, _) = start(dir.path(), None, NOW).await;
    assert!(m.is_valid(), "the reset is recorded");

    // The operator's word beats a recorded issuer time ahead of the clock.
    let (m, _) = start(dir.path(), None, NOW - 30 * DAY).await;
    assert_eq!(m.effective_now(), NOW);
    m.reset_clock_guard().await.expect("resets");
    assert!(
        m.effective_now() <= NOW - 30 * DAY + 120,
        "the leeway at most"
    );
    assert_eq!(m.status(), TokenStatus::Loaded, "not valid before its nbf");
}
