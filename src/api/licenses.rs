//! `/api/licenses`: create, list, get, change, suspend, resume, revoke.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use charter_token::now;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::audit;
use super::auth::{Action, Principal};
use super::extract::{Json, Path, Query};
use super::{ApiError, ApiResult, AppState, PageParams, Paged, check_slug};
use crate::domain::{License, LicenseFilter, LicenseStatus, LicenseTerms, license_state, rfc3339};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_licenses, create_license))
        .routes(routes!(get_license, update_license))
        .routes(routes!(suspend_license))
        .routes(routes!(resume_license))
        .routes(routes!(revoke_license))
}

/// The terms of a license. On create, `account_id`, `products` and
/// `expires_at` are required; on PATCH every field is optional and only the
/// ones given change (`account_id` cannot).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseInput {
    pub account_id: Option<String>,
    pub products: Option<Vec<String>>,
    /// RFC 3339; default now.
    pub starts_at: Option<String>,
    /// RFC 3339, in the future.
    pub expires_at: Option<String>,
    /// Default 1.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_instances: Option<i64>,
    /// Default `users`.
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub limit_by: Option<String>,
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
    pub limits: Option<BTreeMap<String, i64>>,
    /// Each must be granted by one of the license's products.
    pub features: Option<Vec<String>>,
    pub flags: Option<BTreeMap<String, String>>,
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LicenseQuery {
    pub account_id: Option<String>,
    pub product: Option<String>,
    /// `active`, `suspended`, `revoked` or `expired`.
    #[param(pattern = "^(active|suspended|revoked|expired)$")]
    pub state: Option<String>,
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<i64>,
}

/// The license as the API shows it, with its state at `now`.
pub fn view(mut l: License, now: i64) -> License {
    l.state = license_state(&l, now).to_string();
    l
}

pub async fn load(state: &AppState, lid: &str) -> ApiResult<License> {
    state
        .store
        .get_license(lid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("license {lid} not found")))
}

fn time_field(field: &str, v: &str) -> ApiResult<i64> {
    rfc3339::parse(v).map_err(|e| ApiError::field(field, e))
}

fn non_negative(field: &str, v: i64, max: i64) -> ApiResult<i64> {
    if (0..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::field(
            field,
            format!("must be between 0 and {max}, not {v}"),
        ))
    }
}

fn in_range(field: &str, v: i64, lo: i64, hi: i64) -> ApiResult<i64> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::field(
            field,
            format!("must be between {lo} and {hi}, not {v}"),
        ))
    }
}

const MAX_COUNT: i64 = 1_000_000_000;

/// Applies the given fields to `l`, checking each.
fn apply(l: &mut License, input: LicenseInput) -> ApiResult<()> {
    let t = &mut l.terms;
    if let Some(v) = input.products {
        if v.is_empty() || v.len() > 50 {
            return Err(ApiError::field("products", "must list 1 to 50 products"));
        }
        for p in &v {
            check_slug("products", p)?;
        }
        t.products = v;
    }
    if let Some(v) = input.starts_at {
        l.starts_at = time_field("starts_at", &v)?;
    }
    if let Some(v) = input.expires_at {
        l.expires_at = time_field("expires_at", &v)?;
    }
    if let Some(v) = input.max_instances {
        l.max_instances = in_range("max_instances", v, 1, 1_000_000)?;
    }
    if let Some(v) = input.limit_by {
        check_slug("limit_by", &v)?;
        t.limit_by = v;
    }
    if let Some(v) = input.included_users {
        t.included_users = non_negative("included_users", v, MAX_COUNT)?;
    }
    if let Some(v) = input.included_admins {
        t.included_admins = non_negative("included_admins", v, MAX_COUNT)?;
    }
    if let Some(v) = input.included_viewers {
        t.included_viewers = non_negative("included_viewers", v, MAX_COUNT)?;
    }
    if let Some(v) = input.max_concurrent_user_sessions {
        t.max_concurrent_user_sessions =
            non_negative("max_concurrent_user_sessions", v, MAX_COUNT)?;
    }
    if let Some(v) = input.anonymous_ratio {
        t.anonymous_ratio = non_negative("anonymous_ratio", v, MAX_COUNT)?;
    }
    if let Some(v) = input.limits {
        if v.len() > 100 {
            return Err(ApiError::field("limits", "at most 100 limits"));
        }
        for (k, n) in &v {
            check_slug("limits", k)?;
            non_negative(&format!("limits.{k}"), *n, i64::MAX)?;
        }
        t.limits = v;
    }
    if let Some(v) = input.features {
        if v.len() > 500 {
            return Err(ApiError::field("features", "at most 500 features"));
        }
        for f in &v {
            check_slug("features", f)?;
        }
        t.features = v;
    }
    if let Some(v) = input.flags {
        if v.len() > 100 {
            return Err(ApiError::field("flags", "at most 100 flags"));
        }
        for (k, val) in &v {
            check_slug("flags", k)?;
            if val.len() > 200 || val.chars().any(char::is_control) {
                return Err(ApiError::field(
                    &format!("flags.{k}"),
                    "must be at most 200 printable characters",
                ));
            }
        }
        t.flags = v;
    }
    if let Some(v) = input.trial {
        t.trial = v;
    }
    if let Some(v) = input.usage_billing {
        t.usage_billing = v;
    }
    if let Some(v) = input.details_url {
        if !v.is_empty() {
            charter_token::InstanceUrl::parse(&v).map_err(|e| ApiError::field("details_url", e))?;
        }
        t.details_url = v;
    }
    if let Some(v) = input.lic_exp_warn_days {
        t.lic_exp_warn_days = non_negative("lic_exp_warn_days", v, 3650)?;
    }
    if let Some(v) = input.tok_exp_warn_days {
        t.tok_exp_warn_days = non_negative("tok_exp_warn_days", v, 3650)?;
    }
    if let Some(v) = input.update_days {
        t.update_days = in_range("update_days", v, 1, 3650)?;
    }
    if let Some(v) = input.token_ttl_days {
        t.token_ttl_days = in_range("token_ttl_days", v, 1, 3650)?;
    }
    Ok(())
}

/// Rules across fields and against other records.
async fn check(state: &AppState, l: &License, expiry_changed: bool, now: i64) -> ApiResult<()> {
    if l.expires_at <= l.starts_at {
        return Err(ApiError::field("expires_at", "must be after starts_at"));
    }
    if expiry_changed && l.expires_at <= now {
        return Err(ApiError::field("expires_at", "is in the past"));
    }
    let mut granted = std::collections::HashSet::new();
    for slug in &l.terms.products {
        let product = state.store.get_product(slug).await?.ok_or_else(|| {
            ApiError::unprocessable(format!("products: product {slug} does not exist"))
        })?;
        granted.extend(product.features);
    }
    if let Some(f) = l.terms.features.iter().find(|f| !granted.contains(*f)) {
        return Err(ApiError::unprocessable(format!(
            "features: {f} is not granted by the license's products"
        )));
    }
    Ok(())
}

/// Lists licenses, filtered and a page at a time.
#[utoipa::path(get, path = "/api/licenses", tag = "licenses", security(("basic" = []), ("service_account" = [])), params(LicenseQuery),
    responses((status = 200, body = Paged<License>), (status = 400, body = charter_token::ErrorBody)))]
async fn list_licenses(
    p: Principal,
    State(state): State<AppState>,
    Query(q): Query<LicenseQuery>,
) -> ApiResult<Json<Paged<License>>> {
    p.require(Action::LicensingRead)?;
    let page = PageParams {
        page: q.page,
        per_page: q.per_page,
    }
    .page()?;
    if let Some(s) = q.state.as_deref()
        && !matches!(s, "active" | "suspended" | "revoked" | "expired")
    {
        return Err(ApiError::field(
            "state",
            "must be active, suspended, revoked or expired",
        ));
    }
    let t = now();
    let filter = LicenseFilter {
        account_id: q.account_id,
        product: q.product,
        state: q.state,
        now: t,
    };
    let (items, total) = state.store.list_licenses(&filter, page).await?;
    Ok(Json(Paged::new(
        items.into_iter().map(|l| view(l, t)).collect(),
        total,
        page,
    )))
}

/// Creates a license.
#[utoipa::path(post, path = "/api/licenses", tag = "licenses", security(("basic" = []), ("service_account" = [])), request_body = LicenseInput,
    responses((status = 201, body = License), (status = 400, body = charter_token::ErrorBody),
              (status = 422, body = charter_token::ErrorBody)))]
async fn create_license(
    p: Principal,
    State(state): State<AppState>,
    Json(mut input): Json<LicenseInput>,
) -> ApiResult<(StatusCode, Json<License>)> {
    p.require(Action::LicensingWrite)?;
    let account_id = input
        .account_id
        .take()
        .ok_or_else(|| ApiError::field("account_id", "is required"))?;
    if input.products.is_none() {
        return Err(ApiError::field("products", "is required"));
    }
    if input.expires_at.is_none() {
        return Err(ApiError::field("expires_at", "is required"));
    }
    let t = now();
    let mut l = License {
        lid: uuid::Uuid::now_v7().to_string(),
        account_id,
        status: LicenseStatus::Active,
        state: String::new(),
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
            token_ttl_days: state.config.token_ttl_days,
        },
        created_at: t,
        updated_at: t,
    };
    apply(&mut l, input)?;
    if state.store.get_account(&l.account_id).await?.is_none() {
        return Err(ApiError::unprocessable(format!(
            "account_id: account {} does not exist",
            l.account_id
        )));
    }
    check(&state, &l, true, t).await?;
    state.store.insert_license(&l).await?;
    audit::record(&state, p.event("license.create", "license", &l.lid)).await;
    tracing::info!(lid = %l.lid, by = p.name(), "license created");
    Ok((StatusCode::CREATED, Json(view(l, t))))
}

/// Gets a license.
#[utoipa::path(get, path = "/api/licenses/{lid}", tag = "licenses", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)),
    responses((status = 200, body = License), (status = 404, body = charter_token::ErrorBody)))]
async fn get_license(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
) -> ApiResult<Json<License>> {
    p.require(Action::LicensingRead)?;
    Ok(Json(view(load(&state, &lid).await?, now())))
}

/// Changes a license; the next token issued or renewed carries the change.
#[utoipa::path(patch, path = "/api/licenses/{lid}", tag = "licenses", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)), request_body = LicenseInput,
    responses((status = 200, body = License), (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody), (status = 409, body = charter_token::ErrorBody),
              (status = 422, body = charter_token::ErrorBody)))]
async fn update_license(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
    Json(input): Json<LicenseInput>,
) -> ApiResult<Json<License>> {
    p.require(Action::LicensingWrite)?;
    let mut l = load(&state, &lid).await?;
    if l.status == LicenseStatus::Revoked {
        return Err(ApiError::conflict(format!(
            "license {lid} is revoked and cannot change"
        )));
    }
    if input
        .account_id
        .as_ref()
        .is_some_and(|a| *a != l.account_id)
    {
        return Err(ApiError::field("account_id", "cannot be changed"));
    }
    let expiry_changed = input.expires_at.is_some();
    apply(&mut l, input)?;
    let t = now();
    check(&state, &l, expiry_changed, t).await?;
    l.updated_at = t;
    state.store.update_license(&l).await?;
    audit::record(&state, p.event("license.update", "license", &l.lid)).await;
    tracing::info!(lid = %l.lid, by = p.name(), "license changed");
    Ok(Json(view(l, t)))
}

async fn set_status(
    state: &AppState,
    p: &Principal,
    lid: &str,
    to: LicenseStatus,
) -> ApiResult<Json<License>> {
    p.require(match to {
        LicenseStatus::Active => Action::LicensingWrite,
        _ => Action::LicensingDelete,
    })?;
    let mut l = load(state, lid).await?;
    if l.status == LicenseStatus::Revoked && to != LicenseStatus::Revoked {
        return Err(ApiError::conflict(format!(
            "license {lid} is revoked; revocation is final"
        )));
    }
    let t = now();
    if l.status != to {
        l.status = to;
        l.updated_at = t;
        state.store.update_license(&l).await?;
        let action = match to {
            LicenseStatus::Active => "license.resume",
            LicenseStatus::Suspended => "license.suspend",
            LicenseStatus::Revoked => "license.revoke",
        };
        audit::record(state, p.event(action, "license", &l.lid)).await;
        tracing::info!(lid = %l.lid, status = to.as_str(), by = p.name(), "license status changed");
        if to == LicenseStatus::Revoked {
            // Push-enabled instances get the removal delivered by the push job.
            let n = state.store.mark_removals(lid, t).await?;
            if n > 0 {
                tracing::info!(lid = %lid, instances = n, "revocation queued for delivery");
            }
        }
    }
    Ok(Json(view(l, t)))
}

/// Suspends a license: renewals are refused until it is resumed.
#[utoipa::path(post, path = "/api/licenses/{lid}/suspend", tag = "licenses", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)),
    responses((status = 200, body = License), (status = 404, body = charter_token::ErrorBody),
              (status = 409, body = charter_token::ErrorBody)))]
async fn suspend_license(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
) -> ApiResult<Json<License>> {
    set_status(&state, &p, &lid, LicenseStatus::Suspended).await
}

/// Resumes a suspended license.
#[utoipa::path(post, path = "/api/licenses/{lid}/resume", tag = "licenses", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)),
    responses((status = 200, body = License), (status = 404, body = charter_token::ErrorBody),
              (status = 409, body = charter_token::ErrorBody)))]
async fn resume_license(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
) -> ApiResult<Json<License>> {
    set_status(&state, &p, &lid, LicenseStatus::Active).await
}

/// Revokes a license, for good.
#[utoipa::path(post, path = "/api/licenses/{lid}/revoke", tag = "licenses", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)),
    responses((status = 200, body = License), (status = 404, body = charter_token::ErrorBody)))]
async fn revoke_license(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
) -> ApiResult<Json<License>> {
    set_status(&state, &p, &lid, LicenseStatus::Revoked).await
}
