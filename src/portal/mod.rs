//! The vendor portal: Charter's web console, served by `charter serve`
//! under `/portal/` (`/` redirects there). Server-rendered HTML (maud
//! templates, checked at compile time), plain forms with
//! POST-redirect-GET, no script and nothing from another origin: the one
//! stylesheet is compiled into the binary, charts are SVG drawn here.
//!
//! Every page calls the same use cases as the JSON API
//! ([`crate::licensing`]) and states the permission it needs with the
//! API's [`Action`]s, so nothing the API refuses is possible here. Who is
//! signed in is a server-side session kept in the store ([`session`]);
//! every POST carries the session's CSRF token and must come from this
//! origin ([`form`]). None of these routes is in the OpenAPI document.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};

use crate::api::AppState;
use crate::api::auth::Action;

mod access;
mod catalog;
mod dashboard;
pub mod error;
pub mod form;
mod layout;
mod license_form;
mod license_page;
mod licenses;
pub mod session;

pub use error::PortalError;

/// Where the portal lives.
pub const BASE: &str = "/portal";

/// The portal's stylesheet, compiled in.
const CSS: &str = include_str!("portal.css");

/// The portal's routes (and `/`), with their security headers; served
/// beside the API by [`crate::serve`] ([`crate::api::router_with`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/portal/") }))
        .route("/portal", get(|| async { Redirect::to("/portal/") }))
        .route("/portal/", get(dashboard::show))
        .route(
            "/portal/login",
            get(session::login_page).post(session::login),
        )
        .route("/portal/logout", post(session::logout))
        .route("/portal/static/portal.css", get(css))
        .merge(licenses::router())
        .merge(catalog::router())
        .merge(access::router())
        .route("/portal/{*rest}", any(not_found))
        .layer(axum::middleware::map_response(headers))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn not_found() -> PortalError {
    PortalError::not_found("There is no such page.")
}

/// The content security policy of every page: only this origin's
/// stylesheet, no script, forms only to this origin, never in a frame.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers of every portal answer; pages are never cached (they
/// show customers' data and, once, secrets).
async fn headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A page: 200 with its HTML.
pub(crate) fn html(markup: maud::Markup) -> Response {
    html_status(StatusCode::OK, markup)
}

pub(crate) fn html_status(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// 303 See Other to a portal path (after a POST).
pub(crate) fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// Refuses with the 403 page unless the session may do `action`.
pub(crate) fn require(s: &session::Session, action: Action) -> Result<(), PortalError> {
    s.principal.require(action).map_err(PortalError::from)
}
