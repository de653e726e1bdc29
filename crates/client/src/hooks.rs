//! What the host product provides: who may do what ([`Authorizer`], default
//! [`BasicAuth`]) and what it uses ([`UsageSource`]), plus the rule that
//! compares usage with a license's limits.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use charter_token::{Claims, Usage};
use serde::Serialize;

/// The permission each endpoint asks for, named as its seed names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Grafana `licensing:read` (`GET /api/licensing/check`).
    LicensingRead,
    /// Grafana `licensing:write` (add a token, renew).
    LicensingWrite,
    /// Grafana `licensing:delete` (remove the token).
    LicensingDelete,
    /// Consul ACL `operator:read` (`GET /v1/operator/license`; the seed asks for none).
    OperatorRead,
    /// Consul ACL `operator:write` (`PUT`/`DELETE /v1/operator/license`).
    OperatorWrite,
    /// Redis `view_license` (`GET /v1/license`).
    ViewLicense,
    /// Redis `install_new_license` (`PUT /v1/license`).
    InstallNewLicense,
}

impl Permission {
    /// The seed's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::LicensingRead => "licensing:read",
            Permission::LicensingWrite => "licensing:write",
            Permission::LicensingDelete => "licensing:delete",
            Permission::OperatorRead => "operator:read",
            Permission::OperatorWrite => "operator:write",
            Permission::ViewLicense => "view_license",
            Permission::InstallNewLicense => "install_new_license",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials or wrong ones (401 where the dialect has it).
    Unauthenticated,
    /// Known caller, not allowed (403).
    Forbidden,
}

/// Decides whether a request may do `permission`. The host implements it to
/// use its own users, roles or ACL tokens.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, headers: &HeaderMap, permission: Permission) -> Result<(), Denied>;
}

/// The default: HTTP Basic for one configured admin, who may do everything,
/// as the seeds require. Consul's `operator:read` is open (the seed's GET
/// needs no ACL); [`BasicAuth::require_all`] closes it too.
pub struct BasicAuth {
    user: String,
    password: String,
    /// `Basic base64(user:password)`: the usual header, compared without decoding.
    expected: String,
    open: Vec<Permission>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .field("open", &self.open)
            .finish()
    }
}

impl BasicAuth {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        let (user, password) = (user.into(), password.into());
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        BasicAuth {
            user,
            password,
            expected,
            open: vec![Permission::OperatorRead],
        }
    }

    /// Require credentials for every permission, `operator:read` included.
    pub fn require_all(mut self) -> Self {
        self.open.clear();
        self
    }
}

impl Authorizer for BasicAuth {
    fn authorize(&self, headers: &HeaderMap, permission: Permission) -> Result<(), Denied> {
        if self.open.contains(&permission) {
            return Ok(());
        }
        // Fast path: the header as clients usually write it.
        if let Some(value) = headers.get(AUTHORIZATION)
            && constant_time_eq(value.as_bytes(), self.expected.as_bytes())
        {
            return Ok(());
        }
        let (user, password) = basic_credentials(headers).ok_or(Denied::Unauthenticated)?;
        // Evaluate both comparisons so timing does not tell which one failed.
        let user_ok = constant_time_eq(user.as_bytes(), self.user.as_bytes());
        let password_ok = constant_time_eq(password.as_bytes(), self.password.as_bytes());
        if user_ok & password_ok {
            Ok(())
        } else {
            Err(Denied::Unauthenticated)
        }
    }
}

/// Lets every request through: for hosts that authenticate in front of the router.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &HeaderMap, _: Permission) -> Result<(), Denied> {
        Ok(())
    }
}

/// The user and password of an `Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// What the host uses now, e.g. `{"users": 12, "shards": 3, "ram_shards": 2}`.
/// Sent with each renewal and compared with a new license's limits.
pub trait UsageSource: Send + Sync + 'static {
    fn usage(&self) -> Usage;
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoUsage;

impl UsageSource for NoUsage {
    fn usage(&self) -> Usage {
        Usage::new()
    }
}

impl<F: Fn() -> Usage + Send + Sync + 'static> UsageSource for F {
    fn usage(&self) -> Usage {
        self()
    }
}

/// A usage above what a license allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitViolation {
    /// The limit's claim name (`shards_limit`, `included_users`, ...).
    pub limit: String,
    pub allowed: i64,
    pub in_use: i64,
}

impl std::fmt::Display for LimitViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {} but {} are in use",
            self.limit, self.allowed, self.in_use
        )
    }
}

/// The claim that limits a usage key: `X` is limited by `X_limit` in
/// `limits` (`shards` → `shards_limit`), else by `included_X`
/// (`users` → `included_users`). Seat limits of 0 mean "not set".
pub fn limit_for(claims: &Claims, usage_key: &str) -> Option<(String, i64)> {
    let name = format!("{usage_key}_limit");
    if let Some(v) = claims.limits.get(&name) {
        return Some((name, *v));
    }
    let name = format!("included_{usage_key}");
    match claims.limit(&name) {
        Some(v) if v > 0 => Some((name, v)),
        _ => None,
    }
}

/// Every usage above the license's limits, in usage-key order.
pub fn limit_violations(claims: &Claims, usage: &Usage) -> Vec<LimitViolation> {
    usage
        .iter()
        .filter_map(|(key, in_use)| {
            let (limit, allowed) = limit_for(claims, key)?;
            (*in_use > allowed).then_some(LimitViolation {
                limit,
                allowed,
                in_use: *in_use,
            })
        })
        .collect()
}
