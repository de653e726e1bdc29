//! Where the current token lives: the [`TokenStore`] trait, the default
//! [`FileStore`] (`license.jwt` in a data directory, replaced atomically) and
//! an in-memory [`MemoryStore`] for tests and hosts that keep state elsewhere.
//!
//! A host running several replicas implements [`TokenStore`] over its own
//! database so that every replica sees the same license. The manager calls the
//! store from a blocking thread (`tokio::task::spawn_blocking`), so a store may
//! block.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Name of the token file in the data directory.
pub const TOKEN_FILE: &str = "license.jwt";
/// Name of the file beside it that keeps the latest time the manager has seen.
pub const SEEN_FILE: &str = "license.seen";
/// Name of the file beside it that keeps the last good revocation list (the
/// issuer's signed JWS, as received).
pub const REVOKED_FILE: &str = "license.revoked";

/// A store failure; the message names the file or record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Keeps the current license token and the latest time seen (clock rollback).
pub trait TokenStore: Send + Sync + 'static {
    /// The stored token, `None` when there is none.
    fn load(&self) -> Result<Option<String>, StoreError>;
    /// Replaces the stored token; after an error the previous one is intact.
    fn save(&self, token: &str) -> Result<(), StoreError>;
    /// Removes the stored token (no error when there is none).
    fn clear(&self) -> Result<(), StoreError>;
    /// The latest time (unix seconds) the manager has seen, if recorded.
    fn load_latest_seen(&self) -> Result<Option<i64>, StoreError>;
    /// Records the latest time seen.
    fn save_latest_seen(&self, at: i64) -> Result<(), StoreError>;
    /// The last good revocation list (the issuer's signed JWS), if recorded.
    /// The default keeps none: a restart then forgets revocations until the
    /// next successful poll.
    fn load_revocations(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Records the last good revocation list. The default drops it.
    fn save_revocations(&self, _jws: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// `license.jwt`, `license.seen` and `license.revoked` in a data directory.
///
/// Every write goes to a temporary file in the same directory, is fsynced,
/// renamed over the target, and the directory is fsynced: a crash leaves the
/// old file or the new one, never a torn one.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir`, created (mode 0700) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        create_dir(&dir)?;
        Ok(FileStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join(TOKEN_FILE)
    }

    fn read(&self, name: &str) -> Result<Option<String>, StoreError> {
        let path = self.dir.join(name);
        // Bytes that are not UTF-8 are a corrupt file, judged (and refused)
        // like any other bad token, not an error that stops the instance.
        match fs::read(&path) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .read(TOKEN_FILE)?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn save(&self, token: &str) -> Result<(), StoreError> {
        write_atomic(&self.dir, TOKEN_FILE, format!("{token}\n").as_bytes())
    }

    fn clear(&self) -> Result<(), StoreError> {
        let path = self.token_path();
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn load_latest_seen(&self) -> Result<Option<i64>, StoreError> {
        // A damaged record is treated as absent: it only ever raises the floor.
        Ok(self
            .read(SEEN_FILE)?
            .and_then(|s| s.trim().parse::<i64>().ok()))
    }

    fn save_latest_seen(&self, at: i64) -> Result<(), StoreError> {
        write_atomic(&self.dir, SEEN_FILE, format!("{at}\n").as_bytes())
    }

    fn load_revocations(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .read(REVOKED_FILE)?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn save_revocations(&self, jws: &str) -> Result<(), StoreError> {
        write_atomic(&self.dir, REVOKED_FILE, format!("{jws}\n").as_bytes())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Write to a unique temporary file, fsync, rename over `name`, fsync the directory.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let target = dir.join(name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &target).map_err(io(&target))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A store in memory: for tests, or for hosts that persist state themselves.
#[derive(Debug, Default)]
pub struct MemoryStore {
    token: Mutex<Option<String>>,
    seen: Mutex<Option<i64>>,
    revocations: Mutex<Option<String>>,
}

impl MemoryStore {
    pub fn new(token: Option<String>) -> Self {
        MemoryStore {
            token: Mutex::new(token),
            seen: Mutex::new(None),
            revocations: Mutex::new(None),
        }
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Other("memory store lock poisoned".into())
}

impl TokenStore for MemoryStore {
    fn load(&self) -> Result<Option<String>, StoreError> {
        Ok(self.token.lock().map_err(poisoned)?.clone())
    }

    fn save(&self, token: &str) -> Result<(), StoreError> {
        *self.token.lock().map_err(poisoned)? = Some(token.to_string());
        Ok(())
    }

    fn clear(&self) -> Result<(), StoreError> {
        *self.token.lock().map_err(poisoned)? = None;
        Ok(())
    }

    fn load_latest_seen(&self) -> Result<Option<i64>, StoreError> {
        Ok(*self.seen.lock().map_err(poisoned)?)
    }

    fn save_latest_seen(&self, at: i64) -> Result<(), StoreError> {
        *self.seen.lock().map_err(poisoned)? = Some(at);
        Ok(())
    }

    fn load_revocations(&self) -> Result<Option<String>, StoreError> {
        Ok(self.revocations.lock().map_err(poisoned)?.clone())
    }

    fn save_revocations(&self, jws: &str) -> Result<(), StoreError> {
        *self.revocations.lock().map_err(poisoned)? = Some(jws.to_string());
        Ok(())
    }
}
