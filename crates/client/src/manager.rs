//! [`LicenseManager`]: holds the current token, verifies it offline, keeps it
//! in a [`TokenStore`], guards against a clock set back, and publishes its
//! state on a watch channel. Renewal lives in [`crate::renewal`], key
//! refresh in [`crate::jwks`], the revocation list in [`crate::revocations`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use charter_token::rules::{InstanceUrl, subject_matches};
use charter_token::{Claims, KeySet, VerifyError, check_times};
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

/// How far in the future a new token's `nbf` (= its `iat`) may be: clock
/// skew between issuer and instance. Less than [`ROLLBACK_TOLERANCE_SECS`].
pub const NBF_LEEWAY_SECS: i64 = 120;

/// Why a token was not installed. The stored license is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("license refused: {0}")]
    Refused(VerifyError),
    #[error("license is for {sub}, not for this instance ({root})")]
    WrongInstance { sub: String, root: String },
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

pub(crate) struct Inner {
    pub(crate) root_url: InstanceUrl,
    pub(crate) pinned: KeySet,
    pub(crate) keys: RwLock<Arc<KeySet>>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) issuer: Option<String>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) jwks_min_interval: Duration,
    pub(crate) jwks_last_fetch: Mutex<Option<Instant>>,
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
    pub(crate) latest_seen: AtomicI64,
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
        LicenseManager {
            inner: Arc::new(Inner {
                root_url: cfg.root_url,
                keys: RwLock::new(Arc::new(cfg.keys.clone())),
                pinned: cfg.keys,
                store: cfg.store,
                issuer: cfg.issuer,
                jwks_url,
                jwks_min_interval: cfg.jwks_min_interval,
                jwks_last_fetch: Mutex::new(None),
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
    /// verifies.
    pub async fn load(&self) -> Result<StateInfo, StoreError> {
        let _w = self.inner.write.lock().await;
        self.restore_revocations().await;
        let (token, seen) = self
            .blocking(|s| Ok((s.load()?, s.load_latest_seen()?)))
            .await?;
        if let Some(seen) = seen {
            self.inner.latest_seen.fetch_max(seen, Ordering::SeqCst);
            self.inner.persisted_seen.store(seen, Ordering::SeqCst);
        }
        let stored_token = token.clone();
        let (token, check, source, problem) = self.stored_or_fallback(token, false).await;
        if let Check::Verified(c) = &check {
            self.inner.latest_seen.fetch_max(c.iat, Ordering::SeqCst);
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

    /// Verifies `token` (signature, times, subject) without installing it.
    pub async fn check_candidate(&self, token: &str) -> Result<Claims, InstallError> {
        let claims = self
            .verify_signature(token.trim())
            .await
            .map_err(InstallError::Refused)?;
        let now = self.effective_now();
        // A fresh token from an issuer whose clock runs a little ahead is
        // accepted: its `iat` then raises the latest time seen to its `nbf`.
        if claims.nbf > now && claims.nbf <= now + NBF_LEEWAY_SECS && claims.iat >= claims.nbf {
            if now >= claims.exp {
                return Err(InstallError::Refused(VerifyError::Expired(Box::new(
                    claims,
                ))));
            }
        } else {
            check_times(claims.clone(), now).map_err(InstallError::Refused)?;
        }
        if !subject_matches(&claims.sub, &self.inner.root_url) {
            return Err(InstallError::WrongInstance {
                sub: claims.sub,
                root: self.inner.root_url.to_string(),
            });
        }
        if self.is_revoked(&claims.lid) {
            return Err(InstallError::Revoked { lid: claims.lid });
        }
        Ok(claims)
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
        self.inner
            .latest_seen
            .fetch_max(claims.iat, Ordering::SeqCst);
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
    /// nothing, when there is none or it is not valid.
    pub async fn revert_to_builtin(&self) -> Result<StateInfo, InstallError> {
        let builtin = self.inner.builtin.clone().ok_or(InstallError::NoBuiltin)?;
        let claims = self.check_candidate(&builtin).await?;
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
            self.set_held(|h| {
                if h.token.as_deref() == Some(token.as_str()) {
                    h.check = check;
                }
            });
        }
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
            self.inner.latest_seen.fetch_max(c.iat, Ordering::SeqCst);
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

    async fn check_token(&self, token: &str) -> Check {
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

    /// [`KeySet::verify_payload`] for another signed document (the
    /// revocation list), refreshing the keys once when the `kid` is unknown.
    pub(crate) async fn verify_document<T: DeserializeOwned>(
        &self,
        jws: &str,
    ) -> Result<T, VerifyError> {
        match self.keys().verify_payload(jws) {
            Err(VerifyError::UnknownKey(kid)) => {
                if self.refresh_keys().await {
                    self.keys().verify_payload(jws)
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

    async fn persist_seen(&self) {
        let seen = self.effective_now();
        let persisted = self.inner.persisted_seen.load(Ordering::SeqCst);
        if seen <= persisted.saturating_add(60) && persisted != i64::MIN {
            return;
        }
        match self.blocking(move |s| s.save_latest_seen(seen)).await {
            Ok(()) => {
                self.inner.persisted_seen.fetch_max(seen, Ordering::SeqCst);
            }
            Err(e) => tracing::warn!(error = %e, "could not record the latest time seen"),
        }
    }
}
