//! The issuer's signed revocation list, from a stand-in for
//! `GET /api/revocations` (and its JWKS) on 127.0.0.1:0: a revoked license
//! becomes invalid after a poll; unsigned, badly signed, unknown-key,
//! expired and stale lists are ignored; the last good list survives a
//! restart without the issuer; a revoked license cannot be installed.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use charter_client::api::Dialect;
use charter_client::store::REVOKED_FILE;
use charter_client::token::keys::generate_pem;
use charter_client::token::{
    DAY, JwkSet, KeyAlg, KeySet, Keyring, REVOCATIONS_TYP, SigningKey, TOKEN_TYP, VerifyError,
};
use charter_client::{
    FileStore, InstallError, LicenseManager, RenewError, RevocationError, TokenStatus, Warning,
};
use common::*;
use serde_json::{Value, json};

/// What the stand-in serves: the revocation answer and the JWKS.
#[derive(Clone)]
struct Issuer {
    answer: Arc<Mutex<Value>>,
    jwks: Arc<Mutex<JwkSet>>,
    polls: Arc<AtomicUsize>,
}

impl Issuer {
    fn serve(&self, answer: Value) {
        *self.answer.lock().expect("lock") = answer;
    }

    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

async fn revocations(State(issuer): State<Issuer>) -> Json<Value> {
    issuer.polls.fetch_add(1, Ordering::SeqCst);
    Json(issuer.answer.lock().expect("lock").clone())
}

async fn jwks(State(issuer): State<Issuer>) -> Json<JwkSet> {
    Json(issuer.jwks.lock().expect("lock").clone())
}

/// Starts the stand-in (JWKS: the vendor's key only, serving an empty list);
/// answers its base URL and a handle to script it.
async fn issuer() -> (String, Issuer, tokio::task::JoinHandle<()>) {
    let state = Issuer {
        answer: Arc::new(Mutex::new(answer(&list(&keyring(), &[])))),
        jwks: Arc::new(Mutex::new(keyring().jwks())),
        polls: Arc::default(),
    };
    let app = Router::new()
        .route("/api/revocations", get(revocations))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state, server)
}

/// A list signed by `ring`, issued at `iat`, expiring at `exp`.
fn list_at(ring: &Keyring, iat: i64, exp: i64, lids: &[&str]) -> String {
    let payload = json!({
        "iss": "https://issuer.example/",
        "iat": iat,
        "exp": exp,
        "revoked": lids,
    });
    ring.signing_key()
        .sign_payload(
            REVOCATIONS_TYP,
            &serde_json::to_vec(&payload).expect("serialises"),
        )
        .expect("signs")
}

/// A list as the issuer signs it now: valid for an hour.
fn list(ring: &Keyring, lids: &[&str]) -> String {
    list_at(ring, NOW - 10, NOW - 10 + 3600, lids)
}

/// The issuer's answer: the JWS and the plain (non-authoritative) array.
fn answer(jws: &str) -> Value {
    let revoked = URL_SAFE_NO_PAD
        .decode(jws.split('.').nth(1).expect("three parts"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .map_or(json!([]), |p| p["revoked"].clone());
    json!({ "token": jws, "revoked": revoked })
}

/// A fresh key nobody trusts or publishes.
fn attacker() -> Keyring {
    let pem = generate_pem(KeyAlg::EdDsa, 0).expect("Ed25519 key generation");
    Keyring::from_keys(SigningKey::from_pem(&pem).expect("key parses"), vec![])
}

/// A manager over a memory store holding `token`, polling `url`.
async fn managed(url: &str, token: Option<String>) -> Setup {
    let (mut cfg, store, clock) = config(token);
    cfg.issuer = Some(url.to_string());
    let manager = LicenseManager::start(cfg).await.expect("starts");
    Setup {
        manager,
        store,
        clock,
    }
}

fn assert_revoked(m: &LicenseManager, lid: &str) {
    let info = m.state_info();
    assert!(!m.is_valid(), "a revoked license is not valid");
    assert_eq!(info.status, TokenStatus::Invalid);
    assert!(!info.valid);
    let reason = info.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(lid) && reason.contains("revoked"),
        "{reason}"
    );
    assert!(
        info.warnings
            .contains(&Warning::LicenseRevoked { lid: lid.into() }),
        "{:?}",
        info.warnings
    );
    assert!(!m.feature_enabled("reporting"));
    assert_eq!(m.limit("included_users"), None);
    assert_eq!(m.renewal_due_at(), None, "renewal stops");
    assert_eq!(info.renewal.due_at, None);
}

#[tokio::test]
async fn a_revoked_license_is_invalid_after_a_poll_and_the_watch_notifies() {
    let (url, issuer, _server) = issuer().await;
    let s = managed(&url, Some(valid_token())).await;
    assert!(s.manager.is_valid());
    assert!(s.manager.renewal_due_at().is_some());
    let mut rx = s.manager.subscribe();
    rx.borrow_and_update();

    issuer.serve(answer(&list(&keyring(), &["lic-0", "lic-1"])));
    let info = s.manager.refresh_revocations().await.expect("list taken");
    assert_eq!(info.status, TokenStatus::Invalid);
    assert_revoked(&s.manager, "lic-1");
    assert!(rx.has_changed().expect("sender alive"), "watch notified");
    assert_eq!(rx.borrow_and_update().status, TokenStatus::Invalid);
    assert_eq!(s.manager.revoked_licenses(), vec!["lic-0", "lic-1"]);
    assert!(s.manager.is_revoked("lic-1"));
    assert_eq!(s.manager.revocations_issued_at(), Some(NOW - 10));

    // Renewal is not even asked for.
    let err = s.manager.renew_now().await.expect_err("revoked");
    assert!(
        matches!(&err, RenewError::Revoked { lid } if lid == "lic-1"),
        "{err}"
    );
    assert!(s.manager.state_info().renewal.last_error.is_none());

    // Grafana's check shows it (status 3); Consul's reply says why.
    let (status, body) = send(
        &s.router(Dialect::Grafana),
        Method::POST,
        "/api/licensing/token/renew",
        admin(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = send(
        &s.router(Dialect::Consul),
        Method::GET,
        "/v1/operator/license",
        admin(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Valid"], false);
    assert!(body.to_string().contains("revoked"), "{body}");
}

#[tokio::test]
async fn tick_polls_at_start_then_every_interval() {
    let (url, issuer, _server) = issuer().await;
    issuer.serve(answer(&list(&keyring(), &["lic-1"])));
    let s = managed(&url, Some(valid_token())).await;
    assert!(s.manager.is_valid(), "nothing polled before the first tick");
    let info = s.manager.tick().await;
    assert_eq!(issuer.polls(), 1);
    assert_eq!(info.status, TokenStatus::Invalid);
    assert_revoked(&s.manager, "lic-1");
    s.manager.tick().await;
    assert_eq!(issuer.polls(), 1, "not again before revocations_interval");

    // The background task polls on its first tick.
    let (url, issuer, _server2) = self::issuer().await;
    issuer.serve(answer(&list(&keyring(), &["lic-1"])));
    let s = managed(&url, Some(valid_token())).await;
    let mut rx = s.manager.subscribe();
    let task = s.manager.spawn_background();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        rx.wait_for(|i| i.status == TokenStatus::Invalid),
    )
    .await
    .expect("revoked within 10 s")
    .expect("sender alive");
    task.abort();
    assert_revoked(&s.manager, "lic-1");
}

#[tokio::test]
async fn a_license_not_on_the_list_stays_valid() {
    let (url, issuer, _server) = issuer().await;
    let s = managed(&url, Some(valid_token())).await;
    issuer.serve(answer(&list(&keyring(), &["lic-0", "lic-10", "LIC-1"])));
    let info = s.manager.refresh_revocations().await.expect("list taken");
    assert_eq!(info.status, TokenStatus::Valid);
    assert!(info.valid && info.reason.is_none());
    assert!(s.manager.is_valid());
    assert!(s.manager.renewal_due_at().is_some());
    assert_eq!(
        s.manager.revoked_licenses(),
        vec!["LIC-1", "lic-0", "lic-10"]
    );
}

/// Whether a refusal is the one expected.
type Expect = fn(&RevocationError) -> bool;

#[tokio::test]
async fn bad_lists_are_ignored_and_the_last_good_one_kept() {
    let (url, issuer, _server) = issuer().await;
    let s = managed(&url, Some(valid_token())).await;

    let good = list(&keyring(), &["lic-0"]);
    // The same list with lic-1 added: the signature no longer matches.
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        let payload = json!({"iss": "https://issuer.example/", "iat": NOW - 10,
            "exp": NOW + 3590, "revoked": ["lic-0", "lic-1"]});
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("serialises"));
        parts.join(".")
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD
            .encode(json!({"iat": NOW - 10, "exp": NOW + 3590, "revoked": ["lic-1"]}).to_string())
    );
    let kid = keyring().signing_key().kid().to_string();
    let unsigned_with_kid = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD
            .encode(json!({"iat": NOW - 10, "exp": NOW + 3590, "revoked": ["lic-1"]}).to_string())
    );
    let cases: Vec<(&str, Value, Expect)> = vec![
        ("unknown key", answer(&list(&attacker(), &["lic-1"])), |e| {
            matches!(e, RevocationError::BadSignature(VerifyError::UnknownKey(_)))
        }),
        ("tampered", answer(&tampered), |e| {
            matches!(e, RevocationError::BadSignature(VerifyError::BadSignature))
        }),
        ("alg none", answer(&unsigned), |e| {
            matches!(e, RevocationError::BadSignature(_))
        }),
        ("empty signature", answer(&unsigned_with_kid), |e| {
            matches!(e, RevocationError::BadSignature(_))
        }),
        (
            "expired",
            answer(&list_at(&keyring(), NOW - 7200, NOW - 3600, &["lic-1"])),
            |e| matches!(e, RevocationError::Expired { .. }),
        ),
        (
            "expiring now",
            answer(&list_at(&keyring(), NOW - 3600, NOW, &["lic-1"])),
            |e| matches!(e, RevocationError::Expired { .. }),
        ),
        (
            "issued in the future",
            answer(&list_at(&keyring(), NOW + 3600, NOW + 7200, &["lic-1"])),
            |e| matches!(e, RevocationError::FromTheFuture { .. }),
        ),
        (
            "payload of another shape",
            answer(
                &keyring()
                    .signing_key()
                    .sign_payload(REVOCATIONS_TYP, br#"{"revoked":"lic-1"}"#)
                    .expect("signs"),
            ),
            |e| matches!(e, RevocationError::BadSignature(VerifyError::Malformed(_))),
        ),
        (
            "a list signed as a license token",
            answer(
                &keyring()
                    .signing_key()
                    .sign_payload(
                        TOKEN_TYP,
                        json!({"iat": NOW - 10, "exp": NOW + 3590, "revoked": ["lic-1"]})
                            .to_string()
                            .as_bytes(),
                    )
                    .expect("signs"),
            ),
            |e| {
                matches!(
                    e,
                    RevocationError::BadSignature(VerifyError::WrongType { .. })
                )
            },
        ),
        ("a license token", answer(&valid_token()), |e| {
            matches!(
                e,
                RevocationError::BadSignature(VerifyError::WrongType { .. })
            )
        }),
        (
            "only the plain array",
            json!({"token": list(&keyring(), &[]), "revoked": ["lic-1"]}),
            |_| false,
        ),
        ("not an answer", json!({"revoked": ["lic-1"]}), |e| {
            matches!(e, RevocationError::BadAnswer(_))
        }),
        ("garbage token", json!({"token": "a.b.c"}), |e| {
            matches!(e, RevocationError::BadSignature(_))
        }),
    ];

    // With no list held yet, then with a good one held.
    for with_good in [false, true] {
        for (name, body, expected) in &cases {
            if with_good {
                issuer.serve(answer(&good));
                s.manager.refresh_revocations().await.expect("good list");
            }
            issuer.serve(body.clone());
            match s.manager.refresh_revocations().await {
                // The plain array is not authoritative: the signed list is empty.
                Ok(info) if *name == "only the plain array" => {
                    assert_eq!(info.status, TokenStatus::Valid, "{name}");
                }
                Ok(info) => panic!("{name}: taken: {info:?}"),
                Err(e) => assert!(expected(&e), "{name}: {e}"),
            }
            assert!(s.manager.is_valid(), "{name}: still valid");
            assert!(!s.manager.is_revoked("lic-1"), "{name}");
            if with_good && *name != "only the plain array" {
                assert_eq!(s.manager.revoked_licenses(), vec!["lic-0"], "{name}");
            }
        }
    }
}

#[tokio::test]
async fn an_older_list_does_not_replace_a_newer_one_but_a_newer_one_does() {
    let (url, issuer, _server) = issuer().await;
    let s = managed(&url, Some(valid_token())).await;
    issuer.serve(answer(&list_at(
        &keyring(),
        NOW - 10,
        NOW + 3590,
        &["lic-1"],
    )));
    s.manager.refresh_revocations().await.expect("taken");
    assert_revoked(&s.manager, "lic-1");

    // A replayed older list (still unexpired) that did not name lic-1.
    issuer.serve(answer(&list_at(&keyring(), NOW - 600, NOW + 3000, &[])));
    let err = s.manager.refresh_revocations().await.expect_err("stale");
    assert!(matches!(err, RevocationError::Stale { .. }), "{err}");
    assert_revoked(&s.manager, "lic-1");

    // The issuer's newer list no longer names it: the token is trusted again.
    let mut rx = s.manager.subscribe();
    rx.borrow_and_update();
    issuer.serve(answer(&list_at(&keyring(), NOW, NOW + 3600, &["lic-0"])));
    let info = s.manager.refresh_revocations().await.expect("taken");
    assert_eq!(info.status, TokenStatus::Valid);
    assert!(rx.has_changed().expect("sender alive"));
    assert!(s.manager.renewal_due_at().is_some());
}

#[tokio::test]
async fn a_list_signed_by_a_key_from_the_jwks_is_taken() {
    let (url, issuer, _server) = issuer().await;
    let s = managed(&url, Some(valid_token())).await;
    // The issuer rotated to a key the manager has not pinned but publishes.
    let rotated = other_keyring();
    let mut published = KeySet::default();
    published.insert(keyring().signing_key().public().clone());
    published.insert(rotated.signing_key().public().clone());
    *issuer.jwks.lock().expect("lock") = published.jwks();
    issuer.serve(answer(&list(&rotated, &["lic-1"])));
    s.manager
        .refresh_revocations()
        .await
        .expect("taken after a JWKS refresh");
    assert_revoked(&s.manager, "lic-1");
}

#[tokio::test]
async fn the_last_good_list_survives_a_restart_with_the_issuer_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, issuer, server) = issuer().await;
    // A manager on the data dir (holding the valid token) at `now`.
    let start = |url: String, now: i64| {
        let dir = dir.path().to_path_buf();
        async move {
            let store = Arc::new(FileStore::open(&dir).expect("store opens"));
            if !store.token_path().exists() {
                use charter_client::TokenStore;
                store.save(&valid_token()).expect("token saved");
            }
            let (mut cfg, _, _) = config(None);
            cfg.store = store;
            cfg.issuer = Some(url);
            cfg.clock = Arc::new(charter_client::ManualClock::new(now));
            LicenseManager::start(cfg).await.expect("starts")
        }
    };

    let m = start(url.clone(), NOW).await;
    assert!(m.is_valid());
    issuer.serve(answer(&list(&keyring(), &["lic-1"])));
    m.refresh_revocations().await.expect("taken");
    assert_revoked(&m, "lic-1");
    assert!(dir.path().join(REVOKED_FILE).exists(), "persisted");
    drop(m);

    // The issuer goes away; a new manager on the same data dir, two hours on
    // (the list itself has expired by then).
    server.abort();
    let _ = server.await;
    let m = start(url.clone(), NOW + 7200).await;
    assert_revoked(&m, "lic-1");
    m.tick().await;
    let err = m.refresh_revocations().await.expect_err("issuer down");
    assert!(matches!(err, RevocationError::Unreachable(_)), "{err}");
    assert_revoked(&m, "lic-1");
    let (status, body) = send(
        &api_router(&m, Dialect::Grafana),
        Method::POST,
        "/api/licensing/token",
        admin(),
        json!({ "token": valid_token() }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    drop(m);

    // A damaged record is ignored, not trusted.
    let jws = std::fs::read_to_string(dir.path().join(REVOKED_FILE)).expect("reads");
    let mut parts: Vec<String> = jws.trim().split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD
        .encode(json!({"iat": NOW, "exp": NOW + 3600, "revoked": ["lic-9"]}).to_string());
    std::fs::write(dir.path().join(REVOKED_FILE), parts.join(".")).expect("writes");
    let m = start(url, NOW).await;
    assert!(m.is_valid(), "a badly signed record is not taken");
    assert!(m.revoked_licenses().is_empty());
}

fn api_router(m: &LicenseManager, dialect: Dialect) -> Router {
    charter_client::api::routers(
        charter_client::api::ApiState::new(
            m.clone(),
            Arc::new(charter_client::BasicAuth::new(ADMIN.0, ADMIN.1)),
        ),
        &[dialect],
    )
}

#[tokio::test]
async fn installing_a_revoked_license_is_refused_in_every_dialect() {
    let (url, issuer, _server) = issuer().await;
    let s = managed(&url, None).await;
    issuer.serve(answer(&list(&keyring(), &["lic-1"])));
    s.manager.refresh_revocations().await.expect("taken");
    assert_eq!(s.manager.status(), TokenStatus::NotFound);

    let err = s
        .manager
        .install(&valid_token())
        .await
        .expect_err("revoked");
    assert!(
        matches!(&err, InstallError::Revoked { lid } if lid == "lic-1"),
        "{err}"
    );
    assert_eq!(s.stored(), None);

    let token = valid_token();
    let requests = [
        (
            Dialect::Grafana,
            Method::POST,
            "/api/licensing/token",
            json!({ "token": token }).to_string(),
        ),
        (
            Dialect::Consul,
            Method::PUT,
            "/v1/operator/license",
            token.clone(),
        ),
        (
            Dialect::Redis,
            Method::PUT,
            "/v1/license",
            json!({ "license": token }).to_string(),
        ),
    ];
    for (dialect, method, path, body) in requests {
        let (status, answer) = send(&s.router(dialect), method, path, admin(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{dialect:?}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains("revoked"), "{dialect:?}: {answer}");
        assert_eq!(s.stored(), None, "{dialect:?}");
    }

    // Another license of the same customer installs.
    let mut c = claims();
    c.lid = "lic-2".into();
    let info = s.manager.install(&sign(&c)).await.expect("installs");
    assert_eq!(info.status, TokenStatus::Valid);
}

/// A manager over the data dir `dir` (holding the valid token) polling `url`.
async fn on_disk(dir: &std::path::Path, url: &str) -> LicenseManager {
    use charter_client::TokenStore;
    let store = Arc::new(FileStore::open(dir).expect("store opens"));
    if store.load().expect("reads").is_none() {
        store.save(&valid_token()).expect("token saved");
    }
    let (mut cfg, _, _) = config(None);
    cfg.store = store;
    cfg.issuer = Some(url.to_string());
    LicenseManager::start(cfg).await.expect("starts")
}

/// Finding 3: a `license.revoked` signed by a key nobody trusts, issued in
/// the year 2100, was taken unverified at start and made every real list
/// "older": revocation was off for good. It is now ignored.
#[tokio::test]
async fn a_forged_revocation_record_is_ignored_and_real_lists_still_count() {
    const Y2100: i64 = 4_102_444_800;
    let (url, issuer, _server) = issuer().await;
    for forged_lids in [&[][..], &["lic-1"][..]] {
        let dir = tempfile::tempdir().expect("tempdir");
        let forged = list_at(&attacker(), Y2100, Y2100 + 3600, forged_lids);
        std::fs::write(dir.path().join(REVOKED_FILE), &forged).expect("writes");
        let m = on_disk(dir.path(), &url).await;
        assert!(m.revoked_licenses().is_empty(), "{forged_lids:?}: not kept");
        assert_eq!(m.revocations_issued_at(), None);
        assert!(m.is_valid(), "{forged_lids:?}");
        assert!(m.effective_now() < Y2100, "no time taken from it");

        issuer.serve(answer(&list(&keyring(), &["lic-1"])));
        m.refresh_revocations()
            .await
            .expect("the issuer's list is taken");
        assert_revoked(&m, "lic-1");
        issuer.serve(answer(&list(&keyring(), &[])));
    }
}

/// Finding 3: even a list that verifies cannot set the staleness floor
/// further than the leeway past now (the issuer's clock was wrong once).
#[tokio::test]
async fn a_recorded_list_from_the_future_does_not_make_later_lists_stale() {
    let (url, issuer, _server) = issuer().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // An instance that has run before: it recorded the latest time seen.
    drop(on_disk(dir.path(), &url).await.tick().await);
    let future = list_at(&keyring(), NOW + 365 * DAY, NOW + 366 * DAY, &["lic-0"]);
    std::fs::write(dir.path().join(REVOKED_FILE), &future).expect("writes");
    let m = on_disk(dir.path(), &url).await;
    assert!(m.is_valid(), "its time counts only up to the record");
    assert_eq!(
        m.revoked_licenses(),
        vec!["lic-0"],
        "verified: its ids count"
    );
    let floor = m.revocations_issued_at().expect("held");
    assert!(floor <= NOW + 120, "staleness floor capped: {floor}");

    // A list issued after the cap is taken whatever it says.
    issuer.serve(answer(&list_at(
        &keyring(),
        NOW + 200,
        NOW + 3600,
        &["lic-1"],
    )));
    m.refresh_revocations().await.expect("taken");
    assert_revoked(&m, "lic-1");
    assert_eq!(m.revoked_licenses(), vec!["lic-1"]);
}

/// A list from another issuer replica signed a little earlier than the one
/// held, with the same or more revoked ids, is not an error; with more,
/// they count. One that drops an id is stale.
#[tokio::test]
async fn an_older_list_that_withdraws_nothing_is_not_stale() {
    let (url, issuer, _server) = issuer().await;
    let s = managed(&url, Some(valid_token())).await;
    issuer.serve(answer(&list_at(
        &keyring(),
        NOW - 10,
        NOW + 3590,
        &["lic-0"],
    )));
    s.manager.refresh_revocations().await.expect("taken");
    issuer.serve(answer(&list_at(
        &keyring(),
        NOW - 40,
        NOW + 3560,
        &["lic-0"],
    )));
    s.manager
        .refresh_revocations()
        .await
        .expect("same ids, a little older: fine");
    assert_eq!(s.manager.revocations_issued_at(), Some(NOW - 10));
    issuer.serve(answer(&list_at(
        &keyring(),
        NOW - 40,
        NOW + 3560,
        &["lic-0", "lic-1"],
    )));
    s.manager
        .refresh_revocations()
        .await
        .expect("more ids count");
    assert_revoked(&s.manager, "lic-1");
    assert_eq!(s.manager.revocations_issued_at(), Some(NOW - 10));
    issuer.serve(answer(&list_at(
        &keyring(),
        NOW - 40,
        NOW + 3560,
        &["lic-0"],
    )));
    let err = s.manager.refresh_revocations().await.expect_err("stale");
    assert!(matches!(err, RevocationError::Stale { .. }), "{err}");
    assert_revoked(&s.manager, "lic-1");
}
