//! Verification that binds the algorithm to the key named by `kid`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::claims::Claims;
use crate::keys::{KeyAlg, KeySet, TOKEN_TYP};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Documents read by [`KeySet::verify_payload`] longer than this are refused
/// before any parsing (a revocation list grows with every revoked license).
pub const MAX_DOCUMENT_LEN: usize = 2 * 1024 * 1024;

/// Why a token was refused. Each variant is a distinct, stable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is larger than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted")]
    UnsupportedAlgorithm(String),
    #[error("token header has no kid")]
    MissingKid,
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    #[error("algorithm {alg} does not match key {kid} ({expected})")]
    AlgorithmMismatch {
        alg: String,
        kid: String,
        expected: KeyAlg,
    },
    #[error("signature does not verify")]
    BadSignature,
    /// The header's `typ` names another kind of document (a revocation list
    /// presented as a license token, or the reverse).
    #[error("document type {found:?} is not {expected:?}")]
    WrongType {
        expected: String,
        found: Option<String>,
    },
    #[error("token is not valid before {nbf}")]
    NotYetValid { nbf: i64 },
    /// The signature checks but the token has expired; the claims are
    /// returned so a caller may apply a grace period.
    #[error("token expired at {}", .0.exp)]
    Expired(Box<Claims>),
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    #[serde(default)]
    typ: Option<serde_json::Value>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Which `typ` a verifier accepts.
#[derive(Clone, Copy)]
enum TypRule<'a> {
    /// License tokens: `JWT`, or no `typ` at all (RFC 7519 makes it
    /// optional; other JWT libraries may leave it out).
    Token,
    /// Another document: exactly this `typ`, never absent.
    Exactly(&'a str),
}

impl TypRule<'_> {
    /// RFC 7515 §4.1.9: media type names compare case-insensitively and the
    /// `application/` prefix may be left out.
    fn check(self, typ: Option<&serde_json::Value>) -> Result<(), VerifyError> {
        let found = match typ {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                return Err(VerifyError::Malformed(format!(
                    "typ is not a string: {other}"
                )));
            }
        };
        let wanted = match self {
            TypRule::Token => TOKEN_TYP,
            TypRule::Exactly(t) => t,
        };
        let same = |f: &str| strip_application(f).eq_ignore_ascii_case(strip_application(wanted));
        match (self, found) {
            (TypRule::Token, None) => Ok(()),
            (_, Some(f)) if same(f) => Ok(()),
            _ => Err(VerifyError::WrongType {
                expected: wanted.to_string(),
                found: found.map(|f| f.chars().take(100).collect()),
            }),
        }
    }
}

fn strip_application(typ: &str) -> &str {
    match typ.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    }
}

impl KeySet {
    /// Verifies signature and times: `nbf <= now < exp`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, VerifyError> {
        let claims = self.verify_signature(token)?;
        check_times(claims, now)
    }

    /// Verifies the signature only, with no time checks (for `inspect`-like
    /// callers and for the renewal grace, via [`check_times`]). The header's
    /// `typ` must be `JWT` or absent: another signed document (such as the
    /// revocation list) is refused with [`VerifyError::WrongType`].
    pub fn verify_signature(&self, token: &str) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::TooLarge);
        }
        self.verify_typed(token, TypRule::Token)
    }

    /// Verifies the signature exactly as [`KeySet::verify_signature`] does
    /// (algorithm bound to the `kid`) for a document whose header `typ` is
    /// `typ` (compared as RFC 7515 says: case-insensitively, `application/`
    /// optional; an absent `typ` is refused), then reads the payload as any
    /// JSON type `T`: for other documents the issuer signs, such as the
    /// revocation list ([`crate::REVOCATIONS_TYP`]). No claim (`exp`, `nbf`)
    /// is checked. Refused with [`VerifyError::TooLarge`] above
    /// [`MAX_DOCUMENT_LEN`].
    pub fn verify_payload<T: DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
    ) -> Result<T, VerifyError> {
        self.verify_typed(token, TypRule::Exactly(typ))
    }

    fn verify_typed<T: DeserializeOwned>(
        &self,
        token: &str,
        typ: TypRule<'_>,
    ) -> Result<T, VerifyError> {
        if token.len() > MAX_DOCUMENT_LEN {
            return Err(VerifyError::TooLarge);
        }
        let (header, body_ok) = parse_header(token)?;
        let alg = header
            .alg
            .ok_or(VerifyError::UnsupportedAlgorithm(String::new()))?;
        let Some(key_alg) = KeyAlg::from_jose(&alg) else {
            return Err(VerifyError::UnsupportedAlgorithm(alg));
        };
        if header.crit.is_some() {
            return Err(VerifyError::Malformed("unsupported crit header".into()));
        }
        if !body_ok {
            return Err(VerifyError::Malformed(
                "payload or signature is not base64url".into(),
            ));
        }
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let key = self
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
        if key.alg() != key_alg {
            return Err(VerifyError::AlgorithmMismatch {
                alg,
                kid,
                expected: key.alg(),
            });
        }
        typ.check(header.typ.as_ref())?;
        let mut validation = Validation::new(key.algorithm());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        match decode::<T>(token, key.decoding(), &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::InvalidAlgorithm => VerifyError::AlgorithmMismatch {
                    alg: key_alg.to_string(),
                    kid,
                    expected: key.alg(),
                },
                _ => VerifyError::Malformed(e.to_string()),
            }),
        }
    }
}

/// Applies the time rules to claims whose signature has been checked.
pub fn check_times(claims: Claims, now: i64) -> Result<Claims, VerifyError> {
    if now < claims.nbf {
        return Err(VerifyError::NotYetValid { nbf: claims.nbf });
    }
    if now >= claims.exp {
        return Err(VerifyError::Expired(Box::new(claims)));
    }
    Ok(claims)
}

/// The header, and whether payload and signature are well-formed base64url.
fn parse_header(token: &str) -> Result<(RawHeader, bool), VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let (Some(p), Some(s)) = (token.split('.').nth(1), token.split('.').nth(2)) else {
        return Err(VerifyError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let body_ok = is_b64url(p) && is_b64url(s) && !s.is_empty();
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| VerifyError::Malformed("header is not base64url".into()))?;
    let header = serde_json::from_slice(&bytes)
        .map_err(|_| VerifyError::Malformed("header is not a JSON object".into()))?;
    Ok((header, body_ok))
}

/// Unpadded base64url: only its alphabet, and no length that cannot encode whole bytes.
fn is_b64url(s: &str) -> bool {
    s.len() % 4 != 1
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads header and claims without verifying anything (`charter token inspect`).
pub fn insecure_decode(token: &str) -> Result<(serde_json::Value, Claims), VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let decode_json = |part: &str, what: &str| -> Result<serde_json::Value, VerifyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| VerifyError::Malformed(format!("{what} is not base64url")))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| VerifyError::Malformed(format!("{what} is not JSON")))
    };
    let header = decode_json(h, "header")?;
    let claims = serde_json::from_value(decode_json(p, "payload")?)
        .map_err(|e| VerifyError::Malformed(format!("claims: {e}")))?;
    Ok((header, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Keyring, REVOCATIONS_TYP, SigningKey, generate_pem};

    fn keyring() -> Keyring {
        let pem = generate_pem(KeyAlg::EdDsa, 0).expect("Ed25519 key generation");
        Keyring::from_keys(SigningKey::from_pem(&pem).expect("key parses"), vec![])
    }

    const DOC: &str = REVOCATIONS_TYP;

    #[test]
    fn verify_payload_reads_any_signed_document_and_checks_its_signature() {
        let ring = keyring();
        let doc = serde_json::json!({"iss": "https://i.example/", "exp": 1, "revoked": ["a"]});
        let token = ring
            .signing_key()
            .sign_payload(DOC, &serde_json::to_vec(&doc).expect("serialises"))
            .expect("signs");
        let read: serde_json::Value = ring.public().verify_payload(&token, DOC).expect("verifies");
        assert_eq!(
            read, doc,
            "payload returned as signed; exp in the past is not checked"
        );

        // Another payload under the same signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"revoked":[]}"#);
        parts[1] = &forged;
        assert_eq!(
            ring.public()
                .verify_payload::<serde_json::Value>(&parts.join("."), DOC)
                .expect_err("tampered"),
            VerifyError::BadSignature
        );

        // A key the set does not hold.
        let other = keyring();
        assert!(matches!(
            ring.public().verify_payload::<serde_json::Value>(
                &other.signing_key().sign_payload(DOC, b"{}").expect("signs"),
                DOC
            ),
            Err(VerifyError::UnknownKey(_))
        ));

        // A signed payload of the wrong shape is malformed, not accepted.
        let token = ring
            .signing_key()
            .sign_payload(DOC, b"[1,2]")
            .expect("signs");
        assert!(matches!(
            ring.public()
                .verify_payload::<serde_json::Value>(&token, "other"),
            Err(VerifyError::WrongType { .. })
        ));
        assert!(matches!(
            ring.public().verify_payload::<Claims>(&token, DOC),
            Err(VerifyError::Malformed(_))
        ));
    }

    /// Finding 12: the revocation list (same key, claims all optional) must
    /// not verify as a license token, nor a license token as a list.
    #[test]
    fn each_signed_document_verifies_only_as_its_own_type() {
        let ring = keyring();
        let list = ring
            .signing_key()
            .sign_payload(DOC, br#"{"iat":1,"exp":2,"revoked":[]}"#)
            .expect("signs");
        assert_eq!(
            ring.public().verify_signature(&list).expect_err("a list"),
            VerifyError::WrongType {
                expected: "JWT".into(),
                found: Some(DOC.into())
            }
        );
        assert!(matches!(
            ring.public().verify(&list, 1),
            Err(VerifyError::WrongType { .. })
        ));

        let token = ring.sign(&Claims::default()).expect("signs");
        assert!(matches!(
            ring.public()
                .verify_payload::<serde_json::Value>(&token, DOC)
                .expect_err("a token"),
            VerifyError::WrongType { found: Some(t), .. } if t == "JWT"
        ));
        assert!(ring.public().verify_signature(&token).is_ok());

        // typ per RFC 7515: case-insensitive, `application/` optional.
        for typ in ["jwt", "application/JWT"] {
            let t = ring.signing_key().sign_payload(typ, b"{}").expect("signs");
            assert!(ring.public().verify_signature(&t).is_ok(), "{typ}");
        }
        let t = ring
            .signing_key()
            .sign_payload("APPLICATION/Charter-Revocations+JWT", b"{}")
            .expect("signs");
        assert!(
            ring.public()
                .verify_payload::<serde_json::Value>(&t, DOC)
                .is_ok()
        );
        let t = ring
            .signing_key()
            .sign_payload("JOSE", b"{}")
            .expect("signs");
        assert!(matches!(
            ring.public().verify_signature(&t),
            Err(VerifyError::WrongType { .. })
        ));
    }

    /// A license token without `typ` (other JWT libraries may leave it out)
    /// is accepted; a document without `typ` is not a revocation list.
    #[test]
    fn an_absent_typ_is_a_token_never_another_document() {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
        let pem_text = generate_pem(KeyAlg::EdDsa, 0).expect("Ed25519 key generation");
        let key = SigningKey::from_pem(&pem_text).expect("key parses");
        let kid = key.kid().to_string();
        let ring = Keyring::from_keys(key, vec![]);
        let block = pem::parse(&pem_text).expect("PEM");
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(block.contents()).expect("pkcs8");
        assert!(!pair.public_key().as_ref().is_empty());
        // A JWS with exactly this header, signed by the trusted key.
        let signed = |header: serde_json::Value| {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(br#"{"lid":"x","revoked":[]}"#)
            );
            let sig = pair.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        };

        let token = signed(serde_json::json!({"alg": "EdDSA", "kid": kid}));
        let claims = ring
            .public()
            .verify_signature(&token)
            .expect("no typ: a token");
        assert_eq!(claims.lid, "x");
        assert!(matches!(
            ring.public()
                .verify_payload::<serde_json::Value>(&token, DOC),
            Err(VerifyError::WrongType { found: None, .. })
        ));
        // typ of the wrong JSON type.
        let token = signed(serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": 1}));
        assert!(matches!(
            ring.public().verify_signature(&token),
            Err(VerifyError::Malformed(_))
        ));
    }
}
