//! Usage history: the reports instances send with their renewals, one row
//! each, written in the renewal's transaction ([`super::Store::record_issuance`])
//! and read per license and time range.
//!
//! Retention rolls reports older than `--usage-retention-days` up (it does
//! not drop them): per license, instance and UTC day, one `daily` row at
//! the start of the day with each counter's maximum over that day's
//! reports, written in the transaction that deletes them. The SQL and the
//! roll-up are here, once for both stores; the stores run them a batch at
//! a time ([`super::Store::prune`]): a license at a time (through its
//! `usage_reports_license` index: V9 added no index on `at` alone), whole
//! days of it per batch, so a day is never split between transactions.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::rows::Cells;
use super::{Result, StoreError};
use crate::domain::UsageReport;
use crate::domain::usage::{Bucket, ReportCounters, SeriesBuilder, daily_max};

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Summarizes the UTC day starting at `day` (every license's reports
    /// in it: each instance's counters' maximum and last value) into
    /// `usage_days`, replacing what was there, and moves the summaries'
    /// watermark ([`DAYS_KEY`]) to the day's end unless it is past it
    /// already; one transaction. Returns the summaries written.
    async fn summarize_usage_day(&self, day: i64) -> Result<u64>;
    /// Up to when (exclusive) `usage_days` is complete, and the time of
    /// the oldest report (where summarizing starts the first time).
    async fn usage_days_state(&self) -> Result<(Option<i64>, Option<i64>)>;
    /// Adds the summaries of license `lid` for the days in
    /// `[from_day, to_day)` to `series` (day or month buckets).
    async fn usage_day_series(
        &self,
        lid: &str,
        from_day: i64,
        to_day: i64,
        series: SeriesBuilder,
    ) -> Result<SeriesBuilder>;
    /// The reports of license `lid` with `from <= at < to`, oldest first;
    /// rolled-up days as one `daily` report at the start of the day.
    async fn usage_reports(&self, lid: &str, from: i64, to: i64) -> Result<Vec<UsageReport>>;
    /// Folds the same reports into `series` as they are read ([`fold`]),
    /// in no particular order (ties of `at` go by row id), and returns it.
    async fn usage_series(
        &self,
        lid: &str,
        from: i64,
        to: i64,
        series: SeriesBuilder,
    ) -> Result<SeriesBuilder>;
}

/// ?1 lid, ?2 instance, ?3 at, ?4 counters.
pub(crate) const INSERT: &str =
    "INSERT INTO usage_reports (lid, instance_id, at, counters) VALUES (?1, ?2, ?3, ?4)";

/// ?1 lid, ?2 from, ?3 to (served by `usage_reports_license`).
pub(crate) const RANGE: &str = "SELECT instance_id, at, counters, daily FROM usage_reports \
     WHERE lid = ?1 AND at >= ?2 AND at < ?3 ORDER BY at, id";

/// ?1 lid, ?2 from, ?3 to: what [`fold`] takes, unordered (the index gives
/// time order anyway on SQLite; PostgreSQL may read the heap in its own).
pub(crate) const FOLD: &str = "SELECT instance_id, at, id, counters FROM usage_reports \
     WHERE lid = ?1 AND at >= ?2 AND at < ?3";

/// Adds a stored report to `series`, its counters (JSON text) parsed in
/// place: names borrowed from the text, no map built per report. Values
/// that are not integers are left out. (Reading 100,000 reports as
/// [`UsageReport`]s, each a `BTreeMap` built from a `serde_json::Value`,
/// and then sorting them cost 230 ms on SQLite and 365 ms on PostgreSQL
/// per query in the usage bench; see README, Benchmarks.)
pub(crate) fn fold(
    series: &mut SeriesBuilder,
    instance_id: &str,
    at: i64,
    id: i64,
    counters: &[u8],
) -> Result<()> {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(counters);
    de.deserialize_map(Fold(series.report(instance_id, at, id)))
        .and_then(|()| de.end())
        .map_err(|e| StoreError::Internal(format!("usage counters: {e}")))
}

/// Visits a counters object into a report of the series.
struct Fold<'a>(ReportCounters<'a>);

impl<'de> serde::de::Visitor<'de> for Fold<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of counters")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(Name(name)) = map.next_key()? {
            if let Int(Some(value)) = map.next_value()? {
                self.0.add(&name, value);
            }
        }
        Ok(())
    }
}

/// A counter's name, borrowed from the JSON text unless it has escapes.
struct Name<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a counter name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(v.to_string().into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A counter's value when it is an integer (`None`: anything else).
struct Int(Option<i64>);

impl<'de> serde::Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess};
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a counter value")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Int, E> {
                Ok(Int(Some(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_unit<E>(self) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Int, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Int(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Int, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Int(None))
            }
        }
        d.deserialize_any(V)
    }
}

pub(crate) fn report(r: &impl Cells) -> Result<UsageReport> {
    Ok(UsageReport {
        instance_id: r.text(0)?,
        at: r.int(1)?,
        counters: r.json(2)?,
        daily: r.flag(3)?,
    })
}

// Daily summaries.

/// The setting that says up to when `usage_days` is complete.
pub(crate) const DAYS_KEY: &str = "usage_days_before";
/// ?1 from, ?2 to: every license's reports of a day (`usage_reports_at`).
pub(crate) const DAY_REPORTS: &str = "SELECT lid, instance_id, at, id, counters FROM usage_reports \
     WHERE at >= ?1 AND at < ?2";
/// ?1 lid, ?2 day, ?3 instance, ?4 counters (`{"users": {"max": 8, "last": 6}}`).
pub(crate) const UPSERT_DAY: &str = "INSERT INTO usage_days (lid, day, instance_id, counters) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (lid, day, instance_id) DO UPDATE SET counters = excluded.counters";
/// ?1 key, ?2 value: moves a watermark forward, never back.
pub(crate) const ADVANCE: &str = "INSERT INTO settings (key, value) VALUES (?1, ?2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value \
     WHERE CAST(settings.value AS BIGINT) < CAST(excluded.value AS BIGINT)";
pub(crate) const FIRST_REPORT: &str = "SELECT min(at) FROM usage_reports";
/// ?1 lid, ?2 from day, ?3 to day.
pub(crate) const DAY_SERIES: &str = "SELECT instance_id, day, counters FROM usage_days \
     WHERE lid = ?1 AND day >= ?2 AND day < ?3";

/// The summaries of one day from its reports, `(lid, instance, counters)`
/// with counters as JSON `{"name": {"max": .., "last": ..}}`.
#[derive(Default)]
pub(crate) struct DaySummaries {
    licenses: BTreeMap<String, SeriesBuilder>,
}

impl DaySummaries {
    /// One report (a row of [`DAY_REPORTS`]).
    pub(crate) fn add(
        &mut self,
        lid: &str,
        instance_id: &str,
        at: i64,
        id: i64,
        counters: &[u8],
    ) -> Result<()> {
        if !self.licenses.contains_key(lid) {
            self.licenses
                .insert(lid.to_string(), SeriesBuilder::new(Bucket::Day));
        }
        let series = self.licenses.get_mut(lid).expect("inserted above");
        fold(series, instance_id, at, id, counters)
    }

    pub(crate) fn finish(self) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for (lid, series) in self.licenses {
            for bucket in series.finish() {
                for (instance, counters) in bucket.instances {
                    let json = serde_json::to_string(&counters)
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                    out.push((lid.clone(), instance, json));
                }
            }
        }
        Ok(out)
    }
}

/// Adds one stored summary (counters as JSON text) to `series`.
pub(crate) fn add_day(
    series: &mut SeriesBuilder,
    instance_id: &str,
    day: i64,
    counters: &str,
) -> Result<()> {
    let stats: BTreeMap<String, crate::domain::usage::Stat> = serde_json::from_str(counters)
        .map_err(|e| StoreError::Internal(format!("usage summary: {e}")))?;
    let mut c = series.day(instance_id, day);
    for (name, stat) in &stats {
        c.add_stat(name, *stat);
    }
    Ok(())
}

// Roll-up.

/// The licenses whose reports are rolled up, one after the other.
pub(crate) const ROLL_LICENSES: &str = "SELECT lid FROM licenses ORDER BY lid";
/// ?1 lid, ?2 from, ?3 before, ?4 at most: the times of the oldest
/// reports not rolled up yet, from which [`batch_range`] picks whole days.
pub(crate) const ROLL_NEXT: &str = "SELECT at FROM usage_reports \
     WHERE lid = ?1 AND at >= ?2 AND at < ?3 AND daily = FALSE ORDER BY at LIMIT ?4";
/// ?1 lid, ?2 from, ?3 to: a batch's reports, raw and daily.
pub(crate) const ROLL_ROWS: &str = "SELECT id, instance_id, at, counters, daily FROM usage_reports \
     WHERE lid = ?1 AND at >= ?2 AND at < ?3";
/// ?1 lid, ?2 from, ?3 to: the raw reports [`ROLL_ROWS`] read (the same
/// range in the same transaction; on PostgreSQL a repeatable-read one, so
/// the same rows).
pub(crate) const ROLL_DELETE: &str = "DELETE FROM usage_reports \
     WHERE lid = ?1 AND at >= ?2 AND at < ?3 AND daily = FALSE";
/// ?1 lid, ?2 instance, ?3 start of the day, ?4 counters.
pub(crate) const ROLL_INSERT: &str = "INSERT INTO usage_reports (lid, instance_id, at, counters, daily) \
     VALUES (?1, ?2, ?3, ?4, TRUE)";
/// ?1 id, ?2 counters: a day rolled up before gets the rest of its reports
/// (those that were younger than the cutoff then).
pub(crate) const ROLL_UPDATE: &str = "UPDATE usage_reports SET counters = ?2 WHERE id = ?1";

/// Where the last complete roll-up ended (settings key): the next run
/// starts at that day, instead of walking every license's daily rows.
pub(crate) const ROLLED_KEY: &str = "usage_rolled_before";
pub(crate) const SET_ROLLED: &str = "INSERT INTO settings (key, value) VALUES (?1, ?2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Where a roll-up run starts: the day the last complete one ended in
/// (`rolled`, as the settings hold it), or the beginning.
pub(crate) fn start_at(rolled: Option<String>, before: i64) -> i64 {
    rolled
        .and_then(|v| v.parse::<i64>().ok())
        .map_or(i64::MIN, |t| Bucket::Day.start(t.min(before)))
}

/// A stored report as the roll-up reads it ([`ROLL_ROWS`]): its counters
/// as they are, since only integer values are rolled up.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub id: i64,
    pub instance_id: String,
    pub at: i64,
    pub counters: serde_json::Value,
    pub daily: bool,
}

pub(crate) fn stored(r: &impl Cells) -> Result<Stored> {
    Ok(Stored {
        id: r.int(0)?,
        instance_id: r.text(1)?,
        at: r.int(2)?,
        counters: r.json(3)?,
        daily: r.flag(4)?,
    })
}

/// What a batch writes besides deleting its raw reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rolled {
    /// A new daily report ([`ROLL_INSERT`]).
    Insert {
        instance_id: String,
        day: i64,
        counters: BTreeMap<String, i64>,
    },
    /// A daily report that gets more of its day ([`ROLL_UPDATE`]).
    Update {
        id: i64,
        counters: BTreeMap<String, i64>,
    },
}

/// Where the next batch of a license starts and ends, from the times of
/// its oldest `batch` unrolled reports (`ats`, oldest first; `None` when
/// there are none): from the start of the first one's day to the start of
/// the last one's (whose day may go on past the batch), or the end of the
/// first day when they all fall on it, or `before` when fewer than `batch`
/// are left; never past `before`.
pub(crate) fn batch_range(ats: &[i64], batch: i64, before: i64) -> Option<(i64, i64)> {
    let first = Bucket::Day.start(*ats.first()?);
    let end = if (ats.len() as i64) < batch {
        before
    } else {
        let last = Bucket::Day.start(*ats.last()?);
        if last == first {
            Bucket::Day.next(first)
        } else {
            last
        }
    };
    Some((first, end.min(before)))
}

/// The daily reports a batch writes: per instance and day with a raw
/// report, each counter's maximum over the day's raw reports and its
/// daily report if it has one already (then updated, else inserted).
pub(crate) fn roll(rows: &[Stored]) -> Vec<Rolled> {
    /// One instance's day.
    #[derive(Default)]
    struct Day<'a> {
        /// Its daily report, if rolled up before.
        daily: Option<i64>,
        reports: Vec<&'a serde_json::Value>,
        /// Whether it has a report to roll up.
        raw: bool,
    }
    let mut days: BTreeMap<(&str, i64), Day<'_>> = BTreeMap::new();
    for r in rows {
        let day = days
            .entry((r.instance_id.as_str(), Bucket::Day.start(r.at)))
            .or_default();
        if r.daily {
            day.daily.get_or_insert(r.id);
        } else {
            day.raw = true;
        }
        day.reports.push(&r.counters);
    }
    days.into_iter()
        .filter(|(_, d)| d.raw)
        .map(|((instance_id, day), d)| {
            let counters = daily_max(d.reports);
            match d.daily {
                Some(id) => Rolled::Update { id, counters },
                None => Rolled::Insert {
                    instance_id: instance_id.to_string(),
                    day,
                    counters,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400;

    fn row(id: i64, instance: &str, at: i64, counters: serde_json::Value, daily: bool) -> Stored {
        Stored {
            id,
            instance_id: instance.into(),
            at,
            counters,
            daily,
        }
    }

    #[test]
    fn the_fold_reads_counters_in_place_and_skips_what_is_not_an_integer() {
        use crate::domain::usage::{Stat, series};
        let d = 20_000 * DAY;
        let mut b = SeriesBuilder::new(Bucket::Day);
        fold(
            &mut b,
            "a",
            d + 9,
            2,
            br#"{"users": 4, "note": "x", "r": 1.5}"#,
        )
        .expect("fold");
        fold(
            &mut b,
            "a",
            d + 9,
            1,
            br#"{"users": 7, "n": [1, {"a": 2}], "o": {}}"#,
        )
        .expect("fold");
        fold(
            &mut b,
            "a",
            d + 5,
            3,
            br#"{"us\u0065rs": 2, "big": 18446744073709551615}"#,
        )
        .expect("fold");
        assert!(fold(&mut b, "a", d, 4, b"[1]").is_err());
        let s = b.finish();
        // Ties of `at` by id: the report with id 2 is the later one.
        assert_eq!(s[0].instances["a"]["users"], Stat { max: 7, last: 4 });
        assert_eq!(s[0].instances["a"].len(), 1, "{s:?}");
        let as_reports = [
            UsageReport {
                instance_id: "a".into(),
                at: d + 5,
                counters: BTreeMap::from([("users".into(), 2)]),
                daily: false,
            },
            UsageReport {
                instance_id: "a".into(),
                at: d + 9,
                counters: BTreeMap::from([("users".into(), 7)]),
                daily: false,
            },
            UsageReport {
                instance_id: "a".into(),
                at: d + 9,
                counters: BTreeMap::from([("users".into(), 4)]),
                daily: false,
            },
        ];
        assert_eq!(series(&as_reports, Bucket::Day), s);
    }

    #[test]
    fn batches_are_whole_days() {
        let d = 20_000 * DAY;
        // Fewer than a batch left: up to the cutoff.
        assert_eq!(batch_range(&[d + 5, d + 7], 3, d + 10), Some((d, d + 10)));
        // A full batch over two days: the first day only.
        assert_eq!(
            batch_range(&[d + 5, d + 7, d + DAY + 1], 3, d + 9 * DAY),
            Some((d, d + DAY))
        );
        // A full batch within one day: that whole day.
        assert_eq!(
            batch_range(&[d + 5, d + 7, d + 8], 3, d + 9 * DAY),
            Some((d, d + DAY))
        );
        // Never past the cutoff.
        assert_eq!(
            batch_range(&[d + 5, d + 7, d + 8], 3, d + 100),
            Some((d, d + 100))
        );
        assert_eq!(batch_range(&[], 3, d), None);
    }

    #[test]
    fn each_instance_day_becomes_one_daily_report_with_the_maxima() {
        let d = 20_000 * DAY;
        let rows = [
            row(1, "a", d + 10, json!({"users": 4, "admins": 1}), false),
            row(
                2,
                "a",
                d + 20,
                json!({"users": 9, "note": "x", "ratio": 1.5}),
                false,
            ),
            row(3, "b", d + 30, json!({"users": 2}), false),
            row(4, "a", d + DAY + 5, json!({"users": 3}), false),
            // b's next day was rolled up before: it gets the rest of the day.
            row(5, "b", d + DAY, json!({"users": 6}), true),
            row(6, "b", d + DAY + 7, json!({"users": 5, "admins": 2}), false),
            // Rolled up before and nothing new: untouched.
            row(7, "c", d, json!({"users": 1}), true),
        ];
        let map = |v: &[(&str, i64)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            roll(&rows),
            vec![
                Rolled::Insert {
                    instance_id: "a".into(),
                    day: d,
                    counters: map(&[("admins", 1), ("users", 9)])
                },
                Rolled::Insert {
                    instance_id: "a".into(),
                    day: d + DAY,
                    counters: map(&[("users", 3)])
                },
                Rolled::Insert {
                    instance_id: "b".into(),
                    day: d,
                    counters: map(&[("users", 2)])
                },
                Rolled::Update {
                    id: 5,
                    counters: map(&[("admins", 2), ("users", 6)])
                },
            ]
        );
    }
}
