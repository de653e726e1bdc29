//! `/api/accounts`: the vendor's customers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Path, Query};
use super::precondition::{IfMatch, tagged};
use super::{ApiResult, AppState, PageParams, Paged};
use crate::domain::Account;
use crate::licensing::accounts::{self, AccountPatch, NewAccount};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account))
}

/// Lists accounts, a page at a time.
#[utoipa::path(get, path = "/api/accounts", tag = "accounts", security(("basic" = []), ("service_account" = [])), params(PageParams),
    responses((status = 200, body = Paged<Account>), (status = 400, body = charter_token::ErrorBody)))]
async fn list_accounts(
    p: Principal,
    State(state): State<AppState>,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Paged<Account>>> {
    p.require(Action::LicensingRead)?;
    let page = q.page()?;
    let listing = accounts::list(&state, &page).await?;
    Ok(Json(Paged::new(listing, &page)))
}

/// Creates an account.
#[utoipa::path(post, path = "/api/accounts", tag = "accounts", security(("basic" = []), ("service_account" = [])), request_body = NewAccount,
    responses((status = 201, body = Account), (status = 400, body = charter_token::ErrorBody),
              (status = 409, body = charter_token::ErrorBody)))]
async fn create_account(
    p: Principal,
    State(state): State<AppState>,
    Json(body): Json<NewAccount>,
) -> ApiResult<(StatusCode, Json<Account>)> {
    p.require(Action::LicensingWrite)?;
    let account = accounts::create(&state, &p.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(account)))
}

/// Gets an account (its `ETag` is what `If-Match` on a PATCH names).
#[utoipa::path(get, path = "/api/accounts/{id}", tag = "accounts", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Account, headers(("ETag" = String, description = "the account's version"))),
              (status = 404, body = charter_token::ErrorBody)))]
async fn get_account(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    p.require(Action::LicensingRead)?;
    let account = accounts::get(&state, &id).await?;
    Ok(tagged(account.version, account))
}

/// Changes an account; its next tokens carry the new names. With
/// `If-Match`, only the version it names.
#[utoipa::path(patch, path = "/api/accounts/{id}", tag = "accounts", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag the change is for", pattern = r#"^(\*|(W/)?"[0-9]+")$"#)),
    request_body = AccountPatch,
    responses((status = 200, body = Account, headers(("ETag" = String, description = "the new version"))),
              (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody), (status = 409, body = charter_token::ErrorBody),
              (status = 412, description = "changed since the If-Match version", body = charter_token::ErrorBody)))]
async fn update_account(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(body): Json<AccountPatch>,
) -> ApiResult<Response> {
    p.require(Action::LicensingWrite)?;
    let account = accounts::update(&state, &p.actor(), &id, body, if_match).await?;
    Ok(tagged(account.version, account))
}
