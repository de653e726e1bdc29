//! `/api/serviceaccounts`: service accounts and their tokens, with Grafana's
//! paths and field names. A token is shown once, at creation; only its
//! SHA-256 is kept.

use axum::extract::State;
use axum::http::StatusCode;
use charter_token::now;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{self, Action, Principal};
use super::extract::{Json, Path, Query};
use super::{ApiError, ApiResult, AppState, PageParams, check_text};
use crate::db::{NewSaToken, NewServiceAccount as NewSa};
use crate::domain::{Role, SaToken, ServiceAccount, rfc3339};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_service_account))
        .routes(routes!(search_service_accounts))
        .routes(routes!(
            get_service_account,
            update_service_account,
            delete_service_account
        ))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(delete_token))
}

/// A service account as Grafana shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountDto {
    pub id: i64,
    pub name: String,
    pub login: String,
    pub org_id: i64,
    pub is_disabled: bool,
    pub role: Role,
    /// How many tokens it has.
    pub tokens: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: String,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: String,
}

impl From<ServiceAccount> for ServiceAccountDto {
    fn from(sa: ServiceAccount) -> Self {
        ServiceAccountDto {
            id: sa.id,
            name: sa.name,
            login: sa.login,
            org_id: 1,
            is_disabled: sa.is_disabled,
            role: sa.role,
            tokens: sa.tokens,
            created_at: rfc3339::format(sa.created_at),
            updated_at: rfc3339::format(sa.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewServiceAccount {
    #[schema(
        min_length = 1,
        max_length = 190,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// `Viewer` (default), `Editor` or `Admin`.
    #[schema(pattern = "^(Viewer|Editor|Admin)$")]
    pub role: Option<String>,
    #[serde(default)]
    pub is_disabled: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountPatch {
    #[schema(
        min_length = 1,
        max_length = 190,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[schema(pattern = "^(Viewer|Editor|Admin)$")]
    pub role: Option<String>,
    pub is_disabled: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SearchQuery {
    /// Part of the name or login (case-insensitive).
    pub query: Option<String>,
    /// 1-based; default 1.
    pub page: Option<i64>,
    /// Default 1000.
    pub perpage: Option<i64>,
    /// The `next` cursor of the page before: the accounts after it (by
    /// name). Not with `page`.
    #[param(max_length = 1024)]
    pub after: Option<String>,
}

/// `GET /api/serviceaccounts/search`, as Grafana answers it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchResult {
    /// The accounts that match, counted up to 1000.
    pub total_count: i64,
    pub service_accounts: Vec<ServiceAccountDto>,
    pub page: i64,
    pub per_page: i64,
    /// The cursor of the next page (pass it as `after`); null on the last.
    /// Not in Grafana's answer, which has no cursor.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewToken {
    #[schema(
        min_length = 1,
        max_length = 190,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Lifetime in seconds; absent or 0 for a token that does not expire.
    #[schema(minimum = 0, maximum = 315_360_000)]
    pub seconds_to_live: Option<i64>,
}

/// A new token: `key` is shown only in this answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    /// `chr_sa_...`: send as `Authorization: Bearer <key>`.
    pub key: String,
}

/// A token as listed (never its secret).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenDto {
    pub id: i64,
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created: String,
    /// When it last authenticated (to the minute); null when never.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expiration: Option<String>,
    /// 0 when the token does not expire or has expired.
    pub seconds_until_expiration: i64,
    pub has_expired: bool,
}

impl TokenDto {
    fn new(t: SaToken, now: i64) -> Self {
        TokenDto {
            id: t.id,
            name: t.name.clone(),
            created: rfc3339::format(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339::format),
            expiration: t.expires_at.map(rfc3339::format),
            seconds_until_expiration: t.expires_at.map_or(0, |e| (e - now).max(0)),
            has_expired: t.has_expired(now),
        }
    }
}

/// `{"message": ...}` answers of Grafana's deletes and updates.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

/// Parses a numeric id from the path, or a 400 naming it.
pub fn parse_id(field: &str, s: &str) -> ApiResult<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::field(field, format!("{s:?} is not a positive integer")))
}

fn parse_role(s: &str) -> ApiResult<Role> {
    Role::parse(s).ok_or_else(|| ApiError::field("role", "must be Viewer, Editor or Admin"))
}

/// Grafana's login for a name: `sa-` and the name in lower case, dashed.
pub(crate) fn login_for(name: &str) -> String {
    let slug: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("sa-{slug}")
}

async fn load(state: &AppState, id: &str) -> ApiResult<ServiceAccount> {
    let id = parse_id("id", id)?;
    state
        .store
        .get_service_account(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("service account {id} not found")))
}

/// Creates a service account.
#[utoipa::path(post, path = "/api/serviceaccounts", tag = "access", security(("basic" = []), ("service_account" = [])),
    request_body = NewServiceAccount,
    responses((status = 201, body = ServiceAccountDto), (status = 400, body = charter_token::ErrorBody),
              (status = 403, body = charter_token::ErrorBody), (status = 409, body = charter_token::ErrorBody)))]
async fn create_service_account(
    p: Principal,
    State(state): State<AppState>,
    Json(body): Json<NewServiceAccount>,
) -> ApiResult<(StatusCode, Json<ServiceAccountDto>)> {
    p.require(Action::ServiceAccountsWrite)?;
    check_text("name", &body.name, 190)?;
    let role = body.role.as_deref().map_or(Ok(Role::Viewer), parse_role)?;
    let name = body.name.trim();
    let login = login_for(name);
    // The store fills in the new id as the event's target.
    let mut event = p.event("serviceaccount.create", "serviceaccount", "");
    event.detail =
        Some(json!({"login": login, "role": role.as_str(), "isDisabled": body.is_disabled}));
    let new = NewSa {
        name,
        login: &login,
        role,
        is_disabled: body.is_disabled,
        now: now(),
    };
    let sa = state.store.insert_service_account(new, &event).await?;
    tracing::info!(service_account = %sa.login, role = role.as_str(), by = p.name(), "service account created");
    Ok((StatusCode::CREATED, Json(sa.into())))
}

/// Searches service accounts by name or login, a page at a time.
#[utoipa::path(get, path = "/api/serviceaccounts/search", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(SearchQuery),
    responses((status = 200, body = SearchResult), (status = 400, body = charter_token::ErrorBody),
              (status = 403, body = charter_token::ErrorBody)))]
async fn search_service_accounts(
    p: Principal,
    State(state): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<SearchResult>> {
    p.require(Action::ServiceAccountsRead)?;
    if !q.perpage.is_none_or(|n| (1..=1000).contains(&n)) {
        return Err(ApiError::field("perpage", "must be between 1 and 1000"));
    }
    let page = PageParams {
        page: q.page,
        per_page: q.perpage,
        after: q.after,
    }
    .page_of(1000)?;
    let query = q.query.unwrap_or_default();
    if query.len() > 190 {
        return Err(ApiError::field("query", "at most 190 characters"));
    }
    let listing = state.store.search_service_accounts(&query, &page).await?;
    let next = listing.next().map(|c| c.encode());
    Ok(Json(SearchResult {
        total_count: listing.total().0,
        service_accounts: listing.items.into_iter().map(Into::into).collect(),
        page: page.page,
        per_page: page.per_page,
        next,
    }))
}

/// Gets a service account.
#[utoipa::path(get, path = "/api/serviceaccounts/{id}", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ServiceAccountDto), (status = 404, body = charter_token::ErrorBody)))]
async fn get_service_account(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ServiceAccountDto>> {
    p.require(Action::ServiceAccountsRead)?;
    Ok(Json(load(&state, &id).await?.into()))
}

/// Changes a service account's name, role or whether it is disabled.
#[utoipa::path(patch, path = "/api/serviceaccounts/{id}", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(("id" = i64, Path)), request_body = ServiceAccountPatch,
    responses((status = 200, description = "`{id, name, serviceaccount, message}`"),
              (status = 400, body = charter_token::ErrorBody), (status = 404, body = charter_token::ErrorBody),
              (status = 409, body = charter_token::ErrorBody)))]
async fn update_service_account(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<ServiceAccountPatch>,
) -> ApiResult<Json<serde_json::Value>> {
    p.require(Action::ServiceAccountsWrite)?;
    let mut sa = load(&state, &id).await?;
    if let Some(name) = body.name {
        check_text("name", &name, 190)?;
        sa.name = name.trim().to_string();
        sa.login = login_for(&sa.name);
    }
    if let Some(role) = body.role {
        sa.role = parse_role(&role)?;
    }
    if let Some(d) = body.is_disabled {
        sa.is_disabled = d;
    }
    sa.updated_at = now();
    let mut event = p.event("serviceaccount.update", "serviceaccount", sa.id.to_string());
    event.detail =
        Some(json!({"login": sa.login, "role": sa.role.as_str(), "isDisabled": sa.is_disabled}));
    state.store.update_service_account(&sa, &event).await?;
    let dto = ServiceAccountDto::from(sa);
    Ok(Json(json!({
        "id": dto.id,
        "name": dto.name,
        "serviceaccount": dto,
        "message": "Service account updated",
    })))
}

/// Deletes a service account and its tokens.
#[utoipa::path(delete, path = "/api/serviceaccounts/{id}", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Message), (status = 404, body = charter_token::ErrorBody)))]
async fn delete_service_account(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Message>> {
    p.require(Action::ServiceAccountsDelete)?;
    let sa = load(&state, &id).await?;
    let mut event = p.event("serviceaccount.delete", "serviceaccount", sa.id.to_string());
    event.detail = Some(json!({"login": sa.login}));
    if !state.store.delete_service_account(sa.id, &event).await? {
        return Err(ApiError::not_found(format!(
            "service account {} not found",
            sa.id
        )));
    }
    tracing::info!(service_account = %sa.login, by = p.name(), "service account deleted");
    Ok(Json(Message {
        message: "Service account deleted".into(),
    }))
}

/// Lists a service account's tokens (never their secrets).
#[utoipa::path(get, path = "/api/serviceaccounts/{id}/tokens", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Vec<TokenDto>), (status = 404, body = charter_token::ErrorBody)))]
async fn list_tokens(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<TokenDto>>> {
    p.require(Action::ServiceAccountsRead)?;
    let sa = load(&state, &id).await?;
    let t = now();
    let tokens = state.store.list_sa_tokens(sa.id).await?;
    Ok(Json(
        tokens.into_iter().map(|k| TokenDto::new(k, t)).collect(),
    ))
}

/// Longest `secondsToLive`: ten years.
const MAX_SECONDS_TO_LIVE: i64 = 10 * 365 * 86_400;

/// Creates a token for a service account; its `key` is shown only now.
#[utoipa::path(post, path = "/api/serviceaccounts/{id}/tokens", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(("id" = i64, Path)), request_body = NewToken,
    responses((status = 200, body = CreatedToken), (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody), (status = 409, body = charter_token::ErrorBody)))]
async fn create_token(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<NewToken>,
) -> ApiResult<Json<CreatedToken>> {
    p.require(Action::ServiceAccountsWrite)?;
    let sa = load(&state, &id).await?;
    check_text("name", &body.name, 190)?;
    let ttl = body.seconds_to_live.unwrap_or(0);
    if !(0..=MAX_SECONDS_TO_LIVE).contains(&ttl) {
        return Err(ApiError::field(
            "secondsToLive",
            format!("must be between 0 (no expiry) and {MAX_SECONDS_TO_LIVE}"),
        ));
    }
    let t = now();
    let expires_at = (ttl > 0).then(|| t + ttl);
    let (key, hash) = auth::new_sa_token()?;
    let name = body.name.trim();
    // The store fills in the new token's id as the event's target.
    let mut event = p.event("serviceaccount.token.create", "serviceaccount_token", "");
    event.detail = Some(json!({"serviceAccountId": sa.id, "name": name, "secondsToLive": ttl}));
    let new = NewSaToken {
        service_account_id: sa.id,
        name,
        hash: &hash,
        now: t,
        expires_at,
    };
    let token = state.store.insert_sa_token(new, &event).await?;
    tracing::info!(service_account = %sa.login, token = token.id, by = p.name(), "service account token created");
    Ok(Json(CreatedToken {
        id: token.id,
        name: token.name,
        key,
    }))
}

/// Deletes a service account's token; it is refused at once.
#[utoipa::path(delete, path = "/api/serviceaccounts/{id}/tokens/{tokenId}", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(("id" = i64, Path), ("tokenId" = i64, Path)),
    responses((status = 200, body = Message), (status = 404, body = charter_token::ErrorBody)))]
async fn delete_token(
    p: Principal,
    State(state): State<AppState>,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<Json<Message>> {
    p.require(Action::ServiceAccountsWrite)?;
    let sa = load(&state, &id).await?;
    let token_id = parse_id("tokenId", &token_id)?;
    let mut event = p.event(
        "serviceaccount.token.delete",
        "serviceaccount_token",
        token_id.to_string(),
    );
    event.detail = Some(json!({"serviceAccountId": sa.id}));
    if !state
        .store
        .delete_sa_token(Some(sa.id), token_id, &event)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "token {token_id} of service account {} not found",
            sa.id
        )));
    }
    tracing::info!(service_account = %sa.login, token = token_id, by = p.name(), "service account token deleted");
    Ok(Json(Message {
        message: "Service account token deleted".into(),
    }))
}
