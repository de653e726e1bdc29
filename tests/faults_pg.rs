//! PostgreSQL stopped and started under a running `charter serve` while
//! instances renew: during the outage every renewal gets a quick 503 with a
//! message (no hang), the pool recovers by itself, every renewal answered
//! 200 is in the tokens table, and no renewal was recorded that was not
//! answered (a client that lost an answer retries with the same old token
//! and gets the recorded one). Runs its own PostgreSQL on a free port; the
//! shared server at 5432 is not touched.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use common::pgtemp::private_pg_or_skip;
use common::procs::{self, Portal};
use serde_json::json;

const INSTANCES: usize = 8;

/// One answer seen by a renewing instance.
#[derive(Debug, Clone)]
struct Answer {
    phase: u8,
    status: u16,
    took: Duration,
    jti: Option<String>,
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_renewals_run() {
    let Some(pg) = private_pg_or_skip("postgres_restart_while_renewals_run") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let issuer = procs::issuer(
        dir.path(),
        &pg.url("postgres"),
        &[
            "--push-interval-secs",
            "0",
            "--renew-limit-per-license",
            "0",
            "--renew-limit-per-address",
            "0",
        ],
    );
    let portal = Portal::new(&issuer.base);
    let lid = portal.license(json!({"max_instances": INSTANCES})).await;
    let mut first = Vec::new();
    for n in 0..INSTANCES {
        let (s, issued) = portal
            .post(
                &format!("/api/licenses/{lid}/tokens"),
                json!({"instance": format!("https://i{n}.example/")}),
            )
            .await;
        assert_eq!(s, 201, "{issued}");
        first.push(issued["token"].as_str().expect("token").to_string());
    }

    // 0: up, 1: stopping, 2: down, 3: starting again, 4: up again.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut tasks = tokio::task::JoinSet::new();
    for token in first {
        let (phase, stop, http) = (phase.clone(), stop.clone(), http.clone());
        let url = format!("{}api/tokens/renew", issuer.base);
        tasks.spawn(async move {
            let mut token = token;
            let mut answers = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let at = phase.load(Ordering::SeqCst);
                let started = Instant::now();
                let res = http.post(&url).bearer_auth(&token).send().await;
                let took = started.elapsed();
                let (status, body) = match res {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        (s, r.json::<serde_json::Value>().await.unwrap_or_default())
                    }
                    Err(e) => (0, json!({"message": e.to_string()})),
                };
                let jti = (status == 200).then(|| {
                    token = body["token"].as_str().expect("token").to_string();
                    body["claims"]["jti"].as_str().expect("jti").to_string()
                });
                answers.push(Answer {
                    phase: at.max(phase.load(Ordering::SeqCst)),
                    status,
                    took,
                    jti,
                    message: body["message"].as_str().unwrap_or_default().to_string(),
                });
                if (stop.load(Ordering::SeqCst) && status == 200) || Instant::now() > deadline {
                    return answers;
                }
                tokio::time::sleep(Duration::from_millis(if status == 200 { 20 } else { 100 }))
                    .await;
            }
        });
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    phase.store(1, Ordering::SeqCst);
    pg.down().expect("PostgreSQL stops");
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.store(3, Ordering::SeqCst);
    pg.up().expect("PostgreSQL starts again");
    phase.store(4, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let per_instance: Vec<Vec<Answer>> = tasks.join_all().await;

    // Every answer is 200 or a quick 503 with a message; the outage was seen.
    let all: Vec<&Answer> = per_instance.iter().flatten().collect();
    let by_status = all.iter().fold(HashMap::new(), |mut m, a| {
        *m.entry(a.status).or_insert(0) += 1;
        m
    });
    for a in &all {
        assert!(
            a.status == 200 || a.status == 503,
            "only 200 or 503, got {a:?}"
        );
        if a.status == 503 {
            assert!(a.message.contains("database unavailable"), "{a:?}");
            assert!(a.took < Duration::from_secs(6), "a 503 took {:?}", a.took);
        }
    }
    let down: Vec<&&Answer> = all.iter().filter(|a| a.phase == 2).collect();
    assert!(!down.is_empty(), "renewals were sent during the outage");
    assert!(
        down.iter().all(|a| a.status == 503),
        "while down, every renewal is 503: {down:?}"
    );
    let slowest = all.iter().map(|a| a.took).max().unwrap_or_default();
    // Recovery: every instance ended on a 200 after the restart.
    for answers in &per_instance {
        let last = answers.last().expect("answers");
        assert_eq!(last.status, 200, "recovered by itself: {last:?}");
        assert_eq!(last.phase, 4);
    }

    // What the database holds.
    let (client, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .expect("private PostgreSQL");
    tokio::spawn(conn);
    let rows = client
        .query("SELECT jti, reason FROM tokens", &[])
        .await
        .expect("tokens");
    let recorded: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let recorded_renewals: HashSet<String> = rows
        .iter()
        .filter(|r| r.get::<_, String>(1) == "renew")
        .map(|r| r.get::<_, String>(0))
        .collect();
    let answered: HashSet<String> = all.iter().filter_map(|a| a.jti.clone()).collect();
    let lost: Vec<_> = answered.difference(&recorded).collect();
    assert!(lost.is_empty(), "answered 200 but not recorded: {lost:?}");
    let unanswered: Vec<_> = recorded_renewals.difference(&answered).collect();
    assert!(
        unanswered.is_empty(),
        "recorded but never answered: {unanswered:?}"
    );
    // Each instance points at the last token it was given.
    let last: HashSet<String> = per_instance
        .iter()
        .map(|a| a.iter().rev().find_map(|a| a.jti.clone()).expect("a 200"))
        .collect();
    let rows = client
        .query("SELECT last_jti FROM instances", &[])
        .await
        .expect("instances");
    let pointed: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(pointed, last, "instances point at the last answered token");
    eprintln!(
        "renewals: {} answered ({:?} by status), {} during the outage, slowest {:?}; \
         {} renewal tokens recorded = {} distinct answered; lost 0, unanswered 0",
        all.len(),
        by_status,
        down.len(),
        slowest,
        recorded_renewals.len(),
        answered.len()
    );
    issuer.terminate();
}
