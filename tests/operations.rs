//! What an SRE relies on: `/metrics` after a lifecycle, a request id on every
//! request, JSON logs, and a graceful SIGTERM under load.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use serde_json::json;

both_stores!(
    metrics_after_a_lifecycle,
    metrics_stay_small_with_ten_thousand_licenses
);

async fn metrics_after_a_lifecycle(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (_, issued) = app.issue(&lid, "https://a.example/").await;
    let token = issued["token"].as_str().expect("token").to_string();
    assert_eq!(app.renew(&token, None).await.0, 200);
    assert_eq!(app.renew("garbage", None).await.0, 401);
    app.post(&format!("/api/licenses/{lid}/suspend"), json!({}))
        .await;
    assert_eq!(app.renew(&token, None).await.0, 403);
    app.get("/api/licenses/nope").await;

    let res = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    let has = |line: &str| text.lines().any(|l| l == line);
    for line in [
        r#"charter_tokens_issued_total{reason="issue"} 1"#,
        r#"charter_tokens_issued_total{reason="renew"} 1"#,
        r#"charter_renewals_refused_total{reason="bad_token"} 1"#,
        r#"charter_renewals_refused_total{reason="suspended"} 1"#,
        r#"charter_http_requests_total{method="POST",route="/api/tokens/renew",status="200"} 1"#,
        r#"charter_http_requests_total{method="POST",route="/api/tokens/renew",status="403"} 1"#,
        r#"charter_http_requests_total{method="GET",route="/api/licenses/{lid}",status="404"} 1"#,
    ] {
        assert!(has(line), "missing `{line}` in:\n{text}");
    }
    // Licenses by state and by expiry window, never one series per license.
    for line in [
        r#"charter_licenses{state="suspended"} 1"#,
        r#"charter_licenses{state="active"} 0"#,
        r#"charter_licenses_expiring{window="later"} 0"#,
    ] {
        assert!(has(line), "missing `{line}` in:\n{text}");
    }
    assert!(!text.contains("lid="), "{text}");
    app.license(json!({})).await;
    let in_60_days = charter::domain::rfc3339::format(charter_token::now() + 60 * 86_400);
    app.license(json!({"expires_at": in_60_days})).await;
    let soon = charter::domain::rfc3339::format(charter_token::now() + 3 * 86_400);
    app.license(json!({"expires_at": soon})).await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let has = |line: &str| text.lines().any(|l| l == line);
    for line in [
        r#"charter_licenses{state="active"} 3"#,
        r#"charter_licenses{state="expired"} 0"#,
        r#"charter_licenses{state="suspended"} 1"#,
        r#"charter_licenses{state="revoked"} 0"#,
        r#"charter_licenses_expiring{window="expired"} 0"#,
        r#"charter_licenses_expiring{window="7d"} 1"#,
        r#"charter_licenses_expiring{window="30d"} 0"#,
        r#"charter_licenses_expiring{window="90d"} 1"#,
        r#"charter_licenses_expiring{window="later"} 1"#,
    ] {
        assert!(has(line), "missing `{line}` in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("charter_db_pool_connections{state=\"size\"}")),
        "{text}"
    );
    assert!(
        text.contains("charter_http_request_duration_seconds_bucket"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = TestApp::start(Backend::Sqlite).await;
    let res = app
        .http
        .get(app.url("/api/health"))
        .send()
        .await
        .expect("get");
    let id = res
        .headers()
        .get("x-request-id")
        .expect("request id")
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let res = app
        .http
        .get(app.url("/api/nope"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("get");
    assert_eq!(
        res.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"abc-123"[..])
    );
    app.stop().await;
}

/// `charter serve` under load gets SIGTERM. The load generator acts as a load
/// balancer: it polls `/api/health` and stops sending once it answers 503.
/// No request fails, the process exits 0 within drain + grace, and its JSON
/// logs carry request ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_request() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_charter"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--shutdown-grace-secs",
            "10",
            "--shutdown-drain-secs",
            "1",
        ])
        .env("CHARTER_ADMIN_PASSWORD", common::ADMIN.1)
        // A load test: one license renewed from one address, far past the default limits.
        .env("CHARTER_RENEW_LIMIT_PER_LICENSE", "0")
        .env("CHARTER_RENEW_LIMIT_PER_ADDRESS", "0")
        .env_remove("CHARTER_DATABASE_URL")
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut logs = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server starts");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        logs.push(v.clone());
        if v["fields"]["message"] == "charter issuer listening" {
            break v["fields"]["addr"].as_str().expect("addr").to_string();
        }
    };
    let base = format!("http://{addr}");

    // A license and a token to renew.
    let http = reqwest::Client::new();
    let admin = |m: reqwest::Method, p: &str| {
        http.request(m, format!("{base}{p}"))
            .basic_auth(common::ADMIN.0, Some(common::ADMIN.1))
    };
    let post = |p: &str, body: serde_json::Value| {
        common::send(admin(reqwest::Method::POST, p).json(&body))
    };
    post("/api/products", json!({"slug": "p", "name": "P"})).await;
    let (_, account) = post("/api/accounts", json!({"company": "C", "slug": "c"})).await;
    let (_, license) = post("/api/licenses", json!({"account_id": account["id"], "products": ["p"], "expires_at": "2099-01-01T00:00:00Z"})).await;
    let (s, issued) = post(
        &format!(
            "/api/licenses/{}/tokens",
            license["lid"].as_str().expect("lid")
        ),
        json!({"instance": "https://a.example/"}),
    )
    .await;
    assert_eq!(s, 201, "{issued}");
    let token = issued["token"].as_str().expect("token").to_string();

    // Load: 16 clients renewing on fresh connections while health says 200.
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (client, url, stop) = (client.clone(), format!("{base}/api/health"), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client
                    .get(&url)
                    .send()
                    .await
                    .map_or(true, |r| r.status() != 200)
                {
                    stop.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    for _ in 0..16 {
        let (client, url, token) = (
            client.clone(),
            format!("{base}/api/tokens/renew"),
            token.clone(),
        );
        let (ok, refused, failed, stop) =
            (ok.clone(), refused.clone(), failed.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).bearer_auth(&token).send().await {
                    Ok(res) if res.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(res) => failed
                        .lock()
                        .expect("lock")
                        .push(format!("status {}", res.status())),
                    Err(e) if e.is_connect() => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => failed.lock().expect("lock").push(format!("{e:?}")),
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(ok.load(Ordering::Relaxed) > 0, "the load is running");
    let pid = child.id().to_string();
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    let took = signalled.elapsed();
    while tasks.join_next().await.is_some() {}

    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(11),
        "exited within drain + grace: {took:?}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "served through the drain: {took:?}"
    );
    let failed = failed.lock().expect("lock").clone();
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "no connection refused: the clients stopped first"
    );
    eprintln!(
        "renewals answered: {}, exit {took:?} after SIGTERM",
        ok.load(Ordering::Relaxed)
    );

    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        logs.push(serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")));
    }
    let with_id = logs
        .iter()
        .filter(|l| {
            l["span"]["request_id"]
                .as_str()
                .is_some_and(|id| id.len() == 36)
        })
        .count();
    assert!(with_id > 0, "request log lines carry the request id");
    // One line per renewal, its access line, naming the token it issued.
    let renewed: Vec<&serde_json::Value> = logs
        .iter()
        .filter(|l| l["span"]["path"] == "/api/tokens/renew" && l["fields"]["status"] == 200)
        .collect();
    assert!(!renewed.is_empty(), "renewals were logged");
    for l in &renewed {
        assert!(
            l["span"]["jti"].as_str().is_some_and(|j| j.len() == 36),
            "{l}"
        );
        assert!(
            l["span"]["lid"].is_string() && l["span"]["instance"].is_string(),
            "{l}"
        );
        let id = &l["span"]["request_id"];
        let lines = logs
            .iter()
            .filter(|m| &m["span"]["request_id"] == id)
            .count();
        assert_eq!(lines, 1, "one line for request {id}");
    }
    assert!(
        logs.iter().any(|l| l["fields"]["message"] == "stopped"),
        "logged a clean stop"
    );
}

/// Fills the store with `n` active licenses of one account, through its schema.
async fn fill_licenses(app: &TestApp, backend: Backend, n: i64) {
    let account = app.license(json!({})).await["account_id"]
        .as_str()
        .expect("account")
        .to_string();
    let now = charter_token::now();
    // Expiring over the next 400 days: every window has some.
    let head = "INSERT INTO licenses (lid, account_id, status, starts_at, expires_at, max_instances, \
                terms, created_at, updated_at)";
    let select = format!(
        "SELECT 'fill-' || g, '{account}', 'active', {now} - 86400, {now} + (g % 400) * 86400 + 3600, \
         1, '{{}}', {now}, {now} FROM"
    );
    match backend {
        Backend::Sqlite => {
            let path = app
                .data
                .database_url
                .strip_prefix("sqlite://")
                .expect("sqlite")
                .to_string();
            let sql = format!(
                "{head} WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) \
                 {select} s"
            );
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(path).expect("open");
                c.busy_timeout(Duration::from_secs(10)).expect("timeout");
                c.execute_batch(&sql).expect("fill");
            })
            .await
            .expect("join");
        }
        Backend::Postgres => {
            let (client, conn) =
                tokio_postgres::connect(&app.data.database_url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("{head} {select} generate_series(1, {n}) g"))
                .await
                .expect("fill");
        }
    }
}

/// `/metrics` holds a fixed set of series: 10,000 licenses make it no
/// bigger (it was 871 KB with one series per license), and the counts add up.
async fn metrics_stay_small_with_ten_thousand_licenses(backend: Backend) {
    let app = TestApp::start(backend).await;
    fill_licenses(&app, backend, 10_000).await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert!(text.len() < 16 * 1024, "{} bytes:\n{text}", text.len());
    assert!(!text.contains("fill-"), "no license ids in the metrics");
    let value = |series: &str| -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(value(r#"charter_licenses{state="active"}"#), 10_001);
    let windows: i64 = ["expired", "7d", "30d", "90d", "later"]
        .iter()
        .map(|w| value(&format!("charter_licenses_expiring{{window=\"{w}\"}}")))
        .sum();
    assert_eq!(windows, 10_001, "every active license in one window");
    // Expiring on days 0..399 (+1 h): 7 in the first week, 23 more by day 30.
    assert_eq!(value(r#"charter_licenses_expiring{window="7d"}"#), 7 * 25);
}
