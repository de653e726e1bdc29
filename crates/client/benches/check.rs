//! Requests per second of the grafana router's `GET /api/licensing/check`
//! (HTTP Basic for the admin, a verified Ed25519 token, the manager's
//! clock-rollback guard) next to a bare axum handler answering `true`,
//! both in-process through `tower::ServiceExt::oneshot`, measured in the same
//! run. Goal (DESIGN.md): charter / bare >= 0.8.
//!
//! `cargo bench -p charter-client --bench check`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use charter_client::api::{self, ApiState, Dialect};
use charter_client::token::keys::generate_pem;
use charter_client::token::{Claims, DAY, InstanceUrl, KeyAlg, Keyring, SigningKey, now};
use charter_client::{BasicAuth, LicenseManager, ManagerConfig, MemoryStore};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

const ROOT: &str = "https://grafana.example.com/";

fn charter_router(rt: &tokio::runtime::Runtime) -> Router {
    let key = SigningKey::from_pem(&generate_pem(KeyAlg::EdDsa, 0).expect("key")).expect("parse");
    let keyring = Keyring::from_keys(key, vec![]);
    let t = now();
    let token = keyring
        .sign(&Claims {
            sub: ROOT.into(),
            iat: t,
            nbf: t,
            exp: t + 30 * DAY,
            lexp: t + 365 * DAY,
            ..Claims::default()
        })
        .expect("sign");
    let cfg = ManagerConfig::new(
        InstanceUrl::parse(ROOT).expect("url"),
        keyring.public().clone(),
        Arc::new(MemoryStore::new(Some(token))),
    );
    let manager = rt.block_on(LicenseManager::start(cfg)).expect("start");
    assert!(manager.is_valid());
    let auth = Arc::new(BasicAuth::new("admin", "admin"));
    api::routers(ApiState::new(manager, auth), &[Dialect::Grafana])
}

fn bare_router() -> Router {
    Router::new().route("/api/licensing/check", get(|| async { Json(true) }))
}

fn request() -> Request<Body> {
    Request::builder()
        .uri("/api/licensing/check")
        .header(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode("admin:admin")),
        )
        .body(Body::empty())
        .expect("request")
}

async fn hit(router: &Router) {
    let resp = router.clone().oneshot(request()).await.expect("answer");
    assert!(resp.status().is_success());
    let body = axum::body::to_bytes(resp.into_body(), 64)
        .await
        .expect("body");
    assert_eq!(&body[..], b"true");
    black_box(body);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let charter = charter_router(&rt);
    let bare = bare_router();
    let mut g = c.benchmark_group("licensing_check");
    g.bench_function("bare axum handler", |b| b.iter(|| rt.block_on(hit(&bare))));
    g.bench_function("charter grafana check", |b| {
        b.iter(|| rt.block_on(hit(&charter)))
    });
    g.finish();

    // Interleaved batches so both see the same machine state; median of rounds.
    let mut ratios = Vec::new();
    let (mut bare_total, mut charter_total) = (Duration::ZERO, Duration::ZERO);
    let batch = 2_000;
    for _ in 0..15 {
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..batch {
                hit(&bare).await;
            }
        });
        let b = t.elapsed();
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..batch {
                hit(&charter).await;
            }
        });
        let c = t.elapsed();
        bare_total += b;
        charter_total += c;
        // Requests per second ratio = inverse time ratio.
        ratios.push(b.as_secs_f64() / c.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let n = 15.0 * batch as f64;
    println!(
        "\nGET /api/licensing/check: bare axum {:.0} req/s, charter {:.0} req/s; charter/bare = {:.3} (goal >= 0.8)",
        n / bare_total.as_secs_f64(),
        n / charter_total.as_secs_f64(),
        ratios[ratios.len() / 2]
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
