//! A license's page: its state and terms, the claims its next token will
//! carry, its instances (push state, usage against `included_users`) and
//! token history; and what is done from it: issue a token and download
//! it as `license.jwt`, bind an instance, change how it is pushed, push now.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use charter_token::now;
use maud::{Markup, html};

use super::form::{Fields, PostForm};
use super::layout::{Errors, Nav, badge, csrf, input, page, select, ts, ts_opt};
use super::session::Session;
use super::{PortalError, html_status, require, see_other};
use crate::api::AppState;
use crate::api::auth::Action;
use crate::domain::{Dialect, Instance, License, LicenseStatus, Page, claims_for};
use crate::licensing::instances::{self, InstancePatch, NewInstance};
use crate::licensing::{accounts, licenses, tokens};
use crate::sealed::Credentials;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal/licenses/{lid}/tokens", post(issue))
        .route(
            "/portal/licenses/{lid}/tokens/{jti}/license.jwt",
            get(download),
        )
        .route("/portal/licenses/{lid}/instances", post(bind))
        .route(
            "/portal/licenses/{lid}/instances/{id}",
            post(update_instance),
        )
        .route("/portal/licenses/{lid}/instances/{id}/push", post(push_now))
}

fn first_page(per_page: i64) -> Page {
    Page {
        page: 1,
        per_page,
        after: None,
    }
}

/// What a page of this license says after a change (`?issued=`, `?saved=`...).
struct Notice {
    issued: Option<String>,
    saved: bool,
    pushed: Option<String>,
}

/// `GET /portal/licenses/{lid}`.
pub async fn show(
    s: Session,
    State(state): State<AppState>,
    Path(lid): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, PortalError> {
    require(&s, Action::LicensingRead)?;
    let q = Fields::parse(q.unwrap_or_default().as_bytes());
    let notice = Notice {
        issued: q.opt("issued").map(str::to_string),
        saved: q.checked("saved"),
        pushed: q.opt("pushed").map(str::to_string),
    };
    render(
        &s,
        &state,
        &lid,
        notice,
        &Errors::default(),
        &Fields::default(),
        StatusCode::OK,
    )
    .await
}

async fn render(
    s: &Session,
    state: &AppState,
    lid: &str,
    notice: Notice,
    errors: &Errors,
    f: &Fields,
    status: StatusCode,
) -> Result<Response, PortalError> {
    let l = licenses::get(state, lid).await?;
    let account = accounts::get(state, &l.account_id).await?;
    let instances = instances::list(state, lid, &first_page(200)).await?.items;
    let history = state.store.list_tokens(lid, &first_page(25)).await?.items;
    let t = now();
    let claims = claims_for(
        &l,
        &account,
        "https://instance.example/",
        &state.config.public_url,
        "(new)".into(),
        t,
    );
    let claims = serde_json::to_string_pretty(&claims).unwrap_or_default();
    let writable = l.status != LicenseStatus::Revoked && s.may(Action::LicensingWrite);
    let title = format!("License {lid}");
    let body = html! {
        h1 { "License " span.mono { (lid) } " " (badge(l.state.as_str())) }
        @if notice.saved { div.notice role="status" { p { "Saved." } } }
        @if let Some(url) = &notice.pushed { div.notice role="status" { p { "Pushed to " (url) ": see its push state below." } } }
        @if let Some(jti) = &notice.issued {
            div.notice role="status" #issued {
                p { "Token " code { (jti) } " issued." }
                @if s.may(Action::LicensingTokens) {
                    p { a.button href={ "/portal/licenses/" (lid) "/tokens/" (jti) "/license.jwt" } download="license.jwt" { "Download license.jwt" } }
                }
            }
        }
        (errors.summary())
        div.actions {
            @if writable { a.button.secondary href={ "/portal/licenses/" (lid) "/edit" } { "Edit terms" } }
            @if l.status == LicenseStatus::Active && s.may(Action::LicensingDelete) {
                a.button.secondary href={ "/portal/licenses/" (lid) "/status/suspend" } { "Suspend" }
            }
            @if l.status == LicenseStatus::Suspended && s.may(Action::LicensingWrite) {
                a.button.secondary href={ "/portal/licenses/" (lid) "/status/resume" } { "Resume" }
            }
            @if l.status != LicenseStatus::Revoked && s.may(Action::LicensingDelete) {
                a.button.danger href={ "/portal/licenses/" (lid) "/status/revoke" } { "Revoke" }
            }
        }
        (facts(&l, &account.company, &account.slug))
        h2 #instances { "Instances (" (instances.len()) " of " (l.max_instances) ")" }
        (instance_table(s, &l, &instances, writable))
        @if writable {
            div.cards {
                (issue_form(s, lid, f, errors))
                (bind_form(s, lid, f, errors))
            }
        }
        h2 #tokens { "Token history" }
        (history_table(s, lid, &history))
        h2 { "Claims the next token will carry" }
        p.hint { "As if issued now; sub is the instance's URL, jti is new for each token." }
        pre tabindex="0" { code { (claims) } }
    };
    Ok(html_status(status, page(s, &title, Nav::Licenses, body)))
}

fn facts(l: &License, company: &str, slug: &str) -> Markup {
    let t = &l.terms;
    html! {
        dl.facts {
            dt { "Account" } dd { (company) " (" (slug) ")" }
            dt { "Status" } dd { (l.status.as_str()) " (state " (l.state.as_str()) ")" }
            dt { "Products" } dd { (t.products.join(", ")) }
            dt { "Valid" } dd { (ts(l.starts_at)) " – " (ts(l.expires_at)) }
            dt { "Seats" } dd { (t.included_users) " " (t.limit_by) ", " (t.included_admins) " admins, " (t.included_viewers) " viewers" }
            @if let Some(o) = &l.over_limit {
                dt { "Over its limit" } dd {
                    (badge("over limit")) " since " (ts(o.since)) ": "
                    @for (name, c) in &o.counters { (c.used) " " (name) " of " (c.included) " included " }
                    "(day of " (ts(o.day)) ")"
                }
            }
            dt { "Features" } dd { @if t.features.is_empty() { "—" } @else { (t.features.join(", ")) } }
            dt { "Limits" } dd { @if t.limits.is_empty() { "—" } @else { @for (k, n) in &t.limits { code { (k) "=" (n) } " " } } }
            dt { "Flags" } dd { @if t.flags.is_empty() { "—" } @else { @for (k, v) in &t.flags { code { (k) "=" (v) } " " } } }
            dt { "Trial / usage billing" } dd { (if t.trial { "trial" } else { "not a trial" }) ", " (if t.usage_billing { "usage billing" } else { "no usage billing" }) }
            dt { "Tokens" } dd { "live " (t.token_ttl_days) " days, renewed every " (t.update_days) " days; warnings " (t.lic_exp_warn_days) " days before the license expires, " (t.tok_exp_warn_days) " before a token does" }
            dt { "Version" } dd { (l.version) ", changed " (ts(l.updated_at)) }
        }
    }
}

/// What a person needs to know of an instance's push.
pub fn push_state(i: &Instance) -> &'static str {
    if !i.push_enabled {
        "off"
    } else if i.removal_pending {
        "removal pending"
    } else if i.push_last_error.is_some() {
        "failing"
    } else if i.push_pending_jti.is_none() && i.push_last_ok_at.is_some() {
        "delivered"
    } else {
        "pending"
    }
}

fn usage_of(l: &License, i: &Instance) -> Markup {
    let used = i
        .usage
        .as_ref()
        .and_then(|u| u.get(&l.terms.limit_by))
        .copied();
    html! {
        @match used {
            Some(n) => {
                (n) " / " (l.terms.included_users) " " (l.terms.limit_by)
                @if n > l.terms.included_users { " " (badge("over limit")) }
                br; span.muted { "reported " (ts_opt(i.usage_reported_at)) }
            }
            None => { span.muted { "none reported" } }
        }
    }
}

fn instance_table(s: &Session, l: &License, list: &[Instance], writable: bool) -> Markup {
    let dialects: Vec<(String, String)> = ["grafana", "consul", "redis"]
        .iter()
        .map(|d| (d.to_string(), d.to_string()))
        .collect();
    html! {
        @if list.is_empty() {
            p.muted { "No instance is bound yet: issuing a token for an instance URL binds it." }
        } @else {
            div.table-wrap tabindex="0" { table #instance-table {
                thead { tr {
                    th scope="col" { "URL" } th scope="col" { "Dialect" } th scope="col" { "Last token" }
                    th scope="col" { "Next renewal" } th scope="col" { "Push" } th scope="col" { "Usage" }
                    @if writable { th scope="col" { "Actions" } }
                } }
                tbody {
                    @for i in list {
                        tr data-instance=(i.url) {
                            td.mono { (i.url) }
                            td { (i.dialect.as_str()) }
                            td { @if let Some(j) = &i.last_jti { code { (j) } br; } span.muted { (ts_opt(i.last_issued_at)) } }
                            td { (ts_opt(i.next_renewal_at)) }
                            td.push-state {
                                (badge(push_state(i)))
                                @if i.push_at_risk { " " (badge("at risk")) }
                                @if let Some(e) = &i.push_last_error { br; span.error-text { (e) } br; span.muted { (i.push_attempts) " attempts" } }
                                @if let Some(ok) = i.push_last_ok_at { br; span.muted { "last delivered " (ts(ok)) } }
                            }
                            td { (usage_of(l, i)) }
                            @if writable {
                                td {
                                    @if i.push_enabled {
                                        form.inline method="post" action={ "/portal/licenses/" (l.lid) "/instances/" (i.id) "/push" } {
                                            (csrf(s))
                                            button.secondary type="submit" aria-label={ "Push now to " (i.url) } { "Push now" }
                                        }
                                    }
                                    details {
                                        summary { "Push settings" }
                                        form method="post" action={ "/portal/licenses/" (l.lid) "/instances/" (i.id) } {
                                            (csrf(s))
                                            @let id = format!("dialect-{}", i.id);
                                            div.field {
                                                label for=(id) { "Dialect" }
                                                select id=(id) name="dialect" {
                                                    @for (v, t) in &dialects { option value=(v) selected[*v == i.dialect.as_str()] { (t) } }
                                                }
                                            }
                                            div.check {
                                                input id={ "push-" (i.id) } type="checkbox" name="push_enabled" value="on" checked[i.push_enabled];
                                                label for={ "push-" (i.id) } { "Push tokens to this instance" }
                                            }
                                            button.secondary type="submit" { "Save push settings" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn issue_form(s: &Session, lid: &str, f: &Fields, errors: &Errors) -> Markup {
    html! {
        form.card method="post" action={ "/portal/licenses/" (lid) "/tokens" } {
            h3 { "Issue a token" }
            (csrf(s))
            (input("Instance URL", "instance", "url", f.get("instance"), errors,
                Some("Its root URL, e.g. https://grafana.example.com/; a new URL is bound if there is room.")))
            button type="submit" { "Issue token" }
        }
    }
}

fn bind_form(s: &Session, lid: &str, f: &Fields, errors: &Errors) -> Markup {
    let dialects: Vec<(String, String)> = [
        ("grafana", "Grafana"),
        ("consul", "Consul"),
        ("redis", "Redis"),
    ]
    .iter()
    .map(|(v, t)| (v.to_string(), t.to_string()))
    .collect();
    html! {
        form.card method="post" action={ "/portal/licenses/" (lid) "/instances" } {
            h3 { "Bind an instance" }
            (csrf(s))
            (input("Instance URL", "url", "url", f.get("url"), errors, None))
            (select("Dialect", "dialect", &dialects, f.opt("dialect").unwrap_or("grafana"), errors))
            (super::layout::checkbox("Push tokens to it", "push_enabled", f.checked("push_enabled")))
            (input("Push user name", "username", "text", f.get("username"), errors, Some("Optional: HTTP Basic credentials for the push")))
            (input("Push password", "password", "password", "", errors, None))
            (input("Push bearer token", "bearer", "password", "", errors, Some("Optional, instead of a user name and password")))
            button type="submit" { "Bind instance" }
        }
    }
}

fn history_table(s: &Session, lid: &str, history: &[crate::domain::TokenRecord]) -> Markup {
    let download = s.may(Action::LicensingTokens);
    html! {
        @if history.is_empty() { p.muted { "No token issued yet." } } @else {
            div.table-wrap tabindex="0" { table {
                thead { tr {
                    th scope="col" { "Token (jti)" } th scope="col" { "Why" } th scope="col" { "Issued" }
                    th scope="col" { "Expires" } th scope="col" { "Key" }
                    @if download { th scope="col" { "File" } }
                } }
                tbody { @for t in history { tr {
                    td.mono { (t.jti) }
                    td { (t.reason.as_str()) }
                    td { (ts(t.iat)) }
                    td { (ts(t.exp)) }
                    td.mono { (t.kid) }
                    @if download { td { a href={ "/portal/licenses/" (lid) "/tokens/" (t.jti) "/license.jwt" } download="license.jwt" aria-label={ "Download token " (t.jti) } { "license.jwt" } } }
                } } }
            } }
        }
    }
}

/// A refused form on this page: shown on it with the error by its field.
async fn refused(
    s: &Session,
    state: &AppState,
    lid: &str,
    e: crate::licensing::Error,
    f: &Fields,
    rename: &[(&str, &str)],
) -> Result<Response, PortalError> {
    let Some((mut field, message)) = super::error::form_error(&e) else {
        return Err(e.into());
    };
    if let Some((_, to)) = rename.iter().find(|(from, _)| *from == field) {
        field = to.to_string();
    }
    let mut errors = Errors::default();
    errors.add(&field, message);
    let status = match e {
        crate::licensing::Error::Conflict(_) => StatusCode::CONFLICT,
        crate::licensing::Error::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    let notice = Notice {
        issued: None,
        saved: false,
        pushed: None,
    };
    render(s, state, lid, notice, &errors, f, status).await
}

/// `POST /portal/licenses/{lid}/tokens`: issues, then shows the download.
async fn issue(
    State(state): State<AppState>,
    Path(lid): Path<String>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    match tokens::issue_for(&state, &s.actor(), &lid, f.get("instance")).await {
        Ok((_, claims)) => Ok(see_other(&format!(
            "/portal/licenses/{lid}?issued={}#issued",
            claims.jti
        ))),
        Err(e) => refused(s, &state, &lid, e, f, &[]).await,
    }
}

/// `GET /portal/licenses/{lid}/tokens/{jti}/license.jwt`: the token as a
/// file. Reading a token's text is audited, as in the API; when the read
/// cannot be recorded the token is not given.
async fn download(
    s: Session,
    State(state): State<AppState>,
    Path((lid, jti)): Path<(String, String)>,
) -> Result<Response, PortalError> {
    require(&s, Action::LicensingTokens)?;
    let token = state
        .store
        .get_token(&jti)
        .await?
        .filter(|t| t.lid == lid)
        .ok_or_else(|| PortalError::not_found(format!("token {jti} of license {lid} not found")))?;
    let mut event = s.principal.event("token.read", "license", lid.as_str());
    event.detail = Some(serde_json::json!({ "jtis": [jti], "via": "portal" }));
    state.store.insert_audit(&event).await?;
    let mut res = ([(header::CONTENT_TYPE, "application/jwt")], token.token).into_response();
    res.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"license.jwt\""),
    );
    Ok(res)
}

/// Push credentials from the bind form: a bearer token, or a user name and
/// password, or none.
fn credentials(f: &Fields) -> Option<Credentials> {
    if let Some(token) = f.opt("bearer") {
        return Some(Credentials::Bearer {
            token: token.to_string(),
        });
    }
    f.opt("username").map(|u| Credentials::Basic {
        username: u.to_string(),
        password: f.raw("password").to_string(),
    })
}

/// `POST /portal/licenses/{lid}/instances`.
async fn bind(
    State(state): State<AppState>,
    Path(lid): Path<String>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    let input = NewInstance {
        url: f.get("url").to_string(),
        dialect: Dialect::parse(f.get("dialect")),
        push_enabled: Some(f.checked("push_enabled")),
        credentials: credentials(f),
    };
    match instances::bind(&state, &s.actor(), &lid, input).await {
        Ok(_) => Ok(see_other(&format!("/portal/licenses/{lid}#instances"))),
        Err(e) => {
            let rename = [
                ("credentials.username", "username"),
                ("credentials.password", "password"),
                ("credentials.token", "bearer"),
            ];
            refused(s, &state, &lid, e, f, &rename).await
        }
    }
}

/// `POST /portal/licenses/{lid}/instances/{id}`: dialect and push.
async fn update_instance(
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let (s, f) = (&form.session, &form.fields);
    require(s, Action::LicensingWrite)?;
    let patch = InstancePatch {
        dialect: Dialect::parse(f.get("dialect")),
        push_enabled: Some(f.checked("push_enabled")),
        credentials: None,
    };
    match instances::update(&state, &s.actor(), &lid, &id, patch, None).await {
        Ok(_) => Ok(see_other(&format!(
            "/portal/licenses/{lid}?saved=1#instances"
        ))),
        Err(e) => refused(s, &state, &lid, e, f, &[]).await,
    }
}

/// `POST /portal/licenses/{lid}/instances/{id}/push`.
async fn push_now(
    State(state): State<AppState>,
    Path((lid, id)): Path<(String, String)>,
    form: PostForm,
) -> Result<Response, PortalError> {
    let s = &form.session;
    require(s, Action::LicensingWrite)?;
    match instances::push_now(&state, &s.actor(), &lid, &id).await {
        Ok(i) => {
            let url: String = url::form_urlencoded::byte_serialize(i.url.as_bytes()).collect();
            Ok(see_other(&format!(
                "/portal/licenses/{lid}?pushed={url}#instances"
            )))
        }
        Err(e) => refused(s, &state, &lid, e, &form.fields, &[]).await,
    }
}
