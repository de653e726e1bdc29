//! Public endpoints: health and the JWKS.

use std::sync::{Arc, Mutex};

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
        [(
            axum::http::header::CACHE_CONTROL,
            format!("public, max-age={}", jwks_max_age(&state.config.keys)),
        )],
        axum::Json(state.keys.get().jwks()),
    )
        .into_response()
}

/// How long a JWKS may be cached: a quarter of the prepublication window
/// (so a cache never hides a next key until it signs), at most 5 minutes.
pub fn jwks_max_age(policy: &crate::config::KeyPolicy) -> i64 {
    (policy.prepublish_secs / 4).clamp(0, 300)
}

/// How long a revocation list is valid.
pub const REVOCATIONS_TTL: i64 = 3600;

/// How long a signed list is served again as is while the revoked set and
/// the signing key stay the same: the `Cache-Control: max-age` it is served
/// with.
pub const REVOCATIONS_RESIGN_SECS: i64 = 60;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Revocations {
    /// A JWS signed with the token signing key, header `typ`
    /// `charter-revocations+jwt` (so it never passes for a license token),
    /// whose payload is `{"iss", "iat", "exp", "revoked": [lid, ...]}`;
    /// valid for an hour.
    pub token: String,
    pub revoked: Vec<String>,
}

/// A signed list as served, and what it was signed for.
struct SignedList {
    kid: String,
    iss: String,
    revoked: Vec<String>,
    iat: i64,
    token: String,
}

/// The list last signed by this process. The endpoint is public and
/// signing costs ~10x a health check (RS256), so a poll only reads the
/// revoked ids (one cheap query, which the answer must reflect at once: a
/// revocation shows in the very next answer) and signs again only when they
/// changed, the signing key changed (rotation), or the list is older than
/// [`REVOCATIONS_RESIGN_SECS`] (so its `iat`, which clients take as a time
/// the issuer vouches for, stays within the `max-age` it is served with).
/// Held in [`AppState`]; keyed by everything the list depends on.
#[derive(Default)]
pub struct RevocationCache(Mutex<Option<Arc<SignedList>>>);

/// The cached list when it still says `revoked` with key `kid` for `iss`
/// and is younger than [`REVOCATIONS_RESIGN_SECS`] at `now`; else a list
/// newly signed by `sign(iat, revoked)`, which replaces it.
fn cached_or_sign(
    cache: &Mutex<Option<Arc<SignedList>>>,
    kid: &str,
    iss: &str,
    revoked: Vec<String>,
    now: i64,
    sign: impl FnOnce(i64, &[String]) -> Result<String, ApiError>,
) -> Result<Arc<SignedList>, ApiError> {
    let held = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(list) = held
        && list.kid == kid
        && list.iss == iss
        && list.revoked == revoked
        && (list.iat..list.iat + REVOCATIONS_RESIGN_SECS).contains(&now)
    {
        return Ok(list);
    }
    let list = Arc::new(SignedList {
        kid: kid.to_string(),
        iss: iss.to_string(),
        token: sign(now, &revoked)?,
        revoked,
        iat: now,
    });
    *cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(list.clone());
    Ok(list)
}

/// The revoked license ids, signed, so that instances that missed a push
/// still stop trusting a revoked license.
#[utoipa::path(get, path = "/api/revocations", tag = "meta",
    responses((status = 200, body = Revocations), (status = 503, body = charter_token::ErrorBody)))]
async fn revocations(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut revoked = state.store.revoked_licenses().await?;
    revoked.sort();
    revoked.dedup();
    let keys = state.keys.get();
    let key = keys.signing_key();
    let iss = state.config.public_url.as_str();
    let sign = |iat: i64, revoked: &[String]| {
        let payload = serde_json::json!({
            "iss": iss,
            "iat": iat,
            "exp": iat + REVOCATIONS_TTL,
            "revoked": revoked,
        });
        let bytes = serde_json::to_vec(&payload).map_err(ApiError::internal)?;
        key.sign_payload(charter_token::REVOCATIONS_TYP, &bytes)
            .map_err(ApiError::internal)
    };
    let list = cached_or_sign(
        &state.revocations.0,
        key.kid(),
        iss,
        revoked,
        charter_token::now(),
        sign,
    )?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(Revocations {
            token: list.token.clone(),
            revoked: list.revoked.clone(),
        }),
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Finding 8: a poll signs only when the list, the key or the issuer
    /// changed, or the signed list is a max-age old; a revocation shows at once.
    #[test]
    fn the_signed_list_is_reused_until_it_changes_or_ages() {
        let cache = Mutex::new(None);
        let signed = Cell::new(0);
        let sign = |iat: i64, revoked: &[String]| -> Result<String, ApiError> {
            signed.set(signed.get() + 1);
            Ok(format!("{iat}:{}", revoked.join(",")))
        };
        let t = 1_800_000_000;
        let first =
            cached_or_sign(&cache, "k1", "https://i/", ids(&["a"]), t, sign).expect("signs");
        assert_eq!(first.token, format!("{t}:a"));
        for later in [t, t + 1, t + REVOCATIONS_RESIGN_SECS - 1] {
            let again = cached_or_sign(&cache, "k1", "https://i/", ids(&["a"]), later, sign)
                .expect("cached");
            assert_eq!(again.token, first.token, "{later}");
        }
        assert_eq!(signed.get(), 1, "signed once for the same list");

        // A revocation: signed again at once, and the new list names it.
        let next = cached_or_sign(&cache, "k1", "https://i/", ids(&["a", "b"]), t + 2, sign)
            .expect("signs");
        assert_eq!(next.token, format!("{}:a,b", t + 2));
        assert_eq!(next.revoked, ids(&["a", "b"]));
        assert_eq!(signed.get(), 2);

        // A rotated key re-signs; so does another issuer URL.
        let rotated = cached_or_sign(&cache, "k2", "https://i/", ids(&["a", "b"]), t + 3, sign)
            .expect("signs");
        assert_eq!(rotated.kid, "k2");
        assert_eq!(signed.get(), 3);
        cached_or_sign(&cache, "k2", "https://j/", ids(&["a", "b"]), t + 3, sign).expect("signs");
        assert_eq!(signed.get(), 4);

        // Older than max-age, or a clock set back: signed again.
        cached_or_sign(
            &cache,
            "k2",
            "https://j/",
            ids(&["a", "b"]),
            t + 3 + REVOCATIONS_RESIGN_SECS,
            sign,
        )
        .expect("signs");
        assert_eq!(signed.get(), 5);
        cached_or_sign(&cache, "k2", "https://j/", ids(&["a", "b"]), t, sign).expect("signs");
        assert_eq!(signed.get(), 6);

        // A failed signature leaves the cache as it was.
        let failed = cached_or_sign(&cache, "k2", "https://j/", ids(&["c"]), t, |_, _| {
            Err(ApiError::internal("no key"))
        });
        assert!(failed.is_err());
        let kept = cached_or_sign(&cache, "k2", "https://j/", ids(&["a", "b"]), t + 1, sign)
            .expect("cached");
        assert_eq!(kept.token, format!("{t}:a,b"));
        assert_eq!(signed.get(), 6);
    }
}
