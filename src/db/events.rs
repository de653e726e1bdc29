//! Events and webhooks in the store. An event rides on the audit event of
//! the change that causes it ([`crate::domain::AuditEvent::events`]) and is
//! written by the same `insert_audit` in the change's transaction, together
//! with one delivery per enabled endpoint subscribed to its type (the
//! outbox). The delivery job leases deliveries as the push job leases
//! instances, so replicas never attempt the same delivery at once.

use async_trait::async_trait;

use super::Result;
use super::rows::{Cells, bad_value};
use crate::domain::events::{DeliveryJob, DeliveryOutcome, WebhookSecrets};
use crate::domain::{AuditEvent, Delivery, DeliveryState, Event, License, Listing, NewEvent, Page};
use crate::domain::{Webhook, rfc3339};

/// A time-driven transition of a license, announced once per expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Entered its `lic_exp_warn_days` window.
    Expiring,
    /// Its `expires_at` passed (within the last [`EXPIRED_LOOKBACK`]).
    Expired,
}

/// How far back an expiry is still announced: after an upgrade, licenses
/// that expired long ago are not announced all at once.
pub const EXPIRED_LOOKBACK: i64 = 7 * 86_400;

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Expiring => "expiring",
            Notice::Expired => "expired",
        }
    }
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Creates an endpoint with its sealed secret and subscriptions.
    async fn create_webhook(
        &self,
        w: &Webhook,
        sealed_secret: &str,
        audit: &AuditEvent,
    ) -> Result<()>;
    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>>;
    /// Oldest first.
    async fn list_webhooks(&self) -> Result<Vec<Webhook>>;
    /// Writes URL, description, event types and `enabled` (and
    /// `disabled_reason`) if the row is at `version`; returns the row.
    async fn update_webhook(
        &self,
        w: &Webhook,
        version: i64,
        audit: &AuditEvent,
    ) -> Result<Webhook>;
    /// Replaces the secret; the one it replaces keeps signing until
    /// `previous_until`.
    async fn rotate_webhook_secret(
        &self,
        id: &str,
        sealed_secret: &str,
        previous_until: i64,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Webhook>;
    /// Deletes it with its subscriptions and deliveries. False when it did
    /// not exist.
    async fn delete_webhook(&self, id: &str, audit: &AuditEvent) -> Result<bool>;
    /// Newest first.
    async fn list_deliveries(&self, webhook_id: &str, page: &Page) -> Result<Listing<Delivery>>;
    /// Records `event` with one delivery, to this endpoint only (enabled
    /// or not), due at once.
    async fn queue_test_event(
        &self,
        webhook_id: &str,
        event: &NewEvent,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Delivery>;
    /// Leases up to `limit` due deliveries of enabled endpoints (and test
    /// events to any endpoint) to `owner`
    /// until `lease_until`, oldest first.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryJob>>;
    /// Writes the outcome of an attempt and releases the lease, if `owner`
    /// still holds it (false otherwise, and nothing is written). With
    /// `disable`, disables the endpoint in the same transaction unless it
    /// delivered something since, writing `audit` (and its events) only
    /// when it did.
    async fn finish_delivery(
        &self,
        id: i64,
        owner: &str,
        outcome: &DeliveryOutcome,
        audit: &AuditEvent,
    ) -> Result<bool>;

    /// Active licenses whose `notice` is due at `now` and not yet
    /// announced for their current expiry, up to `limit`.
    async fn notices_due(&self, notice: Notice, now: i64, limit: i64) -> Result<Vec<License>>;
    /// Announces `notice` for license `lid` at expiry `expires_at` with
    /// `event`, unless it was announced for that expiry already (false,
    /// and nothing written): several replicas announce it once.
    async fn record_notice(
        &self,
        lid: &str,
        notice: Notice,
        expires_at: i64,
        now: i64,
        event: &NewEvent,
    ) -> Result<bool>;
    /// Sets the license's `over_limit` (`Some`: it went over; `None`: it
    /// is back within its limits) if it is active and not in that state
    /// already, with `audit` (and its events). False when nothing changed.
    async fn set_over_limit(
        &self,
        lid: &str,
        over: Option<&serde_json::Value>,
        audit: &AuditEvent,
    ) -> Result<bool>;
    /// Licenses with usage reports in `[from, to)`.
    async fn licenses_reporting(&self, from: i64, to: i64) -> Result<Vec<String>>;
    /// Deletes up to `batch` events recorded before `before` that no
    /// delivery waits for (their deliveries go with them); how many.
    async fn prune_events(&self, before: i64, batch: i64) -> Result<u64>;
    /// Whether an enabled endpoint subscribes to event type `kind`.
    async fn subscribed(&self, kind: &str) -> Result<bool>;
    /// How many licenses have `over_limit` set.
    async fn count_over_limit(&self) -> Result<i64>;
}

// ---- SQL shared by both stores (SQLite placeholders; see `sql::pg`) ----

pub(crate) const INSERT_WEBHOOK: &str = "INSERT INTO webhooks (id, url, description, \
    event_types, enabled, secret, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)";
pub(crate) const INSERT_SUBSCRIPTION: &str =
    "INSERT INTO webhook_subscriptions (event_type, webhook_id) VALUES (?1, ?2)";
pub(crate) const DELETE_SUBSCRIPTIONS: &str =
    "DELETE FROM webhook_subscriptions WHERE webhook_id = ?1";
pub(crate) const GET_WEBHOOK: &str = "SELECT id, url, description, event_types, enabled, \
    disabled_reason, created_at, updated_at, version FROM webhooks WHERE id = ?1";
pub(crate) const LIST_WEBHOOKS: &str = "SELECT id, url, description, event_types, enabled, \
    disabled_reason, created_at, updated_at, version FROM webhooks ORDER BY created_at, id";
pub(crate) const WEBHOOK_EXISTS: &str = "SELECT 1 FROM webhooks WHERE id = ?1";
/// ?1 id, ?2 url, ?3 description, ?4 event types, ?5 enabled, ?6 reason,
/// ?7 now, ?8 version.
pub(crate) const UPDATE_WEBHOOK: &str = "UPDATE webhooks SET url = ?2, description = ?3, \
    event_types = ?4, enabled = ?5, disabled_reason = ?6, updated_at = ?7, version = version + 1 \
    WHERE id = ?1 AND version = ?8 RETURNING id, url, description, event_types, enabled, \
    disabled_reason, created_at, updated_at, version";
/// ?1 id, ?2 sealed secret, ?3 previous until, ?4 now.
pub(crate) const ROTATE_SECRET: &str = "UPDATE webhooks SET previous_secret = secret, \
    previous_until = ?3, secret = ?2, updated_at = ?4, version = version + 1 WHERE id = ?1 \
    RETURNING id, url, description, event_types, enabled, disabled_reason, created_at, \
    updated_at, version";
pub(crate) const DELETE_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE webhook_id = ?1";
pub(crate) const DELETE_WEBHOOK: &str = "DELETE FROM webhooks WHERE id = ?1";

/// The deliveries of an endpoint with their events' ids and types.
pub(crate) const DELIVERY_COLS: &str = "d.id, d.webhook_id, e.uid, e.type, d.state, d.attempts, \
    d.next_at, d.last_status, d.last_error, d.last_attempt_at, d.created_at";
pub(crate) const DELIVERY_FROM: &str = "webhook_deliveries d JOIN events e ON e.id = d.event_id";

/// ?1 event id, ?2 now, ?3 event type: a delivery for every enabled
/// endpoint subscribed to the type.
pub(crate) const FAN_OUT: &str = "INSERT INTO webhook_deliveries (webhook_id, event_id, state, \
    next_at, created_at) SELECT s.webhook_id, ?1, 'pending', ?2, ?2 FROM webhook_subscriptions s \
    JOIN webhooks w ON w.id = s.webhook_id WHERE s.event_type = ?3 AND w.enabled";
/// ?1 type: whether an enabled endpoint subscribes to it.
pub(crate) const SUBSCRIBED: &str = "SELECT 1 FROM webhook_subscriptions s JOIN webhooks w \
    ON w.id = s.webhook_id WHERE s.event_type = ?1 AND w.enabled LIMIT 1";
/// ?1 webhook id, ?2 event id, ?3 now.
pub(crate) const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (webhook_id, event_id, \
    state, next_at, created_at) VALUES (?1, ?2, 'pending', ?3, ?3) RETURNING id";

/// The due deliveries of enabled endpoints (?1 now, ?2 limit), served by
/// the partial index `webhook_deliveries_due`.
pub(crate) const DUE: &str = "SELECT d.id FROM webhook_deliveries d JOIN webhooks w \
    ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id WHERE d.state = 'pending' \
    AND d.next_at <= ?1 AND (d.lease_until IS NULL OR d.lease_until <= ?1) \
    AND (w.enabled OR e.type = 'webhook.test') ORDER BY d.next_at LIMIT ?2";
/// A leased delivery with what an attempt needs.
pub(crate) const JOB: &str = "SELECT d.id, d.attempts, d.created_at, w.id, w.url, w.secret, \
    w.previous_secret, w.previous_until, e.uid, e.type, e.at, e.payload \
    FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
    JOIN events e ON e.id = d.event_id WHERE d.id = ?1";
/// ?1 id, ?2 owner, ?3 state, ?4 attempts, ?5 next_at, ?6 status, ?7 error, ?8 at.
pub(crate) const FINISH: &str = "UPDATE webhook_deliveries SET state = ?3, attempts = ?4, \
    next_at = ?5, last_status = ?6, last_error = ?7, last_attempt_at = ?8, lease_owner = NULL, \
    lease_until = NULL WHERE id = ?1 AND lease_owner = ?2";
/// ?1 delivery id, ?2 reason, ?3 now, ?4 delivered since: disables the
/// delivery's endpoint unless it delivered something since.
pub(crate) const DISABLE: &str = "UPDATE webhooks SET enabled = (1 = 0), disabled_reason = ?2, \
    updated_at = ?3, version = version + 1 WHERE id = (SELECT webhook_id FROM webhook_deliveries \
    WHERE id = ?1) AND enabled AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x \
    WHERE x.webhook_id = webhooks.id AND x.state = 'delivered' AND x.last_attempt_at >= ?4)";

/// ?1 lid, ?2 kind, ?3 expires_at, ?4 now: inserts or moves the notice
/// to a new expiry; changes nothing when it is there for this expiry.
pub(crate) const NOTICE: &str = "INSERT INTO license_notices (lid, kind, expires_at, at) \
    VALUES (?1, ?2, ?3, ?4) ON CONFLICT (lid, kind) DO UPDATE SET expires_at = excluded.expires_at, \
    at = excluded.at WHERE license_notices.expires_at <> excluded.expires_at";

/// ?1 lid, ?2 over_limit, ?3 now: turns `over_limit` on.
pub(crate) const OVER_ON: &str = "UPDATE licenses SET over_limit = ?2, updated_at = ?3, \
    version = version + 1 WHERE lid = ?1 AND status = 'active' AND over_limit IS NULL";
/// ?1 lid, ?2 now: turns it off.
pub(crate) const OVER_OFF: &str = "UPDATE licenses SET over_limit = NULL, updated_at = ?2, \
    version = version + 1 WHERE lid = ?1 AND status = 'active' AND over_limit IS NOT NULL";
/// ?1 before, ?2 batch: the oldest events no delivery waits for.
pub(crate) const PRUNE_EVENTS: &str = "DELETE FROM events WHERE id IN (SELECT e.id FROM events e \
    WHERE e.at < ?1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id \
    AND d.state = 'pending') ORDER BY e.at LIMIT ?2)";
/// ?1 from, ?2 to.
pub(crate) const REPORTING: &str =
    "SELECT DISTINCT lid FROM usage_reports WHERE at >= ?1 AND at < ?2";
pub(crate) const OVER_LIMIT: &str = "SELECT count(*) FROM licenses WHERE over_limit IS NOT NULL";

pub(crate) fn webhook(r: &impl Cells) -> Result<Webhook> {
    Ok(Webhook {
        id: r.text(0)?,
        url: r.text(1)?,
        description: r.text(2)?,
        event_types: r.json(3)?,
        enabled: r.flag(4)?,
        disabled_reason: r.opt_text(5)?,
        created_at: r.int(6)?,
        updated_at: r.int(7)?,
        version: r.int(8)?,
    })
}

pub(crate) fn delivery(r: &impl Cells) -> Result<Delivery> {
    Ok(Delivery {
        id: r.int(0)?,
        webhook_id: r.text(1)?,
        event_id: r.text(2)?,
        event_type: r.text(3)?,
        state: DeliveryState::parse(&r.text(4)?).ok_or_else(|| bad_value("delivery state"))?,
        attempts: r.int(5)?,
        next_attempt_at: r.opt_int(6)?,
        last_status: r.opt_int(7)?,
        last_error: r.opt_text(8)?,
        last_attempt_at: r.opt_int(9)?,
        created_at: r.int(10)?,
    })
}

/// A row of [`JOB`].
pub(crate) fn job(r: &impl Cells) -> Result<DeliveryJob> {
    let previous = match (r.opt_text(6)?, r.opt_int(7)?) {
        (Some(s), Some(until)) => Some((s, until)),
        _ => None,
    };
    Ok(DeliveryJob {
        id: r.int(0)?,
        attempts: r.int(1)?,
        created_at: r.int(2)?,
        webhook_id: r.text(3)?,
        url: r.text(4)?,
        secrets: WebhookSecrets {
            secret: r.text(5)?,
            previous,
        },
        event: Event {
            id: r.text(8)?,
            kind: r.text(9)?,
            at: r.int(10)?,
            payload: r.json(11)?,
        },
    })
}

/// The list of deliveries of an endpoint: newest first by `(created_at, id)`.
pub(crate) fn deliveries_query(webhook_id: &str, page: &Page) -> super::lists::ListQuery {
    super::lists::deliveries(webhook_id, page, DELIVERY_COLS, DELIVERY_FROM)
}

/// The event of an endpoint the issuer disabled.
pub fn disabled_event(id: &str, url: &str, reason: &str, now: i64) -> NewEvent {
    NewEvent::new(
        "webhook.disabled",
        serde_json::json!({
            "webhook_id": id,
            "url": url,
            "reason": reason,
            "at": rfc3339::format(now),
        }),
    )
}
