//! The issuer's signing keys: `GET /api/keys` lists them (kid, algorithm,
//! state, dates; never a private half) and `POST /api/keys/rotate`
//! rotates (see [`crate::licensing::keys`]).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Query};
use super::{ApiResult, AppState};
use crate::licensing::keys::{self, KeyView, Rotation};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys))
        .routes(routes!(rotate_key))
}

/// The signing keys, newest first: `next` (published, signing later),
/// `current` (signs), `previous` (verifies), `retired` (neither).
#[utoipa::path(get, path = "/api/keys", tag = "keys", security(("basic" = []), ("service_account" = [])),
    responses((status = 200, body = Vec<KeyView>), (status = 401, body = charter_token::ErrorBody),
              (status = 403, body = charter_token::ErrorBody)))]
async fn list_keys(p: Principal, State(state): State<AppState>) -> ApiResult<Json<Vec<KeyView>>> {
    p.require(Action::KeysRead)?;
    Ok(Json(keys::list(&state).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RotateQuery {
    /// For a compromised key: the new key signs at once (no prepublication)
    /// and the current key is retired at once, so the tokens it signed are
    /// refused from then on (renewal answers 401; instances stop trusting
    /// them after their next JWKS refresh).
    #[serde(default)]
    pub immediate: bool,
}

/// Rotates the signing key: a new key (of `--key-alg`) is published in the
/// JWKS now and signs after `--key-prepublish-hours`; the current key then
/// verifies until every token it signed is past `exp` plus the renewal
/// grace. 409 while a new key is already waiting to sign.
#[utoipa::path(post, path = "/api/keys/rotate", tag = "keys", security(("basic" = []), ("service_account" = [])),
    params(RotateQuery),
    responses((status = 201, body = Rotation), (status = 401, body = charter_token::ErrorBody),
              (status = 403, body = charter_token::ErrorBody), (status = 409, body = charter_token::ErrorBody)))]
async fn rotate_key(
    p: Principal,
    State(state): State<AppState>,
    Query(q): Query<RotateQuery>,
) -> ApiResult<(StatusCode, Json<Rotation>)> {
    p.require(Action::KeysRotate)?;
    let rotation = keys::rotate(&state, &p.actor(), q.immediate).await?;
    Ok((StatusCode::CREATED, Json(rotation)))
}
