//! The licensing endpoints in three dialects over one [`LicenseManager`]:
//! [`grafana`], [`consul`] and [`redis`]. Each module ends in a
//! `router(state)`; [`routers`] merges the chosen ones. The crate never binds
//! a port: the host nests or merges these routers where it likes.

pub mod consul;
pub mod grafana;
pub mod redis;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::hooks::{Authorizer, Denied, Permission};
use crate::manager::LicenseManager;

/// Request bodies larger than this are refused with 413 (a token is at most
/// 16 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares: the manager and the host's authorisation hook.
#[derive(Clone)]
pub struct ApiState {
    pub manager: LicenseManager,
    pub auth: Arc<dyn Authorizer>,
}

impl ApiState {
    pub fn new(manager: LicenseManager, auth: Arc<dyn Authorizer>) -> Self {
        ApiState { manager, auth }
    }
}

/// The dialects, as `--dialects` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Grafana,
    Consul,
    Redis,
}

impl Dialect {
    pub const ALL: [Dialect; 3] = [Dialect::Grafana, Dialect::Consul, Dialect::Redis];

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Grafana => "grafana",
            Dialect::Consul => "consul",
            Dialect::Redis => "redis",
        }
    }

    /// How this dialect answers a request that is not allowed.
    fn denied(self, denied: Denied, permission: Permission) -> ApiError {
        match (self, denied) {
            (_, Denied::TooManyFailures { retry_after }) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed authentication attempts; try again in {retry_after} seconds"
                ),
            )
            .with_retry_after(retry_after),
            // Consul answers ACL failures with 403 whatever the cause.
            (Dialect::Consul, _) => ApiError::new(StatusCode::FORBIDDEN, "Permission denied"),
            (_, Denied::Unauthenticated) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized").with_basic_challenge()
            }
            (_, Denied::Forbidden) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("Access denied: {permission} is required"),
            ),
        }
    }
}

impl FromStr for Dialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "grafana" => Ok(Dialect::Grafana),
            "consul" => Ok(Dialect::Consul),
            "redis" => Ok(Dialect::Redis),
            other => Err(format!(
                "unknown dialect {other:?} (expected grafana, consul or redis)"
            )),
        }
    }
}

/// The chosen dialects' routes on one router (their paths do not overlap).
pub fn routers(state: ApiState, dialects: &[Dialect]) -> Router {
    let mut router = Router::new();
    let mut seen = Vec::new();
    for dialect in dialects {
        // Merging the same routes twice would panic.
        if seen.contains(dialect) {
            continue;
        }
        seen.push(*dialect);
        router = router.merge(match dialect {
            Dialect::Grafana => grafana::router(state.clone()),
            Dialect::Consul => consul::router(state.clone()),
            Dialect::Redis => redis::router(state.clone()),
        });
    }
    router
}

/// An HTTP error: a status and a JSON body with at least `message`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
    challenge: bool,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "message": message.into() }),
            challenge: false,
            retry_after: None,
        }
    }

    /// Adds `Retry-After: <secs>`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// A 500: the cause goes to the log, the body says "internal error".
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "licensing endpoint failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// Adds fields beside `message`.
    pub fn with_field(mut self, key: &str, value: Value) -> Self {
        if let Value::Object(map) = &mut self.body {
            map.insert(key.to_string(), value);
        }
        self
    }

    fn with_basic_challenge(mut self) -> Self {
        self.challenge = true;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if self.challenge {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"licensing\""),
            );
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The client's address, when the server provides axum's
/// `ConnectInfo<SocketAddr>` (`into_make_service_with_connect_info`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    pub(crate) fn of(extensions: &axum::http::Extensions) -> Self {
        ClientAddr(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        )
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::of(&parts.extensions))
    }
}

/// Asks the host whether this request, from `client`, may do `permission`.
pub(crate) fn require(
    state: &ApiState,
    dialect: Dialect,
    client: ClientAddr,
    headers: &HeaderMap,
    permission: Permission,
) -> Result<(), ApiError> {
    state
        .auth
        .authorize_from(client.0, headers, permission)
        .map_err(|d| dialect.denied(d, permission))
}

/// Middleware on the routes that read a body: one over [`MAX_BODY_BYTES`]
/// gets 413 (see [`screen_body`]).
pub(crate) async fn refuse_oversized(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match screen_body(req, MAX_BODY_BYTES).await {
        Ok(req) => next.run(req).await,
        Err(refused) => {
            ApiError::new(refused.status(), refused.message(MAX_BODY_BYTES)).into_response()
        }
    }
}

/// Why [`screen_body`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefused {
    /// Over the limit; the declared length, when there was one.
    TooLarge(Option<u64>),
    /// A chunked body that did not arrive within 30 s.
    TooSlow,
}

impl BodyRefused {
    pub fn status(self) -> StatusCode {
        match self {
            BodyRefused::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyRefused::TooSlow => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn message(self, limit: usize) -> String {
        match self {
            BodyRefused::TooLarge(Some(len)) => {
                format!("request body of {len} bytes is over the limit of {limit} bytes")
            }
            BodyRefused::TooLarge(None) => {
                format!("request body is over the limit of {limit} bytes")
            }
            BodyRefused::TooSlow => "request body did not arrive in time".into(),
        }
    }
}

/// Screens a request's body against `limit` bytes before a handler reads
/// it. A body over the limit is read and dropped, keeping none of it (up to
/// 4 MiB, for at most 2 s), before the refusal: answering with it unread
/// would close the connection under a client still sending, which would
/// then see a reset instead of the 413, and a keep-alive client would lose
/// its next request. A declared `Content-Length` is judged at once; a
/// chunked body is read into memory up to the limit and handed on whole.
pub async fn screen_body(
    req: axum::extract::Request,
    limit: usize,
) -> Result<axum::extract::Request, BodyRefused> {
    let limit = limit as u64;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        if len > limit {
            if len <= LINGER_MAX {
                let mut body = req.into_body();
                read_body(&mut body, LINGER_MAX, None, LINGER_TIME).await;
            }
            return Err(BodyRefused::TooLarge(Some(len)));
        }
        return Ok(req);
    }
    if !req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Ok(req);
    }
    let (parts, mut body) = req.into_parts();
    let mut kept = Vec::new();
    let (seen, ended) = read_body(
        &mut body,
        limit,
        Some(&mut kept),
        std::time::Duration::from_secs(30),
    )
    .await;
    if ended {
        return Ok(axum::extract::Request::from_parts(parts, kept.into()));
    }
    if seen <= limit {
        return Err(BodyRefused::TooSlow);
    }
    read_body(&mut body, LINGER_MAX, None, LINGER_TIME).await;
    Err(BodyRefused::TooLarge(None))
}

/// The most of an over-long body read and dropped before refusing it.
const LINGER_MAX: u64 = 4 * 1024 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads `body` frame by frame until it ends, more than `max` bytes have
/// come, or `time` passes; keeps the data in `keep` when given. The bytes
/// seen, and whether the body ended within `max`.
async fn read_body(
    body: &mut axum::body::Body,
    max: u64,
    mut keep: Option<&mut Vec<u8>>,
    time: std::time::Duration,
) -> (u64, bool) {
    use axum::body::HttpBody;
    let mut seen = 0u64;
    let read = async {
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await
        {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > max {
                    return false;
                }
                if let Some(k) = keep.as_deref_mut() {
                    k.extend_from_slice(data);
                }
            }
        }
        true
    };
    let ended = tokio::time::timeout(time, read).await.unwrap_or(false);
    (seen, ended)
}

/// The body, or a clear 4xx (413 when over [`MAX_BODY_BYTES`]).
pub(crate) fn body(raw: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    raw.map_err(|r| ApiError::new(r.status(), r.body_text()))
}

/// Parses a JSON body whatever its `Content-Type` (curl users often omit it).
pub(crate) fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}
