//! Key generation uses aws-lc-rs; the `rsa` crate, whose private-key
//! operations are not constant-time (RUSTSEC-2023-0071), only parses keys.

use std::path::Path;

use charter_token::keys::{KeyError, SigningKey, generate_pem};
use charter_token::{KeyAlg, Keyring};

/// Generated RSA keys are PKCS#8 PEM (LF line endings) of the size asked
/// for, parse, sign and verify; other sizes are refused.
#[test]
fn rsa_keys_generate_parse_sign_and_verify() {
    for bits in [2048usize, 3072] {
        let pem_text = generate_pem(KeyAlg::Rs256, bits).expect("generates");
        assert!(
            pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{bits}"
        );
        assert!(!pem_text.contains('\r'), "LF line endings");
        let block = pem::parse(&pem_text).expect("PEM");
        assert_eq!(block.tag(), "PRIVATE KEY");
        let key = SigningKey::from_pem(&pem_text).expect("parses");
        assert_eq!(key.alg(), KeyAlg::Rs256);
        // The JWK modulus is the key size.
        let jwks = Keyring::from_keys(key, vec![]).jwks();
        let jwks = serde_json::to_value(&jwks).expect("json");
        let n = jwks["keys"][0]["n"].as_str().expect("n");
        use base64::Engine;
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(n)
            .expect("base64url");
        assert_eq!(n.len() * 8, bits);
        assert_eq!(jwks["keys"][0]["e"], "AQAB");
    }
    for bits in [1024usize, 2047, 8192] {
        assert!(
            matches!(generate_pem(KeyAlg::Rs256, bits), Err(KeyError::BadBits(b)) if b == bits),
            "{bits}"
        );
    }
}

/// A key generated into a directory signs tokens that its JWKS verifies.
#[test]
fn generated_directory_signs_and_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    let info = charter_token::keys::generate(dir.path(), KeyAlg::Rs256, 2048, true).expect("key");
    assert!(info.signing);
    let ring = Keyring::load(dir.path()).expect("loads");
    let claims: charter_token::Claims = serde_json::from_value(serde_json::json!({
        "jti": "j", "iss": "https://issuer.test/", "sub": "https://a.example/",
        "iat": 1, "nbf": 1, "exp": 4_102_444_800i64, "lexp": 4_102_444_800i64, "lid": "l"
    }))
    .expect("claims");
    let token = ring.sign(&claims).expect("signs");
    let verified = ring.public().verify_signature(&token).expect("verifies");
    assert_eq!(verified.jti, "j");
}

/// Rust sources under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Nothing generates keys or draws randomness with the `rsa` crate.
#[test]
fn the_rsa_crate_does_not_generate_keys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "crates/token/src", "crates/client/src"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for banned in [
            "RsaPrivateKey::new",
            "RsaPrivateKey::new_with_exp",
            "rsa::rand_core",
            "EncodePrivateKey::to_pkcs8_pem",
            "to_pkcs8_pem",
        ] {
            assert!(
                !text.contains(banned),
                "{} uses `{banned}`: generate keys with aws-lc-rs",
                file.display()
            );
        }
    }
}
