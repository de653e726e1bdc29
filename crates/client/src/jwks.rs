//! Refreshing the vendor's public keys from the issuer's
//! `/.well-known/jwks.json` (or a JWKS file): when a token names an unknown
//! `kid`, and every `jwks_refresh_interval`.
//!
//! A token's `kid` is chosen by whoever sends it, so fetches are rate
//! limited: at most one per `jwks_min_interval`. Keys pinned by the host
//! ([`crate::ManagerConfig::keys`]) are never replaced or removed by a
//! refresh. Other keys follow the source: a refresh from a JWKS file, or a
//! fetch over https, replaces them with what it publishes, so a key the
//! issuer retired stops verifying without a restart (the held token, if it
//! was signed by such a key, is then status 2 Loaded: held, not judged). A
//! fetch over plain http from another machine only adds keys: anyone on the
//! path could otherwise withdraw them (from a loopback address nobody is).

use std::sync::Arc;
use std::time::Instant;

use charter_token::KeySet;

use crate::manager::{Check, LicenseManager};

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl LicenseManager {
    /// Fetches the JWKS (rate limited) and merges it with the pinned keys.
    /// True when the key set may have changed since the caller looked.
    pub async fn refresh_keys(&self) -> bool {
        let source = match (&self.inner.jwks_file, &self.inner.jwks_url) {
            (Some(file), _) => Source::File(file.clone()),
            (None, Some(url)) => Source::Url(url.clone()),
            (None, None) => return false,
        };
        let asked = Instant::now();
        let mut last = self.inner.jwks_last_fetch.lock().await;
        if let Some(at) = *last {
            if at >= asked {
                // Someone refreshed while this caller waited for the lock.
                return true;
            }
            if at.elapsed() < self.inner.jwks_min_interval {
                return false;
            }
        }
        *last = Some(Instant::now());
        let fetched = match &source {
            Source::File(path) => read_jwks_file(path).await,
            Source::Url(url) => self.fetch_jwks(url).await,
        };
        match fetched {
            Ok(fetched) => {
                let (keys, dropped) = self.merge(&fetched, source.may_drop());
                let count = keys.len();
                *self
                    .inner
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                tracing::info!(source = %source, keys = count, "refreshed the issuer's keys");
                if !dropped.is_empty() {
                    tracing::warn!(source = %source, kids = ?dropped, "keys no longer published are no longer trusted");
                    self.recheck_held_key();
                    self.publish();
                }
                true
            }
            Err(e) => {
                tracing::warn!(source = %source, error = %e, "could not refresh the issuer's keys");
                false
            }
        }
    }

    /// Refreshes the keys when `jwks_refresh_interval` has passed since the
    /// last scheduled refresh ([`LicenseManager::tick`] calls it).
    pub(crate) async fn refresh_keys_if_due(&self) {
        if self.inner.jwks_file.is_none() && self.inner.jwks_url.is_none() {
            return;
        }
        let Ok(mut next) = self.inner.jwks_next.try_lock() else {
            return;
        };
        if Instant::now() < *next {
            return;
        }
        *next = Instant::now() + self.inner.jwks_refresh_interval;
        drop(next);
        self.refresh_keys().await;
    }

    /// The new key set and the kids it no longer holds: the pinned keys,
    /// then the fetched ones; with `may_drop`, nothing else, else also every
    /// key held now.
    fn merge(&self, fetched: &KeySet, may_drop: bool) -> (KeySet, Vec<String>) {
        let current = self.keys();
        let mut merged = self.inner.pinned.clone();
        for kid in fetched.kids() {
            if merged.get(kid).is_none()
                && let Some(key) = fetched.get(kid)
            {
                merged.insert(key.clone());
            }
        }
        let mut dropped = Vec::new();
        for kid in current.kids() {
            if merged.get(kid).is_some() {
                continue;
            }
            if may_drop {
                dropped.push(kid.to_string());
            } else if let Some(key) = current.get(kid) {
                merged.insert(key.clone());
            }
        }
        dropped.sort();
        (merged, dropped)
    }

    /// After keys were dropped: a held token whose key is gone is no longer
    /// verified (status 2 Loaded, retried on each tick).
    fn recheck_held_key(&self) {
        let keys = self.keys();
        self.set_held(|h| {
            if let (Some(token), Check::Verified(_)) = (&h.token, &h.check)
                && let Err(e @ charter_token::VerifyError::UnknownKey(_)) =
                    keys.verify_signature(token)
            {
                tracing::warn!(error = %e, "the license held was signed by a key no longer published");
                h.check = Check::Unverified(e.to_string());
            }
        });
    }

    async fn fetch_jwks(&self, url: &str) -> Result<KeySet, String> {
        let mut resp = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| "JWKS is not UTF-8".to_string())?;
        KeySet::from_jwks_json(&text).map_err(|e| format!("JWKS is not valid: {e}"))
    }
}

/// Where keys are refreshed from.
enum Source {
    File(std::path::PathBuf),
    Url(String),
}

impl Source {
    /// Whether what it publishes may replace the unpinned keys: a local
    /// file, a fetch over https (authenticated, not alterable on the way),
    /// or over plain http from a loopback address (the same machine: nobody
    /// on the way). Plain http from elsewhere only adds keys.
    fn may_drop(&self) -> bool {
        match self {
            Source::File(_) => true,
            Source::Url(url) => {
                let Ok(url) = reqwest::Url::parse(url) else {
                    return false;
                };
                match url.scheme() {
                    "https" => true,
                    "http" => url.host_str().is_some_and(is_loopback),
                    _ => false,
                }
            }
        }
    }
}

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Url(u) => f.write_str(u),
        }
    }
}

async fn read_jwks_file(path: &std::path::Path) -> Result<KeySet, String> {
    let path = path.to_path_buf();
    let text = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut text = String::new();
        file.take(MAX_JWKS_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        if text.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        Ok(text)
    })
    .await
    .map_err(|e| e.to_string())??;
    KeySet::from_jwks_json(&text).map_err(|e| format!("JWKS is not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::Source;

    #[test]
    fn only_authenticated_or_local_sources_may_withdraw_keys() {
        let url = |u: &str| Source::Url(u.to_string()).may_drop();
        assert!(url("https://issuer.example.com/.well-known/jwks.json"));
        assert!(url("http://127.0.0.1:8080/.well-known/jwks.json"));
        assert!(url("http://127.8.9.10/.well-known/jwks.json"));
        assert!(url("http://[::1]:8080/.well-known/jwks.json"));
        assert!(url("http://localhost/.well-known/jwks.json"));
        assert!(!url("http://issuer.example.com/.well-known/jwks.json"));
        assert!(!url("http://10.0.0.1/.well-known/jwks.json"));
        assert!(!url("http://127.0.0.1.evil.example/.well-known/jwks.json"));
        assert!(!url("not a url"));
        assert!(Source::File("jwks.json".into()).may_drop());
    }
}
