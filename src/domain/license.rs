//! Rules that turn a license into claims and decide whether it may renew.

use charter_token::{Claims, DAY};

use super::{Account, License, LicenseState, LicenseStatus};

/// What the license is at `now`: the one place that turns its status and
/// dates into a state.
pub fn license_state(license: &License, now: i64) -> LicenseState {
    match license.status {
        LicenseStatus::Revoked => LicenseState::Revoked,
        LicenseStatus::Suspended => LicenseState::Suspended,
        LicenseStatus::Active if now >= license.expires_at => LicenseState::Expired,
        LicenseStatus::Active if now < license.starts_at => LicenseState::NotStarted,
        LicenseStatus::Active => LicenseState::Active,
    }
}

/// Why a license cannot have a token now; the message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewRefusal {
    #[error("license {0} is suspended")]
    Suspended(String),
    #[error("license {0} is revoked")]
    Revoked(String),
    #[error("license {lid} expired at {at}")]
    Expired { lid: String, at: String },
}

/// Whether a token may be issued or renewed for this license at `now`.
pub fn check_renewable(license: &License, now: i64) -> Result<(), RenewRefusal> {
    match license.status {
        LicenseStatus::Suspended => Err(RenewRefusal::Suspended(license.lid.clone())),
        LicenseStatus::Revoked => Err(RenewRefusal::Revoked(license.lid.clone())),
        LicenseStatus::Active if now >= license.expires_at => Err(RenewRefusal::Expired {
            lid: license.lid.clone(),
            at: super::types::rfc3339::format(license.expires_at),
        }),
        LicenseStatus::Active => Ok(()),
    }
}

/// The claims of a token for `instance_url`, computed from the license as it
/// is now: `nbf` is the license start or `iat`, `exp` is
/// `min(iat + token_ttl, lexp)`.
pub fn claims_for(
    license: &License,
    account: &Account,
    instance_url: &str,
    issuer: &str,
    jti: String,
    now: i64,
) -> Claims {
    let t = &license.terms;
    let ttl = t.token_ttl_days.saturating_mul(DAY);
    Claims {
        jti,
        iss: issuer.to_string(),
        sub: instance_url.to_string(),
        iat: now,
        nbf: license.starts_at.max(now).min(license.expires_at),
        exp: now.saturating_add(ttl).min(license.expires_at),
        lexp: license.expires_at,
        lid: license.lid.clone(),
        limit_by: t.limit_by.clone(),
        included_users: t.included_users,
        included_admins: t.included_admins,
        included_viewers: t.included_viewers,
        lic_exp_warn_days: t.lic_exp_warn_days,
        tok_exp_warn_days: t.tok_exp_warn_days,
        update_days: t.update_days,
        prod: t.products.clone(),
        company: account.company.clone(),
        account: account.account.clone(),
        slug: account.slug.clone(),
        usage_billing: t.usage_billing,
        trial: t.trial,
        trial_exp: if t.trial { license.expires_at } else { 0 },
        max_concurrent_user_sessions: t.max_concurrent_user_sessions,
        details_url: t.details_url.clone(),
        anonymous_ratio: t.anonymous_ratio,
        features: t.features.clone(),
        limits: t.limits.clone(),
        flags: t.flags.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LicenseTerms;

    fn license(starts_at: i64, expires_at: i64) -> License {
        License {
            lid: "L1".into(),
            account_id: "A".into(),
            status: LicenseStatus::Active,
            state: LicenseState::Active,
            starts_at,
            expires_at,
            max_instances: 1,
            terms: LicenseTerms {
                products: vec!["grafana-enterprise".into()],
                limit_by: "users".into(),
                included_users: 10,
                included_admins: 2,
                included_viewers: 0,
                max_concurrent_user_sessions: 0,
                anonymous_ratio: 0,
                limits: Default::default(),
                features: vec!["reporting".into()],
                flags: Default::default(),
                trial: true,
                usage_billing: false,
                details_url: String::new(),
                lic_exp_warn_days: 30,
                tok_exp_warn_days: 3,
                update_days: 1,
                token_ttl_days: 7,
            },
            created_at: 0,
            updated_at: 0,
            over_limit: None,
            version: 1,
        }
    }

    #[test]
    fn state_follows_status_and_dates() {
        let mut l = license(100, 200);
        assert_eq!(license_state(&l, 50), LicenseState::NotStarted);
        assert_eq!(license_state(&l, 100), LicenseState::Active);
        assert_eq!(license_state(&l, 200), LicenseState::Expired);
        l.status = LicenseStatus::Suspended;
        assert_eq!(license_state(&l, 50), LicenseState::Suspended);
        assert_eq!(license_state(&l, 300), LicenseState::Suspended);
    }

    fn account() -> Account {
        Account {
            id: "A".into(),
            company: "Acme".into(),
            account: "acme".into(),
            slug: "acme".into(),
            created_at: 0,
            updated_at: 0,
            version: 1,
        }
    }

    #[test]
    fn token_expiry_is_capped_by_the_license() {
        let now = 1_000_000;
        let c = claims_for(
            &license(0, now + 2 * DAY),
            &account(),
            "https://a/",
            "https://i/",
            "j".into(),
            now,
        );
        assert_eq!(c.exp, now + 2 * DAY, "lexp caps exp");
        assert_eq!(c.nbf, now);
        assert_eq!(c.trial_exp, now + 2 * DAY);
        let c = claims_for(
            &license(0, now + 100 * DAY),
            &account(),
            "https://a/",
            "https://i/",
            "j".into(),
            now,
        );
        assert_eq!(c.exp, now + 7 * DAY, "token_ttl sets exp");
        assert_eq!((c.company.as_str(), c.included_users), ("Acme", 10));
    }

    #[test]
    fn nbf_is_the_license_start_when_it_is_later() {
        let now = 1_000_000;
        let c = claims_for(
            &license(now + DAY, now + 100 * DAY),
            &account(),
            "https://a/",
            "i",
            "j".into(),
            now,
        );
        assert_eq!(c.nbf, now + DAY);
    }

    #[test]
    fn refusals_name_the_reason() {
        let mut l = license(0, 100);
        assert!(check_renewable(&l, 50).is_ok());
        assert_eq!(
            check_renewable(&l, 100).expect_err("refused").to_string(),
            "license L1 expired at 1970-01-01T00:01:40Z"
        );
        l.status = LicenseStatus::Suspended;
        assert_eq!(
            check_renewable(&l, 50).expect_err("refused").to_string(),
            "license L1 is suspended"
        );
        l.status = LicenseStatus::Revoked;
        assert_eq!(license_state(&l, 500), LicenseState::Revoked);
        assert_eq!(
            check_renewable(&l, 50).expect_err("refused").to_string(),
            "license L1 is revoked"
        );
    }
}
