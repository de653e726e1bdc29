//! The license token's claims, exactly as DESIGN.md names them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Seconds in a day; the warn windows and `update_days` are counted in days.
pub const DAY: i64 = 86_400;

/// Every claim of a Charter license token.
///
/// All claims are always written (zero values where unset) and every claim is
/// optional on read (a missing one reads as its zero value); unknown claims
/// are ignored, so older and newer tokens stay readable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Claims {
    /// Unique per token.
    pub jti: String,
    /// The issuer's public URL.
    pub iss: String,
    /// The instance's root URL with a trailing `/`; may be a glob (`https://*.example.com/`).
    pub sub: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds): the license start or `iat`.
    pub nbf: i64,
    /// Token expiry: `min(iat + token_ttl, lexp)`.
    pub exp: i64,
    /// License expiry (unix seconds).
    pub lexp: i64,
    /// License id.
    pub lid: String,
    /// What `included_users` counts (`users`, `active_users`, ...).
    pub limit_by: String,
    pub included_users: i64,
    pub included_admins: i64,
    pub included_viewers: i64,
    /// Days before `lexp` when the license warning starts.
    pub lic_exp_warn_days: i64,
    /// Days before `exp` when the token warning starts.
    pub tok_exp_warn_days: i64,
    /// Renewal interval in days: a token is due at `iat + update_days`.
    pub update_days: i64,
    /// Products.
    pub prod: Vec<String>,
    pub company: String,
    pub account: String,
    pub slug: String,
    pub usage_billing: bool,
    pub trial: bool,
    /// Trial expiry, 0 when not a trial.
    pub trial_exp: i64,
    pub max_concurrent_user_sessions: i64,
    pub details_url: String,
    /// Written camelCase, as Grafana does.
    #[serde(rename = "anonymousRatio")]
    pub anonymous_ratio: i64,
    /// Enabled features.
    pub features: Vec<String>,
    /// Other limits, e.g. `shards_limit`.
    pub limits: BTreeMap<String, i64>,
    /// Free-form flags, e.g. `{"package": "premium"}`.
    pub flags: BTreeMap<String, String>,
}

impl Claims {
    /// Whether `name` is among the enabled features.
    pub fn has_feature(&self, name: &str) -> bool {
        self.features.iter().any(|f| f == name)
    }

    /// A limit by name: the seat limits by their claim names, then `limits`.
    pub fn limit(&self, name: &str) -> Option<i64> {
        match name {
            "included_users" => Some(self.included_users),
            "included_admins" => Some(self.included_admins),
            "included_viewers" => Some(self.included_viewers),
            "max_concurrent_user_sessions" => Some(self.max_concurrent_user_sessions),
            _ => self.limits.get(name).copied(),
        }
    }
}
