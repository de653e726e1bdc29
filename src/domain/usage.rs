//! Usage history as a series: the reports of a license's instances, put in
//! buckets (hour, day or month, UTC), each counter's maximum and last value
//! per instance and summed over the instances (each instance counts once
//! per bucket: its own last report in it).
//!
//! Reports older than the usage retention are rolled up ([`daily_max`]):
//! one `daily` report per instance and day, at the start of the day, with
//! each counter's maximum. The series takes it as that day's one report,
//! so its maximum is also its last value; a day or month bucket shows the
//! same maxima as before the roll-up, an hour bucket shows the whole day
//! in its first hour.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rfc3339;

/// One usage report, as an instance sent it with a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub instance_id: String,
    /// When the issuer received it (the renewed token's `iat`).
    pub at: i64,
    pub counters: BTreeMap<String, i64>,
    /// A rolled-up day: at the start of the day, each counter's maximum
    /// over the day's reports.
    pub daily: bool,
}

/// Each counter's maximum over `reports` (counters as stored, JSON
/// objects); values that are not integers are left out.
pub fn daily_max<'a>(
    reports: impl IntoIterator<Item = &'a serde_json::Value>,
) -> BTreeMap<String, i64> {
    let mut max: BTreeMap<String, i64> = BTreeMap::new();
    for counters in reports.into_iter().filter_map(|c| c.as_object()) {
        for (name, value) in counters {
            let Some(v) = value.as_i64() else { continue };
            max.entry(name.clone())
                .and_modify(|m| *m = (*m).max(v))
                .or_insert(v);
        }
    }
    max
}

/// The width of a bucket, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
    Month,
}

impl Bucket {
    /// The start of the bucket that holds `t`.
    pub fn start(self, t: i64) -> i64 {
        match self {
            Bucket::Hour => t.div_euclid(3600) * 3600,
            Bucket::Day => t.div_euclid(86_400) * 86_400,
            Bucket::Month => {
                let day = t.div_euclid(86_400) * 86_400;
                match time::OffsetDateTime::from_unix_timestamp(day) {
                    Ok(d) => d.replace_day(1).map_or(day, |d| d.unix_timestamp()),
                    Err(_) => day,
                }
            }
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Bucket::Hour => start.saturating_add(3600),
            Bucket::Day => start.saturating_add(86_400),
            Bucket::Month => {
                // 32 days on is always in the next month; its first day.
                self.start(start.saturating_add(32 * 86_400))
            }
        }
    }
}

/// A counter's largest and last value in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stat {
    pub max: i64,
    pub last: i64,
}

/// One bucket of the series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageBucket {
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub start: i64,
    /// Exclusive.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub end: i64,
    /// Per counter, summed over the instances: the sum of their maxima and
    /// the sum of their last values.
    pub total: BTreeMap<String, Stat>,
    /// Per instance id, per counter.
    pub instances: BTreeMap<String, BTreeMap<String, Stat>>,
}

/// The buckets that hold reports, oldest first. `reports` may come in any
/// order: within a bucket, "last" is the latest `at` (the later one in the
/// input on a tie).
pub fn series(reports: &[UsageReport], bucket: Bucket) -> Vec<UsageBucket> {
    let mut b = SeriesBuilder::new(bucket);
    for (i, r) in reports.iter().enumerate() {
        let mut counters = b.report(&r.instance_id, r.at, i as i64);
        for (name, &value) in &r.counters {
            counters.add(name, value);
        }
    }
    b.finish()
}

/// A counter's maximum and last value in a bucket so far, and the
/// `(at, order)` of the report the last one came from.
#[derive(Debug, Clone, Copy)]
struct Acc {
    max: i64,
    last: i64,
    last_at: (i64, i64),
}

/// A series fed one report at a time, in any order, without keeping the
/// reports: what the usage query folds the stored reports into as it reads
/// them (a license's history is read whole, so it costs per report only
/// the lookups of its bucket, instance and counters).
#[derive(Debug, Clone)]
pub struct SeriesBuilder {
    bucket: Bucket,
    /// bucket start → instance → counter → accumulated
    buckets: BTreeMap<i64, BTreeMap<String, BTreeMap<String, Acc>>>,
    /// The bucket of the last report, `[start, end)`: reports mostly come
    /// in time order, so most find theirs without computing it.
    current: (i64, i64),
}

/// The counters of one report being added ([`SeriesBuilder::report`]).
pub struct ReportCounters<'a> {
    counters: &'a mut BTreeMap<String, Acc>,
    at: (i64, i64),
}

impl ReportCounters<'_> {
    /// One counter of the report.
    pub fn add(&mut self, name: &str, value: i64) {
        let at = self.at;
        match self.counters.get_mut(name) {
            Some(a) => {
                a.max = a.max.max(value);
                if at >= a.last_at {
                    (a.last, a.last_at) = (value, at);
                }
            }
            None => {
                self.counters.insert(
                    name.to_string(),
                    Acc {
                        max: value,
                        last: value,
                        last_at: at,
                    },
                );
            }
        }
    }
}

impl ReportCounters<'_> {
    /// A counter's maximum and last value over a whole day (a summary;
    /// see [`SeriesBuilder::day`]).
    pub fn add_stat(&mut self, name: &str, stat: Stat) {
        let at = self.at;
        match self.counters.get_mut(name) {
            Some(a) => {
                a.max = a.max.max(stat.max);
                if at >= a.last_at {
                    (a.last, a.last_at) = (stat.last, at);
                }
            }
            None => {
                self.counters.insert(
                    name.to_string(),
                    Acc {
                        max: stat.max,
                        last: stat.last,
                        last_at: at,
                    },
                );
            }
        }
    }
}

impl SeriesBuilder {
    /// The summary of `instance_id`'s UTC day starting at `day`: its
    /// counters' `Stat`s are added to what this returns. In a wider bucket
    /// a later day's last value (or a report after it) wins over it.
    pub fn day(&mut self, instance_id: &str, day: i64) -> ReportCounters<'_> {
        debug_assert!(self.bucket != Bucket::Hour, "days summarize no hour");
        self.report(instance_id, day, i64::MIN)
    }

    pub fn new(bucket: Bucket) -> SeriesBuilder {
        SeriesBuilder {
            bucket,
            buckets: BTreeMap::new(),
            current: (0, 0),
        }
    }

    /// A report of `instance_id` at `at`; `order` breaks ties of `at`
    /// (the larger is the later, e.g. the row id). Its counters are added
    /// to what this returns.
    pub fn report(&mut self, instance_id: &str, at: i64, order: i64) -> ReportCounters<'_> {
        if !(self.current.0..self.current.1).contains(&at) {
            let start = self.bucket.start(at);
            self.current = (start, self.bucket.next(start));
        }
        let instances = self.buckets.entry(self.current.0).or_default();
        if !instances.contains_key(instance_id) {
            instances.insert(instance_id.to_string(), BTreeMap::new());
        }
        ReportCounters {
            counters: instances.get_mut(instance_id).expect("inserted above"),
            at: (at, order),
        }
    }

    /// The buckets that hold reports, oldest first.
    pub fn finish(self) -> Vec<UsageBucket> {
        let bucket = self.bucket;
        self.buckets
            .into_iter()
            .map(|(start, instances)| {
                let mut total: BTreeMap<String, Stat> = BTreeMap::new();
                let instances: BTreeMap<String, BTreeMap<String, Stat>> = instances
                    .into_iter()
                    .map(|(id, counters)| {
                        let counters: BTreeMap<String, Stat> = counters
                            .into_iter()
                            .map(|(name, a)| {
                                let s = Stat {
                                    max: a.max,
                                    last: a.last,
                                };
                                let t = total
                                    .entry(name.clone())
                                    .or_insert(Stat { max: 0, last: 0 });
                                t.max = t.max.saturating_add(s.max);
                                t.last = t.last.saturating_add(s.last);
                                (name, s)
                            })
                            .collect();
                        (id, counters)
                    })
                    .collect();
                UsageBucket {
                    start,
                    end: bucket.next(start),
                    total,
                    instances,
                }
            })
            .collect()
    }
}

/// The series as CSV: `bucket_start,bucket_end,instance,counter,max,last`,
/// one row per instance and counter, then the totals (instance `*`).
pub fn csv(buckets: &[UsageBucket]) -> String {
    let mut out = String::from("bucket_start,bucket_end,instance,counter,max,last\n");
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    for b in buckets {
        let (start, end) = (rfc3339::format(b.start), rfc3339::format(b.end));
        let rows = b
            .instances
            .iter()
            .flat_map(|(i, c)| c.iter().map(move |(n, s)| (i.as_str(), n, s)))
            .chain(b.total.iter().map(|(n, s)| ("*", n, s)));
        for (instance, name, s) in rows {
            out.push_str(&format!(
                "{start},{end},{},{},{},{}\n",
                field(instance),
                field(name),
                s.max,
                s.last
            ));
        }
    }
    out
}

/// Each counter summed over the instances, each instance counting with
/// its last report (`reports` oldest first, as the store returns them).
pub fn last_sums(reports: &[UsageReport]) -> BTreeMap<String, i64> {
    let mut last: BTreeMap<&str, &UsageReport> = BTreeMap::new();
    for r in reports {
        last.insert(&r.instance_id, r);
    }
    let mut sums = BTreeMap::new();
    for r in last.values() {
        for (k, v) in &r.counters {
            let sum: &mut i64 = sums.entry(k.clone()).or_default();
            *sum = sum.saturating_add(*v);
        }
    }
    sums
}

/// The counters of `sums` over what the license includes: the one named by
/// `limit_by` against `included_users`, `admins` against `included_admins`
/// and `viewers` against `included_viewers`; an included count of 0 sets
/// no limit.
pub fn over_included(
    terms: &super::LicenseTerms,
    sums: &BTreeMap<String, i64>,
) -> BTreeMap<String, super::CounterOver> {
    let mut over = BTreeMap::new();
    for (counter, included) in [
        (terms.limit_by.as_str(), terms.included_users),
        ("admins", terms.included_admins),
        ("viewers", terms.included_viewers),
    ] {
        if included <= 0 {
            continue;
        }
        if let Some(&used) = sums.get(counter).filter(|u| **u > included) {
            over.insert(counter.to_string(), super::CounterOver { used, included });
        }
    }
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(instance: &str, at: i64, users: i64) -> UsageReport {
        UsageReport {
            instance_id: instance.into(),
            at,
            counters: BTreeMap::from([("users".to_string(), users)]),
            daily: false,
        }
    }

    #[test]
    fn a_rolled_up_day_keeps_its_maxima_in_the_series() {
        let day = 20_000 * 86_400;
        let reports = [
            report("a", day + 3600, 9),
            report("a", day + 7200, 4),
            report("b", day + 100, 3),
            report("a", day + 86_400 + 60, 2),
        ];
        let json: Vec<serde_json::Value> = reports[..2]
            .iter()
            .map(|r| serde_json::json!(r.counters))
            .chain([serde_json::json!({"users": "many", "ratio": 0.5})])
            .collect();
        let rolled = UsageReport {
            instance_id: "a".into(),
            at: day,
            counters: daily_max(&json),
            daily: true,
        };
        assert_eq!(rolled.counters, BTreeMap::from([("users".to_string(), 9)]));
        let kept = [rolled, reports[2].clone(), reports[3].clone()];
        let (before, after) = (series(&reports, Bucket::Day), series(&kept, Bucket::Day));
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.start, a.start);
            for (id, counters) in &b.instances {
                for (name, s) in counters {
                    assert_eq!(a.instances[id][name].max, s.max, "{id} {name}");
                }
            }
        }
        assert_eq!(after[0].instances["a"]["users"], Stat { max: 9, last: 9 });
        assert_eq!(series(&kept, Bucket::Hour)[0].start, day);
    }

    #[test]
    fn each_instance_counts_once_per_bucket_with_its_last_report() {
        let day = 20_000 * 86_400; // 2024-10-04, a Friday
        let reports = [
            // Out of order: the later report of `a` comes first.
            report("a", day + 7200, 4),
            report("a", day + 3600, 9),
            report("b", day + 100, 3),
            report("b", day + 86_400 + 50, 5),
        ];
        let s = series(&reports, Bucket::Day);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].start, day);
        assert_eq!(s[0].end, day + 86_400);
        assert_eq!(s[0].instances["a"]["users"], Stat { max: 9, last: 4 });
        assert_eq!(s[0].instances["b"]["users"], Stat { max: 3, last: 3 });
        assert_eq!(s[0].total["users"], Stat { max: 12, last: 7 });
        assert_eq!(s[1].total["users"], Stat { max: 5, last: 5 });
        assert!(!s[1].instances.contains_key("a"));
        let hours = series(&reports, Bucket::Hour);
        assert_eq!(hours.len(), 4);
        let csv = csv(&s);
        assert!(csv.starts_with("bucket_start,bucket_end,instance,counter,max,last\n"));
        assert!(csv.contains(",*,users,12,7\n"), "{csv}");
        assert!(csv.contains(",a,users,9,4\n"), "{csv}");
    }

    #[test]
    fn months_are_calendar_months() {
        // 2026-01-31T12:00:00Z and 2026-02-01T00:00:00Z
        let jan31 = 1_769_860_800;
        let feb1 = 1_769_904_000;
        assert_eq!(Bucket::Month.start(jan31), 1_767_225_600); // 2026-01-01
        assert_eq!(Bucket::Month.next(1_767_225_600), feb1);
        assert_eq!(Bucket::Month.start(feb1), feb1);
        assert_eq!(Bucket::Month.next(feb1), 1_772_323_200); // 2026-03-01
        assert_eq!(Bucket::Hour.start(jan31 + 59), jan31);
    }

    #[test]
    fn sums_take_each_instances_last_report_and_compare_with_the_included_counts() {
        let r = |i: &str, at: i64, users: i64| UsageReport {
            instance_id: i.into(),
            at,
            counters: BTreeMap::from([("users".to_string(), users)]),
            daily: false,
        };
        // Instance a reported 9 then 4; b reported 7: 4 + 7.
        let sums = last_sums(&[r("a", 1, 9), r("b", 2, 7), r("a", 3, 4)]);
        assert_eq!(sums["users"], 11);
        let mut terms: super::super::LicenseTerms = serde_json::from_value(serde_json::json!({
            "products": [], "limit_by": "users", "included_users": 10,
            "included_admins": 0, "included_viewers": 0,
            "max_concurrent_user_sessions": 0, "anonymous_ratio": 0,
            "limits": {}, "features": [], "flags": {}, "trial": false,
            "usage_billing": false, "details_url": "", "lic_exp_warn_days": 30,
            "tok_exp_warn_days": 3, "update_days": 1, "token_ttl_days": 7
        }))
        .expect("terms");
        let over = over_included(&terms, &sums);
        assert_eq!(over["users"].used, 11);
        assert_eq!(over["users"].included, 10);
        terms.included_users = 11;
        assert!(over_included(&terms, &sums).is_empty(), "equal is within");
        terms.included_users = 0;
        assert!(over_included(&terms, &sums).is_empty(), "0 sets no limit");
    }
}
