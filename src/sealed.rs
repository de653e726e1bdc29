//! Push credentials encrypted at rest: AES-256-GCM with a key kept in the
//! keys directory (`credentials.key`, 32 random bytes, mode 0600), never in
//! the database. A sealed value is `v2:` + base64(nonce || ciphertext+tag),
//! sealed with associated data naming its instance (id and URL): a blob
//! copied to another instance's row does not open there, so one customer's
//! password cannot be sent to another URL. Values sealed before (`v1:`,
//! no associated data) still open, and are sealed anew with their
//! instance when their credentials change.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The file in the keys directory that holds the credentials key.
pub const KEY_FILE: &str = "credentials.key";

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

impl Sealer {
    /// Reads `credentials.key` from `dir`, creating it when absent (and the
    /// directory is writable). `None` when there is none and none can be made.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Option<Sealer>> {
        let path = dir.join(KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                aws_lc_rs::rand::fill(&mut key).map_err(|_| anyhow::anyhow!("no randomness"))?;
                match write_private(&path, &key) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "generated the key that encrypts push credentials");
                        key.to_vec()
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "no credentials key and cannot create one: instances cannot be given push credentials");
                        return Ok(None);
                    }
                }
            }
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| anyhow::anyhow!("{}: must hold exactly 32 bytes", path.display()))?;
        Ok(Some(Sealer {
            key: LessSafeKey::new(key),
        }))
    }

    /// Seals `c` for the instance `instance_id` at `url`.
    pub fn seal(&self, c: &Credentials, instance_id: &str, url: &str) -> anyhow::Result<String> {
        let mut data = serde_json::to_vec(c)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let aad = bound_to(instance_id, url);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("v2:{}", STANDARD.encode(out)))
    }

    /// Opens credentials sealed for the instance `instance_id` at `url`.
    pub fn open(&self, sealed: &str, instance_id: &str, url: &str) -> anyhow::Result<Credentials> {
        let (raw, aad) = match sealed.split_once(':') {
            Some(("v2", b)) => (b, bound_to(instance_id, url)),
            Some(("v1", b)) => (b, String::new()),
            _ => anyhow::bail!("sealed credentials are malformed"),
        };
        let raw = STANDARD
            .decode(raw)
            .ok()
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(|| anyhow::anyhow!("sealed credentials are malformed"))?;
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data)
            .map_err(|_| {
                anyhow::anyhow!(
                    "credentials do not decrypt with this credentials.key for this instance"
                )
            })?;
        Ok(serde_json::from_slice(plain)?)
    }
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
        let sealer = Sealer::load_or_create(dir.path())
            .expect("ok")
            .expect("created");
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
        let again = Sealer::load_or_create(dir.path())
            .expect("ok")
            .expect("loaded");
        assert_eq!(again.open(&sealed, id, url).expect("open"), c);
        // Another key cannot open it; tampering is detected.
        let other = Sealer::load_or_create(tempfile::tempdir().expect("dir").path())
            .expect("ok")
            .expect("created");
        assert!(other.open(&sealed, id, url).is_err());
        let mut bad = sealed.clone();
        bad.replace_range(10..11, if &sealed[10..11] == "A" { "B" } else { "A" });
        assert!(sealer.open(&bad, id, url).is_err());
        assert_eq!(format!("{c:?}"), "Basic(admin, [redacted])");
    }

    #[test]
    fn credentials_copied_to_another_instance_do_not_open() {
        let dir = tempfile::tempdir().expect("dir");
        let sealer = Sealer::load_or_create(dir.path())
            .expect("ok")
            .expect("created");
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
