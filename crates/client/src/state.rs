//! What the manager reports: the token status (numbered as Grafana numbers
//! it), warnings, the renewal state, and the clock the manager reads.

use std::sync::atomic::{AtomicI64, Ordering};

use charter_token::{Claims, rules};
use serde::{Serialize, Serializer};

/// The token state, numbered in Grafana's order (the `status` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    /// The manager has not read its store yet.
    NotLoaded = 0,
    /// Signature, times and subject check: the license is in force.
    Valid = 1,
    /// A token is held but cannot be judged yet: its key is not known (the
    /// JWKS could not be fetched) or it is not valid before a future `nbf`.
    Loaded = 2,
    /// Malformed, bad signature, or its license is on the issuer's
    /// revocation list.
    Invalid = 3,
    /// No token is stored.
    NotFound = 4,
    /// The signature checks but `exp` has passed.
    Expired = 5,
    /// The token's `sub` does not name this instance.
    InvalidSubject = 6,
}

impl TokenStatus {
    /// The number Grafana reports.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::NotLoaded => "not_loaded",
            TokenStatus::Valid => "valid",
            TokenStatus::Loaded => "loaded",
            TokenStatus::Invalid => "invalid",
            TokenStatus::NotFound => "not_found",
            TokenStatus::Expired => "expired",
            TokenStatus::InvalidSubject => "invalid_subject",
        }
    }
}

impl Serialize for TokenStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

/// Where the held token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Read from the store at start.
    Stored,
    /// Installed through an endpoint or [`crate::LicenseManager::install`].
    Installed,
    /// Received from the issuer's renew endpoint.
    Renewed,
    /// The host's built-in license.
    BuiltIn,
}

/// Something an operator should know; each has a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warning {
    /// Within `tok_exp_warn_days` of the token's `exp`.
    TokenExpiring { exp: i64 },
    /// Within `lic_exp_warn_days` of the license's `lexp`.
    LicenseExpiring { lexp: i64 },
    /// The clock reads earlier than a time already seen; the manager judges
    /// the token at `latest_seen` instead.
    ClockRollback { now: i64, latest_seen: i64 },
    /// The last renewal attempt failed (the token held is kept).
    RenewalFailed { message: String },
    /// The license of the held token is on the issuer's revocation list: the
    /// token is not valid and is not renewed.
    LicenseRevoked { lid: String },
    /// The stored license (`license.jwt`) is corrupt or was removed; the
    /// built-in license, if any, is held instead.
    StoredLicenseUnusable { message: String },
}

impl Warning {
    pub fn message(&self) -> String {
        match self {
            Warning::TokenExpiring { exp } => {
                format!("license token expires at {}", crate::fmt_time(*exp))
            }
            Warning::LicenseExpiring { lexp } => {
                format!("license expires at {}", crate::fmt_time(*lexp))
            }
            Warning::ClockRollback { now, latest_seen } => format!(
                "system clock ({}) is earlier than a time already seen ({}); it was set back",
                crate::fmt_time(*now),
                crate::fmt_time(*latest_seen)
            ),
            Warning::RenewalFailed { message } => format!("license renewal failed: {message}"),
            Warning::LicenseRevoked { lid } => {
                format!("license {lid} has been revoked by the issuer")
            }
            Warning::StoredLicenseUnusable { message } => message.clone(),
        }
    }
}

/// The last renewal failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenewalError {
    /// When it happened (unix seconds).
    pub at: i64,
    /// The issuer's HTTP status when it answered, `None` for transport errors.
    pub status: Option<u16>,
    /// The issuer's `message`, or the transport error.
    pub message: String,
}

/// Renewal bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RenewalState {
    /// When the held token is due (`iat + update_days`).
    pub due_at: Option<i64>,
    /// Last successful renewal (unix seconds).
    pub last_success_at: Option<i64>,
    /// The last failure, cleared by a success or a newly installed token.
    pub last_error: Option<RenewalError>,
    /// Failures in a row.
    pub failures: u32,
    /// When the background task tries next after a failure.
    pub next_attempt_at: Option<i64>,
}

/// A snapshot of the manager, as [`crate::LicenseManager::state_info`] and the
/// watch channel report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateInfo {
    pub status: TokenStatus,
    /// Whether the license is in force (`status == Valid`).
    pub valid: bool,
    /// Claims of a token whose signature checked; `None` otherwise.
    pub claims: Option<Claims>,
    pub source: Option<Source>,
    /// Why the token is not valid, when it is not.
    pub reason: Option<String>,
    pub warnings: Vec<Warning>,
    pub renewal: RenewalState,
}

impl StateInfo {
    pub fn warning_messages(&self) -> Vec<String> {
        self.warnings.iter().map(Warning::message).collect()
    }
}

/// The warnings of DESIGN.md's windows for claims judged at `now`.
pub fn expiry_warnings(claims: &Claims, now: i64) -> Vec<Warning> {
    let mut out = Vec::new();
    if rules::token_warning(claims, now) {
        out.push(Warning::TokenExpiring { exp: claims.exp });
    }
    if rules::license_warning(claims, now) {
        out.push(Warning::LicenseExpiring { lexp: claims.lexp });
    }
    out
}

/// The time source, replaceable in tests.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix seconds.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        rules::now()
    }
}

/// A clock set by hand (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: i64) -> Self {
        ManualClock(AtomicI64::new(now))
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
