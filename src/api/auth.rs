//! Who is calling the portal API: the [`Principal`] extractor (the server
//! admin over HTTP Basic, or a service account with `Authorization: Bearer
//! chr_sa_...`), the actions each endpoint requires, the roles that grant
//! them, and a per-address limit on failed authentication.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;

use super::AppState;
use super::error::ApiError;
use crate::domain::{ActorKind, AuditEvent, Role};

/// What an endpoint does, as a permission (Grafana's action names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    LicensingRead,
    LicensingWrite,
    LicensingDelete,
    /// Reading issued tokens' text: a token renews, so it is a credential
    /// (roles Editor and Admin; Viewers see the history without it).
    LicensingTokens,
    ApiKeysRead,
    ApiKeysDelete,
    ServiceAccountsRead,
    ServiceAccountsWrite,
    ServiceAccountsDelete,
    /// Reading the audit trail (role Admin).
    AuditRead,
    /// Listing the signing keys (public facts; every role).
    KeysRead,
    /// Rotating the signing key (role Admin).
    KeysRotate,
    /// Reading webhook endpoints and their deliveries (role Admin).
    WebhooksRead,
    /// Creating, changing, testing and deleting webhook endpoints (role Admin).
    WebhooksWrite,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::LicensingRead => "licensing:read",
            Action::LicensingWrite => "licensing:write",
            Action::LicensingDelete => "licensing:delete",
            Action::LicensingTokens => "licensing:tokens",
            Action::ApiKeysRead => "apikeys:read",
            Action::ApiKeysDelete => "apikeys:delete",
            Action::ServiceAccountsRead => "serviceaccounts:read",
            Action::ServiceAccountsWrite => "serviceaccounts:write",
            Action::ServiceAccountsDelete => "serviceaccounts:delete",
            Action::AuditRead => "audit:read",
            Action::KeysRead => "keys:read",
            Action::KeysRotate => "keys:rotate",
            Action::WebhooksRead => "webhooks:read",
            Action::WebhooksWrite => "webhooks:write",
        }
    }
}

/// Whether a service-account role grants `action`: Viewer reads licensing,
/// Editor also changes it, Admin may do everything.
pub fn role_allows(role: Role, action: Action) -> bool {
    match action {
        Action::LicensingRead | Action::KeysRead => true,
        Action::LicensingWrite | Action::LicensingTokens => {
            matches!(role, Role::Editor | Role::Admin)
        }
        _ => role == Role::Admin,
    }
}

/// Who the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The server admin: may do everything.
    Admin { user: String },
    /// A service account, through one of its tokens.
    ServiceAccount {
        id: i64,
        login: String,
        role: Role,
        token_id: i64,
    },
}

/// An authenticated caller of the portal API, and where the call came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub identity: Identity,
    pub ip: Option<IpAddr>,
}

impl Principal {
    /// Whether the caller may do `action`.
    pub fn may(&self, action: Action) -> bool {
        match &self.identity {
            Identity::Admin { .. } => true,
            Identity::ServiceAccount { role, .. } => role_allows(*role, action),
        }
    }

    /// Refuses with 403, naming the missing permission, unless the caller may do `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.may(action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "You'll need additional permissions to perform this action. Permissions needed: {}",
                action.as_str()
            )))
        }
    }

    /// A name for logs and audit: the admin's user name or the account's login.
    pub fn name(&self) -> &str {
        match &self.identity {
            Identity::Admin { user } => user,
            Identity::ServiceAccount { login, .. } => login,
        }
    }

    pub fn kind(&self) -> ActorKind {
        match self.identity {
            Identity::Admin { .. } => ActorKind::Admin,
            Identity::ServiceAccount { .. } => ActorKind::ServiceAccount,
        }
    }

    /// The caller as the use cases name it in audit events.
    pub fn actor(&self) -> crate::licensing::Actor {
        crate::licensing::Actor {
            kind: self.kind(),
            name: self.name().to_string(),
            ip: self.ip.map(|ip| ip.to_string()),
        }
    }

    /// An audit event for `action` done by this caller to `target_type` `target_id`.
    pub fn event(
        &self,
        action: &str,
        target_type: &str,
        target_id: impl Into<String>,
    ) -> AuditEvent {
        AuditEvent {
            id: 0,
            at: charter_token::now(),
            actor_kind: self.kind(),
            actor: self.name().to_string(),
            action: action.to_string(),
            target_type: target_type.to_string(),
            target_id: target_id.into(),
            ip: self.ip.map(|ip| ip.to_string()),
            detail: None,
            events: Vec::new(),
        }
    }
}

/// The address of the client: the one [`forwarded_client`] found behind a
/// trusted proxy, else the connection's peer (`None` in-process).
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    if let Some(ForwardedClient(ip)) = parts.extensions.get::<ForwardedClient>() {
        return Some(*ip);
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The client's address as a trusted proxy reported it.
#[derive(Debug, Clone, Copy)]
struct ForwardedClient(IpAddr);

/// Middleware (only when proxies are trusted): when the peer is a trusted
/// proxy, the client is the rightmost `X-Forwarded-For` entry that is not
/// itself a trusted proxy. Anything a client wrote further left is ignored,
/// so a client cannot choose its own address.
pub async fn forwarded_client(
    axum::extract::State(trusted): axum::extract::State<std::sync::Arc<Vec<ipnet::IpNet>>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer
        && let Some(ip) = client_behind(&trusted, peer, req.headers())
    {
        req.extensions_mut().insert(ForwardedClient(ip));
    }
    next.run(req).await
}

/// The client behind `peer`, if `peer` is trusted and forwarded one.
fn client_behind(
    trusted: &[ipnet::IpNet],
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return None;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        hops.extend(value.to_str().ok()?.split(',').map(str::trim));
    }
    let mut client = None;
    for hop in hops.iter().rev() {
        let ip = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()));
        let Some(ip) = ip else {
            // Garbage: the last trusted hop is as far as we can believe.
            break;
        };
        let ip = ip.to_canonical();
        client = Some(ip);
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The client's address as an extractor (never rejects).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// The server admin's credentials: an argon2 hash, never the password.
pub struct AdminAuth {
    user: String,
    hash: String,
    /// SHA-256 of passwords already verified, so argon2 runs once per password.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Bounds the argon2 checks running at once (memory).
    hashing: Arc<tokio::sync::Semaphore>,
}

impl AdminAuth {
    /// The admin's user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn new(user: String, hash: String) -> Self {
        AdminAuth {
            user,
            hash,
            verified: Mutex::new(HashSet::new()),
            hashing: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_HASHES)),
        }
    }

    /// An argon2id PHC string for `password`.
    pub fn hash_password(password: &str) -> anyhow::Result<String> {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| anyhow::anyhow!("no randomness"))?;
        Ok(Argon2::default()
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string())
    }

    /// The answer without argon2 when this password was verified before
    /// (a digest and a set lookup: fine on an async worker); `None` when
    /// argon2 must run ([`AdminAuth::check`], on the blocking pool).
    fn check_cached(&self, user: &str, password: &str) -> Option<bool> {
        let digest = sha256(password.as_bytes());
        if !self.verified.lock().is_ok_and(|v| v.contains(&digest)) {
            return None;
        }
        Some(
            aws_lc_rs::constant_time::verify_slices_are_equal(
                user.as_bytes(),
                self.user.as_bytes(),
            )
            .is_ok(),
        )
    }

    fn check(&self, user: &str, password: &str) -> bool {
        let digest = sha256(password.as_bytes());
        // Compare the user in constant time too, and always check the password,
        // so the answer says nothing about which part was wrong.
        let user_ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            user.as_bytes(),
            self.user.as_bytes(),
        )
        .is_ok();
        let cached = self.verified.lock().is_ok_and(|v| v.contains(&digest));
        let password_ok = cached
            || Argon2::default()
                .verify_password(password.as_bytes(), self.hash.as_str())
                .is_ok();
        if password_ok
            && !cached
            && let Ok(mut v) = self.verified.lock()
        {
            v.insert(digest);
        }
        user_ok && password_ok
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The prefix of every service-account token, so leaked ones are easy to spot.
pub const SA_TOKEN_PREFIX: &str = "chr_sa_";

/// A new service-account token (256 random bits) and the hash to store.
pub fn new_sa_token() -> Result<(String, String), ApiError> {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| ApiError::internal("no randomness"))?;
    let token = format!(
        "{SA_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = sa_token_hash(&token);
    Ok((token, hash))
}

/// What is stored of a token: hex SHA-256. The secret has 256 bits of
/// entropy, so a fast hash is enough (no argon2 on every request).
pub fn sa_token_hash(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Failed authentications, limited per client address and account (the
/// user name of HTTP Basic, or "bearer" for tokens): after
/// [`AuthLimiter::MAX_FAILURES`] within [`AuthLimiter::WINDOW`] that account
/// gets 429 from that address until the window ends, even with the right
/// password, while other accounts from the same address still work (a
/// shared proxy address no longer locks everyone out). An address that
/// fails [`AuthLimiter::MAX_ADDRESS_FAILURES`] times over all accounts is
/// refused whole, so spraying user names does not multiply its guesses.
///
/// Each attempt is counted *before* its password is checked and refunded
/// when it succeeds, so a hundred guesses sent at once cannot all be
/// checked before the first failure is counted.
pub struct AuthLimiter {
    max_failures: u32,
    max_address_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<(IpAddr, String), (Instant, u32)>>,
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter::new(Self::MAX_FAILURES, Self::WINDOW)
    }
}

/// Counts in a window: `(start, count)` per key, a window restarting once
/// it has passed; pruned when the map grows large.
fn bump<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, (Instant, u32)>,
    key: K,
    window: Duration,
    by: i32,
) {
    if map.len() >= AuthLimiter::MAX_TRACKED {
        map.retain(|_, (since, _)| since.elapsed() < window);
    }
    let entry = map.entry(key).or_insert((Instant::now(), 0));
    if entry.0.elapsed() >= window {
        *entry = (Instant::now(), 0);
    }
    entry.1 = entry.1.saturating_add_signed(by);
}

fn blocked<K: std::hash::Hash + Eq>(
    map: &HashMap<K, (Instant, u32)>,
    key: &K,
    max: u32,
    window: Duration,
) -> Option<u64> {
    match map.get(key) {
        Some((since, n)) if *n >= max => {
            let left = window.saturating_sub(since.elapsed());
            (!left.is_zero()).then(|| left.as_secs().max(1))
        }
        _ => None,
    }
}

impl AuthLimiter {
    pub const MAX_FAILURES: u32 = 10;
    pub const WINDOW: Duration = Duration::from_secs(300);
    /// Failures one address may have over all accounts in a window.
    pub const MAX_ADDRESS_FAILURES: u32 = 100;
    /// Keys remembered at most; older windows are dropped first.
    const MAX_TRACKED: usize = 100_000;

    pub fn new(max_failures: u32, window: Duration) -> Self {
        AuthLimiter {
            max_failures,
            max_address_failures: Self::MAX_ADDRESS_FAILURES.max(max_failures),
            window,
            failures: Mutex::new(HashMap::new()),
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt at `account` from `ip` as a failure until
    /// [`AuthLimiter::succeeded`] refunds it; `Err(seconds to wait)` (and
    /// nothing counted) when the account or the address has failed too often.
    pub fn attempt(&self, ip: IpAddr, account: &str) -> Result<(), u64> {
        let (Ok(mut failures), Ok(mut by_address)) = (self.failures.lock(), self.by_address.lock())
        else {
            return Ok(());
        };
        let key = (ip, account.to_string());
        if let Some(wait) = blocked(&failures, &key, self.max_failures, self.window)
            .or_else(|| blocked(&by_address, &ip, self.max_address_failures, self.window))
        {
            return Err(wait);
        }
        bump(&mut failures, key, self.window, 1);
        bump(&mut by_address, ip, self.window, 1);
        Ok(())
    }

    /// The attempt succeeded: it is not a failure after all.
    pub fn succeeded(&self, ip: IpAddr, account: &str) {
        let (Ok(mut failures), Ok(mut by_address)) = (self.failures.lock(), self.by_address.lock())
        else {
            return;
        };
        bump(&mut failures, (ip, account.to_string()), self.window, -1);
        bump(&mut by_address, ip, self.window, -1);
    }
}

/// Password checks (argon2, ~19 MiB and tens of ms each) running at once,
/// at most; beyond them a login is answered 503 at once instead of queueing
/// memory. The admin's own password is checked once and then remembered.
const CONCURRENT_HASHES: usize = 2;

/// The account an `Authorization` value tries, for the failure limit: the
/// HTTP Basic user name (at most 64 characters), or "bearer".
fn account_of(scheme: &str, value: &str) -> String {
    if scheme.eq_ignore_ascii_case("basic") {
        let user = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, _)| u.chars().take(64).collect::<String>())
            })
            .unwrap_or_default();
        format!("basic:{user}")
    } else {
        "bearer".to_string()
    }
}

fn unauthorized() -> ApiError {
    let mut e = ApiError::unauthorized("invalid or missing credentials");
    e.challenge = Some("Basic realm=\"charter\"");
    e
}

/// Checks the credentials of `Authorization`; `None` when they are wrong.
async fn authenticate(
    state: &AppState,
    scheme: &str,
    value: &str,
) -> Result<Option<Identity>, ApiError> {
    if scheme.eq_ignore_ascii_case("basic") {
        let Some(decoded) = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return Ok(None);
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return Ok(None);
        };
        let ok = match state.admin.check_cached(user, password) {
            Some(ok) => ok.then(|| user.to_string()),
            None => {
                let Ok(permit) = state.admin.hashing.clone().try_acquire_owned() else {
                    let mut e = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many logins in progress; retry in a second",
                    );
                    e.retry_after = Some(1);
                    return Err(e);
                };
                let admin = state.admin.clone();
                let (user, password) = (user.to_string(), password.to_string());
                // argon2 is deliberately slow: keep it off the async workers.
                tokio::task::spawn_blocking(move || {
                    let ok = admin.check(&user, &password).then_some(user);
                    drop(permit);
                    ok
                })
                .await
                .map_err(ApiError::internal)?
            }
        };
        Ok(ok.map(|user| Identity::Admin { user }))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let token = value.trim();
        if !token.starts_with(SA_TOKEN_PREFIX) || token.len() > 256 {
            return Ok(None);
        }
        let now = charter_token::now();
        Ok(
            match state.store.find_sa_token(&sa_token_hash(token)).await? {
                Some((t, sa)) if !t.has_expired(now) && !sa.is_disabled => {
                    // When it was last used, at most once a minute (a write).
                    if t.last_used_at.is_none_or(|at| at < now - 60)
                        && let Err(e) = state.store.touch_sa_token(t.id, now).await
                    {
                        tracing::warn!(token = t.id, error = %e, "cannot record the token's last use");
                    }
                    Some(Identity::ServiceAccount {
                        id: sa.id,
                        login: sa.login,
                        role: sa.role,
                        token_id: t.id,
                    })
                }
                _ => None,
            },
        )
    } else {
        Ok(None)
    }
}

/// Audits a failed authentication: which account it tried and from where.
/// Only the configured admin user is named: any other text in the user
/// field may be a password typed in the wrong box, so it is never kept;
/// neither is a bearer token.
async fn record_failure(state: &AppState, header: &str, ip: Option<IpAddr>) {
    let (kind, claimed) = match header.split_once(' ') {
        Some((scheme, value)) if scheme.eq_ignore_ascii_case("basic") => {
            let user = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(u, _)| u.to_string()))
                .unwrap_or_default();
            let named = if user == state.admin.user() {
                user
            } else {
                "unknown user".to_string()
            };
            (ActorKind::Admin, named)
        }
        _ => (ActorKind::ServiceAccount, "bearer token".to_string()),
    };
    let event = AuditEvent {
        id: 0,
        at: charter_token::now(),
        actor_kind: kind,
        actor: claimed,
        action: "auth.failed".into(),
        target_type: "auth".into(),
        target_id: String::new(),
        ip: ip.map(|ip| ip.to_string()),
        detail: None,
        events: Vec::new(),
    };
    if let Err(e) = state.store.insert_audit(&event).await {
        tracing::warn!(error = %e, "cannot audit a failed authentication");
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = client_ip(parts);
        // Missing credentials are no attempt: nothing is counted.
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        let identity = check_credentials(state, header, ip).await?;
        let p = Principal { identity, ip };
        // The request's access line says who it was.
        tracing::Span::current().record("by", p.name());
        Ok(p)
    }
}

/// Checks the credentials of an `Authorization` value (`Basic ...` or
/// `Bearer chr_sa_...`) from `ip` under the failed-authentication limit,
/// auditing a failure: the API's extractor and the portal's sign-in both
/// come through here, so they share one limit.
pub(crate) async fn check_credentials(
    state: &AppState,
    header: &str,
    ip: Option<IpAddr>,
) -> Result<Identity, ApiError> {
    let addr = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    let account = account_of(scheme, value);
    if let Err(wait) = state.auth_limiter.attempt(addr, &account) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentication attempts; retry later",
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    let identity = match authenticate(state, scheme, value).await {
        Ok(identity) => identity,
        Err(e) => {
            // Not the caller's failure (busy, or the database is down).
            state.auth_limiter.succeeded(addr, &account);
            return Err(e);
        }
    };
    match identity {
        Some(identity) => {
            state.auth_limiter.succeeded(addr, &account);
            Ok(identity)
        }
        None => {
            tracing::info!(client = %addr, "authentication failed");
            record_failure(state, header, ip).await;
            Err(unauthorized())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_table_says() {
        use Action::*;
        let all = [
            LicensingRead,
            LicensingWrite,
            LicensingDelete,
            LicensingTokens,
            ApiKeysRead,
            ApiKeysDelete,
            ServiceAccountsRead,
            ServiceAccountsWrite,
            ServiceAccountsDelete,
            AuditRead,
        ];
        let granted = |role| {
            all.iter()
                .filter(|a| role_allows(role, **a))
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(granted(Role::Viewer), ["licensing:read"]);
        assert_eq!(
            granted(Role::Editor),
            ["licensing:read", "licensing:write", "licensing:tokens"]
        );
        assert_eq!(granted(Role::Admin).len(), all.len());
    }

    #[test]
    fn limiter_blocks_after_max_failures_until_the_window_ends() {
        let limiter = AuthLimiter::new(3, Duration::from_millis(200));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.attempt(ip, "basic:admin").is_ok());
        }
        assert_eq!(limiter.attempt(ip, "basic:admin"), Err(1));
        assert!(limiter.attempt(other, "basic:admin").is_ok(), "per address");
        assert!(limiter.attempt(ip, "bearer").is_ok(), "per account");
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            limiter.attempt(ip, "basic:admin").is_ok(),
            "the window ended"
        );
        assert!(
            limiter.attempt(ip, "basic:admin").is_ok(),
            "a new window starts from zero"
        );
    }

    #[test]
    fn attempts_count_before_the_check_and_successes_are_refunded() {
        let limiter = AuthLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        // Three in flight at once use up the allowance before any is checked.
        for _ in 0..3 {
            assert!(limiter.attempt(ip, "basic:admin").is_ok());
        }
        assert!(limiter.attempt(ip, "basic:admin").is_err());
        // Two of them were right: refunded.
        limiter.succeeded(ip, "basic:admin");
        limiter.succeeded(ip, "basic:admin");
        assert!(limiter.attempt(ip, "basic:admin").is_ok());
        assert!(limiter.attempt(ip, "basic:admin").is_ok());
        assert!(limiter.attempt(ip, "basic:admin").is_err());
    }

    #[test]
    fn an_address_spraying_accounts_is_refused_whole() {
        let limiter = AuthLimiter::new(10, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        for n in 0..AuthLimiter::MAX_ADDRESS_FAILURES {
            assert!(
                limiter.attempt(ip, &format!("basic:user{n}")).is_ok(),
                "{n}"
            );
        }
        assert!(limiter.attempt(ip, "basic:someone-else").is_err());
    }

    #[test]
    fn tokens_are_prefixed_random_and_stored_as_sha256() {
        let (a, hash) = new_sa_token().expect("token");
        let (b, _) = new_sa_token().expect("token");
        assert!(a.starts_with(SA_TOKEN_PREFIX) && a.len() == SA_TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_eq!(hash, sa_token_hash(&a));
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[SA_TOKEN_PREFIX.len()..]));
    }
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;
    use axum::http::HeaderMap;

    fn trusted() -> Vec<ipnet::IpNet> {
        vec![
            "10.0.0.0/8".parse().expect("net"),
            "192.168.1.7/32".parse().expect("net"),
        ]
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted();
        let h = xff(&["6.6.6.6, 203.0.113.9, 10.1.1.1"]);
        assert_eq!(
            client_behind(&t, ip("10.0.0.2"), &h),
            Some(ip("203.0.113.9"))
        );
        // Several headers read as one list, in order.
        let h = xff(&["6.6.6.6", "203.0.113.9", "192.168.1.7"]);
        assert_eq!(
            client_behind(&t, ip("10.0.0.2"), &h),
            Some(ip("203.0.113.9"))
        );
        // IPv4-mapped IPv6 and a port are the same client.
        let h = xff(&["[::ffff:203.0.113.9]:4711"]);
        assert_eq!(
            client_behind(&t, ip("10.0.0.2"), &h),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_an_address() {
        let h = xff(&["10.9.9.9"]);
        assert_eq!(client_behind(&trusted(), ip("203.0.113.9"), &h), None);
        assert_eq!(client_behind(&[], ip("10.0.0.2"), &h), None);
    }

    #[test]
    fn garbage_stops_at_the_last_believable_hop() {
        let t = trusted();
        let h = xff(&["203.0.113.9, not-an-ip, 10.2.2.2"]);
        assert_eq!(client_behind(&t, ip("10.0.0.2"), &h), Some(ip("10.2.2.2")));
        assert_eq!(client_behind(&t, ip("10.0.0.2"), &xff(&[])), None);
        // All hops trusted: the leftmost is the client.
        let h = xff(&["10.3.3.3, 10.2.2.2"]);
        assert_eq!(client_behind(&t, ip("10.0.0.2"), &h), Some(ip("10.3.3.3")));
    }
}
