//! Signing keys on disk, the keyring that signs with one of them, and the
//! public key set that verifies and is published as a JWKS.
//!
//! Layout of a keys directory (see `keys/README.md`):
//! - `<kid>.pem`: one private key per file (PKCS#8 PEM, mode 0600), RSA or Ed25519;
//!   `kid` is the RFC 7638 thumbprint of the public key.
//! - `signing`: the `kid` of the key that signs new tokens.
//! - `retired/`: keys that no longer verify nor are published.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, RSAKeyParameters, RSAKeyType,
    ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;

use crate::claims::Claims;

/// The JOSE `typ` of license tokens (the ecosystem's default).
pub const TOKEN_TYP: &str = "JWT";
/// The JOSE `typ` of the issuer's signed revocation list: a document of
/// another kind, so that it can never pass for a license token (nor a token
/// for a list).
pub const REVOCATIONS_TYP: &str = "charter-revocations+jwt";

/// Name of the file that holds the signing key's `kid`.
pub const SIGNING_FILE: &str = "signing";
/// Folder of retired keys, which neither sign nor verify.
pub const RETIRED_DIR: &str = "retired";

/// The signature algorithms Charter signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (the default).
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl KeyAlg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::Rs256 => "RS256",
            KeyAlg::EdDsa => "EdDSA",
        }
    }

    /// Parses a JOSE `alg` name; only the two algorithms Charter uses.
    pub fn from_jose(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(KeyAlg::Rs256),
            "EdDSA" => Some(KeyAlg::EdDsa),
            _ => None,
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            KeyAlg::Rs256 => Algorithm::RS256,
            KeyAlg::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors reading, writing or generating keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("no keys in {0}; create one with `charter keys generate`")]
    NoKeys(PathBuf),
    #[error("signing key {kid} named in {path} is not among the keys")]
    SigningKeyMissing { kid: String, path: PathBuf },
    #[error("{0} keys but no `signing` file says which one signs")]
    NoSigningKey(usize),
    #[error("RSA key size must be 2048, 3072 or 4096 bits, not {0}")]
    BadBits(usize),
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("unknown key {0}")]
    UnknownKid(String),
    #[error("signing failed")]
    Sign,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The public half of a key: what verifies tokens and what JWKS publishes.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    alg: KeyAlg,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl PublicKey {
    fn rsa(n: &[u8], e: &[u8]) -> Result<Self, String> {
        let params = AlgorithmParameters::RSA(RSAKeyParameters {
            key_type: RSAKeyType::RSA,
            n: URL_SAFE_NO_PAD.encode(n),
            e: URL_SAFE_NO_PAD.encode(e),
        });
        Self::from_params(
            KeyAlg::Rs256,
            params,
            DecodingKey::from_rsa_raw_components(n, e),
        )
    }

    fn ed25519(x: &[u8]) -> Result<Self, String> {
        let params = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(x),
        });
        Self::from_params(KeyAlg::EdDsa, params, DecodingKey::from_ed_der(x))
    }

    fn from_params(
        alg: KeyAlg,
        algorithm: AlgorithmParameters,
        decoding: DecodingKey,
    ) -> Result<Self, String> {
        let mut jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(match alg {
                    KeyAlg::Rs256 => KeyAlgorithm::RS256,
                    KeyAlg::EdDsa => KeyAlgorithm::EdDSA,
                }),
                ..Default::default()
            },
            algorithm,
        };
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| e.to_string())?;
        jwk.common.key_id = Some(kid.clone());
        Ok(PublicKey {
            kid,
            alg,
            decoding,
            jwk,
        })
    }

    /// Builds a verifying key from a published JWK; `None` for a key Charter
    /// does not use (other algorithms, encryption keys, no `kid`).
    pub fn from_jwk(jwk: &Jwk) -> Option<Self> {
        let kid = jwk.common.key_id.clone()?;
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => KeyAlg::Rs256,
            (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
                if p.curve == EllipticCurve::Ed25519 =>
            {
                KeyAlg::EdDsa
            }
            _ => return None,
        };
        let decoding = DecodingKey::from_jwk(jwk).ok()?;
        Some(PublicKey {
            kid,
            alg,
            decoding,
            jwk: jwk.clone(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.alg.jwt()
    }
}

enum Signer {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key, parsed once and kept ready to sign.
pub struct SigningKey {
    public: PublicKey,
    signer: Signer,
    /// The base64url JOSE header of license tokens (`typ` [`TOKEN_TYP`]), computed once.
    header_b64: String,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .field("alg", &self.public.alg)
            .field("private", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// Parses a PEM private key: PKCS#8 (RSA or Ed25519) or PKCS#1 RSA.
    pub fn from_pem(pem_text: &str) -> Result<Self, String> {
        let block = pem::parse(pem_text).map_err(|e| e.to_string())?;
        match block.tag() {
            "PRIVATE KEY" => {
                if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(block.contents()) {
                    let public = PublicKey::ed25519(kp.public_key().as_ref())?;
                    return Ok(Self::new(public, Signer::Ed25519(kp)));
                }
                let key = rsa::RsaPrivateKey::from_pkcs8_der(block.contents())
                    .map_err(|e| format!("neither Ed25519 nor RSA PKCS#8: {e}"))?;
                Self::rsa(&key, block.contents())
            }
            "RSA PRIVATE KEY" => {
                let key = rsa::RsaPrivateKey::from_pkcs1_der(block.contents())
                    .map_err(|e| e.to_string())?;
                let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
                Self::rsa(&key, der.as_bytes())
            }
            other => Err(format!("PEM block {other:?} is not a private key")),
        }
    }

    fn rsa(key: &rsa::RsaPrivateKey, pkcs8: &[u8]) -> Result<Self, String> {
        let bits = key.n().bits();
        if bits < 2048 {
            return Err(format!(
                "RSA key of {bits} bits; at least 2048 are required"
            ));
        }
        let public = PublicKey::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be())?;
        let kp = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| e.to_string())?;
        Ok(Self::new(public, Signer::Rsa(kp)))
    }

    fn new(public: PublicKey, signer: Signer) -> Self {
        let header_b64 = header_b64(&public, TOKEN_TYP);
        SigningKey {
            public,
            signer,
            header_b64,
            rng: SystemRandom::new(),
        }
    }

    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    pub fn alg(&self) -> KeyAlg {
        self.public.alg
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs the claims into a compact JWS (`typ` [`TOKEN_TYP`]). The key is
    /// parsed already; this costs one JSON serialisation and one signature.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Sign)?;
        self.sign_payload(TOKEN_TYP, &payload)
    }

    /// Signs an already serialised payload as a document of type `typ`
    /// (the JOSE header's `typ`): [`TOKEN_TYP`] for license tokens (tests use
    /// it to produce tokens with odd payloads), [`REVOCATIONS_TYP`] for the
    /// revocation list. Verifiers check the `typ`, so a document signed as
    /// one kind is refused as the other.
    pub fn sign_payload(&self, typ: &str, payload: &[u8]) -> Result<String, KeyError> {
        let other;
        let header = if typ == TOKEN_TYP {
            self.header_b64.as_str()
        } else {
            other = header_b64(&self.public, typ);
            other.as_str()
        };
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 400);
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = match &self.signer {
            Signer::Rsa(kp) => {
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &self.rng, token.as_bytes(), &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                sig
            }
            Signer::Ed25519(kp) => kp.sign(token.as_bytes()).as_ref().to_vec(),
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

/// The base64url JOSE header for `typ` signed with `key`.
fn header_b64(key: &PublicKey, typ: &str) -> String {
    let header = serde_json::json!({"alg": key.alg.as_str(), "typ": typ, "kid": key.kid});
    URL_SAFE_NO_PAD.encode(header.to_string())
}

/// A set of public keys by `kid`. It can verify and publish, never sign.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, PublicKey>,
}

impl KeySet {
    /// The keys of a JWKS that Charter can use; others are skipped.
    pub fn from_jwks(jwks: &JwkSet) -> Self {
        let mut set = KeySet::default();
        for jwk in &jwks.keys {
            if let Some(key) = PublicKey::from_jwk(jwk) {
                set.insert(key);
            }
        }
        set
    }

    /// Parses a JWKS document.
    pub fn from_jwks_json(json: &str) -> Result<Self, serde_json::Error> {
        Ok(Self::from_jwks(&serde_json::from_str(json)?))
    }

    pub fn insert(&mut self, key: PublicKey) {
        self.keys.insert(key.kid.clone(), key);
    }

    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The public halves as an RFC 7517 JWK set, sorted by `kid` for stable output.
    pub fn jwks(&self) -> JwkSet {
        let mut keys: Vec<&PublicKey> = self.keys.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        JwkSet {
            keys: keys.into_iter().map(|k| k.jwk.clone()).collect(),
        }
    }
}

/// The issuer's keys: one that signs and every non-retired one that verifies.
#[derive(Debug, Clone)]
pub struct Keyring {
    signing: Arc<SigningKey>,
    public: KeySet,
}

/// One key file, as `charter keys list` shows it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: KeyAlg,
    pub signing: bool,
    pub path: PathBuf,
}

impl Keyring {
    /// Loads every `*.pem` in `dir` (not `retired/`) and the signing key
    /// named by `dir/signing`, or the only key when there is one.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let loaded = load_dir(dir)?;
        if loaded.is_empty() {
            return Err(KeyError::NoKeys(dir.to_path_buf()));
        }
        let signing_path = dir.join(SIGNING_FILE);
        let signing_kid = match fs::read_to_string(&signing_path) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if loaded.len() == 1 {
                    loaded[0].1.kid().to_string()
                } else {
                    return Err(KeyError::NoSigningKey(loaded.len()));
                }
            }
            Err(e) => return Err(io_err(&signing_path)(e)),
        };
        let mut public = KeySet::default();
        let mut signing = None;
        for (_, key) in loaded {
            public.insert(key.public.clone());
            if key.kid() == signing_kid {
                signing = Some(key);
            }
        }
        let signing = signing.ok_or(KeyError::SigningKeyMissing {
            kid: signing_kid,
            path: signing_path,
        })?;
        Ok(Keyring {
            signing: Arc::new(signing),
            public,
        })
    }

    /// Builds a keyring from keys in memory (tests, embedding).
    pub fn from_keys(signing: SigningKey, others: Vec<PublicKey>) -> Self {
        let mut public = KeySet::default();
        public.insert(signing.public.clone());
        for key in others {
            public.insert(key);
        }
        Keyring {
            signing: Arc::new(signing),
            public,
        }
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The verifying keys; they cannot sign.
    pub fn public(&self) -> &KeySet {
        &self.public
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        self.signing.sign(claims)
    }

    pub fn jwks(&self) -> JwkSet {
        self.public.jwks()
    }
}

fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, SigningKey)>, KeyError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") || !path.is_file() {
            continue;
        }
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let key = SigningKey::from_pem(&text).map_err(|reason| KeyError::BadKey {
            path: path.clone(),
            reason,
        })?;
        keys.push((path, key));
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keys)
}

/// Lists the keys in `dir` and which one signs.
pub fn list(dir: &Path) -> Result<Vec<KeyInfo>, KeyError> {
    let signing = fs::read_to_string(dir.join(SIGNING_FILE))
        .map(|s| s.trim().to_string())
        .ok();
    let loaded = load_dir(dir)?;
    let only = loaded.len() == 1;
    Ok(loaded
        .into_iter()
        .map(|(path, key)| KeyInfo {
            kid: key.kid().to_string(),
            alg: key.alg(),
            signing: signing.as_deref() == Some(key.kid()) || (signing.is_none() && only),
            path,
        })
        .collect())
}

/// Generates a private key as PKCS#8 PEM, with aws-lc-rs. (The `rsa` crate
/// only parses keys: its private-key operations are not constant-time,
/// RUSTSEC-2023-0071.)
pub fn generate_pem(alg: KeyAlg, bits: usize) -> Result<String, KeyError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    match alg {
        KeyAlg::Rs256 => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                _ => return Err(KeyError::BadBits(bits)),
            };
            let key = RsaKeyPair::generate(size)
                .map_err(|_| KeyError::Generate(format!("RSA {bits}")))?;
            let der = key
                .as_der()
                .map_err(|_| KeyError::Generate(format!("RSA {bits}: PKCS#8 export")))?;
            let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
            Ok(pem::encode_config(
                &pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()),
                lf,
            ))
        }
        KeyAlg::EdDsa => {
            let doc = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
                .map_err(|_| KeyError::Generate("Ed25519".into()))?;
            Ok(pem::encode(&pem::Pem::new(
                "PRIVATE KEY",
                doc.as_ref().to_vec(),
            )))
        }
    }
}

/// Generates a key into `dir` as `<kid>.pem` (mode 0600). It becomes the
/// signing key when `make_signing` is set or when no key signs yet.
pub fn generate(
    dir: &Path,
    alg: KeyAlg,
    bits: usize,
    make_signing: bool,
) -> Result<KeyInfo, KeyError> {
    let pem_text = generate_pem(alg, bits)?;
    let key = SigningKey::from_pem(&pem_text).map_err(KeyError::Generate)?;
    create_private_dir(dir)?;
    let path = dir.join(format!("{}.pem", key.kid()));
    write_private(&path, pem_text.as_bytes())?;
    let signing_path = dir.join(SIGNING_FILE);
    let signing = make_signing || !signing_path.exists();
    if signing {
        write_atomic(&signing_path, format!("{}\n", key.kid()).as_bytes())?;
    }
    Ok(KeyInfo {
        kid: key.kid().to_string(),
        alg,
        signing,
        path,
    })
}

/// Moves a key to `retired/`: it stops verifying and is no longer published.
/// The signing key cannot be retired.
pub fn retire(dir: &Path, kid: &str) -> Result<(), KeyError> {
    let keys = list(dir)?;
    let info = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| KeyError::UnknownKid(kid.to_string()))?;
    if info.signing {
        return Err(KeyError::BadKey {
            path: info.path.clone(),
            reason: "it is the signing key; rotate first".into(),
        });
    }
    let retired = dir.join(RETIRED_DIR);
    create_private_dir(&retired)?;
    let to = retired.join(format!("{kid}.pem"));
    fs::rename(&info.path, &to).map_err(io_err(&info.path))
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_private(&tmp, data)?;
    fs::rename(&tmp, path).map_err(io_err(path))
}
