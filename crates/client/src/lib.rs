//! `charter-client`: what a vendor's product embeds to verify, keep and renew
//! its license token and to serve the licensing endpoints operators know from
//! Grafana, Consul and Redis Enterprise.
//!
//! - [`LicenseManager`]: loads `license.jwt` through a [`TokenStore`]
//!   ([`FileStore`] by default), verifies it offline against the vendor's
//!   keys (refreshed from the issuer's JWKS when a `kid` is unknown and every
//!   hour; see [Keys](#keys)), answers
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
//! or `nbf` is in the future), 3 Invalid (malformed, bad signature, revoked
//! (see below), or for another product or issuer than configured), 4
//! NotFound, 5 Expired, 6 InvalidSubject (`sub` does not match the root URL).
//!
//! A token whose `nbf` is still in the future (a license that starts later)
//! installs like any other valid token and is held as 2 Loaded, with the
//! reason "not valid before ...", until `nbf`; then it is 1 Valid. An
//! expired, tampered, unknown-key, revoked token or one for another
//! instance is refused.
//!
//! `sub` may be a pattern for a fleet, such as `https://*.example.com/`:
//! only whole `*` host labels are wildcards, each matching exactly one DNS
//! label (`a.example.com`, not `a.b.example.com`); scheme, port and path are
//! fixed; IP literals and other glob characters are literal (see
//! [`token::rules::subject_matches`] and [`token::parse_subject`]).
//!
//! With [`ManagerConfig::products`] set, a token is valid only if its `prod`
//! names one of them; with [`ManagerConfig::expected_issuer`], only if its
//! `iss` is that URL. Either is refused at install and status 3 Invalid when
//! held (a stored token from before), and is not renewed.
//!
//! # Clock rollback
//!
//! The manager keeps the latest time it has seen (its own checks),
//! persisted beside the token (`license.seen` for [`FileStore`]), and the
//! newest time the issuer vouched for: the `iat` of a verified token or
//! revocation list (never counted more than [`manager::NBF_LEEWAY_SECS`]
//! beyond now). It never judges before that newest verified time, nor
//! before the latest time seen, which, with an issuer configured, counts
//! only up to [`manager::MAX_SEEN_AHEAD_SECS`] (2 days, see there why) past
//! the newest verified time. When the clock reads more than
//! [`manager::ROLLBACK_TOLERANCE_SECS`] earlier than that floor, it reports
//! [`Warning::ClockRollback`] and judges the token at the floor, so an
//! expired token does not become valid again.
//!
//! - A clock that ran ahead (one run 10 days in the future) skews the
//!   judgement by at most 2 days once it is right again (with an issuer),
//!   and a fresh token or revocation list from the issuer whose `iat` the
//!   clock agrees with (within [`manager::ROLLBACK_TOLERANCE_SECS`]) resets
//!   the latest time seen: renewing (due at once in that case), the next
//!   revocation poll, or installing a token just issued heals it.
//! - Without the record (`license.seen` deleted), the floor is the newest
//!   verified time: the held token's and the recorded revocation list's
//!   `iat`.
//! - [`LicenseManager::reset_clock_guard`] (`charter instance
//!   --reset-clock-guard`) forgets the latest time seen; the newest verified
//!   time still holds.
//!
//! # Revocations
//!
//! With an issuer configured, the manager polls `<issuer>/api/revocations`
//! at start and every [`ManagerConfig::revocations_interval`] (10 minutes by
//! default). Only the signed list counts: its signature must check against
//! the key set (JWKS refreshed on an unknown `kid`), its header `typ` must be
//! [`token::REVOCATIONS_TYP`] (a license token is not a list, nor the
//! reverse), it must not have expired (`exp`, an hour after the issuer
//! signed it), nor be issued in the future, nor be older than the list held;
//! anything else is ignored and the last good list stays in force. The
//! last good list is kept in the store (`license.revoked` for [`FileStore`])
//! and read back at start, so a restart without the issuer still remembers;
//! a recorded list that does not verify then is ignored, never kept.
//! A token whose `lid` is on it is status 3 Invalid with the reason "license
//! ... has been revoked" and [`Warning::LicenseRevoked`], is not renewed
//! ([`RenewError::Revoked`]), and installing one is refused
//! ([`InstallError::Revoked`]: 400 in every dialect, as other refused tokens).
//!
//! # Keys
//!
//! [`ManagerConfig::keys`] are pinned by the host and always trusted.
//! Other keys come from the JWKS ([`ManagerConfig::jwks_url`], default
//! `<issuer>/.well-known/jwks.json`, or [`ManagerConfig::jwks_file`]),
//! refreshed when a token names an unknown `kid` (at most once per
//! `jwks_min_interval`) and every `jwks_refresh_interval` (1 hour). A refresh
//! from a file or over https drops the keys the JWKS no longer publishes (a
//! key the issuer retired), and a held token signed by one is then 2 Loaded;
//! over plain http keys are only added.
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
//! `DELETE` when the built-in license is not valid (without a built-in
//! license, `DELETE` removes the installed one and answers 200 with
//! `Valid: false`, `License: null`). Redis: 400 bad JSON or refused
//! license, 401/403 auth, 404 none installed, 406 limits (`limit`,
//! `allowed`, `in_use`, `violations`). Every dialect: 413 for a body over
//! [`api::MAX_BODY_BYTES`], and 429 with `Retry-After` once a client address
//! has failed authentication [`BasicAuth::DEFAULT_MAX_FAILURES`] times in
//! [`BasicAuth::DEFAULT_WINDOW`] (the default [`BasicAuth`]; the routers pass
//! the address when the server provides `ConnectInfo<SocketAddr>`).

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
