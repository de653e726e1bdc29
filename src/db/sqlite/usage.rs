//! SQLite: the usage history (read on the reader connections).

use async_trait::async_trait;
use rusqlite::params;

use super::{SqliteStore, all};
use crate::db::Result;
use crate::db::usage::{self, UsageStore};
use crate::domain::UsageReport;

#[async_trait]
impl UsageStore for SqliteStore {
    async fn usage_reports(&self, lid: &str, from: i64, to: i64) -> Result<Vec<UsageReport>> {
        let lid = lid.to_string();
        self.read(move |c| {
            all(c, usage::RANGE, params![lid, from, to], |r| {
                usage::report(r)
            })
        })
        .await
    }
}
