//! Licenses: the list with the API's filters, create and edit, and
//! suspend / resume / revoke behind a confirmation. The detail page and
//! what is done from it (tokens, instances) are in [`super::license_page`].

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use charter_token::{DAY, now};
use maud::html;

use super::error::form_error;
use super::form::{Fields, PostForm};
use super::layout::{Errors, Nav, badge, csrf, page, pager, ts};
use super::license_form;
use super::session::Session;
use super::{PortalError, html, html_status, require, see_other};
use crate::api::AppState;
use crate::api::auth::Action;
use crate::domain::{Cursor, LicenseState, LicenseStatus, Page};
use crate::licensing::{accounts, licenses};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal/licenses", get(list).post(create))
        .route("/portal/licenses/new", get(new_form))
        .route("/portal/licenses/{lid}", get(super::license_page::show))
        .route("/portal/licenses/{lid}/edit", get(edit_form).post(update))
        .route(
            "/portal/licenses/{lid}/status/{to}",
            get(confirm_status).post(set_status),
        )
        .merge(super::license_page::router())
}

/// A page of a list: `?per_page=` (1-200, default 50) and `?after=`.
pub fn page_of(q: &Fields) -> Result<Page, PortalError> {
    let per_page = match q.opt("per_page") {
        None => 50,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| PortalError::bad_request("per_page must be between 1 and 200"))?,
    };
    let after = match q.opt("after") {
        None => None,
        Some(c) => Some(
            Cursor::decode(c)
                .ok_or_else(|| PortalError::bad_request("That page link is not valid."))?,
        ),
    };
    Ok(Page {
        page: 1,
        per_page,
        after,
    })
}

/// The link to the page after `next`, keeping the other parameters.
pub fn next_link(path: &str, q: &Fields, keep: &[&str], next: Option<Cursor>) -> Option<String> {
    let next = next?;
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for k in keep {
        if let Some(v) = q.opt(k) {
            out.append_pair(k, v);
        }
    }
    out.append_pair("after", &next.encode());
    Some(format!("{path}?{}", out.finish()))
}

fn query(q: Option<String>) -> Fields {
    Fields::parse(q.unwrap_or_default().as_bytes())
}

/// `GET /portal/licenses`.
async fn list(
    s: Session,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, PortalError> {
    require(&s, Action::LicensingRead)?;
    let q = query(q);
    let paging = page_of(&q)?;
    let wanted = match q.opt("state") {
        None => None,
        Some(v) => {
            Some(LicenseState::parse(v).ok_or_else(|| PortalError::bad_request("unknown state"))?)
        }
    };
    let expiring = q.checked("expiring");
    let before = expiring.then(|| crate::domain::rfc3339::format(now() + 30 * DAY));
    let (wanted, before) = if expiring {
        (wanted.or(Some(LicenseState::Active)), before)
    } else {
        (wanted, None)
    };
    let listing = licenses::list(
        &state,
        q.opt("account").map(str::to_string),
        q.opt("product").map(str::to_string),
        wanted,
        before.as_deref(),
        &paging,
    )
    .await?;
    let next = next_link(
        "/portal/licenses",
        &q,
        &["state", "account", "product", "expiring", "per_page"],
        listing.next(),
    );
    let (total, exact) = listing.total();
    let accounts = accounts::list(
        &state,
        &Page {
            page: 1,
            per_page: 500,
            after: None,
        },
    )
    .await?
    .items;
    let products = state.store.list_products().await?;
    let states = ["active", "suspended", "revoked", "expired", "not_started"];
    let body = html! {
        h1 { "Licenses" }
        @if s.may(Action::LicensingWrite) {
            div.actions { a.button href="/portal/licenses/new" { "New license" } }
        }
        form.filters method="get" action="/portal/licenses" role="search" aria-label="Filter licenses" {
            div.field {
                label for="q-state" { "State" }
                select #q-state name="state" {
                    option value="" { "Any" }
                    @for st in states { option value=(st) selected[q.get("state") == st] { (st.replace('_', " ")) } }
                }
            }
            div.field {
                label for="q-account" { "Account" }
                select #q-account name="account" {
                    option value="" { "Any" }
                    @for a in &accounts { option value=(a.id) selected[q.get("account") == a.id] { (a.company) " (" (a.slug) ")" } }
                }
            }
            div.field {
                label for="q-product" { "Product" }
                select #q-product name="product" {
                    option value="" { "Any" }
                    @for p in &products { option value=(p.slug) selected[q.get("product") == p.slug] { (p.name) } }
                }
            }
            div.check {
                input #q-expiring type="checkbox" name="expiring" value="on" checked[expiring];
                label for="q-expiring" { "Expiring within 30 days" }
            }
            button.secondary type="submit" { "Filter" }
        }
        p.muted { (total) @if !exact { "+" } " licenses match." }
        div.table-wrap tabindex="0" { table {
            thead { tr {
                th scope="col" { "License" } th scope="col" { "Account" } th scope="col" { "Products" }
                th scope="col" { "State" } th scope="col" { "Expires" } th.num scope="col" { "Max instances" }
            } }
            tbody {
                @for l in &listing.items {
                    tr {
                        td { a.mono href={ "/portal/licenses/" (l.lid) } { (l.lid) } }
                        td { (accounts.iter().find(|a| a.id == l.account_id).map_or(l.account_id.as_str(), |a| a.company.as_str())) }
                        td { (l.terms.products.join(", ")) }
                        td { (badge(l.state.as_str())) }
                        td { (ts(l.expires_at)) }
                        td.num { (l.max_instances) }
                    }
                }
            }
        } }
        (pager(next))
    };
    Ok(html(page(&s, "Licenses", Nav::Licenses, body)))
}

async fn form_page(
    s: &Session,
    state: &AppState,
    lid: Option<&str>,
    f: &Fields,
    errors: &Errors,
    status: StatusCode,
) -> Result<Response, PortalError> {
    let products = state.store.list_products().await?;
    let (title, action, accounts) = match lid {
        None => {
            let accounts = accounts::list(
                state,
                &Page {
                    page: 1,
                    per_page: 500,
                    after: None,
                },
            )
            .await?
            .items;
            (
                "New license".to_string(),
                "/portal/licenses".to_string(),
                Some(accounts),
            )
        }
        Some(lid) => (
            format!("Edit license {lid}"),
            format!("/portal/licenses/{lid}/edit"),
            None,
        ),
    };
    let body = html! {
        h1 { (title) }
        (license_form::render(s, &action, f, errors, accounts.as_deref(), &products))
    };
    Ok(html_status(status, page(s, &title, Nav::Licenses, body)))
}

/// `GET /portal/licenses/new`.
async fn new_form(s: Session, State(state): State<AppState>) -> Result<Response, PortalError> {
    require(&s, Action::LicensingWrite)?;
    let f = license_form::defaults(state.config.token_ttl_days, now());
    form_page(&s, &state, None, &f, &Errors::default(), StatusCode::OK).await
}

/// The status a refused form is shown with.
fn refused(e: &crate::licensing::Error) -> StatusCode {
    match e {
        crate::licensing::Error::Conflict(_) | crate::licensing::Error::Stale(_) => {
            StatusCode::CONFLICT
        }
        crate::licensing::Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `POST /portal/licenses`.
async fn create(State(state): State<AppState>, form: PostForm) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    let mut errors = Errors::default();
    let input = license_form::to_input(f, None, &mut errors);
    if !errors.is_empty() {
        return form_page(s, &state, None, f, &errors, StatusCode::BAD_REQUEST).await;
    }
    match licenses::create(&state, &s.actor(), input).await {
        Ok(l) => Ok(see_other(&format!("/portal/licenses/{}", l.lid))),
        Err(e) => match form_error(&e) {
            Some((field, message)) => {
                errors.add(&field, message);
                form_page(s, &state, None, f, &errors, refused(&e)).await
            }
            None => Err(e.into()),
        },
    }
}

/// `GET /portal/licenses/{lid}/edit`.
async fn edit_form(
    s: Session,
    State(state): State<AppState>,
    Path(lid): Path<String>,
) -> Result<Response, PortalError> {
    require(&s, Action::LicensingWrite)?;
    let l = licenses::get(&state, &lid).await?;
    let f = license_form::values_of(&l);
    form_page(
        &s,
        &state,
        Some(&lid),
        &f,
        &Errors::default(),
        StatusCode::OK,
    )
    .await
}

/// `POST /portal/licenses/{lid}/edit`.
async fn update(
    State(state): State<AppState>,
    Path(lid): Path<String>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    let current = licenses::get(&state, &lid).await?;
    let mut errors = Errors::default();
    let input = license_form::to_input(f, Some(&current), &mut errors);
    if !errors.is_empty() {
        return form_page(s, &state, Some(&lid), f, &errors, StatusCode::BAD_REQUEST).await;
    }
    match licenses::update(&state, &s.actor(), &lid, input, None).await {
        Ok(_) => Ok(see_other(&format!("/portal/licenses/{lid}?saved=1"))),
        Err(e) => match form_error(&e) {
            Some((field, message)) => {
                errors.add(&field, message);
                form_page(s, &state, Some(&lid), f, &errors, refused(&e)).await
            }
            None => Err(e.into()),
        },
    }
}

/// The status change `to` names, and the permission it needs (the API's).
fn transition(to: &str) -> Result<(LicenseStatus, Action, &'static str), PortalError> {
    match to {
        "suspend" => Ok((LicenseStatus::Suspended, Action::LicensingDelete, "Suspend")),
        "resume" => Ok((LicenseStatus::Active, Action::LicensingWrite, "Resume")),
        "revoke" => Ok((LicenseStatus::Revoked, Action::LicensingDelete, "Revoke")),
        _ => Err(PortalError::not_found("There is no such page.")),
    }
}

/// `GET /portal/licenses/{lid}/status/{to}`: the confirmation.
async fn confirm_status(
    s: Session,
    State(state): State<AppState>,
    Path((lid, to)): Path<(String, String)>,
) -> Result<Response, PortalError> {
    let (_, action, verb) = transition(&to)?;
    require(&s, action)?;
    let l = licenses::get(&state, &lid).await?;
    let account = accounts::get(&state, &l.account_id).await.ok();
    let who = account.map_or_else(|| l.account_id.clone(), |a| a.company);
    let title = format!("{verb} license {lid}?");
    let body = html! {
        h1 { (title) }
        p { "License " code { (lid) } " of " strong { (who) } " (" (l.terms.products.join(", ")) "), now " (badge(l.state.as_str())) "." }
        @match to.as_str() {
            "revoke" => {
                div.alert role="alert" {
                    p { strong { "Revocation is final." } " The license can never be resumed; its instances' renewals are refused and push-enabled instances get the license removed." }
                }
            }
            "suspend" => { p { "Renewals are refused until the license is resumed." } }
            _ => { p { "Renewals are accepted again." } }
        }
        form method="post" action={ "/portal/licenses/" (lid) "/status/" (to) } {
            (csrf(&s))
            div.actions {
                button.danger[to != "resume"] type="submit" { (verb) " license " (lid) }
                a.button.secondary href={ "/portal/licenses/" (lid) } { "Cancel" }
            }
        }
    };
    Ok(html(page(&s, &title, Nav::Licenses, body)))
}

/// `POST /portal/licenses/{lid}/status/{to}`.
async fn set_status(
    State(state): State<AppState>,
    Path((lid, to)): Path<(String, String)>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let s = &form.session;
    let (status, action, _) = transition(&to)?;
    require(s, action)?;
    licenses::set_status(&state, &s.actor(), &lid, status).await?;
    Ok(see_other(&format!("/portal/licenses/{lid}")))
}
