//! Claims round trip and every rejection of the verifier, each asserting the
//! specific error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use charter_token::keys::generate_pem;
use charter_token::rules::{self, InstanceUrl, subject_matches};
use charter_token::{Claims, DAY, KeyAlg, KeySet, Keyring, SigningKey, VerifyError, check_times};
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000;

fn rsa_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| generate_pem(KeyAlg::Rs256, 2048).unwrap())
}

fn other_rsa_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| generate_pem(KeyAlg::Rs256, 2048).unwrap())
}

fn ed_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| generate_pem(KeyAlg::EdDsa, 0).unwrap())
}

fn rsa() -> SigningKey {
    SigningKey::from_pem(rsa_pem()).unwrap()
}

fn ed() -> SigningKey {
    SigningKey::from_pem(ed_pem()).unwrap()
}

/// A key set holding the RSA key, the Ed25519 key and a second RSA key.
fn keyset() -> KeySet {
    let other = SigningKey::from_pem(other_rsa_pem()).unwrap();
    Keyring::from_keys(rsa(), vec![ed().public().clone(), other.public().clone()])
        .public()
        .clone()
}

fn claims() -> Claims {
    Claims {
        jti: "j-1".into(),
        iss: "https://issuer.example/".into(),
        sub: "https://grafana.example.com/".into(),
        iat: NOW - 100,
        nbf: NOW - 100,
        exp: NOW + 30 * DAY,
        lexp: NOW + 365 * DAY,
        lid: "lic-1".into(),
        included_users: 10,
        update_days: 1,
        features: vec!["reports".into()],
        limits: BTreeMap::from([("shards_limit".into(), 4)]),
        flags: BTreeMap::from([("package".into(), "premium".into())]),
        ..Default::default()
    }
}

fn b64(s: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn payload(c: &Claims) -> String {
    b64(&serde_json::to_vec(c).unwrap())
}

#[test]
fn claims_serialise_with_exactly_the_design_names() {
    let value = serde_json::to_value(Claims::default()).unwrap();
    let mut names: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    let mut expected = vec![
        "jti",
        "iss",
        "sub",
        "iat",
        "nbf",
        "exp",
        "lexp",
        "lid",
        "limit_by",
        "included_users",
        "included_admins",
        "included_viewers",
        "lic_exp_warn_days",
        "tok_exp_warn_days",
        "update_days",
        "prod",
        "company",
        "account",
        "slug",
        "usage_billing",
        "trial",
        "trial_exp",
        "max_concurrent_user_sessions",
        "details_url",
        "anonymousRatio",
        "features",
        "limits",
        "flags",
    ];
    expected.sort_unstable();
    assert_eq!(names, expected);
    // Zero values where unset.
    assert_eq!(value["anonymousRatio"], 0);
    assert_eq!(value["prod"], serde_json::json!([]));
    assert_eq!(value["trial"], false);
}

#[test]
fn unknown_claims_are_ignored_and_missing_ones_read_as_zero() {
    let c: Claims =
        serde_json::from_str(r#"{"lid":"x","future_claim":{"a":1},"aud":"someone"}"#).unwrap();
    assert_eq!(c.lid, "x");
    assert_eq!(c.exp, 0);
    assert!(c.features.is_empty());
}

#[test]
fn signs_and_verifies_rs256_and_eddsa() {
    let set = keyset();
    for key in [rsa(), ed()] {
        let token = key.sign(&claims()).unwrap();
        assert_eq!(set.verify(&token, NOW).unwrap(), claims(), "{}", key.alg());
    }
}

#[test]
fn rejects_alg_none() {
    let kid = rsa().kid().to_string();
    let header = b64(format!(r#"{{"alg":"none","kid":"{kid}"}}"#).as_bytes());
    let token = format!("{header}.{}.", payload(&claims()));
    assert_eq!(
        keyset().verify(&token, NOW),
        Err(VerifyError::UnsupportedAlgorithm("none".into()))
    );
}

#[test]
fn rejects_hs256_signed_with_the_public_key_as_secret() {
    let key = rsa();
    let public_pem = serde_json::to_vec(key.public().jwk()).unwrap();
    let header = b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, key.kid()).as_bytes());
    let msg = format!("{header}.{}", payload(&claims()));
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &public_pem),
        msg.as_bytes(),
    );
    let token = format!("{msg}.{}", b64(tag.as_ref()));
    assert_eq!(
        keyset().verify(&token, NOW),
        Err(VerifyError::UnsupportedAlgorithm("HS256".into()))
    );
}

#[test]
fn rejects_unknown_kid() {
    let header = b64(br#"{"alg":"RS256","kid":"../../etc/passwd"}"#);
    let token = format!("{header}.{}.c2ln", payload(&claims()));
    assert_eq!(
        keyset().verify(&token, NOW),
        Err(VerifyError::UnknownKey("../../etc/passwd".into()))
    );
    let only_ed = Keyring::from_keys(ed(), vec![]).public().clone();
    let token = rsa().sign(&claims()).unwrap();
    assert_eq!(
        only_ed.verify(&token, NOW),
        Err(VerifyError::UnknownKey(rsa().kid().into()))
    );
}

#[test]
fn rejects_a_kid_whose_key_did_not_sign() {
    let other = SigningKey::from_pem(other_rsa_pem()).unwrap();
    let token = rsa().sign(&claims()).unwrap();
    // Swap the header for one naming the other RSA key.
    let header =
        b64(format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#, other.kid()).as_bytes());
    let rest = token.split_once('.').unwrap().1;
    let forged = format!("{header}.{rest}");
    assert_eq!(
        keyset().verify(&forged, NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn rejects_an_algorithm_other_than_the_kids() {
    // An EdDSA signature presented under the RSA key's kid.
    let token = ed().sign(&claims()).unwrap();
    let header = b64(format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, rsa().kid()).as_bytes());
    let rest = token.split_once('.').unwrap().1;
    let forged = format!("{header}.{rest}");
    assert!(matches!(
        keyset().verify(&forged, NOW),
        Err(VerifyError::AlgorithmMismatch {
            expected: KeyAlg::Rs256,
            ..
        })
    ));
}

#[test]
fn rejects_a_changed_payload() {
    let token = rsa().sign(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut changed = claims();
    changed.included_users = 10_000;
    let forged = format!("{}.{}.{}", parts[0], payload(&changed), parts[2]);
    assert_eq!(
        keyset().verify(&forged, NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn rejects_bad_base64_and_wrong_shapes() {
    let set = keyset();
    let token = rsa().sign(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        format!("{}.{}.{}", parts[0], "%%%notbase64%%%", parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], "!!"),
        format!("***.{}.{}", parts[1], parts[2]),
        "only.two".to_string(),
        format!("{token}.extra"),
        String::new(),
    ] {
        assert!(
            matches!(set.verify(&bad, NOW), Err(VerifyError::Malformed(_))),
            "{bad:?} gave {:?}",
            set.verify(&bad, NOW)
        );
    }
}

#[test]
fn rejects_an_oversized_token() {
    let mut c = claims();
    c.details_url = "x".repeat(17 * 1024);
    let token = rsa().sign(&c).unwrap();
    assert_eq!(keyset().verify(&token, NOW), Err(VerifyError::TooLarge));
}

#[test]
fn rejects_nbf_in_the_future() {
    let mut c = claims();
    c.nbf = NOW + 60;
    let token = rsa().sign(&c).unwrap();
    assert_eq!(
        keyset().verify(&token, NOW),
        Err(VerifyError::NotYetValid { nbf: NOW + 60 })
    );
}

#[test]
fn expired_tokens_report_their_claims_for_the_grace_window() {
    let mut c = claims();
    c.exp = NOW - 1;
    let token = rsa().sign(&c).unwrap();
    let set = keyset();
    assert_eq!(
        set.verify(&token, NOW),
        Err(VerifyError::Expired(Box::new(c.clone())))
    );
    // The signature alone is fine, and the time check is separate.
    let checked = set.verify_signature(&token).unwrap();
    assert_eq!(check_times(checked.clone(), NOW - 10), Ok(checked));
}

#[test]
fn time_rules() {
    let c = claims();
    assert!(rules::is_valid_at(&c, NOW));
    assert!(!rules::is_valid_at(&c, c.exp));
    assert!(!rules::is_due_for_renewal(&c, c.iat + DAY - 1));
    assert!(rules::is_due_for_renewal(&c, c.iat + DAY));
    let mut w = c.clone();
    w.tok_exp_warn_days = 3;
    w.lic_exp_warn_days = 30;
    assert!(!rules::token_warning(&w, w.exp - 3 * DAY - 1));
    assert!(rules::token_warning(&w, w.exp - 3 * DAY));
    assert!(!rules::license_warning(&w, w.lexp - 30 * DAY - 1));
    assert!(rules::license_warning(&w, w.lexp - 30 * DAY));
}

#[test]
fn instance_urls_and_subject_globs() {
    let u = InstanceUrl::parse("HTTPS://Grafana.Example.com").unwrap();
    assert_eq!(u.as_str(), "https://grafana.example.com/");
    assert_eq!(
        InstanceUrl::parse("http://h:80/g").unwrap().as_str(),
        "http://h/g/"
    );
    assert!(InstanceUrl::parse("ftp://h/").is_err());
    assert!(InstanceUrl::parse("javascript:alert(1)").is_err());
    assert!(InstanceUrl::parse("https://user:pw@h/").is_err());
    assert!(InstanceUrl::parse("https://h/?q=1").is_err());
    assert!(subject_matches("https://*.example.com/", &u));
    assert!(subject_matches("https://grafana.example.com/", &u));
    assert!(!subject_matches("https://*.example.org/", &u));
    let deep = InstanceUrl::parse("https://a.example.com/evil/").unwrap();
    assert!(!subject_matches("https://*.example.com/", &deep));
}

fn url(s: &str) -> InstanceUrl {
    InstanceUrl::parse(s).unwrap()
}

/// Finding 10: only whole `*` labels are wildcards, each one DNS label; IP
/// literals and other glob syntax are literal.
#[test]
fn a_wildcard_label_matches_exactly_one_label() {
    let pattern = "https://*.example.com/";
    assert!(subject_matches(pattern, &url("https://a.example.com/")));
    assert!(subject_matches(pattern, &url("https://A.Example.COM")));
    assert!(subject_matches(
        "HTTPS://*.Example.com",
        &url("https://a.example.com/")
    ));
    // `*` never crosses a dot, nor stands for nothing.
    assert!(!subject_matches(pattern, &url("https://a.b.example.com/")));
    assert!(!subject_matches(pattern, &url("https://example.com/")));
    assert!(!subject_matches(
        pattern,
        &url("https://a.example.com.evil.org/")
    ));
    assert!(!subject_matches(pattern, &url("https://aexample.com/")));
    // Scheme, port and path are fixed.
    assert!(!subject_matches(pattern, &url("http://a.example.com/")));
    assert!(!subject_matches(
        pattern,
        &url("https://a.example.com:8443/")
    ));
    assert!(!subject_matches(pattern, &url("https://a.example.com/x/")));
    assert!(subject_matches(
        "https://*.example.com:8443/grafana/",
        &url("https://a.example.com:8443/grafana/")
    ));
    // Labels in the middle, several of them.
    assert!(subject_matches(
        "https://grafana.*.example.com/",
        &url("https://grafana.eu.example.com/")
    ));
    assert!(subject_matches(
        "https://*.*.example.com/",
        &url("https://a.b.example.com/")
    ));
    assert!(!subject_matches(
        "https://*.*.example.com/",
        &url("https://a.example.com/")
    ));

    // IP literals are never globs (`[...]` was a character class).
    let v6 = "https://[2001:db8::1]/";
    assert!(subject_matches(v6, &url(v6)));
    for other in [
        "https://2/",
        "https://[2001:db8::2]/",
        "https://a.example.com/",
        "https://[::1]/",
    ] {
        assert!(!subject_matches(v6, &url(other)), "{other}");
    }
    assert!(!subject_matches(
        "https://10.0.0.1/",
        &url("https://10.0.0.2/")
    ));
    // Other glob syntax is not a wildcard.
    for sub in [
        "https://?.example.com/",
        "https://{a,b}.example.com/",
        "https://a*.example.com/",
        "https://**/",
        "https://*/",
        "https://**.example.com/",
        "https://*.com/",
    ] {
        assert!(
            !subject_matches(sub, &url("https://a.example.com/")),
            "{sub}"
        );
        assert!(
            !subject_matches(sub, &url("https://b.example.com/")),
            "{sub}"
        );
    }
}

/// Finding 10: the issuer's check for a subject before binding or signing.
#[test]
fn parse_subject_refuses_patterns_that_match_too_much() {
    for ok in [
        "https://*.example.com/",
        "https://*.*.example.com/",
        "https://grafana.*.example.com:3000/g/",
        "https://grafana.example.com/",
        "https://[2001:db8::1]/",
        "http://127.0.0.1:8081/",
    ] {
        let u = charter_token::parse_subject(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(u.is_pattern(), ok.contains('*'), "{ok}");
    }
    for bad in [
        "https://*/",
        "https://**/",
        "https://**.example.com/",
        "https://a*.example.com/",
        "https://*a.example.com/",
        "https://*.com/",
        "https://example.*/",
        "https://example.*.com.*/",
        "https://*.example.*/",
        "https://*.0.0.1/",
        "https://10.0.0.*/",
        "https://*.example.com./",
        "https://*..example.com/",
    ] {
        let err = charter_token::parse_subject(bad).expect_err(bad);
        assert!(
            matches!(
                err,
                rules::UrlError::Pattern(_) | rules::UrlError::Invalid(_)
            ),
            "{bad}: {err:?}"
        );
        // InstanceUrl::parse, which the issuer already calls, refuses them too.
        assert!(InstanceUrl::parse(bad).is_err(), "{bad}");
    }
    // An instance's own root URL is never a pattern.
    assert_eq!(
        InstanceUrl::parse_instance("https://*.example.com/"),
        Err(rules::UrlError::IsPattern)
    );
    assert!(InstanceUrl::parse_instance("https://a.example.com/").is_ok());
}

fn arb_string() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

prop_compose! {
    fn arb_claims()(
        jti in arb_string(), sub in arb_string(), lid in arb_string(), company in arb_string(),
        iat in 0i64..4_000_000_000, ttl in 1i64..10_000_000, users in any::<i64>(),
        ratio in any::<i64>(), trial in any::<bool>(),
        features in proptest::collection::vec(arb_string(), 0..4),
        limits in proptest::collection::btree_map(arb_string(), any::<i64>(), 0..4),
        flags in proptest::collection::btree_map(arb_string(), arb_string(), 0..4),
    ) -> Claims {
        Claims {
            jti, sub, lid, company, iat, nbf: iat, exp: iat + ttl, lexp: iat + ttl,
            included_users: users, anonymous_ratio: ratio, trial, features, limits, flags,
            ..Default::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn claims_round_trip_through_json(c in arb_claims()) {
        let json = serde_json::to_string(&c).unwrap();
        prop_assert_eq!(serde_json::from_str::<Claims>(&json).unwrap(), c);
    }

    #[test]
    fn claims_round_trip_through_signing(c in arb_claims(), use_ed in any::<bool>()) {
        let key = if use_ed { ed() } else { rsa() };
        let token = key.sign(&c).unwrap();
        let got = keyset().verify_signature(&token).unwrap();
        prop_assert_eq!(got, c);
    }

    #[test]
    fn any_single_byte_change_is_refused(pos in 0usize..10_000, byte in any::<u8>()) {
        let token = rsa().sign(&claims()).unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = pos % bytes.len();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let changed = String::from_utf8_lossy(&bytes).into_owned();
        prop_assume!(changed != token);
        prop_assert!(keyset().verify(&changed, NOW).is_err());
    }
}
