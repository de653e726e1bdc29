//! Accounts (the vendor's customers) and products: lists with search,
//! create and edit forms whose errors name their field.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};

use super::error::form_error;
use super::form::{Fields, PostForm};
use super::layout::{Errors, Nav, csrf, input, page, pager, textarea, ts};
use super::licenses::{next_link, page_of};
use super::session::Session;
use super::{PortalError, html, html_status, require, see_other};
use crate::api::AppState;
use crate::api::auth::Action;
use crate::domain::{FeatureName, Page, Slug, Text};
use crate::licensing::accounts::{self, AccountPatch, NewAccount};
use crate::licensing::products::{self, NewProduct, ProductPatch};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal/accounts", get(list_accounts).post(create_account))
        .route("/portal/accounts/new", get(new_account))
        .route(
            "/portal/accounts/{id}/edit",
            get(edit_account).post(update_account),
        )
        .route("/portal/products", get(list_products).post(create_product))
        .route("/portal/products/new", get(new_product))
        .route(
            "/portal/products/{slug}/edit",
            get(edit_product).post(update_product),
        )
}

/// Accounts searched at most (a search reads this many and filters).
const SEARCH_SCAN: i64 = 1000;

fn matches(q: &str, fields: &[&str]) -> bool {
    let q = q.to_lowercase();
    fields.iter().any(|f| f.to_lowercase().contains(&q))
}

fn search_form(action: &str, label: &str, q: &str) -> Markup {
    html! {
        form.filters method="get" action=(action) role="search" aria-label=(label) {
            div.field {
                label for="q" { (label) }
                input #q type="search" name="q" value=(q);
            }
            button.secondary type="submit" { "Search" }
        }
    }
}

/// `GET /portal/accounts`.
async fn list_accounts(
    s: Session,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, PortalError> {
    require(&s, Action::LicensingRead)?;
    let q = Fields::parse(q.unwrap_or_default().as_bytes());
    let search = q.get("q");
    let (items, next) = if search.is_empty() {
        let page = page_of(&q)?;
        let listing = accounts::list(&state, &page).await?;
        let next = next_link("/portal/accounts", &q, &["per_page"], listing.next());
        (listing.items, next)
    } else {
        let page = Page {
            page: 1,
            per_page: SEARCH_SCAN,
            after: None,
        };
        let listing = accounts::list(&state, &page).await?;
        let found = listing
            .items
            .into_iter()
            .filter(|a| matches(search, &[&a.company, &a.account, &a.slug, &a.id]))
            .collect();
        (found, None)
    };
    let body = html! {
        h1 { "Accounts" }
        @if s.may(Action::LicensingWrite) {
            div.actions { a.button href="/portal/accounts/new" { "New account" } }
        }
        (search_form("/portal/accounts", "Search accounts", search))
        div.table-wrap tabindex="0" { table {
            thead { tr { th scope="col" { "Company" } th scope="col" { "Account" } th scope="col" { "Slug" } th scope="col" { "Created" } th scope="col" { "Licenses" }
                @if s.may(Action::LicensingWrite) { th scope="col" { "Edit" } } } }
            tbody { @for a in &items { tr {
                td { (a.company) } td { (a.account) } td.mono { (a.slug) } td { (ts(a.created_at)) }
                td { a href={ "/portal/licenses?account=" (a.id) } aria-label={ "Licenses of " (a.company) } { "licenses" } }
                @if s.may(Action::LicensingWrite) { td { a href={ "/portal/accounts/" (a.id) "/edit" } aria-label={ "Edit " (a.company) } { "edit" } } }
            } } }
        } }
        @if items.is_empty() { p.muted { "No accounts" @if !search.is_empty() { " match" } "." } }
        (pager(next))
    };
    Ok(html(page(&s, "Accounts", Nav::Accounts, body)))
}

fn account_form(s: &Session, action: &str, f: &Fields, errors: &Errors) -> Markup {
    html! {
        (errors.summary())
        form method="post" action=(action) novalidate {
            (csrf(s))
            (input("Company", "company", "text", f.get("company"), errors, None))
            (input("Account name", "account", "text", f.get("account"), errors, Some("Defaults to the company")))
            (input("Slug", "slug", "text", f.get("slug"), errors, Some(Slug::RULE)))
            div.actions { button type="submit" { "Save account" } }
        }
    }
}

fn account_page(
    s: &Session,
    title: &str,
    action: &str,
    f: &Fields,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    let body = html! { h1 { (title) } (account_form(s, action, f, errors)) };
    html_status(status, page(s, title, Nav::Accounts, body))
}

fn text(f: &Fields, name: &str, errors: &mut Errors) -> Option<Text> {
    Text::parse(f.get(name))
        .map_err(|e| errors.add(name, e))
        .ok()
}

fn status_of(e: &crate::licensing::Error) -> StatusCode {
    match e {
        crate::licensing::Error::Conflict(_) | crate::licensing::Error::Stale(_) => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A use case's refusal, by field; `None`: show the error page.
fn refusal(e: &crate::licensing::Error) -> Option<Errors> {
    let (mut field, message) = form_error(e)?;
    // A taken slug is the slug's problem.
    if field.is_empty() && message.contains("slug") {
        field = "slug".into();
    }
    let mut errors = Errors::default();
    errors.add(&field, message);
    Some(errors)
}

async fn new_account(s: Session) -> Result<Response, PortalError> {
    require(&s, Action::LicensingWrite)?;
    Ok(account_page(
        &s,
        "New account",
        "/portal/accounts",
        &Fields::default(),
        &Errors::default(),
        StatusCode::OK,
    ))
}

async fn create_account(
    State(state): State<AppState>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    let mut errors = Errors::default();
    let company = text(f, "company", &mut errors);
    let account = f
        .opt("account")
        .and_then(|_| text(f, "account", &mut errors));
    let slug = Slug::parse(f.get("slug"))
        .map_err(|e| errors.add("slug", e))
        .ok();
    let (Some(company), Some(slug), true) = (company, slug, errors.is_empty()) else {
        return Ok(account_page(
            s,
            "New account",
            "/portal/accounts",
            f,
            &errors,
            StatusCode::BAD_REQUEST,
        ));
    };
    match accounts::create(
        &state,
        &s.actor(),
        NewAccount {
            company,
            account,
            slug,
        },
    )
    .await
    {
        Ok(_) => Ok(see_other("/portal/accounts")),
        Err(e) => match refusal(&e) {
            Some(errors) => Ok(account_page(
                s,
                "New account",
                "/portal/accounts",
                f,
                &errors,
                status_of(&e),
            )),
            None => Err(e.into()),
        },
    }
}

async fn edit_account(
    s: Session,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    require(&s, Action::LicensingWrite)?;
    let a = accounts::get(&state, &id).await?;
    let f = Fields::from_pairs(vec![
        ("company".into(), a.company),
        ("account".into(), a.account),
        ("slug".into(), a.slug),
    ]);
    let action = format!("/portal/accounts/{id}/edit");
    Ok(account_page(
        &s,
        "Edit account",
        &action,
        &f,
        &Errors::default(),
        StatusCode::OK,
    ))
}

async fn update_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    let action = format!("/portal/accounts/{id}/edit");
    let mut errors = Errors::default();
    let patch = AccountPatch {
        company: text(f, "company", &mut errors),
        account: text(f, "account", &mut errors),
        slug: Slug::parse(f.get("slug"))
            .map_err(|e| errors.add("slug", e))
            .ok(),
    };
    if !errors.is_empty() {
        return Ok(account_page(
            s,
            "Edit account",
            &action,
            f,
            &errors,
            StatusCode::BAD_REQUEST,
        ));
    }
    match accounts::update(&state, &s.actor(), &id, patch, None).await {
        Ok(_) => Ok(see_other("/portal/accounts")),
        Err(e) => match refusal(&e) {
            Some(errors) => Ok(account_page(
                s,
                "Edit account",
                &action,
                f,
                &errors,
                status_of(&e),
            )),
            None => Err(e.into()),
        },
    }
}

/// `GET /portal/products`.
async fn list_products(
    s: Session,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, PortalError> {
    require(&s, Action::LicensingRead)?;
    let q = Fields::parse(q.unwrap_or_default().as_bytes());
    let search = q.get("q");
    let items: Vec<_> = state
        .store
        .list_products()
        .await?
        .into_iter()
        .filter(|p| {
            search.is_empty() || matches(search, &[&p.slug, &p.name, &p.features.join(" ")])
        })
        .collect();
    let body = html! {
        h1 { "Products" }
        @if s.may(Action::LicensingWrite) {
            div.actions { a.button href="/portal/products/new" { "New product" } }
        }
        (search_form("/portal/products", "Search products", search))
        div.table-wrap tabindex="0" { table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Slug" } th scope="col" { "Features" } th scope="col" { "Licenses" }
                @if s.may(Action::LicensingWrite) { th scope="col" { "Edit" } } } }
            tbody { @for p in &items { tr {
                td { (p.name) } td.mono { (p.slug) } td { (p.features.join(", ")) }
                td { a href={ "/portal/licenses?product=" (p.slug) } aria-label={ "Licenses for " (p.name) } { "licenses" } }
                @if s.may(Action::LicensingWrite) { td { a href={ "/portal/products/" (p.slug) "/edit" } aria-label={ "Edit " (p.name) } { "edit" } } }
            } } }
        } }
        @if items.is_empty() { p.muted { "No products" @if !search.is_empty() { " match" } "." } }
    };
    Ok(html(page(&s, "Products", Nav::Products, body)))
}

fn product_page(
    s: &Session,
    title: &str,
    action: &str,
    new: bool,
    f: &Fields,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    let body = html! {
        h1 { (title) }
        (errors.summary())
        form method="post" action=(action) novalidate {
            (csrf(s))
            @if new { (input("Slug", "slug", "text", f.get("slug"), errors, Some(Slug::RULE))) }
            (input("Name", "name", "text", f.get("name"), errors, None))
            (textarea("Features", "features", f.get("features"), errors, "The features a license for it may grant, comma-separated"))
            div.actions { button type="submit" { "Save product" } }
        }
    };
    html_status(status, page(s, title, Nav::Products, body))
}

fn features(f: &Fields, errors: &mut Errors) -> Vec<FeatureName> {
    f.get("features")
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            FeatureName::parse(s)
                .map_err(|e| errors.add("features", e))
                .ok()
        })
        .collect()
}

async fn new_product(s: Session) -> Result<Response, PortalError> {
    require(&s, Action::LicensingWrite)?;
    Ok(product_page(
        &s,
        "New product",
        "/portal/products",
        true,
        &Fields::default(),
        &Errors::default(),
        StatusCode::OK,
    ))
}

async fn create_product(
    State(state): State<AppState>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    let mut errors = Errors::default();
    let slug = Slug::parse(f.get("slug"))
        .map_err(|e| errors.add("slug", e))
        .ok();
    let name = text(f, "name", &mut errors);
    let features = features(f, &mut errors);
    let (Some(slug), Some(name), true) = (slug, name, errors.is_empty()) else {
        return Ok(product_page(
            s,
            "New product",
            "/portal/products",
            true,
            f,
            &errors,
            StatusCode::BAD_REQUEST,
        ));
    };
    match products::create(
        &state,
        &s.actor(),
        NewProduct {
            slug,
            name,
            features,
        },
    )
    .await
    {
        Ok(_) => Ok(see_other("/portal/products")),
        Err(e) => match refusal(&e) {
            Some(errors) => Ok(product_page(
                s,
                "New product",
                "/portal/products",
                true,
                f,
                &errors,
                status_of(&e),
            )),
            None => Err(e.into()),
        },
    }
}

async fn edit_product(
    s: Session,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, PortalError> {
    require(&s, Action::LicensingWrite)?;
    let p = products::get(&state, &slug).await?;
    let f = Fields::from_pairs(vec![
        ("name".into(), p.name),
        ("features".into(), p.features.join(", ")),
    ]);
    let action = format!("/portal/products/{slug}/edit");
    Ok(product_page(
        &s,
        &format!("Edit product {slug}"),
        &action,
        false,
        &f,
        &Errors::default(),
        StatusCode::OK,
    ))
}

async fn update_product(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    let (title, action) = (
        format!("Edit product {slug}"),
        format!("/portal/products/{slug}/edit"),
    );
    let mut errors = Errors::default();
    let patch = ProductPatch {
        name: text(f, "name", &mut errors),
        features: Some(features(f, &mut errors)),
    };
    if !errors.is_empty() {
        return Ok(product_page(
            s,
            &title,
            &action,
            false,
            f,
            &errors,
            StatusCode::BAD_REQUEST,
        ));
    }
    match products::update(&state, &s.actor(), &slug, patch, None).await {
        Ok(_) => Ok(see_other("/portal/products")),
        Err(e) => match refusal(&e) {
            Some(errors) => Ok(product_page(
                s,
                &title,
                &action,
                false,
                f,
                &errors,
                status_of(&e),
            )),
            None => Err(e.into()),
        },
    }
}
