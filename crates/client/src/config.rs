//! How a [`crate::LicenseManager`] is set up: [`ManagerConfig`] (keys,
//! store, issuer, hooks, clock, revocation polling) and [`RenewalConfig`]
//! (timings).

use std::sync::Arc;
use std::time::Duration;

use charter_token::KeySet;
use charter_token::rules::InstanceUrl;

use crate::hooks::{NoUsage, UsageSource};
use crate::state::{Clock, SystemClock};
use crate::store::TokenStore;

/// How the manager is set up. [`ManagerConfig::new`] gives the defaults.
pub struct ManagerConfig {
    /// This instance's root URL, matched against each token's `sub`.
    pub root_url: InstanceUrl,
    /// The vendor's public keys, pinned at start; never removed by a refresh.
    pub keys: KeySet,
    pub store: Arc<dyn TokenStore>,
    /// The issuer's base URL (renewal, JWKS, revocations); `None` disables them.
    pub issuer: Option<String>,
    /// Where to refresh keys from; default `<issuer>/.well-known/jwks.json`.
    pub jwks_url: Option<String>,
    /// At most one JWKS fetch per this interval (unknown `kid`s are attacker-chosen).
    pub jwks_min_interval: Duration,
    /// Where to poll the signed revocation list; default
    /// `<issuer>/api/revocations`.
    pub revocations_url: Option<String>,
    /// How often [`crate::LicenseManager::tick`] polls the revocation list
    /// (default 10 minutes); after a failed poll it retries sooner
    /// (`renewal.backoff_base`, if shorter).
    pub revocations_interval: Duration,
    /// The license the host ships with (Consul's DELETE falls back to it).
    pub builtin_license: Option<String>,
    /// The host's usage, sent with each renewal and checked by Redis' PUT.
    pub usage: Arc<dyn UsageSource>,
    pub clock: Arc<dyn Clock>,
    pub renewal: RenewalConfig,
}

/// Timing of the background task and of calls to the issuer.
#[derive(Debug, Clone)]
pub struct RenewalConfig {
    /// First retry delay after a failed renewal; doubles per failure.
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// How often the background task re-checks the token (expiry, warnings),
    /// and the least time between two successful renewals.
    pub check_interval: Duration,
    /// Timeout of each call to the issuer.
    pub request_timeout: Duration,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        RenewalConfig {
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            check_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ManagerConfig {
    pub fn new(root_url: InstanceUrl, keys: KeySet, store: Arc<dyn TokenStore>) -> Self {
        ManagerConfig {
            root_url,
            keys,
            store,
            issuer: None,
            jwks_url: None,
            jwks_min_interval: Duration::from_secs(300),
            revocations_url: None,
            revocations_interval: Duration::from_secs(600),
            builtin_license: None,
            usage: Arc::new(NoUsage),
            clock: Arc::new(SystemClock),
            renewal: RenewalConfig::default(),
        }
    }
}
