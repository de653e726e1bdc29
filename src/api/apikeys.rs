//! `/api/auth/keys`: Grafana's legacy API keys, exactly as
//! `seeds/grafana-auth-api.md` has them. Keys are service-account tokens;
//! creating one here is gone (410), listing and deleting still work.

use axum::extract::State;
use axum::http::StatusCode;
use charter_token::now;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Path, Query};
use super::serviceaccounts::{Message, parse_id};
use super::{ApiError, ApiResult, AppState};
use crate::domain::{Role, rfc3339};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(delete_key))
}

/// The seed's answer to `POST /api/auth/keys`.
pub const CREATE_GONE: &str = "this endpoint has been removed, please use POST /api/serviceaccounts and POST /api/serviceaccounts/{id}/tokens instead";

/// A key as the legacy list shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// Only when the key expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expiration: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct KeysQuery {
    /// List expired keys too.
    #[serde(default)]
    pub include_expired: bool,
}

/// Lists API keys (service-account tokens), hiding expired ones unless asked.
#[utoipa::path(get, path = "/api/auth/keys", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(KeysQuery),
    responses((status = 200, body = Vec<ApiKey>), (status = 401, body = charter_token::ErrorBody),
              (status = 403, body = charter_token::ErrorBody)))]
async fn list_keys(
    p: Principal,
    State(state): State<AppState>,
    Query(q): Query<KeysQuery>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    p.require(Action::ApiKeysRead)?;
    let keys = state.store.list_api_keys(q.include_expired, now()).await?;
    Ok(Json(
        keys.into_iter()
            .map(|(t, role)| ApiKey {
                id: t.id,
                name: t.name,
                role,
                expiration: t.expires_at.map(rfc3339::format),
            })
            .collect(),
    ))
}

/// Obsolete: answers 410 and points to the service account API.
#[utoipa::path(post, path = "/api/auth/keys", tag = "access", security(("basic" = []), ("service_account" = [])),
    responses((status = 410, body = charter_token::ErrorBody), (status = 401, body = charter_token::ErrorBody)))]
async fn create_key(_p: Principal) -> ApiError {
    ApiError::new(StatusCode::GONE, CREATE_GONE)
}

/// Deletes an API key (a service-account token); it is refused at once.
#[utoipa::path(delete, path = "/api/auth/keys/{id}", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Message), (status = 403, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody)))]
async fn delete_key(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Message>> {
    p.require(Action::ApiKeysDelete)?;
    let id = parse_id("id", &id)?;
    let mut event = p.event("apikey.delete", "apikey", id.to_string());
    event.detail = Some(json!({"via": "/api/auth/keys"}));
    if !state.store.delete_sa_token(None, id, &event).await? {
        return Err(ApiError::not_found(format!("API key {id} not found")));
    }
    tracing::info!(key = id, by = p.name(), "API key deleted");
    Ok(Json(Message {
        message: "API key deleted".into(),
    }))
}
