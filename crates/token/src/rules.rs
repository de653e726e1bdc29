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

/// Errors of [`InstanceUrl::parse`] and [`parse_subject`].
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
    /// A host with `*` that is not a subject pattern `https://*.example.com/`.
    #[error("not a subject pattern: {0}")]
    Pattern(&'static str),
    /// A pattern where one instance's URL is needed.
    #[error("an instance's URL cannot be a pattern")]
    IsPattern,
}

/// An instance's root URL: http(s), no credentials, no query, normalised
/// (lower-case scheme and host, default port dropped) with a trailing `/`.
///
/// It may also be a subject pattern for a fleet under one license (see
/// [`parse_subject`]): `*` labels in the host, each standing for exactly one
/// DNS label. A host with a `*` that is not such a pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceUrl(String);

impl InstanceUrl {
    /// An instance URL or a valid subject pattern ([`parse_subject`]).
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
        check_wildcards(&url)?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(InstanceUrl(url.to_string()))
    }

    /// One instance's URL: as [`InstanceUrl::parse`], but a pattern is
    /// refused ([`UrlError::IsPattern`]). For an instance's own root URL.
    pub fn parse_instance(input: &str) -> Result<Self, UrlError> {
        let url = Self::parse(input)?;
        if url.is_pattern() {
            return Err(UrlError::IsPattern);
        }
        Ok(url)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a subject pattern (a `*` label in the host).
    pub fn is_pattern(&self) -> bool {
        self.authority().contains('*')
    }

    /// `host[:port]` of the normalised form.
    fn authority(&self) -> &str {
        let rest = self.0.split_once("://").map_or(self.0.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or_default()
    }

    /// Whether this pattern names `instance`: same scheme, port and path,
    /// the same number of host labels, each `*` standing for one label. An
    /// IP literal never matches a pattern.
    fn pattern_matches(&self, instance: &InstanceUrl) -> bool {
        if !self.is_pattern() || instance.is_pattern() {
            return false;
        }
        let (Ok(p), Ok(i)) = (url::Url::parse(&self.0), url::Url::parse(&instance.0)) else {
            return false;
        };
        let (Some(url::Host::Domain(ph)), Some(url::Host::Domain(ih))) = (p.host(), i.host())
        else {
            return false;
        };
        if p.scheme() != i.scheme() || p.port() != i.port() || p.path() != i.path() {
            return false;
        }
        let (mut pl, mut il) = (ph.split('.'), ih.split('.'));
        loop {
            match (pl.next(), il.next()) {
                (None, None) => return true,
                (Some("*"), Some(l)) if !l.is_empty() => {}
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    }
}

/// A `*` in the host must make a subject pattern: whole `*` labels (no
/// `a*` nor `**`), at least two fixed labels on the right (no `https://*/`,
/// `https://*.com/`), and no IP address (the URL standard reads a host whose
/// last label is a number as IPv4; IPv6 literals never reach here).
fn check_wildcards(url: &url::Url) -> Result<(), UrlError> {
    let Some(url::Host::Domain(host)) = url.host() else {
        return Ok(());
    };
    if !host.contains('*') {
        return Ok(());
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err(UrlError::Pattern("a pattern has no empty labels"));
    }
    if labels.iter().any(|l| l.contains('*') && *l != "*") {
        return Err(UrlError::Pattern(
            "a wildcard is a whole label (`*.example.com`), never part of one nor `**`",
        ));
    }
    let n = labels.len();
    if n < 3 || labels[n - 1] == "*" || labels[n - 2] == "*" {
        return Err(UrlError::Pattern(
            "the last two labels must be fixed (`https://*.example.com/`)",
        ));
    }
    if labels[n - 1].bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::Pattern("an IP address cannot be a pattern"));
    }
    Ok(())
}

/// Parses a token subject as the issuer should before binding or signing
/// it: one instance's root URL, or a pattern for a fleet under one license
/// such as `https://*.example.com/` (`*` labels, each matching exactly one
/// DNS label; scheme, port and path fixed). Refused: `*` inside a label or
/// `**`, a host of only wildcards or fewer than two fixed labels
/// (`https://*/`, `https://**/`, `https://*.com/`), wildcards in an IP
/// address. The same rules as [`InstanceUrl::parse`], under the name the
/// issuer looks for.
pub fn parse_subject(input: &str) -> Result<InstanceUrl, UrlError> {
    InstanceUrl::parse(input)
}

impl std::fmt::Display for InstanceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the token's `sub` (an instance URL, or a pattern like
/// `https://*.example.com/`, see [`parse_subject`]) names this instance.
/// Only whole `*` host labels are wildcards, each matching one label (never
/// a dot, never a `/`); other characters, IP literals (`[2001:db8::1]`)
/// included, are literal; a `sub` that is not a valid pattern matches only
/// itself.
pub fn subject_matches(sub: &str, instance: &InstanceUrl) -> bool {
    if sub == instance.as_str() {
        return true;
    }
    // Compare normalised forms, so `HTTPS://Host` matches `https://host/`.
    let Ok(sub) = InstanceUrl::parse(sub) else {
        return false;
    };
    sub == *instance || sub.pattern_matches(instance)
}
