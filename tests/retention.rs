//! Retention (issue 17): the prune job deletes old token history except
//! what instances still hold, and old audit events; in batches; one run at
//! a time (on PostgreSQL across replicas).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use charter::licensing::retention;
use common::{Backend, TestApp};
use serde_json::{Value, json};

both_stores!(prune_keeps_what_instances_hold_and_recent_rows);

const DAY: i64 = 86_400;

/// Runs SQL on the test's database, whichever store.
async fn sql(app: &TestApp, backend: Backend, statements: &str) {
    match backend {
        Backend::Sqlite => {
            let path = app
                .data
                .database_url
                .strip_prefix("sqlite://")
                .expect("sqlite")
                .to_string();
            let statements = statements.to_string();
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(path).expect("open");
                c.busy_timeout(Duration::from_secs(10)).expect("timeout");
                c.execute_batch(&statements).expect("sql");
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
            client.batch_execute(statements).await.expect("sql");
        }
    }
}

fn jti(v: &Value) -> String {
    v["claims"]["jti"].as_str().expect("jti").to_string()
}

async fn history(app: &TestApp, lid: &str) -> BTreeSet<String> {
    let (s, page) = app
        .get(&format!("/api/licenses/{lid}/tokens?per_page=1000"))
        .await;
    assert_eq!(s, 200, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["jti"].as_str().expect("jti").to_string())
        .collect()
}

async fn prune_keeps_what_instances_hold_and_recent_rows(backend: Backend) {
    let app = TestApp::start_with(backend, |a| {
        a.token_history_days = Some(400);
        a.audit_retention_days = Some(30);
    })
    .await;
    let license = app.license(json!({"max_instances": 5})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    // Instance a: issued and renewed twice (a0 → a1 → a2); b: b0 → b1;
    // c: c0 only.
    let mut a = Vec::new();
    let (_, t) = app.issue(&lid, "https://a.example").await;
    a.push(t);
    for _ in 0..2 {
        let old = a.last().expect("token")["token"]
            .as_str()
            .expect("token")
            .to_string();
        let (s, t) = app.renew(&old, None).await;
        assert_eq!(s, 200, "{t}");
        a.push(t);
    }
    let (_, b0) = app.issue(&lid, "https://b.example").await;
    let (s, b1) = app.renew(b0["token"].as_str().expect("token"), None).await;
    assert_eq!(s, 200);
    let (_, c0) = app.issue(&lid, "https://c.example").await;

    // All of it 500 days old; and instance a has a push of a1 pending.
    let (a0, a1, a2) = (jti(&a[0]), jti(&a[1]), jti(&a[2]));
    sql(
        &app,
        backend,
        &format!(
            "UPDATE tokens SET iat = iat - {old}; UPDATE audit_events SET at = at - {old}; \
             UPDATE instances SET push_pending_jti = '{a1}' WHERE last_jti = '{a2}';",
            old = 500 * DAY
        ),
    )
    .await;
    // b renews today: b1, now old and no longer current, may go; b2 stays.
    let (s, b2) = app.renew(b1["token"].as_str().expect("token"), None).await;
    assert_eq!(s, 200, "{b2}");
    let before = history(&app, &lid).await;
    assert_eq!(before.len(), 7);

    // Batches of 2: several statements per run, and every one right.
    let pruned = retention::run(app.state(), 2, Duration::ZERO)
        .await
        .expect("prune")
        .expect("not locked");
    assert_eq!(pruned.tokens, 3, "{pruned:?}");
    let kept = history(&app, &lid).await;
    let expected: BTreeSet<String> = [a1.clone(), a2.clone(), jti(&b2), jti(&c0)].into();
    assert_eq!(
        kept, expected,
        "a0, b0 and b1 go; current, pending and young stay"
    );
    assert!(!kept.contains(&a0));

    // Instances still renew with what they hold; a retry of b1's renewal
    // within the window still gets b2 (b1's row is gone, not needed).
    let (s, r) = app
        .renew(a[2]["token"].as_str().expect("token"), None)
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, again) = app.renew(b1["token"].as_str().expect("token"), None).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        jti(&again),
        jti(&b2),
        "the retry gets the token already issued"
    );

    // Audit: only the last 30 days are left, and those all are.
    let (s, page) = app.get("/api/audit?per_page=1000").await;
    assert_eq!(s, 200);
    let events = page["items"].as_array().expect("items");
    let cutoff = charter_token::now() - 30 * DAY;
    assert!(!events.is_empty());
    for e in events {
        let at = charter::domain::rfc3339::parse(e["at"].as_str().expect("at")).expect("time");
        assert!(at > cutoff, "{e}");
    }
    let renewals: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "token.renew")
        .collect();
    assert_eq!(renewals.len(), 2, "b1 → b2 and a2 → a3 today: {events:?}");
    assert!(
        events.iter().all(|e| e["action"] != "license.create"),
        "the license's creation was 500 days ago"
    );

    // a2 is no longer a's current token (a3 is): the next run takes it,
    // and the one after finds nothing.
    let again = retention::run_once(app.state()).await.expect("prune");
    assert_eq!(again.map(|p| p.tokens), Some(1));
    let kept = history(&app, &lid).await;
    let expected: BTreeSet<String> = [a1, jti(&r), jti(&b2), jti(&c0)].into();
    assert_eq!(kept, expected);
    let again = retention::run_once(app.state()).await.expect("prune");
    assert_eq!(again.map(|p| p.tokens), Some(0));
}

/// On PostgreSQL one replica prunes at a time: while another session holds
/// the prune lock, a run deletes nothing and says so; after, it prunes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_prunes_one_replica_at_a_time() {
    let backend = Backend::Postgres;
    let app = TestApp::start_with(backend, |a| {
        a.audit_retention_days = Some(1);
    })
    .await;
    app.license(json!({})).await;
    sql(
        &app,
        backend,
        &format!("UPDATE audit_events SET at = at - {}", 2 * DAY),
    )
    .await;
    // The license's three events and the signing key's import.
    let (_, page) = app.get("/api/audit").await;
    let events = page["total"].as_i64().expect("total");
    assert!(events >= 3, "{page}");
    let (other, conn) = tokio_postgres::connect(&app.data.database_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    other
        .execute("SELECT pg_advisory_lock($1)", &[&charter::db::PRUNE_LOCK])
        .await
        .expect("lock");
    let run = retention::run_once(app.state()).await.expect("prune");
    assert_eq!(run, None, "another replica holds the lock");
    let (_, page) = app.get("/api/audit").await;
    assert_eq!(page["total"], events, "nothing pruned: {page}");
    other
        .execute("SELECT pg_advisory_unlock($1)", &[&charter::db::PRUNE_LOCK])
        .await
        .expect("unlock");
    let run = retention::run_once(app.state()).await.expect("prune");
    assert_eq!(run.map(|p| p.audit), u64::try_from(events).ok());
    let (_, page) = app.get("/api/audit").await;
    assert_eq!(page["total"], 0, "{page}");
}
