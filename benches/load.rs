//! End-to-end load benchmarks of real `charter` processes on loopback, each
//! figure printed next to the reference it is compared with, measured in the
//! same run (DESIGN.md, "Quality bars"). One table at the end.
//!
//! `bash benches/run.sh` (or `cargo bench --bench load`). Knobs (environment):
//! `LOAD_N` instances issued then renewed per run (default 2000),
//! `LOAD_RENEW_USAGE=1` renewals that report usage (as instances do),
//! `LOAD_CHARTER_BIN` another build to measure, `LOAD_CONCURRENCY` requests in flight (default 16), `LOAD_CHECK_SECS` per
//! check round (default 3), `LOAD_PUSH` push sizes (default `1000,10000`),
//! `LOAD_STORES` (default `sqlite,postgres`), `LOAD_ALGS` (default
//! `rs256,eddsa`), `LOAD_WARN_ROWS` (0 skips the `[log warn]` rows), `LOAD_FLOOR`
//! (0 skips the floor rows: HTTP + verify + sign with no storage), `LOAD_PG_ADMIN` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `CHARTER_LOG` passed to
//! the issuer (default `info`, as deployed).
//!
//! `LOAD_SCALE=1` runs the scale bench instead (`benches/scale/mod.rs`:
//! `LOAD_SCALE_SIZES`, default `10000`, `LOAD_SCALE_RENEWERS`, default 1000).
//! `LOAD_USAGE=1` runs the usage-query rows instead (`benches/usage/mod.rs`:
//! `LOAD_USAGE_REPORTS`, default 100000, `LOAD_USAGE_N`, default 100).
//!
//! Scenarios: (1) `POST /api/tokens/renew` from many distinct instances, RS256
//! then EdDSA, issuer CPU per renewal from /proc next to one raw aws-lc-rs
//! RSA-2048 signature; (2) `POST /api/licenses/{lid}/tokens`, same figures;
//! (3) `GET /api/licensing/check` on `charter instance` next to a bare axum
//! handler; (4) push to 1,000 and 10,000 due instances; (5) peak RSS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "scale/mod.rs"]
mod scale;
#[path = "usage/mod.rs"]
mod usage;

const ADMIN_PW: &str = "bench-password-1";
const INSTANCE_PW: &str = "instance-pw-1";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CHARTER_LOAD_BARE").is_some() {
        return bare_server();
    }
    if std::env::var_os("CHARTER_LOAD_FLOOR").is_some() {
        return floor_server();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

// ---------------------------------------------------------------- processes

/// A child process, killed on drop.
struct Proc {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `charter` binary under test (`LOAD_CHARTER_BIN` to compare builds).
fn charter_bin() -> String {
    std::env::var("LOAD_CHARTER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_charter").to_string())
}

fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("CHARTER_") && k != "CHARTER_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// Starts `cmd` listening on `port` and waits until it answers HTTP.
async fn spawn(mut cmd: Command, port: u16, log: PathBuf) -> anyhow::Result<Proc> {
    let file = std::fs::File::create(&log)?;
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .context("spawn")?;
    let mut proc = Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = proc.child.try_wait() {
            let text = std::fs::read_to_string(&proc.log).unwrap_or_default();
            bail!("process exited with {status}:\n{text}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(proc);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("did not start: {}", proc.log.display())
}

/// `charter serve` on `db`; `log` overrides the log level (default: the
/// caller's `CHARTER_LOG`, else `info` as deployed).
async fn issuer(dir: &Path, db: &str, extra: &[&str], log: Option<&str>) -> anyhow::Result<Proc> {
    let port = free_port()?;
    let mut cmd = command(&charter_bin());
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", db])
        .args(["--keys-dir", &dir.join("keys").to_string_lossy()])
        // One license renews thousands of instances here: no rate limits.
        .args(["--renew-limit-per-license", "0"])
        .args(["--renew-limit-per-address", "0"])
        // The push receivers listen on loopback.
        .arg("--push-allow-private")
        .args(extra)
        .env("CHARTER_ADMIN_PASSWORD", ADMIN_PW);
    cmd.env("CHARTER_LOG", log_level(log));
    let n = std::fs::read_dir(dir)?.count();
    spawn(cmd, port, dir.join(format!("issuer-{n}.log"))).await
}

// --------------------------------------------------------------- /proc

fn log_level(log: Option<&str>) -> String {
    log.map(str::to_string)
        .or_else(|| std::env::var("CHARTER_LOG").ok())
        .unwrap_or_else(|| "info".into())
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clk_tck()
}

/// Peak resident set size (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time this thread has run, in seconds (nanosecond resolution).
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e9)
        .unwrap_or(0.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------- raw references

/// CPU time of one raw signature, in microseconds: `n` back to back, so the
/// scheduler's accounting (updated at ticks and switches) is precise enough.
fn raw_sign_us(n: usize, mut sign: impl FnMut()) -> f64 {
    sign();
    let t = thread_cpu_secs();
    for _ in 0..n {
        sign();
    }
    (thread_cpu_secs() - t) * 1e6 / n as f64
}

struct RawRefs {
    rsa: RsaKeyPair,
    ed: Ed25519KeyPair,
    message: Vec<u8>,
}

impl RawRefs {
    fn new() -> anyhow::Result<Self> {
        use charter_token::KeyAlg;
        let rsa_pem = charter_token::keys::generate_pem(KeyAlg::Rs256, 2048)?;
        let ed_pem = charter_token::keys::generate_pem(KeyAlg::EdDsa, 0)?;
        let rsa = RsaKeyPair::from_pkcs8(pem::parse(&rsa_pem)?.contents())
            .map_err(|e| anyhow::anyhow!("rsa: {e}"))?;
        let ed = Ed25519KeyPair::from_pkcs8(pem::parse(&ed_pem)?.contents())
            .map_err(|e| anyhow::anyhow!("ed25519: {e}"))?;
        // About the size of a token's header.payload.
        let message = vec![b'e'; 640];
        Ok(RawRefs { rsa, ed, message })
    }

    /// One raw RSA-2048 PKCS#1 v1.5 SHA-256 signature, cached key, CPU µs.
    fn rsa_us(&self) -> f64 {
        let rng = SystemRandom::new();
        let mut sig = vec![0; self.rsa.public_modulus_len()];
        raw_sign_us(1500, || {
            self.rsa
                .sign(&RSA_PKCS1_SHA256, &rng, &self.message, &mut sig)
                .expect("sign");
            std::hint::black_box(&sig);
        })
    }

    fn ed_us(&self) -> f64 {
        raw_sign_us(15_000, || {
            std::hint::black_box(self.ed.sign(&self.message));
        })
    }
}

// ------------------------------------------------------------- HTTP load

/// Runs `jobs` with `concurrency` in flight; each job returns Ok(output).
/// Returns the outputs in order, the latencies and the wall time.
async fn drive<F, Fut>(
    jobs: usize,
    concurrency: usize,
    f: F,
) -> anyhow::Result<(Vec<String>, Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<String>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (f, next) = (f.clone(), next.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    break;
                }
                let t = Instant::now();
                let r = f(i).await?;
                out.push((i, r, t.elapsed()));
            }
            anyhow::Ok(out)
        });
    }
    let mut all = Vec::with_capacity(jobs);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    let wall = start.elapsed();
    all.sort_by_key(|(i, _, _)| *i);
    let lat = all.iter().map(|(_, _, d)| *d).collect();
    Ok((all.into_iter().map(|(_, r, _)| r).collect(), lat, wall))
}

fn percentile_ms(lat: &[Duration], p: f64) -> f64 {
    let mut v: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Runs the statements `sql` in one transaction on the bench's store
/// (`kind` at `url`, the SQLite file in `dir`): how the scale and usage
/// benches fill it through its schema. SQLite's WAL is checkpointed after;
/// PostgreSQL runs `analyze` (what autovacuum does to a table this size
/// soon after).
async fn fill_sql(
    kind: &str,
    url: &str,
    dir: &Path,
    sql: String,
    analyze: &str,
) -> anyhow::Result<()> {
    if kind == "sqlite" {
        let path = dir.join("charter.db");
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut c = rusqlite::Connection::open(path)?;
            c.busy_timeout(Duration::from_secs(30))?;
            let tx = c.transaction()?;
            tx.execute_batch(&sql)?;
            tx.commit()?;
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
        .await??;
    } else {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("BEGIN; {sql} COMMIT;"))
            .await?;
        client.batch_execute(analyze).await?;
    }
    Ok(())
}

async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

struct Portal {
    base: String,
    http: reqwest::Client,
}

impl Portal {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        send(
            self.http
                .post(format!("{}{path}", self.base))
                .basic_auth("admin", Some(ADMIN_PW))
                .json(&body),
        )
        .await
    }

    /// A product, an account and a license for `max` instances; its lid.
    async fn license(&self, max: usize) -> anyhow::Result<String> {
        let (s, _) = self
            .post(
                "/api/products",
                json!({"slug": "grafana-enterprise", "name": "Grafana Enterprise",
                       "features": ["reporting", "saml"]}),
            )
            .await?;
        anyhow::ensure!(s == 201 || s == 409, "product: {s}");
        let (s, account) = self
            .post(
                "/api/accounts",
                json!({"company": "Bench Corp", "slug": format!("bench-{}", uuid::Uuid::new_v4().simple())}),
            )
            .await?;
        anyhow::ensure!(s == 201, "account: {s} {account}");
        let (s, l) = self
            .post(
                "/api/licenses",
                json!({"account_id": account["id"], "products": ["grafana-enterprise"],
                       "expires_at": "2099-01-01T00:00:00Z", "features": ["reporting"],
                       "included_users": 100, "max_instances": max}),
            )
            .await?;
        anyhow::ensure!(s == 201, "license: {s} {l}");
        Ok(l["lid"].as_str().context("lid")?.to_string())
    }
}

// ------------------------------------------------------------ databases

struct Store {
    url: String,
    pg_name: Option<String>,
}

fn pg_admin_url() -> String {
    std::env::var("LOAD_PG_ADMIN")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn pg_admin(sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

impl Store {
    async fn new(kind: &'static str, dir: &Path) -> anyhow::Result<Store> {
        if kind == "sqlite" {
            return Ok(Store {
                url: format!("sqlite://{}", dir.join("charter.db").display()),
                pg_name: None,
            });
        }
        let name = format!("charter_bench_{}", uuid::Uuid::new_v4().simple());
        pg_admin(&format!("CREATE DATABASE {name}")).await?;
        let admin = pg_admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Ok(Store {
            url: format!("{base}/{name}"),
            pg_name: Some(name),
        })
    }

    async fn drop_db(self) {
        if let Some(name) = self.pg_name {
            let _ = pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

// ------------------------------------------------------------ the table

#[derive(Default)]
struct Row {
    scenario: String,
    store: String,
    rate: String,
    p50: String,
    p99: String,
    figure: String,
    reference: String,
    ratio: String,
    target: String,
}

fn print_table(rows: &[Row], load: &str) {
    let header = [
        "scenario",
        "store",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "figure",
        "reference (same run)",
        "ratio",
        "target",
    ];
    let cells: Vec<[&str; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.as_str(),
                r.store.as_str(),
                r.rate.as_str(),
                r.p50.as_str(),
                r.p99.as_str(),
                r.figure.as_str(),
                r.reference.as_str(),
                r.ratio.as_str(),
                r.target.as_str(),
            ]
        })
        .collect();
    let mut w = header.map(|h| h.chars().count());
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    let line = |c: &[&str; 9]| {
        let mut s = String::from("|");
        for (i, v) in c.iter().enumerate() {
            s.push_str(&format!(" {v:<width$} |", width = w[i]));
        }
        s
    };
    println!();
    println!("{}", line(&header));
    let sep: Vec<String> = w.iter().map(|n| "-".repeat(*n)).collect();
    println!(
        "|{}|",
        sep.iter()
            .map(|s| format!("-{s}-"))
            .collect::<Vec<_>>()
            .join("|")
    );
    for c in &cells {
        println!("{}", line(c));
    }
    println!(
        "\n{} cores; load average {load}; issuer log level {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::var("CHARTER_LOG").unwrap_or_else(|_| "info".into())
    );
}

// ------------------------------------------------------------ scenarios

async fn run() -> anyhow::Result<()> {
    if env_or("LOAD_SCALE", 0) != 0 {
        return scale::run().await;
    }
    if env_or("LOAD_USAGE", 0) != 0 {
        let load_before = loadavg();
        let rows = usage::run().await?;
        print_table(
            &rows,
            &format!("{load_before} (start), {} (end)", loadavg()),
        );
        return Ok(());
    }
    let n: usize = env_or("LOAD_N", 2000);
    let conc: usize = env_or("LOAD_CONCURRENCY", 16);
    let stores: String = env_or("LOAD_STORES", "sqlite,postgres".to_string());
    let push_sizes: String = env_or("LOAD_PUSH", "1000,10000".to_string());
    let load_before = loadavg();
    let refs = RawRefs::new()?;
    let mut rows = Vec::new();
    let mut check_issuer: Option<(Proc, tempfile::TempDir, String)> = None;

    for kind in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind: &'static str = if kind == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        };
        let algs: String = env_or("LOAD_ALGS", "rs256,eddsa".to_string());
        for alg in ["rs256", "eddsa"] {
            if !algs.split(',').any(|a| a.trim() == alg) {
                continue;
            }
            eprintln!("== issue + renew, {alg}, {kind}");
            let dir = tempfile::tempdir()?;
            if alg == "eddsa" {
                let status = command(&charter_bin())
                    .args(["keys", "generate", "--alg", "eddsa", "--dir"])
                    .arg(dir.path().join("keys"))
                    .stdout(Stdio::null())
                    .status()?;
                anyhow::ensure!(status.success(), "keys generate");
            }
            let store = Store::new(kind, dir.path()).await?;
            let proc = issuer(dir.path(), &store.url, &["--push-interval-secs", "0"], None).await?;
            // The floor once per algorithm, on the first store.
            let keys_dir = dir.path().join("keys");
            let floor_keys = (Some(kind) == stores.split(',').map(str::trim).next()
                && env_or("LOAD_FLOOR", 1) != 0)
                .then_some(keys_dir.as_path());
            let (issue_rows, renew_row) = issue_and_renew(
                &proc,
                n,
                conc,
                (alg, kind),
                &refs,
                Variant {
                    label: "",
                    floor_keys,
                },
            )
            .await?;
            rows.extend(issue_rows);
            rows.push(renew_row);
            if alg == "rs256" && log_level(None) != "warn" && env_or("LOAD_WARN_ROWS", 1) != 0 {
                // What the INFO line per request costs: the same on `warn`.
                eprintln!("== issue + renew, {alg}, {kind}, CHARTER_LOG=warn");
                let d = tempfile::tempdir()?;
                let s = Store::new(kind, d.path()).await?;
                let p = issuer(
                    d.path(),
                    &s.url,
                    &["--push-interval-secs", "0"],
                    Some("warn"),
                )
                .await?;
                let (mut issue_rows, renew_row) = issue_and_renew(
                    &p,
                    n,
                    conc,
                    (alg, kind),
                    &refs,
                    Variant {
                        label: " [log warn]",
                        floor_keys: None,
                    },
                )
                .await?;
                issue_rows.truncate(1);
                rows.extend(issue_rows);
                rows.push(renew_row);
                drop(p);
                s.drop_db().await;
            }
            if kind == "sqlite" && alg == "rs256" && check_issuer.is_none() {
                check_issuer = Some((proc, dir, store.url.clone()));
            } else {
                drop(proc);
                store.drop_db().await;
            }
        }
    }

    if let Some((proc, dir, _)) = &check_issuer {
        eprintln!("== check");
        rows.extend(check(proc, dir.path()).await?);
    }
    drop(check_issuer);

    for kind in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind: &'static str = if kind == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        };
        let mut per_instance = Vec::new();
        for size in push_sizes.split(',').filter_map(|s| s.trim().parse().ok()) {
            eprintln!("== push {size}, {kind}");
            let (row, per) = push(kind, size, conc).await?;
            rows.push(row);
            per_instance.push((size, per));
        }
        if let (Some((a, pa)), Some((b, pb))) = (per_instance.first(), per_instance.last())
            && a != b
        {
            rows.push(Row {
                scenario: format!("push per-instance {b} vs {a}"),
                store: kind.into(),
                figure: format!("{:.3} ms", pb * 1e3),
                reference: format!("{:.3} ms", pa * 1e3),
                ratio: format!("{:.2}", pb / pa),
                target: "≤ 1.2".into(),
                ..Default::default()
            });
        }
    }
    print_table(
        &rows,
        &format!("{load_before} (start), {} (end)", loadavg()),
    );
    Ok(())
}

/// Scenario 2 then 1 (and 5 for the issuer): issue `n` tokens to distinct
/// instances through the portal, then renew each twice.
/// `label` marks the rows; `floor_keys`, when given, also runs [`floor`]
/// with the renewed tokens.
struct Variant<'a> {
    label: &'a str,
    floor_keys: Option<&'a Path>,
}

async fn issue_and_renew(
    proc: &Proc,
    n: usize,
    conc: usize,
    (alg, kind): (&str, &str),
    refs: &RawRefs,
    Variant { label, floor_keys }: Variant<'_>,
) -> anyhow::Result<(Vec<Row>, Row)> {
    let http = http_client(conc)?;
    let portal = Portal {
        base: proc.base.clone(),
        http: http.clone(),
    };
    let lid = portal.license(n + 10).await?;
    // Warm up: the first Basic login pays argon2, later ones hit its cache.
    let (s, _) = portal
        .post(
            &format!("/api/licenses/{lid}/tokens"),
            json!({"instance": "https://warmup.bench.test/"}),
        )
        .await?;
    anyhow::ensure!(s == 201, "warm-up issue: {s}");
    let pid = proc.pid();

    let base = proc.base.clone();
    let cpu0 = cpu_secs(pid);
    let (tokens, lat, wall) = {
        let (http, base, lid) = (http.clone(), base.clone(), lid.clone());
        drive(n, conc, move |i| {
            let req = http
                .post(format!("{base}/api/licenses/{lid}/tokens"))
                .basic_auth("admin", Some(ADMIN_PW))
                .json(&json!({"instance": format!("https://i{i}.bench.test/")}));
            async move {
                let (s, body) = send(req).await?;
                anyhow::ensure!(s == 201, "issue: {s} {body}");
                Ok(body["token"].as_str().context("token")?.to_string())
            }
        })
        .await?
    };
    let issue_cpu = (cpu_secs(pid) - cpu0) / n as f64;
    let rsa = refs.rsa_us();
    let alg_name = if alg == "rs256" { "RS256" } else { "EdDSA" };
    let reference = |cpu: f64, rsa: f64| {
        if alg == "rs256" {
            (
                format!("{:.0} µs raw RSA-2048 sign", rsa),
                format!("{:.2}", cpu * 1e6 / rsa),
                "≤ 1.25".to_string(),
            )
        } else {
            (
                format!(
                    "{:.0} µs raw RSA-2048 sign ({:.1} µs raw Ed25519)",
                    rsa,
                    refs.ed_us()
                ),
                format!("{:.2}", cpu * 1e6 / rsa),
                "≤ 1.25 (of RSA)".to_string(),
            )
        }
    };
    let (r, ratio, target) = reference(issue_cpu, rsa);
    let issue_row = Row {
        scenario: format!("issue (portal) {alg_name}{label}"),
        store: kind.into(),
        rate: format!("{:.0}", n as f64 / wall.as_secs_f64()),
        p50: format!("{:.2}", percentile_ms(&lat, 0.5)),
        p99: format!("{:.2}", percentile_ms(&lat, 0.99)),
        figure: format!("{:.0} µs CPU/token", issue_cpu * 1e6),
        reference: r,
        ratio,
        target,
    };

    // Renew every token, then every renewed one: 2n distinct renewals.
    let mut current = tokens;
    let mut lat_all = Vec::new();
    let mut wall_all = Duration::ZERO;
    let cpu0 = cpu_secs(pid);
    for _ in 0..2 {
        let (next, lat, wall) = renew_all(&http, &base, &current, conc).await?;
        anyhow::ensure!(next[0] != current[0], "renewal returned the same token");
        current = next;
        lat_all.extend(lat);
        wall_all += wall;
    }
    let renew_cpu = (cpu_secs(pid) - cpu0) / (2 * n) as f64;
    let rsa2 = refs.rsa_us();
    let (r, ratio, target) = reference(renew_cpu, (rsa + rsa2) / 2.0);
    let renew_row = Row {
        scenario: format!("renew {alg_name}{label}"),
        store: kind.into(),
        rate: format!("{:.0}", (2 * n) as f64 / wall_all.as_secs_f64()),
        p50: format!("{:.2}", percentile_ms(&lat_all, 0.5)),
        p99: format!("{:.2}", percentile_ms(&lat_all, 0.99)),
        figure: format!("{:.0} µs CPU/renewal", renew_cpu * 1e6),
        reference: r,
        ratio,
        target,
    };
    let mut rows = vec![issue_row];
    if let Some(keys) = floor_keys {
        rows.push(floor(keys, current, conc, alg_name, refs).await?);
    }
    if alg == "rs256" {
        rows.push(Row {
            scenario: "peak RSS issuer (issue+renew)".into(),
            store: kind.into(),
            figure: format!("{:.1} MiB", peak_rss_mib(pid)),
            ..Default::default()
        });
    }
    Ok((rows, renew_row))
}

/// Scenario 3 (and 5 for the instance): `charter instance` holding a token
/// from the issuer, against a bare axum handler, alternating rounds.
async fn check(issuer: &Proc, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let secs: f64 = env_or("LOAD_CHECK_SECS", 3.0);
    let conns: usize = env_or("LOAD_CHECK_CONNECTIONS", 8);
    let port = free_port()?;
    let root = format!("http://127.0.0.1:{port}/");
    let mut cmd = command(&charter_bin());
    cmd.arg("instance")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--issuer", &issuer.base, "--root-url", &root])
        .args(["--data", &dir.join("instance").to_string_lossy()])
        .args(["--dialects", "grafana"])
        .env("CHARTER_INSTANCE_ADMIN_PASSWORD", INSTANCE_PW);
    let instance = spawn(cmd, port, dir.join("instance.log")).await?;
    let http = http_client(4)?;
    let portal = Portal {
        base: issuer.base.clone(),
        http: http.clone(),
    };
    let lid = portal.license(2).await?;
    let (s, issued) = portal
        .post(
            &format!("/api/licenses/{lid}/tokens"),
            json!({"instance": root}),
        )
        .await?;
    anyhow::ensure!(s == 201, "issue: {issued}");
    let (s, installed) = send(
        http.post(format!("{root}api/licensing/token"))
            .basic_auth("admin", Some(INSTANCE_PW))
            .json(&json!({"token": issued["token"]})),
    )
    .await?;
    anyhow::ensure!(s == 200, "install: {s} {installed}");

    let bare_port = free_port()?;
    let mut cmd = command(&std::env::current_exe()?.to_string_lossy());
    cmd.env("CHARTER_LOAD_BARE", format!("127.0.0.1:{bare_port}"));
    let bare = spawn(cmd, bare_port, dir.join("bare.log")).await?;

    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("admin:{INSTANCE_PW}"),
    );
    let request = format!(
        "GET /api/licensing/check HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\r\n"
    );
    let inst_addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let bare_addr: SocketAddr = format!("127.0.0.1:{bare_port}").parse()?;
    // Both answer `true`: make sure before measuring.
    for a in [inst_addr, bare_addr] {
        let (count, _) = hammer(a, &request, 1, Duration::from_millis(200)).await?;
        anyhow::ensure!(count > 0, "no answer from {a}");
    }
    let (mut bare_total, mut inst_total) = (0usize, 0usize);
    let (mut bare_lat, mut inst_lat) = (Vec::new(), Vec::new());
    let round = Duration::from_secs_f64(secs);
    // Alternating rounds, so both see the same machine state.
    for _ in 0..3 {
        let (b, bl) = hammer(bare_addr, &request, conns, round).await?;
        let (c, cl) = hammer(inst_addr, &request, conns, round).await?;
        bare_total += b;
        inst_total += c;
        bare_lat.extend(bl);
        inst_lat.extend(cl);
    }
    let time = 3.0 * secs;
    let rows = vec![
        Row {
            scenario: "check (charter instance)".into(),
            store: "-".into(),
            rate: format!("{:.0}", inst_total as f64 / time),
            p50: format!("{:.3}", percentile_ms(&inst_lat, 0.5)),
            p99: format!("{:.3}", percentile_ms(&inst_lat, 0.99)),
            figure: format!("{:.0} req/s", inst_total as f64 / time),
            reference: format!(
                "{:.0} req/s bare axum (p50 {:.3}, p99 {:.3} ms)",
                bare_total as f64 / time,
                percentile_ms(&bare_lat, 0.5),
                percentile_ms(&bare_lat, 0.99)
            ),
            ratio: format!("{:.2}", inst_total as f64 / bare_total as f64),
            target: "≥ 0.8".into(),
        },
        Row {
            scenario: "peak RSS charter instance (check)".into(),
            store: "-".into(),
            figure: format!("{:.1} MiB", peak_rss_mib(instance.pid())),
            reference: format!("{:.1} MiB bare axum", peak_rss_mib(bare.pid())),
            ..Default::default()
        },
    ];
    Ok(rows)
}

/// `conns` keep-alive connections sending `request` back to back for `dur`;
/// a minimal HTTP/1.1 client so the load tool costs little next to servers.
/// Returns the answers counted and a sample of latencies.
async fn hammer(
    addr: SocketAddr,
    request: &str,
    conns: usize,
    dur: Duration,
) -> anyhow::Result<(usize, Vec<Duration>)> {
    let deadline = Instant::now() + dur;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let req = request.as_bytes().to_vec();
        tasks.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            let (mut count, mut lat) = (0usize, Vec::new());
            while Instant::now() < deadline {
                let t = Instant::now();
                s.write_all(&req).await?;
                // Read one response: headers, then Content-Length bytes.
                buf.clear();
                let total = loop {
                    let n = s.read(&mut chunk).await?;
                    anyhow::ensure!(n > 0, "connection closed");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = std::str::from_utf8(&buf[..end])?;
                        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "answer: {head}");
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .context("content-length")?;
                        break end + 4 + len;
                    }
                };
                while buf.len() < total {
                    let n = s.read(&mut chunk).await?;
                    anyhow::ensure!(n > 0, "connection closed");
                    buf.extend_from_slice(&chunk[..n]);
                }
                anyhow::ensure!(&buf[total - 4..total] == b"true", "not true");
                count += 1;
                if count % 16 == 0 {
                    lat.push(t.elapsed());
                }
            }
            anyhow::Ok((count, lat))
        });
    }
    let (mut count, mut lat) = (0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        let (c, l) = r??;
        count += c;
        lat.extend(l);
    }
    Ok((count, lat))
}

/// The bare reference: an axum handler answering `true`, in its own process
/// with the same runtime as `charter instance`.
fn bare_server() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::var("CHARTER_LOAD_BARE")?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/api/licensing/check",
            axum::routing::get(|| async { axum::Json(true) }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// `POST {base}/api/tokens/renew` once with each of `tokens`, `conc` in
/// flight; the renewed tokens, latencies and wall time.
async fn renew_all(
    http: &reqwest::Client,
    base: &str,
    tokens: &[String],
    conc: usize,
) -> anyhow::Result<(Vec<String>, Vec<Duration>, Duration)> {
    let toks: Arc<[String]> = tokens.into();
    let (http, base) = (http.clone(), base.to_string());
    // `LOAD_RENEW_USAGE=1`: each renewal reports usage, as instances do.
    let usage = env_or("LOAD_RENEW_USAGE", 0) != 0;
    drive(tokens.len(), conc, move |i| {
        let mut req = http
            .post(format!("{base}/api/tokens/renew"))
            .bearer_auth(&toks[i]);
        if usage {
            req = req.json(&serde_json::json!({"usage": {"users": 7 + i % 50, "admins": 1}}));
        }
        async move {
            let (s, body) = send(req).await?;
            anyhow::ensure!(s == 200, "renew: {s} {body}");
            Ok(body["token"].as_str().context("token")?.to_string())
        }
    })
    .await
}

/// Renews each of `tokens` once on [`floor_server`] and reports its CPU per
/// renewal next to one raw RSA signature.
async fn floor(
    keys: &Path,
    tokens: Vec<String>,
    conc: usize,
    alg_name: &str,
    refs: &RawRefs,
) -> anyhow::Result<Row> {
    let port = free_port()?;
    let mut cmd = command(&std::env::current_exe()?.to_string_lossy());
    cmd.env("CHARTER_LOAD_FLOOR", format!("127.0.0.1:{port}"))
        .env("CHARTER_LOAD_KEYS", keys);
    let dir = keys.parent().context("keys dir")?;
    let proc = spawn(cmd, port, dir.join("floor.log")).await?;
    let http = http_client(conc)?;
    let n = tokens.len();
    let cpu0 = cpu_secs(proc.pid());
    let (_, lat, wall) = renew_all(&http, &proc.base, &tokens, conc).await?;
    let cpu = (cpu_secs(proc.pid()) - cpu0) / n as f64;
    let rsa = refs.rsa_us();
    Ok(Row {
        scenario: format!("renew floor {alg_name}: HTTP + verify + sign only"),
        store: "-".into(),
        rate: format!("{:.0}", n as f64 / wall.as_secs_f64()),
        p50: format!("{:.2}", percentile_ms(&lat, 0.5)),
        p99: format!("{:.2}", percentile_ms(&lat, 0.99)),
        figure: format!("{:.0} µs CPU/renewal", cpu * 1e6),
        reference: format!("{rsa:.0} µs raw RSA-2048 sign"),
        ratio: format!("{:.2}", cpu * 1e6 / rsa),
        target: "(floor)".into(),
    })
}

/// The floor of a renewal: the same HTTP request verified and answered with
/// a freshly signed token by the same keyring, with no storage, no checks of
/// the license and no log line. What the issuer's CPU per renewal is compared
/// with to see what storage, audit and logging add.
fn floor_server() -> anyhow::Result<()> {
    use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
    let addr: SocketAddr = std::env::var("CHARTER_LOAD_FLOOR")?.parse()?;
    let keys = charter_token::Keyring::load(Path::new(&std::env::var("CHARTER_LOAD_KEYS")?))?;
    let keys = Arc::new(keys);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/api/tokens/renew",
            axum::routing::post(move |headers: HeaderMap| {
                let keys = keys.clone();
                async move {
                    let token = headers
                        .get(AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .ok_or(StatusCode::UNAUTHORIZED)?;
                    let mut claims = keys
                        .public()
                        .verify_signature(token)
                        .map_err(|_| StatusCode::UNAUTHORIZED)?;
                    let now = charter_token::now();
                    claims.jti = uuid::Uuid::now_v7().to_string();
                    claims.exp = now + (claims.exp - claims.iat);
                    claims.iat = now;
                    let token = keys
                        .sign(&claims)
                        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                    Ok::<_, StatusCode>(axum::Json(charter_token::TokenResponse { token, claims }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// Deliveries seen by the receiver: count, first and last arrival.
#[derive(Default)]
struct Seen {
    count: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A loopback receiver standing in for many Grafana instances.
async fn receiver() -> anyhow::Result<(String, Arc<std::sync::Mutex<Seen>>)> {
    use axum::extract::State;
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{n}/api/licensing/token",
            axum::routing::post(
                |State(seen): State<Arc<std::sync::Mutex<Seen>>>, body: axum::body::Bytes| async move {
                    let ok = body.windows(7).any(|w| w == b"\"token\"");
                    let now = Instant::now();
                    let mut s = seen.lock().expect("lock");
                    if ok {
                        s.count += 1;
                        s.first.get_or_insert(now);
                        s.last = Some(now);
                    }
                    axum::Json(json!({}))
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), seen))
}

/// Scenario 4: `size` instances with push on, all due; the push job (every
/// second) renews and delivers each. Returns the row and seconds per instance.
async fn push(kind: &'static str, size: usize, conc: usize) -> anyhow::Result<(Row, f64)> {
    let dir = tempfile::tempdir()?;
    let store = Store::new(kind, dir.path()).await?;
    let (target, seen) = receiver().await?;
    // Bind with the job off, then restart with it on: all are due at once.
    let lid = {
        let proc = issuer(dir.path(), &store.url, &["--push-interval-secs", "0"], None).await?;
        let http = http_client(conc)?;
        let portal = Portal {
            base: proc.base.clone(),
            http: http.clone(),
        };
        let lid = portal.license(size).await?;
        let (base, l) = (proc.base.clone(), lid.clone());
        drive(size, conc, move |i| {
            let req = http
                .post(format!("{base}/api/licenses/{l}/instances"))
                .basic_auth("admin", Some(ADMIN_PW))
                .json(&json!({"url": format!("{target}/{i}/"), "push_enabled": true}));
            async move {
                let (s, body) = send(req).await?;
                anyhow::ensure!(s == 201, "bind: {s} {body}");
                Ok(String::new())
            }
        })
        .await?;
        lid
    };
    let _ = lid;
    let proc = issuer(dir.path(), &store.url, &["--push-interval-secs", "1"], None).await?;
    let cpu0 = cpu_secs(proc.pid());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = seen.lock().expect("lock").count >= size;
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("push {size}: timed out");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the run record its last outcomes before reading the CPU.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = (cpu_secs(proc.pid()) - cpu0) / size as f64;
    let (wall, count) = {
        let s = seen.lock().expect("lock");
        (
            s.last
                .zip(s.first)
                .map(|(l, f)| l - f)
                .unwrap_or_default()
                .as_secs_f64(),
            s.count,
        )
    };
    let per = wall / (count.max(2) - 1) as f64;
    drop(proc);
    store.drop_db().await;
    let row = Row {
        scenario: format!("push {size} due instances"),
        store: kind.into(),
        rate: format!("{:.0}", 1.0 / per),
        figure: format!(
            "{wall:.2} s wall, {:.3} ms/instance, {:.0} µs CPU/instance",
            per * 1e3,
            cpu * 1e6
        ),
        ..Default::default()
    };
    Ok((row, per))
}
