//! Grafana Enterprise's licensing API (`seeds/grafana-licensing-api.md`):
//! check, add a token, renew now, remove.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, ClientAddr, Dialect, MAX_BODY_BYTES, body, json_body, require};
use crate::hooks::Permission;
use crate::manager::{InstallError, RemoveError};
use crate::renewal::RenewError;
use crate::state::StateInfo;

const D: Dialect = Dialect::Grafana;

/// `GET /api/licensing/check`, `POST|DELETE /api/licensing/token`,
/// `POST /api/licensing/token/renew`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/licensing/token", post(add_token).delete(remove_token))
        .route("/api/licensing/token/renew", post(renew))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(super::refuse_oversized))
        // Added after the layer, which applies only to the routes above:
        // the check reads no body and is the hot path (see benches/check.rs).
        .route("/api/licensing/check", get(check))
        .with_state(state)
}

/// `true` when a valid license is in force.
async fn check(State(state): State<ApiState>, req: Request) -> Result<Json<bool>, ApiError> {
    // The whole request, not a `HeaderMap` extractor, which would clone the headers.
    let client = ClientAddr::of(req.extensions());
    require(&state, D, client, req.headers(), Permission::LicensingRead)?;
    Ok(Json(state.manager.is_valid()))
}

#[derive(Deserialize)]
struct AddToken {
    token: String,
}

/// Installs `{"token"}`; answers its claims with `status`.
#[tracing::instrument(skip_all)]
async fn add_token(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    require(&state, D, client, &headers, Permission::LicensingWrite)?;
    let req: AddToken = json_body(&body(raw)?)?;
    match state.manager.install(&req.token).await {
        Ok(info) => Ok(Json(claims_with_status(&info))),
        Err(InstallError::Store(e)) => Err(ApiError::internal(e)),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

/// Asks the issuer for a new token now; answers its claims.
#[tracing::instrument(skip_all)]
async fn renew(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    require(&state, D, client, &headers, Permission::LicensingWrite)?;
    body(raw)?;
    match state.manager.renew_now().await {
        Ok(info) => Ok(Json(claims_with_status(&info))),
        Err(e) => Err(renew_error(e)),
    }
}

/// Removes the stored license; `instance` must name this instance.
#[tracing::instrument(skip_all)]
async fn remove_token(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&state, D, client, &headers, Permission::LicensingDelete)?;
    let req: Value = json_body(&body(raw)?)?;
    let Some(instance) = req.get("instance").and_then(Value::as_str) else {
        return Err(ApiError::unprocessable(
            "instance (the root URL of this instance) is required",
        ));
    };
    match state.manager.remove(instance).await {
        Ok(_) => Ok((StatusCode::ACCEPTED, Json(json!({})))),
        Err(e @ RemoveError::WrongInstance { .. }) => Err(ApiError::unprocessable(e.to_string())),
        Err(RemoveError::Store(e)) => Err(ApiError::internal(e)),
    }
}

/// The claims as Grafana writes them, with `status`; zero values when
/// no verified token is held (as the seed's example).
pub fn claims_with_status(info: &StateInfo) -> Value {
    let claims = info.claims.clone().unwrap_or_default();
    let mut out = serde_json::Map::new();
    out.insert("status".into(), json!(info.status));
    if let Ok(Value::Object(map)) = serde_json::to_value(&claims) {
        out.extend(map);
    }
    Value::Object(out)
}

/// How a failed renewal answers: the issuer's refusal as 403 (429 when it
/// rate limits), an unreachable issuer as 502.
fn renew_error(e: RenewError) -> ApiError {
    let message = e.to_string();
    match e {
        RenewError::NoToken => ApiError::bad_request(message),
        RenewError::NoIssuer => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
        RenewError::Refused { status: 429, .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
        RenewError::Refused { status, .. } if status >= 500 => {
            ApiError::new(StatusCode::BAD_GATEWAY, message)
        }
        RenewError::Refused { status, .. } => {
            ApiError::new(StatusCode::FORBIDDEN, message).with_field("issuer_status", json!(status))
        }
        RenewError::Revoked { .. } => ApiError::new(StatusCode::FORBIDDEN, message),
        RenewError::Unreachable(_) | RenewError::BadAnswer(_) => {
            ApiError::new(StatusCode::BAD_GATEWAY, message)
        }
    }
}
