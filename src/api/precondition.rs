//! Optimistic concurrency for the portal: a `GET` of a product, account,
//! license or instance carries `ETag: "<version>"`, and a `PATCH` with
//! `If-Match` applies only to that version (412 when the row changed
//! since). Without `If-Match` a `PATCH` applies to the current row.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::extract::Json;

/// The version a `PATCH` was written against (`If-Match`), if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct IfMatch(pub Option<i64>);

/// The version a request names with `If-Match`; `*` names any (`None`).
/// A value that is no ETag of ours can never match.
pub fn parse_if_match(v: &str) -> Option<i64> {
    let v = v.trim();
    if v == "*" {
        return None;
    }
    let tag = v.strip_prefix("W/").unwrap_or(v);
    let version = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|n| *n > 0);
    // Unparseable: a version no row ever has, so the answer is 412.
    Some(version.unwrap_or(-1))
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let v = v
            .to_str()
            .map_err(|_| ApiError::bad_request("If-Match: not a valid header value"))?;
        if v.contains(',') {
            return Err(ApiError::bad_request(
                "If-Match: give the one ETag of the version the change is for",
            ));
        }
        Ok(IfMatch(parse_if_match(v)))
    }
}

/// The `ETag` of a row at `version`.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// A JSON answer with the row's `ETag`.
pub fn tagged<T: serde::Serialize>(version: i64, body: T) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag(version));
    (StatusCode::OK, headers, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_names_a_version_or_any() {
        assert_eq!(parse_if_match("\"7\""), Some(7));
        assert_eq!(parse_if_match("W/\"7\""), Some(7));
        assert_eq!(parse_if_match("*"), None);
        assert_eq!(parse_if_match("7"), Some(-1), "unquoted never matches");
        assert_eq!(parse_if_match("\"x\""), Some(-1));
    }
}
