//! Retention: the scheduler prunes token history older than
//! `--token-history-days` (keeping every token an instance still holds:
//! its current one and a push pending delivery) and audit events older
//! than `--audit-retention-days`, and rolls usage reports older than
//! `--usage-retention-days` up into one report per instance and UTC day
//! (each counter's maximum). Renewals go on meanwhile: rows go a
//! batch at a time, each batch its own short transaction, and one replica
//! prunes at a time (the store's prune lock).

use std::time::Duration;

use charter_token::now;

use super::Licensing;
use super::tokens::IDEMPOTENCY_WINDOW;
use crate::db::{PrunePlan, Pruned, StoreError};
use crate::domain::usage::Bucket;

/// Rows deleted per statement.
pub const BATCH: i64 = 1000;
/// Rest between batches.
pub const PAUSE: Duration = Duration::from_millis(20);

/// One prune as configured: `None` when another run or replica is pruning.
pub async fn run_once(ctx: &Licensing) -> Result<Option<Pruned>, StoreError> {
    // Summaries first: the roll-up below replaces old reports.
    super::usage::summarize(ctx, now()).await?;
    let pruned = run(ctx, BATCH, PAUSE).await?;
    prune_events(ctx, BATCH, PAUSE).await?;
    Ok(pruned)
}

/// Deletes the events older than `--event-retention-days` that no
/// delivery waits for (with their deliveries), a batch at a time. Replicas
/// doing it at once delete each row once. Returns how many.
pub async fn prune_events(ctx: &Licensing, batch: i64, pause: Duration) -> Result<u64, StoreError> {
    let Some(days) = ctx.config.retention.event_days else {
        return Ok(0);
    };
    let before = now() - days * 86_400;
    let mut total = 0;
    loop {
        let n = ctx.store.prune_events(before, batch).await?;
        total += n;
        if n < batch as u64 {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    ctx.metrics.pruned("events", total);
    if total > 0 {
        tracing::info!(events = total, "pruned");
    }
    Ok(total)
}

/// [`run_once`] with another batch size and pause.
pub async fn run(
    ctx: &Licensing,
    batch: i64,
    pause: Duration,
) -> Result<Option<Pruned>, StoreError> {
    let r = ctx.config.retention;
    let t = now();
    let plan = PrunePlan {
        // Never a token a retry of a renewal may still be answered with.
        tokens_before: r
            .token_history_days
            .map(|d| t - (d * 86_400).max(IDEMPOTENCY_WINDOW)),
        audit_before: r.audit_days.map(|d| t - d * 86_400),
        // Whole days: a day is rolled up once, not its morning in one run
        // and its evening in the next.
        usage_before: Some(Bucket::Day.start(t - r.usage_days * 86_400)),
        batch,
        pause,
    };
    let pruned = ctx.store.prune(&plan).await?;
    match pruned {
        Some(p) => {
            ctx.metrics.pruned("tokens", p.tokens);
            ctx.metrics.pruned("audit", p.audit);
            ctx.metrics.pruned("usage", p.usage);
            if p != Pruned::default() {
                tracing::info!(
                    tokens = p.tokens,
                    audit = p.audit,
                    usage = p.usage,
                    "pruned"
                );
            }
        }
        None => tracing::debug!("another run is pruning"),
    }
    Ok(pruned)
}
