//! What the host product provides: who may do what ([`Authorizer`], default
//! [`BasicAuth`]) and what it uses ([`UsageSource`]), plus the rule that
//! compares usage with a license's limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// Too many failed attempts from this client: 429 with `Retry-After`
    /// (seconds), whatever the credentials, until the window has passed.
    TooManyFailures { retry_after: u64 },
}

/// Decides whether a request may do `permission`. The host implements it to
/// use its own users, roles or ACL tokens.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, headers: &HeaderMap, permission: Permission) -> Result<(), Denied>;

    /// [`Authorizer::authorize`] for a request from `client`: the routers
    /// call this, with the peer's address when the server provides axum's
    /// `ConnectInfo<SocketAddr>` (serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`), so that an
    /// implementation can limit failures per address. The default ignores
    /// the address.
    fn authorize_from(
        &self,
        client: Option<IpAddr>,
        headers: &HeaderMap,
        permission: Permission,
    ) -> Result<(), Denied> {
        let _ = client;
        self.authorize(headers, permission)
    }
}

/// The default: HTTP Basic for one configured admin, who may do everything,
/// as the seeds require. Consul's `operator:read` is open (the seed's GET
/// needs no ACL); [`BasicAuth::require_all`] closes it too.
///
/// Failed attempts are limited per client address
/// ([`BasicAuth::DEFAULT_MAX_FAILURES`] in [`BasicAuth::DEFAULT_WINDOW`]):
/// after that many requests with wrong credentials, every request from that
/// address needing credentials gets 429 with `Retry-After` until the window
/// that started with its first failure has passed, even with the right
/// password. A success resets the count. IPv6 clients count per /64. The
/// address is the TCP peer's (no `X-Forwarded-For`: behind a proxy, every
/// client shares the proxy's count); a server that does not provide
/// `ConnectInfo` puts every client in one count. See
/// [`BasicAuth::with_failure_limit`].
pub struct BasicAuth {
    user: String,
    password: String,
    /// `Basic base64(user:password)`: the usual header, compared without decoding.
    expected: String,
    open: Vec<Permission>,
    limit: FailureLimit,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .field("open", &self.open)
            .field("max_failures", &self.limit.max)
            .field("window", &self.limit.window)
            .finish()
    }
}

impl BasicAuth {
    /// Failed attempts allowed per client address in [`BasicAuth::DEFAULT_WINDOW`].
    pub const DEFAULT_MAX_FAILURES: u32 = 10;
    /// The window of the failure limit: 5 minutes.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        let (user, password) = (user.into(), password.into());
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        BasicAuth {
            user,
            password,
            expected,
            open: vec![Permission::OperatorRead],
            limit: FailureLimit::new(Self::DEFAULT_MAX_FAILURES, Self::DEFAULT_WINDOW),
        }
    }

    /// Require credentials for every permission, `operator:read` included.
    pub fn require_all(mut self) -> Self {
        self.open.clear();
        self
    }

    /// At most `max` failed attempts per client address in `window`
    /// (`max` 0: no limit, for hosts that limit in front of the router).
    pub fn with_failure_limit(mut self, max: u32, window: Duration) -> Self {
        self.limit = FailureLimit::new(max, window);
        self
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
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

impl Authorizer for BasicAuth {
    /// Without the client's address: every such caller shares one failure count.
    fn authorize(&self, headers: &HeaderMap, permission: Permission) -> Result<(), Denied> {
        self.authorize_from(None, headers, permission)
    }

    fn authorize_from(
        &self,
        client: Option<IpAddr>,
        headers: &HeaderMap,
        permission: Permission,
    ) -> Result<(), Denied> {
        if self.open.contains(&permission) {
            return Ok(());
        }
        let key = FailureLimit::key(client);
        if let Some(retry_after) = self.limit.blocked(key) {
            return Err(Denied::TooManyFailures { retry_after });
        }
        match self.check(headers) {
            Ok(()) => {
                self.limit.succeeded(key);
                Ok(())
            }
            Err(denied) => {
                // A request without credentials (a browser's first try
                // before the challenge) is not a guess.
                if headers.contains_key(AUTHORIZATION) {
                    self.limit.failed(key);
                }
                Err(denied)
            }
        }
    }
}

/// Failed attempts per client: `(first failure, count)` per address key.
struct FailureLimit {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
    /// Whether `entries` may hold anything: a success skips the lock otherwise.
    any: AtomicBool,
}

impl FailureLimit {
    /// Addresses tracked at most; beyond (after dropping windows that have
    /// passed), new addresses share one count.
    const MAX_TRACKED: usize = 10_000;

    fn new(max: u32, window: Duration) -> Self {
        FailureLimit {
            max,
            window,
            entries: Mutex::new(HashMap::new()),
            any: AtomicBool::new(false),
        }
    }

    /// The key of an address: IPv6 per /64 (one host usually holds a whole
    /// /64), IPv4-mapped IPv6 as IPv4.
    fn key(client: Option<IpAddr>) -> Option<IpAddr> {
        client.map(|ip| match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut seg = v6.segments();
                    seg[4..].fill(0);
                    IpAddr::V6(seg.into())
                }
            },
            v4 => v4,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<IpAddr>, (Instant, u32)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds until `key` may try again, when it is blocked.
    fn blocked(&self, key: Option<IpAddr>) -> Option<u64> {
        if self.max == 0 || !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let map = self.lock();
        let (since, count) = map.get(&key)?;
        let elapsed = since.elapsed();
        if *count < self.max || elapsed >= self.window {
            return None;
        }
        // Rounded up, at least 1: a client retrying at once is refused again.
        let left = self.window - elapsed;
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    fn failed(&self, key: Option<IpAddr>) {
        if self.max == 0 {
            return;
        }
        let mut map = self.lock();
        if map.len() >= Self::MAX_TRACKED && !map.contains_key(&key) {
            let window = self.window;
            map.retain(|_, (since, _)| since.elapsed() < window);
        }
        let key = if map.len() >= Self::MAX_TRACKED && !map.contains_key(&key) {
            None
        } else {
            key
        };
        let entry = map.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 == self.max {
            tracing::warn!(
                client = ?key,
                failures = entry.1,
                "too many failed authentication attempts; refusing this client for a while"
            );
        }
        self.any.store(true, Ordering::Relaxed);
    }

    fn succeeded(&self, key: Option<IpAddr>) {
        if self.max == 0 || !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut map = self.lock();
        map.remove(&key);
        let window = self.window;
        map.retain(|_, (since, _)| since.elapsed() < window);
        if map.is_empty() {
            self.any.store(false, Ordering::Relaxed);
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
