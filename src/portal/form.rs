//! Forms: every POST of the portal is a [`PostForm`], which refuses it
//! (403) unless it comes from this origin and carries the session's CSRF
//! token; and [`Fields`], the submitted values (repeated names kept, for
//! checkbox lists).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header};

use super::PortalError;
use super::session::Session;
use crate::api::AppState;

/// The largest form accepted.
const MAX_FORM: usize = 256 * 1024;

/// Whether a request that changes something came from this origin: a
/// browser says `Sec-Fetch-Site` (only `same-origin`, or `none` for a
/// typed URL, pass) and `Origin` (must be this host or the public URL).
/// A request with neither (not a browser) passes: the CSRF token still
/// has to match.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let authority = |url: &str| -> Option<String> {
        let rest = url.split_once("://")?.1;
        Some(rest.split('/').next().unwrap_or("").to_ascii_lowercase())
    };
    let Some(from) = authority(origin) else {
        // "null" (a sandboxed frame, a file) and anything unparsable.
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    host.as_deref() == Some(from.as_str()) || authority(public_url).as_deref() == Some(&from)
}

/// Compares two secrets in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The values of a submitted form, in order.
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Values to fill a form with.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Fields {
        Fields(pairs)
    }

    pub fn parse(body: &[u8]) -> Fields {
        Fields(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed (`""` when absent).
    pub fn get(&self, name: &str) -> &str {
        self.raw(name).trim()
    }

    /// The first value of `name` as sent (passwords).
    pub fn raw(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The value of `name` unless empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name)).filter(|v| !v.is_empty())
    }

    /// Every value of `name` (checkboxes), without empty ones.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
            .collect()
    }

    /// Whether a checkbox was checked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && !v.is_empty())
    }
}

/// A form POSTed by a signed-in session from this origin with its CSRF
/// token; anything else is refused with the 403 page before a handler
/// runs (or sent to the sign-in page when there is no session).
pub struct PostForm {
    pub session: Session,
    pub fields: Fields,
}

impl FromRequest<AppState> for PostForm {
    type Rejection = PortalError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PortalError> {
        let (mut parts, body) = req.into_parts();
        if !same_origin(&parts.headers, &state.config.public_url) {
            tracing::info!(path = %parts.uri.path(), "cross-site portal POST refused");
            return Err(PortalError::forbidden(
                "This form was sent from another site, so it was refused.",
            ));
        }
        let session = Session::from_request_parts(&mut parts, state).await?;
        let body = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| PortalError::bad_request("The form could not be read (too large?)."))?;
        let fields = Fields::parse(&body);
        if !same_secret(fields.get("csrf"), &session.csrf) {
            tracing::info!(path = %parts.uri.path(), by = session.name(), "portal POST without its CSRF token refused");
            return Err(PortalError::forbidden(
                "The form's security token is missing or out of date. Reload the page and try again.",
            ));
        }
        Ok(PostForm { session, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn only_this_origin_may_post() {
        let public = "https://charter.example.com/";
        assert!(same_origin(&headers(&[]), public), "not a browser");
        assert!(same_origin(
            &headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ]),
            public
        ));
        assert!(same_origin(
            &headers(&[
                ("host", "10.0.0.1"),
                ("origin", "https://charter.example.com")
            ]),
            public
        ));
        assert!(!same_origin(
            &headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example")
            ]),
            public
        ));
        assert!(!same_origin(&headers(&[("origin", "null")]), public));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "same-site")]),
            public
        ));
    }

    #[test]
    fn fields_keep_repeated_names() {
        let f = Fields::parse(b"products=a&products=b&name=+x+&empty=&on=on");
        assert_eq!(f.all("products"), ["a", "b"]);
        assert_eq!(f.get("name"), "x");
        assert_eq!(f.opt("empty"), None);
        assert!(f.checked("on") && !f.checked("off"));
    }
}
