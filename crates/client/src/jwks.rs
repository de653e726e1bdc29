//! Refreshing the vendor's public keys from the issuer's
//! `/.well-known/jwks.json` when a token names an unknown `kid`.
//!
//! A token's `kid` is chosen by whoever sends it, so fetches are rate
//! limited: at most one per `jwks_min_interval`. Keys pinned at start are
//! never replaced or removed by a fetch.

use std::sync::Arc;
use std::time::Instant;

use charter_token::KeySet;

use crate::manager::LicenseManager;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl LicenseManager {
    /// Fetches the JWKS (rate limited) and merges it with the pinned keys.
    /// True when the key set may have changed since the caller looked.
    pub async fn refresh_keys(&self) -> bool {
        let Some(url) = self.inner.jwks_url.clone() else {
            return false;
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
        match self.fetch_jwks(&url).await {
            Ok(fetched) => {
                let mut merged = self.inner.pinned.clone();
                for kid in fetched.kids() {
                    if merged.get(kid).is_none()
                        && let Some(key) = fetched.get(kid)
                    {
                        merged.insert(key.clone());
                    }
                }
                tracing::info!(url = %url, keys = merged.len(), "refreshed the issuer's keys");
                let mut keys = self
                    .inner
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *keys = Arc::new(merged);
                true
            }
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "could not refresh the issuer's keys");
                false
            }
        }
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
