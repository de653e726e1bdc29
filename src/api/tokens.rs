//! Tokens: issue through the portal, history, and the instance-facing renew
//! endpoint `POST /api/tokens/renew`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use charter_token::{RenewRequest, TokenResponse};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Action, ClientIp, Principal};
use super::extract::{Json, Path, Query};
use super::{ApiResult, AppState, PageParams, Paged};
use crate::domain::TokenRecord;
use crate::licensing::{licenses, tokens};

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
    let (token, claims) = tokens::issue_for(&state, &p.actor(), &lid, &body.instance).await?;
    record_token(&claims);
    Ok((StatusCode::CREATED, Json(TokenResponse { token, claims })))
}

/// The tokens issued for a license, newest first (follow `next` with
/// `after`; `page` also works, slower on deep pages). Older than
/// `--token-history-days`, only each instance's current token is kept. Each token's text (a
/// credential: it renews) only with `licensing:tokens`, and each such read
/// is audited (`token.read`); others get the history without it.
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
    licenses::get(&state, &lid).await?;
    let mut listing = state.store.list_tokens(&lid, &page).await?;
    let items = &mut listing.items;
    // The text only when the read is audited: a caller without
    // `licensing:tokens`, or a read that cannot be recorded (a full disk),
    // gets the history without it.
    let mut audited = false;
    if p.may(Action::LicensingTokens) && !items.is_empty() {
        let mut event = p.event("token.read", "license", lid.as_str());
        event.detail = Some(serde_json::json!({
            "jtis": items.iter().map(|t| t.jti.as_str()).collect::<Vec<_>>(),
        }));
        match state.store.insert_audit(&event).await {
            Ok(()) => audited = true,
            Err(e) => {
                tracing::warn!(error = %e, lid = %lid, "cannot audit a token read: tokens withheld")
            }
        }
    }
    if !audited {
        for t in items.iter_mut() {
            t.token.clear();
        }
    }
    Ok(Json(Paged::new(listing, &page)))
}

/// Names the token issued on the request's span: its access line then says
/// which (one log line per issuance; the audit trail has the rest).
fn record_token(claims: &charter_token::Claims) {
    let span = tracing::Span::current();
    span.record("lid", claims.lid.as_str());
    span.record("instance", claims.sub.as_str());
    span.record("jti", claims.jti.as_str());
}

/// The bearer token of `Authorization`, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Some(token.trim())
        }
        _ => None,
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
    match tokens::renew(&state, ip, bearer(&headers), &body).await {
        Ok((token, claims)) => {
            record_token(&claims);
            Ok(Json(TokenResponse { token, claims }))
        }
        Err(e) => {
            let reason = e.reason();
            state.metrics.renewal_refused(reason);
            let e = super::ApiError::from(e);
            tracing::info!(reason, status = e.status.as_u16(), message = %e.message, "renewal refused");
            Err(e)
        }
    }
}
