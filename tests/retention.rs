//! Retention (issue 17): the prune job deletes old token history except
//! what instances still hold, and old audit events; in batches; one run at
//! a time (on PostgreSQL across replicas). And (issue 15) it rolls old
//! usage reports up into daily maxima.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use charter::domain::UsageReport;
use charter::domain::rfc3339;
use charter::domain::usage::Bucket;
use charter::licensing::retention;
use common::{Backend, TestApp};
use serde_json::{Value, json};

/// Day and month series read the daily summaries for the days they cover
/// and answer as the reports do: the same maxima and last values, the same
/// buckets, hour buckets untouched; a report after the summarized days
/// still counts; summarizing again changes nothing.
async fn usage_summaries_answer_as_the_reports(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (lid, ids, tokens) = instances(&app, 2).await;
    // Six past days (crossing a month boundary for some dates), each
    // instance reporting at 01:00, 09:00 and 17:00 with varying counts.
    let today = Bucket::Day.start(charter_token::now());
    let mut old = Vec::new();
    for d in 1..=6i64 {
        for (k, id) in ids.iter().enumerate() {
            for (h, users) in [(1, 3 + d), (9, 10 - d + k as i64), (17, 2 * d)] {
                let at = today - d * DAY + h * 3600;
                old.push((
                    id.clone(),
                    at,
                    json!({"users": users, "admins": k as i64 + h}),
                ));
            }
        }
    }
    insert_reports(&app, backend, &lid, &old).await;
    // And one renewal now, reporting.
    let (s, body) = app
        .renew(&tokens[0], Some(json!({"usage": {"users": 42}})))
        .await;
    assert_eq!(s, 200, "{body}");
    let query = |bucket: &str| {
        format!(
            "/api/licenses/{lid}/usage?bucket={bucket}&from={}&to={}",
            rfc3339::format(today - 10 * DAY + 7),
            rfc3339::format(charter_token::now() + 60)
        )
    };
    let mut before = Vec::new();
    for bucket in ["hour", "day", "month"] {
        let (s, body) = app.get(&query(bucket)).await;
        assert_eq!(s, 200, "{body}");
        before.push(body);
    }
    let core = &app.state().core;
    let days = charter::licensing::usage::summarize(core, charter_token::now())
        .await
        .expect("summarize");
    assert!(days >= 6, "{days} days summarized");
    let (done, _) = app.state().store.usage_days_state().await.expect("state");
    assert!(done.is_some_and(|d| d >= today - DAY), "{done:?}");
    for (bucket, expected) in ["hour", "day", "month"].iter().zip(&before) {
        let (s, body) = app.get(&query(bucket)).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(&body, expected, "{bucket}");
    }
    assert_eq!(
        charter::licensing::usage::summarize(core, charter_token::now())
            .await
            .expect("again"),
        0
    );
    // The summaries are what the series reads: changing one shows.
    sql(
        &app,
        backend,
        &format!(
            "UPDATE usage_days SET counters = '{{\"users\": {{\"max\": 999, \"last\": 1}}}}' \
             WHERE lid = '{lid}' AND day = {} AND instance_id = '{}'",
            today - 3 * DAY,
            ids[0]
        ),
    )
    .await;
    let (_, body) = app.get(&query("day")).await;
    let b = body["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .find(|b| b["start"] == rfc3339::format(today - 3 * DAY))
        .cloned()
        .expect("day");
    assert_eq!(
        b["instances"][&ids[0]]["users"],
        json!({"max": 999, "last": 1})
    );
    app.stop().await;
}

both_stores!(
    usage_summaries_answer_as_the_reports,
    prune_keeps_what_instances_hold_and_recent_rows,
    old_usage_is_rolled_up_into_daily_maxima,
    usage_rollup_loses_no_renewal_report
);

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

// Usage roll-up (issue 15): reports older than `--usage-retention-days`
// become one daily report per instance and UTC day with each counter's
// maximum; the day series over them answers the same maxima.

/// The instance ids of license `lid`, in the order of `urls`.
async fn instance_ids(app: &TestApp, lid: &str, urls: &[String]) -> Vec<String> {
    let (s, list) = app
        .get(&format!("/api/licenses/{lid}/instances?per_page=100"))
        .await;
    assert_eq!(s, 200, "{list}");
    let items = list
        .as_array()
        .or_else(|| list["items"].as_array())
        .expect("instances");
    urls.iter()
        .map(|u| {
            items
                .iter()
                .find(|i| i["url"] == u.as_str())
                .and_then(|i| i["id"].as_str())
                .expect("instance")
                .to_string()
        })
        .collect()
}

/// Binds `n` instances to a new license; their lid, ids and tokens.
async fn instances(app: &TestApp, n: usize) -> (String, Vec<String>, Vec<String>) {
    let license = app.license(json!({ "max_instances": n })).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let urls: Vec<String> = (0..n)
        .map(|i| format!("https://u{i}.example.com/"))
        .collect();
    let mut tokens = Vec::new();
    for url in &urls {
        let (s, body) = app.issue(&lid, url).await;
        assert_eq!(s, 201, "{body}");
        tokens.push(body["token"].as_str().expect("token").to_string());
    }
    let ids = instance_ids(app, &lid, &urls).await;
    (lid, ids, tokens)
}

/// Inserts usage reports `(instance, at, counters)` through the schema.
async fn insert_reports(
    app: &TestApp,
    backend: Backend,
    lid: &str,
    reports: &[(String, i64, Value)],
) {
    for chunk in reports.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(i, at, c)| format!("('{lid}', '{i}', {at}, '{c}')"))
            .collect();
        sql(
            app,
            backend,
            &format!(
                "INSERT INTO usage_reports (lid, instance_id, at, counters) VALUES {};",
                values.join(", ")
            ),
        )
        .await;
    }
}

async fn reports(app: &TestApp, lid: &str, from: i64, to: i64) -> Vec<UsageReport> {
    app.state()
        .store
        .usage_reports(lid, from, to)
        .await
        .expect("reports")
}

/// Per day, instance and counter: the maximum, as the usage API answers.
async fn day_maxima(app: &TestApp, lid: &str, from: i64, to: i64) -> BTreeMap<String, i64> {
    let (s, usage) = app
        .get(&format!(
            "/api/licenses/{lid}/usage?bucket=day&from={}&to={}",
            rfc3339::format(from),
            rfc3339::format(to)
        ))
        .await;
    assert_eq!(s, 200, "{usage}");
    let mut out = BTreeMap::new();
    for b in usage["buckets"].as_array().expect("buckets") {
        let start = b["start"].as_str().expect("start");
        for (id, counters) in b["instances"].as_object().expect("instances") {
            for (name, stat) in counters.as_object().expect("counters") {
                out.insert(
                    format!("{start} {id} {name}"),
                    stat["max"].as_i64().expect("max"),
                );
            }
        }
        for (name, stat) in b["total"].as_object().expect("total") {
            out.insert(
                format!("{start} * {name}"),
                stat["max"].as_i64().expect("max"),
            );
        }
    }
    out
}

async fn old_usage_is_rolled_up_into_daily_maxima(backend: Backend) {
    let app = TestApp::start_with(backend, |a| a.usage_retention_days = Some(400)).await;
    let (lid, ids, tokens) = instances(&app, 2).await;
    // Four days, 500 days ago: each instance reports three times a day.
    let first = Bucket::Day.start(charter_token::now() - 500 * DAY);
    let mut old = Vec::new();
    let mut expected: BTreeMap<(String, i64), BTreeMap<String, i64>> = BTreeMap::new();
    for day in 0..4 {
        for (n, id) in ids.iter().enumerate() {
            for hour in [1, 5, 9] {
                let users = (day * 7 + hour * 3 + n as i64 * 5) % 17;
                let mut counters = json!({ "users": users });
                if hour != 5 {
                    counters["admins"] = json!(hour + day);
                }
                old.push((id.clone(), first + day * DAY + hour * 3600, counters));
                let max = expected.entry((id.clone(), first + day * DAY)).or_default();
                let users_max = max.entry("users".into()).or_insert(users);
                *users_max = (*users_max).max(users);
                if hour != 5 {
                    let admins_max = max.entry("admins".into()).or_insert(hour + day);
                    *admins_max = (*admins_max).max(hour + day);
                }
            }
        }
    }
    insert_reports(&app, backend, &lid, &old).await;
    // And reports of today, with renewals.
    for (n, token) in tokens.iter().enumerate() {
        let body = json!({"usage": {"users": 40 + n}});
        let (s, r) = app.renew(token, Some(body)).await;
        assert_eq!(s, 200, "{r}");
        let (s, r) = app
            .renew(
                r["token"].as_str().expect("token"),
                Some(json!({"usage": {"users": 50 + n}})),
            )
            .await;
        assert_eq!(s, 200, "{r}");
    }
    let (old_to, now) = (first + 5 * DAY, charter_token::now());
    let recent = reports(&app, &lid, now - 3600, now + 3600).await;
    assert_eq!(recent.len(), 4, "{recent:?}");
    let maxima = day_maxima(&app, &lid, first, old_to).await;
    assert_eq!(maxima.len(), 4 * (2 * 2 + 2), "{maxima:?}");

    // Batches of 7 reports: a day and the first report of the next, so
    // each batch takes one whole day.
    let pruned = retention::run(app.state(), 7, Duration::ZERO)
        .await
        .expect("prune")
        .expect("not locked");
    assert_eq!(pruned.usage, old.len() as u64, "{pruned:?}");

    let rolled = reports(&app, &lid, first, old_to).await;
    let got: BTreeMap<(String, i64), BTreeMap<String, i64>> = rolled
        .iter()
        .map(|r| {
            assert!(r.daily, "{r:?}");
            ((r.instance_id.clone(), r.at), r.counters.clone())
        })
        .collect();
    assert_eq!(rolled.len(), 8, "one per instance and day: {rolled:?}");
    assert_eq!(got, expected);
    assert_eq!(day_maxima(&app, &lid, first, old_to).await, maxima);
    assert_eq!(
        reports(&app, &lid, now - 3600, now + 3600).await,
        recent,
        "recent reports stay as they are"
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let line = format!("charter_pruned_total{{what=\"usage\"}} {}", old.len());
    assert!(
        metrics.lines().any(|l| l == line),
        "no `{line}` in:\n{metrics}"
    );

    // Rolled-up days are not rolled again.
    let again = retention::run(app.state(), 7, Duration::ZERO)
        .await
        .expect("prune")
        .expect("not locked");
    assert_eq!(again.usage, 0);
    assert_eq!(reports(&app, &lid, first, old_to).await, rolled);
    assert_eq!(reports(&app, &lid, now - 3600, now + 3600).await, recent);
}

/// While a prune rolls up a long history in small batches, instances renew
/// and report: every one of their reports is kept as sent.
async fn usage_rollup_loses_no_renewal_report(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (lid, ids, tokens) = instances(&app, 4).await;
    let first = Bucket::Day.start(charter_token::now() - 500 * DAY);
    let days = 60;
    let mut old = Vec::new();
    for day in 0..days {
        for id in &ids {
            for hour in 0..10 {
                let at = first + day * DAY + hour * 3600;
                old.push((id.clone(), at, json!({"users": hour * day})));
            }
        }
    }
    insert_reports(&app, backend, &lid, &old).await;

    // Renewals done when the prune ended: some, or they did not race.
    let done = std::sync::atomic::AtomicUsize::new(0);
    let prune = async {
        let p = retention::run(app.state(), 10, Duration::from_millis(2))
            .await
            .expect("prune")
            .expect("not locked");
        (p, done.load(std::sync::atomic::Ordering::SeqCst))
    };
    let renewals = async {
        let mut sent = BTreeSet::new();
        let mut tokens = tokens.clone();
        for round in 0..12 {
            for (n, token) in tokens.iter_mut().enumerate() {
                let users = 1000 + round * 10 + n;
                let (s, r) = app
                    .renew(token, Some(json!({"usage": {"users": users}})))
                    .await;
                assert_eq!(s, 200, "{r}");
                *token = r["token"].as_str().expect("token").to_string();
                sent.insert((ids[n].clone(), users as i64));
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        sent
    };
    let ((pruned, during), sent) = tokio::join!(prune, renewals);
    assert!(during > 0, "no renewal during the prune");
    assert_eq!(pruned.usage, old.len() as u64);
    let now = charter_token::now();
    let kept: BTreeSet<(String, i64)> = reports(&app, &lid, now - 3600, now + 3600)
        .await
        .into_iter()
        .map(|r| {
            assert!(!r.daily);
            (r.instance_id, r.counters["users"])
        })
        .collect();
    assert_eq!(kept, sent, "every report sent meanwhile is kept");
    let rolled = reports(&app, &lid, first, first + days * DAY).await;
    assert_eq!(rolled.len(), ids.len() * days as usize);
    for r in rolled {
        let day = (r.at - first) / DAY;
        assert!(r.daily && r.at == first + day * DAY, "{r:?}");
        assert_eq!(r.counters["users"], 9 * day, "{r:?}");
    }
}
