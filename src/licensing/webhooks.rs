//! Webhooks: the endpoints (create, change, rotate the secret, delete,
//! test) and the delivery job. Deliveries follow the Standard Webhooks
//! specification (<https://www.standardwebhooks.com/>): a POST of
//! `{"type", "timestamp", "data"}` with the headers `webhook-id` (the
//! event's id, the same on every retry: receivers deduplicate by it),
//! `webhook-timestamp` (seconds) and `webhook-signature` (`v1,` and the
//! base64 HMAC-SHA256 of `id.timestamp.body` under the endpoint's secret;
//! two signatures, space-separated, while a rotated secret still signs).
//!
//! Deliveries are claimed with a lease, as pushes are, so replicas never
//! attempt the same delivery at once, and one that dies mid-attempt loses
//! nothing: its lease expires and another attempts it again (with the same
//! `webhook-id`). Failed attempts are retried on `--webhook-retry-schedule`
//! (about 27 hours by default); when they run out the delivery fails, and an
//! endpoint that delivered nothing since that delivery was queued is
//! disabled (as is one answering 410 Gone), with a `webhook.disabled` event.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use charter_token::now;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, Notify};

use super::{Actor, Error, Licensing, Result, check_version, retry_stale};
use crate::config::WebhookConfig;
use crate::db::events::disabled_event;
use crate::domain::events::{
    DeliveryJob, DeliveryOutcome, Disable, WebhookSecrets, is_subscribable,
};
use crate::domain::{Delivery, DeliveryState, Listing, NewEvent, Page, Webhook};
use crate::push::{RunStats, url_allowed};

/// The delivery job's own state: its HTTP client, its lease owner id, a
/// lock so that runs of one process do not overlap, and a bell that starts
/// a run before the next tick.
pub struct Deliverer {
    pub config: WebhookConfig,
    http: reqwest::Client,
    owner: String,
    running: Mutex<()>,
    pub wake: Notify,
    /// Whether an enabled endpoint subscribes to `token.renewed`, and when
    /// that was last read from the store (see [`Deliverer::renewals_wanted`]).
    renewals: std::sync::Mutex<(bool, Option<std::time::Instant>)>,
}

/// How long a replica trusts what it read about `token.renewed`
/// subscriptions: a new subscription made on another replica is seen
/// within this (on this one, at once).
pub const SUBSCRIPTIONS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl Deliverer {
    pub fn new(config: WebhookConfig) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("charter-webhooks/", env!("CARGO_PKG_VERSION")));
        if config.refuse_private {
            builder = builder.dns_resolver(Arc::new(crate::push::PublicOnly));
        }
        Ok(Deliverer {
            http: builder.build()?,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            running: Mutex::new(()),
            wake: Notify::new(),
            renewals: std::sync::Mutex::new((false, None)),
            config,
        })
    }

    /// Waits for a run in progress to finish (shutdown).
    pub async fn wait_idle(&self) {
        let _guard = self.running.lock().await;
    }

    /// Whether renewals should record `token.renewed`: an enabled endpoint
    /// subscribes to it, as read at most [`SUBSCRIPTIONS_TTL`] ago. Saves
    /// every renewal an event statement while nobody listens (a renewal
    /// cost 4-7 % more CPU with one). On a read error: yes (the store
    /// still records it only for a subscriber).
    pub async fn renewals_wanted(&self, store: &dyn crate::db::Store) -> bool {
        if let Ok(r) = self.renewals.lock()
            && let (wanted, Some(at)) = *r
            && at.elapsed() < SUBSCRIPTIONS_TTL
        {
            return wanted;
        }
        let wanted = store.subscribed("token.renewed").await.unwrap_or(true);
        if let Ok(mut r) = self.renewals.lock() {
            *r = (wanted, Some(std::time::Instant::now()));
        }
        wanted
    }

    /// Forgets what was read about subscriptions (this replica changed them).
    pub fn subscriptions_changed(&self) {
        if let Ok(mut r) = self.renewals.lock() {
            r.1 = None;
        }
    }
}

/// An endpoint to create (all fields) or change (the fields given).
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// `http` or `https`; not a loopback or private address unless the
    /// issuer runs with `--push-allow-private`.
    pub url: Option<String>,
    /// The event types to receive (at least one; see the README's events table).
    pub event_types: Option<Vec<String>>,
    /// Default true. Enabling an endpoint the issuer disabled clears its reason.
    pub enabled: Option<bool>,
    /// At most 200 characters.
    pub description: Option<String>,
}

/// An endpoint with its signing secret, shown once (on creation and on
/// rotation).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_` and the base64 of 32 random bytes: what Standard Webhooks
    /// libraries take. Not shown again.
    pub secret: String,
}

fn new_secret() -> Result<String> {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| Error::Sign("no randomness".into()))?;
    Ok(format!("whsec_{}", STANDARD.encode(key)))
}

fn apply(ctx: &Licensing, w: &mut Webhook, input: &WebhookInput) -> Result<()> {
    if let Some(url) = &input.url {
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid("url", e))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(Error::invalid("url", "must be an http or https URL"));
        }
        if url.len() > 2048 {
            return Err(Error::invalid("url", "must be at most 2048 characters"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::invalid(
                "url",
                "must not carry credentials; verify the signature instead",
            ));
        }
        if !url_allowed(url, ctx.config.webhooks.refuse_private) {
            return Err(Error::invalid(
                "url",
                "is a loopback, private or other special address, which this issuer refuses",
            ));
        }
        w.url = parsed.to_string();
    }
    if let Some(types) = &input.event_types {
        if types.is_empty() || types.len() > 50 {
            return Err(Error::invalid(
                "event_types",
                "must list 1 to 50 event types",
            ));
        }
        let mut list = Vec::with_capacity(types.len());
        for t in types {
            if !is_subscribable(t) {
                return Err(Error::invalid(
                    "event_types",
                    format!("{t:?} is not an event type"),
                ));
            }
            if !list.contains(t) {
                list.push(t.clone());
            }
        }
        w.event_types = list;
    }
    if let Some(d) = &input.description {
        if d.chars().count() > 200 || d.chars().any(char::is_control) {
            return Err(Error::invalid(
                "description",
                "must be at most 200 printable characters",
            ));
        }
        w.description = d.clone();
    }
    if let Some(e) = input.enabled {
        if e {
            w.disabled_reason = None;
        }
        w.enabled = e;
    }
    Ok(())
}

pub async fn create(ctx: &Licensing, actor: &Actor, input: WebhookInput) -> Result<WithSecret> {
    if input.url.is_none() {
        return Err(Error::invalid("url", "is required"));
    }
    if input.event_types.is_none() {
        return Err(Error::invalid("event_types", "is required"));
    }
    let t = now();
    let mut w = Webhook {
        id: format!("wh_{}", uuid::Uuid::now_v7().simple()),
        url: String::new(),
        description: String::new(),
        event_types: vec![],
        enabled: true,
        disabled_reason: None,
        created_at: t,
        updated_at: t,
        version: 1,
    };
    apply(ctx, &mut w, &input)?;
    let secret = new_secret()?;
    let sealed = ctx
        .sealer
        .seal_webhook_secret(&secret, &w.id)
        .map_err(|e| Error::Sign(e.to_string()))?;
    let mut event = actor.event("webhook.create", "webhook", &w.id);
    event.detail = Some(json!({ "url": w.url, "event_types": w.event_types }));
    ctx.store.create_webhook(&w, &sealed, &event).await?;
    ctx.deliverer.subscriptions_changed();
    tracing::info!(webhook = %w.id, url = %w.url, by = %actor.name, "webhook created");
    Ok(WithSecret { webhook: w, secret })
}

pub async fn get(ctx: &Licensing, id: &str) -> Result<Webhook> {
    ctx.store
        .get_webhook(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("webhook {id} not found")))
}

pub async fn list(ctx: &Licensing) -> Result<Vec<Webhook>> {
    Ok(ctx.store.list_webhooks().await?)
}

pub async fn update(
    ctx: &Licensing,
    actor: &Actor,
    id: &str,
    input: WebhookInput,
    if_match: Option<i64>,
) -> Result<Webhook> {
    retry_stale(if_match, || async {
        let old = get(ctx, id).await?;
        check_version("webhook", if_match, old.version)?;
        let mut new = old.clone();
        apply(ctx, &mut new, &input)?;
        new.updated_at = now();
        let mut event = actor.event("webhook.update", "webhook", id);
        event.detail = Some(json!({ "changes": super::changes(&old, &new) }));
        let w = ctx.store.update_webhook(&new, old.version, &event).await?;
        ctx.deliverer.subscriptions_changed();
        Ok(w)
    })
    .await
}

/// A new secret; the old one keeps signing (beside it) for 24 hours, so
/// receivers can switch without losing a delivery.
pub async fn rotate_secret(ctx: &Licensing, actor: &Actor, id: &str) -> Result<WithSecret> {
    let secret = new_secret()?;
    let sealed = ctx
        .sealer
        .seal_webhook_secret(&secret, id)
        .map_err(|e| Error::Sign(e.to_string()))?;
    let t = now();
    let event = actor.event("webhook.rotate_secret", "webhook", id);
    let webhook = ctx
        .store
        .rotate_webhook_secret(id, &sealed, t + 86_400, t, &event)
        .await?;
    tracing::info!(webhook = %id, by = %actor.name, "webhook secret rotated");
    Ok(WithSecret { webhook, secret })
}

pub async fn delete(ctx: &Licensing, actor: &Actor, id: &str) -> Result<()> {
    let event = actor.event("webhook.delete", "webhook", id);
    if !ctx.store.delete_webhook(id, &event).await? {
        return Err(Error::NotFound(format!("webhook {id} not found")));
    }
    ctx.deliverer.subscriptions_changed();
    tracing::info!(webhook = %id, by = %actor.name, "webhook deleted");
    Ok(())
}

pub async fn deliveries(ctx: &Licensing, id: &str, page: &Page) -> Result<Listing<Delivery>> {
    get(ctx, id).await?;
    Ok(ctx.store.list_deliveries(id, page).await?)
}

/// Queues a `webhook.test` event to this endpoint only and wakes the
/// delivery job; the delivery's state shows how it went.
pub async fn test(ctx: &Licensing, actor: &Actor, id: &str) -> Result<Delivery> {
    let t = now();
    let event = NewEvent::new(
        "webhook.test",
        json!({ "webhook_id": id, "requested_by": actor.name }),
    );
    let audit = actor.event("webhook.test", "webhook", id);
    let d = ctx.store.queue_test_event(id, &event, t, &audit).await?;
    ctx.deliverer.wake.notify_one();
    Ok(d)
}

/// `v1,<base64 HMAC-SHA256 of id.timestamp.body>` under `secret`
/// (`whsec_` and base64 of the key), as Standard Webhooks signs.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let tag = aws_lc_rs::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(tag.as_ref())))
}

/// Claims and attempts every due delivery, a batch at a time. Returns at
/// once when another run of this process is in progress.
pub async fn run_once(ctx: &Licensing) -> Result<RunStats> {
    let d = ctx.deliverer.clone();
    let Ok(_guard) = d.running.try_lock() else {
        return Ok(RunStats::default());
    };
    let batch = (d.config.concurrency * 2) as i64;
    super::drain(
        ctx,
        d.config.concurrency,
        "webhook",
        || {
            let t = now();
            let lease_until = t + d.config.lease.as_secs() as i64;
            ctx.store.claim_deliveries(&d.owner, t, lease_until, batch)
        },
        |ctx, job| async move { attempt(&ctx, job).await },
    )
    .await
}

/// The signatures of a delivery: the current secret's, and the previous
/// one's while it still signs.
fn signatures(ctx: &Licensing, job: &DeliveryJob, ts: i64, body: &str) -> Option<String> {
    let WebhookSecrets { secret, previous } = &job.secrets;
    let open = |sealed: &str| ctx.sealer.open_webhook_secret(sealed, &job.webhook_id);
    let mut sigs = vec![sign(&open(secret)?, &job.event.id, ts, body)?];
    if let Some((sealed, until)) = previous
        && *until > ts
        && let Some(s) = open(sealed).and_then(|p| sign(&p, &job.event.id, ts, body))
    {
        sigs.push(s);
    }
    Some(sigs.join(" "))
}

/// One attempt of one delivery, and its outcome recorded. True when delivered.
async fn attempt(ctx: &Licensing, job: DeliveryJob) -> bool {
    let d = &ctx.deliverer;
    let t = now();
    let body = job.event.body();
    let result: std::result::Result<u16, (Option<u16>, String)> =
        if !url_allowed(&job.url, d.config.refuse_private) {
            Err((
                None,
                "refused: the endpoint is a private or loopback address".into(),
            ))
        } else {
            match signatures(ctx, &job, t, &body) {
                None => Err((
                    None,
                    "the endpoint's secret does not open with this master key".into(),
                )),
                Some(sig) => send(&d.http, &job, t, &sig, body).await,
            }
        };
    let attempts = job.attempts + 1;
    let (outcome, delivered) = match result {
        Ok(status) => (
            DeliveryOutcome {
                state: DeliveryState::Delivered,
                attempts,
                next_at: None,
                last_status: Some(i64::from(status)),
                last_error: None,
                at: t,
                disable: None,
            },
            true,
        ),
        Err((status, error)) => (failed(d, &job, attempts, status, error, t), false),
    };
    ctx.metrics.webhook_delivery(match outcome.state {
        DeliveryState::Delivered => "delivered",
        DeliveryState::Pending => "retry",
        DeliveryState::Failed => "failed",
    });
    let mut audit = Actor::system("webhooks").event("webhook.disable", "webhook", &job.webhook_id);
    if let Some(dis) = &outcome.disable {
        audit.detail = Some(json!({ "reason": dis.reason, "url": job.url }));
        audit
            .events
            .push(disabled_event(&job.webhook_id, &job.url, &dis.reason, t));
    }
    match ctx
        .store
        .finish_delivery(job.id, &d.owner, &outcome, &audit)
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::warn!(webhook = %job.webhook_id, event = %job.event.id,
            "webhook lease lost before the outcome was recorded"),
        Err(e) => tracing::warn!(webhook = %job.webhook_id, error = %e,
            "cannot record a webhook delivery's outcome"),
    }
    delivered
}

/// The outcome of a failed attempt: the next retry on the schedule, or
/// failed for good (410 Gone, or the schedule run out).
fn failed(
    d: &Deliverer,
    job: &DeliveryJob,
    attempts: i64,
    status: Option<u16>,
    error: String,
    t: i64,
) -> DeliveryOutcome {
    let schedule = &d.config.retry_schedule;
    let gone = status == Some(410);
    let retry = usize::try_from(attempts - 1)
        .ok()
        .and_then(|i| schedule.get(i))
        .filter(|_| !gone);
    let (state, next_at, disable) = match retry {
        Some(delay) => (DeliveryState::Pending, Some(t + jitter(*delay)), None),
        None => {
            let (reason, since) = if gone {
                ("the endpoint answered 410 Gone".to_string(), t + 1)
            } else {
                (
                    format!(
                        "no delivery succeeded since {} ({attempts} attempts): {error}",
                        crate::domain::rfc3339::format(job.created_at)
                    ),
                    job.created_at,
                )
            };
            (
                DeliveryState::Failed,
                None,
                Some(Disable {
                    reason,
                    unless_delivered_since: since,
                }),
            )
        }
    };
    if state == DeliveryState::Failed {
        tracing::warn!(webhook = %job.webhook_id, url = %job.url, event = %job.event.id, attempts, error = %error,
            "webhook delivery failed for good");
    } else {
        tracing::info!(webhook = %job.webhook_id, url = %job.url, attempts, error = %error,
            "webhook delivery failed; will retry");
    }
    DeliveryOutcome {
        state,
        attempts,
        next_at,
        last_status: status.map(i64::from),
        last_error: Some(error),
        at: t,
        disable,
    }
}

/// `delay` seconds ±20%, at least one.
fn jitter(delay: u64) -> i64 {
    let mut r = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut r);
    let f = 0.8 + 0.4 * (u32::from_le_bytes(r) as f64 / u32::MAX as f64);
    ((delay as f64) * f).round().max(1.0) as i64
}

async fn send(
    http: &reqwest::Client,
    job: &DeliveryJob,
    ts: i64,
    signature: &str,
    body: String,
) -> std::result::Result<u16, (Option<u16>, String)> {
    let res = http
        .post(&job.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &job.event.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| (None, crate::push::describe(&e)))?;
    let status = res.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err((
            Some(status.as_u16()),
            format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string(),
        ))
    }
}

/// The scheduler: announces expiries, checks usage against the included
/// counts. One pass.
pub async fn schedule_once(ctx: &Licensing) {
    let t = now();
    if let Err(e) = super::events::announce_expiries(ctx, t).await {
        tracing::warn!(error = %e, "cannot announce license expiries");
    }
    if let Err(e) = super::usage::check_limits(ctx, t).await {
        tracing::warn!(error = %e, "cannot check usage against included counts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example of the Standard Webhooks reference libraries.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }
}
