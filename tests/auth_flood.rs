//! A hundred wrong admin passwords at once from one address, against a real
//! `charter serve`: no more of them are checked than the failure limit
//! allows (each is counted before its password is hashed), and the
//! issuer's memory stays flat (argon2 takes ~19 MiB per check; the checks
//! running at once are bounded). An outside review saw 58 answered 401 and
//! RSS go from 199 MiB to 1.3 GB on the old code.

mod common;

use std::time::Duration;

use common::procs;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_bad_logins_stay_within_the_limit_and_memory_stays_flat() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("charter.db").display());
    let issuer = procs::issuer(dir.path(), &db, &["--push-interval-secs", "0"]);
    let pid = issuer.child.id();
    let base = issuer.base.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    // Warm up: the good password once (hashed, then remembered), a few reads.
    for _ in 0..3 {
        let res = http
            .get(format!("{base}/api/products"))
            .basic_auth(common::ADMIN.0, Some(common::ADMIN.1))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status().as_u16(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100 {
        let (http, base) = (http.clone(), base.clone());
        tasks.spawn(async move {
            http.get(format!("{base}/api/products"))
                .basic_auth(common::ADMIN.0, Some(format!("wrong-{n}")))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        });
    }
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    while let Some(s) = tasks.join_next().await {
        *statuses.entry(s.expect("task")).or_default() += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(pid);

    let unauthorized = statuses.get(&401).copied().unwrap_or(0);
    assert!(
        unauthorized <= 10,
        "at most the limit's 10 passwords are checked: {statuses:?}"
    );
    assert!(
        statuses.keys().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("statuses {statuses:?}, RSS {before} -> {after} KiB");
    assert!(
        grown_mib < 64,
        "RSS grew {grown_mib} MiB ({before} -> {after} KiB): {statuses:?}"
    );
    assert!(
        unauthorized >= 1,
        "wrong passwords are still answered: {statuses:?}"
    );
    issuer.terminate();
}
