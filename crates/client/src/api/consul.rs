//! Consul Enterprise's operator license API
//! (`seeds/consul-operator-license-api.md`): `GET|PUT|DELETE
//! /v1/operator/license` with the `dc` parameter.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use charter_token::Claims;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, ClientAddr, Dialect, MAX_BODY_BYTES, body, require};
use crate::hooks::Permission;
use crate::manager::InstallError;
use crate::state::StateInfo;

const D: Dialect = Dialect::Consul;

/// `GET|PUT|DELETE /v1/operator/license`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/v1/operator/license",
            get(get_license).put(put_license).delete(reset_license),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(super::refuse_oversized))
        .with_state(state)
}

/// The answer of all three methods.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LicenseReply {
    pub valid: bool,
    pub license: Option<ConsulLicense>,
    pub warnings: Vec<String>,
}

/// Consul's `License` object; times are RFC 3339.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConsulLicense {
    pub license_id: String,
    pub customer_id: String,
    pub installation_id: String,
    pub issue_time: String,
    pub start_time: String,
    pub expiration_time: String,
    pub termination_time: String,
    pub product: String,
    pub flags: BTreeMap<String, String>,
    pub features: Vec<String>,
    pub modules: Vec<String>,
    pub temporary: bool,
}

impl ConsulLicense {
    /// The mapping documented in the crate docs.
    pub fn from_claims(c: &Claims) -> Self {
        ConsulLicense {
            license_id: c.lid.clone(),
            customer_id: c.account.clone(),
            installation_id: c.sub.clone(),
            issue_time: crate::fmt_time(c.iat),
            start_time: crate::fmt_time(c.nbf),
            expiration_time: crate::fmt_time(c.exp),
            termination_time: crate::fmt_time(c.lexp),
            product: c.prod.first().cloned().unwrap_or_default(),
            flags: c.flags.clone(),
            features: c.features.clone(),
            modules: c.prod.clone(),
            temporary: c.trial,
        }
    }
}

/// Builds the reply from a snapshot: `License` is null when no verified
/// token is held; `Warnings` carries the reason it is not valid and every
/// current warning.
pub fn reply(info: &StateInfo) -> LicenseReply {
    let mut warnings = Vec::new();
    if let Some(reason) = info.reason.as_ref().filter(|_| !info.valid) {
        warnings.push(reason.clone());
    }
    warnings.extend(info.warning_messages());
    LicenseReply {
        valid: info.valid,
        license: info.claims.as_ref().map(ConsulLicense::from_claims),
        warnings,
    }
}

/// The query parameters; `dc` is accepted for every method (one datacenter).
#[derive(Debug, Deserialize)]
struct DcParam {
    #[serde(default)]
    dc: Option<String>,
}

fn check_dc(q: Result<Query<DcParam>, QueryRejection>) -> Result<(), ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match q.dc {
        Some(dc) if dc.len() > 255 || dc.chars().any(char::is_control) => {
            Err(ApiError::bad_request("invalid dc parameter"))
        }
        _ => Ok(()),
    }
}

async fn get_license(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    q: Result<Query<DcParam>, QueryRejection>,
) -> Result<Json<LicenseReply>, ApiError> {
    require(&state, D, client, &headers, Permission::OperatorRead)?;
    check_dc(q)?;
    Ok(Json(reply(&state.manager.state_info())))
}

/// The body is the raw license blob (the token).
#[tracing::instrument(skip_all)]
async fn put_license(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    q: Result<Query<DcParam>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<LicenseReply>, ApiError> {
    require(&state, D, client, &headers, Permission::OperatorWrite)?;
    check_dc(q)?;
    let bytes = body(raw)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("license is not text"))?
        .trim();
    if text.is_empty() {
        return Err(ApiError::bad_request("the body must be the license"));
    }
    match state.manager.install(text).await {
        Ok(info) => Ok(Json(reply(&info))),
        Err(InstallError::Store(e)) => Err(ApiError::internal(e)),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

/// Goes back to the built-in license; 409 when it is not valid (the
/// license held is unchanged), as the seed says. Without a built-in license,
/// removes the installed one: afterwards `Valid` is false and `License`
/// null (how a revocation the issuer pushes reaches such a host).
#[tracing::instrument(skip_all)]
async fn reset_license(
    State(state): State<ApiState>,
    client: ClientAddr,
    headers: HeaderMap,
    q: Result<Query<DcParam>, QueryRejection>,
) -> Result<Json<LicenseReply>, ApiError> {
    require(&state, D, client, &headers, Permission::OperatorWrite)?;
    check_dc(q)?;
    match state.manager.revert_to_builtin().await {
        Ok(info) => Ok(Json(reply(&info))),
        Err(InstallError::Store(e)) => Err(ApiError::internal(e)),
        Err(InstallError::NoBuiltin) => match state.manager.remove_stored().await {
            Ok(info) => Ok(Json(reply(&info))),
            Err(e) => Err(ApiError::internal(e)),
        },
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the built-in license is not valid: {e}"),
        )),
    }
}
