//! Portal sessions: signing in (as the server admin, or with a service
//! account's token, under the API's failed-authentication limit), the
//! [`Session`] extractor, and signing out.
//!
//! The cookie holds 256 random bits; the store keeps only their SHA-256,
//! with who signed in and the session's CSRF token. A session ends after
//! [`IDLE`] without a request or [`ABSOLUTE`] after sign-in, whichever is
//! first, and at logout. Its last use is written at most once a
//! [`TOUCH_EVERY`]. A service account's session is checked against the
//! account on every request: disabling the account, deleting the token
//! or changing the role takes effect at once.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use charter_token::now;
use maud::{Markup, html};
use serde::Deserialize;

use super::form::{Fields, same_origin};
use super::{PortalError, html_status, layout};
use crate::api::AppState;
use crate::api::auth::{Action, ClientIp, Identity, Principal, check_credentials, sa_token_hash};
use crate::db::PortalSession;
use crate::domain::{ActorKind, Role};

/// The session cookie.
pub const COOKIE: &str = "charter_session";
/// The sign-in form's own CSRF cookie (double submit, before a session exists).
pub const LOGIN_COOKIE: &str = "charter_login";
/// A session ends after this long without a request (seconds).
pub const IDLE: i64 = 30 * 60;
/// ... and this long after sign-in, however busy.
pub const ABSOLUTE: i64 = 12 * 3600;
/// Its last use is written at most this often.
pub const TOUCH_EVERY: i64 = 60;

/// The signed-in caller of a portal page.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who, as the API's permission checks know them.
    pub principal: Principal,
    /// The token every form of this session carries.
    pub csrf: String,
    pub id_hash: String,
}

impl Session {
    pub fn may(&self, action: Action) -> bool {
        self.principal.may(action)
    }

    pub fn name(&self) -> &str {
        self.principal.name()
    }

    /// The role, for the header: the admin is "server admin".
    pub fn role(&self) -> &'static str {
        match &self.principal.identity {
            Identity::Admin { .. } => "server admin",
            Identity::ServiceAccount { role, .. } => role.as_str(),
        }
    }

    pub fn actor(&self) -> crate::licensing::Actor {
        self.principal.actor()
    }
}

/// A value of a cookie in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// 256 random bits, URL-safe.
pub fn random_token() -> Result<String, PortalError> {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| PortalError::internal("no randomness"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Whether the session has ended at `now`.
pub fn expired(s: &PortalSession, now: i64) -> bool {
    now >= s.last_seen_at.saturating_add(IDLE) || now >= s.created_at.saturating_add(ABSOLUTE)
}

/// Where to go after signing in: a portal path, else the dashboard (never
/// another site).
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/portal/")
        && !next.starts_with("/portal//")
        && !next.contains('\\')
        && !next.starts_with("/portal/login")
        && next.chars().all(|c| !c.is_control());
    if ok { next } else { "/portal/" }
}

fn set_cookie(state: &AppState, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
    // `Secure` when the portal is served over https (its public URL).
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = PortalError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PortalError> {
        let next = || PortalError::SignIn {
            next: parts
                .uri
                .path_and_query()
                .map_or("/portal/", |p| p.as_str())
                .to_string(),
        };
        let Some(id) = cookie(&parts.headers, COOKIE) else {
            return Err(next());
        };
        let id_hash = sa_token_hash(id);
        let Some(s) = state.store.get_session(&id_hash).await? else {
            return Err(next());
        };
        let t = now();
        if expired(&s, t) {
            if let Err(e) = state.store.delete_session(&id_hash).await {
                tracing::warn!(error = %e, "cannot delete an expired portal session");
            }
            return Err(next());
        }
        let identity = match identity_of(state, &s, t).await? {
            Some(identity) => identity,
            None => {
                let _ = state.store.delete_session(&id_hash).await;
                return Err(next());
            }
        };
        if t - s.last_seen_at >= TOUCH_EVERY
            && let Err(e) = state.store.touch_session(&id_hash, t).await
        {
            tracing::warn!(error = %e, "cannot record a portal session's last use");
        }
        let principal = Principal {
            identity,
            ip: crate::api::auth::client_ip(parts),
        };
        tracing::Span::current().record("by", principal.name());
        Ok(Session {
            principal,
            csrf: s.csrf,
            id_hash,
        })
    }
}

/// Who the session is now: the admin (still the configured user), or the
/// service account as it is now (`None`: disabled, deleted, or its token
/// gone or expired).
async fn identity_of(
    state: &AppState,
    s: &PortalSession,
    t: i64,
) -> Result<Option<Identity>, PortalError> {
    match s.actor_kind {
        ActorKind::Admin if s.actor == state.admin.user() => Ok(Some(Identity::Admin {
            user: s.actor.clone(),
        })),
        ActorKind::ServiceAccount => {
            let (Some(id), Some(token_id)) = (s.service_account_id, s.token_id) else {
                return Ok(None);
            };
            let Some(sa) = state.store.get_service_account(id).await? else {
                return Ok(None);
            };
            if sa.is_disabled {
                return Ok(None);
            }
            let tokens = state.store.list_sa_tokens(id).await?;
            if !tokens.iter().any(|k| k.id == token_id && !k.has_expired(t)) {
                return Ok(None);
            }
            Ok(Some(Identity::ServiceAccount {
                id,
                login: sa.login,
                role: sa.role,
                token_id,
            }))
        }
        _ => Ok(None),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    pub next: Option<String>,
}

/// `GET /portal/login`.
pub async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, PortalError> {
    let next = q.next.as_deref().map_or("/portal/", safe_next).to_string();
    login_form(&state, StatusCode::OK, &next, "", None)
}

/// The sign-in page with a fresh form token (and its cookie).
fn login_form(
    state: &AppState,
    status: StatusCode,
    next: &str,
    user: &str,
    error: Option<&str>,
) -> Result<Response, PortalError> {
    let token = random_token()?;
    let body = login_body(&token, next, user, error);
    let mut res = html_status(status, layout::bare("Sign in", body));
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, LOGIN_COOKIE, &token, "/portal/login", 3600),
    );
    Ok(res)
}

fn login_body(token: &str, next: &str, user: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in to Charter" }
        @if let Some(e) = error {
            div.alert role="alert" { p { (e) } }
        }
        div.cards {
            form.card method="post" action="/portal/login" {
                h2 { "Server admin" }
                input type="hidden" name="csrf" value=(token);
                input type="hidden" name="next" value=(next);
                div.field {
                    label for="user" { "User name" }
                    input #user type="text" name="user" value=(user) autocomplete="username" required;
                }
                div.field {
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                }
                button type="submit" { "Sign in" }
            }
            form.card method="post" action="/portal/login" {
                h2 { "Service account" }
                input type="hidden" name="csrf" value=(token);
                input type="hidden" name="next" value=(next);
                div.field {
                    label for="token" { "Service account token" }
                    input #token type="password" name="token" autocomplete="off" required aria-describedby="token-hint";
                    p.hint #token-hint { "A token starting with chr_sa_; its account's role decides what you may do." }
                }
                button type="submit" { "Sign in with token" }
            }
        }
    }
}

/// `POST /portal/login`.
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PortalError> {
    if !same_origin(&headers, &state.config.public_url) {
        return Err(PortalError::forbidden("Cross-site sign-in refused."));
    }
    let fields = Fields::parse(&body);
    let next = safe_next(fields.get("next")).to_string();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !super::form::same_secret(fields.get("csrf"), expected) {
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            "",
            Some("The sign-in form expired. Please sign in again."),
        );
    }
    let (user, password, token) = (
        fields.get("user"),
        fields.raw("password"),
        fields.get("token"),
    );
    let header = if !token.is_empty() {
        format!("Bearer {token}")
    } else if !user.is_empty() && !password.is_empty() {
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {pair}")
    } else {
        return login_form(
            &state,
            StatusCode::BAD_REQUEST,
            &next,
            user,
            Some("Enter a user name and password, or a service account token."),
        );
    };
    let identity = match check_credentials(&state, &header, ip).await {
        Ok(identity) => identity,
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => return Err(e.into()),
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            return login_form(
                &state,
                e.status,
                &next,
                user,
                Some("Too many failed sign-ins from here. Wait a few minutes and try again."),
            );
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let what = if token.is_empty() {
                "Wrong user name or password."
            } else {
                "That token is not valid (unknown, expired, or its account is disabled)."
            };
            return login_form(&state, e.status, &next, user, Some(what));
        }
        Err(e) => return Err(e.into()),
    };
    let id = random_token()?;
    let t = now();
    let (actor_kind, actor, sa, token_id, role) = match &identity {
        Identity::Admin { user } => (ActorKind::Admin, user.clone(), None, None, Role::Admin),
        Identity::ServiceAccount {
            id,
            login,
            role,
            token_id,
        } => (
            ActorKind::ServiceAccount,
            login.clone(),
            Some(*id),
            Some(*token_id),
            *role,
        ),
    };
    let session = PortalSession {
        id_hash: sa_token_hash(&id),
        actor_kind,
        actor,
        service_account_id: sa,
        token_id,
        role,
        csrf: random_token()?,
        ip: ip.map(|ip| ip.to_string()),
        created_at: t,
        last_seen_at: t,
    };
    if let Err(e) = state.store.prune_sessions(t - IDLE, t - ABSOLUTE).await {
        tracing::warn!(error = %e, "cannot prune ended portal sessions");
    }
    state.store.insert_session(&session).await?;
    let p = Principal { identity, ip };
    let event = p.event("portal.login", "session", "");
    if let Err(e) = state.store.insert_audit(&event).await {
        tracing::warn!(error = %e, "cannot audit a portal sign-in");
    }
    tracing::info!(by = p.name(), "portal sign-in");
    let mut res = super::see_other(&next);
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&state, COOKIE, &id, "/portal", ABSOLUTE),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, "", "/portal/login", 0),
    );
    Ok(res)
}

/// `POST /portal/logout`: ends the session.
pub async fn logout(
    State(state): State<AppState>,
    form: super::form::PostForm,
) -> Result<Response, PortalError> {
    let s = &form.session;
    state.store.delete_session(&s.id_hash).await?;
    let event = s.principal.event("portal.logout", "session", "");
    if let Err(e) = state.store.insert_audit(&event).await {
        tracing::warn!(error = %e, "cannot audit a portal sign-out");
    }
    let mut res = super::see_other("/portal/login");
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, COOKIE, "", "/portal", 0),
    );
    Ok(res.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_sign_in_only_portal_paths() {
        assert_eq!(
            safe_next("/portal/licenses?state=active"),
            "/portal/licenses?state=active"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/portal/",
            "/portal//evil.example",
            "/portal/\\evil",
            "/api/licenses",
            "/portal/login?next=/portal/",
            "",
        ] {
            assert_eq!(safe_next(bad), "/portal/", "{bad}");
        }
    }

    #[test]
    fn a_session_ends_idle_or_at_the_absolute_limit() {
        let s = PortalSession {
            id_hash: String::new(),
            actor_kind: ActorKind::Admin,
            actor: "admin".into(),
            service_account_id: None,
            token_id: None,
            role: Role::Admin,
            csrf: String::new(),
            ip: None,
            created_at: 1_000_000,
            last_seen_at: 1_000_000,
        };
        assert!(!expired(&s, 1_000_000 + IDLE - 1));
        assert!(expired(&s, 1_000_000 + IDLE));
        let busy = PortalSession {
            last_seen_at: 1_000_000 + ABSOLUTE - 10,
            ..s
        };
        assert!(!expired(&busy, 1_000_000 + ABSOLUTE - 1));
        assert!(expired(&busy, 1_000_000 + ABSOLUTE));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; charter_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "charter"), None);
    }
}
