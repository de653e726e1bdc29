//! Cost of one Charter RS256 token signature (claims serialisation included)
//! next to one raw aws-lc-rs RSA-2048 PKCS#1 v1.5 signature with a cached key,
//! measured in the same run. Goal: raw / Charter >= 0.8.
//!
//! `cargo bench --bench signing`

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use charter_token::keys::generate_pem;
use charter_token::{Claims, DAY, KeyAlg, SigningKey};
use criterion::{Criterion, criterion_group, criterion_main};

fn claims() -> Claims {
    Claims {
        jti: "0194f1c2-7a3e-7c1d-9a4b-3c2d1e0f9a8b".into(),
        iss: "https://licenses.example.com/".into(),
        sub: "https://grafana.customer.example/".into(),
        iat: 1_800_000_000,
        nbf: 1_800_000_000,
        exp: 1_800_000_000 + 30 * DAY,
        lexp: 1_800_000_000 + 365 * DAY,
        lid: "lic_0194f1c27a3e".into(),
        limit_by: "active_users".into(),
        included_users: 100,
        update_days: 1,
        tok_exp_warn_days: 3,
        lic_exp_warn_days: 30,
        prod: vec!["grafana-enterprise".into()],
        company: "Example Corp".into(),
        slug: "example".into(),
        features: vec!["reports".into(), "rbac".into(), "saml".into()],
        ..Default::default()
    }
}

struct Setup {
    charter: SigningKey,
    raw: RsaKeyPair,
    message: Vec<u8>,
    rng: SystemRandom,
}

fn setup() -> Setup {
    let pem_text = generate_pem(KeyAlg::Rs256, 2048).expect("generate");
    let charter = SigningKey::from_pem(&pem_text).expect("parse");
    let der = pem::parse(&pem_text).expect("pem");
    let raw = RsaKeyPair::from_pkcs8(der.contents()).expect("pkcs8");
    // The same bytes Charter signs: header.payload of a real token.
    let token = charter.sign(&claims()).expect("sign");
    let message = token.rsplit_once('.').expect("dots").0.as_bytes().to_vec();
    Setup {
        charter,
        raw,
        message,
        rng: SystemRandom::new(),
    }
}

fn raw_sign(s: &Setup) -> Vec<u8> {
    let mut sig = vec![0; s.raw.public_modulus_len()];
    s.raw
        .sign(&RSA_PKCS1_SHA256, &s.rng, &s.message, &mut sig)
        .expect("raw sign");
    sig
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let claims = claims();
    let mut g = c.benchmark_group("rs256");
    g.bench_function("raw aws-lc-rs RSA-2048 signature", |b| {
        b.iter(|| black_box(raw_sign(&s)))
    });
    g.bench_function("charter token sign", |b| {
        b.iter(|| black_box(s.charter.sign(black_box(&claims)).expect("sign")))
    });
    g.finish();

    // Interleaved batches, so both see the same machine state; median of rounds.
    let mut ratios = Vec::new();
    let (mut raw_total, mut charter_total) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..40 {
            black_box(raw_sign(&s));
        }
        let raw = t.elapsed();
        let t = Instant::now();
        for _ in 0..40 {
            black_box(s.charter.sign(&claims).expect("sign"));
        }
        let charter = t.elapsed();
        raw_total += raw;
        charter_total += charter;
        ratios.push(raw.as_secs_f64() / charter.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let n = 15.0 * 40.0;
    println!(
        "\nRS256 per signature: raw aws-lc-rs {:.1} us, charter {:.1} us; raw/charter = {:.3} (goal >= 0.8)",
        raw_total.as_secs_f64() * 1e6 / n,
        charter_total.as_secs_f64() * 1e6 / n,
        ratios[ratios.len() / 2]
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
