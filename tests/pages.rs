//! Lists at constant cost (issue 17): every list pages by cursor (`after`,
//! the answer's `next`) on both stores, `page` still works, bad cursors are
//! a 400, and the queries behind the lists are served by their indexes
//! (EXPLAIN on SQLite and on PostgreSQL over a filled table).

mod common;

use charter::db::lists::{self, Arg, Dialect};
use charter::domain::{AuditFilter, Cursor, LicenseFilter, Page};
use common::{Backend, TestApp};
use serde_json::{Value, json};

both_stores!(
    every_list_walks_by_cursor_once_in_order,
    bad_cursors_are_refused
);

/// Follows `next` from `path` (which has `per_page`) to the end; returns
/// the ids (`key` of each item) in the order served and the number of pages.
async fn walk(app: &TestApp, path: &str, key: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut url = path.to_string();
    loop {
        let (s, page) = app.get(&url).await;
        assert_eq!(s, 200, "{url}: {page}");
        pages += 1;
        for item in page["items"].as_array().expect("items") {
            ids.push(
                item[key]
                    .as_str()
                    .map_or_else(|| item[key].to_string(), str::to_string),
            );
        }
        match page["next"].as_str() {
            Some(next) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                url = format!("{path}{sep}after={next}");
            }
            None => break,
        }
        assert!(pages < 100, "no end to {path}");
    }
    (ids, pages)
}

/// Every item of `path` in one page.
async fn all(app: &TestApp, path: &str, key: &str) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (s, page) = app.get(&format!("{path}{sep}per_page=1000")).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["next"], Value::Null, "one page holds them all");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            i[key]
                .as_str()
                .map_or_else(|| i[key].to_string(), str::to_string)
        })
        .collect()
}

async fn every_list_walks_by_cursor_once_in_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut lids = Vec::new();
    for _ in 0..5 {
        let l = app.license(json!({"max_instances": 20})).await;
        lids.push(l["lid"].as_str().expect("lid").to_string());
    }
    let lid = &lids[0];
    let mut tokens = Vec::new();
    for n in 0..7 {
        let (s, t) = app.issue(lid, &format!("https://i{n}.example")).await;
        assert_eq!(s, 201, "{t}");
        tokens.push(t["token"].as_str().expect("token").to_string());
    }
    for t in &tokens[..4] {
        let (s, r) = app.renew(t, None).await;
        assert_eq!(s, 200, "{r}");
    }
    for n in 0..5 {
        app.service_account(&format!("sa-{n}"), "Viewer").await;
    }

    // Paged lists: the cursor walk gives every item once, in the order of
    // one big page, and the last page says there is no next.
    for (path, key, expected_len) in [
        ("/api/audit?per_page=4".to_string(), "id", None),
        (
            "/api/audit?per_page=2&action=token.issue".to_string(),
            "id",
            Some(7),
        ),
        ("/api/licenses?per_page=2".to_string(), "lid", Some(5)),
        ("/api/accounts?per_page=2".to_string(), "id", Some(5)),
        (
            format!("/api/licenses/{lid}/tokens?per_page=3"),
            "jti",
            Some(11),
        ),
    ] {
        let (walked, pages) = walk(&app, &path, key).await;
        let base = path.split("per_page").next().expect("path");
        let filter = path.split_once("&").map_or("", |(_, f)| f);
        let one = all(&app, &format!("{base}{filter}"), key).await;
        assert_eq!(walked, one, "{path}");
        if let Some(n) = expected_len {
            assert_eq!(walked.len(), n, "{path}: {walked:?}");
        }
        let per_page: usize = path
            .split("per_page=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .and_then(|s| s.parse().ok())
            .expect("per_page");
        assert_eq!(pages, walked.len().div_ceil(per_page).max(1), "{path}");
        // `page` still gives the same items.
        let sep = if path.contains('?') { '&' } else { '?' };
        let (s, second) = app.get(&format!("{path}{sep}page=2")).await;
        assert_eq!(s, 200);
        let second: Vec<String> = second["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                i[key]
                    .as_str()
                    .map_or_else(|| i[key].to_string(), str::to_string)
            })
            .collect();
        let expected: Vec<String> = one.iter().skip(per_page).take(per_page).cloned().collect();
        assert_eq!(second, expected, "page=2 of {path}");
    }

    // The count is exact while small.
    let (_, page) = app.get("/api/audit?action=token.renew&per_page=1").await;
    assert_eq!(
        (page["total"].as_i64(), page["total_exact"].as_bool()),
        (Some(4), Some(true))
    );

    // Instances: a plain array, the next page in the Link header.
    let mut seen = Vec::new();
    let mut url = app.url(&format!("/api/licenses/{lid}/instances?per_page=3"));
    loop {
        let res = app
            .http
            .get(&url)
            .basic_auth(common::ADMIN.0, Some(common::ADMIN.1))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
        let link = res
            .headers()
            .get("link")
            .map(|l| l.to_str().expect("ascii").to_string());
        let items: Vec<Value> = res.json().await.expect("array");
        seen.extend(
            items
                .iter()
                .map(|i| i["url"].as_str().expect("url").to_string()),
        );
        let Some(link) = link else { break };
        let target = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(t, _)| t.to_string())
            .unwrap_or_else(|| panic!("a next link: {link}"));
        url = app.url(&target);
    }
    let expected: Vec<String> = (0..7).map(|n| format!("https://i{n}.example/")).collect();
    assert_eq!(seen, expected, "every instance once, oldest first");
    let (s, whole) = app.get(&format!("/api/licenses/{lid}/instances")).await;
    assert_eq!(s, 200);
    assert_eq!(
        whole.as_array().map(Vec::len),
        Some(7),
        "default: up to 1000"
    );

    // Service accounts: Grafana's shape, with a cursor beside it.
    let mut names = Vec::new();
    let mut url = "/api/serviceaccounts/search?perpage=2&query=sa-".to_string();
    loop {
        let (s, page) = app.get(&url).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["totalCount"], 5, "{page}");
        assert_eq!(page["perPage"], 2);
        for sa in page["serviceAccounts"].as_array().expect("accounts") {
            names.push(sa["name"].as_str().expect("name").to_string());
        }
        match page["next"].as_str() {
            Some(next) => {
                url = format!("/api/serviceaccounts/search?perpage=2&query=sa-&after={next}")
            }
            None => break,
        }
    }
    assert_eq!(names, ["sa-0", "sa-1", "sa-2", "sa-3", "sa-4"]);
}

async fn bad_cursors_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let l = app.license(json!({})).await;
    let lid = l["lid"].as_str().expect("lid");
    let good = Cursor::new(1, "x").encode();
    for path in [
        "/api/audit?after=%21%21".to_string(),
        "/api/licenses?after=bm9jb2xvbg".to_string(),
        format!("/api/licenses/{lid}/tokens?after=zzz"),
        format!("/api/licenses/{lid}/instances?after=..."),
        "/api/serviceaccounts/search?after=*".to_string(),
        format!("/api/audit?page=2&after={good}"),
        format!("/api/audit?after={}", "A".repeat(2000)),
    ] {
        let (s, body) = app.get(&path).await;
        assert_eq!(s, 400, "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("after")),
            "{path}: {body}"
        );
    }
    // A well-formed cursor past the end is simply an empty page.
    let far = Cursor::new(0, "0").encode();
    let (s, page) = app.get(&format!("/api/audit?after={far}")).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["next"], Value::Null);
}

fn page(after: Option<Cursor>) -> Page {
    Page {
        page: 1,
        per_page: 100,
        after,
    }
}

/// The audit queries an operator runs: by each documented filter, first
/// page and after a cursor.
fn audit_queries() -> Vec<(&'static str, lists::ListQuery)> {
    let by = |f: AuditFilter| f;
    let cur = Some(Cursor::new(1_700_000_000, "500"));
    let mut out = Vec::new();
    for (name, f) in [
        ("none", by(AuditFilter::default())),
        (
            "actor",
            by(AuditFilter {
                actor: Some("actor-7".into()),
                ..Default::default()
            }),
        ),
        (
            "action",
            by(AuditFilter {
                action: Some("license.revoke".into()),
                ..Default::default()
            }),
        ),
        (
            "target_id",
            by(AuditFilter {
                target_id: Some("target-42".into()),
                ..Default::default()
            }),
        ),
        (
            "target",
            by(AuditFilter {
                target_type: Some("token".into()),
                target_id: Some("target-42".into()),
                ..Default::default()
            }),
        ),
        (
            "time",
            by(AuditFilter {
                since: Some(1_600_000_000),
                until: Some(1_700_000_000),
                ..Default::default()
            }),
        ),
        (
            "actor+time",
            by(AuditFilter {
                actor: Some("actor-7".into()),
                since: Some(1_600_000_000),
                ..Default::default()
            }),
        ),
    ] {
        out.push((name, lists::audit(&f, &page(None), "id, at, detail")));
        out.push((name, lists::audit(&f, &page(cur.clone()), "id, at, detail")));
    }
    out
}

fn sqlite_args(args: &[Arg]) -> Vec<rusqlite::types::Value> {
    args.iter()
        .map(|a| match a {
            Arg::Int(n) => rusqlite::types::Value::Integer(*n),
            Arg::Text(s) => rusqlite::types::Value::Text(s.clone()),
        })
        .collect()
}

fn sqlite_plan(c: &rusqlite::Connection, q: &lists::Query) -> String {
    let mut st = c
        .prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql))
        .expect("explain");
    let rows = st
        .query_map(rusqlite::params_from_iter(sqlite_args(&q.args)), |r| {
            r.get::<_, String>(3)
        })
        .expect("plan");
    rows.map(|r| r.expect("row"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// On SQLite (no ANALYZE, as it runs) every audit filter, the license
/// lists and the token history are answered from an index in its order:
/// no table scan, no sort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lists_use_their_indexes() {
    let app = TestApp::start(Backend::Sqlite).await;
    let path = app
        .data
        .database_url
        .strip_prefix("sqlite://")
        .expect("sqlite")
        .to_string();
    let c = rusqlite::Connection::open(&path).expect("open");
    let mut queries = audit_queries();
    let lf = |account: bool| LicenseFilter {
        account_id: account.then(|| "A1".to_string()),
        ..Default::default()
    };
    let cur = Some(Cursor::new(5, "x"));
    for (name, f) in [("licenses", lf(false)), ("licenses by account", lf(true))] {
        for after in [None, cur.clone()] {
            queries.push((
                name,
                lists::licenses(&f, &page(after), "lid", Dialect::Sqlite),
            ));
        }
    }
    for after in [None, cur.clone()] {
        queries.push(("tokens", lists::tokens("L1", &page(after.clone()), "jti")));
        queries.push((
            "instances",
            lists::instances("L1", &page(after.clone()), "id"),
        ));
        queries.push(("accounts", lists::accounts(&page(after), "id")));
    }
    for (name, q) in &queries {
        // A count without a filter reads at most 1001 rows whichever way.
        let count = q.count.sql.contains(" WHERE ").then_some(&q.count);
        for query in std::iter::once(&q.rows).chain(count) {
            let plan = sqlite_plan(&c, query);
            assert!(plan.contains("USING"), "{name}: {plan}\n{}", query.sql);
            assert!(
                !plan.contains("TEMP B-TREE"),
                "{name} sorts: {plan}\n{}",
                query.sql
            );
            for table in [
                "audit_events",
                "licenses",
                "tokens",
                "instances",
                "accounts",
            ] {
                assert!(
                    !plan.contains(&format!("SCAN {table}"))
                        || plan.contains(&format!("SCAN {table} USING")),
                    "{name} scans {table}: {plan}\n{}",
                    query.sql
                );
            }
        }
    }
    // The filters that have their own index use it.
    for (name, index) in [
        ("actor", "audit_events_actor"),
        ("action", "audit_events_action"),
        ("target_id", "audit_events_target"),
        ("target", "audit_events_target"),
        ("time", "audit_events_at"),
        ("tokens", "tokens_license"),
        ("licenses by account", "licenses_account"),
        ("instances", "instances_license"),
    ] {
        for (_, q) in queries.iter().filter(|(n, _)| *n == name) {
            let plan = sqlite_plan(&c, &q.rows);
            assert!(plan.contains(index), "{name} not by {index}: {plan}");
        }
    }
}

/// On PostgreSQL, with 200,000 audit events and statistics, every audit
/// filter is an index scan in the list's order (no sequential scan, no
/// sort), first page and after a cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lists_use_their_indexes() {
    let app = TestApp::start(Backend::Postgres).await;
    let (client, conn) = tokio_postgres::connect(&app.data.database_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(
            "INSERT INTO audit_events (at, actor_kind, actor, action, target_type, target_id, ip, detail) \
             SELECT 1600000000 + g, 'admin', 'actor-' || (g % 1000), \
                    (ARRAY['token.renew','token.issue','license.update','license.revoke'])[1 + g % 4], \
                    (ARRAY['token','license'])[1 + g % 2], 'target-' || (g % 5000), '127.0.0.1', NULL \
             FROM generate_series(1, 200000) g; \
             ANALYZE audit_events;",
        )
        .await
        .expect("fill");
    for (name, q) in audit_queries() {
        let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = q
            .rows
            .args
            .iter()
            .map(|a| match a {
                Arg::Int(n) => n as &(dyn tokio_postgres::types::ToSql + Sync),
                Arg::Text(s) => s as &(dyn tokio_postgres::types::ToSql + Sync),
            })
            .collect();
        let sql = format!("EXPLAIN {}", charter_pg(&q.rows.sql));
        let plan: Vec<String> = client
            .query(&sql, &args)
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index"), "{name}: {plan}");
        assert!(!plan.contains("Seq Scan"), "{name}: {plan}");
        // A sort only of the rows one value of a filter's own index finds
        // (the planner's choice when they are few), never of the table.
        assert!(
            !plan.contains("Sort")
                || ["actor", "action", "target"]
                    .iter()
                    .any(|i| plan.contains(&format!("Bitmap Index Scan on audit_events_{i} "))),
            "{name}: {plan}"
        );
    }
}

/// `?N` → `$N`, as the PostgreSQL store converts them.
fn charter_pg(sql: &str) -> String {
    let mut out = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}
