//! Usage history as a series: the reports of a license's instances, put in
//! buckets (hour, day or month, UTC), each counter's maximum and last value
//! per instance and summed over the instances (each instance counts once
//! per bucket: its own last report in it).

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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
    let mut sorted: Vec<&UsageReport> = reports.iter().collect();
    sorted.sort_by_key(|r| r.at);
    // bucket start → instance → counter → (max, last)
    let mut by_bucket: BTreeMap<i64, BTreeMap<&str, BTreeMap<&str, Stat>>> = BTreeMap::new();
    for r in sorted {
        let instances = by_bucket.entry(bucket.start(r.at)).or_default();
        let counters = instances.entry(r.instance_id.as_str()).or_default();
        for (name, &value) in &r.counters {
            counters
                .entry(name.as_str())
                .and_modify(|s| {
                    s.max = s.max.max(value);
                    s.last = value;
                })
                .or_insert(Stat {
                    max: value,
                    last: value,
                });
        }
    }
    by_bucket
        .into_iter()
        .map(|(start, instances)| {
            let mut total: BTreeMap<String, Stat> = BTreeMap::new();
            for counters in instances.values() {
                for (name, s) in counters {
                    let t = total
                        .entry((*name).to_string())
                        .or_insert(Stat { max: 0, last: 0 });
                    t.max = t.max.saturating_add(s.max);
                    t.last = t.last.saturating_add(s.last);
                }
            }
            UsageBucket {
                start,
                end: bucket.next(start),
                total,
                instances: instances
                    .into_iter()
                    .map(|(id, counters)| {
                        (
                            id.to_string(),
                            counters
                                .into_iter()
                                .map(|(n, s)| (n.to_string(), s))
                                .collect(),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
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
        }
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
