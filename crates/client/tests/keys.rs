//! A key the issuer retires stops being trusted without a restart (finding
//! 19): a refresh from the JWKS file (or over https) drops the keys it no
//! longer publishes; keys pinned by the host stay; a fetch over plain http
//! only adds keys.

mod common;

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use charter_client::token::keys::generate_pem;
use charter_client::token::{KeyAlg, KeySet, Keyring, SigningKey};
use charter_client::{InstallError, LicenseManager, TokenStatus};
use common::*;

fn fresh_keyring() -> Keyring {
    let pem = generate_pem(KeyAlg::EdDsa, 0).expect("Ed25519 key generation");
    Keyring::from_keys(SigningKey::from_pem(&pem).expect("parses"), vec![])
}

fn set_of(rings: &[&Keyring]) -> KeySet {
    let mut set = KeySet::default();
    for r in rings {
        set.insert(r.signing_key().public().clone());
    }
    set
}

fn write_jwks(path: &Path, rings: &[&Keyring]) {
    let json = serde_json::to_string(&set_of(rings).jwks()).expect("serialises");
    std::fs::write(path, json).expect("writes");
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_file_stops_verifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("jwks.json");
    let (current, old) = (keyring(), fresh_keyring());
    write_jwks(&file, &[&current, &old]);
    let old_token = old.sign(&claims()).expect("signs");

    let (mut cfg, _, _) = config(Some(old_token.clone()));
    cfg.keys = KeySet::default();
    cfg.jwks_keys = set_of(&[&current, &old]);
    cfg.jwks_file = Some(file.clone());
    cfg.jwks_min_interval = Duration::ZERO;
    cfg.jwks_refresh_interval = Duration::ZERO;
    let m = LicenseManager::start(cfg).await.expect("starts");
    assert!(m.is_valid(), "signed by a published key");

    // The issuer retires the old key: the file no longer lists it.
    write_jwks(&file, &[&current]);
    m.tick().await;
    let info = m.state_info();
    assert_eq!(info.status, TokenStatus::Loaded, "{info:?}");
    assert!(!m.is_valid());
    assert!(matches!(
        m.install(&old_token).await,
        Err(InstallError::Refused(_))
    ));
    m.install(&valid_token())
        .await
        .expect("the current key still verifies");
    assert!(m.is_valid());

    // A file that cannot be read changes nothing.
    std::fs::write(&file, "not json").expect("writes");
    m.tick().await;
    assert!(m.is_valid());
}

#[tokio::test]
async fn keys_pinned_by_the_host_stay_whatever_the_jwks_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("jwks.json");
    let other = fresh_keyring();
    write_jwks(&file, &[&other]);
    let (mut cfg, _, _) = config(Some(valid_token()));
    // `keys()` (the vendor's key) stays pinned by `config`.
    cfg.jwks_file = Some(file);
    cfg.jwks_min_interval = Duration::ZERO;
    let m = LicenseManager::start(cfg).await.expect("starts");
    assert!(m.refresh_keys().await);
    assert!(m.is_valid(), "pinned");
    let other_token = other.sign(&claims()).expect("signs");
    m.install(&other_token)
        .await
        .expect("published key verifies");
}

#[tokio::test]
async fn a_fetch_over_loopback_http_withdraws_keys_no_longer_published() {
    let (current, old) = (keyring(), fresh_keyring());
    let published = set_of(&[&current]).jwks();
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let published = published.clone();
            async move { axum::Json(published) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let old_token = old.sign(&claims()).expect("signs");
    let (mut cfg, _, _) = config(Some(old_token));
    cfg.keys = KeySet::default();
    cfg.jwks_keys = set_of(&[&current, &old]);
    cfg.jwks_url = Some(format!("http://{addr}/.well-known/jwks.json"));
    cfg.jwks_min_interval = Duration::ZERO;
    let m = LicenseManager::start(cfg).await.expect("starts");
    assert!(m.refresh_keys().await, "fetched");
    // From the same machine nobody is on the path: the issuer's JWKS is
    // believed, and the old key's token stops verifying. (Over plain http
    // from another address keys are only added; that decision is tested
    // as a unit, `jwks::tests`, since tests send nothing off loopback.)
    assert!(
        !m.is_valid(),
        "a key withdrawn by a loopback issuer stops verifying"
    );
}
