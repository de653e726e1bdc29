//! The manager on its own: states, answers, glob subjects, clock rollback,
//! the watch channel, JWKS refresh and its rate limit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use charter_client::token::keys::generate_pem;
use charter_client::token::{DAY, InstanceUrl, KeyAlg, Keyring, SigningKey};
use charter_client::{
    FileStore, InstallError, LicenseManager, ManagerConfig, ManualClock, Source, TokenStatus,
    TokenStore, Warning,
};
use common::*;

#[tokio::test]
async fn a_valid_token_answers_features_limits_and_expiry() {
    let s = setup(Some(valid_token())).await;
    let m = &s.manager;
    assert!(m.is_valid());
    assert_eq!(m.status(), TokenStatus::Valid);
    assert_eq!(m.expiry(), Some(NOW + 30 * DAY));
    assert!(m.feature_enabled("saml"));
    assert!(!m.feature_enabled("unknown"));
    assert_eq!(m.enabled_features(), vec!["reporting", "saml"]);
    assert_eq!(m.limit("included_users"), Some(15));
    assert_eq!(m.limit("shards_limit"), Some(400));
    assert_eq!(m.limit("nope"), None);
    assert!(m.warnings().is_empty());
}

#[tokio::test]
async fn an_expired_token_enables_nothing() {
    let s = setup(Some(valid_token())).await;
    s.clock.set(NOW + 30 * DAY);
    let m = &s.manager;
    assert_eq!(m.status(), TokenStatus::Expired);
    assert!(!m.is_valid());
    assert!(!m.feature_enabled("saml"));
    assert!(m.enabled_features().is_empty());
    assert_eq!(m.limit("included_users"), None);
    assert_eq!(m.expiry(), Some(NOW + 30 * DAY), "expiry still reported");
}

#[tokio::test]
async fn nothing_stored_is_not_found_and_unknown_key_is_loaded() {
    assert_eq!(setup(None).await.manager.status(), TokenStatus::NotFound);
    // No issuer to fetch keys from: held, but cannot be judged.
    let s = setup(Some(unknown_key_token())).await;
    assert_eq!(s.manager.status(), TokenStatus::Loaded);
    assert!(!s.manager.is_valid());
    let (cfg, _, _) = config(None);
    assert_eq!(
        LicenseManager::new(cfg).status(),
        TokenStatus::NotLoaded,
        "before load"
    );
}

#[tokio::test]
async fn a_glob_subject_covers_a_fleet() {
    let mut c = claims();
    c.sub = "https://*.example.com/".into();
    let s = setup(Some(sign(&c))).await;
    assert_eq!(s.manager.status(), TokenStatus::Valid);

    c.sub = "https://*.example.org/".into();
    let s = setup(Some(sign(&c))).await;
    assert_eq!(s.manager.status(), TokenStatus::InvalidSubject);
    assert!(matches!(
        s.manager.install(&sign(&c)).await,
        Err(InstallError::WrongInstance { .. })
    ));

    // Finding 10: `*` is one label, IP literals and `**`/host-only
    // patterns never match this instance.
    for sub in [
        "https://*.com/",
        "https://*/",
        "https://**/",
        "https://**.example.com/",
        "https://*.*.example.com/",
        "https://[2001:db8::1]/",
        "https://[grafana]/",
        "https://graf?na.example.com/",
    ] {
        c.sub = sub.into();
        let s = setup(Some(sign(&c))).await;
        assert_eq!(s.manager.status(), TokenStatus::InvalidSubject, "{sub}");
        assert!(
            matches!(
                s.manager.install(&sign(&c)).await,
                Err(InstallError::WrongInstance { .. })
            ),
            "{sub}"
        );
    }
}

/// Finding 13: with the host's products and issuer configured, a token for
/// another product (a cheaper one, same URL) or from another issuer is
/// refused and, held, not valid nor renewed; unset, neither is checked.
#[tokio::test]
async fn a_token_for_another_product_or_issuer_is_not_valid_here() {
    let start = |token: Option<String>, products: Option<Vec<&str>>, iss: Option<&str>| {
        let (mut cfg, store, clock) = config(token);
        cfg.products = products.map(|p| p.into_iter().map(str::to_string).collect());
        cfg.expected_issuer = iss.map(str::to_string);
        cfg.issuer = Some("http://127.0.0.1:9".into());
        async move {
            Setup {
                manager: LicenseManager::start(cfg).await.expect("starts"),
                store,
                clock,
            }
        }
    };
    let mut cheap = claims();
    cheap.prod = vec!["grafana-oss-support".into()];
    let cheap = sign(&cheap);
    let mut foreign = claims();
    foreign.iss = "https://licenses.someone-else.example/".into();
    let foreign = sign(&foreign);
    let products = Some(vec!["grafana-enterprise", "grafana-cloud"]);
    // Written without the trailing slash the issuer puts in `iss`.
    let iss = Some("https://issuer.example");

    // Held from before: not valid, reason given, not renewed.
    for (name, token) in [("product", &cheap), ("issuer", &foreign)] {
        let s = start(Some(token.clone()), products.clone(), iss).await;
        let info = s.manager.state_info();
        assert_eq!(info.status, TokenStatus::Invalid, "{name}");
        assert!(!info.valid);
        let reason = info.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("not for") || reason.contains("not by"),
            "{name}: {reason}"
        );
        assert_eq!(info.renewal.due_at, None, "{name}");
        assert_eq!(s.manager.renewal_due_at(), None, "{name}");
        assert!(!s.manager.feature_enabled("reporting"));

        // Installing it is refused in every dialect, nothing changes.
        let s = start(Some(valid_token()), products.clone(), iss).await;
        let err = s.manager.install(token).await.expect_err(name);
        assert!(
            matches!(err, InstallError::NotForThisProduct(_)),
            "{name}: {err}"
        );
        for (dialect, method, path, body) in [
            (
                charter_client::api::Dialect::Grafana,
                axum::http::Method::POST,
                "/api/licensing/token",
                serde_json::json!({ "token": token }).to_string(),
            ),
            (
                charter_client::api::Dialect::Consul,
                axum::http::Method::PUT,
                "/v1/operator/license",
                token.clone(),
            ),
            (
                charter_client::api::Dialect::Redis,
                axum::http::Method::PUT,
                "/v1/license",
                serde_json::json!({ "license": token }).to_string(),
            ),
        ] {
            let (status, body) = send(&s.router(dialect), method, path, admin(), body).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{name} {dialect:?}: {body}"
            );
        }
        assert_eq!(s.stored(), Some(valid_token()), "{name}");
        assert!(s.manager.is_valid());
    }

    // The right product (any of the token's) and issuer: valid.
    let mut multi = claims();
    multi.prod = vec!["other".into(), "grafana-cloud".into()];
    let s = start(Some(sign(&multi)), products.clone(), iss).await;
    assert!(s.manager.is_valid());
    assert!(s.manager.renewal_due_at().is_some());

    // Not configured: not checked (compatibility).
    let s = start(Some(cheap.clone()), None, None).await;
    assert!(s.manager.is_valid());
    let s = start(Some(foreign), None, None).await;
    assert!(s.manager.is_valid());
}

/// A license that starts later (`nbf` in the future) installs and is held
/// as 2 Loaded until `nbf`, then is valid, as the crate docs say; it enables
/// nothing before.
#[tokio::test]
async fn a_token_not_valid_yet_installs_and_is_loaded_until_nbf() {
    let s = setup(Some(valid_token())).await;
    let mut c = claims();
    c.jti = "later".into();
    c.nbf = NOW + DAY;
    let token = sign(&c);
    let info = s.manager.install(&token).await.expect("installs");
    assert_eq!(info.status, TokenStatus::Loaded);
    assert!(!info.valid);
    let reason = info.reason.clone().unwrap_or_default();
    assert!(reason.contains("not valid before"), "{reason}");
    assert_eq!(info.claims.map(|c| c.jti), Some("later".to_string()));
    assert_eq!(s.stored(), Some(token.clone()));
    assert!(!s.manager.is_valid());
    assert!(!s.manager.feature_enabled("reporting"));
    assert_eq!(s.manager.limit("included_users"), None);

    // Grafana's status 2 through the endpoint too.
    let (status, body) = send(
        &s.router(charter_client::api::Dialect::Grafana),
        axum::http::Method::POST,
        "/api/licensing/token",
        admin(),
        serde_json::json!({ "token": token }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], 2, "{body}");

    s.clock.set(NOW + DAY - 1);
    assert_eq!(s.manager.status(), TokenStatus::Loaded);
    s.clock.set(NOW + DAY);
    assert_eq!(s.manager.status(), TokenStatus::Valid);
    assert!(s.manager.feature_enabled("reporting"));

    // Expired and tampered tokens are still refused.
    for (name, bad) in bad_tokens() {
        assert!(s.manager.install(&bad).await.is_err(), "{name}");
    }
}

#[tokio::test]
async fn warnings_follow_the_token_and_license_windows() {
    let mut c = claims();
    c.exp = NOW + 10 * DAY;
    c.lexp = NOW + 20 * DAY;
    c.tok_exp_warn_days = 5;
    c.lic_exp_warn_days = 15;
    let s = setup(Some(sign(&c))).await;
    assert!(s.manager.warnings().is_empty());
    s.clock.set(NOW + 5 * DAY + 1);
    assert_eq!(
        s.manager.warnings(),
        vec![
            Warning::TokenExpiring {
                exp: NOW + 10 * DAY
            },
            Warning::LicenseExpiring {
                lexp: NOW + 20 * DAY
            }
        ]
    );
}

#[tokio::test]
async fn a_clock_set_back_is_reported_and_does_not_revive_an_expired_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FileStore::open(dir.path()).expect("store opens"));
    store.save(&valid_token()).expect("saves");
    let clock = Arc::new(ManualClock::new(NOW));
    let cfg = || {
        let mut cfg = ManagerConfig::new(
            InstanceUrl::parse(ROOT).expect("parses"),
            keys(),
            store.clone(),
        );
        cfg.clock = clock.clone();
        cfg
    };
    let m = LicenseManager::start(cfg()).await.expect("starts");
    assert!(m.is_valid());

    clock.set(NOW + 31 * DAY);
    m.tick().await;
    assert_eq!(m.status(), TokenStatus::Expired);

    // Someone sets the clock back into the token's lifetime.
    clock.set(NOW + DAY);
    let info = m.state_info();
    assert_eq!(info.status, TokenStatus::Expired, "not valid again");
    assert!(info.warnings.contains(&Warning::ClockRollback {
        now: NOW + DAY,
        latest_seen: NOW + 31 * DAY
    }));
    assert!(matches!(
        m.install(&valid_token()).await,
        Err(InstallError::Refused(_))
    ));

    // A restart remembers the latest time seen.
    let restarted = LicenseManager::start(cfg()).await.expect("restarts");
    assert_eq!(restarted.status(), TokenStatus::Expired);
    assert!(
        restarted
            .warnings()
            .iter()
            .any(|w| matches!(w, Warning::ClockRollback { .. }))
    );
}

#[tokio::test]
async fn small_skew_is_not_a_rollback() {
    let s = setup(Some(valid_token())).await;
    s.clock.set(NOW - 120);
    assert!(s.manager.warnings().is_empty());
    assert!(s.manager.is_valid());
}

#[tokio::test]
async fn state_changes_are_published_on_the_watch_channel() {
    let s = setup(None).await;
    let mut rx = s.manager.subscribe();
    assert_eq!(rx.borrow_and_update().status, TokenStatus::NotFound);
    s.manager.install(&valid_token()).await.expect("installs");
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .expect("notified")
        .expect("sender alive");
    let info = rx.borrow_and_update().clone();
    assert_eq!(info.status, TokenStatus::Valid);
    assert_eq!(info.claims.map(|c| c.lid), Some("lic-1".to_string()));

    // A refused install publishes nothing.
    let _ = s.manager.install(&tampered_token()).await;
    assert!(!rx.has_changed().expect("sender alive"));

    // Time passing past exp shows up on the next tick.
    s.clock.set(NOW + 31 * DAY);
    s.manager.tick().await;
    assert!(rx.has_changed().expect("sender alive"));
    assert_eq!(rx.borrow_and_update().status, TokenStatus::Expired);
}

/// A JWKS endpoint serving `keyring`'s public keys, counting fetches; it
/// answers 503 while `down` is set.
async fn jwks_server(keyring: Keyring) -> (String, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (h, d) = (hits.clone(), down.clone());
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let (h, d, keyring) = (h.clone(), d.clone(), keyring.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    return Err(StatusCode::SERVICE_UNAVAILABLE);
                }
                Ok(axum::Json(keyring.jwks()))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("has an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/"), hits, down)
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_keys_from_the_issuer_rate_limited() {
    // The issuer has rotated to a new key and publishes both.
    let rotated = Keyring::from_keys(
        SigningKey::from_pem(&generate_pem(KeyAlg::EdDsa, 0).expect("generates")).expect("parses"),
        vec![keyring().signing_key().public().clone()],
    );
    let (issuer, hits, _) = jwks_server(rotated.clone()).await;
    let (mut cfg, store, _) = config(Some(valid_token()));
    cfg.issuer = Some(issuer);
    cfg.jwks_min_interval = Duration::from_secs(3600);
    let m = LicenseManager::start(cfg).await.expect("starts");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "known key: no fetch");

    let new_token = rotated.sign(&claims()).expect("signs");
    m.install(&new_token).await.expect("new key fetched");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(store.load().expect("reads"), Some(new_token));

    // An attacker's kid does not make the manager hammer the issuer.
    for _ in 0..3 {
        assert!(matches!(
            m.install(&unknown_key_token()).await,
            Err(InstallError::Refused(_))
        ));
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no fetch within the interval"
    );
    assert!(m.is_valid());
}

#[tokio::test]
async fn a_token_held_with_an_unknown_key_becomes_valid_once_the_keys_arrive() {
    let (issuer, hits, down) = jwks_server(other_keyring()).await;
    down.store(true, Ordering::SeqCst);
    let (mut cfg, _, _) = config(Some(unknown_key_token()));
    cfg.issuer = Some(issuer);
    cfg.jwks_min_interval = Duration::ZERO;
    let m = LicenseManager::start(cfg).await.expect("starts");
    assert_eq!(m.status(), TokenStatus::Loaded);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    down.store(false, Ordering::SeqCst);
    m.tick().await;
    assert_eq!(m.status(), TokenStatus::Valid);
}

#[tokio::test]
async fn the_builtin_license_serves_when_nothing_is_stored_and_is_never_renewed() {
    let mut c = claims();
    c.lid = "builtin".into();
    let (mut cfg, store, _) = config(Some(valid_token()));
    cfg.builtin_license = Some(format!("{}\n", sign(&c)));
    cfg.issuer = Some("http://127.0.0.1:9/".into());
    let m = LicenseManager::start(cfg).await.expect("starts");
    assert_eq!(m.state_info().source, Some(Source::Stored));
    assert!(m.state_info().renewal.due_at.is_some());

    // Grafana's DELETE removes the stored license: the built-in one takes over.
    let info = m.remove(ROOT).await.expect("removes");
    assert_eq!(store.load().expect("reads"), None);
    assert_eq!(info.source, Some(Source::BuiltIn));
    assert_eq!(info.status, TokenStatus::Valid);
    assert_eq!(info.claims.map(|c| c.lid), Some("builtin".to_string()));
    assert_eq!(
        info.renewal.due_at, None,
        "the built-in license ships with the product"
    );
    assert_eq!(m.renewal_due_at(), None);
}

#[tokio::test]
async fn a_token_from_an_issuer_clock_slightly_ahead_is_valid_at_once() {
    let s = setup(None).await;
    let mut c = claims();
    c.iat = NOW + 30;
    c.nbf = NOW + 30;
    let info = s.manager.install(&sign(&c)).await.expect("accepted");
    assert_eq!(info.status, TokenStatus::Valid);
    assert!(
        info.warnings.is_empty(),
        "no rollback reported: {:?}",
        info.warnings
    );

    // A token whose nbf is ahead but not its iat is held until nbf.
    let mut odd = claims();
    odd.nbf = NOW + 90;
    let info = s.manager.install(&sign(&odd)).await.expect("installs");
    assert_eq!(info.status, TokenStatus::Loaded);
    s.clock.set(NOW + 90);
    assert!(s.manager.is_valid());
}

#[tokio::test]
async fn replicas_sharing_a_store_see_the_same_license() {
    let (cfg_a, store, clock) = config(None);
    let a = LicenseManager::start(cfg_a).await.expect("starts");
    let mut cfg_b = ManagerConfig::new(
        InstanceUrl::parse(ROOT).expect("parses"),
        keys(),
        store.clone(),
    );
    cfg_b.clock = clock.clone();
    let b = LicenseManager::start(cfg_b).await.expect("starts");
    assert_eq!(b.status(), TokenStatus::NotFound);

    a.install(&valid_token()).await.expect("installs");
    let info = b.tick().await;
    assert_eq!(info.status, TokenStatus::Valid, "b took up a's license");
    assert_eq!(b.token(), Some(valid_token()));

    b.remove(ROOT).await.expect("removes");
    assert_eq!(a.tick().await.status, TokenStatus::NotFound);
    assert_eq!(a.token(), None);
}
