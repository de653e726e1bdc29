//! The issuer's HTTP API. One file per resource, each with its `router()`;
//! the OpenAPI document is collected from the same handlers, so it cannot
//! drift from what is served.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::licensing::Licensing;

pub mod accounts;
pub mod apikeys;
pub mod audit;
pub mod auth;
pub mod error;
pub mod extract;
pub mod instances;
pub mod keys;
pub mod licenses;
pub mod meta;
pub mod precondition;
pub mod products;
pub mod serviceaccounts;
pub mod tokens;
pub mod usage;
pub mod webhooks;

pub use error::{ApiError, ApiResult};

/// The header carrying each request's id (kept when the client sends one).
pub const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// Everything a handler needs; cheap to clone. The use cases' context
/// ([`Licensing`]) is reached through `Deref` (`state.store`, `state.keys`,
/// ...); what only HTTP needs sits beside it.
#[derive(Clone)]
pub struct AppState {
    pub core: Licensing,
    pub admin: Arc<auth::AdminAuth>,
    /// Set on SIGTERM while draining: health answers 503.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Failed authentications per client address.
    pub auth_limiter: Arc<auth::AuthLimiter>,
    /// The signed revocation list, re-signed only when it changes.
    pub revocations: Arc<meta::RevocationCache>,
}

impl std::ops::Deref for AppState {
    type Target = Licensing;
    fn deref(&self) -> &Licensing {
        &self.core
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Charter issuer API", description = "License issuance and renewal."),
    modifiers(&Security),
    components(schemas(charter_token::ErrorBody))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "service_account",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "license_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The routes and their OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(meta::router())
        .merge(products::router())
        .merge(accounts::router())
        .merge(licenses::router())
        .merge(instances::router())
        .merge(tokens::router())
        .merge(serviceaccounts::router())
        .merge(apikeys::router())
        .merge(audit::router())
        .merge(keys::router())
        .merge(usage::router())
        .merge(webhooks::router())
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = routes().into_openapi();
    add_common_errors(&mut api);
    api
}

/// Documents the errors any operation can answer besides its own: 400 (a
/// malformed path or query), 503 (database unavailable); with credentials
/// 401, 403 and 429 (too many failed attempts); with a body 413 and 415.
fn add_common_errors(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build(),
        )
    };
    for item in api.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            let mut common = vec![
                ("400", "malformed path, query or body"),
                ("503", "database unavailable, retry later"),
            ];
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                common.extend([
                    ("401", "missing or invalid credentials"),
                    ("403", "credentials lack the permission needed"),
                    ("429", "too many attempts; see Retry-After"),
                ]);
            }
            if op.request_body.is_some() {
                common.extend([
                    ("408", "a chunked body did not arrive within 30 s"),
                    ("413", "body larger than max_body_bytes"),
                    ("415", "body is not application/json"),
                ]);
            }
            for (status, description) in common {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description));
            }
        }
    }
}

/// The whole HTTP application: the API.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The API with `pages` (routes outside `/api/`, e.g. the portal) served
/// beside it, behind the same layers.
pub fn router_with(state: AppState, pages: Router<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    let trusted = Arc::new(state.config.trusted_proxies.clone());
    let (router, mut api) = routes().split_for_parts();
    add_common_errors(&mut api);
    let api = Arc::new(api);
    let router = router
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let api = api.clone();
                async move { axum::Json(api.as_ref().clone()) }
            }),
        )
        .route("/metrics", axum::routing::get(meta::metrics))
        // Routes outside the API (the web portal: HTML, not in the
        // OpenAPI document), under the same layers.
        .merge(pages)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            max_body,
            error::screen_request,
        ))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // Filled in later: `by` once the caller is known,
                    // `lid`, `instance` and `jti` by the handlers that issue
                    // a token, so that one access line says it all.
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %id,
                        by = tracing::field::Empty,
                        lid = tracing::field::Empty,
                        instance = tracing::field::Empty,
                        jti = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        );
    // The client address behind trusted proxies; no layer when there are none.
    let router = if trusted.is_empty() {
        router
    } else {
        router.layer(axum::middleware::from_fn_with_state(
            trusted,
            auth::forwarded_client,
        ))
    };
    router
        .layer(axum::middleware::map_response(security_headers))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        // Outermost: a bad client id is dropped before one is set.
        .layer(axum::middleware::map_request(screen_request_id))
        .with_state(state)
}

/// Longest request id a client may send.
pub const MAX_REQUEST_ID: usize = 64;

/// Whether a client's `x-request-id` may be kept: 1 to [`MAX_REQUEST_ID`]
/// characters of `[A-Za-z0-9._-]`. It goes into every log line of the
/// request (text logs do not escape it) and back to the client.
pub fn valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Drops a client's `x-request-id` that is not [`valid_request_id`] (or is
/// sent more than once), so that [`SetRequestIdLayer`], which only fills
/// in a missing one, gives the request a fresh UUID.
async fn screen_request_id(mut req: axum::extract::Request) -> axum::extract::Request {
    let headers = req.headers_mut();
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => valid_request_id(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove(&REQUEST_ID);
    }
    req
}

/// Headers of every answer: `X-Content-Type-Options: nosniff`, and
/// `Cache-Control: no-store` on the API (its answers carry tokens, keys and
/// customer data) except the public, signed `/api/revocations`, which keeps
/// its own caching when it succeeds. The JWKS (`/.well-known/jwks.json`)
/// and `/metrics` are outside `/api/` and keep theirs.
async fn security_headers(
    uri: axum::http::Uri,
    mut res: axum::response::Response,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = res.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        let public = path == "/api/revocations"
            && res.status().is_success()
            && res.headers().contains_key(header::CACHE_CONTROL);
        if !public {
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    res
}

/// `?per_page=50&after=<cursor>`: a page of a list, after the cursor the
/// page before gave as `next` (at the same cost however deep), or
/// `?page=N` (1-based; slower: the database walks every item before the
/// page). At most 1000 a page.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1-based page number; slower than `after` on deep pages (it walks
    /// every item before the page). Not with `after`.
    #[serde(default)]
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<i64>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<i64>,
    /// The `next` cursor of the page before: the items after it.
    #[serde(default)]
    #[param(max_length = 1024)]
    pub after: Option<String>,
}

impl PageParams {
    pub fn page(self) -> ApiResult<crate::domain::Page> {
        self.page_of(50)
    }

    /// [`PageParams::page`] with another default page size.
    pub fn page_of(self, default_per_page: i64) -> ApiResult<crate::domain::Page> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(default_per_page);
        if !(1..=1_000_000).contains(&page) {
            return Err(ApiError::field("page", "must be between 1 and 1000000"));
        }
        if !(1..=1000).contains(&per_page) {
            return Err(ApiError::field("per_page", "must be between 1 and 1000"));
        }
        let after = match self.after {
            None => None,
            Some(_) if self.page.is_some() => {
                return Err(ApiError::field("after", "cannot be used with page"));
            }
            Some(text) => Some(crate::domain::Cursor::decode(&text).ok_or_else(|| {
                ApiError::field("after", "is not a cursor this list gave out (its `next`)")
            })?),
        };
        Ok(crate::domain::Page {
            page,
            per_page,
            after,
        })
    }
}

/// A page of results.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// How many items match, counted up to 1000 and no further (a page
    /// costs the same however many match): exact when `total_exact`, else
    /// a lower bound (1000).
    pub total: i64,
    /// Whether `total` is the exact count.
    pub total_exact: bool,
    pub page: i64,
    pub per_page: i64,
    /// The cursor of the next page (pass it as `after`); null on the last.
    pub next: Option<String>,
}

impl<T: crate::domain::Keyed> Paged<T> {
    pub fn new(listing: crate::domain::Listing<T>, page: &crate::domain::Page) -> Self {
        let next = listing.next().map(|c| c.encode());
        let (total, total_exact) = listing.total();
        Paged {
            items: listing.items,
            total,
            total_exact,
            page: page.page,
            per_page: page.per_page,
            next,
        }
    }
}

/// Checks a free-text field: not blank, at most `max` characters, no control characters.
pub fn check_text(field: &str, s: &str, max: usize) -> ApiResult<()> {
    if s.trim().is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}
