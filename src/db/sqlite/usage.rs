//! SQLite: the usage history (read on the reader connections), and its
//! roll-up (on the writer, a batch per IMMEDIATE transaction).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{Cached, SqliteStore, all, in_tx, internal, json, one};
use crate::db::Result;
use crate::db::rows::Cells;
use crate::db::sql;
use crate::db::usage::{self, Rolled, UsageStore};
use crate::domain::UsageReport;
use crate::domain::usage::SeriesBuilder;

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

    async fn usage_series(
        &self,
        lid: &str,
        from: i64,
        to: i64,
        mut series: SeriesBuilder,
    ) -> Result<SeriesBuilder> {
        let lid = lid.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(usage::FOLD)?;
            let mut rows = st.query(params![lid, from, to])?;
            while let Some(r) = rows.next()? {
                let instance = r.get_ref(0)?.as_str().map_err(internal)?;
                let counters = r.get_ref(3)?.as_bytes().map_err(internal)?;
                usage::fold(&mut series, instance, r.get(1)?, r.get(2)?, counters)?;
            }
            Ok(series)
        })
        .await
    }

    async fn summarize_usage_day(&self, day: i64) -> Result<u64> {
        self.write(move |c| {
            let mut days = usage::DaySummaries::default();
            {
                let mut st = c.prepare_cached(usage::DAY_REPORTS)?;
                let mut rows = st.query(params![day, day + 86_400])?;
                while let Some(r) = rows.next()? {
                    let lid = r.get_ref(0)?.as_str().map_err(internal)?;
                    let instance = r.get_ref(1)?.as_str().map_err(internal)?;
                    let counters = r.get_ref(4)?.as_bytes().map_err(internal)?;
                    days.add(lid, instance, r.get(2)?, r.get(3)?, counters)?;
                }
            }
            let summaries = days.finish()?;
            for (lid, instance, counters) in &summaries {
                c.exec(usage::UPSERT_DAY, params![lid, day, instance, counters])?;
            }
            c.exec(
                usage::ADVANCE,
                params![usage::DAYS_KEY, (day + 86_400).to_string()],
            )?;
            Ok(summaries.len() as u64)
        })
        .await
    }

    async fn usage_days_state(&self) -> Result<(Option<i64>, Option<i64>)> {
        self.read(|c| {
            let done = one(c, sql::GET_SETTING, [usage::DAYS_KEY], |r| r.text(0))?
                .and_then(|v| v.parse().ok());
            let first: Option<i64> = c.row(usage::FIRST_REPORT, [], |r| r.get(0))?;
            Ok((done, first))
        })
        .await
    }

    async fn usage_day_series(
        &self,
        lid: &str,
        from_day: i64,
        to_day: i64,
        mut series: SeriesBuilder,
    ) -> Result<SeriesBuilder> {
        let lid = lid.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(usage::DAY_SERIES)?;
            let mut rows = st.query(params![lid, from_day, to_day])?;
            while let Some(r) = rows.next()? {
                let instance = r.get_ref(0)?.as_str().map_err(internal)?;
                let counters = r.get_ref(2)?.as_str().map_err(internal)?;
                usage::add_day(&mut series, instance, r.get(1)?, counters)?;
            }
            Ok(series)
        })
        .await
    }
}

impl SqliteStore {
    /// The usage part of a prune: rolls up the reports before `before`,
    /// license after license, whole days per batch (about `batch`
    /// reports). The writer is the renewals' too: after each batch a rest
    /// as long as it took, and `pause` after every `batch` reports.
    pub(super) async fn roll_usage(&self, before: i64, batch: i64, pause: Duration) -> Result<u64> {
        let (lids, from) = self
            .read(move |c| {
                let lids = all(c, usage::ROLL_LICENSES, [], |r| r.text(0))?;
                let rolled = one(c, sql::GET_SETTING, [usage::ROLLED_KEY], |r| r.text(0))?;
                Ok((lids, usage::start_at(rolled, before)))
            })
            .await?;
        let (mut rolled, mut since_rest) = (0, 0);
        for lid in lids {
            let mut lo = from;
            while lo < before {
                let started = Instant::now();
                let l = lid.clone();
                let Some((n, end)) = self
                    .call(move |c| roll_batch(c, &l, lo, before, batch))
                    .await?
                else {
                    break;
                };
                (rolled, since_rest, lo) = (rolled + n, since_rest + n, end);
                let mut rest = started.elapsed();
                if since_rest >= batch as u64 {
                    (rest, since_rest) = (rest.max(pause), 0);
                }
                tokio::time::sleep(rest).await;
            }
        }
        self.call(move |c| {
            c.exec(
                usage::SET_ROLLED,
                params![usage::ROLLED_KEY, before.to_string()],
            )?;
            Ok(())
        })
        .await?;
        Ok(rolled)
    }
}

/// One batch of license `lid` from `from`: the reports rolled up and where
/// the next batch starts; `None` when nothing is left before `before`.
fn roll_batch(
    c: &mut Connection,
    lid: &str,
    from: i64,
    before: i64,
    batch: i64,
) -> Result<Option<(u64, i64)>> {
    let ats = all(
        c,
        usage::ROLL_NEXT,
        params![lid, from, before, batch],
        |r| r.int(0),
    )?;
    let Some((start, end)) = usage::batch_range(&ats, batch, before) else {
        return Ok(None);
    };
    in_tx(c, |c| {
        let rows = all(c, usage::ROLL_ROWS, params![lid, start, end], |r| {
            usage::stored(r)
        })?;
        for w in usage::roll(&rows) {
            match w {
                Rolled::Insert {
                    instance_id,
                    day,
                    counters,
                } => c.exec(
                    usage::ROLL_INSERT,
                    params![lid, instance_id, day, json(&counters)?],
                )?,
                Rolled::Update { id, counters } => {
                    c.exec(usage::ROLL_UPDATE, params![id, json(&counters)?])?
                }
            };
        }
        let n = c.exec(usage::ROLL_DELETE, params![lid, start, end])?;
        Ok(Some((n as u64, end)))
    })
}
