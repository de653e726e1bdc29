//! Shared set-up of the dialect body targets: one manager and the routers
//! of the three dialects, driven in-process on a current-thread runtime.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use charter_client::api::{self, ApiState, Dialect};
use charter_client::token::keys::generate_pem;
use charter_client::token::{InstanceUrl, KeyAlg, SigningKey};
use charter_client::{BasicAuth, LicenseManager, ManagerConfig, MemoryStore};
use tower::ServiceExt;

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub routers: Vec<(Dialect, Router)>,
}

/// `Basic admin:fuzz`.
pub const AUTH: &str = "Basic YWRtaW46ZnV6eg==";

pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let pem = generate_pem(KeyAlg::EdDsa, 0).expect("key");
        let key = SigningKey::from_pem(&pem).expect("parses");
        let mut keys = charter_client::token::KeySet::default();
        keys.insert(key.public().clone());
        let store = Arc::new(MemoryStore::new(None));
        let root = InstanceUrl::parse("https://fuzz.example/").expect("url");
        let manager = rt
            .block_on(LicenseManager::start(ManagerConfig::new(root, keys, store)))
            .expect("manager");
        let state = ApiState::new(manager, Arc::new(BasicAuth::new("admin", "fuzz")));
        let routers = [Dialect::Grafana, Dialect::Consul, Dialect::Redis]
            .into_iter()
            .map(|d| (d, api::routers(state.clone(), &[d])))
            .collect();
        Harness { rt, routers }
    })
}

/// Sends `body` to `method uri` of `dialect`; panics on a 5xx.
pub fn send(dialect: Dialect, method: Method, uri: &str, body: &[u8]) {
    let h = harness();
    let router = h
        .routers
        .iter()
        .find(|(d, _)| *d == dialect)
        .map(|(_, r)| r.clone())
        .expect("router");
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", AUTH)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("request");
    let res = h.rt.block_on(router.oneshot(req)).expect("answers");
    assert!(
        !res.status().is_server_error(),
        "{uri}: {} for {:?}",
        res.status(),
        String::from_utf8_lossy(body)
    );
}
