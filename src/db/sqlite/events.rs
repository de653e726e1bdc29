//! SQLite: events, webhooks and their deliveries (see [`crate::db::events`]).

use std::sync::LazyLock;

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{Cached, SqliteStore, access, all, json, list, one, stale_or_missing};
use crate::db::events::{self as ev, EventStore, Notice};
use crate::db::{Result, StoreError, rows, sql};
use crate::domain::events::{DeliveryJob, DeliveryOutcome};
use crate::domain::{AuditEvent, Delivery, License, Listing, NewEvent, Page, Webhook};

const INSERT_EVENT: &str =
    "INSERT INTO events (uid, type, at, payload) VALUES (?1, ?2, ?3, ?4) RETURNING id";

/// Records `e` at `at` with its deliveries, in the open transaction `c`.
/// An on-demand event nobody subscribes to is not recorded (`None`).
pub(super) fn insert_event(c: &Connection, e: &NewEvent, at: i64) -> Result<Option<i64>> {
    if e.on_demand() && one(c, ev::SUBSCRIBED, [e.kind], |_| Ok(()))?.is_none() {
        return Ok(None);
    }
    let id: i64 = c.row(
        INSERT_EVENT,
        params![NewEvent::new_uid(), e.kind, at, json(&e.payload)?],
        |r| r.get(0),
    )?;
    c.exec(ev::FAN_OUT, params![id, at, e.kind])?;
    Ok(Some(id))
}

/// The events an audit event carries.
pub(super) fn insert_events(c: &Connection, audit: &AuditEvent) -> Result<()> {
    for e in &audit.events {
        insert_event(c, e, audit.at)?;
    }
    Ok(())
}

static EXPIRING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM licenses l WHERE status = 'active' AND expires_at > ?1 \
         AND expires_at - 86400 * json_extract(terms, '$.lic_exp_warn_days') <= ?1 \
         AND NOT EXISTS (SELECT 1 FROM license_notices n WHERE n.lid = l.lid \
         AND n.kind = 'expiring' AND n.expires_at = l.expires_at) ORDER BY expires_at LIMIT ?2",
        sql::LICENSE_COLS
    )
});

static EXPIRED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM licenses l WHERE status = 'active' AND expires_at <= ?1 \
         AND expires_at > ?1 - {} AND NOT EXISTS (SELECT 1 FROM license_notices n \
         WHERE n.lid = l.lid AND n.kind = 'expired' AND n.expires_at = l.expires_at) \
         ORDER BY expires_at LIMIT ?2",
        sql::LICENSE_COLS,
        ev::EXPIRED_LOOKBACK
    )
});

fn get_webhook(c: &Connection, id: &str) -> Result<Option<Webhook>> {
    one(c, ev::GET_WEBHOOK, [id], |r| ev::webhook(r))
}

fn subscribe(c: &Connection, w: &Webhook) -> Result<()> {
    c.exec(ev::DELETE_SUBSCRIPTIONS, [&w.id])?;
    for t in &w.event_types {
        c.exec(ev::INSERT_SUBSCRIPTION, params![t, w.id])?;
    }
    Ok(())
}

fn webhook_not_found(id: &str) -> String {
    format!("webhook {id} not found")
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn create_webhook(
        &self,
        w: &Webhook,
        sealed_secret: &str,
        audit: &AuditEvent,
    ) -> Result<()> {
        let (w, secret, audit) = (w.clone(), sealed_secret.to_string(), audit.clone());
        self.write(move |c| {
            c.exec(
                ev::INSERT_WEBHOOK,
                params![
                    w.id,
                    w.url,
                    w.description,
                    json(&w.event_types)?,
                    w.enabled,
                    secret,
                    w.created_at
                ],
            )?;
            subscribe(c, &w)?;
            access::insert_audit(c, &audit)
        })
        .await
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        let id = id.to_string();
        self.read(move |c| get_webhook(c, &id)).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.read(|c| all(c, ev::LIST_WEBHOOKS, [], |r| ev::webhook(r)))
            .await
    }

    async fn update_webhook(
        &self,
        w: &Webhook,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Webhook> {
        let (w, audit) = (w.clone(), audit.clone());
        self.write(move |c| {
            let updated = one(
                c,
                ev::UPDATE_WEBHOOK,
                params![
                    w.id,
                    w.url,
                    w.description,
                    json(&w.event_types)?,
                    w.enabled,
                    w.disabled_reason,
                    w.updated_at,
                    version
                ],
                |r| ev::webhook(r),
            )?;
            let Some(updated) = updated else {
                return Err(stale_or_missing(
                    c,
                    ev::WEBHOOK_EXISTS,
                    [&w.id],
                    "webhook",
                    || webhook_not_found(&w.id),
                ));
            };
            subscribe(c, &updated)?;
            access::insert_audit(c, &audit)?;
            Ok(updated)
        })
        .await
    }

    async fn rotate_webhook_secret(
        &self,
        id: &str,
        sealed_secret: &str,
        previous_until: i64,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Webhook> {
        let (id, secret, audit) = (id.to_string(), sealed_secret.to_string(), audit.clone());
        self.write(move |c| {
            let w = one(
                c,
                ev::ROTATE_SECRET,
                params![id, secret, previous_until, now],
                |r| ev::webhook(r),
            )?
            .ok_or_else(|| StoreError::NotFound(webhook_not_found(&id)))?;
            access::insert_audit(c, &audit)?;
            Ok(w)
        })
        .await
    }

    async fn delete_webhook(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        let (id, audit) = (id.to_string(), audit.clone());
        self.write(move |c| {
            c.exec(ev::DELETE_DELIVERIES, [&id])?;
            c.exec(ev::DELETE_SUBSCRIPTIONS, [&id])?;
            if c.exec(ev::DELETE_WEBHOOK, [&id])? == 0 {
                return Ok(false);
            }
            access::insert_audit(c, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> Result<Listing<Delivery>> {
        let q = ev::deliveries_query(webhook_id, page);
        let page = page.clone();
        self.read(move |c| list(c, &q, &page, |r| ev::delivery(r)))
            .await
    }

    async fn queue_test_event(
        &self,
        webhook_id: &str,
        event: &NewEvent,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Delivery> {
        let (id, event, audit) = (webhook_id.to_string(), event.clone(), audit.clone());
        self.write(move |c| {
            if get_webhook(c, &id)?.is_none() {
                return Err(StoreError::NotFound(webhook_not_found(&id)));
            }
            let event_id: i64 = c.row(
                INSERT_EVENT,
                params![NewEvent::new_uid(), event.kind, now, json(&event.payload)?],
                |r| r.get(0),
            )?;
            let delivery: i64 = c.row(ev::INSERT_DELIVERY, params![id, event_id, now], |r| {
                r.get(0)
            })?;
            access::insert_audit(c, &audit)?;
            let q = format!(
                "SELECT {} FROM {} WHERE d.id = ?1",
                ev::DELIVERY_COLS,
                ev::DELIVERY_FROM
            );
            one(c, &q, [delivery], |r| ev::delivery(r))?
                .ok_or_else(|| StoreError::Internal("the test delivery vanished".into()))
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryJob>> {
        let owner = owner.to_string();
        self.write(move |c| {
            let ids: Vec<i64> = all(c, ev::DUE, params![now, limit], |r| {
                r.get(0).map_err(Into::into)
            })?;
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                c.exec(
                    "UPDATE webhook_deliveries SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
                    params![id, owner, lease_until],
                )?;
                if let Some(job) = one(c, ev::JOB, [id], |r| ev::job(r))? {
                    jobs.push(job);
                }
            }
            Ok(jobs)
        })
        .await
    }

    async fn finish_delivery(
        &self,
        id: i64,
        owner: &str,
        outcome: &DeliveryOutcome,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let (owner, o, audit) = (owner.to_string(), outcome.clone(), audit.clone());
        self.write(move |c| {
            let done = c.exec(
                ev::FINISH,
                params![
                    id,
                    owner,
                    o.state.as_str(),
                    o.attempts,
                    o.next_at,
                    o.last_status,
                    o.last_error,
                    o.at
                ],
            )? > 0;
            if done
                && let Some(d) = &o.disable
                && c.exec(
                    ev::DISABLE,
                    params![id, d.reason, o.at, d.unless_delivered_since],
                )? > 0
            {
                access::insert_audit(c, &audit)?;
            }
            Ok(done)
        })
        .await
    }

    async fn notices_due(&self, notice: Notice, now: i64, limit: i64) -> Result<Vec<License>> {
        self.read(move |c| {
            let q: &str = match notice {
                Notice::Expiring => &EXPIRING,
                Notice::Expired => &EXPIRED,
            };
            all(c, q, params![now, limit], |r| rows::license(r))
        })
        .await
    }

    async fn record_notice(
        &self,
        lid: &str,
        notice: Notice,
        expires_at: i64,
        now: i64,
        event: &NewEvent,
    ) -> Result<bool> {
        let (lid, event) = (lid.to_string(), event.clone());
        self.write(move |c| {
            if c.exec(ev::NOTICE, params![lid, notice.as_str(), expires_at, now])? == 0 {
                return Ok(false);
            }
            insert_event(c, &event, now)?;
            Ok(true)
        })
        .await
    }

    async fn set_over_limit(
        &self,
        lid: &str,
        over: Option<&serde_json::Value>,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let (lid, over, audit) = (lid.to_string(), over.cloned(), audit.clone());
        self.write(move |c| {
            let changed = match &over {
                Some(v) => c.exec(ev::OVER_ON, params![lid, json(v)?, audit.at])?,
                None => c.exec(ev::OVER_OFF, params![lid, audit.at])?,
            };
            if changed == 0 {
                return Ok(false);
            }
            access::insert_audit(c, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn licenses_reporting(&self, from: i64, to: i64) -> Result<Vec<String>> {
        self.read(move |c| {
            all(c, ev::REPORTING, params![from, to], |r| {
                r.get(0).map_err(Into::into)
            })
        })
        .await
    }

    async fn prune_events(&self, before: i64, batch: i64) -> Result<u64> {
        self.write(move |c| Ok(c.exec(ev::PRUNE_EVENTS, params![before, batch])? as u64))
            .await
    }

    async fn subscribed(&self, kind: &str) -> Result<bool> {
        let kind = kind.to_string();
        self.read(move |c| Ok(one(c, ev::SUBSCRIBED, [kind], |_| Ok(()))?.is_some()))
            .await
    }

    async fn count_over_limit(&self) -> Result<i64> {
        self.read(|c| Ok(c.row(ev::OVER_LIMIT, [], |r| r.get(0))?))
            .await
    }
}
