//! Token parsing and verification: any string is refused or verified, never
//! a panic; a refusal never comes with claims.
#![no_main]

use std::sync::OnceLock;

use charter_token::{KeyAlg, KeySet, SigningKey, keys::generate_pem};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut set = KeySet::default();
        let pem = generate_pem(KeyAlg::EdDsa, 0).expect("Ed25519 key");
        set.insert(SigningKey::from_pem(&pem).expect("parses").public().clone());
        set
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = keys().verify_signature(token);
    let _ = keys().verify(token, 1_800_000_000);
    let _ = charter_token::insecure_decode(token);
});
