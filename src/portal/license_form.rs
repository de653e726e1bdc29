//! The license form (create and edit): what it shows, and how its fields
//! become the API's [`LicenseInput`], each mistake named by its field.

use std::collections::BTreeMap;

use maud::{Markup, html};

use super::form::Fields;
use super::layout::{Errors, checkbox, csrf, date, input, select, textarea};
use super::session::Session;
use crate::domain::{Account, FeatureName, License, Product, Slug};
use crate::licensing::licenses::LicenseInput;

/// The form's values for an existing license (edit).
pub fn values_of(l: &License) -> Fields {
    let t = &l.terms;
    let mut v: Vec<(String, String)> = vec![
        ("account_id".into(), l.account_id.clone()),
        ("starts_at".into(), date(l.starts_at)),
        ("expires_at".into(), date(l.expires_at)),
        ("max_instances".into(), l.max_instances.to_string()),
        ("limit_by".into(), t.limit_by.clone()),
        ("included_users".into(), t.included_users.to_string()),
        ("included_admins".into(), t.included_admins.to_string()),
        ("included_viewers".into(), t.included_viewers.to_string()),
        (
            "max_concurrent_user_sessions".into(),
            t.max_concurrent_user_sessions.to_string(),
        ),
        ("anonymous_ratio".into(), t.anonymous_ratio.to_string()),
        ("features".into(), t.features.join(", ")),
        (
            "limits".into(),
            t.limits
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "flags".into(),
            t.flags
                .iter()
                .map(|(k, s)| format!("{k}={s}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("details_url".into(), t.details_url.clone()),
        ("lic_exp_warn_days".into(), t.lic_exp_warn_days.to_string()),
        ("tok_exp_warn_days".into(), t.tok_exp_warn_days.to_string()),
        ("update_days".into(), t.update_days.to_string()),
        ("token_ttl_days".into(), t.token_ttl_days.to_string()),
    ];
    v.extend(t.products.iter().map(|p| ("products".into(), p.clone())));
    if t.trial {
        v.push(("trial".into(), "on".into()));
    }
    if t.usage_billing {
        v.push(("usage_billing".into(), "on".into()));
    }
    Fields::from_pairs(v)
}

/// The form's values for a new license: the defaults the API applies.
pub fn defaults(token_ttl_days: i64, now: i64) -> Fields {
    Fields::from_pairs(vec![
        ("starts_at".into(), date(now)),
        ("expires_at".into(), date(now + 365 * 86_400)),
        ("max_instances".into(), "1".into()),
        ("limit_by".into(), "users".into()),
        ("lic_exp_warn_days".into(), "30".into()),
        ("tok_exp_warn_days".into(), "3".into()),
        ("update_days".into(), "1".into()),
        ("token_ttl_days".into(), token_ttl_days.to_string()),
    ])
}

fn int(f: &Fields, name: &str, errors: &mut Errors) -> Option<i64> {
    let v = f.opt(name)?;
    match v.parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.add(name, format!("{v:?} is not a whole number"));
            None
        }
    }
}

/// A date input (`YYYY-MM-DD`) as RFC 3339 midnight UTC.
fn day(f: &Fields, name: &str, errors: &mut Errors) -> Option<String> {
    let v = f.opt(name)?;
    let text = format!("{v}T00:00:00Z");
    match crate::domain::rfc3339::parse(&text) {
        Ok(_) => Some(text),
        Err(_) => {
            errors.add(name, format!("{v:?} is not a date (YYYY-MM-DD)"));
            None
        }
    }
}

fn slug(name: &str, v: &str, errors: &mut Errors) -> Option<Slug> {
    Slug::parse(v).map_err(|e| errors.add(name, e)).ok()
}

/// `key=value` lines.
fn pairs<'a>(name: &str, text: &'a str, errors: &mut Errors) -> Vec<(Slug, &'a str)> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some((k, v)) => {
                if let Some(k) = slug(name, k.trim(), errors) {
                    out.push((k, v.trim()));
                }
            }
            None => errors.add(name, format!("{line:?} is not name=value")),
        }
    }
    out
}

/// The submitted form as the API's input. On edit (`current` given) the
/// dates are sent only when changed, so that editing other terms of a
/// license whose dates have passed is not refused for them.
pub fn to_input(f: &Fields, current: Option<&License>, errors: &mut Errors) -> LicenseInput {
    let products: Vec<Slug> = f
        .all("products")
        .into_iter()
        .filter_map(|p| slug("products", p, errors))
        .collect();
    if products.is_empty() {
        errors.add("products", "choose at least one product");
    }
    let features: Vec<FeatureName> = f
        .get("features")
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            FeatureName::parse(s)
                .map_err(|e| errors.add("features", e))
                .ok()
        })
        .collect();
    let mut limits = BTreeMap::new();
    for (k, v) in pairs("limits", f.get("limits"), errors) {
        match v.parse::<i64>() {
            Ok(n) => {
                limits.insert(k, n);
            }
            Err(_) => errors.add("limits", format!("{k}: {v:?} is not a whole number")),
        }
    }
    let flags: BTreeMap<Slug, String> = pairs("flags", f.get("flags"), errors)
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    let changed =
        |name: &str, old: Option<i64>| -> bool { old.is_none_or(|old| f.get(name) != date(old)) };
    let starts_at = if changed("starts_at", current.map(|l| l.starts_at)) {
        day(f, "starts_at", errors)
    } else {
        None
    };
    let expires_at = if changed("expires_at", current.map(|l| l.expires_at)) {
        day(f, "expires_at", errors)
    } else {
        None
    };
    if current.is_none() && f.opt("expires_at").is_none() {
        errors.add("expires_at", "is required");
    }
    let limit_by = f.opt("limit_by").and_then(|v| slug("limit_by", v, errors));
    LicenseInput {
        account_id: if current.is_none() {
            Some(f.get("account_id").to_string()).filter(|s| !s.is_empty())
        } else {
            None
        },
        products: Some(products),
        starts_at,
        expires_at,
        max_instances: int(f, "max_instances", errors),
        limit_by,
        included_users: int(f, "included_users", errors),
        included_admins: int(f, "included_admins", errors),
        included_viewers: int(f, "included_viewers", errors),
        max_concurrent_user_sessions: int(f, "max_concurrent_user_sessions", errors),
        anonymous_ratio: int(f, "anonymous_ratio", errors),
        limits: Some(limits),
        features: Some(features),
        flags: Some(flags),
        trial: Some(f.checked("trial")),
        usage_billing: Some(f.checked("usage_billing")),
        details_url: Some(f.get("details_url").to_string()),
        lic_exp_warn_days: int(f, "lic_exp_warn_days", errors),
        tok_exp_warn_days: int(f, "tok_exp_warn_days", errors),
        update_days: int(f, "update_days", errors),
        token_ttl_days: int(f, "token_ttl_days", errors),
    }
}

/// The form; `action` is where it posts, `accounts` `None` on edit (the
/// account cannot change).
pub fn render(
    s: &Session,
    action: &str,
    f: &Fields,
    errors: &Errors,
    accounts: Option<&[Account]>,
    products: &[Product],
) -> Markup {
    let chosen = f.all("products");
    let granted: Vec<&str> = products
        .iter()
        .flat_map(|p| p.features.iter().map(String::as_str))
        .collect();
    html! {
        (errors.summary())
        form method="post" action=(action) novalidate {
            (csrf(s))
            fieldset {
                legend { "Customer and products" }
                @if let Some(accounts) = accounts {
                    @let options: Vec<(String, String)> = std::iter::once((String::new(), "Choose an account".to_string()))
                        .chain(accounts.iter().map(|a| (a.id.clone(), format!("{} ({})", a.company, a.slug))))
                        .collect();
                    (select("Account", "account_id", &options, f.get("account_id"), errors))
                }
                fieldset #f-products aria-describedby="f-products-hint" {
                    legend { "Products" }
                    @if products.is_empty() {
                        p { "No products yet: " a href="/portal/products/new" { "create one" } " first." }
                    }
                    @for p in products {
                        div.check {
                            input id={ "f-products-" (p.slug) } type="checkbox" name="products" value=(p.slug)
                                checked[chosen.contains(&p.slug.as_str())];
                            label for={ "f-products-" (p.slug) } { (p.name) " (" (p.slug) ")" }
                        }
                    }
                    p.hint #f-products-hint { "At least one." }
                    @if let Some(e) = errors.of("products") { p.error-text { "Products: " (e) } }
                }
                (textarea("Features", "features", f.get("features"), errors,
                    &format!("Comma-separated; each must be granted by a chosen product. Known: {}", if granted.is_empty() { "none".to_string() } else { granted.join(", ") })))
            }
            fieldset {
                legend { "Dates and instances" }
                div.grid2 {
                    (input("Starts", "starts_at", "date", f.get("starts_at"), errors, Some("UTC, midnight")))
                    (input("Expires", "expires_at", "date", f.get("expires_at"), errors, Some("UTC, midnight")))
                    (input("Max instances", "max_instances", "number", f.get("max_instances"), errors, None))
                    (input("Token lifetime (days)", "token_ttl_days", "number", f.get("token_ttl_days"), errors, None))
                    (input("Renewal interval (days)", "update_days", "number", f.get("update_days"), errors, None))
                    (input("License expiry warning (days)", "lic_exp_warn_days", "number", f.get("lic_exp_warn_days"), errors, None))
                    (input("Token expiry warning (days)", "tok_exp_warn_days", "number", f.get("tok_exp_warn_days"), errors, None))
                }
            }
            fieldset {
                legend { "Seats" }
                div.grid2 {
                    (input("Limit by", "limit_by", "text", f.get("limit_by"), errors, Some("What included users counts, e.g. users or active_users")))
                    (input("Included users", "included_users", "number", f.get("included_users"), errors, None))
                    (input("Included admins", "included_admins", "number", f.get("included_admins"), errors, None))
                    (input("Included viewers", "included_viewers", "number", f.get("included_viewers"), errors, None))
                    (input("Max concurrent user sessions", "max_concurrent_user_sessions", "number", f.get("max_concurrent_user_sessions"), errors, None))
                    (input("Anonymous ratio", "anonymous_ratio", "number", f.get("anonymous_ratio"), errors, None))
                }
            }
            fieldset {
                legend { "Limits, flags and options" }
                (textarea("Limits", "limits", f.get("limits"), errors, "One name=number a line, e.g. shards_limit=4"))
                (textarea("Flags", "flags", f.get("flags"), errors, "One name=value a line, e.g. package=premium"))
                (input("Details URL", "details_url", "url", f.get("details_url"), errors, None))
                (checkbox("Trial", "trial", f.checked("trial")))
                (checkbox("Usage billing", "usage_billing", f.checked("usage_billing")))
            }
            div.actions { button type="submit" { "Save license" } }
        }
    }
}
