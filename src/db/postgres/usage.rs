//! PostgreSQL: the usage history, and its roll-up.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::{FromSql, Json, Type};

use super::{Param, PgStore};
use crate::db::rows::Cells;
use crate::db::usage::{self, Rolled, UsageStore};
use crate::db::{Result, sql};
use crate::domain::UsageReport;
use crate::domain::usage::SeriesBuilder;

#[async_trait]
impl UsageStore for PgStore {
    async fn usage_reports(&self, lid: &str, from: i64, to: i64) -> Result<Vec<UsageReport>> {
        self.many(pg!(usage::RANGE), &[&lid, &from, &to], usage::report)
            .await
    }

    async fn usage_series(
        &self,
        lid: &str,
        from: i64,
        to: i64,
        mut series: SeriesBuilder,
    ) -> Result<SeriesBuilder> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached(pg!(usage::FOLD)).await?;
        for r in c.query(&st, &[&lid, &from, &to]).await? {
            let instance: &str = r.try_get(0)?;
            let RawJson(counters) = r.try_get(3)?;
            usage::fold(
                &mut series,
                instance,
                r.try_get(1)?,
                r.try_get(2)?,
                counters,
            )?;
        }
        Ok(series)
    }

    async fn summarize_usage_day(&self, day: i64) -> Result<u64> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let mut days = usage::DaySummaries::default();
        let st = tx.prepare_cached(pg!(usage::DAY_REPORTS)).await?;
        for r in tx.query(&st, &[&day, &(day + 86_400)]).await? {
            let RawJson(counters) = r.try_get(4)?;
            days.add(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                counters,
            )?;
        }
        let summaries = days.finish()?;
        let st = tx.prepare_cached(pg!(usage::UPSERT_DAY)).await?;
        for (lid, instance, counters) in &summaries {
            let counters: serde_json::Value = serde_json::from_str(counters)
                .map_err(|e| crate::db::StoreError::Internal(e.to_string()))?;
            tx.execute(&st, &[lid, &day, instance, &Json(&counters)])
                .await?;
        }
        let st = tx.prepare_cached(pg!(usage::ADVANCE)).await?;
        tx.execute(&st, &[&usage::DAYS_KEY, &(day + 86_400).to_string()])
            .await?;
        tx.commit().await?;
        Ok(summaries.len() as u64)
    }

    async fn usage_days_state(&self) -> Result<(Option<i64>, Option<i64>)> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached(pg!(sql::GET_SETTING)).await?;
        let done = c
            .query_opt(&st, &[&usage::DAYS_KEY])
            .await?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?
            .and_then(|v| v.parse().ok());
        let st = c.prepare_cached(usage::FIRST_REPORT).await?;
        let first: Option<i64> = c.query_one(&st, &[]).await?.try_get(0)?;
        Ok((done, first))
    }

    async fn usage_day_series(
        &self,
        lid: &str,
        from_day: i64,
        to_day: i64,
        mut series: SeriesBuilder,
    ) -> Result<SeriesBuilder> {
        let c = self.pool.get().await?;
        let st = c.prepare_cached(pg!(usage::DAY_SERIES)).await?;
        for r in c.query(&st, &[&lid, &from_day, &to_day]).await? {
            let instance: &str = r.try_get(0)?;
            let RawJson(counters) = r.try_get(2)?;
            let text = std::str::from_utf8(counters)
                .map_err(|e| crate::db::StoreError::Internal(e.to_string()))?;
            usage::add_day(&mut series, instance, r.try_get(1)?, text)?;
        }
        Ok(series)
    }
}

/// A `json` or `jsonb` value as its text, borrowed from the row (no
/// `serde_json::Value` in between).
struct RawJson<'a>(&'a [u8]);

impl<'a> FromSql<'a> for RawJson<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if *ty != Type::JSONB {
            return Ok(RawJson(raw));
        }
        // jsonb's binary format: a version byte, then the text.
        match raw.split_first() {
            Some((1, text)) => Ok(RawJson(text)),
            _ => Err("unsupported jsonb version".into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::JSONB
    }
}

/// The usage part of a prune, on the connection that holds the prune
/// lock: rolls up the reports before `before`, license after license,
/// whole days per batch (about `batch` reports), each batch a
/// repeatable-read transaction (its delete takes exactly the rows it
/// read), with `pause` after every `batch` reports.
pub(super) async fn roll_usage(
    c: &mut deadpool_postgres::Object,
    before: i64,
    batch: i64,
    pause: Duration,
) -> Result<u64> {
    let (lids_st, setting_st, next_st) = tokio::try_join!(
        c.prepare_cached(pg!(usage::ROLL_LICENSES)),
        c.prepare_cached(pg!(sql::GET_SETTING)),
        c.prepare_cached(pg!(usage::ROLL_NEXT)),
    )?;
    let lids = c
        .query(&lids_st, &[])
        .await?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<Vec<_>>>()?;
    let rolled = c
        .query_opt(&setting_st, &[&usage::ROLLED_KEY])
        .await?
        .map(|r| r.text(0))
        .transpose()?;
    let from = usage::start_at(rolled, before);
    let (mut total, mut since_rest) = (0, 0);
    for lid in lids {
        let mut lo = from;
        while lo < before {
            let ats = c
                .query(&next_st, &[&lid, &lo, &before, &batch])
                .await?
                .iter()
                .map(|r| r.int(0))
                .collect::<Result<Vec<_>>>()?;
            let Some((start, end)) = usage::batch_range(&ats, batch, before) else {
                break;
            };
            let n = roll_batch(c, &lid, start, end).await?;
            (total, since_rest, lo) = (total + n, since_rest + n, end);
            if since_rest >= batch as u64 {
                since_rest = 0;
                tokio::time::sleep(pause).await;
            }
        }
    }
    let st = c.prepare_cached(pg!(usage::SET_ROLLED)).await?;
    c.execute(&st, &[&usage::ROLLED_KEY, &before.to_string()])
        .await?;
    Ok(total)
}

/// Rolls up the reports of `lid` with `start <= at < end` (whole days) in
/// one transaction; returns how many.
async fn roll_batch(
    c: &mut deadpool_postgres::Object,
    lid: &str,
    start: i64,
    end: i64,
) -> Result<u64> {
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let (rows_st, insert_st, update_st, delete_st) = tokio::try_join!(
        tx.prepare_cached(pg!(usage::ROLL_ROWS)),
        tx.prepare_cached(pg!(usage::ROLL_INSERT)),
        tx.prepare_cached(pg!(usage::ROLL_UPDATE)),
        tx.prepare_cached(pg!(usage::ROLL_DELETE)),
    )?;
    let range: [Param<'_>; 3] = [&lid, &start, &end];
    let rows = tx
        .query(&rows_st, &range)
        .await?
        .iter()
        .map(usage::stored)
        .collect::<Result<Vec<_>>>()?;
    for w in usage::roll(&rows) {
        match w {
            Rolled::Insert {
                instance_id,
                day,
                counters,
            } => {
                tx.execute(&insert_st, &[&lid, &instance_id, &day, &Json(counters)])
                    .await?
            }
            Rolled::Update { id, counters } => {
                tx.execute(&update_st, &[&id, &Json(counters)]).await?
            }
        };
    }
    let n = tx.execute(&delete_st, &range).await?;
    tx.commit().await?;
    Ok(n)
}
