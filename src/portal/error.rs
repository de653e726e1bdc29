//! The portal's error pages: one type, rendered as a small HTML page with
//! the right status (403, 404, 409, 503 ...). A 5xx page says what a
//! person can do; its cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::api::ApiError;
use crate::db::StoreError;
use crate::licensing;

#[derive(Debug)]
pub enum PortalError {
    /// Not signed in (or the session ended): to the sign-in page, and back
    /// to `next` after.
    SignIn { next: String },
    /// An error page with this status and message.
    Page { status: StatusCode, message: String },
}

impl PortalError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PortalError::Page {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database cannot be reached right now. Nothing was changed; try again in a moment.",
        )
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error (portal)");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on the server. The log has the details.",
        )
    }
}

fn title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request",
        403 => "Not allowed",
        404 => "Page not found",
        409 => "Conflict",
        413 => "Too large",
        422 => "Cannot process",
        429 => "Too many attempts",
        503 => "Database unavailable",
        _ => "Error",
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        match self {
            PortalError::SignIn { next } => {
                let next = super::session::safe_next(&next);
                super::see_other(&format!(
                    "/portal/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                ))
            }
            PortalError::Page { status, message } => {
                let t = title(status);
                let body = html! {
                    h1 { (t) }
                    p.error-text { (message) }
                    p { a href="/portal/" { "Back to the dashboard" } }
                };
                super::html_status(status, super::layout::bare(t, body))
            }
        }
    }
}

impl From<StoreError> for PortalError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable (portal)");
                PortalError::unavailable()
            }
            StoreError::Internal(cause) => PortalError::internal(cause),
            StoreError::NotFound(m) => PortalError::not_found(m),
            e => PortalError::new(StatusCode::CONFLICT, e.to_string()),
        }
    }
}

impl From<licensing::Error> for PortalError {
    fn from(e: licensing::Error) -> Self {
        use licensing::Error as E;
        match e {
            e @ E::Invalid { .. } => PortalError::bad_request(e.to_string()),
            E::NotFound(m) => PortalError::not_found(m),
            E::Conflict(m) => PortalError::new(StatusCode::CONFLICT, m),
            E::Unprocessable(m) => PortalError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            e @ E::Stale(_) => PortalError::new(StatusCode::CONFLICT, e.to_string()),
            E::Store(e) => e.into(),
            e @ E::Sign(_) => PortalError::internal(e),
        }
    }
}

impl From<ApiError> for PortalError {
    fn from(e: ApiError) -> Self {
        if e.status == StatusCode::SERVICE_UNAVAILABLE {
            return PortalError::unavailable();
        }
        PortalError::new(e.status, e.message)
    }
}

/// A use case's refusal as a form shows it: `(field, message)` next to the
/// field it names (`""`: above the form). `None`: not the form's fault
/// (the database is down, ...): an error page instead.
pub fn form_error(e: &licensing::Error) -> Option<(String, String)> {
    use licensing::Error as E;
    match e {
        E::Invalid { field, message } => Some((field.clone(), message.clone())),
        E::Unprocessable(m) => Some(match m.split_once(": ") {
            Some((field, rest)) if !field.contains(' ') => (field.to_string(), rest.to_string()),
            _ => (String::new(), m.clone()),
        }),
        E::Conflict(m) => Some((String::new(), m.clone())),
        E::Stale(_) => Some((String::new(), e.to_string())),
        _ => None,
    }
}
