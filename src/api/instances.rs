//! `/api/licenses/{lid}/instances`: the installations bound to a license.

use axum::extract::State;
use axum::http::StatusCode;
use charter_token::{InstanceUrl, now};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::audit;
use super::auth::{Action, Principal};
use super::extract::{Json, Path};
use super::licenses;
use super::{ApiError, ApiResult, AppState};
use crate::domain::{Dialect, Instance, LicenseStatus};
use crate::sealed::Credentials;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances, bind_instance))
        .routes(routes!(get_instance, update_instance, unbind_instance))
        .routes(routes!(push_instance))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInstance {
    /// The instance's root URL (http or https); stored with a trailing `/`.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://[^\\s]+$", max_length = 2048)]
    pub url: String,
    /// Default `grafana`.
    pub dialect: Option<Dialect>,
    /// Default false.
    pub push_enabled: Option<bool>,
    /// How the issuer authenticates when it pushes; stored encrypted, never shown.
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstancePatch {
    pub dialect: Option<Dialect>,
    pub push_enabled: Option<bool>,
    /// New push credentials; `null` removes them.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<Credentials>)]
    pub credentials: Option<Option<Credentials>>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`).
fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn seal(state: &AppState, c: &Credentials) -> ApiResult<String> {
    let check = |field: &str, v: &str| -> ApiResult<()> {
        if v.is_empty() || v.len() > 4096 || v.chars().any(char::is_control) {
            return Err(ApiError::field(
                field,
                "must be 1-4096 printable characters",
            ));
        }
        Ok(())
    };
    match c {
        Credentials::Basic { username, password } => {
            check("credentials.username", username)?;
            if username.contains(':') {
                return Err(ApiError::field(
                    "credentials.username",
                    "must not contain ':'",
                ));
            }
            check("credentials.password", password)?;
        }
        Credentials::Bearer { token } => check("credentials.token", token)?,
    }
    let sealer = state.sealer.as_ref().ok_or_else(|| {
        ApiError::unprocessable(
            "credentials: the issuer has no credentials.key in its keys directory to encrypt them",
        )
    })?;
    sealer.seal(c).map_err(ApiError::internal)
}

/// Parses an instance URL, or a 400 naming the field.
pub fn parse_url(field: &str, url: &str) -> ApiResult<InstanceUrl> {
    InstanceUrl::parse(url).map_err(|e| ApiError::field(field, e))
}

/// A new, unbound instance record.
pub fn new_instance(
    lid: &str,
    url: &InstanceUrl,
    dialect: Dialect,
    push_enabled: bool,
    t: i64,
) -> Instance {
    Instance {
        id: uuid::Uuid::now_v7().to_string(),
        lid: lid.to_string(),
        url: url.to_string(),
        dialect,
        push_enabled,
        last_jti: None,
        last_issued_at: None,
        next_renewal_at: None,
        usage: None,
        usage_reported_at: None,
        token_expires_at: None,
        has_credentials: false,
        // With push on, the first token is pushed right away.
        push_next_at: push_enabled.then_some(t),
        push_attempts: 0,
        push_last_error: None,
        push_last_ok_at: None,
        push_at_risk: false,
        removal_pending: false,
        push_pending_jti: None,
        created_at: t,
        updated_at: t,
    }
}

async fn load(state: &AppState, lid: &str, id: &str) -> ApiResult<Instance> {
    state
        .store
        .get_instance(lid, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("instance {id} of license {lid} not found")))
}

/// Lists the instances bound to a license.
#[utoipa::path(get, path = "/api/licenses/{lid}/instances", tag = "instances", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)),
    responses((status = 200, body = Vec<Instance>), (status = 404, body = charter_token::ErrorBody)))]
async fn list_instances(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
) -> ApiResult<Json<Vec<Instance>>> {
    p.require(Action::LicensingRead)?;
    licenses::load(&state, &lid).await?;
    Ok(Json(state.store.list_instances(&lid).await?))
}

/// Binds an instance to a license (409 when `max_instances` are bound).
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
    let url = parse_url("url", &body.url)?;
    let sealed = body
        .credentials
        .as_ref()
        .map(|c| seal(&state, c))
        .transpose()?;
    let license = licenses::load(&state, &lid).await?;
    if license.status == LicenseStatus::Revoked {
        return Err(ApiError::conflict(format!("license {lid} is revoked")));
    }
    let mut instance = new_instance(
        &lid,
        &url,
        body.dialect.unwrap_or(Dialect::Grafana),
        body.push_enabled.unwrap_or(false),
        now(),
    );
    state
        .store
        .bind_instance(&instance, license.max_instances)
        .await?;
    if let Some(sealed) = sealed {
        state
            .store
            .set_credentials(&lid, &instance.id, Some(&sealed))
            .await?;
        instance.has_credentials = true;
    }
    let mut event = p.event("instance.bind", "instance", &instance.id);
    event.detail = Some(serde_json::json!({"lid": lid, "url": instance.url}));
    audit::record(&state, event).await;
    tracing::info!(lid = %lid, instance = %instance.url, by = p.name(), "instance bound");
    Ok((StatusCode::CREATED, Json(instance)))
}

/// Gets an instance.
#[utoipa::path(get, path = "/api/licenses/{lid}/instances/{id}", tag = "instances", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = charter_token::ErrorBody)))]
async fn get_instance(
    p: Principal,
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
) -> ApiResult<Json<Instance>> {
    p.require(Action::LicensingRead)?;
    Ok(Json(load(&state, &lid, &id).await?))
}

/// Changes how tokens reach an instance.
#[utoipa::path(patch, path = "/api/licenses/{lid}/instances/{id}", tag = "instances", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), ("id" = String, Path)), request_body = InstancePatch,
    responses((status = 200, body = Instance), (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody)))]
async fn update_instance(
    p: Principal,
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
    Json(body): Json<InstancePatch>,
) -> ApiResult<Json<Instance>> {
    p.require(Action::LicensingWrite)?;
    let mut i = load(&state, &lid, &id).await?;
    let sealed = match &body.credentials {
        Some(Some(c)) => Some(Some(seal(&state, c)?)),
        Some(None) => Some(None),
        None => None,
    };
    let t = now();
    if let Some(d) = body.dialect {
        i.dialect = d;
    }
    if let Some(v) = body.push_enabled {
        if v && !i.push_enabled {
            // Turned on: push the current terms now.
            i.push_next_at = Some(t);
            i.push_attempts = 0;
        }
        i.push_enabled = v;
    }
    i.updated_at = t;
    state.store.update_instance(&i).await?;
    if let Some(sealed) = sealed {
        state
            .store
            .set_credentials(&lid, &id, sealed.as_deref())
            .await?;
        i.has_credentials = sealed.is_some();
    }
    let mut event = p.event("instance.update", "instance", &i.id);
    event.detail = Some(serde_json::json!({"lid": lid, "url": i.url}));
    audit::record(&state, event).await;
    Ok(Json(i))
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
    if !state.store.delete_instance(&lid, &id).await? {
        return Err(ApiError::not_found(format!(
            "instance {id} of license {lid} not found"
        )));
    }
    let mut event = p.event("instance.unbind", "instance", &id);
    event.detail = Some(serde_json::json!({"lid": lid}));
    audit::record(&state, event).await;
    tracing::info!(lid = %lid, instance = %id, by = p.name(), "instance unbound");
    Ok(StatusCode::NO_CONTENT)
}

/// Pushes a fresh token to the instance now (or the pending revocation);
/// the outcome is in the answer's push fields.
#[utoipa::path(post, path = "/api/licenses/{lid}/instances/{id}/push", tag = "instances", security(("basic" = [])),
    params(("lid" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "attempted; see push_last_error", body = Instance),
              (status = 404, body = charter_token::ErrorBody),
              (status = 409, description = "push off, license not pushable, or a push in progress", body = charter_token::ErrorBody)))]
async fn push_instance(
    p: Principal,
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
) -> ApiResult<Json<Instance>> {
    p.require(Action::LicensingWrite)?;
    let i = load(&state, &lid, &id).await?;
    if !i.push_enabled {
        return Err(ApiError::conflict(format!(
            "push is not enabled for instance {id}"
        )));
    }
    let license = licenses::load(&state, &lid).await?;
    if !i.removal_pending {
        crate::domain::check_renewable(&license, now())
            .map_err(|e| ApiError::conflict(e.to_string()))?;
    }
    match crate::push::push_now(&state, &lid, &id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(delivered) => {
            let mut event = p.event("instance.push", "instance", &id);
            event.detail = Some(serde_json::json!({"lid": lid, "delivered": delivered}));
            audit::record(&state, event).await;
            Ok(Json(load(&state, &lid, &id).await?))
        }
        None => Err(ApiError::conflict(format!(
            "instance {id} is being pushed by another run; try again"
        ))),
    }
}
