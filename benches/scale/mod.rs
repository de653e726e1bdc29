//! `LOAD_SCALE=1`: the issuer at 10k, 100k, 1M... stored tokens (issue 17).
//!
//! For each store and each size in `LOAD_SCALE_SIZES` (default `10000`;
//! e.g. `10000,100000,1000000`): a fresh database gets, through the real
//! issuer, one license with `LOAD_SCALE_RENEWERS` (default 1000) instances
//! holding real tokens; then, through its schema (SQL straight into the
//! tables the migrations made), 10,000 licenses with an instance each, the
//! tokens up to the size (about 1.1 KB of text each, as an RS256 token) and
//! as many audit events. The issuer is started again on it (start-up time)
//! and measured: renewals alone and beside one client repeating the
//! heaviest audit queries; each list's first page and a deep page (a cursor
//! half-way); the audit by target and by actor; `/metrics`; the database
//! size per token. The table prints each figure per size and the ratio of
//! the largest size to the smallest (goal ≤ 1.5, except the size).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use charter::domain::Cursor;
use serde_json::json;

use super::{
    ADMIN_PW, Portal, Store, cpu_secs, drive, env_or, http_client, issuer, percentile_ms, renew_all,
};

/// Licenses (each with one instance) filled in besides the real one.
const LICENSES: i64 = 10_000;
/// The license whose history and instance whose audit trail are listed.
const HOT: i64 = 7;
/// Tokens and audit events of the [`HOT`] license, at every size.
const HOT_ROWS: i64 = 500;
const DAY: i64 = 86_400;

/// One figure per size.
struct Measure {
    name: String,
    unit: &'static str,
    values: Vec<f64>,
    /// Whether the goal (largest ≤ 1.5 × smallest) applies.
    goal: bool,
}

pub async fn run() -> anyhow::Result<()> {
    let sizes: Vec<i64> = env_or("LOAD_SCALE_SIZES", "10000".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let stores: String = env_or("LOAD_STORES", "sqlite,postgres".to_string());
    let renewers: usize = env_or("LOAD_SCALE_RENEWERS", 1000);
    let conc: usize = env_or("LOAD_CONCURRENCY", 16);
    for kind in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind: &'static str = if kind == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        };
        let mut measures: Vec<Measure> = Vec::new();
        for &size in &sizes {
            eprintln!("== scale {kind} {size} tokens");
            let figures = one_size(kind, size, renewers, conc).await?;
            for (name, unit, value, goal) in figures {
                match measures.iter_mut().find(|m| m.name == name) {
                    Some(m) => m.values.push(value),
                    None => measures.push(Measure {
                        name,
                        unit,
                        values: vec![value],
                        goal,
                    }),
                }
            }
        }
        print(kind, &sizes, &measures);
    }
    Ok(())
}

fn print(kind: &str, sizes: &[i64], measures: &[Measure]) {
    let mut header = format!("| {:<48} | {:<8} |", "scale: measure", "store");
    for s in sizes {
        header.push_str(&format!(" {:>10} |", format!("{s} tok")));
    }
    header.push_str(" ratio last/first | goal  |");
    println!("\n{header}");
    println!("|{}|", "-".repeat(header.len() - 2));
    for m in measures {
        let mut line = format!(
            "| {:<48} | {:<8} |",
            format!("{} ({})", m.name, m.unit),
            kind
        );
        for v in &m.values {
            line.push_str(&format!(" {:>10} |", fmt(*v)));
        }
        let ratio = match (m.values.first(), m.values.last()) {
            (Some(a), Some(b)) if *a > 0.0 && m.values.len() > 1 => format!("{:.2}", b / a),
            _ => "-".into(),
        };
        line.push_str(&format!(
            " {:>16} | {:<5} |",
            ratio,
            if m.goal { "≤ 1.5" } else { "" }
        ));
        println!("{line}");
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

type Figure = (String, &'static str, f64, bool);

async fn one_size(
    kind: &'static str,
    size: i64,
    renewers: usize,
    conc: usize,
) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let store = Store::new(kind, dir.path()).await?;
    let result = measure(kind, size, renewers, conc, dir.path(), &store).await;
    store.drop_db().await;
    result
}

async fn measure(
    kind: &'static str,
    size: i64,
    renewers: usize,
    conc: usize,
    dir: &Path,
    store: &Store,
) -> anyhow::Result<Vec<Figure>> {
    let no_jobs = ["--push-interval-secs", "0", "--token-history-days", "0"];
    // Real tokens for the renewers, through the issuer.
    let (lid, tokens) = {
        let proc = issuer(dir, &store.url, &no_jobs, Some("warn")).await?;
        let http = http_client(conc)?;
        let portal = Portal {
            base: proc.base.clone(),
            http: http.clone(),
        };
        let lid = portal.license(renewers + 10).await?;
        for n in 0..20 {
            let (s, _) = portal
                .post(
                    "/api/serviceaccounts",
                    json!({"name": format!("bench-{n}"), "role": "Viewer"}),
                )
                .await?;
            anyhow::ensure!(s == 201, "service account: {s}");
        }
        let (base, l) = (proc.base.clone(), lid.clone());
        let (tokens, _, _) = drive(renewers, conc, move |i| {
            let req = http
                .post(format!("{base}/api/licenses/{l}/tokens"))
                .basic_auth("admin", Some(ADMIN_PW))
                .json(&json!({"instance": format!("https://r{i}.bench.test/")}));
            async move {
                let (s, body) = super::send(req).await?;
                anyhow::ensure!(s == 201, "issue: {s} {body}");
                Ok(body["token"].as_str().context("token")?.to_string())
            }
        })
        .await?;
        drop(proc);
        (lid, tokens)
    };

    let t = Instant::now();
    let base_time = charter_token::now() - 60 * DAY;
    fill(kind, &store.url, dir, size, base_time, &lid).await?;
    eprintln!(
        "   filled {size} tokens in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut out: Vec<Figure> = Vec::new();
    let started = Instant::now();
    let proc = issuer(dir, &store.url, &no_jobs, Some("warn")).await?;
    let http = http_client(conc)?;
    loop {
        let r = http.get(format!("{}/api/health", proc.base)).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "no start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out.push((
        "start-up to healthy".into(),
        "ms",
        started.elapsed().as_secs_f64() * 1e3,
        true,
    ));
    let db_bytes = db_size(kind, &store.url, dir).await?;
    out.push((
        "database size per token".into(),
        "bytes",
        db_bytes as f64 / (size as f64 + renewers as f64),
        false,
    ));

    // Renewals alone (after a round that warms the caches up), then beside
    // one client repeating heavy audit queries.
    let (tokens, _, _) = renew_all(&http, &proc.base, &tokens, conc).await?;
    let pid = proc.pid();
    let cpu0 = cpu_secs(pid);
    let (tokens, lat, wall) = renew_all(&http, &proc.base, &tokens, conc).await?;
    let alone = tokens.len() as f64 / wall.as_secs_f64();
    out.push(("renew alone".into(), "ops/s", alone, false));
    out.push((
        "renew alone CPU".into(),
        "µs/renewal",
        (cpu_secs(pid) - cpu0) / tokens.len() as f64 * 1e6,
        true,
    ));
    out.push((
        "renew alone p99".into(),
        "ms",
        percentile_ms(&lat, 0.99),
        true,
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (http, base, stop, reads) =
            (http.clone(), proc.base.clone(), stop.clone(), reads.clone());
        let actor = "https://hot.fill.test/";
        let target = format!("T{}", size / 2);
        tokio::spawn(async move {
            let paths = [
                "/api/audit?per_page=100".to_string(),
                format!("/api/audit?per_page=100&actor={actor}"),
                format!("/api/audit?per_page=100&target_id={target}"),
            ];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .get(format!("{base}{}", paths[i % paths.len()]))
                    .basic_auth("admin", Some(ADMIN_PW))
                    .send()
                    .await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let (tokens2, lat2, wall2) = renew_all(&http, &proc.base, &tokens, conc).await?;
    stop.store(true, Ordering::Relaxed);
    let _ = reader.await;
    let beside = tokens2.len() as f64 / wall2.as_secs_f64();
    out.push(("renew beside audit reads".into(), "ops/s", beside, false));
    out.push((
        "renew beside audit reads p99".into(),
        "ms",
        percentile_ms(&lat2, 0.99),
        true,
    ));
    out.push((
        "renew beside / alone (goal ≥ 0.8)".into(),
        "x",
        beside / alone,
        false,
    ));
    out.push((
        "audit reads meanwhile".into(),
        "req/s",
        reads.load(Ordering::Relaxed) as f64 / wall2.as_secs_f64(),
        false,
    ));

    // Lists and metrics, one request at a time.
    let half = size / 2;
    let deep_audit = Cursor::new(base_time + half, i64::MAX.to_string()).encode();
    let deep_license = Cursor::new(base_time + LICENSES / 2, format!("L{}", LICENSES / 2)).encode();
    let deep_tokens =
        Cursor::new(base_time + HOT_ROWS / 2 * (size / HOT_ROWS).max(1), "~").encode();
    let instances = {
        let r = http
            .get(format!(
                "{}/api/licenses/{lid}/instances?per_page=100",
                proc.base
            ))
            .basic_auth("admin", Some(ADMIN_PW))
            .send()
            .await?;
        r.headers()
            .get("link")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.strip_prefix('<'))
            .and_then(|l| l.split_once('>'))
            .map(|(u, _)| u.to_string())
            .unwrap_or_else(|| format!("/api/licenses/{lid}/instances?per_page=100"))
    };
    let gets: Vec<(&str, String)> = vec![
        ("GET audit first page", "/api/audit?per_page=100".into()),
        (
            "GET audit deep cursor",
            format!("/api/audit?per_page=100&after={deep_audit}"),
        ),
        (
            "GET audit by target_id",
            format!("/api/audit?per_page=100&target_id=T{half}"),
        ),
        (
            "GET audit by target_type+target_id",
            format!("/api/audit?per_page=100&target_type=token&target_id=T{half}"),
        ),
        (
            "GET audit by actor",
            "/api/audit?per_page=100&actor=https://hot.fill.test/".into(),
        ),
        (
            "GET audit by action",
            "/api/audit?per_page=100&action=license.create".into(),
        ),
        (
            "GET licenses first page",
            "/api/licenses?per_page=100".into(),
        ),
        (
            "GET licenses deep cursor",
            format!("/api/licenses?per_page=100&after={deep_license}"),
        ),
        (
            "GET licenses deep page=50 (OFFSET)",
            "/api/licenses?per_page=100&page=50".into(),
        ),
        (
            "GET tokens of a license first page",
            "/api/licenses/L7/tokens?per_page=100".into(),
        ),
        (
            "GET tokens of a license deep cursor",
            format!("/api/licenses/L7/tokens?per_page=100&after={deep_tokens}"),
        ),
        (
            "GET instances first page",
            format!("/api/licenses/{lid}/instances?per_page=100"),
        ),
        ("GET instances next page", instances),
        (
            "GET serviceaccounts search",
            "/api/serviceaccounts/search?perpage=10".into(),
        ),
        ("GET /metrics", "/metrics".into()),
    ];
    for (name, path) in gets {
        let (median, bytes) = timed(&http, &format!("{}{path}", proc.base), 60).await?;
        out.push((name.to_string(), "ms p50", median, true));
        if name == "GET /metrics" {
            out.push(("/metrics size".into(), "bytes", bytes as f64, true));
        }
    }
    drop(proc);

    // Renewals while the prune job deletes the filled history (tokens and
    // audit events older than 30 days, except the instances' current
    // tokens), round after round until the run reports.
    let prune = [
        "--push-interval-secs",
        "0",
        "--token-history-days",
        "30",
        "--audit-retention-days",
        "30",
        "--prune-interval-secs",
        "1",
    ];
    let proc = issuer(dir, &store.url, &prune, Some("warn")).await?;
    let started = Instant::now();
    let (mut toks, mut lat_all, mut renewed) = (tokens2, Vec::new(), 0usize);
    let pruned = loop {
        let (next, lat, _) = renew_all(&http, &proc.base, &toks, conc).await?;
        renewed += next.len();
        lat_all.extend(lat);
        toks = next;
        let metrics = http
            .get(format!("{}/metrics", proc.base))
            .send()
            .await?
            .text()
            .await?;
        let count = |what: &str| {
            metrics.lines().find_map(|l| {
                l.strip_prefix(&format!("charter_pruned_total{{what=\"{what}\"}} "))?
                    .parse::<f64>()
                    .ok()
            })
        };
        if let (Some(t), Some(a)) = (count("tokens"), count("audit")) {
            break t + a;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "prune never ended"
        );
    };
    let wall = started.elapsed().as_secs_f64();
    out.push(("rows pruned (tokens + audit)".into(), "rows", pruned, false));
    out.push(("prune run, start to report".into(), "s", wall, false));
    out.push((
        "renew during the prune".into(),
        "ops/s",
        renewed as f64 / wall,
        false,
    ));
    out.push((
        "renew during the prune p99".into(),
        "ms",
        percentile_ms(&lat_all, 0.99),
        false,
    ));
    drop(proc);
    Ok(out)
}

/// Median latency of `reps` sequential GETs (after one to warm up; the
/// median, as the machine is shared) and the size of the answer.
async fn timed(http: &reqwest::Client, url: &str, reps: usize) -> anyhow::Result<(f64, usize)> {
    let get = || http.get(url).basic_auth("admin", Some(ADMIN_PW)).send();
    let first = get().await?;
    anyhow::ensure!(first.status() == 200, "{url}: {}", first.status());
    let bytes = first.bytes().await?.len();
    let mut lat = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let r = get().await?;
        anyhow::ensure!(r.status() == 200, "{url}: {}", r.status());
        let _ = r.bytes().await?;
        lat.push(t.elapsed());
    }
    Ok((percentile_ms(&lat, 0.5), bytes))
}

async fn db_size(kind: &str, url: &str, dir: &Path) -> anyhow::Result<u64> {
    if kind == "sqlite" {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            total += std::fs::metadata(dir.join(format!("charter.db{suffix}")))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        return Ok(total);
    }
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The filler rows through the schema: 10,000 licenses (`L1`...) of one
/// account, one instance each (`I1`..., url `https://iN.fill.test/`),
/// `size` tokens (`T1`...; token `g` of license `g % 10000 + 1`, issued at
/// `base + g`) and an audit event per token (`token.renew` by its
/// instance, at the same time); and [`HOT_ROWS`] more of each for license
/// `L7` and the actor `https://hot.fill.test/`.
async fn fill(
    kind: &str,
    url: &str,
    dir: &Path,
    size: i64,
    base: i64,
    real_lid: &str,
) -> anyhow::Result<()> {
    let (series, text, json) = if kind == "sqlite" {
        (
            "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) ",
            "printf('%.1100c', 'x')",
            "",
        )
    } else {
        ("", "repeat('x', 1100)", "::jsonb")
    };
    let from = |n: i64| {
        if kind == "sqlite" {
            (series.replace("{n}", &n.to_string()), "s".to_string())
        } else {
            (String::new(), format!("generate_series(1, {n}) g"))
        }
    };
    let (w1, f1) = from(LICENSES);
    let (w2, f2) = from(size);
    // License L{HOT} and the actor https://hot.fill.test/ have HOT_ROWS
    // tokens and events at every size, spread over its time span: their
    // pages hold as many rows at 10k as at 1M.
    let (w3, f3) = from(HOT_ROWS);
    let step = (size / HOT_ROWS).max(1);
    let sql = format!(
        "INSERT INTO accounts (id, company, account, slug, created_at, updated_at) \
         VALUES ('fill-account', 'Fill', 'Fill', 'fill', {base}, {base}); \
         INSERT INTO licenses (lid, account_id, status, starts_at, expires_at, max_instances, terms, \
         created_at, updated_at) {w1} SELECT 'L' || g, 'fill-account', 'active', {base}, \
         {base} + 400 * {DAY} + g * 60, 1, (SELECT terms FROM licenses WHERE lid = '{real_lid}'), \
         {base} + g, {base} + g FROM {f1}; \
         INSERT INTO instances (id, lid, url, dialect, push_enabled, last_jti, last_issued_at, \
         next_renewal_at, created_at, updated_at, token_expires_at) {w1} SELECT 'I' || g, 'L' || g, \
         'https://i' || g || '.fill.test/', 'grafana', FALSE, 'T' || g, {base}, {base} + {DAY}, \
         {base} + g, {base} + g, {base} + 7 * {DAY} FROM {f1}; \
         INSERT INTO tokens (jti, lid, instance_id, kid, iat, nbf, exp, reason, renewed_from, token) \
         {w2} SELECT 'T' || g, 'L' || (g % {LICENSES} + 1), 'I' || (g % {LICENSES} + 1), 'fill', \
         {base} + g, {base} + g, {base} + g + 7 * {DAY}, 'renew', NULL, {text} FROM {f2}; \
         INSERT INTO audit_events (at, actor_kind, actor, action, target_type, target_id, ip, detail) \
         {w2} SELECT {base} + g, 'instance', 'https://i' || (g % {LICENSES} + 1) || '.fill.test/', \
         'token.renew', 'token', 'T' || g, '10.0.0.1', \
         ('{{\"lid\":\"L' || (g % {LICENSES} + 1) || '\"}}'){json} FROM {f2}; \
         INSERT INTO tokens (jti, lid, instance_id, kid, iat, nbf, exp, reason, renewed_from, token) \
         {w3} SELECT 'H' || g, 'L{HOT}', 'I{HOT}', 'fill', {base} + g * {step}, {base} + g * {step}, \
         {base} + g * {step} + 7 * {DAY}, 'renew', NULL, {text} FROM {f3}; \
         INSERT INTO audit_events (at, actor_kind, actor, action, target_type, target_id, ip, detail) \
         {w3} SELECT {base} + g * {step}, 'instance', 'https://hot.fill.test/', 'token.renew', 'token', \
         'H' || g, '10.0.0.1', NULL FROM {f3};"
    );
    super::fill_sql(kind, url, dir, sql, "VACUUM ANALYZE").await
}
