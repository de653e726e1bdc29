//! `/api/accounts`: the vendor's customers.

use axum::extract::State;
use axum::http::StatusCode;
use charter_token::now;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::audit;
use super::auth::{Action, Principal};
use super::extract::{Json, Path, Query};
use super::{ApiError, ApiResult, AppState, PageParams, Paged, check_slug, check_text};
use crate::domain::Account;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub company: String,
    /// Defaults to the company name.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub account: Option<String>,
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub slug: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub company: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub account: Option<String>,
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub slug: Option<String>,
}

pub async fn load(state: &AppState, id: &str) -> ApiResult<Account> {
    state
        .store
        .get_account(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {id} not found")))
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
    let (items, total) = state.store.list_accounts(page).await?;
    Ok(Json(Paged::new(items, total, page)))
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
    check_text("company", &body.company, 200)?;
    let account = body.account.unwrap_or_else(|| body.company.clone());
    check_text("account", &account, 200)?;
    check_slug("slug", &body.slug)?;
    let t = now();
    let a = Account {
        id: uuid::Uuid::now_v7().to_string(),
        company: body.company,
        account,
        slug: body.slug,
        created_at: t,
        updated_at: t,
    };
    state.store.insert_account(&a).await?;
    audit::record(&state, p.event("account.create", "account", &a.id)).await;
    tracing::info!(account = %a.id, by = p.name(), "account created");
    Ok((StatusCode::CREATED, Json(a)))
}

/// Gets an account.
#[utoipa::path(get, path = "/api/accounts/{id}", tag = "accounts", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Account), (status = 404, body = charter_token::ErrorBody)))]
async fn get_account(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Account>> {
    p.require(Action::LicensingRead)?;
    Ok(Json(load(&state, &id).await?))
}

/// Changes an account; its next tokens carry the new names.
#[utoipa::path(patch, path = "/api/accounts/{id}", tag = "accounts", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path)), request_body = AccountPatch,
    responses((status = 200, body = Account), (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody), (status = 409, body = charter_token::ErrorBody)))]
async fn update_account(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<AccountPatch>,
) -> ApiResult<Json<Account>> {
    p.require(Action::LicensingWrite)?;
    let mut a = load(&state, &id).await?;
    if let Some(v) = body.company {
        check_text("company", &v, 200)?;
        a.company = v;
    }
    if let Some(v) = body.account {
        check_text("account", &v, 200)?;
        a.account = v;
    }
    if let Some(v) = body.slug {
        check_slug("slug", &v)?;
        a.slug = v;
    }
    a.updated_at = now();
    state.store.update_account(&a).await?;
    audit::record(&state, p.event("account.update", "account", &a.id)).await;
    Ok(Json(a))
}
