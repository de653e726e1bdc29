//! What the host asks the [`LicenseManager`]: validity, features, limits,
//! expiry, warnings and the full [`StateInfo`], judged at the effective now
//! (never earlier than the latest time seen).

use charter_token::Claims;
use charter_token::rules::{self, InstanceUrl, subject_matches};
use tokio::sync::watch;

use crate::manager::{Check, Expect, LicenseManager, ROLLBACK_TOLERANCE_SECS};
use crate::revocations::RevocationList;
use crate::state::{Source, StateInfo, TokenStatus, Warning, expiry_warnings};

impl LicenseManager {
    /// Whether the license is in force now.
    pub fn is_valid(&self) -> bool {
        self.status() == TokenStatus::Valid
    }

    /// The token status now.
    pub fn status(&self) -> TokenStatus {
        let now = self.effective_now();
        let revoked = self.revocation_list();
        let held = self.held();
        judge(&held.check, now, self.target(), revoked.as_deref()).0
    }

    /// Token expiry (`exp`) of a verified token.
    pub fn expiry(&self) -> Option<i64> {
        match &self.held().check {
            Check::Verified(c) => Some(c.exp),
            _ => None,
        }
    }

    /// The claims of a token in force, `None` otherwise.
    pub fn valid_claims(&self) -> Option<Claims> {
        let now = self.effective_now();
        let revoked = self.revocation_list();
        let held = self.held();
        match judge(&held.check, now, self.target(), revoked.as_deref()) {
            (TokenStatus::Valid, _) => match &held.check {
                Check::Verified(c) => Some((**c).clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether a valid license enables `name`.
    pub fn feature_enabled(&self, name: &str) -> bool {
        self.valid_claims().is_some_and(|c| c.has_feature(name))
    }

    /// The features of a valid license (none when it is not valid).
    pub fn enabled_features(&self) -> Vec<String> {
        self.valid_claims().map(|c| c.features).unwrap_or_default()
    }

    /// A limit of a valid license by claim name (`included_users`, `shards_limit`...).
    pub fn limit(&self, name: &str) -> Option<i64> {
        self.valid_claims().and_then(|c| c.limit(name))
    }

    /// The current warnings (expiry windows, clock rollback, failed renewal,
    /// revoked license).
    pub fn warnings(&self) -> Vec<Warning> {
        self.state_info().warnings
    }

    /// The held token, whatever its state.
    pub fn token(&self) -> Option<String> {
        self.held().token.clone()
    }

    /// This instance's root URL.
    pub fn root_url(&self) -> &InstanceUrl {
        &self.inner.root_url
    }

    /// The host of this instance's root URL (Redis' `cluster_name`).
    pub fn root_url_host(&self) -> String {
        let s = self.inner.root_url.as_str();
        let rest = s.split_once("://").map_or(s, |(_, r)| r);
        rest.split(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// What the host reports it uses.
    pub fn usage(&self) -> charter_token::Usage {
        self.inner.usage.usage()
    }

    /// A full snapshot, judged now.
    pub fn state_info(&self) -> StateInfo {
        let now = self.inner.clock.now();
        let seen = self.floor_at(now);
        let effective = now.max(seen);
        let revoked = self.revocation_list();
        let held = self.held();
        let (status, reason) = judge(&held.check, effective, self.target(), revoked.as_deref());
        let claims = match &held.check {
            Check::Verified(c) => Some((**c).clone()),
            _ => None,
        };
        let revoked_lid = claims
            .as_ref()
            .filter(|c| is_revoked(revoked.as_deref(), &c.lid))
            .map(|c| c.lid.clone());
        let mut warnings = Vec::new();
        if let Some(lid) = &revoked_lid {
            warnings.push(Warning::LicenseRevoked { lid: lid.clone() });
        }
        if now + ROLLBACK_TOLERANCE_SECS < seen {
            warnings.push(Warning::ClockRollback {
                now,
                latest_seen: seen,
            });
        }
        if let (Some(c), TokenStatus::Valid) = (&claims, status) {
            warnings.extend(expiry_warnings(c, effective));
        }
        if let Some(message) = &held.stored_problem {
            warnings.push(Warning::StoredLicenseUnusable {
                message: message.clone(),
            });
        }
        if let Some(e) = &held.renewal.last_error {
            warnings.push(Warning::RenewalFailed {
                message: e.message.clone(),
            });
        }
        let mut renewal = held.renewal.clone();
        renewal.due_at = match (&claims, &self.inner.issuer, status, held.source) {
            (Some(c), Some(_), s, src)
                if s != TokenStatus::InvalidSubject
                    && src != Some(Source::BuiltIn)
                    && revoked_lid.is_none()
                    && self.inner.expect.mismatch(c).is_none() =>
            {
                Some(rules::renewal_due_at(c))
            }
            _ => None,
        };
        StateInfo {
            status,
            valid: status == TokenStatus::Valid,
            claims,
            source: held.source,
            reason,
            warnings,
            renewal,
        }
    }

    /// State changes: a new value on every change of status, token, warnings
    /// or renewal state.
    pub fn subscribe(&self) -> watch::Receiver<StateInfo> {
        self.inner.tx.subscribe()
    }

    /// Now, never earlier than the latest time seen (clock rollback guard),
    /// itself never earlier than the newest time the issuer vouched for (a
    /// verified token's or revocation list's `iat`) and, with an issuer,
    /// counted at most [`crate::manager::MAX_SEEN_AHEAD_SECS`] beyond it.
    pub fn effective_now(&self) -> i64 {
        let now = self.inner.clock.now();
        now.max(self.floor_at(now))
    }

    /// The clock rollback guard's floor now: what [`LicenseManager::effective_now`]
    /// never goes below (for diagnostics and tests).
    pub fn latest_time_seen(&self) -> i64 {
        self.floor_at(self.inner.clock.now())
    }

    fn target(&self) -> Target<'_> {
        Target {
            root: &self.inner.root_url,
            expect: &self.inner.expect,
        }
    }
}

/// What a token must name to be valid here.
#[derive(Clone, Copy)]
struct Target<'a> {
    root: &'a InstanceUrl,
    expect: &'a Expect,
}

fn is_revoked(list: Option<&RevocationList>, lid: &str) -> bool {
    list.is_some_and(|l| l.lids.contains(lid))
}

/// The status of what is held, judged at `now` against the revocation list,
/// with the reason when not valid.
fn judge(
    check: &Check,
    now: i64,
    target: Target<'_>,
    revoked: Option<&RevocationList>,
) -> (TokenStatus, Option<String>) {
    let root = target.root;
    match check {
        Check::NotLoaded => (TokenStatus::NotLoaded, Some("not loaded yet".into())),
        Check::NotFound => (TokenStatus::NotFound, Some("no license installed".into())),
        Check::Invalid(why) => (TokenStatus::Invalid, Some(why.clone())),
        Check::Unverified(why) => (TokenStatus::Loaded, Some(why.clone())),
        Check::Verified(c) => {
            if is_revoked(revoked, &c.lid) {
                (
                    TokenStatus::Invalid,
                    Some(format!("license {} has been revoked by the issuer", c.lid)),
                )
            } else if !subject_matches(&c.sub, root) {
                (
                    TokenStatus::InvalidSubject,
                    Some(format!("license is for {}, not {root}", c.sub)),
                )
            } else if let Some(why) = target.expect.mismatch(c) {
                (TokenStatus::Invalid, Some(why))
            } else if now < c.nbf {
                (
                    TokenStatus::Loaded,
                    Some(format!("not valid before {}", crate::fmt_time(c.nbf))),
                )
            } else if !rules::is_valid_at(c, now) {
                (
                    TokenStatus::Expired,
                    Some(format!("expired at {}", crate::fmt_time(c.exp))),
                )
            } else {
                (TokenStatus::Valid, None)
            }
        }
    }
}
