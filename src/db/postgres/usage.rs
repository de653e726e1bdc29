//! PostgreSQL: the usage history.

use async_trait::async_trait;

use super::PgStore;
use crate::db::Result;
use crate::db::usage::{self, UsageStore};
use crate::domain::UsageReport;

#[async_trait]
impl UsageStore for PgStore {
    async fn usage_reports(&self, lid: &str, from: i64, to: i64) -> Result<Vec<UsageReport>> {
        self.many(pg!(usage::RANGE), &[&lid, &from, &to], usage::report)
            .await
    }
}
