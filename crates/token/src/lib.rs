//! `charter-token`: the license token shared by the issuer and the client.
//!
//! - [`Claims`]: every claim of DESIGN.md, with its wire name.
//! - [`Keyring`] (signs) and [`KeySet`] (public keys only: verifies, publishes
//!   the JWKS, cannot sign).
//! - [`KeySet::verify`]: verification with the algorithm bound to the `kid`.
//! - [`rules`]: the time rules and the instance URL.
//! - [`wire`]: the renew request and answer, shared by issuer and client.

pub mod claims;
pub mod keys;
pub mod rules;
pub mod verify;
pub mod wire;

pub use claims::{Claims, DAY};
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use keys::{
    KeyAlg, KeyError, KeyInfo, KeySet, Keyring, PublicKey, REVOCATIONS_TYP, SigningKey, TOKEN_TYP,
};
pub use rules::{InstanceUrl, UrlError, now, parse_subject};
pub use verify::{MAX_DOCUMENT_LEN, MAX_TOKEN_LEN, VerifyError, check_times, insecure_decode};
pub use wire::{ErrorBody, RenewRequest, TokenResponse, Usage};
