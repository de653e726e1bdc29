//! The portal dashboard's figures that no list gives: how many instances
//! are bound, which ones fail their pushes, and renewals per day.

use async_trait::async_trait;

use super::Result;
use crate::domain::Instance;

#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Instances bound to any license.
    async fn count_instances(&self) -> Result<i64>;
    /// Renewals (tokens issued for reason `renew`) issued at or after
    /// `since`, per UTC day: `(day number since the epoch, count)`, days
    /// without renewals left out, oldest first.
    async fn renewals_per_day(&self, since: i64) -> Result<Vec<(i64, i64)>>;
    /// Up to `limit` instances whose last pushes failed (the ones
    /// [`super::PushStore::count_push_backoff`] counts), those at risk first.
    async fn failing_instances(&self, limit: i64) -> Result<Vec<Instance>>;
}

pub(crate) const COUNT_INSTANCES: &str = "SELECT count(*) FROM instances";

/// ?1 since (served by `tokens_iat`).
pub(crate) const RENEWALS_PER_DAY: &str = "SELECT iat / 86400 AS day, count(*) FROM tokens \
     WHERE iat >= ?1 AND reason = 'renew' GROUP BY iat / 86400 ORDER BY day";

/// ?1 limit.
pub(crate) static FAILING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM instances WHERE push_attempts > 0 \
         ORDER BY push_at_risk DESC, push_next_at, id LIMIT ?1",
        super::sql::INSTANCE_COLS
    )
});
