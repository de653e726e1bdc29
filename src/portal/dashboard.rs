//! The dashboard: how many licenses are active and instances bound, the
//! instances whose pushes fail or are at risk, the licenses inside their
//! expiry warning window, renewals per day (an SVG chart drawn here), and
//! the latest audit events.

use axum::extract::State;
use axum::response::Response;
use charter_token::{DAY, now};
use maud::{Markup, html};

use super::layout::{Nav, badge, page, ts};
use super::session::Session;
use super::{PortalError, html, require};
use crate::api::AppState;
use crate::api::auth::Action;
use crate::domain::{AuditFilter, License, LicenseState, Page};
use crate::licensing::licenses;

/// Days the renewals chart shows.
pub const CHART_DAYS: i64 = 30;
/// Failing instances listed at most (the count has them all).
const FAILING_SHOWN: i64 = 20;
/// Licenses inspected for the expiry warning (active ones expiring within a year).
const EXPIRY_SCAN: i64 = 500;

/// `GET /portal/`.
pub async fn show(s: Session, State(state): State<AppState>) -> Result<Response, PortalError> {
    require(&s, Action::LicensingRead)?;
    let t = now();
    let counts = state.store.license_counts(t).await?;
    let active = counts
        .by_state
        .iter()
        .find(|(k, _)| k == "active")
        .map_or(0, |(_, n)| *n);
    let instances = state.store.count_instances().await?;
    let (failing, at_risk) = state.store.count_push_backoff().await?;
    let failing_list = if failing > 0 {
        state.store.failing_instances(FAILING_SHOWN).await?
    } else {
        Vec::new()
    };
    let expiring = expiring(&state, t).await?;
    let today = t.div_euclid(DAY);
    let renewals = state
        .store
        .renewals_per_day((today - CHART_DAYS + 1) * DAY)
        .await?;
    let events = if s.may(Action::AuditRead) {
        let page = Page {
            page: 1,
            per_page: 10,
            after: None,
        };
        Some(
            state
                .store
                .list_audit(&AuditFilter::default(), &page)
                .await?
                .items,
        )
    } else {
        None
    };
    let body = html! {
        h1 { "Dashboard" }
        div.cards {
            div.card { span.stat #stat-active { (active) } "active licenses" }
            div.card { span.stat #stat-instances { (instances) } "bound instances" }
            div.card { span.stat #stat-failing { (failing) } "instances whose pushes fail" }
            div.card { span.stat #stat-at-risk { (at_risk) } "of them at risk (token expiring)" }
        }
        @if !failing_list.is_empty() {
            h2 { "Instances whose pushes fail" }
            div.table-wrap tabindex="0" { table #failing-table {
                thead { tr { th scope="col" { "Instance" } th scope="col" { "License" } th scope="col" { "Last error" } th.num scope="col" { "Attempts" } th scope="col" { "Next try" } } }
                tbody { @for i in &failing_list { tr {
                    td.mono { (i.url) @if i.push_at_risk { " " (badge("at risk")) } }
                    td { a.mono href={ "/portal/licenses/" (i.lid) "#instances" } { (i.lid) } }
                    td { (i.push_last_error.as_deref().unwrap_or("—")) }
                    td.num { (i.push_attempts) }
                    td { (super::layout::ts_opt(i.push_next_at)) }
                } } }
            } }
        }
        h2 { "Renewals per day, last " (CHART_DAYS) " days" }
        (chart(&renewals, today))
        h2 { "Licenses expiring within their warning window" }
        @if expiring.is_empty() {
            p.muted { "None." }
        } @else {
            div.table-wrap tabindex="0" { table {
                thead { tr { th scope="col" { "License" } th scope="col" { "Expires" } th scope="col" { "Warning window" } } }
                tbody {
                    @for l in &expiring {
                        tr {
                            td { a.mono href={ "/portal/licenses/" (l.lid) } { (l.lid) } }
                            td { (ts(l.expires_at)) " " (badge("expiring")) }
                            td { (l.terms.lic_exp_warn_days) " days" }
                        }
                    }
                }
            } }
        }
        @if let Some(events) = events {
            h2 { "Latest audit events" }
            (super::access::audit_table(&events))
            p { a href="/portal/audit" { "All audit events" } }
        }
    };
    Ok(html(page(&s, "Dashboard", Nav::Dashboard, body)))
}

/// Active licenses that expire within their own `lic_exp_warn_days`.
async fn expiring(state: &AppState, t: i64) -> Result<Vec<License>, PortalError> {
    let page = Page {
        page: 1,
        per_page: EXPIRY_SCAN,
        after: None,
    };
    let year = crate::domain::rfc3339::format(t + 365 * DAY);
    let listing = licenses::list(
        state,
        None,
        None,
        Some(LicenseState::Active),
        Some(&year),
        &page,
    )
    .await?;
    let mut found: Vec<License> = listing
        .items
        .into_iter()
        .filter(|l| l.expires_at - t <= l.terms.lic_exp_warn_days.saturating_mul(DAY))
        .collect();
    found.sort_by_key(|l| l.expires_at);
    Ok(found)
}

/// Renewals per day as an SVG bar chart: one bar per day of the last
/// [`CHART_DAYS`] up to `today` (days since the epoch), each with its
/// date and count as a tooltip, and the same figures as a table for
/// screen readers.
pub fn chart(per_day: &[(i64, i64)], today: i64) -> Markup {
    let first = today - CHART_DAYS + 1;
    let counts: Vec<(i64, i64)> = (first..=today)
        .map(|d| {
            let n = per_day
                .iter()
                .find(|(day, _)| *day == d)
                .map_or(0, |(_, n)| *n);
            (d, n)
        })
        .collect();
    let max = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let total: i64 = counts.iter().map(|(_, n)| *n).sum();
    let (w, h, left, bottom, top) = (900.0_f64, 220.0_f64, 40.0_f64, 24.0_f64, 10.0_f64);
    let slot = (w - left) / CHART_DAYS as f64;
    let plot = h - bottom - top;
    let label = format!(
        "Renewals per day over the last {CHART_DAYS} days: {total} in all, at most {max} a day"
    );
    html! {
        svg.chart #renewals-chart role="img" aria-label=(label) viewBox={ "0 0 " (w) " " (h) }
            xmlns="http://www.w3.org/2000/svg" {
            line.axis x1=(left) y1=(h - bottom) x2=(w) y2=(h - bottom) {}
            line.axis x1=(left) y1=(top) x2=(left) y2=(h - bottom) {}
            text x=(left - 6.0) y=(top + 4.0) text-anchor="end" { (max) }
            text x=(left - 6.0) y=(h - bottom) text-anchor="end" { "0" }
            @for (i, (day, n)) in counts.iter().enumerate() {
                @let bh = plot * (*n as f64) / (max as f64);
                @let x = left + slot * i as f64 + 2.0;
                rect.bar x=(format!("{x:.1}")) y=(format!("{:.1}", h - bottom - bh))
                    width=(format!("{:.1}", slot - 4.0)) height=(format!("{bh:.1}"))
                    data-day=(super::layout::date(day * DAY)) data-count=(n) {
                    title { (super::layout::date(day * DAY)) ": " (n) " renewals" }
                }
                @if (counts.len() - 1 - i).is_multiple_of(7) {
                    text x=(format!("{:.1}", x + slot / 2.0)) y=(h - 6.0) text-anchor="middle" {
                        (super::layout::date(day * DAY).get(5..).unwrap_or(""))
                    }
                }
            }
        }
        details {
            summary { "Renewals per day as a table" }
            div.table-wrap tabindex="0" { table {
                thead { tr { th scope="col" { "Day" } th.num scope="col" { "Renewals" } } }
                tbody { @for (day, n) in &counts { tr { td { (super::layout::date(day * DAY)) } td.num { (n) } } } }
            } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_a_bar_per_day_scaled_to_the_busiest() {
        let today = 20_000;
        let svg = chart(&[(today - 1, 4), (today, 2)], today).into_string();
        assert_eq!(svg.matches("<rect").count(), CHART_DAYS as usize);
        assert!(svg.contains("data-count=\"4\""));
        // The busiest day is full height (220 - 24 - 10 = 186), the other half.
        assert!(svg.contains("height=\"186.0\""));
        assert!(svg.contains("height=\"93.0\""));
        assert!(svg.contains("6 in all"));
    }
}
