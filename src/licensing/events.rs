//! The events the use cases announce, one builder per type, so that every
//! payload of a type has one shape (documented in the README's "Events"
//! table). Payloads never carry a secret: no token text, no credentials.

use charter_token::now;
use serde_json::{Value, json};

use super::Licensing;
use crate::db::events::Notice;
use crate::domain::{Instance, License, LicenseStatus, NewEvent, TokenReason, TokenRecord};

/// The license as its events show it: as the API shows it, at `t`.
fn license(l: &License, t: i64) -> Value {
    serde_json::to_value(super::licenses::view(l.clone(), t)).unwrap_or(Value::Null)
}

pub fn license_created(l: &License) -> NewEvent {
    NewEvent::new("license.created", json!({ "license": license(l, now()) }))
}

/// `changes`: the audit detail's field-by-field changes.
pub fn license_updated(l: &License, changes: &Value) -> NewEvent {
    NewEvent::new(
        "license.updated",
        json!({ "license": license(l, now()), "changes": changes }),
    )
}

/// `l` with its new status.
pub fn license_status(l: &License, from: LicenseStatus) -> NewEvent {
    let kind = match l.status {
        LicenseStatus::Active => "license.resumed",
        LicenseStatus::Suspended => "license.suspended",
        LicenseStatus::Revoked => "license.revoked",
    };
    NewEvent::new(
        kind,
        json!({ "license": license(l, now()), "previous_status": from.as_str() }),
    )
}

pub fn license_notice(l: &License, notice: Notice, t: i64) -> NewEvent {
    let kind = match notice {
        Notice::Expiring => "license.expiring",
        Notice::Expired => "license.expired",
    };
    let days_left = ((l.expires_at - t) as f64 / 86_400.0).ceil().max(0.0) as i64;
    NewEvent::new(
        kind,
        json!({ "license": license(l, t), "days_left": days_left }),
    )
}

/// `l` with its new `over_limit` (set: over; `None`: back within).
pub fn license_limit(l: &License, t: i64) -> NewEvent {
    let kind = if l.over_limit.is_some() {
        "license.over_limit"
    } else {
        "license.back_within_limit"
    };
    NewEvent::new(kind, json!({ "license": license(l, t) }))
}

pub fn instance_bound(i: &Instance) -> NewEvent {
    NewEvent::new(
        "instance.bound",
        json!({ "lid": i.lid, "instance": instance(i) }),
    )
}

pub fn instance_unbound(lid: &str, id: &str, url: Option<&str>) -> NewEvent {
    NewEvent::new(
        "instance.unbound",
        json!({ "lid": lid, "instance": { "id": id, "url": url } }),
    )
}

/// At risk (`true`) or recovered.
pub fn push_risk(i: &Instance, at_risk: bool, error: Option<&str>) -> NewEvent {
    let kind = if at_risk {
        "instance.push_at_risk"
    } else {
        "instance.push_recovered"
    };
    NewEvent::new(
        kind,
        json!({
            "lid": i.lid,
            "instance": instance(i),
            "error": error,
        }),
    )
}

/// `token.issued` (issued to an instance by a person or a service
/// account) or `token.renewed` (renewed by the instance, or pushed).
pub fn token(t: &TokenRecord, url: &str) -> NewEvent {
    let kind = match t.reason {
        TokenReason::Issue => "token.issued",
        _ => "token.renewed",
    };
    NewEvent::new(
        kind,
        json!({
            "lid": t.lid,
            "instance": { "id": t.instance_id, "url": url },
            "jti": t.jti,
            "kid": t.kid,
            "reason": t.reason.as_str(),
            "renewed_from": t.renewed_from,
            "iat": crate::domain::rfc3339::format(t.iat),
            "exp": crate::domain::rfc3339::format(t.exp),
        }),
    )
}

fn instance(i: &Instance) -> Value {
    json!({
        "id": i.id,
        "url": i.url,
        "dialect": i.dialect.as_str(),
        "push_enabled": i.push_enabled,
    })
}

/// The scheduled announcements: licenses entering their warning window
/// and licenses expiring, each once per license and expiry (also with
/// several replicas: [`crate::db::EventStore::record_notice`] decides).
/// Returns how many it announced.
pub async fn announce_expiries(ctx: &Licensing, t: i64) -> crate::db::Result<u64> {
    const BATCH: i64 = 500;
    let mut announced = 0;
    for notice in [Notice::Expiring, Notice::Expired] {
        loop {
            let due = ctx.store.notices_due(notice, t, BATCH).await?;
            let n = due.len() as i64;
            let mut recorded = 0;
            for l in due {
                let event = license_notice(&l, notice, t);
                if ctx
                    .store
                    .record_notice(&l.lid, notice, l.expires_at, t, &event)
                    .await?
                {
                    recorded += 1;
                    tracing::info!(lid = %l.lid, notice = notice.as_str(), "license notice");
                }
            }
            announced += recorded;
            // Another replica recording the same batch: the next query
            // no longer returns what it recorded.
            if n < BATCH {
                break;
            }
        }
    }
    Ok(announced)
}
