//! Renewal push, the use case: claim the instances whose renewal is due,
//! issue each a fresh token (reason `push`) and have it delivered in the
//! instance's dialect; revocations are delivered the same way. Claims are
//! leases in the database, so several replicas never push the same renewal
//! and a replica that dies mid-push loses nothing: its lease expires and
//! another one delivers. A token issued but not confirmed delivered is
//! redelivered as is, not reissued. The outcome is written by
//! [`crate::db::PushStore::finish_push`], which owns only the push columns.

use charter_token::{DAY, now};
use serde_json::json;

use super::tokens::{Request, StoreOrSign, issue};
use super::{Actor, Licensing, Result};
use crate::db::{PushJob, PushOutcome, Recipient};
use crate::domain::{Instance, License, TokenReason, check_renewable};
use crate::push::{Failure, RunStats, backoff, send_removal, send_token, url_allowed};

/// Claims and processes every due instance, a batch at a time. Returns at
/// once when another run of this process is in progress.
pub async fn run_once(ctx: &Licensing) -> Result<RunStats> {
    let pusher = ctx.pusher.clone();
    let Ok(_guard) = pusher.running.try_lock() else {
        return Ok(RunStats::default());
    };
    let stats = super::drain(
        ctx,
        pusher.config.concurrency,
        "push",
        || {
            let t = now();
            let lease_until = t + pusher.config.lease.as_secs() as i64;
            ctx.store
                .claim_pushes(&pusher.owner, t, lease_until, pusher.config.batch)
        },
        |ctx, job| async move { process(&ctx, job).await },
    )
    .await?;
    if stats != RunStats::default() {
        tracing::info!(
            delivered = stats.delivered,
            failed = stats.failed,
            "push run"
        );
    }
    Ok(stats)
}

/// Pushes one instance now, due or not. `None` when another run holds it
/// or its license cannot be pushed; else whether it was delivered.
pub async fn push_one(ctx: &Licensing, lid: &str, id: &str) -> Result<Option<bool>> {
    let t = now();
    let lease_until = t + ctx.pusher.config.lease.as_secs() as i64;
    match ctx
        .store
        .claim_push(lid, id, &ctx.pusher.owner, t, lease_until)
        .await?
    {
        Some(job) => Ok(Some(process(ctx, job).await)),
        None => Ok(None),
    }
}

/// Delivers one claimed instance's token (or removal) and records the
/// outcome. True when delivered.
async fn process(ctx: &Licensing, job: PushJob) -> bool {
    let i = job.instance;
    let dialect = i.dialect.as_str();
    let t = now();
    // Read once: the delivery needs the terms, a failure the warning window.
    let license = ctx.store.get_license(&i.lid).await;
    // The token awaiting delivery, if any (one issued by this attempt too).
    let mut pending = i.push_pending_jti.clone();
    let outcome = match &license {
        Ok(l) => {
            let sealed = job.credentials.as_deref();
            deliver(ctx, &i, l.as_ref(), sealed, t, &mut pending).await
        }
        Err(e) => Err(Failure::other(e.to_string())),
    };
    let delivered = outcome.is_ok();
    ctx.metrics
        .pushes
        .get_or_create(&crate::metrics::PushLabels {
            dialect: dialect.into(),
            outcome: if delivered { "delivered" } else { "failed" }.into(),
        })
        .inc();
    let outcome = match outcome {
        Ok(done) => done,
        Err(e) => {
            let warn_days = match &license {
                Ok(Some(l)) => l.terms.tok_exp_warn_days,
                _ => 0,
            };
            failed(ctx, &i, e, warn_days, pending, t)
        }
    };
    let mut outcome = outcome;
    if outcome.push_at_risk != i.push_at_risk {
        let error = outcome.push_last_error.as_deref();
        outcome
            .events
            .push(super::events::push_risk(&i, outcome.push_at_risk, error));
    }
    match ctx
        .store
        .finish_push(&i.id, &ctx.pusher.owner, &outcome)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(instance = %i.url, "push lease lost before the outcome was recorded")
        }
        Err(e) => tracing::warn!(instance = %i.url, error = %e, "cannot record the push outcome"),
    }
    delivered
}

/// The outcome of a failed attempt: back off, and say whether the instance
/// is at risk (the token it holds expires within the warning window).
fn failed(
    ctx: &Licensing,
    i: &Instance,
    failure: Failure,
    warn_days: i64,
    pending: Option<String>,
    t: i64,
) -> PushOutcome {
    let attempts = i.push_attempts + 1;
    if i.removal_pending && failure.is_permanent() {
        // The instance refuses the removal for good (say, a Consul with no
        // built-in license to fall back to): retrying cannot help. Stop,
        // and leave it marked at risk for a person; its revocation still
        // reaches it through the revocation list it polls.
        let error = format!("{failure}; the removal was refused, not retried");
        tracing::warn!(lid = %i.lid, instance = %i.url, error = %error,
            "an instance refused the removal of a revoked license");
        return PushOutcome {
            push_next_at: None,
            push_attempts: attempts,
            push_last_error: Some(error),
            push_last_ok_at: i.push_last_ok_at,
            push_at_risk: true,
            removal_pending: true,
            push_pending_jti: pending,
            token_expires_at: i.token_expires_at,
            events: Vec::new(),
        };
    }
    let error = failure.to_string();
    let at_risk = i
        .token_expires_at
        .is_none_or(|exp| t >= exp - warn_days * DAY);
    if at_risk {
        tracing::warn!(lid = %i.lid, instance = %i.url, attempts, error = %error,
            "pushes are failing and the instance's token expires soon");
    } else {
        tracing::info!(lid = %i.lid, instance = %i.url, attempts, error = %error, "push failed; will retry");
    }
    PushOutcome {
        push_next_at: Some(t + backoff(&ctx.pusher.config, attempts)),
        push_attempts: attempts,
        push_last_error: Some(error),
        push_last_ok_at: i.push_last_ok_at,
        push_at_risk: at_risk,
        removal_pending: i.removal_pending,
        push_pending_jti: pending,
        token_expires_at: i.token_expires_at,
        events: Vec::new(),
    }
}

/// The delivery itself; on success, the push state to record.
async fn deliver(
    ctx: &Licensing,
    i: &Instance,
    license: Option<&License>,
    sealed: Option<&str>,
    t: i64,
    pending: &mut Option<String>,
) -> Result<PushOutcome, Failure> {
    let credentials = match sealed {
        None => None,
        Some(s) => {
            let c = ctx
                .sealer
                .open(s, &i.id, &i.url)
                .map_err(|e| Failure::other(e.to_string()))?;
            Some(c)
        }
    };
    if !url_allowed(&i.url, ctx.pusher.config.refuse_private) {
        return Err(Failure::other(
            "refused: the instance URL is a private or loopback address",
        ));
    }
    let http = &ctx.pusher.http;
    let mut done = PushOutcome {
        push_next_at: None,
        push_attempts: 0,
        push_last_error: None,
        push_last_ok_at: Some(t),
        push_at_risk: false,
        removal_pending: false,
        push_pending_jti: None,
        token_expires_at: i.token_expires_at,
        events: Vec::new(),
    };
    if i.removal_pending {
        send_removal(http, i.dialect, &i.url, credentials.as_ref()).await?;
        tracing::info!(lid = %i.lid, instance = %i.url, "revocation delivered");
        return Ok(done);
    }
    let license = license.ok_or_else(|| Failure::other("license is gone"))?;
    check_renewable(license, t).map_err(|e| Failure::other(e.to_string()))?;
    // Redeliver a token issued for an earlier attempt, if still good.
    let stored = match pending.as_deref() {
        Some(jti) => ctx
            .store
            .get_token(jti)
            .await
            .map_err(|e| Failure::other(e.to_string()))?,
        None => None,
    };
    let (token, iat, exp) = match stored.filter(|p| p.exp > t + 60) {
        Some(p) => (p.token, p.iat, p.exp),
        None => {
            let account = ctx
                .store
                .get_account(&license.account_id)
                .await
                .map_err(|e| Failure::other(e.to_string()))?
                .ok_or_else(|| Failure::other("account is gone"))?;
            let req = Request {
                license,
                account: &account,
                url: &i.url,
                to: Recipient::Bound { id: i.id.clone() },
                reason: TokenReason::Push,
                renewed_from: None,
                usage: None,
            };
            let mut event = Actor::system("push").event("token.push", "token", "");
            event.detail = Some(json!({"lid": i.lid, "instance": i.url}));
            let (token, claims) = issue(ctx, req, event, t)
                .await
                .map_err(|e: StoreOrSign| Failure::other(format!("cannot issue: {e}")))?;
            ctx.metrics.token_issued("push");
            *pending = Some(claims.jti.clone());
            (token, claims.iat, claims.exp)
        }
    };
    send_token(http, i.dialect, &i.url, &token, credentials.as_ref()).await?;
    done.token_expires_at = Some(exp);
    done.push_next_at = Some(iat + license.terms.update_days * DAY);
    tracing::info!(lid = %i.lid, instance = %i.url, "token pushed");
    Ok(done)
}
