//! The page frame (header, navigation by role, sign-out) and the pieces
//! forms are made of: labelled fields with their errors beside them.

use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use crate::api::auth::Action;
use crate::domain::rfc3339;

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Licenses,
    Accounts,
    Products,
    ServiceAccounts,
    Audit,
    Keys,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Charter" }
            link rel="stylesheet" href="/portal/static/portal.css";
        }
    }
}

/// A page of a signed-in session.
pub fn page(s: &Session, title: &str, nav: Nav, body: Markup) -> Markup {
    let items: Vec<(Nav, &str, &str)> = [
        (
            Nav::Dashboard,
            "/portal/",
            "Dashboard",
            Action::LicensingRead,
        ),
        (
            Nav::Licenses,
            "/portal/licenses",
            "Licenses",
            Action::LicensingRead,
        ),
        (
            Nav::Accounts,
            "/portal/accounts",
            "Accounts",
            Action::LicensingRead,
        ),
        (
            Nav::Products,
            "/portal/products",
            "Products",
            Action::LicensingRead,
        ),
        (
            Nav::ServiceAccounts,
            "/portal/serviceaccounts",
            "Service accounts",
            Action::ServiceAccountsRead,
        ),
        (Nav::Audit, "/portal/audit", "Audit", Action::AuditRead),
        (Nav::Keys, "/portal/keys", "Signing keys", Action::KeysRead),
    ]
    .into_iter()
    .filter(|(_, _, _, a)| s.may(*a))
    .map(|(n, href, label, _)| (n, href, label))
    .collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/portal/" { "Charter" }
                    nav aria-label="Main" {
                        ul {
                            @for (n, href, label) in &items {
                                li {
                                    @if *n == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span { (s.name()) " · " (s.role()) }
                        form method="post" action="/portal/logout" {
                            (csrf(s))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    (body)
                }
            }
        }
    }
}

/// A page without a session (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/portal/" { "Charter" } }
                main #main { (body) }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A time for people: `2026-01-31 12:00 UTC`.
pub fn ts(secs: i64) -> String {
    let s = rfc3339::format(secs);
    // 2026-01-31T12:00:00Z -> 2026-01-31 12:00 UTC
    match (s.get(..10), s.get(11..16)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => s,
    }
}

pub fn ts_opt(secs: Option<i64>) -> String {
    secs.map_or_else(|| "—".to_string(), ts)
}

/// The date part (`YYYY-MM-DD`) of a time, for date inputs.
pub fn date(secs: i64) -> String {
    rfc3339::format(secs).chars().take(10).collect()
}

/// Errors of a submitted form: `(field, message)`; field `""` is about the
/// whole form.
#[derive(Debug, Clone, Default)]
pub struct Errors(pub Vec<(String, String)>);

impl Errors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_string(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The messages about `name` (or a part of it, `name.key`).
    pub fn of(&self, name: &str) -> Option<String> {
        let found: Vec<&str> = self
            .0
            .iter()
            .filter(|(f, _)| {
                f == name
                    || f.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|(f, m)| if f == name { m.as_str() } else { f.as_str() })
            .collect();
        (!found.is_empty()).then(|| found.join("; "))
    }

    /// The summary above a form: every error, naming its field.
    pub fn summary(&self) -> Markup {
        html! {
            @if !self.0.is_empty() {
                div.alert role="alert" {
                    p { "Please correct the following:" }
                    ul {
                        @for (f, m) in &self.0 {
                            li {
                                @if f.is_empty() { (m) } @else {
                                    a href={ "#f-" (f.split('.').next().unwrap_or(f)) } { (f) } ": " (m)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An input with its label, hint and error.
pub fn input(
    label: &str,
    name: &str,
    kind: &str,
    value: &str,
    errors: &Errors,
    hint: Option<&str>,
) -> Markup {
    let id = format!("f-{name}");
    let error = errors.of(name);
    let described = match (hint.is_some(), error.is_some()) {
        (true, true) => Some(format!("{id}-hint {id}-error")),
        (true, false) => Some(format!("{id}-hint")),
        (false, true) => Some(format!("{id}-error")),
        (false, false) => None,
    };
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) type=(kind) name=(name) value=(value)
                aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[described];
            @if let Some(h) = hint { p.hint id={ (id) "-hint" } { (h) } }
            @if let Some(e) = &error { p.error-text id={ (id) "-error" } { (label) ": " (e) } }
        }
    }
}

/// A multi-line text field with its label, hint and error.
pub fn textarea(label: &str, name: &str, value: &str, errors: &Errors, hint: &str) -> Markup {
    let id = format!("f-{name}");
    let error = errors.of(name);
    html! {
        div.field {
            label for=(id) { (label) }
            textarea id=(id) name=(name) rows="3"
                aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby={ (id) "-hint" } { (value) }
            p.hint id={ (id) "-hint" } { (hint) }
            @if let Some(e) = &error { p.error-text { (label) ": " (e) } }
        }
    }
}

/// A checkbox with its label.
pub fn checkbox(label: &str, name: &str, checked: bool) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.check {
            input id=(id) type="checkbox" name=(name) value="on" checked[checked];
            label for=(id) { (label) }
        }
    }
}

/// A select with its label and error; `options` are `(value, text)`.
pub fn select(
    label: &str,
    name: &str,
    options: &[(String, String)],
    selected: &str,
    errors: &Errors,
) -> Markup {
    let id = format!("f-{name}");
    let error = errors.of(name);
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-invalid=[error.as_ref().map(|_| "true")] {
                @for (v, t) in options {
                    option value=(v) selected[v == selected] { (t) }
                }
            }
            @if let Some(e) = &error { p.error-text { (label) ": " (e) } }
        }
    }
}

/// A pager: a link to the next page when there is one.
pub fn pager(next: Option<String>) -> Markup {
    html! {
        @if let Some(href) = next {
            nav.pager aria-label="Pages" { a href=(href) { "Next page →" } }
        }
    }
}

/// A status badge.
pub fn badge(text: &str) -> Markup {
    html! { span class={ "badge badge-" (text.replace(' ', "-")) } { (text) } }
}
