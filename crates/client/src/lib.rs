//! `charter-client`: what a vendor's product embeds to verify, keep and renew
//! its license token and to serve the licensing endpoints operators know from
//! Grafana, Consul and Redis Enterprise.
//!
//! - [`LicenseManager`]: loads `license.jwt` through a [`TokenStore`]
//!   ([`FileStore`] by default), verifies it offline against the vendor's
//!   keys (refreshed from the issuer's JWKS when a `kid` is unknown), answers
//!   [`is_valid`](LicenseManager::is_valid), [`expiry`](LicenseManager::expiry),
//!   [`feature_enabled`](LicenseManager::feature_enabled),
//!   [`enabled_features`](LicenseManager::enabled_features),
//!   [`limit`](LicenseManager::limit), [`state_info`](LicenseManager::state_info)
//!   and [`warnings`](LicenseManager::warnings); changes are published on a
//!   watch channel ([`subscribe`](LicenseManager::subscribe)).
//! - Renewal: [`LicenseManager::spawn_background`] renews when due
//!   (`iat + update_days`) through the issuer's `POST /api/tokens/renew`,
//!   with exponential backoff and jitter; [`LicenseManager::renew_now`] asks at once.
//! - Revocations: [`LicenseManager::tick`] polls the issuer's signed
//!   `GET /api/revocations` every [`ManagerConfig::revocations_interval`]
//!   (and [`LicenseManager::refresh_revocations`] at once); see below.
//! - Hooks: [`Authorizer`] (default [`BasicAuth`]), [`UsageSource`], and the
//!   built-in license ([`ManagerConfig::builtin_license`]).
//! - Routers: [`api::grafana`], [`api::consul`], [`api::redis`], or
//!   [`api::routers`] for several. The crate never binds a port.
//!
//! ```no_run
//! # async fn demo(keys: charter_client::token::KeySet) -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use charter_client::{api, BasicAuth, FileStore, LicenseManager, ManagerConfig};
//! use charter_client::token::InstanceUrl;
//!
//! let root = InstanceUrl::parse("https://grafana.example.com/")?;
//! let mut cfg = ManagerConfig::new(root, keys, Arc::new(FileStore::open("/var/lib/app")?));
//! cfg.issuer = Some("https://licenses.vendor.example".into());
//! let manager = LicenseManager::start(cfg).await?;
//! manager.spawn_background();
//! let auth = Arc::new(BasicAuth::new("admin", "secret"));
//! let app: axum::Router = api::routers(api::ApiState::new(manager, auth), &api::Dialect::ALL);
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Token states
//!
//! Grafana's `status`: 0 NotLoaded (store not read yet), 1 Valid, 2 Loaded
//! (held but not judged: its key is unknown and the JWKS could not supply it,
//! or `nbf` is in the future), 3 Invalid (malformed, bad signature, or
//! revoked: see below), 4
//! NotFound, 5 Expired, 6 InvalidSubject (`sub` does not match the root URL;
//! `sub` may be a glob such as `https://*.example.com/`).
//!
//! # Clock rollback
//!
//! The manager keeps the latest time it has seen (its own checks, the newest
//! `iat`), persisted beside the token. When the clock reads more than
//! [`manager::ROLLBACK_TOLERANCE_SECS`] earlier, it reports
//! [`Warning::ClockRollback`] and judges the token at the latest time seen, so
//! an expired token does not become valid again.
//!
//! # Revocations
//!
//! With an issuer configured, the manager polls `<issuer>/api/revocations`
//! at start and every [`ManagerConfig::revocations_interval`] (10 minutes by
//! default). Only the signed list counts: its signature must check against
//! the key set (JWKS refreshed on an unknown `kid`), it must not have expired
//! (`exp`, an hour after the issuer signed it) nor be older than the list
//! held; anything else is ignored and the last good list stays in force. The
//! last good list is kept in the store (`license.revoked` for [`FileStore`])
//! and read back at start, so a restart without the issuer still remembers.
//! A token whose `lid` is on it is status 3 Invalid with the reason "license
//! ... has been revoked" and [`Warning::LicenseRevoked`], is not renewed
//! ([`RenewError::Revoked`]), and installing one is refused
//! ([`InstallError::Revoked`]: 400 in every dialect, as other refused tokens).
//!
//! # Replicas
//!
//! A host running several replicas gives each manager the same
//! [`TokenStore`] over its own database: an install, renewal or removal on
//! one replica is taken up by the others on their next check
//! ([`LicenseManager::tick`], every `check_interval`).
//!
//! # Permissions
//!
//! Each endpoint passes its seed's permission to the [`Authorizer`]:
//! Grafana `licensing:read` (check), `licensing:write` (add, renew),
//! `licensing:delete` (remove); Consul `operator:read` (GET; open by default,
//! the seed needs no ACL) and `operator:write` (PUT, DELETE); Redis
//! `view_license` (GET) and `install_new_license` (PUT).
//!
//! # How claims map to each dialect
//!
//! | claim | Grafana (`POST /api/licensing/token`, `/renew`) | Consul `License` | Redis `GET /v1/license` |
//! |---|---|---|---|
//! | (state) | `status` (number above) | `Valid`; reason and warnings in `Warnings` | `expired` = not valid |
//! | token | — | — (PUT body) | `license`, `key` |
//! | `jti`, `iss` | same names | — | — |
//! | `sub` | `sub` | `installation_id` | — (`cluster_name` is the root URL's host) |
//! | `iat` | `iat` | `issue_time` (RFC 3339) | — |
//! | `nbf` | `nbf` | `start_time` | `activation_date` |
//! | `exp` | `exp` | `expiration_time` | `expiration_date` |
//! | `lexp` | `lexp` | `termination_time` | — |
//! | `lid` | `lid` | `license_id` | — |
//! | `account` | `account` | `customer_id` | — |
//! | `company` | `company` | — | `owner` |
//! | `prod` | `prod` | `product` (first), `modules` (all) | — |
//! | `features` | `features` | `features` | `features` |
//! | `flags` | `flags` | `flags` | — |
//! | `trial` | `trial` | `temporary` | — |
//! | `limits.shards_limit`, `ram_shards_limit`, `flash_shards_limit` | `limits` | — | same names (0 when unset) |
//! | usage `ram_shards`, `flash_shards` | — | — | `ram_shards_in_use`, `flash_shards_in_use` |
//! | every other claim | same name (`anonymousRatio` camelCase) | — | — |
//!
//! Redis' `PUT` refuses (406) a license whose limits are below the usage
//! the host reports: usage key `X` is limited by `limits["X_limit"]`, else by
//! `included_X` (seat limits of 0 mean unset); see [`hooks::limit_for`].
//!
//! # Errors
//!
//! Bodies are `{"message": "..."}`. Grafana: 400 refused token or bad JSON,
//! 401/403 auth, 422 `DELETE` naming another instance (or none); renew: 403
//! when the issuer refuses (its status in `issuer_status`), 429 when it rate
//! limits, 502 when unreachable. Consul: 400 refused license, 403 ACL, 409
//! `DELETE` without a valid built-in license. Redis: 400 bad JSON or refused
//! license, 401/403 auth, 404 none installed, 406 limits (`limit`,
//! `allowed`, `in_use`, `violations`). Every dialect: 413 for a body over
//! [`api::MAX_BODY_BYTES`].

pub mod api;
pub mod config;
pub mod hooks;
pub mod jwks;
pub mod manager;
pub mod query;
pub mod renewal;
pub mod revocations;
pub mod state;
pub mod store;

pub use charter_token as token;
pub use hooks::{AllowAll, Authorizer, BasicAuth, Denied, NoUsage, Permission, UsageSource};
pub use manager::{InstallError, LicenseManager, ManagerConfig, RemoveError, RenewalConfig};
pub use renewal::RenewError;
pub use revocations::RevocationError;
pub use state::{
    Clock, ManualClock, RenewalError, RenewalState, Source, StateInfo, SystemClock, TokenStatus,
    Warning,
};
pub use store::{FileStore, MemoryStore, StoreError, TokenStore};

/// Unix seconds as RFC 3339 (UTC); out-of-range values print as the number.
pub fn fmt_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}
