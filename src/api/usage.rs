//! `GET /api/licenses/{lid}/usage`: the usage history as a series, in JSON
//! or, with `Accept: text/csv`, as CSV for billing.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, Principal};
use super::extract::{Json, Path, Query};
use super::{ApiError, ApiResult, AppState};
use crate::domain::rfc3339;
use crate::domain::usage::{Bucket, csv};
use crate::licensing::usage::{self, Usage};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_usage))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// RFC 3339, inclusive [default: 30 days before `to`].
    pub from: Option<String>,
    /// RFC 3339, exclusive [default: now].
    pub to: Option<String>,
    /// `hour`, `day` or `month` (UTC) [default: day].
    pub bucket: Option<Bucket>,
}

fn time(field: &str, v: Option<String>) -> ApiResult<Option<i64>> {
    v.map(|s| rfc3339::parse(&s).map_err(|e| ApiError::field(field, e)))
        .transpose()
}

/// The usage instances reported with their renewals: per bucket, each
/// counter's maximum and last value per instance and summed over the
/// instances (an instance counts once per bucket: its last report in it).
/// Buckets without a report are left out. With `Accept: text/csv`, the
/// same as CSV: `bucket_start,bucket_end,instance,counter,max,last`, the
/// totals under instance `*`.
#[utoipa::path(get, path = "/api/licenses/{lid}/usage", tag = "licenses", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), UsageParams),
    responses((status = 200, description = "the series (JSON), or as CSV with `Accept: text/csv`",
               content((Usage = "application/json"), (String = "text/csv"))),
              (status = 400, body = charter_token::ErrorBody), (status = 404, body = charter_token::ErrorBody)))]
async fn get_usage(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
    Query(q): Query<UsageParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    p.require(Action::LicensingRead)?;
    let (from, to) = (time("from", q.from)?, time("to", q.to)?);
    let series = usage::get(&state, &lid, from, to, q.bucket.unwrap_or(Bucket::Day)).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/csv")));
    if !wants_csv {
        return Ok(Json(series).into_response());
    }
    let mut res = csv(&series.buckets).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    // The lid is a UUID (checked by the lookup above), safe in a header.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"usage-{lid}.csv\"")) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
