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
    let series = ctx
        .store
        .usage_series(lid, from, to, SeriesBuilder::new(bucket))
        .await?;
    Ok(Usage {
        lid: lid.to_string(),
        bucket,
        from,
        to,
        buckets: series.finish(),
    })
}
