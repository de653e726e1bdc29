//! `/api/licenses`: create, list, get, change, suspend, resume, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Path, Query};
use super::precondition::{IfMatch, tagged};
use super::{ApiError, ApiResult, AppState, PageParams, Paged};
use crate::domain::{License, LicenseState, LicenseStatus};
use crate::licensing::licenses::{self, LicenseInput};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_licenses, create_license))
        .routes(routes!(get_license, update_license))
        .routes(routes!(suspend_license))
        .routes(routes!(resume_license))
        .routes(routes!(revoke_license))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LicenseQuery {
    pub account_id: Option<String>,
    pub product: Option<String>,
    /// `active`, `suspended`, `revoked`, `expired` or `not_started`.
    #[param(pattern = "^(active|suspended|revoked|expired|not_started)$")]
    pub state: Option<String>,
    /// RFC 3339: only licenses that expire before then (with
    /// `state=active`, the ones behind `charter_licenses_expiring`).
    pub expires_before: Option<String>,
    /// 1-based page number; slower than `after` on deep pages (it walks
    /// every license before the page). Not with `after`.
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<i64>,
    /// The `next` cursor of the page before: the licenses after it.
    #[param(max_length = 1024)]
    pub after: Option<String>,
}

/// Lists licenses, filtered and a page at a time (oldest first). Follow
/// `next` with `after` for the next page; `page` also works, slower on
/// deep pages.
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
        after: q.after,
    }
    .page()?;
    let wanted = q
        .state
        .as_deref()
        .map(|s| {
            LicenseState::parse(s).ok_or_else(|| {
                ApiError::field(
                    "state",
                    "must be active, suspended, revoked, expired or not_started",
                )
            })
        })
        .transpose()?;
    let listing = licenses::list(
        &state,
        q.account_id,
        q.product,
        wanted,
        q.expires_before.as_deref(),
        &page,
    )
    .await?;
    Ok(Json(Paged::new(listing, &page)))
}

/// Creates a license.
#[utoipa::path(post, path = "/api/licenses", tag = "licenses", security(("basic" = []), ("service_account" = [])), request_body = LicenseInput,
    responses((status = 201, body = License), (status = 400, body = charter_token::ErrorBody),
              (status = 422, body = charter_token::ErrorBody)))]
async fn create_license(
    p: Principal,
    State(state): State<AppState>,
    Json(input): Json<LicenseInput>,
) -> ApiResult<(StatusCode, Json<License>)> {
    p.require(Action::LicensingWrite)?;
    let l = licenses::create(&state, &p.actor(), input).await?;
    Ok((StatusCode::CREATED, Json(l)))
}

/// Gets a license (its `ETag` is what `If-Match` on a PATCH names).
#[utoipa::path(get, path = "/api/licenses/{lid}", tag = "licenses", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)),
    responses((status = 200, body = License, headers(("ETag" = String, description = "the license's version"))),
              (status = 404, body = charter_token::ErrorBody)))]
async fn get_license(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
) -> ApiResult<Response> {
    p.require(Action::LicensingRead)?;
    let l = licenses::get(&state, &lid).await?;
    Ok(tagged(l.version, l))
}

/// Changes a license's terms; the next token issued or renewed carries the
/// change. With `If-Match`, only the version it names (412 otherwise).
#[utoipa::path(patch, path = "/api/licenses/{lid}", tag = "licenses", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag the change is for", pattern = r#"^(\*|(W/)?"[0-9]+")$"#)),
    request_body = LicenseInput,
    responses((status = 200, body = License, headers(("ETag" = String, description = "the new version"))),
              (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody), (status = 409, body = charter_token::ErrorBody),
              (status = 412, description = "changed since the If-Match version", body = charter_token::ErrorBody),
              (status = 422, body = charter_token::ErrorBody)))]
async fn update_license(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(input): Json<LicenseInput>,
) -> ApiResult<Response> {
    p.require(Action::LicensingWrite)?;
    let l = licenses::update(&state, &p.actor(), &lid, input, if_match).await?;
    Ok(tagged(l.version, l))
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
    Ok(Json(
        licenses::set_status(state, &p.actor(), lid, to).await?,
    ))
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
