//! Public endpoints: health and the JWKS.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(jwks))
        .routes(routes!(revocations))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
}

/// Whether the issuer can serve: 200 when the database answers, 503 if not
/// or while it drains before shutting down.
#[utoipa::path(get, path = "/api/health", tag = "meta",
    responses((status = 200, body = Health), (status = 503, body = charter_token::ErrorBody)))]
async fn health(State(state): State<AppState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match state.store.health().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(Health {
                status: "ok",
                database: state.store.backend(),
            }),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// The public keys that verify license tokens (RFC 7517).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "meta",
    responses((status = 200, description = "JWK set", content_type = "application/json")))]
async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.keys.jwks()),
    )
        .into_response()
}

/// How long a revocation list is valid.
pub const REVOCATIONS_TTL: i64 = 3600;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Revocations {
    /// A JWS (signed like license tokens) whose payload is
    /// `{"iss", "iat", "exp", "revoked": [lid, ...]}`; valid for an hour.
    pub token: String,
    pub revoked: Vec<String>,
}

/// The revoked license ids, signed, so that instances that missed a push
/// still stop trusting a revoked license.
#[utoipa::path(get, path = "/api/revocations", tag = "meta",
    responses((status = 200, body = Revocations), (status = 503, body = charter_token::ErrorBody)))]
async fn revocations(State(state): State<AppState>) -> Result<Response, ApiError> {
    let revoked = state.store.revoked_licenses().await?;
    let iat = charter_token::now();
    let payload = serde_json::json!({
        "iss": state.config.public_url,
        "iat": iat,
        "exp": iat + REVOCATIONS_TTL,
        "revoked": revoked,
    });
    let bytes = serde_json::to_vec(&payload).map_err(ApiError::internal)?;
    let token = state
        .keys
        .signing_key()
        .sign_payload(&bytes)
        .map_err(ApiError::internal)?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(Revocations { token, revoked }),
    )
        .into_response())
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render(&*state.store).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
