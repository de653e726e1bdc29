//! The one error type of the HTTP layer: `{"message": "..."}` with the right
//! status. A 5xx says "internal error"; its cause goes to the log.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use charter_token::ErrorBody;

use crate::db::StoreError;
use crate::licensing;
use crate::licensing::tokens::RenewError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `WWW-Authenticate` for 401s.
    pub challenge: Option<&'static str>,
    /// `Retry-After` (seconds) for 429s.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            challenge: None,
            retry_after: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn unprocessable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, m)
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
    /// A field of the request is wrong: the message names it.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("{field}: {problem}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            axum::Json(ErrorBody {
                message: self.message,
            }),
        )
            .into_response();
        if let Some(c) = self.challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// Makes every error answer `{"message": ...}` (except the portal's HTML
/// pages), also those that axum or a layer produce as plain text (a body over the limit, a method or a media
/// type not accepted), so a client never has to parse two formats.
pub async fn json_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    // JSON already, or one of the portal's HTML pages (`crate::portal`).
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if text.is_empty() || status.is_server_error() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = axum::Json(ErrorBody { message }).into_response();
    let (json_parts, json_body) = body.into_parts();
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}

/// Screens a request before it is routed:
/// - a path or query carrying an encoded control character (`%00` ...
///   `%1F`, `%7F`) is refused with 400: no identifier has one, and
///   PostgreSQL cannot even compare a string holding NUL;
/// - a body over `max_body` is refused with 413 after it is read and
///   dropped, so the client reads the answer and its connection stays
///   usable ([`charter_client::api::screen_body`]).
pub async fn screen_request(
    axum::extract::State(max_body): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = req.uri();
    let raw = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let bytes = raw.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let control = bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!((hex(w[1]), hex(w[2])), (Some(h), Some(l)) if h < 2 || (h == 7 && l == 15))
    });
    if control {
        return ApiError::bad_request("the path and query must not contain control characters")
            .into_response();
    }
    match charter_client::api::screen_body(req, max_body).await {
        Ok(req) => next.run(req).await,
        Err(refused) => ApiError::new(refused.status(), refused.message(max_body)).into_response(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::NotFound(m) => ApiError::not_found(m),
            e @ (StoreError::InstanceLimit { .. } | StoreError::NotActive { .. }) => {
                ApiError::conflict(e.to_string())
            }
            e @ StoreError::Stale(_) => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, e.to_string())
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database unavailable, retry later",
                )
            }
            StoreError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

/// The one place where a use case's answer becomes a status.
impl From<licensing::Error> for ApiError {
    fn from(e: licensing::Error) -> Self {
        use licensing::Error as E;
        match e {
            e @ E::Invalid { .. } => ApiError::bad_request(e.to_string()),
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict(m) => ApiError::conflict(m),
            E::Unprocessable(m) => ApiError::unprocessable(m),
            e @ E::Stale(_) => ApiError::new(StatusCode::PRECONDITION_FAILED, e.to_string()),
            E::Store(e) => e.into(),
            e @ E::Sign(_) => ApiError::internal(e),
        }
    }
}

impl From<RenewError> for ApiError {
    fn from(e: RenewError) -> Self {
        match e {
            RenewError::RateLimited { retry_after, .. } => {
                let mut a = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string());
                a.retry_after = Some(retry_after);
                a
            }
            RenewError::NoToken => {
                let mut a = ApiError::unauthorized(e.to_string());
                a.challenge = Some("Bearer");
                a
            }
            RenewError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            RenewError::Unauthorized { message, .. } => ApiError::unauthorized(message),
            RenewError::Forbidden { message, .. } => ApiError::forbidden(message),
            RenewError::NotBound(m) => ApiError::unprocessable(m),
            e @ RenewError::BadRequest { .. } => ApiError::bad_request(e.to_string()),
            RenewError::Failed(e) => e.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match r.status() {
            // A body that parses but has the wrong shape is still bad input.
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        ApiError::new(status, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}
