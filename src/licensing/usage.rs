//! Usage history of a license: its instances' reports, as a series.

use serde::Serialize;

use super::{Error, Licensing, Result};
use crate::domain::rfc3339;
use crate::domain::usage::{Bucket, SeriesBuilder, UsageBucket};

/// The most buckets one answer may hold.
pub const MAX_BUCKETS: i64 = 10_000;

/// A license's usage over a range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub lid: String,
    pub bucket: Bucket,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub from: i64,
    /// Exclusive.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub to: i64,
    /// The buckets with at least one report, oldest first.
    pub buckets: Vec<UsageBucket>,
}

/// The usage of license `lid` with `from <= at < to` (default: the 30 days
/// up to now) in buckets of `bucket`.
pub async fn get(
    ctx: &Licensing,
    lid: &str,
    from: Option<i64>,
    to: Option<i64>,
    bucket: Bucket,
) -> Result<Usage> {
    let to = to.unwrap_or_else(|| charter_token::now().saturating_add(1));
    let from = from.unwrap_or_else(|| to.saturating_sub(30 * 86_400));
    if from >= to {
        return Err(Error::invalid("from", "must be before to"));
    }
    let width = match bucket {
        Bucket::Hour => 3600,
        Bucket::Day => 86_400,
        Bucket::Month => 28 * 86_400,
    };
    if (to - from) / width > MAX_BUCKETS {
        return Err(Error::invalid(
            "bucket",
            format!(
                "the range holds more than {MAX_BUCKETS} buckets; use a wider bucket or a shorter range"
            ),
        ));
    }
    if ctx.store.get_license(lid).await?.is_none() {
        return Err(Error::NotFound(format!("license {lid} not found")));
    }
    let series = series(ctx, lid, from, to, bucket).await?;
    Ok(Usage {
        lid: lid.to_string(),
        bucket,
        from,
        to,
        buckets: series.finish(),
    })
}

/// Checks each license that got usage reports in the latest complete day
/// (UTC) before `t` against what it includes, and sets or clears its
/// `over_limit` (with `license.over_limit` / `license.back_within_limit`).
/// A license without reports that day keeps its state. Idempotent: the
/// store changes a license only on a transition, so replicas running the
/// check at once announce each transition once. Returns the transitions.
pub async fn check_limits(ctx: &Licensing, t: i64) -> Result<u64, crate::db::StoreError> {
    use crate::domain::usage::{last_sums, over_included};
    use crate::domain::{LicenseStatus, OverLimit};

    let day_end = Bucket::Day.start(t);
    let day_start = day_end - 86_400;
    let mut changed = 0;
    for lid in ctx.store.licenses_reporting(day_start, day_end).await? {
        let Some(mut l) = ctx.store.get_license(&lid).await? else {
            continue;
        };
        if l.status != LicenseStatus::Active {
            continue;
        }
        let reports = ctx.store.usage_reports(&lid, day_start, day_end).await?;
        let over = over_included(&l.terms, &last_sums(&reports));
        let next = match (over.is_empty(), &l.over_limit) {
            (false, None) => Some(OverLimit {
                since: day_end,
                day: day_start,
                counters: over,
            }),
            (true, Some(_)) => None,
            _ => continue,
        };
        l.over_limit = next;
        let action = if l.over_limit.is_some() {
            "license.over_limit"
        } else {
            "license.within_limit"
        };
        let mut audit = super::Actor::system("usage").event(action, "license", &lid);
        let value = match &l.over_limit {
            Some(o) => Some(
                serde_json::to_value(o)
                    .map_err(|e| crate::db::StoreError::Internal(e.to_string()))?,
            ),
            None => None,
        };
        audit.detail =
            Some(serde_json::json!({ "over_limit": value, "day": rfc3339::format(day_start) }));
        audit.events.push(super::events::license_limit(&l, t));
        if ctx
            .store
            .set_over_limit(&lid, value.as_ref(), &audit)
            .await?
        {
            changed += 1;
            tracing::info!(lid = %lid, over = value.is_some(), "license usage against its included counts changed");
        }
    }
    Ok(changed)
}

/// The series of `[from, to)`: for day and month buckets, the days that
/// [`summarize`] has done from their summaries (one row per instance and
/// day), and the reports only before and after them; for hour buckets,
/// the reports.
async fn series(
    ctx: &Licensing,
    lid: &str,
    from: i64,
    to: i64,
    bucket: Bucket,
) -> Result<SeriesBuilder> {
    let store = &ctx.store;
    let b = SeriesBuilder::new(bucket);
    let summarized = match bucket {
        Bucket::Hour => None,
        _ => store.usage_days_state().await?.0,
    };
    let first_day = Bucket::Day.start(from.saturating_add(86_399));
    let days_end = Bucket::Day.start(to).min(summarized.unwrap_or(i64::MIN));
    if first_day >= days_end {
        return Ok(store.usage_series(lid, from, to, b).await?);
    }
    let b = store.usage_series(lid, from, first_day, b).await?;
    let b = store.usage_day_series(lid, first_day, days_end, b).await?;
    Ok(store.usage_series(lid, days_end, to, b).await?)
}

/// Brings the daily summaries up to the start of the day that held `t`
/// an hour ago (so a report recorded in a transaction that began before
/// midnight is in its day's summary), a day per transaction, from where
/// the last run stopped (the oldest report's day the first time).
/// Replicas running it at once write the same summaries. Returns the days
/// summarized.
pub async fn summarize(ctx: &Licensing, t: i64) -> Result<u64, crate::db::StoreError> {
    let target = Bucket::Day.start(t - 3600);
    let (done, first) = ctx.store.usage_days_state().await?;
    let Some(mut day) = done.or(first.map(|f| Bucket::Day.start(f))) else {
        return Ok(0);
    };
    let mut n = 0;
    while day < target {
        ctx.store.summarize_usage_day(day).await?;
        day += 86_400;
        n += 1;
    }
    if n > 0 {
        tracing::debug!(days = n, "usage summarized");
    }
    Ok(n)
}
