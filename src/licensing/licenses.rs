//! Licenses: create, change terms, suspend, resume, revoke.

use std::collections::{BTreeMap, HashSet};

use charter_token::now;
use serde::Deserialize;
use serde_json::json;

use super::{Actor, Error, Licensing, Result, changes, check_version, retry_stale};
use crate::db::Transition;
use crate::domain::{
    FeatureName, License, LicenseFilter, LicenseState, LicenseStatus, LicenseTerms, Listing, Page,
    Slug, license_state, rfc3339,
};

/// The terms of a license. On create, `account_id`, `products` and
/// `expires_at` are required; on PATCH every field is optional and only the
/// ones given change (`account_id` cannot).
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseInput {
    pub account_id: Option<String>,
    /// 1 to 50 products.
    pub products: Option<Vec<Slug>>,
    /// RFC 3339; default now.
    pub starts_at: Option<String>,
    /// RFC 3339, in the future.
    pub expires_at: Option<String>,
    /// Default 1.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_instances: Option<i64>,
    /// Default `users`.
    pub limit_by: Option<Slug>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub included_users: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub included_admins: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub included_viewers: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub max_concurrent_user_sessions: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub anonymous_ratio: Option<i64>,
    /// At most 100.
    pub limits: Option<BTreeMap<Slug, i64>>,
    /// Each must be granted by one of the license's products; at most 500.
    pub features: Option<Vec<FeatureName>>,
    /// At most 100; values of at most 200 printable characters.
    pub flags: Option<BTreeMap<Slug, String>>,
    pub trial: Option<bool>,
    pub usage_billing: Option<bool>,
    pub details_url: Option<String>,
    /// Default 30.
    #[schema(minimum = 0, maximum = 3650)]
    pub lic_exp_warn_days: Option<i64>,
    /// Default 3.
    #[schema(minimum = 0, maximum = 3650)]
    pub tok_exp_warn_days: Option<i64>,
    /// Renewal interval; default 1.
    #[schema(minimum = 1, maximum = 3650)]
    pub update_days: Option<i64>,
    /// Token lifetime; default the server's `token_ttl_days`.
    #[schema(minimum = 1, maximum = 3650)]
    pub token_ttl_days: Option<i64>,
}

/// The license as shown, with its state at `now`.
pub fn view(mut l: License, now: i64) -> License {
    l.state = license_state(&l, now);
    l
}

pub async fn get(ctx: &Licensing, lid: &str) -> Result<License> {
    ctx.store
        .get_license(lid)
        .await?
        .map(|l| view(l, now()))
        .ok_or_else(|| Error::NotFound(format!("license {lid} not found")))
}

/// A page of licenses; `state` is evaluated now.
pub async fn list(
    ctx: &Licensing,
    account_id: Option<String>,
    product: Option<String>,
    state: Option<LicenseState>,
    expires_before: Option<&str>,
    page: &Page,
) -> Result<Listing<License>> {
    let t = now();
    let filter = LicenseFilter {
        account_id,
        product,
        state,
        expires_before: expires_before
            .map(|v| time_field("expires_before", v))
            .transpose()?,
        now: t,
    };
    let listing = ctx.store.list_licenses(&filter, page).await?;
    Ok(listing.map(|l| view(l, t)))
}

fn time_field(field: &str, v: &str) -> Result<i64> {
    rfc3339::parse(v).map_err(|e| Error::invalid(field, e))
}

fn in_range(field: &str, v: i64, lo: i64, hi: i64) -> Result<i64> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(Error::invalid(
            field,
            format!("must be between {lo} and {hi}, not {v}"),
        ))
    }
}

const MAX_COUNT: i64 = 1_000_000_000;

/// Applies the given fields to `l`, checking each.
fn apply(l: &mut License, input: &LicenseInput) -> Result<()> {
    let t = &mut l.terms;
    if let Some(v) = &input.products {
        if v.is_empty() || v.len() > 50 {
            return Err(Error::invalid("products", "must list 1 to 50 products"));
        }
        t.products = v.iter().map(ToString::to_string).collect();
    }
    if let Some(v) = &input.starts_at {
        l.starts_at = time_field("starts_at", v)?;
    }
    if let Some(v) = &input.expires_at {
        l.expires_at = time_field("expires_at", v)?;
    }
    if let Some(v) = input.max_instances {
        l.max_instances = in_range("max_instances", v, 1, 1_000_000)?;
    }
    if let Some(v) = &input.limit_by {
        t.limit_by = v.to_string();
    }
    let counts = [
        (
            input.included_users,
            &mut t.included_users,
            "included_users",
        ),
        (
            input.included_admins,
            &mut t.included_admins,
            "included_admins",
        ),
        (
            input.included_viewers,
            &mut t.included_viewers,
            "included_viewers",
        ),
        (
            input.max_concurrent_user_sessions,
            &mut t.max_concurrent_user_sessions,
            "max_concurrent_user_sessions",
        ),
        (
            input.anonymous_ratio,
            &mut t.anonymous_ratio,
            "anonymous_ratio",
        ),
    ];
    for (given, field, name) in counts {
        if let Some(v) = given {
            *field = in_range(name, v, 0, MAX_COUNT)?;
        }
    }
    if let Some(v) = &input.limits {
        if v.len() > 100 {
            return Err(Error::invalid("limits", "at most 100 limits"));
        }
        for (k, n) in v {
            in_range(&format!("limits.{k}"), *n, 0, i64::MAX)?;
        }
        t.limits = v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    }
    if let Some(v) = &input.features {
        if v.len() > 500 {
            return Err(Error::invalid("features", "at most 500 features"));
        }
        t.features = v.iter().map(ToString::to_string).collect();
    }
    if let Some(v) = &input.flags {
        if v.len() > 100 {
            return Err(Error::invalid("flags", "at most 100 flags"));
        }
        for (k, val) in v {
            if val.len() > 200 || val.chars().any(char::is_control) {
                return Err(Error::invalid(
                    &format!("flags.{k}"),
                    "must be at most 200 printable characters",
                ));
            }
        }
        t.flags = v.iter().map(|(k, s)| (k.to_string(), s.clone())).collect();
    }
    if let Some(v) = input.trial {
        t.trial = v;
    }
    if let Some(v) = input.usage_billing {
        t.usage_billing = v;
    }
    if let Some(v) = &input.details_url {
        if !v.is_empty() {
            charter_token::InstanceUrl::parse(v).map_err(|e| Error::invalid("details_url", e))?;
        }
        t.details_url = v.clone();
    }
    if let Some(v) = input.lic_exp_warn_days {
        t.lic_exp_warn_days = in_range("lic_exp_warn_days", v, 0, 3650)?;
    }
    if let Some(v) = input.tok_exp_warn_days {
        t.tok_exp_warn_days = in_range("tok_exp_warn_days", v, 0, 3650)?;
    }
    if let Some(v) = input.update_days {
        t.update_days = in_range("update_days", v, 1, 3650)?;
    }
    if let Some(v) = input.token_ttl_days {
        t.token_ttl_days = in_range("token_ttl_days", v, 1, 3650)?;
    }
    Ok(())
}

/// Rules across fields and against the products.
async fn check(ctx: &Licensing, l: &License, expiry_changed: bool, now: i64) -> Result<()> {
    if l.expires_at <= l.starts_at {
        return Err(Error::invalid("expires_at", "must be after starts_at"));
    }
    if expiry_changed && l.expires_at <= now {
        return Err(Error::invalid("expires_at", "is in the past"));
    }
    let mut granted = HashSet::new();
    for slug in &l.terms.products {
        let product = ctx.store.get_product(slug).await?.ok_or_else(|| {
            Error::Unprocessable(format!("products: product {slug} does not exist"))
        })?;
        granted.extend(product.features);
    }
    if let Some(f) = l.terms.features.iter().find(|f| !granted.contains(*f)) {
        return Err(Error::Unprocessable(format!(
            "features: {f} is not granted by the license's products"
        )));
    }
    Ok(())
}

pub async fn create(ctx: &Licensing, actor: &Actor, input: LicenseInput) -> Result<License> {
    let account_id = input
        .account_id
        .clone()
        .ok_or_else(|| Error::invalid("account_id", "is required"))?;
    if input.products.is_none() {
        return Err(Error::invalid("products", "is required"));
    }
    if input.expires_at.is_none() {
        return Err(Error::invalid("expires_at", "is required"));
    }
    let t = now();
    let mut l = License {
        lid: uuid::Uuid::now_v7().to_string(),
        account_id,
        status: LicenseStatus::Active,
        state: LicenseState::Active,
        starts_at: t,
        expires_at: 0,
        max_instances: 1,
        terms: LicenseTerms {
            products: vec![],
            limit_by: "users".into(),
            included_users: 0,
            included_admins: 0,
            included_viewers: 0,
            max_concurrent_user_sessions: 0,
            anonymous_ratio: 0,
            limits: BTreeMap::new(),
            features: vec![],
            flags: BTreeMap::new(),
            trial: false,
            usage_billing: false,
            details_url: String::new(),
            lic_exp_warn_days: 30,
            tok_exp_warn_days: 3,
            update_days: 1,
            token_ttl_days: ctx.config.token_ttl_days,
        },
        created_at: t,
        updated_at: t,
        over_limit: None,
        version: 1,
    };
    apply(&mut l, &input)?;
    if ctx.store.get_account(&l.account_id).await?.is_none() {
        return Err(Error::Unprocessable(format!(
            "account_id: account {} does not exist",
            l.account_id
        )));
    }
    check(ctx, &l, true, t).await?;
    let mut event = actor.event("license.create", "license", &l.lid);
    event.events.push(super::events::license_created(&l));
    ctx.store.create_license(&l, &event).await?;
    tracing::info!(lid = %l.lid, by = %actor.name, "license created");
    Ok(view(l, t))
}

/// Changes the terms (never the status); the next token carries them.
pub async fn update(
    ctx: &Licensing,
    actor: &Actor,
    lid: &str,
    input: LicenseInput,
    if_match: Option<i64>,
) -> Result<License> {
    let _turn = ctx.locks.lock(format!("license:{lid}")).await;
    let l = retry_stale(if_match, || async {
        let old = get(ctx, lid).await?;
        check_version("license", if_match, old.version)?;
        if old.status == LicenseStatus::Revoked {
            return Err(Error::Conflict(format!(
                "license {lid} is revoked and cannot change"
            )));
        }
        if input
            .account_id
            .as_ref()
            .is_some_and(|a| *a != old.account_id)
        {
            return Err(Error::invalid("account_id", "cannot be changed"));
        }
        let mut new = old.clone();
        apply(&mut new, &input)?;
        let t = now();
        check(ctx, &new, input.expires_at.is_some(), t).await?;
        new.updated_at = t;
        let mut event = actor.event("license.update", "license", lid);
        let changed = changes(&old, &new);
        event
            .events
            .push(super::events::license_updated(&new, &changed));
        event.detail = Some(json!({ "changes": changed }));
        match ctx
            .store
            .update_license_terms(&new, &old, if_match, &event)
            .await
        {
            Ok(l) => Ok(l),
            Err(crate::db::StoreError::NotActive { .. }) => Err(Error::Conflict(format!(
                "license {lid} is revoked and cannot change"
            ))),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    tracing::info!(lid = %lid, by = %actor.name, "license changed");
    Ok(view(l, now()))
}

/// Suspends, resumes or revokes. Setting the status a license already has
/// changes nothing (and writes no event); a revoked license never changes.
pub async fn set_status(
    ctx: &Licensing,
    actor: &Actor,
    lid: &str,
    to: LicenseStatus,
) -> Result<License> {
    let action = match to {
        LicenseStatus::Active => "license.resume",
        LicenseStatus::Suspended => "license.suspend",
        LicenseStatus::Revoked => "license.revoke",
    };
    let mut event = actor.event(action, "license", lid);
    let t = now();
    // A status change bumps the version a PATCH in flight was computed
    // from: taking turns keeps a busy suspend/resume from starving it.
    let _turn = ctx.locks.lock(format!("license:{lid}")).await;
    // The event shows the license as the change leaves it (written only
    // if the status changes: with its audit event).
    if let Some(mut l) = ctx.store.get_license(lid).await? {
        let from = l.status;
        l.status = to;
        l.updated_at = t;
        event.events.push(super::events::license_status(&l, from));
    }
    match ctx.store.transition_license(lid, to, t, &event).await {
        Ok(Transition::Changed { license, removals }) => {
            tracing::info!(lid = %lid, status = to.as_str(), by = %actor.name, "license status changed");
            if removals > 0 {
                tracing::info!(lid = %lid, instances = removals, "revocation queued for delivery");
            }
            Ok(view(license, t))
        }
        Ok(Transition::Unchanged(license)) => Ok(view(license, t)),
        Err(crate::db::StoreError::NotActive { .. }) => Err(Error::Conflict(format!(
            "license {lid} is revoked; revocation is final"
        ))),
        Err(e) => Err(e.into()),
    }
}
