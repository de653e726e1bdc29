//! Tokens: issue through the portal, history, and the instance-facing renew
//! endpoint `POST /api/tokens/renew`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use charter_token::{DAY, RenewRequest, TokenResponse, VerifyError, now};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, ClientIp, Principal};
use super::extract::{Json, Path, Query};
use super::{ApiError, ApiResult, AppState, PageParams, Paged, instances, licenses};
use crate::domain::{
    ActorKind, AuditEvent, RenewRefusal, TokenReason, TokenRecord, check_renewable,
};
use crate::issuance::{self, IssueError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, issue_token))
        .routes(routes!(renew))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The instance's root URL; bound to the license if it is not yet.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://[^\\s]+$", max_length = 2048)]
    pub instance: String,
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Store(e) => e.into(),
            IssueError::Sign(e) => ApiError::internal(format!("signing failed: {e}")),
        }
    }
}

/// Issues a token for an instance, binding it if there is room.
#[utoipa::path(post, path = "/api/licenses/{lid}/tokens", tag = "tokens", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path)), request_body = IssueRequest,
    responses((status = 201, body = TokenResponse), (status = 400, body = charter_token::ErrorBody),
              (status = 404, body = charter_token::ErrorBody),
              (status = 409, description = "license suspended, revoked or expired, or no room for another instance", body = charter_token::ErrorBody)))]
async fn issue_token(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
    Json(body): Json<IssueRequest>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    p.require(Action::LicensingWrite)?;
    let url = instances::parse_url("instance", &body.instance)?;
    // License, instance and account in one store call.
    let ctx = state
        .store
        .issuance_context(&lid, url.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("license {lid} not found")))?;
    let license = ctx.license;
    let t = now();
    check_renewable(&license, t).map_err(|r| ApiError::conflict(r.to_string()))?;
    let account = ctx
        .account
        .ok_or_else(|| ApiError::not_found(format!("account {} not found", license.account_id)))?;
    let (instance, bind) = match ctx.instance {
        Some(i) => (i, false),
        None => (
            instances::new_instance(&lid, &url, crate::domain::Dialect::Grafana, false, t),
            true,
        ),
    };
    let req = issuance::Request {
        license: &license,
        account: &account,
        instance,
        bind,
        reason: TokenReason::Issue,
        renewed_from: None,
        usage: None,
    };
    let event = p.event("token.issue", "token", "");
    let (token, claims) = issuance::issue_audited(
        &*state.store,
        &state.keys,
        &state.config.public_url,
        req,
        t,
        Some(event),
    )
    .await?;
    state.metrics.token_issued("issue");
    record_token(&claims);
    Ok((StatusCode::CREATED, Json(TokenResponse { token, claims })))
}

/// The tokens issued for a license, newest first.
#[utoipa::path(get, path = "/api/licenses/{lid}/tokens", tag = "tokens", security(("basic" = []), ("service_account" = [])),
    params(("lid" = String, Path), PageParams),
    responses((status = 200, body = Paged<TokenRecord>), (status = 404, body = charter_token::ErrorBody)))]
async fn list_tokens(
    p: Principal,
    State(state): State<AppState>,
    Path(lid): Path<String>,
    Query(q): Query<PageParams>,
) -> ApiResult<Json<Paged<TokenRecord>>> {
    p.require(Action::LicensingRead)?;
    let page = q.page()?;
    licenses::load(&state, &lid).await?;
    let (items, total) = state.store.list_tokens(&lid, page).await?;
    Ok(Json(Paged::new(items, total, page)))
}

/// Names the token issued on the request's span: its access line then says
/// which (one log line per issuance; the audit trail has the rest).
fn record_token(claims: &charter_token::Claims) {
    let span = tracing::Span::current();
    span.record("lid", claims.lid.as_str());
    span.record("instance", claims.sub.as_str());
    span.record("jti", claims.jti.as_str());
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let unauthorized = || {
        let mut e = ApiError::unauthorized("missing bearer license token");
        e.challenge = Some("Bearer");
        e
    };
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(unauthorized()),
    }
}

/// Renews an instance's license token.
///
/// `Authorization: Bearer <current token>`; the body `{"usage": {...}}` is
/// optional. A token that expired less than the renew grace ago is accepted
/// while the license is active. A retry with the same old token within ten
/// minutes gets the token already issued.
#[utoipa::path(post, path = "/api/tokens/renew", tag = "tokens", security(("license_token" = [])),
    request_body(content = Option<RenewRequest>, description = "optional usage report"),
    responses((status = 200, body = TokenResponse),
              (status = 400, description = "malformed body", body = charter_token::ErrorBody),
              (status = 401, description = "no token, bad signature, unknown key, or expired beyond the grace", body = charter_token::ErrorBody),
              (status = 403, description = "license suspended, revoked or expired", body = charter_token::ErrorBody),
              (status = 413, description = "token or body too large", body = charter_token::ErrorBody),
              (status = 422, description = "instance not bound to the license", body = charter_token::ErrorBody),
              (status = 429, description = "too many renewals for this license or from this address; see `Retry-After`", body = charter_token::ErrorBody),
              (status = 503, description = "database unavailable", body = charter_token::ErrorBody)))]
async fn renew(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<TokenResponse>> {
    match renew_inner(&state, ip, &headers, &body).await {
        Ok(answer) => {
            state.metrics.token_issued("renew");
            Ok(answer)
        }
        Err((reason, e)) => {
            state.metrics.renewal_refused(reason);
            tracing::info!(reason, status = e.status.as_u16(), message = %e.message, "renewal refused");
            Err(e)
        }
    }
}

/// A usage report is counts by name: at most 100 of them, names of 1-64
/// printable characters, no negative counts.
fn check_usage(usage: &charter_token::Usage) -> ApiResult<()> {
    if usage.len() > 100 {
        return Err(ApiError::field("usage", "at most 100 entries"));
    }
    for (name, n) in usage {
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(ApiError::field(
                "usage",
                format!("{name:?}: names must be 1-64 printable characters"),
            ));
        }
        if *n < 0 {
            return Err(ApiError::field(
                &format!("usage.{name}"),
                "must not be negative",
            ));
        }
    }
    Ok(())
}

/// The renewal, with the reason of a refusal for the metrics.
async fn renew_inner(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<TokenResponse>, (&'static str, ApiError)> {
    let why = |reason: &'static str| move |e: ApiError| (reason, e);
    let store_err = |e: crate::db::StoreError| ("unavailable", ApiError::from(e));
    let limited = |what: &str, wait: u64| {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many renewals {what}; retry in {wait} s"),
        );
        e.retry_after = Some(wait);
        ("rate_limited", e)
    };
    // Per address first, before any signature work.
    let addr = ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    if let Err(wait) = state.renew_limiter.by_address.hit(&addr) {
        return Err(limited("from this address", wait));
    }
    let token = bearer(headers).map_err(why("no_token"))?;
    let t = now();
    let old = match state.keys.public().verify_signature(token) {
        Ok(c) => c,
        Err(e @ VerifyError::TooLarge) => {
            return Err((
                "bad_token",
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            ));
        }
        Err(e @ (VerifyError::UnknownKey(_) | VerifyError::MissingKid)) => {
            return Err((
                "unknown_key",
                ApiError::unauthorized(format!("license token refused: {e}")),
            ));
        }
        Err(e) => {
            return Err((
                "bad_token",
                ApiError::unauthorized(format!("license token refused: {e}")),
            ));
        }
    };
    // Per license only once the token is proven, so a forger cannot use up
    // another customer's renewals.
    if let Err(wait) = state.renew_limiter.by_license.hit(&old.lid) {
        return Err(limited("for this license", wait));
    }
    let grace = state.config.renew_grace_days.saturating_mul(DAY);
    if t >= old.exp.saturating_add(grace) {
        return Err((
            "beyond_grace",
            ApiError::unauthorized(format!(
                "license token expired at {}, beyond the renewal grace of {} days",
                crate::domain::rfc3339::format(old.exp),
                state.config.renew_grace_days
            )),
        ));
    }
    let usage = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RenewRequest>(body)
            .map_err(|e| ("bad_request", ApiError::bad_request(format!("body: {e}"))))?
            .usage
    };
    if let Some(u) = &usage {
        check_usage(u).map_err(why("bad_request"))?;
    }
    // License, instance and account in one store call.
    let ctx = state
        .store
        .issuance_context(&old.lid, &old.sub)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            (
                "unknown_license",
                ApiError::forbidden(format!("license {} does not exist", old.lid)),
            )
        })?;
    let license = ctx.license;
    check_renewable(&license, t).map_err(|r: RenewRefusal| {
        let reason = match r {
            RenewRefusal::Suspended(_) => "suspended",
            RenewRefusal::Revoked(_) => "revoked",
            RenewRefusal::Expired { .. } => "license_expired",
        };
        (reason, ApiError::forbidden(r.to_string()))
    })?;
    let instance = ctx.instance.ok_or_else(|| {
        (
            "not_bound",
            ApiError::unprocessable(format!(
                "instance {} is not bound to license {}",
                old.sub, license.lid
            )),
        )
    })?;
    let account = ctx.account.ok_or_else(|| {
        (
            "unknown_account",
            ApiError::not_found(format!("account {} not found", license.account_id)),
        )
    })?;
    let req = issuance::Request {
        license: &license,
        account: &account,
        instance,
        bind: false,
        reason: TokenReason::Renew,
        renewed_from: Some(old.jti.clone()),
        usage,
    };
    // The instance is the actor: it proved itself with its current token.
    let event = AuditEvent {
        id: 0,
        at: t,
        actor_kind: ActorKind::Instance,
        actor: old.sub.clone(),
        action: "token.renew".into(),
        target_type: "token".into(),
        target_id: String::new(),
        ip: ip.map(|ip| ip.to_string()),
        detail: None,
    };
    let (token, claims) = issuance::issue_audited(
        &*state.store,
        &state.keys,
        &state.config.public_url,
        req,
        t,
        Some(event),
    )
    .await
    .map_err(|e| ("error", ApiError::from(e)))?;
    record_token(&claims);
    Ok(Json(TokenResponse { token, claims }))
}
