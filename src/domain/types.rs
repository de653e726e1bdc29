//! The records the issuer keeps. Times are unix seconds inside and RFC 3339
//! on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// RFC 3339 on the wire, unix seconds inside.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn format(secs: i64) -> String {
        OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| secs.to_string())
    }

    pub fn parse(s: &str) -> Result<i64, String> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(OffsetDateTime::unix_timestamp)
            .map_err(|_| format!("{s:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z"))
    }

    pub fn serialize<S: Serializer>(secs: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*secs))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(secs: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
            match secs {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(s) => super::parse(&s).map(Some).map_err(D::Error::custom),
                None => Ok(None),
            }
        }
    }
}

/// A product the vendor sells, and the features a license for it may grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub slug: String,
    pub name: String,
    pub features: Vec<String>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// Bumped by every write of the row; the `ETag` of its `GET`.
    #[serde(skip)]
    pub version: i64,
}

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub id: String,
    /// The company name (claim `company`).
    pub company: String,
    /// The account name (claim `account`).
    pub account: String,
    /// A unique short name (claim `slug`).
    pub slug: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// Bumped by every write of the row; the `ETag` of its `GET`.
    #[serde(skip)]
    pub version: i64,
}

/// Whether a license may be used. Expiry is computed from `expires_at`, not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    Active,
    Suspended,
    Revoked,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Active => "active",
            LicenseStatus::Suspended => "suspended",
            LicenseStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(LicenseStatus::Active),
            "suspended" => Some(LicenseStatus::Suspended),
            "revoked" => Some(LicenseStatus::Revoked),
            _ => None,
        }
    }
}

impl std::fmt::Display for LicenseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a license is at a given time: its status, and for an active one
/// whether its dates hold. Computed by [`super::license_state`], never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LicenseState {
    Active,
    Suspended,
    Revoked,
    Expired,
    NotStarted,
}

impl LicenseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseState::Active => "active",
            LicenseState::Suspended => "suspended",
            LicenseState::Revoked => "revoked",
            LicenseState::Expired => "expired",
            LicenseState::NotStarted => "not_started",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(LicenseState::Active),
            "suspended" => Some(LicenseState::Suspended),
            "revoked" => Some(LicenseState::Revoked),
            "expired" => Some(LicenseState::Expired),
            "not_started" => Some(LicenseState::NotStarted),
            _ => None,
        }
    }
}

impl std::fmt::Display for LicenseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a license grants: everything that becomes a claim, stored as one
/// document so a new claim needs no migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LicenseTerms {
    pub products: Vec<String>,
    pub limit_by: String,
    pub included_users: i64,
    pub included_admins: i64,
    pub included_viewers: i64,
    pub max_concurrent_user_sessions: i64,
    pub anonymous_ratio: i64,
    pub limits: BTreeMap<String, i64>,
    pub features: Vec<String>,
    pub flags: BTreeMap<String, String>,
    pub trial: bool,
    pub usage_billing: bool,
    pub details_url: String,
    pub lic_exp_warn_days: i64,
    pub tok_exp_warn_days: i64,
    pub update_days: i64,
    pub token_ttl_days: i64,
}

/// A license (`lid`) held by an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct License {
    pub lid: String,
    pub account_id: String,
    pub status: LicenseStatus,
    /// `active`, `suspended`, `revoked`, `expired` or `not_started`,
    /// computed from `status` and the dates when it is read.
    pub state: LicenseState,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: i64,
    /// How many instances may be bound at once.
    pub max_instances: i64,
    #[serde(flatten)]
    pub terms: LicenseTerms,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// Set while the license's instances report more than it includes
    /// (see `GET /api/licenses/{lid}/usage`); `null` when within.
    #[serde(default)]
    pub over_limit: Option<OverLimit>,
    /// Bumped by every write of the row; the `ETag` of its `GET`.
    #[serde(skip)]
    pub version: i64,
}

/// Since when, and by how much, a license's instances report more than it
/// includes: in the latest complete day (UTC), the sum over its instances
/// of each one's last report of the counter named by `limit_by` exceeded
/// `included_users` (and `admins` / `viewers` their included counts, when
/// those are set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverLimit {
    /// When the check first found it over (the end of the day it found).
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub since: i64,
    /// The start of the day the check found over.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub day: i64,
    /// Each counter over its included count.
    pub counters: std::collections::BTreeMap<String, CounterOver>,
}

/// A counter over its included count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CounterOver {
    /// Summed over the instances (each one's last report of the day).
    pub used: i64,
    pub included: i64,
}

/// How the issuer pushes tokens to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Grafana,
    Consul,
    Redis,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Grafana => "grafana",
            Dialect::Consul => "consul",
            Dialect::Redis => "redis",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grafana" => Some(Dialect::Grafana),
            "consul" => Some(Dialect::Consul),
            "redis" => Some(Dialect::Redis),
            _ => None,
        }
    }
}

/// An installation bound to a license, by its root URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub id: String,
    pub lid: String,
    /// Root URL, normalised with a trailing `/`.
    pub url: String,
    pub dialect: Dialect,
    pub push_enabled: bool,
    /// The `jti` of the newest token issued to it.
    pub last_jti: Option<String>,
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_issued_at: Option<i64>,
    /// When its token is due for renewal (`iat + update_days`).
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_renewal_at: Option<i64>,
    /// The last usage report it sent with a renewal.
    pub usage: Option<BTreeMap<String, i64>>,
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub usage_reported_at: Option<i64>,
    /// When its newest token expires.
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub token_expires_at: Option<i64>,
    /// Whether push credentials are stored (they are never shown).
    pub has_credentials: bool,
    /// When the next push (or retry) is due.
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub push_next_at: Option<i64>,
    /// Failed deliveries since the last success.
    pub push_attempts: i64,
    pub push_last_error: Option<String>,
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub push_last_ok_at: Option<i64>,
    /// Pushes are failing and its token expires within `tok_exp_warn_days`.
    pub push_at_risk: bool,
    /// The license was revoked and the removal is still to be delivered.
    pub removal_pending: bool,
    /// A pushed token not yet confirmed delivered (redelivered, not reissued).
    #[serde(skip)]
    pub push_pending_jti: Option<String>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// Bumped by every write of the row; the `ETag` of its `GET`.
    #[serde(skip)]
    pub version: i64,
}

/// Why a token was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenReason {
    Issue,
    Renew,
    Push,
}

impl TokenReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenReason::Issue => "issue",
            TokenReason::Renew => "renew",
            TokenReason::Push => "push",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "issue" => Some(TokenReason::Issue),
            "renew" => Some(TokenReason::Renew),
            "push" => Some(TokenReason::Push),
            _ => None,
        }
    }
}

/// One issued token, kept so the portal can show history and download it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRecord {
    pub jti: String,
    pub lid: String,
    pub instance_id: String,
    pub kid: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub iat: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub nbf: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub exp: i64,
    pub reason: TokenReason,
    /// The `jti` of the token this one renewed.
    pub renewed_from: Option<String>,
    /// The token itself: only for callers with `licensing:tokens`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

/// Filters of `GET /api/licenses`.
#[derive(Debug, Clone, Default)]
pub struct LicenseFilter {
    pub account_id: Option<String>,
    pub product: Option<String>,
    pub state: Option<LicenseState>,
    /// Only licenses that expire before this time (unix seconds).
    pub expires_before: Option<i64>,
    /// Evaluates `expired` against this time.
    pub now: i64,
}
