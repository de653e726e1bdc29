//! `/api/webhooks`: endpoints that receive the issuer's events, signed as
//! the Standard Webhooks specification says (see [`crate::licensing::webhooks`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Path, Query};
use super::precondition::{IfMatch, tagged};
use super::{ApiResult, AppState, PageParams, Paged};
use crate::domain::{Delivery, Webhook};
use crate::licensing::webhooks::{self, WebhookInput, WithSecret};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(list_webhook_deliveries))
        .routes(routes!(test_webhook))
}

/// The endpoints, oldest first (never their secrets).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", security(("basic" = []), ("service_account" = [])),
    responses((status = 200, body = Vec<Webhook>), (status = 403, body = charter_token::ErrorBody)))]
async fn list_webhooks(
    p: Principal,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<Webhook>>> {
    p.require(Action::WebhooksRead)?;
    Ok(Json(webhooks::list(&state).await?))
}

/// Creates an endpoint. Its signing secret is in this answer only.
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", security(("basic" = []), ("service_account" = [])), request_body = WebhookInput,
    responses((status = 201, body = WithSecret), (status = 400, body = charter_token::ErrorBody),
              (status = 403, body = charter_token::ErrorBody)))]
async fn create_webhook(
    p: Principal,
    State(state): State<AppState>,
    Json(body): Json<WebhookInput>,
) -> ApiResult<(StatusCode, Json<WithSecret>)> {
    p.require(Action::WebhooksWrite)?;
    let created = webhooks::create(&state, &p.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Gets an endpoint (its `ETag` is what `If-Match` on a PATCH names).
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Webhook, headers(("ETag" = String, description = "the endpoint's version"))),
              (status = 403, body = charter_token::ErrorBody), (status = 404, body = charter_token::ErrorBody)))]
async fn get_webhook(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    p.require(Action::WebhooksRead)?;
    let w = webhooks::get(&state, &id).await?;
    Ok(tagged(w.version, w))
}

/// Changes an endpoint's URL, event types, description or `enabled`.
#[utoipa::path(patch, path = "/api/webhooks/{id}", tag = "webhooks", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the ETag the change is for", pattern = r#"^(\*|(W/)?"[0-9]+")$"#)),
    request_body = WebhookInput,
    responses((status = 200, body = Webhook, headers(("ETag" = String, description = "the new version"))),
              (status = 400, body = charter_token::ErrorBody), (status = 403, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody),
              (status = 412, description = "changed since the If-Match version", body = charter_token::ErrorBody)))]
async fn update_webhook(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(body): Json<WebhookInput>,
) -> ApiResult<Response> {
    p.require(Action::WebhooksWrite)?;
    let w = webhooks::update(&state, &p.actor(), &id, body, if_match).await?;
    Ok(tagged(w.version, w))
}

/// Deletes an endpoint with its pending deliveries.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 403, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody)))]
async fn delete_webhook(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.require(Action::WebhooksWrite)?;
    webhooks::delete(&state, &p.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives the endpoint a new secret, shown in this answer only. The old one
/// keeps signing beside it for 24 hours (two `v1,` signatures), so a
/// receiver can switch without losing a delivery.
#[utoipa::path(post, path = "/api/webhooks/{id}/rotate-secret", tag = "webhooks", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = WithSecret), (status = 403, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody)))]
async fn rotate_webhook_secret(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<WithSecret>> {
    p.require(Action::WebhooksWrite)?;
    Ok(Json(
        webhooks::rotate_secret(&state, &p.actor(), &id).await?,
    ))
}

/// The endpoint's deliveries, newest first: attempts, last status and
/// error, and when the next retry is due.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = Paged<Delivery>), (status = 400, body = charter_token::ErrorBody),
              (status = 403, body = charter_token::ErrorBody), (status = 404, body = charter_token::ErrorBody)))]
async fn list_webhook_deliveries(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Paged<Delivery>>> {
    p.require(Action::WebhooksRead)?;
    let page = q.page()?;
    let listing = webhooks::deliveries(&state, &id, &page).await?;
    Ok(Json(Paged::new(listing, &page)))
}

/// Sends the endpoint a `webhook.test` event now (enabled or not); the
/// delivery answered here is pending: its state in the deliveries list
/// tells how it went.
#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "webhooks", security(("basic" = []), ("service_account" = [])),
    params(("id" = String, Path)),
    responses((status = 202, body = Delivery), (status = 403, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody)))]
async fn test_webhook(
    p: Principal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Delivery>)> {
    p.require(Action::WebhooksWrite)?;
    let d = webhooks::test(&state, &p.actor(), &id).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}
