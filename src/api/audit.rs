//! The audit trail: `GET /api/audit` lists the events, filtered and a page
//! at a time. Each change writes its own event in its transaction (see
//! `crate::db`).

use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Query};
use super::{ApiError, ApiResult, AppState, PageParams, Paged};
use crate::domain::{AuditEvent, AuditFilter, rfc3339};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Who: an admin's user name, a service account's login, or an instance URL.
    pub actor: Option<String>,
    /// e.g. `license.revoke`.
    pub action: Option<String>,
    /// e.g. `license`.
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// 1-based page number; slower than `after` on deep pages (it walks
    /// every event before the page). Not with `after`.
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<i64>,
    /// The `next` cursor of the page before: the events after it.
    #[param(max_length = 1024)]
    pub after: Option<String>,
}

fn short(field: &str, v: Option<String>) -> ApiResult<Option<String>> {
    match v {
        Some(s) if s.len() > 1000 => Err(ApiError::field(field, "at most 1000 characters")),
        v => Ok(v),
    }
}

fn time(field: &str, v: Option<String>) -> ApiResult<Option<i64>> {
    v.map(|s| rfc3339::parse(&s).map_err(|e| ApiError::field(field, e)))
        .transpose()
}

/// The audit trail, newest first. Every filter is served by an index;
/// follow `next` with `after` for the next page (`page` also works, slower
/// on deep pages).
#[utoipa::path(get, path = "/api/audit", tag = "access", security(("basic" = []), ("service_account" = [])),
    params(AuditQuery),
    responses((status = 200, body = Paged<AuditEvent>), (status = 400, body = charter_token::ErrorBody),
              (status = 401, body = charter_token::ErrorBody), (status = 403, body = charter_token::ErrorBody)))]
async fn list_audit(
    p: Principal,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Paged<AuditEvent>>> {
    p.require(Action::AuditRead)?;
    let page = PageParams {
        page: q.page,
        per_page: q.per_page,
        after: q.after,
    }
    .page()?;
    let filter = AuditFilter {
        actor: short("actor", q.actor)?,
        action: short("action", q.action)?,
        target_type: short("target_type", q.target_type)?,
        target_id: short("target_id", q.target_id)?,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
    };
    let listing = state.store.list_audit(&filter, &page).await?;
    Ok(Json(Paged::new(listing, &page)))
}
