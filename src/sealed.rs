//! Secrets at rest, sealed under one master key: AES-256-GCM with a key
//! that never enters the database (a file: `master.key` in the keys
//! directory, or `--master-key-file`, e.g. a Kubernetes Secret; 32 raw bytes
//! or their base64). It seals the issuer's signing keys (associated data:
//! the kid) and instances' push credentials (associated data: the instance
//! id and URL, so that a blob copied to another instance's row does not open
//! there). A sealed value is `v2:` + base64(nonce || ciphertext+tag).
//! Credentials sealed before associated data existed (`v1:`) still open,
//! and are sealed anew when they change.
//!
//! The file was called `credentials.key` before it sealed signing keys;
//! a keys directory that has one and no `master.key` keeps using it.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The master key's file in the keys directory.
pub const KEY_FILE: &str = "master.key";
/// Its name before it sealed signing keys, still read.
pub const LEGACY_KEY_FILE: &str = "credentials.key";

/// The master key file of a keys directory when none is configured:
/// `master.key`, or `credentials.key` when only that one exists.
pub fn default_path(keys_dir: &Path) -> PathBuf {
    let master = keys_dir.join(KEY_FILE);
    let legacy = keys_dir.join(LEGACY_KEY_FILE);
    if !master.exists() && legacy.exists() {
        legacy
    } else {
        master
    }
}

/// How the issuer authenticates to an instance when it pushes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Credentials {
    /// HTTP Basic.
    Basic { username: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, [redacted])"),
            Credentials::Bearer { .. } => f.write_str("Bearer([redacted])"),
        }
    }
}

pub struct Sealer {
    key: LessSafeKey,
}

/// Why the master key cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key {0} not found")]
    Missing(PathBuf),
    #[error("master key {path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

impl Sealer {
    /// Reads the master key at `path`: 32 bytes, or their base64 (as a
    /// Kubernetes Secret made with `openssl rand -base64 32` holds it).
    pub fn load(path: &Path) -> Result<Sealer, MasterKeyError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MasterKeyError::Missing(path.to_path_buf()));
            }
            Err(e) => {
                return Err(MasterKeyError::Unusable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        let raw = if bytes.len() == 32 {
            bytes
        } else {
            let text = String::from_utf8_lossy(&bytes);
            STANDARD
                .decode(text.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| MasterKeyError::Unusable {
                    path: path.to_path_buf(),
                    reason: format!(
                        "must hold 32 bytes or their base64, not {} bytes",
                        bytes.len()
                    ),
                })?
        };
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| MasterKeyError::Unusable {
            path: path.to_path_buf(),
            reason: "not an AES-256 key".into(),
        })?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// Creates a master key at `path` (mode 0600; never over an existing
    /// file) and loads it.
    pub fn create(path: &Path) -> Result<Sealer, MasterKeyError> {
        let unusable = |reason: String| MasterKeyError::Unusable {
            path: path.to_path_buf(),
            reason,
        };
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| unusable("no randomness".into()))?;
        write_private(path, &key).map_err(|e| unusable(format!("cannot create it: {e}")))?;
        Self::load(path)
    }

    /// Seals `plain` with the associated data `aad`.
    pub fn seal_bytes(&self, plain: &[u8], aad: &[u8]) -> anyhow::Result<String> {
        let mut data = plain.to_vec();
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow::anyhow!("no randomness"))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("v2:{}", STANDARD.encode(out)))
    }

    /// Opens a value sealed with `aad` (`v2:`); `legacy_aad` is the
    /// associated data of `v1:` values, where they exist.
    fn open_bytes(&self, sealed: &str, aad: &[u8], legacy_aad: Option<&[u8]>) -> Option<Vec<u8>> {
        let (raw, aad) = match sealed.split_once(':') {
            Some(("v2", b)) => (b, aad),
            Some(("v1", b)) => (b, legacy_aad?),
            _ => return None,
        };
        let raw = STANDARD.decode(raw).ok().filter(|b| b.len() > NONCE_LEN)?;
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }

    /// Seals a signing key's private half (PKCS#8 PEM) for its `kid`.
    pub fn seal_signing_key(&self, pem: &str, kid: &str) -> anyhow::Result<String> {
        self.seal_bytes(pem.as_bytes(), signing_key_aad(kid).as_bytes())
    }

    /// Opens the private half of signing key `kid`; `None` when this master
    /// key did not seal it (or it was sealed for another kid).
    pub fn open_signing_key(&self, sealed: &str, kid: &str) -> Option<String> {
        let plain = self.open_bytes(sealed, signing_key_aad(kid).as_bytes(), None)?;
        String::from_utf8(plain).ok()
    }

    /// Seals the signing secret of webhook endpoint `id`.
    pub fn seal_webhook_secret(&self, secret: &str, id: &str) -> anyhow::Result<String> {
        self.seal_bytes(
            secret.as_bytes(),
            format!("charter-webhook:{id}").as_bytes(),
        )
    }

    /// Opens the signing secret of webhook endpoint `id`.
    pub fn open_webhook_secret(&self, sealed: &str, id: &str) -> Option<String> {
        let plain = self.open_bytes(sealed, format!("charter-webhook:{id}").as_bytes(), None)?;
        String::from_utf8(plain).ok()
    }

    /// Seals `c` for the instance `instance_id` at `url`.
    pub fn seal(&self, c: &Credentials, instance_id: &str, url: &str) -> anyhow::Result<String> {
        let data = serde_json::to_vec(c)?;
        self.seal_bytes(&data, bound_to(instance_id, url).as_bytes())
    }

    /// Opens credentials sealed for the instance `instance_id` at `url`.
    pub fn open(&self, sealed: &str, instance_id: &str, url: &str) -> anyhow::Result<Credentials> {
        let plain = self
            .open_bytes(sealed, bound_to(instance_id, url).as_bytes(), Some(b""))
            .ok_or_else(|| {
                anyhow::anyhow!("credentials do not decrypt with this master key for this instance")
            })?;
        Ok(serde_json::from_slice(&plain)?)
    }
}

/// The associated data of a signing key.
fn signing_key_aad(kid: &str) -> String {
    format!("charter-signing-key\n{kid}")
}

/// The associated data of an instance's credentials.
fn bound_to(instance_id: &str, url: &str) -> String {
    format!("charter-push-credentials\n{instance_id}\n{url}")
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_with_their_key() {
        let dir = tempfile::tempdir().expect("dir");
        let sealer = Sealer::create(&dir.path().join(KEY_FILE)).expect("created");
        let c = Credentials::Basic {
            username: "admin".into(),
            password: "s3cret-pw".into(),
        };
        let (id, url) = ("inst-1", "https://a.example.com/");
        let sealed = sealer.seal(&c, id, url).expect("seal");
        assert!(!sealed.contains("s3cret"), "{sealed}");
        assert_eq!(sealer.open(&sealed, id, url).expect("open"), c);
        assert_ne!(
            sealer.seal(&c, id, url).expect("seal"),
            sealed,
            "a fresh nonce each time"
        );
        // Reloaded from the file: same key.
        let again = Sealer::load(&dir.path().join(KEY_FILE)).expect("loaded");
        assert_eq!(again.open(&sealed, id, url).expect("open"), c);
        // Another key cannot open it; tampering is detected.
        let other_dir = tempfile::tempdir().expect("dir");
        let other = Sealer::create(&other_dir.path().join(KEY_FILE)).expect("created");
        assert!(other.open(&sealed, id, url).is_err());
        let mut bad = sealed.clone();
        bad.replace_range(10..11, if &sealed[10..11] == "A" { "B" } else { "A" });
        assert!(sealer.open(&bad, id, url).is_err());
        assert_eq!(format!("{c:?}"), "Basic(admin, [redacted])");
    }

    #[test]
    fn a_master_key_is_32_bytes_or_their_base64_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(KEY_FILE);
        let sealer = Sealer::create(&path).expect("created");
        let raw = std::fs::read(&path).expect("read");
        assert_eq!(raw.len(), 32);
        let sealed = sealer.seal_signing_key("pem text", "kid-1").expect("seal");
        assert!(matches!(
            Sealer::create(&path),
            Err(MasterKeyError::Unusable { .. })
        ));
        assert_eq!(std::fs::read(&path).expect("read"), raw, "not overwritten");
        // The same key as base64 (a Kubernetes Secret) opens it.
        let b64 = dir.path().join("b64.key");
        std::fs::write(&b64, format!("{}\n", STANDARD.encode(&raw))).expect("write");
        let again = Sealer::load(&b64).expect("base64 key");
        assert_eq!(
            again.open_signing_key(&sealed, "kid-1").as_deref(),
            Some("pem text")
        );
        // Bound to its kid.
        assert_eq!(again.open_signing_key(&sealed, "kid-2"), None);
        // Errors name the file.
        let short = dir.path().join("short.key");
        std::fs::write(&short, b"too short").expect("write");
        let err = Sealer::load(&short).err().expect("refused").to_string();
        assert!(
            err.contains("short.key") && err.contains("32 bytes"),
            "{err}"
        );
        let missing = Sealer::load(&dir.path().join("none.key"))
            .err()
            .expect("missing");
        assert!(missing.to_string().contains("none.key"), "{missing}");
    }

    #[test]
    fn credentials_copied_to_another_instance_do_not_open() {
        let dir = tempfile::tempdir().expect("dir");
        let sealer = Sealer::create(&dir.path().join(KEY_FILE)).expect("created");
        let c = Credentials::Bearer {
            token: "customer-a-secret".into(),
        };
        let sealed = sealer
            .seal(&c, "inst-a", "https://a.example.com/")
            .expect("seal");
        assert!(
            sealer
                .open(&sealed, "inst-b", "https://b.example.com/")
                .is_err()
        );
        assert!(
            sealer
                .open(&sealed, "inst-a", "https://evil.example.com/")
                .is_err()
        );
        assert!(
            sealer
                .open(&sealed, "inst-a", "https://a.example.com/")
                .is_ok()
        );
    }
}
