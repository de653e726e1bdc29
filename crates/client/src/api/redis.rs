//! Redis Enterprise's license API (`seeds/redis-enterprise-license-api.md`):
//! `GET|PUT /v1/license`.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use charter_token::Usage;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, ApiState, ClientAddr, Dialect, MAX_BODY_BYTES, body, json_body, require};
use crate::hooks::{Permission, limit_violations};
use crate::manager::{InstallError, LicenseManager};
use crate::state::{Source, StateInfo, TokenStatus};

const D: Dialect = Dialect::Redis;

/// `GET|PUT /v1/license`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/license", get(get_license).put(put_license))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(super::refuse_oversized))
        .with_state(state)
}

/// The license details as the seed lists them.
#[derive(Debug, Serialize, Deserialize)]
pub struct RedisLicense {
    pub license: String,
    pub cluster_name: String,
    pub expired: bool,
    pub activation_date: Option<String>,
    pub expiration_date: Option<String>,
    pub key: String,
    pub features: Vec<String>,
    pub owner: String,
    pub shards_limit: i64,
    pub ram_shards_limit: i64,
    pub ram_shards_in_use: i64,
    pub flash_shards_limit: i64,
    pub flash_shards_in_use: i64,
}

/// The details of the held token (`None` when there is none). Limits the
/// license does not set read 0; `*_in_use` come from the usage hook
/// (`ram_shards`, `flash_shards`).
pub fn details(manager: &LicenseManager, info: &StateInfo) -> Option<RedisLicense> {
    let token = manager.token()?;
    let claims = info.claims.clone().unwrap_or_default();
    let verified = info.claims.is_some();
    let usage: Usage = manager.usage();
    let limit = |name: &str| claims.limits.get(name).copied().unwrap_or(0);
    let in_use = |name: &str| usage.get(name).copied().unwrap_or(0);
    Some(RedisLicense {
        license: token.clone(),
        cluster_name: manager.root_url_host(),
        expired: !info.valid,
        activation_date: verified.then(|| crate::fmt_time(claims.nbf)),
        expiration_date: verified.then(|| crate::fmt_time(claims.exp)),
        key: token,
        features: claims.features.clone(),
        owner: claims.company.clone(),
        shards_limit: limit("shards_limit"),
        ram_shards_limit: limit("ram_shards_limit"),
        ram_shards_in_use: in_use("ram_shards"),
        flash_shards_limit: limit("flash_shards_limit"),
        flash_shards_in_use: in_use("flash_shards"),
    })
}

async fn get_license(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
) -> Result<Json<RedisLicense>, ApiError> {
    require(&state, D, client, &headers, Permission::ViewLicense)?;
    let info = state.manager.state_info();
    if matches!(info.status, TokenStatus::NotFound | TokenStatus::NotLoaded) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no license installed"));
    }
    details(&state.manager, &info)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no license installed"))
}

/// A JSON object with a single key named `license`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutLicense {
    license: String,
}

/// Validates and installs `{"license"}`: 400 for bad JSON or a license that
/// does not verify, 406 when its limits are below what is in use.
#[tracing::instrument(skip_all)]
async fn put_license(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<RedisLicense>, ApiError> {
    require(&state, D, client, &headers, Permission::InstallNewLicense)?;
    let req: PutLicense = json_body(&body(raw)?)?;
    let usage = state.manager.usage();
    let result = state
        .manager
        .install_with(&req.license, Source::Installed, |claims| {
            let violations = limit_violations(claims, &usage);
            if violations.is_empty() {
                Ok(())
            } else {
                Err(InstallError::LimitExceeded(violations))
            }
        })
        .await;
    match result {
        Ok(info) => details(&state.manager, &info)
            .map(Json)
            .ok_or_else(|| ApiError::internal("installed license vanished")),
        Err(InstallError::LimitExceeded(v)) => {
            let first = v.first();
            let message = v
                .iter()
                .map(|x| format!("license violation: {x}"))
                .collect::<Vec<_>>()
                .join("; ");
            Err(ApiError::new(StatusCode::NOT_ACCEPTABLE, message)
                .with_field("limit", json!(first.map(|x| x.limit.clone())))
                .with_field("allowed", json!(first.map(|x| x.allowed)))
                .with_field("in_use", json!(first.map(|x| x.in_use)))
                .with_field("violations", json!(v)))
        }
        Err(InstallError::Store(e)) => Err(ApiError::internal(e)),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}
