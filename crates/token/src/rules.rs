//! The time rules of DESIGN.md and the instance URL, as plain functions.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::claims::{Claims, DAY};

/// Now, in unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `nbf <= now < exp` (the signature is the verifier's business).
pub fn is_valid_at(claims: &Claims, now: i64) -> bool {
    claims.nbf <= now && now < claims.exp
}

/// When the token is due for renewal: `iat + update_days`.
pub fn renewal_due_at(claims: &Claims) -> i64 {
    claims
        .iat
        .saturating_add(claims.update_days.saturating_mul(DAY))
}

/// `now >= iat + update_days`.
pub fn is_due_for_renewal(claims: &Claims, now: i64) -> bool {
    now >= renewal_due_at(claims)
}

/// The token warning starts `tok_exp_warn_days` before `exp`.
pub fn token_warning(claims: &Claims, now: i64) -> bool {
    now >= claims
        .exp
        .saturating_sub(claims.tok_exp_warn_days.saturating_mul(DAY))
}

/// The license warning starts `lic_exp_warn_days` before `lexp`.
pub fn license_warning(claims: &Claims, now: i64) -> bool {
    now >= claims
        .lexp
        .saturating_sub(claims.lic_exp_warn_days.saturating_mul(DAY))
}

/// Errors of [`InstanceUrl::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Invalid(String),
    #[error("scheme must be http or https, not {0:?}")]
    Scheme(String),
    #[error("URL must not carry credentials")]
    Credentials,
    #[error("URL must not carry a query or fragment")]
    QueryOrFragment,
    #[error("URL has no host")]
    NoHost,
}

/// An instance's root URL: http(s), no credentials, no query, normalised
/// (lower-case scheme and host, default port dropped) with a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceUrl(String);

impl InstanceUrl {
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        if input.len() > 2048 {
            return Err(UrlError::Invalid("longer than 2048 characters".into()));
        }
        // The URL standard drops leading and trailing control characters;
        // refuse them instead, so two different strings never name one instance.
        if input.chars().any(char::is_control) {
            return Err(UrlError::Invalid("contains control characters".into()));
        }
        let mut url =
            url::Url::parse(input.trim()).map_err(|e| UrlError::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UrlError::QueryOrFragment);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(InstanceUrl(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the token's `sub` (an instance URL, or a glob like
/// `https://*.example.com/`) names this instance. `*` does not cross `/`.
pub fn subject_matches(sub: &str, instance: &InstanceUrl) -> bool {
    if sub == instance.as_str() {
        return true;
    }
    if !sub.contains(['*', '?', '[', '{']) {
        // Compare normalised forms, so `HTTPS://Host` matches `https://host/`.
        return InstanceUrl::parse(sub).is_ok_and(|s| &s == instance);
    }
    glob_match::glob_match(&sub.to_ascii_lowercase(), instance.as_str())
}
