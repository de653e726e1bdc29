//! Issue 15 (usage history): every usage report that comes with a renewal
//! is kept, and `GET /api/licenses/{lid}/usage` answers per bucket each
//! counter's maximum and last value, per instance and summed over them, in
//! JSON or CSV.

mod common;

use common::{Auth, Backend, TestApp};
use serde_json::{Value, json};

async fn renew(app: &TestApp, token: &str, usage: Option<Value>) -> String {
    let (s, body) = app.renew(token, usage.map(|u| json!({ "usage": u }))).await;
    assert_eq!(s, 200, "{body}");
    body["token"].as_str().expect("token").to_string()
}

async fn usage_history_sums_instances_per_bucket(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({"max_instances": 2})).await;
    let lid = license["lid"].as_str().expect("lid");
    let mut tokens = Vec::new();
    for url in ["https://a.example.com/", "https://b.example.com/"] {
        let (s, body) = app.issue(lid, url).await;
        assert_eq!(s, 201, "{body}");
        tokens.push(body["token"].as_str().expect("token").to_string());
    }
    // a: 8 users, then 6 users and an admin; b: 3 users; b again without a report.
    let a = renew(&app, &tokens[0], Some(json!({"users": 8}))).await;
    renew(&app, &a, Some(json!({"users": 6, "admins": 1}))).await;
    let b = renew(&app, &tokens[1], Some(json!({"users": 3}))).await;
    renew(&app, &b, None).await;

    let (_, instances) = app.get(&format!("/api/licenses/{lid}/instances")).await;
    let id_of = |url: &str| {
        instances
            .as_array()
            .expect("instances")
            .iter()
            .find(|i| i["url"] == url)
            .and_then(|i| i["id"].as_str())
            .expect("instance")
            .to_string()
    };
    let (ia, ib) = (
        id_of("https://a.example.com/"),
        id_of("https://b.example.com/"),
    );

    for bucket in ["day", "month"] {
        let (s, usage) = app
            .get(&format!("/api/licenses/{lid}/usage?bucket={bucket}"))
            .await;
        assert_eq!(s, 200, "{usage}");
        assert_eq!(usage["bucket"], bucket);
        let buckets = usage["buckets"].as_array().expect("buckets");
        assert_eq!(buckets.len(), 1, "{usage}");
        let b0 = &buckets[0];
        assert_eq!(b0["instances"][&ia]["users"], json!({"max": 8, "last": 6}));
        assert_eq!(b0["instances"][&ia]["admins"], json!({"max": 1, "last": 1}));
        assert_eq!(b0["instances"][&ib]["users"], json!({"max": 3, "last": 3}));
        assert_eq!(b0["total"]["users"], json!({"max": 11, "last": 9}));
        assert_eq!(b0["total"]["admins"], json!({"max": 1, "last": 1}));
    }
    // Hours: the same reports, in one or two buckets (the test may cross an hour).
    let (s, hours) = app
        .get(&format!("/api/licenses/{lid}/usage?bucket=hour"))
        .await;
    assert_eq!(s, 200, "{hours}");
    let n = hours["buckets"].as_array().expect("buckets").len();
    assert!((1..=2).contains(&n), "{hours}");

    // A range before the reports holds nothing.
    let (s, empty) = app
        .get(&format!(
            "/api/licenses/{lid}/usage?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z"
        ))
        .await;
    assert_eq!(s, 200, "{empty}");
    assert_eq!(empty["buckets"], json!([]));

    // CSV for billing, to a Viewer too.
    let (_, viewer) = app.service_account("billing", "Viewer").await;
    let res = app
        .request(
            &Auth::Bearer(viewer.clone()),
            reqwest::Method::GET,
            &format!("/api/licenses/{lid}/usage"),
        )
        .header("accept", "text/csv")
        .send()
        .await
        .expect("csv");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/csv")),
        "{:?}",
        res.headers()
    );
    let text = res.text().await.expect("text");
    assert!(
        text.starts_with("bucket_start,bucket_end,instance,counter,max,last\n"),
        "{text}"
    );
    assert!(text.contains(",*,users,11,9\n"), "{text}");
    assert!(text.contains(&format!(",{ia},users,8,6\n")), "{text}");

    // Bad requests: clear 400s naming the field; unknown licenses 404.
    for (query, field) in [
        ("bucket=week", "bucket"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("from=yesterday", "from"),
        ("bucket=hour&from=2000-01-01T00:00:00Z", "bucket"),
    ] {
        let (s, body) = app.get(&format!("/api/licenses/{lid}/usage?{query}")).await;
        assert_eq!(s, 400, "{query}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(field)),
            "{query}: {body}"
        );
    }
    let (s, body) = app
        .get("/api/licenses/01a0d6a4-0000-7000-8000-000000000000/usage")
        .await;
    assert_eq!(s, 404, "{body}");
    let (s, _) = app
        .call(
            &Auth::None,
            reqwest::Method::GET,
            &format!("/api/licenses/{lid}/usage"),
            None,
        )
        .await;
    assert_eq!(s, 401);
    app.stop().await;
}

both_stores!(usage_history_sums_instances_per_bucket);
