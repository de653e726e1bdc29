//! Service accounts and their tokens (a new token is shown once), the
//! audit trail with its filters, and the signing keys.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use charter_token::now;
use maud::{Markup, html};
use serde_json::json;

use super::form::{Fields, PostForm};
use super::layout::{Errors, Nav, badge, csrf, input, page, pager, select, ts, ts_opt};
use super::licenses::{next_link, page_of};
use super::session::Session;
use super::{PortalError, html, html_status, require, see_other};
use crate::api::AppState;
use crate::api::auth::{Action, new_sa_token};
use crate::db::{NewSaToken, NewServiceAccount};
use crate::domain::{AuditEvent, AuditFilter, Role, rfc3339};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal/serviceaccounts", get(list_sas).post(create_sa))
        .route("/portal/serviceaccounts/{id}", get(show_sa))
        .route("/portal/serviceaccounts/{id}/tokens", post(create_token))
        .route(
            "/portal/serviceaccounts/{id}/tokens/{token}/delete",
            post(delete_token),
        )
        .route("/portal/audit", get(audit))
        .route("/portal/keys", get(keys))
}

/// Audit events as a table.
pub fn audit_table(events: &[AuditEvent]) -> Markup {
    html! {
        div.table-wrap tabindex="0" { table #audit-table {
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" }
                th scope="col" { "Target" } th scope="col" { "From" } th scope="col" { "Detail" }
            } }
            tbody { @for e in events { tr {
                td { (ts(e.at)) }
                td { (e.actor) br; span.muted { (e.actor_kind.as_str()) } }
                td.mono { (e.action) }
                td { (e.target_type) " " span.mono { (e.target_id) } }
                td { (e.ip.as_deref().unwrap_or("—")) }
                td.mono { @if let Some(d) = &e.detail { (d.to_string()) } }
            } } }
        } }
    }
}

/// `GET /portal/audit`.
async fn audit(
    s: Session,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, PortalError> {
    require(&s, Action::AuditRead)?;
    let q = Fields::parse(q.unwrap_or_default().as_bytes());
    let paging = page_of(&q)?;
    let day = |name: &str| -> Result<Option<i64>, PortalError> {
        q.opt(name)
            .map(|d| {
                rfc3339::parse(&format!("{d}T00:00:00Z"))
                    .map_err(|_| PortalError::bad_request(format!("{name}: {d:?} is not a date")))
            })
            .transpose()
    };
    let short = |name: &str| {
        q.opt(name)
            .map(|v| v.chars().take(1000).collect::<String>())
    };
    let filter = AuditFilter {
        actor: short("actor"),
        action: short("action"),
        target_type: short("target_type"),
        target_id: short("target_id"),
        since: day("since")?,
        until: day("until")?.map(|u| u + 86_400),
    };
    let listing = state.store.list_audit(&filter, &paging).await?;
    let keep = [
        "actor",
        "action",
        "target_type",
        "target_id",
        "since",
        "until",
        "per_page",
    ];
    let next = next_link("/portal/audit", &q, &keep, listing.next());
    let none = Errors::default();
    let body = html! {
        h1 { "Audit" }
        form.filters method="get" action="/portal/audit" role="search" aria-label="Filter audit events" {
            (input("Who", "actor", "text", q.get("actor"), &none, None))
            (input("Action", "action", "text", q.get("action"), &none, Some("e.g. license.revoke")))
            (input("Target type", "target_type", "text", q.get("target_type"), &none, None))
            (input("Target id", "target_id", "text", q.get("target_id"), &none, None))
            (input("From (day)", "since", "date", q.get("since"), &none, None))
            (input("To (day)", "until", "date", q.get("until"), &none, None))
            button.secondary type="submit" { "Filter" }
        }
        (audit_table(&listing.items))
        @if listing.items.is_empty() { p.muted { "No events match." } }
        (pager(next))
    };
    Ok(html(page(&s, "Audit", Nav::Audit, body)))
}

/// `GET /portal/keys`.
async fn keys(s: Session, State(state): State<AppState>) -> Result<Response, PortalError> {
    require(&s, Action::KeysRead)?;
    let keys = crate::licensing::keys::list(&state).await?;
    let body = html! {
        h1 { "Signing keys" }
        p { "Instances verify tokens against " a href="/.well-known/jwks.json" { "the JWKS" } ". The current key signs; next keys are published before they sign, previous ones until the tokens they signed expire." }
        div.table-wrap tabindex="0" { table {
            thead { tr { th scope="col" { "Key id (kid)" } th scope="col" { "Algorithm" } th scope="col" { "State" } th scope="col" { "Signs" }
                th scope="col" { "Created" } th scope="col" { "Signs from" } th scope="col" { "Retired" } } }
            tbody { @for k in &keys { tr {
                td.mono { (k.kid) } td { (k.alg) } td { (badge(k.state.as_str())) }
                td { @if k.state.as_str() == "current" { strong { "signs new tokens" } } @else { "no" } }
                td { (ts(k.created_at)) } td { (ts(k.signs_from)) } td { (ts_opt(k.retired_at)) }
            } } }
        } }
    };
    Ok(html(page(&s, "Signing keys", Nav::Keys, body)))
}

fn roles() -> Vec<(String, String)> {
    ["Viewer", "Editor", "Admin"]
        .iter()
        .map(|r| (r.to_string(), r.to_string()))
        .collect()
}

/// `GET /portal/serviceaccounts`.
async fn list_sas(
    s: Session,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, PortalError> {
    require(&s, Action::ServiceAccountsRead)?;
    let q = Fields::parse(q.unwrap_or_default().as_bytes());
    sa_list(
        &s,
        &state,
        &q,
        &Fields::default(),
        &Errors::default(),
        StatusCode::OK,
    )
    .await
}

async fn sa_list(
    s: &Session,
    state: &AppState,
    q: &Fields,
    f: &Fields,
    errors: &Errors,
    status: StatusCode,
) -> Result<Response, PortalError> {
    let paging = page_of(q)?;
    let listing = state
        .store
        .search_service_accounts(q.get("q"), &paging)
        .await?;
    let next = next_link(
        "/portal/serviceaccounts",
        q,
        &["q", "per_page"],
        listing.next(),
    );
    let none = Errors::default();
    let body = html! {
        h1 { "Service accounts" }
        form.filters method="get" action="/portal/serviceaccounts" role="search" aria-label="Search service accounts" {
            (input("Search service accounts", "q", "search", q.get("q"), &none, None))
            button.secondary type="submit" { "Search" }
        }
        div.table-wrap tabindex="0" { table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Login" } th scope="col" { "Role" } th scope="col" { "Tokens" } th scope="col" { "Disabled" } } }
            tbody { @for sa in &listing.items { tr {
                td { a href={ "/portal/serviceaccounts/" (sa.id) } { (sa.name) } }
                td.mono { (sa.login) } td { (sa.role.as_str()) } td { (sa.tokens) }
                td { (if sa.is_disabled { "yes" } else { "no" }) }
            } } }
        } }
        (pager(next))
        @if s.may(Action::ServiceAccountsWrite) {
            h2 { "New service account" }
            (errors.summary())
            form.card method="post" action="/portal/serviceaccounts" novalidate {
                (csrf(s))
                (input("Name", "name", "text", f.get("name"), errors, None))
                (select("Role", "role", &roles(), f.opt("role").unwrap_or("Viewer"), errors))
                button type="submit" { "Create service account" }
            }
        }
    };
    Ok(html_status(
        status,
        page(s, "Service accounts", Nav::ServiceAccounts, body),
    ))
}

/// `POST /portal/serviceaccounts`.
async fn create_sa(State(state): State<AppState>, form: PostForm) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::ServiceAccountsWrite)?;
    let mut errors = Errors::default();
    if let Err(e) = crate::api::check_text("name", f.get("name"), 190) {
        errors.add("name", e.message.trim_start_matches("name: ").to_string());
    }
    let role = Role::parse(f.get("role"));
    if role.is_none() {
        errors.add("role", "must be Viewer, Editor or Admin");
    }
    let (Some(role), true) = (role, errors.is_empty()) else {
        return sa_list(
            s,
            &state,
            &Fields::default(),
            f,
            &errors,
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let name = f.get("name");
    let login = crate::api::serviceaccounts::login_for(name);
    let mut event = s
        .principal
        .event("serviceaccount.create", "serviceaccount", "");
    event.detail = Some(json!({"login": login, "role": role.as_str(), "isDisabled": false}));
    let new = NewServiceAccount {
        name,
        login: &login,
        role,
        is_disabled: false,
        now: now(),
    };
    match state.store.insert_service_account(new, &event).await {
        Ok(sa) => Ok(see_other(&format!("/portal/serviceaccounts/{}", sa.id))),
        Err(crate::db::StoreError::Conflict(m)) => {
            errors.add("name", m);
            sa_list(
                s,
                &state,
                &Fields::default(),
                f,
                &errors,
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

fn sa_id(id: &str) -> Result<i64, PortalError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| PortalError::not_found("There is no such service account."))
}

/// `GET /portal/serviceaccounts/{id}`.
async fn show_sa(
    s: Session,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    require(&s, Action::ServiceAccountsRead)?;
    sa_page(
        &s,
        &state,
        sa_id(&id)?,
        None,
        &Fields::default(),
        &Errors::default(),
        StatusCode::OK,
    )
    .await
}

async fn sa_page(
    s: &Session,
    state: &AppState,
    id: i64,
    created: Option<(String, String)>,
    f: &Fields,
    errors: &Errors,
    status: StatusCode,
) -> Result<Response, PortalError> {
    let sa = state
        .store
        .get_service_account(id)
        .await?
        .ok_or_else(|| PortalError::not_found(format!("service account {id} not found")))?;
    let tokens = state.store.list_sa_tokens(id).await?;
    let t = now();
    let title = format!("Service account {}", sa.name);
    let write = s.may(Action::ServiceAccountsWrite);
    let body = html! {
        h1 { (title) }
        dl.facts {
            dt { "Login" } dd.mono { (sa.login) }
            dt { "Role" } dd { (sa.role.as_str()) }
            dt { "Disabled" } dd { (if sa.is_disabled { "yes" } else { "no" }) }
            dt { "Created" } dd { (ts(sa.created_at)) }
        }
        @if let Some((name, key)) = &created {
            div.notice role="status" #new-token {
                p { strong { "Token " (name) " created. Copy it now: it is shown only once." } }
                div.field {
                    label for="new-token-value" { "The new token" }
                    textarea.secret #new-token-value readonly rows="2" { (key) }
                }
            }
        }
        h2 { "Tokens" }
        div.table-wrap tabindex="0" { table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Last used" }
                @if write { th scope="col" { "Delete" } } } }
            tbody { @for k in &tokens { tr {
                td { (k.name) @if k.has_expired(t) { " " (badge("expired")) } }
                td { (ts(k.created_at)) } td { (ts_opt(k.expires_at)) } td { (ts_opt(k.last_used_at)) }
                @if write { td {
                    form.inline method="post" action={ "/portal/serviceaccounts/" (id) "/tokens/" (k.id) "/delete" } {
                        (csrf(s))
                        button.danger type="submit" aria-label={ "Delete token " (k.name) } { "Delete" }
                    }
                } }
            } } }
        } }
        @if write {
            h2 { "New token" }
            (errors.summary())
            form.card method="post" action={ "/portal/serviceaccounts/" (id) "/tokens" } novalidate {
                (csrf(s))
                (input("Token name", "name", "text", f.get("name"), errors, None))
                (input("Lifetime (days)", "days", "number", f.get("days"), errors, Some("Empty or 0: no expiry")))
                button type="submit" { "Create token" }
            }
        }
    };
    Ok(html_status(
        status,
        page(s, &title, Nav::ServiceAccounts, body),
    ))
}

/// `POST /portal/serviceaccounts/{id}/tokens`: the token is shown once, on
/// the answer to this POST (never stored, never in a URL).
async fn create_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::ServiceAccountsWrite)?;
    let id = sa_id(&id)?;
    let sa = state
        .store
        .get_service_account(id)
        .await?
        .ok_or_else(|| PortalError::not_found(format!("service account {id} not found")))?;
    let mut errors = Errors::default();
    if let Err(e) = crate::api::check_text("name", f.get("name"), 190) {
        errors.add("name", e.message.trim_start_matches("name: ").to_string());
    }
    let days = match f.opt("days").map(str::parse::<i64>) {
        None => Some(0),
        Some(Ok(d)) if (0..=3650).contains(&d) => Some(d),
        Some(_) => {
            errors.add("days", "must be a whole number of days from 0 to 3650");
            None
        }
    };
    let (Some(days), true) = (days, errors.is_empty()) else {
        return sa_page(s, &state, id, None, f, &errors, StatusCode::BAD_REQUEST).await;
    };
    let t = now();
    let (key, hash) = new_sa_token()?;
    let name = f.get("name");
    let mut event = s
        .principal
        .event("serviceaccount.token.create", "serviceaccount_token", "");
    event.detail =
        Some(json!({"serviceAccountId": sa.id, "name": name, "secondsToLive": days * 86_400}));
    let new = NewSaToken {
        service_account_id: sa.id,
        name,
        hash: &hash,
        now: t,
        expires_at: (days > 0).then(|| t + days * 86_400),
    };
    match state.store.insert_sa_token(new, &event).await {
        Ok(token) => {
            sa_page(
                s,
                &state,
                id,
                Some((token.name, key)),
                &Fields::default(),
                &Errors::default(),
                StatusCode::OK,
            )
            .await
        }
        Err(crate::db::StoreError::Conflict(m)) => {
            errors.add("name", m);
            sa_page(s, &state, id, None, f, &errors, StatusCode::CONFLICT).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /portal/serviceaccounts/{id}/tokens/{token}/delete`.
async fn delete_token(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let s = &form.session;
    require(s, Action::ServiceAccountsWrite)?;
    let id = sa_id(&id)?;
    let token_id = token
        .parse::<i64>()
        .map_err(|_| PortalError::not_found("There is no such token."))?;
    let mut event = s.principal.event(
        "serviceaccount.token.delete",
        "serviceaccount_token",
        token_id.to_string(),
    );
    event.detail = Some(json!({"serviceAccountId": id}));
    if !state
        .store
        .delete_sa_token(Some(id), token_id, &event)
        .await?
    {
        return Err(PortalError::not_found(format!(
            "token {token_id} of service account {id} not found"
        )));
    }
    Ok(see_other(&format!("/portal/serviceaccounts/{id}")))
}
