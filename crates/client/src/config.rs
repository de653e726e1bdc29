//! How a [`crate::LicenseManager`] is set up: [`ManagerConfig`] (keys,
//! store, issuer, hooks, clock, revocation polling) and [`RenewalConfig`]
//! (timings).

use std::path::PathBuf;
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
    /// The vendor's public keys, pinned by the host (built in, or given at
    /// start); never removed by a refresh.
    pub keys: KeySet,
    /// Keys known at start from the JWKS source (`jwks_file`, or fetched
    /// from `jwks_url`), not pinned: a later refresh from a source that can
    /// be trusted to drop keys (a file, or https) removes those it no longer
    /// publishes. `charter instance` puts the keys it fetched or read at
    /// start here.
    pub jwks_keys: KeySet,
    pub store: Arc<dyn TokenStore>,
    /// The issuer's base URL (renewal, JWKS, revocations); `None` disables them.
    pub issuer: Option<String>,
    /// Where to refresh keys from; default `<issuer>/.well-known/jwks.json`.
    /// A fetch over https replaces the unpinned keys with what it publishes
    /// (a key the issuer retired stops verifying); over plain http (demos on
    /// loopback, where anyone on the path could drop keys) keys are only added.
    pub jwks_url: Option<String>,
    /// A JWKS file to refresh keys from instead of `jwks_url`: re-read on
    /// an unknown `kid` and every `jwks_refresh_interval`; keys it no longer
    /// lists are dropped (pinned keys stay).
    pub jwks_file: Option<PathBuf>,
    /// At most one JWKS fetch per this interval (unknown `kid`s are attacker-chosen).
    pub jwks_min_interval: Duration,
    /// How often [`crate::LicenseManager::tick`] refreshes the keys even
    /// when every `kid` is known, so that retired keys go (default 1 hour).
    pub jwks_refresh_interval: Duration,
    /// The products this host is: a token is valid here only if its `prod`
    /// names one of them. `None` does not check (compatibility).
    pub products: Option<Vec<String>>,
    /// The issuer a token must come from: its `iss` must be this URL
    /// (compared in normalised form, so a trailing `/` does not matter).
    /// `None` does not check (compatibility). Unrelated to `issuer`, the
    /// address the manager calls, which may differ from the issuer's public URL.
    pub expected_issuer: Option<String>,
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
            jwks_keys: KeySet::default(),
            store,
            issuer: None,
            jwks_url: None,
            jwks_file: None,
            jwks_min_interval: Duration::from_secs(300),
            jwks_refresh_interval: Duration::from_secs(3600),
            products: None,
            expected_issuer: None,
            revocations_url: None,
            revocations_interval: Duration::from_secs(600),
            builtin_license: None,
            usage: Arc::new(NoUsage),
            clock: Arc::new(SystemClock),
            renewal: RenewalConfig::default(),
        }
    }
}
