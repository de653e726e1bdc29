//! `/api/licenses/{lid}/instances`: the installations bound to a license.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Path, Query};
use super::precondition::{IfMatch, tagged};
use super::{ApiResult, AppState, PageParams};
use crate::domain::Instance;
use crate::licensing::instances::{self, InstancePatch, NewInstance};
use axum::http::HeaderValue;
use axum::http::header::LINK;
use axum::response::IntoResponse;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances, bind_instance))
        .routes(routes!(get_instance, update_instance, unbind_instance))
        .routes(routes!(push_instance))
}

/// Lists the instances bound to a license, oldest first, at most
/// `per_page` (default and most 1000). The body stays a plain array; when
/// more follow, the `Link` header names the next page
/// (`<...?per_page=N&after=CURSOR>; rel="next"`, RFC 8288).
#[utoipa::path(get, path = "/api/licenses/{lid}/instances", tag = "instances", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), PageParams),
    responses((status = 200, body = Vec<Instance>,
               headers(("Link" = String, description = "`<URL>; rel=\"next\"` when more instances follow"))),
              (status = 404, body = charter_token::ErrorBody)))]
async fn list_instances(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
    Query(q): Query<PageParams>,
) -> ApiResult<Response> {
    p.require(Action::LicensingRead)?;
    let page = q.page_of(1000)?;
    let listing = instances::list(&state, &lid, &page).await?;
    let next = listing.next().map(|c| {
        format!(
            "</api/licenses/{}/instances?per_page={}&after={}>; rel=\"next\"",
            url_segment(&lid),
            page.per_page,
            c.encode()
        )
    });
    let mut res = Json(listing.items).into_response();
    if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
        res.headers_mut().insert(LINK, link);
    }
    Ok(res)
}

/// A path segment as a URL carries it (a license id is a UUID, but the
/// path names whatever the client sent).
fn url_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Binds an instance to a license, with its push credentials (409 when
/// `max_instances` are bound or the license is revoked).
#[utoipa::path(post, path = "/api/licenses/{lid}/instances", tag = "instances", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)), request_body = NewInstance,
    responses((status = 201, body = Instance), (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody), (status = 409, body = charter_token::ErrorBody)))]
async fn bind_instance(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
    Json(body): Json<NewInstance>,
) -> ApiResult<(StatusCode, Json<Instance>)> {
    p.require(Action::LicensingWrite)?;
    let instance = instances::bind(&state, &p.actor(), &lid, body).await?;
    Ok((StatusCode::CREATED, Json(instance)))
}

/// Gets an instance (its `ETag` is what `If-Match` on a PATCH names; it
/// changes with every renewal and push too).
#[utoipa::path(get, path = "/api/licenses/{lid}/instances/{id}", tag = "instances", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Instance, headers(("ETag" = String, description = "the instance's version"))),
              (status = 404, body = charter_token::ErrorBody)))]
async fn get_instance(
    p: Principal,
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    p.require(Action::LicensingRead)?;
    let i = instances::get(&state, &lid, &id).await?;
    Ok(tagged(i.version, i))
}

/// Changes how tokens reach an instance. With `If-Match`, only the
/// version it names (412 otherwise).
#[utoipa::path(patch, path = "/api/licenses/{lid}/instances/{id}", tag = "instances", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), ("id" = String, Path),
           ("If-Match" = Option<String>, Header, description = "the ETag the change is for", pattern = r#"^(\*|(W/)?"[0-9]+")$"#)),
    request_body = InstancePatch,
    responses((status = 200, body = Instance, headers(("ETag" = String, description = "the new version"))),
              (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody),
              (status = 412, description = "changed since the If-Match version", body = charter_token::ErrorBody)))]
async fn update_instance(
    p: Principal,
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
    Json(body): Json<InstancePatch>,
) -> ApiResult<Response> {
    p.require(Action::LicensingWrite)?;
    let i = instances::update(&state, &p.actor(), &lid, &id, body, if_match).await?;
    Ok(tagged(i.version, i))
}

/// Unbinds an instance, freeing its place; its renewals are refused after.
#[utoipa::path(delete, path = "/api/licenses/{lid}/instances/{id}", tag = "instances", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = charter_token::ErrorBody)))]
async fn unbind_instance(
    p: Principal,
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    p.require(Action::LicensingDelete)?;
    instances::unbind(&state, &p.actor(), &lid, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pushes a fresh token to the instance now (or the pending revocation);
/// the outcome is in the answer's push fields.
#[utoipa::path(post, path = "/api/licenses/{lid}/instances/{id}/push", tag = "instances", security(("basic" = [])),
    params(("lid" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "attempted; see push_last_error", body = Instance),
              (status = 404, body = charter_token::ErrorBody),
              (status = 409, description = "push off, license not pushable, or a push in progress", body = charter_token::ErrorBody),
              (status = 503, description = "database unavailable", body = charter_token::ErrorBody)))]
async fn push_instance(
    p: Principal,
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
) -> ApiResult<Json<Instance>> {
    p.require(Action::LicensingWrite)?;
    Ok(Json(
        instances::push_now(&state, &p.actor(), &lid, &id).await?,
    ))
}
