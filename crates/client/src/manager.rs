//! [`LicenseManager`]: holds the current token, verifies it offline, keeps it
//! in a [`TokenStore`], guards against a clock set back, and publishes its
//! state on a watch channel. Renewal lives in [`crate::renewal`], key
//! refresh in [`crate::jwks`], the revocation list in [`crate::revocations`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use charter_token::rules::{InstanceUrl, subject_matches};
use charter_token::{Claims, DAY, KeySet, VerifyError};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Notify, watch};

pub use crate::config::{ManagerConfig, RenewalConfig};
use crate::hooks::{LimitViolation, UsageSource};
use crate::revocations::RevocationList;
use crate::state::{Clock, RenewalState, Source, StateInfo, TokenStatus};
use crate::store::{StoreError, TokenStore};

/// A clock reading this far behind the latest time seen counts as set back
/// (tolerates small skew between the issuer's `iat` and the local clock).
pub const ROLLBACK_TOLERANCE_SECS: i64 = 300;

/// Clock skew allowed between issuer and instance: a time the issuer
/// vouches for (a token's `iat`, a revocation list's `iat`) counts as at
/// most this far ahead of the instance's now. Less than
/// [`ROLLBACK_TOLERANCE_SECS`].
pub const NBF_LEEWAY_SECS: i64 = 120;

/// On a manager with an issuer, how far the latest time seen may run ahead
/// of the newest time the issuer vouched for (the `iat` of a verified token
/// or revocation list) and still count: 2 days.
///
/// Why 2 days: a manager with an issuer hears from it all the time: it
/// renews every `update_days` (1 by default) and polls the revocation list
/// every 10 minutes, so in normal operation the newest verified time is
/// minutes old, the cap never bites, and a clock set back is caught as
/// before. A clock run ahead by accident (a bad NTP answer, a VM restored
/// with a wrong clock) then leaves the instance judging at most 2 days into
/// the future once the clock is right, so no token with more than 2 days
/// left is judged expired, renewal is due at once, and the fresh token (or
/// the next revocation list) whose `iat` the clock agrees with resets the
/// latest time seen. Tying it to `update_days` instead would make it vanish
/// with `update_days = 0`; the token's lifetime would let one wrong reading
/// expire every token held until the issuer answers. The price: an
/// instance cut off from its issuer can have its clock set back to 2 days
/// past the last time it heard from it without that being noticed.
///
/// A manager without an issuer (offline) gets no fresh times, so there the
/// latest time seen counts in full (a cap would let any rollback to 2 days
/// past the token's `iat` through): after a clock that ran ahead, a token
/// the issuer signed within [`ROLLBACK_TOLERANCE_SECS`] of the clock still
/// resets it on install, or the operator resets the guard
/// ([`LicenseManager::reset_clock_guard`]).
pub const MAX_SEEN_AHEAD_SECS: i64 = 2 * DAY;

/// Why a token was not installed. The stored license is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("license refused: {0}")]
    Refused(VerifyError),
    #[error("license is for {sub}, not for this instance ({root})")]
    WrongInstance { sub: String, root: String },
    #[error("{0}")]
    NotForThisProduct(String),
    #[error("license {lid} has been revoked by the issuer")]
    Revoked { lid: String },
    #[error("license limits are below current usage: {}", join(.0))]
    LimitExceeded(Vec<LimitViolation>),
    #[error("no built-in license is configured")]
    NoBuiltin,
    #[error("the license changed while renewing; the renewed token was not installed")]
    Superseded,
    #[error("license store failed: {0}")]
    Store(#[from] StoreError),
}

fn join(v: &[LimitViolation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{given:?} is not this instance ({root})")]
    WrongInstance { given: String, root: String },
    #[error("license store failed: {0}")]
    Store(#[from] StoreError),
}

/// What is known about the held token.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    NotLoaded,
    NotFound,
    /// Rejected for good (malformed, bad signature...).
    Invalid(String),
    /// Its key is unknown and the JWKS did not supply it (yet).
    Unverified(String),
    /// The signature checks; times and subject are judged when asked.
    Verified(Box<Claims>),
}

pub(crate) struct Held {
    pub(crate) token: Option<String>,
    pub(crate) check: Check,
    pub(crate) source: Option<Source>,
    pub(crate) renewal: RenewalState,
    /// Why the stored license is not held (corrupt or removed), for the warnings.
    pub(crate) stored_problem: Option<String>,
    /// The stored token last found unusable, so it is judged once, not every tick.
    pub(crate) rejected: Option<String>,
}

/// What a token must say, besides `sub`, to be valid here.
pub(crate) struct Expect {
    pub(crate) products: Option<Vec<String>>,
    pub(crate) issuer: Option<String>,
}

impl Expect {
    /// Why `c` is not for this host (product, issuer), if it is not.
    pub(crate) fn mismatch(&self, c: &Claims) -> Option<String> {
        if let Some(products) = &self.products
            && !c.prod.iter().any(|p| products.contains(p))
        {
            return Some(format!(
                "license is for {}, not for {}",
                list(&c.prod),
                list(products)
            ));
        }
        if let Some(iss) = &self.issuer
            && !same_issuer(&c.iss, iss)
        {
            return Some(format!(
                "license was issued by {:?}, not by {iss}",
                c.iss.chars().take(200).collect::<String>()
            ));
        }
        None
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        return "no product".into();
    }
    v.iter()
        .map(|p| format!("{:?}", p.chars().take(100).collect::<String>()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `iss` equals the expected issuer, as written or once both are normalised
/// as URLs (case of scheme and host, default port, trailing `/`).
fn same_issuer(iss: &str, expected: &str) -> bool {
    if iss == expected {
        return true;
    }
    match (InstanceUrl::parse(iss), InstanceUrl::parse(expected)) {
        (Ok(a), Ok(b)) => a == b && !a.is_pattern(),
        _ => false,
    }
}

pub(crate) struct Inner {
    pub(crate) root_url: InstanceUrl,
    pub(crate) expect: Expect,
    pub(crate) pinned: KeySet,
    pub(crate) keys: RwLock<Arc<KeySet>>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) issuer: Option<String>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) jwks_file: Option<std::path::PathBuf>,
    pub(crate) jwks_min_interval: Duration,
    pub(crate) jwks_last_fetch: Mutex<Option<Instant>>,
    pub(crate) jwks_refresh_interval: Duration,
    /// When the next scheduled key refresh is due.
    pub(crate) jwks_next: Mutex<Instant>,
    pub(crate) revocations_url: Option<String>,
    pub(crate) revocations_interval: Duration,
    /// Serialises fetches of the revocation list.
    pub(crate) revocations_poll: Mutex<()>,
    /// When the next scheduled poll is due (`None`: at once).
    pub(crate) revocations_next: Mutex<Option<Instant>>,
    /// The last good revocation list.
    pub(crate) revoked: RwLock<Option<Arc<RevocationList>>>,
    pub(crate) builtin: Option<String>,
    pub(crate) usage: Arc<dyn UsageSource>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) renewal_cfg: RenewalConfig,
    pub(crate) held: RwLock<Held>,
    /// The latest clock reading seen (clock rollback guard).
    pub(crate) latest_seen: AtomicI64,
    /// The newest time the issuer vouched for: the `iat` of a verified
    /// token or revocation list (`i64::MIN`: none yet).
    pub(crate) newest_iat: AtomicI64,
    /// The latest time seen as read back from the store at start
    /// (`i64::MIN`: no record).
    pub(crate) recorded_seen: AtomicI64,
    /// How far the latest time seen counts past `newest_iat`:
    /// [`MAX_SEEN_AHEAD_SECS`] with an issuer, unlimited without.
    pub(crate) seen_ahead_cap: i64,
    pub(crate) persisted_seen: AtomicI64,
    /// Serialises changes of the held token (install, remove, renew).
    pub(crate) write: Mutex<()>,
    pub(crate) renewing: Mutex<()>,
    /// The issuer's last `Retry-After` (seconds; 0 for none), a floor for the next retry.
    pub(crate) retry_after: std::sync::atomic::AtomicU64,
    pub(crate) tx: watch::Sender<StateInfo>,
    pub(crate) wake: Notify,
    pub(crate) http: reqwest::Client,
}

/// The instance side of Charter: cheap to clone, share it with every router.
#[derive(Clone)]
pub struct LicenseManager {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for LicenseManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseManager")
            .field("root_url", &self.inner.root_url)
            .field("status", &self.status())
            .finish()
    }
}

impl LicenseManager {
    /// A manager in state `NotLoaded`; call [`LicenseManager::load`] next
    /// (or use [`LicenseManager::start`]).
    pub fn new(cfg: ManagerConfig) -> Self {
        let jwks_url = cfg.jwks_url.or_else(|| {
            cfg.issuer
                .as_ref()
                .map(|i| format!("{}/.well-known/jwks.json", i.trim_end_matches('/')))
        });
        let revocations_url = cfg.revocations_url.or_else(|| {
            cfg.issuer
                .as_ref()
                .map(|i| format!("{}/api/revocations", i.trim_end_matches('/')))
        });
        let http = reqwest::Client::builder()
            .timeout(cfg.renewal.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("charter-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let now = cfg.clock.now();
        let initial = StateInfo {
            status: TokenStatus::NotLoaded,
            valid: false,
            claims: None,
            source: None,
            reason: None,
            warnings: Vec::new(),
            renewal: RenewalState::default(),
        };
        let (tx, _) = watch::channel(initial);
        let online = cfg.issuer.is_some() || revocations_url.is_some();
        let mut keys = cfg.jwks_keys;
        for kid in cfg.keys.kids() {
            if let Some(key) = cfg.keys.get(kid) {
                keys.insert(key.clone());
            }
        }
        LicenseManager {
            inner: Arc::new(Inner {
                root_url: cfg.root_url,
                expect: Expect {
                    products: cfg.products,
                    issuer: cfg.expected_issuer,
                },
                keys: RwLock::new(Arc::new(keys)),
                pinned: cfg.keys,
                store: cfg.store,
                issuer: cfg.issuer,
                jwks_url,
                jwks_file: cfg.jwks_file,
                jwks_min_interval: cfg.jwks_min_interval,
                jwks_last_fetch: Mutex::new(None),
                jwks_refresh_interval: cfg.jwks_refresh_interval,
                jwks_next: Mutex::new(Instant::now() + cfg.jwks_refresh_interval),
                revocations_url,
                revocations_interval: cfg.revocations_interval,
                revocations_poll: Mutex::new(()),
                revocations_next: Mutex::new(None),
                revoked: RwLock::new(None),
                builtin: cfg.builtin_license,
                usage: cfg.usage,
                clock: cfg.clock,
                renewal_cfg: cfg.renewal,
                held: RwLock::new(Held {
                    token: None,
                    check: Check::NotLoaded,
                    source: None,
                    renewal: RenewalState::default(),
                    stored_problem: None,
                    rejected: None,
                }),
                latest_seen: AtomicI64::new(now),
                newest_iat: AtomicI64::new(i64::MIN),
                recorded_seen: AtomicI64::new(i64::MIN),
                seen_ahead_cap: if online {
                    MAX_SEEN_AHEAD_SECS
                } else {
                    i64::MAX
                },
                persisted_seen: AtomicI64::new(i64::MIN),
                write: Mutex::new(()),
                renewing: Mutex::new(()),
                retry_after: std::sync::atomic::AtomicU64::new(0),
                tx,
                wake: Notify::new(),
                http,
            }),
        }
    }

    /// [`LicenseManager::new`] then [`LicenseManager::load`].
    pub async fn start(cfg: ManagerConfig) -> Result<Self, StoreError> {
        let manager = Self::new(cfg);
        manager.load().await?;
        Ok(manager)
    }

    /// Reads the store: the token (or the built-in license when none is
    /// stored), the latest time seen and the last good revocation list, then
    /// verifies. Without a record of the latest time seen (`license.seen`
    /// deleted), the clock rollback guard falls back to the newest time the
    /// issuer vouched for: the `iat` of the verified token and of the
    /// verified revocation list.
    pub async fn load(&self) -> Result<StateInfo, StoreError> {
        let _w = self.inner.write.lock().await;
        let (token, seen) = self
            .blocking(|s| Ok((s.load()?, s.load_latest_seen()?)))
            .await?;
        if let Some(seen) = seen {
            self.inner.latest_seen.fetch_max(seen, Ordering::SeqCst);
            self.inner.persisted_seen.store(seen, Ordering::SeqCst);
            self.inner.recorded_seen.store(seen, Ordering::SeqCst);
        }
        self.restore_revocations().await;
        let stored_token = token.clone();
        let (token, check, source, problem) = self.stored_or_fallback(token, false).await;
        if let Check::Verified(c) = &check {
            self.credit_issuer_time(c.iat, Credit::Restored);
        }
        self.set_held(|h| {
            h.token = token;
            h.check = check;
            h.source = source;
            h.renewal = RenewalState::default();
            h.rejected = problem.is_some().then_some(stored_token).flatten();
            h.stored_problem = problem;
        });
        Ok(self.publish())
    }

    /// What to hold given what the store has: the stored token, unless it
    /// is corrupt (then the built-in license if that verifies, saying so);
    /// the built-in license when nothing is stored. `removed` tells a token
    /// that disappeared while running from a store that never had one.
    async fn stored_or_fallback(
        &self,
        stored: Option<String>,
        removed: bool,
    ) -> (Option<String>, Check, Option<Source>, Option<String>) {
        let builtin = self.inner.builtin.is_some();
        let Some(t) = stored else {
            let (token, check, source) = self.fallback().await;
            let problem = removed.then(|| {
                let m = if builtin {
                    "the stored license was removed; using the built-in license"
                } else {
                    "the stored license was removed; no license is held"
                };
                tracing::warn!("{m}");
                m.to_string()
            });
            return (token, check, source, problem);
        };
        let check = self.check_token(&t).await;
        let Check::Invalid(reason) = &check else {
            return (Some(t), check, Some(Source::Stored), None);
        };
        if builtin {
            let (token, fb, source) = self.fallback().await;
            if matches!(fb, Check::Verified(_)) {
                let m = format!(
                    "the stored license is unusable ({reason}); using the built-in license"
                );
                tracing::warn!(reason = %reason, "the stored license is unusable; using the built-in license");
                return (token, fb, source, Some(m));
            }
        }
        let m = format!("the stored license is unusable ({reason})");
        tracing::warn!(reason = %reason, "the stored license is unusable");
        (Some(t), check, Some(Source::Stored), Some(m))
    }

    /// What is held when nothing is stored: the built-in license, if any.
    async fn fallback(&self) -> (Option<String>, Check, Option<Source>) {
        match &self.inner.builtin {
            Some(b) => {
                let token = b.trim().to_string();
                let check = self.check_token(&token).await;
                (Some(token), check, Some(Source::BuiltIn))
            }
            None => (None, Check::NotFound, None),
        }
    }

    /// Verifies `token` (signature, expiry, subject, product and issuer,
    /// revocation) without installing it. A token whose `nbf` is still in
    /// the future passes: it is held as status 2 Loaded until then.
    pub async fn check_candidate(&self, token: &str) -> Result<Claims, InstallError> {
        let claims = self
            .verify_signature(token.trim())
            .await
            .map_err(InstallError::Refused)?;
        let now = self.judging_time(claims.iat);
        if now >= claims.exp {
            return Err(InstallError::Refused(VerifyError::Expired(Box::new(
                claims,
            ))));
        }
        if !subject_matches(&claims.sub, &self.inner.root_url) {
            return Err(InstallError::WrongInstance {
                sub: claims.sub,
                root: self.inner.root_url.to_string(),
            });
        }
        if let Some(why) = self.inner.expect.mismatch(&claims) {
            return Err(InstallError::NotForThisProduct(why));
        }
        if self.is_revoked(&claims.lid) {
            return Err(InstallError::Revoked { lid: claims.lid });
        }
        Ok(claims)
    }

    /// The time a document just received from the issuer (a token to
    /// install, a revocation list) issued at `iat` is judged at: the
    /// effective now as it will be once `iat` is credited (see
    /// [`LicenseManager::credit_issuer_time`]). So a fresh document whose
    /// `iat` the clock agrees with is judged at the clock, whatever a clock
    /// run ahead once left behind, and a token from an issuer whose clock
    /// runs a little ahead is valid at once.
    pub(crate) fn judging_time(&self, iat: i64) -> i64 {
        let now = self.inner.clock.now();
        let effective = self.effective_now();
        let t = iat.min(effective.saturating_add(NBF_LEEWAY_SECS));
        let newest = self.inner.newest_iat.load(Ordering::SeqCst);
        if t > newest && now.abs_diff(t) <= ROLLBACK_TOLERANCE_SECS.unsigned_abs() {
            return now.max(t);
        }
        let seen = self.inner.latest_seen.load(Ordering::SeqCst).max(now);
        now.max(floor(seen, newest.max(t), self.inner.seen_ahead_cap))
    }

    /// Takes `t`, a time the issuer vouched for (the `iat` of a verified
    /// token or revocation list), as a lower bound of the real time: it
    /// raises the newest verified time, which the clock rollback guard never
    /// judges before and (with an issuer) lets the latest time seen run at
    /// most [`MAX_SEEN_AHEAD_SECS`] beyond. How far `t` counts depends on
    /// `how` (see [`Credit`]). A [`Credit::Fresh`] time the clock agrees with
    /// (within [`ROLLBACK_TOLERANCE_SECS`]) also tells that a latest time
    /// seen further ahead was a clock run ahead: it is reset to now.
    pub(crate) fn credit_issuer_time(&self, t: i64, how: Credit) {
        let now = self.inner.clock.now();
        let bound = match how {
            Credit::Fresh | Credit::Known => self.effective_now().saturating_add(NBF_LEEWAY_SECS),
            Credit::Restored => match self.inner.recorded_seen.load(Ordering::SeqCst) {
                i64::MIN => i64::MAX,
                seen => seen.max(now).saturating_add(NBF_LEEWAY_SECS),
            },
        };
        let t = t.min(bound);
        let before = self.inner.newest_iat.fetch_max(t, Ordering::SeqCst);
        if how == Credit::Fresh
            && t > before
            && now.abs_diff(t) <= ROLLBACK_TOLERANCE_SECS.unsigned_abs()
        {
            let to = now.max(t);
            let seen = self.inner.latest_seen.swap(to, Ordering::SeqCst);
            if seen > to.saturating_add(ROLLBACK_TOLERANCE_SECS) {
                tracing::warn!(
                    latest_seen = %crate::fmt_time(seen),
                    now = %crate::fmt_time(to),
                    "the clock agrees with the issuer's and the latest time seen was ahead of both; reset"
                );
            }
        }
    }

    /// The operator's word that the clock is right now (after it ran
    /// ahead, or an issuer's clock did): the clock rollback guard forgets
    /// the latest time seen and every issuer time ahead of the clock (beyond
    /// [`NBF_LEEWAY_SECS`]), and records now. Earlier issuer times still
    /// count. This trusts the operator, who could delete the record anyway;
    /// the guard is against clocks, not against them. `charter instance
    /// --reset-clock-guard` calls it at start.
    pub async fn reset_clock_guard(&self) -> Result<StateInfo, StoreError> {
        let now = self.inner.clock.now();
        let before = self.inner.latest_seen.swap(now, Ordering::SeqCst);
        self.inner
            .newest_iat
            .fetch_min(now.saturating_add(NBF_LEEWAY_SECS), Ordering::SeqCst);
        let value = self.floor_at(now);
        self.blocking(move |s| s.save_latest_seen(value)).await?;
        self.inner.persisted_seen.store(value, Ordering::SeqCst);
        tracing::warn!(
            was = %crate::fmt_time(before),
            now = %crate::fmt_time(value),
            "clock rollback guard reset"
        );
        Ok(self.publish())
    }

    /// The rollback floor at clock reading `now` (recorded as seen): the
    /// latest time seen, capped at [`MAX_SEEN_AHEAD_SECS`] past the newest
    /// verified issuer time, and never before that time.
    pub(crate) fn floor_at(&self, now: i64) -> i64 {
        let seen = self
            .inner
            .latest_seen
            .fetch_max(now, Ordering::SeqCst)
            .max(now);
        floor(
            seen,
            self.inner.newest_iat.load(Ordering::SeqCst),
            self.inner.seen_ahead_cap,
        )
    }

    /// Verifies and installs a token: refused when tampered, expired, not
    /// yet valid, for another instance, signed by an unknown key or for a
    /// license on the revocation list, and then nothing changes.
    pub async fn install(&self, token: &str) -> Result<StateInfo, InstallError> {
        self.install_with(token, Source::Installed, |_| Ok(()))
            .await
    }

    /// [`LicenseManager::install`] with an extra check by the caller (Redis
    /// compares limits with usage) between verification and storing.
    pub async fn install_with(
        &self,
        token: &str,
        source: Source,
        extra: impl FnOnce(&Claims) -> Result<(), InstallError>,
    ) -> Result<StateInfo, InstallError> {
        self.install_inner(token, source, extra, None).await
    }

    /// Installs; with `replaces`, only if that token is still the one held
    /// (a renewal must not overwrite a license installed meanwhile).
    pub(crate) async fn install_inner(
        &self,
        token: &str,
        source: Source,
        extra: impl FnOnce(&Claims) -> Result<(), InstallError>,
        replaces: Option<&str>,
    ) -> Result<StateInfo, InstallError> {
        let token = token.trim();
        let claims = self.check_candidate(token).await?;
        extra(&claims)?;
        let _w = self.inner.write.lock().await;
        if let Some(old) = replaces
            && self.held().token.as_deref() != Some(old)
        {
            return Err(InstallError::Superseded);
        }
        // A revocation list taken while this token was being checked.
        if self.is_revoked(&claims.lid) {
            return Err(InstallError::Revoked { lid: claims.lid });
        }
        let owned = token.to_string();
        self.blocking(move |s| s.save(&owned)).await?;
        // Installed or renewed just now: a fresh time from the issuer.
        self.credit_issuer_time(claims.iat, Credit::Fresh);
        self.set_held(|h| {
            h.token = Some(token.to_string());
            h.check = Check::Verified(Box::new(claims));
            h.source = Some(source);
            h.stored_problem = None;
            h.rejected = None;
            h.renewal.last_error = None;
            h.renewal.failures = 0;
            h.renewal.next_attempt_at = None;
        });
        self.persist_seen().await;
        self.inner.wake.notify_one();
        Ok(self.publish())
    }

    /// Removes the stored token (Grafana's DELETE); the built-in license, if
    /// any, takes over. `instance` must name this instance; no error when
    /// nothing was stored.
    pub async fn remove(&self, instance: &str) -> Result<StateInfo, RemoveError> {
        let wrong = || RemoveError::WrongInstance {
            given: instance.chars().take(200).collect(),
            root: self.inner.root_url.to_string(),
        };
        let given = InstanceUrl::parse(instance).map_err(|_| wrong())?;
        if given != self.inner.root_url {
            return Err(wrong());
        }
        self.remove_stored().await.map_err(RemoveError::Store)
    }

    /// Removes the stored token; the built-in license, if any, takes over,
    /// else nothing is held (status 4 NotFound). Consul's DELETE on a host
    /// without a built-in license.
    pub async fn remove_stored(&self) -> Result<StateInfo, StoreError> {
        let _w = self.inner.write.lock().await;
        self.blocking(|s| s.clear()).await?;
        // As after a restart with nothing stored.
        let (token, check, source) = self.fallback().await;
        self.set_held(|h| {
            h.token = token;
            h.check = check;
            h.source = source;
            h.renewal = RenewalState::default();
            h.stored_problem = None;
            h.rejected = None;
        });
        Ok(self.publish())
    }

    /// Goes back to the built-in license (Consul's DELETE): fails, changing
    /// nothing, when there is none or it is not valid (now).
    pub async fn revert_to_builtin(&self) -> Result<StateInfo, InstallError> {
        let builtin = self.inner.builtin.clone().ok_or(InstallError::NoBuiltin)?;
        let claims = self.check_candidate(&builtin).await?;
        if claims.nbf > self.effective_now() {
            return Err(InstallError::Refused(VerifyError::NotYetValid {
                nbf: claims.nbf,
            }));
        }
        let _w = self.inner.write.lock().await;
        self.blocking(|s| s.clear()).await?;
        self.set_held(|h| {
            h.token = Some(builtin.trim().to_string());
            h.check = Check::Verified(Box::new(claims));
            h.source = Some(Source::BuiltIn);
            h.renewal = RenewalState::default();
            h.stored_problem = None;
            h.rejected = None;
        });
        self.inner.wake.notify_one();
        Ok(self.publish())
    }

    /// Takes up a token another replica stored, re-judges the token, retries
    /// an unverified one, polls the revocation list when due, persists the
    /// latest time seen and publishes. The background task calls it every
    /// `check_interval`.
    pub async fn tick(&self) -> StateInfo {
        if let Err(e) = self.sync_with_store().await {
            tracing::warn!(error = %e, "could not read the license store");
        }
        let pending = {
            let held = self.held();
            match &held.check {
                Check::Unverified(_) => held.token.clone(),
                _ => None,
            }
        };
        if let Some(token) = pending {
            let check = self.check_token(&token).await;
            let _w = self.inner.write.lock().await;
            if let Check::Verified(c) = &check {
                self.credit_issuer_time(c.iat, Credit::Known);
            }
            self.set_held(|h| {
                if h.token.as_deref() == Some(token.as_str()) {
                    h.check = check;
                }
            });
        }
        self.refresh_keys_if_due().await;
        self.poll_revocations_if_due().await;
        self.persist_seen().await;
        self.publish()
    }

    /// Takes up what another replica stored (or removed) in a shared store.
    async fn sync_with_store(&self) -> Result<(), StoreError> {
        let _w = self.inner.write.lock().await;
        let stored = self.blocking(|s| s.load()).await?;
        let (held, source, rejected) = {
            let h = self.held();
            (h.token.clone(), h.source, h.rejected.clone())
        };
        let unchanged = match &stored {
            Some(t) => {
                (held.as_deref() == Some(t.as_str()) && source != Some(Source::BuiltIn))
                    || rejected.as_deref() == Some(t.as_str())
            }
            None => held.is_none() || source == Some(Source::BuiltIn),
        };
        if unchanged || matches!(self.held().check, Check::NotLoaded) {
            return Ok(());
        }
        let stored_token = stored.clone();
        let (token, check, source, problem) = self.stored_or_fallback(stored, true).await;
        let rejected = problem.is_some().then_some(stored_token).flatten();
        tracing::info!("license changed in the store; taken up");
        if let Check::Verified(c) = &check {
            self.credit_issuer_time(c.iat, Credit::Known);
        }
        self.set_held(|h| {
            h.token = token;
            h.check = check;
            h.source = source;
            h.renewal.last_error = None;
            h.renewal.failures = 0;
            h.renewal.next_attempt_at = None;
            h.stored_problem = problem;
            h.rejected = rejected;
        });
        Ok(())
    }

    /// Publishes the current snapshot if it changed, and returns it.
    pub(crate) fn publish(&self) -> StateInfo {
        let info = self.state_info();
        self.inner.tx.send_if_modified(|cur| {
            if *cur == info {
                false
            } else {
                *cur = info.clone();
                true
            }
        });
        info
    }

    pub(crate) async fn check_token(&self, token: &str) -> Check {
        match self.verify_signature(token).await {
            Ok(claims) => Check::Verified(Box::new(claims)),
            Err(e @ VerifyError::UnknownKey(_)) => Check::Unverified(e.to_string()),
            Err(e) => Check::Invalid(e.to_string()),
        }
    }

    /// The signature check, refreshing the keys once when the `kid` is unknown.
    pub(crate) async fn verify_signature(&self, token: &str) -> Result<Claims, VerifyError> {
        let keys = self.keys();
        match keys.verify_signature(token) {
            Err(VerifyError::UnknownKey(kid)) => {
                if self.refresh_keys().await {
                    self.keys().verify_signature(token)
                } else {
                    Err(VerifyError::UnknownKey(kid))
                }
            }
            other => other,
        }
    }

    /// [`KeySet::verify_payload`] for another signed document of type `typ`
    /// (the revocation list), refreshing the keys once when the `kid` is
    /// unknown.
    pub(crate) async fn verify_document<T: DeserializeOwned>(
        &self,
        jws: &str,
        typ: &str,
    ) -> Result<T, VerifyError> {
        match self.keys().verify_payload(jws, typ) {
            Err(VerifyError::UnknownKey(kid)) => {
                if self.refresh_keys().await {
                    self.keys().verify_payload(jws, typ)
                } else {
                    Err(VerifyError::UnknownKey(kid))
                }
            }
            other => other,
        }
    }

    pub(crate) fn keys(&self) -> Arc<KeySet> {
        match self.inner.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn held(&self) -> RwLockReadGuard<'_, Held> {
        self.inner
            .held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_held(&self, f: impl FnOnce(&mut Held)) {
        let mut guard: RwLockWriteGuard<'_, Held> = self
            .inner
            .held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard);
    }

    /// Runs a store call on a blocking thread.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn TokenStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }

    /// Records the rollback floor (the latest time seen as capped by
    /// [`MAX_SEEN_AHEAD_SECS`] with an issuer) when it moved on by more than a minute, or
    /// back (a reset, or a record left too far ahead).
    async fn persist_seen(&self) {
        let seen = self.floor_at(self.inner.clock.now());
        let persisted = self.inner.persisted_seen.load(Ordering::SeqCst);
        if persisted != i64::MIN && (persisted..=persisted.saturating_add(60)).contains(&seen) {
            return;
        }
        match self.blocking(move |s| s.save_latest_seen(seen)).await {
            Ok(()) => {
                self.inner.persisted_seen.store(seen, Ordering::SeqCst);
            }
            Err(e) => tracing::warn!(error = %e, "could not record the latest time seen"),
        }
    }
}

/// How far a time the issuer vouched for counts in
/// [`LicenseManager::credit_issuer_time`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credit {
    /// Just received from the issuer (installed, renewed, polled): counts up
    /// to [`NBF_LEEWAY_SECS`] past the effective now (an issuer clock a
    /// little ahead), and may reset a latest time seen that ran ahead.
    Fresh,
    /// Verified while running, not just received (a token taken up from the
    /// store, or whose key arrived late): as `Fresh`, without the reset.
    Known,
    /// Read back at start. It was taken when it was at most a little ahead,
    /// so it counts up to the recorded latest time seen (plus the leeway);
    /// without a record (`license.seen` deleted) in full: then it is the
    /// only trace of time the instance has, and the clock may be set back.
    Restored,
}

/// The rollback floor for latest time seen `seen`, newest verified issuer
/// time `newest` (`i64::MIN` for none) and how far `seen` counts past it.
pub(crate) fn floor(seen: i64, newest: i64, cap: i64) -> i64 {
    if newest == i64::MIN {
        return seen;
    }
    newest.max(seen.min(newest.saturating_add(cap)))
}
