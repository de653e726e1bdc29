//! `LOAD_USAGE=1`: the usage query over a long history (issue 15).
//!
//! For each store in `LOAD_STORES`: the release issuer binds 10 instances
//! to one license; then, through the schema (SQL straight into the table
//! the migrations made), `LOAD_USAGE_REPORTS` (default 100,000) usage
//! reports of that license, spread evenly over those instances and the 90
//! days up to now (three counters each). Timed: `GET
//! /api/licenses/{lid}/usage?bucket=day` over the whole range, one request
//! at a time, `LOAD_USAGE_N` (default 100) times after one to warm up;
//! median and p99 against the goal (< 50 ms), next to, in the same run,
//! the floor of any such query: the same rows (`instance_id, at, id,
//! counters` of the license in the range) read by a client of the
//! database in the bench process, nothing done with them; and `GET
//! /api/licenses/{lid}` on the same issuer (what the HTTP layer,
//! authentication and one read cost).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{ADMIN_PW, Portal, Row, Store, env_or, http_client, issuer, percentile_ms};

const DAY: i64 = 86_400;
const INSTANCES: i64 = 10;
/// The goal for the median and p99, in ms.
const GOAL_MS: f64 = 50.0;

pub async fn run() -> anyhow::Result<Vec<Row>> {
    let stores: String = env_or("LOAD_STORES", "sqlite,postgres".to_string());
    let reports: i64 = env_or("LOAD_USAGE_REPORTS", 100_000);
    let n: usize = env_or("LOAD_USAGE_N", 100);
    let mut rows = Vec::new();
    for kind in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind: &'static str = if kind == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        };
        eprintln!("== usage query, {kind}, {reports} reports");
        let dir = tempfile::tempdir()?;
        let store = Store::new(kind, dir.path()).await?;
        let result = one_store(kind, reports, n, dir.path(), &store).await;
        store.drop_db().await;
        rows.push(result?);
    }
    Ok(rows)
}

async fn one_store(
    kind: &'static str,
    reports: i64,
    n: usize,
    dir: &Path,
    store: &Store,
) -> anyhow::Result<Row> {
    let proc = issuer(
        dir,
        &store.url,
        // The prune job summarizes the days (usage_days) every second here.
        &["--push-interval-secs", "0", "--prune-interval-secs", "1"],
        Some("warn"),
    )
    .await?;
    let http = http_client(4)?;
    let portal = Portal {
        base: proc.base.clone(),
        http: http.clone(),
    };
    let lid = portal.license(INSTANCES as usize).await?;
    for i in 0..INSTANCES {
        let (s, body) = portal
            .post(
                &format!("/api/licenses/{lid}/tokens"),
                json!({"instance": format!("https://u{i}.bench.test/")}),
            )
            .await?;
        anyhow::ensure!(s == 201, "issue: {s} {body}");
    }
    let (s, list) = super::send(
        http.get(format!(
            "{}/api/licenses/{lid}/instances?per_page=100",
            proc.base
        ))
        .basic_auth("admin", Some(ADMIN_PW)),
    )
    .await?;
    anyhow::ensure!(s == 200, "instances: {s} {list}");
    let ids: Vec<String> = list
        .as_array()
        .or_else(|| list["items"].as_array())
        .context("instances")?
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    anyhow::ensure!(ids.len() == INSTANCES as usize, "instances: {list}");

    let to = charter_token::now();
    let from = to - 90 * DAY;
    let t = Instant::now();
    fill(kind, &store.url, dir, &lid, &ids, reports, from).await?;
    eprintln!(
        "   filled {reports} reports in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    wait_summarized(kind, &store.url, dir).await?;
    eprintln!(
        "   the issuer summarized the days in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let fmt = charter::domain::rfc3339::format;
    let usage = format!(
        "{}/api/licenses/{lid}/usage?bucket=day&from={}&to={}",
        proc.base,
        fmt(from - from % DAY),
        fmt(to + 1)
    );
    let (lat, bytes, buckets) = timed(&http, &usage, n).await?;
    anyhow::ensure!(buckets >= 90, "{buckets} buckets");
    let (reference, _, _) = timed(&http, &format!("{}/api/licenses/{lid}", proc.base), n).await?;
    let floor = db_floor(kind, &store.url, dir, &lid, (from - from % DAY, to + 1), n).await?;
    let wall: Duration = lat.iter().sum();
    let (p50, p99) = (percentile_ms(&lat, 0.5), percentile_ms(&lat, 0.99));
    drop(proc);
    Ok(Row {
        scenario: format!(
            "usage query, one license over {}k stored reports",
            reports / 1000
        ),
        store: kind.into(),
        rate: format!("{:.0}", lat.len() as f64 / wall.as_secs_f64()),
        p50: format!("{p50:.2}"),
        p99: format!("{p99:.2}"),
        figure: format!("{buckets} day buckets x {INSTANCES} instances, {bytes} B, {n} requests"),
        reference: format!(
            "the same rows read from the database alone p50 {:.2}, p99 {:.2} ms; GET license p50 {:.2}, p99 {:.2} ms",
            percentile_ms(&floor, 0.5),
            percentile_ms(&floor, 0.99),
            percentile_ms(&reference, 0.5),
            percentile_ms(&reference, 0.99)
        ),
        ratio: format!("{:.2}", p99 / GOAL_MS),
        target: format!("p50, p99 < {GOAL_MS:.0} ms"),
    })
}

/// Latencies of `reps` sequential GETs after one to warm up, the size of
/// the answer and how many buckets it holds.
async fn timed(
    http: &reqwest::Client,
    url: &str,
    reps: usize,
) -> anyhow::Result<(Vec<Duration>, usize, usize)> {
    let get = || http.get(url).basic_auth("admin", Some(ADMIN_PW)).send();
    let first = get().await?;
    anyhow::ensure!(first.status() == 200, "{url}: {}", first.status());
    let body = first.bytes().await?;
    let buckets = serde_json::from_slice::<serde_json::Value>(&body)?["buckets"]
        .as_array()
        .map_or(0, Vec::len);
    let mut lat = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let r = get().await?;
        anyhow::ensure!(r.status() == 200, "{url}: {}", r.status());
        let _ = r.bytes().await?;
        lat.push(t.elapsed());
    }
    Ok((lat, body.len(), buckets))
}

/// Latencies of reading the rows the usage query reads, `reps` times after
/// one to warm up, straight from the database (SQLite: a connection of the
/// bench; PostgreSQL: a client of the bench): the floor of the query.
async fn db_floor(
    kind: &str,
    url: &str,
    dir: &Path,
    lid: &str,
    (from, to): (i64, i64),
    reps: usize,
) -> anyhow::Result<Vec<Duration>> {
    const SQL: &str = "SELECT instance_id, at, id, counters FROM usage_reports \
         WHERE lid = $1 AND at >= $2 AND at < $3";
    if kind == "sqlite" {
        let (path, lid) = (dir.join("charter.db"), lid.to_string());
        return tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Duration>> {
            let c = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            let mut st = c.prepare(&SQL.replace('$', "?"))?;
            let mut lat = Vec::with_capacity(reps);
            for i in 0..=reps {
                let t = Instant::now();
                let mut rows = st.query(rusqlite::params![lid, from, to])?;
                let mut bytes = 0;
                while let Some(r) = rows.next()? {
                    bytes += r.get_ref(0)?.as_bytes()?.len() + r.get_ref(3)?.as_bytes()?.len();
                }
                anyhow::ensure!(bytes > 0, "no rows");
                if i > 0 {
                    lat.push(t.elapsed());
                }
            }
            Ok(lat)
        })
        .await?;
    }
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let st = client.prepare(SQL).await?;
    let mut lat = Vec::with_capacity(reps);
    for i in 0..=reps {
        let t = Instant::now();
        let rows = client.query(&st, &[&lid, &from, &to]).await?;
        anyhow::ensure!(!rows.is_empty(), "no rows");
        if i > 0 {
            lat.push(t.elapsed());
        }
    }
    Ok(lat)
}

/// `reports` usage reports of `lid` through the schema: report `g` of
/// instance `k` at `from + (g * 10 + k) * step`, `step` spreading them over
/// 90 days, with counters `users`, `admins` and `viewers`.
/// Waits until the issuer's daily summaries reach the day that began an
/// hour ago (what `licensing::usage::summarize` does), at most a minute.
async fn wait_summarized(kind: &str, url: &str, dir: &Path) -> anyhow::Result<()> {
    let target = {
        let t = charter_token::now() - 3600;
        t - t.rem_euclid(DAY)
    };
    let q = "SELECT value FROM settings WHERE key = 'usage_days_before'";
    for _ in 0..600 {
        let done: Option<String> = if kind == "sqlite" {
            let path = dir.join("charter.db");
            tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
                let c = rusqlite::Connection::open(path)?;
                let mut st = c.prepare(q)?;
                let mut rows = st.query([])?;
                Ok(match rows.next()? {
                    Some(r) => Some(r.get(0)?),
                    None => None,
                })
            })
            .await??
        } else {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.query_opt(q, &[]).await?.map(|r| r.get(0))
        };
        if done
            .and_then(|d| d.parse::<i64>().ok())
            .is_some_and(|d| d >= target)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the issuer did not summarize the usage days within a minute")
}

async fn fill(
    kind: &str,
    url: &str,
    dir: &Path,
    lid: &str,
    ids: &[String],
    reports: i64,
    from: i64,
) -> anyhow::Result<()> {
    let per = reports / INSTANCES;
    let step = 90 * DAY / reports;
    let (with, series, json) = if kind == "sqlite" {
        (
            format!(
                "WITH RECURSIVE s(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM s WHERE g < {}) ",
                per - 1
            ),
            "s".to_string(),
            "",
        )
    } else {
        (
            String::new(),
            format!("generate_series(0, {}) g", per - 1),
            "::jsonb",
        )
    };
    let sql: String = ids
        .iter()
        .enumerate()
        .map(|(k, id)| {
            format!(
                "INSERT INTO usage_reports (lid, instance_id, at, counters) {with} \
                 SELECT '{lid}', '{id}', {from} + (g * {INSTANCES} + {k}) * {step}, \
                 ('{{\"users\":' || (g % 50 + {k}) || ',\"admins\":' || (g % 5) || \
                 ',\"viewers\":' || (g % 97) || '}}'){json} FROM {series};"
            )
        })
        .collect();
    super::fill_sql(kind, url, dir, sql, "VACUUM ANALYZE usage_reports").await
}
