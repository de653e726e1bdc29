//! Shared test set-up: Ed25519 keys, claims for one instance, a manager on a
//! manual clock, and a one-shot request helper.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use charter_client::api::{self, ApiState, Dialect};
use charter_client::token::keys::generate_pem;
use charter_client::token::{Claims, DAY, InstanceUrl, KeyAlg, KeySet, Keyring, SigningKey};
use charter_client::{
    BasicAuth, LicenseManager, ManagerConfig, ManualClock, MemoryStore, RenewalConfig, TokenStore,
};
use serde_json::Value;
use tower::ServiceExt;

pub const NOW: i64 = 1_800_000_000;
pub const ROOT: &str = "https://grafana.example.com/";
pub const ADMIN: (&str, &str) = ("admin", "s3cret");

fn pem(slot: &'static OnceLock<String>) -> &'static str {
    slot.get_or_init(|| generate_pem(KeyAlg::EdDsa, 0).expect("Ed25519 key generation"))
}

/// The vendor's signing key as PKCS#8 PEM (to forge headers in tests).
pub fn signing_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    pem(&PEM)
}

/// The vendor's signing key, known to every manager in these tests.
pub fn keyring() -> Keyring {
    let key = SigningKey::from_pem(signing_pem()).expect("test key parses");
    Keyring::from_keys(key, vec![])
}

/// A second key the managers do not know (an attacker's, or a rotated one).
pub fn other_keyring() -> Keyring {
    static PEM: OnceLock<String> = OnceLock::new();
    let key = SigningKey::from_pem(pem(&PEM)).expect("test key parses");
    Keyring::from_keys(key, vec![])
}

pub fn keys() -> KeySet {
    keyring().public().clone()
}

/// Claims for [`ROOT`], valid at [`NOW`] for 30 days, license for a year.
pub fn claims() -> Claims {
    Claims {
        jti: "jti-1".into(),
        iss: "https://issuer.example/".into(),
        sub: ROOT.into(),
        iat: NOW - 60,
        nbf: NOW - 60,
        exp: NOW + 30 * DAY,
        lexp: NOW + 365 * DAY,
        lid: "lic-1".into(),
        limit_by: "users".into(),
        included_users: 15,
        lic_exp_warn_days: 30,
        tok_exp_warn_days: 2,
        update_days: 1,
        prod: vec!["grafana-enterprise".into()],
        company: "Grafana Labs".into(),
        account: "acct-42".into(),
        slug: "grafana-labs".into(),
        features: vec!["reporting".into(), "saml".into()],
        limits: [
            ("shards_limit".to_string(), 400),
            ("ram_shards_limit".to_string(), 300),
            ("flash_shards_limit".to_string(), 100),
        ]
        .into_iter()
        .collect(),
        flags: [("package".to_string(), "premium".to_string())]
            .into_iter()
            .collect(),
        ..Claims::default()
    }
}

pub fn sign(claims: &Claims) -> String {
    keyring().sign(claims).expect("signing works")
}

pub fn valid_token() -> String {
    sign(&claims())
}

/// One byte of the payload changed: the signature no longer matches.
pub fn tampered_token() -> String {
    let token = valid_token();
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(&parts[1])
            .expect("payload is base64"),
    )
    .expect("payload is JSON");
    payload["included_users"] = Value::from(100_000);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("serialises"));
    parts.join(".")
}

pub fn expired_token() -> String {
    let mut c = claims();
    c.iat = NOW - 40 * DAY;
    c.nbf = NOW - 40 * DAY;
    c.exp = NOW - DAY;
    sign(&c)
}

pub fn wrong_instance_token() -> String {
    let mut c = claims();
    c.sub = "https://someone-else.example.com/".into();
    sign(&c)
}

pub fn unknown_key_token() -> String {
    other_keyring().sign(&claims()).expect("signing works")
}

/// The four tokens every PUT/POST must refuse, with a name for messages.
pub fn bad_tokens() -> Vec<(&'static str, String)> {
    vec![
        ("tampered", tampered_token()),
        ("expired", expired_token()),
        ("wrong instance", wrong_instance_token()),
        ("unknown key", unknown_key_token()),
        ("garbage", "not-a-token".into()),
    ]
}

pub struct Setup {
    pub manager: LicenseManager,
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
}

/// A config on a manual clock at [`NOW`] over a memory store holding `token`.
pub fn config(token: Option<String>) -> (ManagerConfig, Arc<MemoryStore>, Arc<ManualClock>) {
    let store = Arc::new(MemoryStore::new(token));
    let clock = Arc::new(ManualClock::new(NOW));
    let mut cfg = ManagerConfig::new(
        InstanceUrl::parse(ROOT).expect("root URL parses"),
        keys(),
        store.clone(),
    );
    cfg.clock = clock.clone();
    cfg.renewal = RenewalConfig {
        backoff_base: std::time::Duration::from_millis(100),
        backoff_max: std::time::Duration::from_millis(800),
        check_interval: std::time::Duration::from_millis(50),
        request_timeout: std::time::Duration::from_secs(5),
    };
    (cfg, store, clock)
}

pub async fn setup(token: Option<String>) -> Setup {
    let (cfg, store, clock) = config(token);
    let manager = LicenseManager::start(cfg).await.expect("manager starts");
    Setup {
        manager,
        store,
        clock,
    }
}

impl Setup {
    pub fn stored(&self) -> Option<String> {
        self.store.load().expect("memory store reads")
    }

    pub fn router(&self, dialect: Dialect) -> Router {
        api::routers(
            ApiState::new(
                self.manager.clone(),
                Arc::new(BasicAuth::new(ADMIN.0, ADMIN.1)),
            ),
            &[dialect],
        )
    }
}

pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Sends one request; answers the status and the body as JSON (`Null` when
/// empty, a string when not JSON).
pub async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    auth: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let req = req
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request builds");
    let resp = router.clone().oneshot(req).await.expect("router answers");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body reads");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// The admin's credentials.
pub fn admin() -> Option<&'static str> {
    static AUTH: OnceLock<String> = OnceLock::new();
    Some(AUTH.get_or_init(|| basic(ADMIN.0, ADMIN.1)).as_str())
}
