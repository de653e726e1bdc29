//! PostgreSQL: events, webhooks and their deliveries (see
//! [`crate::db::events`]). Deliveries are claimed with `FOR UPDATE SKIP
//! LOCKED` and a lease, as pushes are.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::types::Json;

use super::{PgStore, access, exists};
use crate::db::events::{self as ev, EventStore, Notice};
use crate::db::{Result, StoreError, rows, sql};
use crate::domain::events::{DeliveryJob, DeliveryOutcome};
use crate::domain::{AuditEvent, Delivery, License, Listing, NewEvent, Page, Webhook};

/// The event and its deliveries in one statement; an on-demand event
/// (`$5` false) only when an enabled endpoint subscribes to its type.
const INSERT_EVENT: &str = "WITH e AS (INSERT INTO events (uid, type, at, payload) \
    SELECT $1::text, $2::text, $3::bigint, $4::jsonb WHERE $5::boolean OR EXISTS ( \
    SELECT 1 FROM webhook_subscriptions s JOIN webhooks w ON w.id = s.webhook_id \
    WHERE s.event_type = $2::text AND w.enabled) RETURNING id, at) \
    INSERT INTO webhook_deliveries (webhook_id, event_id, state, next_at, created_at) \
    SELECT s.webhook_id, e.id, 'pending', e.at, e.at FROM e \
    JOIN webhook_subscriptions s ON s.event_type = $2::text \
    JOIN webhooks w ON w.id = s.webhook_id WHERE w.enabled";

/// Records `e` at `at` with its deliveries on `c` (the change's transaction).
pub(super) async fn insert_event(c: &impl GenericClient, e: &NewEvent, at: i64) -> Result<()> {
    let st = c.prepare_cached(INSERT_EVENT).await?;
    c.execute(
        &st,
        &[
            &NewEvent::new_uid(),
            &e.kind,
            &at,
            &Json(&e.payload),
            &!e.on_demand(),
        ],
    )
    .await?;
    Ok(())
}

/// The events an audit event carries.
pub(super) async fn insert_events(c: &impl GenericClient, audit: &AuditEvent) -> Result<()> {
    for e in &audit.events {
        insert_event(c, e, audit.at).await?;
    }
    Ok(())
}

fn webhook_not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("webhook {id} not found"))
}

async fn subscribe(c: &impl GenericClient, w: &Webhook) -> Result<()> {
    let del = c.prepare_cached(pg!(ev::DELETE_SUBSCRIPTIONS)).await?;
    c.execute(&del, &[&w.id]).await?;
    let ins = c.prepare_cached(pg!(ev::INSERT_SUBSCRIPTION)).await?;
    for t in &w.event_types {
        c.execute(&ins, &[t, &w.id]).await?;
    }
    Ok(())
}

#[async_trait]
impl EventStore for PgStore {
    async fn create_webhook(
        &self,
        w: &Webhook,
        sealed_secret: &str,
        audit: &AuditEvent,
    ) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(ev::INSERT_WEBHOOK)).await?;
        tx.execute(
            &st,
            &[
                &w.id,
                &w.url,
                &w.description,
                &Json(&w.event_types),
                &w.enabled,
                &sealed_secret,
                &w.created_at,
            ],
        )
        .await?;
        subscribe(&tx, w).await?;
        access::insert_audit(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        self.one(pg!(ev::GET_WEBHOOK), &[&id], ev::webhook).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.many(pg!(ev::LIST_WEBHOOKS), &[], ev::webhook).await
    }

    async fn update_webhook(
        &self,
        w: &Webhook,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Webhook> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(ev::UPDATE_WEBHOOK)).await?;
        let row = tx
            .query_opt(
                &st,
                &[
                    &w.id,
                    &w.url,
                    &w.description,
                    &Json(&w.event_types),
                    &w.enabled,
                    &w.disabled_reason,
                    &w.updated_at,
                    &version,
                ],
            )
            .await?;
        let Some(row) = row else {
            return Err(if exists(&tx, pg!(ev::WEBHOOK_EXISTS), &[&w.id]).await? {
                StoreError::Stale("webhook")
            } else {
                webhook_not_found(&w.id)
            });
        };
        let updated = ev::webhook(&row)?;
        subscribe(&tx, &updated).await?;
        access::insert_audit(&tx, audit).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn rotate_webhook_secret(
        &self,
        id: &str,
        sealed_secret: &str,
        previous_until: i64,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Webhook> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(ev::ROTATE_SECRET)).await?;
        let row = tx
            .query_opt(&st, &[&id, &sealed_secret, &previous_until, &now])
            .await?
            .ok_or_else(|| webhook_not_found(id))?;
        let w = ev::webhook(&row)?;
        access::insert_audit(&tx, audit).await?;
        tx.commit().await?;
        Ok(w)
    }

    async fn delete_webhook(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        for q in [ev::DELETE_DELIVERIES, ev::DELETE_SUBSCRIPTIONS] {
            let st = tx.prepare_cached(&sql::pg(q)).await?;
            tx.execute(&st, &[&id]).await?;
        }
        let st = tx.prepare_cached(pg!(ev::DELETE_WEBHOOK)).await?;
        if tx.execute(&st, &[&id]).await? == 0 {
            return Ok(false);
        }
        access::insert_audit(&tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> Result<Listing<Delivery>> {
        let q = ev::deliveries_query(webhook_id, page);
        self.list(&q, page, ev::delivery).await
    }

    async fn queue_test_event(
        &self,
        webhook_id: &str,
        event: &NewEvent,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Delivery> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        if !exists(&tx, pg!(ev::WEBHOOK_EXISTS), &[&webhook_id]).await? {
            return Err(webhook_not_found(webhook_id));
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO events (uid, type, at, payload) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .await?;
        let event_id: i64 = tx
            .query_one(
                &st,
                &[
                    &NewEvent::new_uid(),
                    &event.kind,
                    &now,
                    &Json(&event.payload),
                ],
            )
            .await?
            .try_get(0)?;
        let st = tx.prepare_cached(pg!(ev::INSERT_DELIVERY)).await?;
        let delivery: i64 = tx
            .query_one(&st, &[&webhook_id, &event_id, &now])
            .await?
            .try_get(0)?;
        access::insert_audit(&tx, audit).await?;
        let q = pg!(&format!(
            "SELECT {} FROM {} WHERE d.id = ?1",
            ev::DELIVERY_COLS,
            ev::DELIVERY_FROM
        ));
        let row = tx
            .query_one(&tx.prepare_cached(q).await?, &[&delivery])
            .await?;
        let d = ev::delivery(&row)?;
        tx.commit().await?;
        Ok(d)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryJob>> {
        // The due rows from the partial index, locked and skipped by other
        // replicas' claims, leased by primary key.
        let claim = pg!(&format!(
            "UPDATE webhook_deliveries SET lease_owner = ?3, lease_until = ?4 \
             WHERE id = ANY (ARRAY({} FOR UPDATE OF d SKIP LOCKED)) RETURNING id",
            ev::DUE
        ));
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let ids: Vec<i64> = tx
            .query(
                &tx.prepare_cached(claim).await?,
                &[&now, &limit, &owner, &lease_until],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let st = tx.prepare_cached(pg!(ev::JOB)).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = tx.query_opt(&st, &[&id]).await? {
                jobs.push(ev::job(&row)?);
            }
        }
        tx.commit().await?;
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    async fn finish_delivery(
        &self,
        id: i64,
        owner: &str,
        o: &DeliveryOutcome,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(ev::FINISH)).await?;
        let done = tx
            .execute(
                &st,
                &[
                    &id,
                    &owner,
                    &o.state.as_str(),
                    &o.attempts,
                    &o.next_at,
                    &o.last_status,
                    &o.last_error,
                    &o.at,
                ],
            )
            .await?
            > 0;
        if done && let Some(d) = &o.disable {
            let st = tx.prepare_cached(pg!(ev::DISABLE)).await?;
            if tx
                .execute(&st, &[&id, &d.reason, &o.at, &d.unless_delivered_since])
                .await?
                > 0
            {
                access::insert_audit(&tx, audit).await?;
            }
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn notices_due(&self, notice: Notice, now: i64, limit: i64) -> Result<Vec<License>> {
        let q = match notice {
            Notice::Expiring => pg!(&format!(
                "SELECT {} FROM licenses l WHERE status = 'active' AND expires_at > ?1 \
                 AND expires_at - 86400 * (terms->>'lic_exp_warn_days')::bigint <= ?1 \
                 AND NOT EXISTS (SELECT 1 FROM license_notices n WHERE n.lid = l.lid \
                 AND n.kind = 'expiring' AND n.expires_at = l.expires_at) \
                 ORDER BY expires_at LIMIT ?2",
                sql::LICENSE_COLS
            )),
            Notice::Expired => pg!(&format!(
                "SELECT {} FROM licenses l WHERE status = 'active' AND expires_at <= ?1 \
                 AND expires_at > ?1::bigint - {} AND NOT EXISTS (SELECT 1 FROM license_notices n \
                 WHERE n.lid = l.lid AND n.kind = 'expired' AND n.expires_at = l.expires_at) \
                 ORDER BY expires_at LIMIT ?2",
                sql::LICENSE_COLS,
                ev::EXPIRED_LOOKBACK
            )),
        };
        self.many(q, &[&now, &limit], rows::license).await
    }

    async fn record_notice(
        &self,
        lid: &str,
        notice: Notice,
        expires_at: i64,
        now: i64,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx.prepare_cached(pg!(ev::NOTICE)).await?;
        if tx
            .execute(&st, &[&lid, &notice.as_str(), &expires_at, &now])
            .await?
            == 0
        {
            return Ok(false);
        }
        insert_event(&tx, event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_over_limit(
        &self,
        lid: &str,
        over: Option<&serde_json::Value>,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let changed = match over {
            Some(v) => {
                let st = tx.prepare_cached(pg!(ev::OVER_ON)).await?;
                tx.execute(&st, &[&lid, &Json(v), &audit.at]).await?
            }
            None => {
                let st = tx.prepare_cached(pg!(ev::OVER_OFF)).await?;
                tx.execute(&st, &[&lid, &audit.at]).await?
            }
        };
        if changed == 0 {
            return Ok(false);
        }
        access::insert_audit(&tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn licenses_reporting(&self, from: i64, to: i64) -> Result<Vec<String>> {
        self.many(pg!(ev::REPORTING), &[&from, &to], |r| Ok(r.try_get(0)?))
            .await
    }

    async fn prune_events(&self, before: i64, batch: i64) -> Result<u64> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached(pg!(ev::PRUNE_EVENTS)).await?;
        Ok(c.execute(&st, &[&before, &batch]).await?)
    }

    async fn subscribed(&self, kind: &str) -> Result<bool> {
        Ok(self
            .one(pg!(ev::SUBSCRIBED), &[&kind], |_| Ok(()))
            .await?
            .is_some())
    }

    async fn count_over_limit(&self) -> Result<i64> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached(pg!(ev::OVER_LIMIT)).await?;
        Ok(c.query_one(&st, &[]).await?.try_get(0)?)
    }
}
