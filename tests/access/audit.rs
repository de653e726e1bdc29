//! The audit trail (who, what, when, from where; filters and pages) and the
//! limit on failed authentication.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, Auth, Backend, TestApp};

fn message(v: &Value) -> &str {
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {v}"))
}

/// Every change leaves an audit event with who, what, when and from where.
pub async fn audit_trail(backend: Backend) {
    let app = TestApp::start(backend).await;
    let started = charter_token::now();
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (s, issued) = app.issue(&lid, "https://audit.example").await;
    assert_eq!(s, 201);
    let (s, renewed) = app
        .renew(issued["token"].as_str().expect("token"), None)
        .await;
    assert_eq!(s, 200);
    let (sid, key) = app.service_account("auditor", "Editor").await;
    let editor = Auth::Bearer(key.clone());
    let (s, _) = app
        .call(
            &editor,
            Method::PATCH,
            &format!("/api/licenses/{lid}"),
            Some(json!({"included_users": 3})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .post(&format!("/api/licenses/{lid}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200);
    let (_, tokens) = app.get(&format!("/api/serviceaccounts/{sid}/tokens")).await;
    let (s, _) = app
        .delete(&format!("/api/auth/keys/{}", tokens[0]["id"]))
        .await;
    assert_eq!(s, 200);

    let (s, page) = app.get("/api/audit?per_page=1000").await;
    assert_eq!(s, 200, "{page}");
    let events = page["items"].as_array().expect("items").clone();
    let find = |action: &str| {
        events
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {events:?}"))
            .clone()
    };
    for action in [
        "product.create",
        "account.create",
        "license.create",
        "token.issue",
        "token.renew",
        "serviceaccount.create",
        "serviceaccount.token.create",
        "license.update",
        "license.revoke",
        "apikey.delete",
    ] {
        let e = find(action);
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
        let at = time::OffsetDateTime::parse(
            e["at"].as_str().expect("at"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("time")
        .unix_timestamp();
        assert!(at >= started && at <= charter_token::now(), "{e}");
    }
    let e = find("license.create");
    assert_eq!(
        (
            &e["actor"],
            &e["actor_kind"],
            &e["target_type"],
            &e["target_id"]
        ),
        (
            &json!("admin"),
            &json!("admin"),
            &json!("license"),
            &json!(lid)
        )
    );
    let e = find("token.issue");
    assert_eq!(
        (&e["target_type"], &e["target_id"]),
        (&json!("token"), &issued["claims"]["jti"])
    );
    assert_eq!(e["detail"]["lid"], lid.as_str());
    let e = find("token.renew");
    assert_eq!(
        (&e["actor_kind"], &e["actor"]),
        (&json!("instance"), &json!("https://audit.example/"))
    );
    assert_eq!(e["target_id"], renewed["claims"]["jti"]);
    let e = find("license.update");
    assert_eq!(
        (&e["actor"], &e["actor_kind"]),
        (&json!("sa-auditor"), &json!("service_account"))
    );
    assert!(
        !page.to_string().contains(&key[7..]),
        "no secret in the audit trail"
    );

    // Filters and pages.
    let (_, by) = app.get("/api/audit?actor=sa-auditor").await;
    assert_eq!(by["total"], 1, "{by}");
    let (_, by) = app
        .get(&format!("/api/audit?target_type=license&target_id={lid}"))
        .await;
    assert_eq!(by["total"], 3, "create, update, revoke: {by}");
    let (_, by) = app.get("/api/audit?action=token.renew").await;
    assert_eq!(by["total"], 1);
    let (_, by) = app.get("/api/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(by["total"], 0);
    let (_, by) = app.get("/api/audit?until=2000-01-01T00:00:00Z").await;
    assert_eq!(by["total"], 0);
    let (_, one) = app.get("/api/audit?per_page=1&page=2").await;
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["total"], page["total"]);
    assert_eq!(one["items"][0], events[1], "newest first");
    let (s, body) = app.get("/api/audit?since=yesterday").await;
    assert_eq!((s, message(&body).contains("since")), (400, true));
    let (s, body) = app.call(&editor, Method::GET, "/api/audit", None).await;
    assert_eq!(s, 401, "its token was deleted: {body}");
    app.stop().await;
}

/// After ten failures an account gets 429 with Retry-After from that
/// address, even with good credentials, while other accounts from the same
/// address still work; the answers never say which part was wrong.
pub async fn failed_auth_rate_limit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let wrong_user = Auth::Basic("nobody".into(), common::ADMIN.1.into());
    let wrong_password = Auth::Basic(common::ADMIN.0.into(), "not-the-password".into());
    let a = app
        .call(&wrong_user, Method::GET, "/api/products", None)
        .await;
    let b = app
        .call(&wrong_password, Method::GET, "/api/products", None)
        .await;
    assert_eq!(
        a, b,
        "the same answer for a wrong user and a wrong password"
    );
    assert_eq!(a.0, 401);
    // Missing credentials are not failures.
    for _ in 0..20 {
        let (s, _) = app
            .call(&Auth::None, Method::GET, "/api/products", None)
            .await;
        assert_eq!(s, 401);
    }
    for i in 0..10 {
        let bad = Auth::Bearer(format!("chr_sa_guess{i}"));
        let (s, _) = app.call(&bad, Method::GET, "/api/products", None).await;
        assert_eq!(s, 401, "failure {i}");
    }
    // Bearer guesses locked bearer tokens from this address, not the admin.
    let (s, _) = app
        .call(
            &Auth::Bearer("chr_sa_guess-more".into()),
            Method::GET,
            "/api/products",
            None,
        )
        .await;
    assert_eq!(s, 429, "bearer tokens from this address are locked");
    let (s, _) = app
        .call(&Auth::Admin, Method::GET, "/api/products", None)
        .await;
    assert_eq!(s, 200, "another account from the same address still works");
    // Nine more wrong admin passwords (one above): the admin is locked,
    // even with the right password.
    for i in 0..9 {
        let (s, _) = app
            .call(&wrong_password, Method::GET, "/api/products", None)
            .await;
        assert_eq!(s, 401, "admin failure {i}");
    }
    let res = app
        .request(&Auth::Admin, Method::GET, "/api/products")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=300).contains(&wait), "{wait}");
    let body: Value = res.json().await.expect("json");
    assert!(message(&body).contains("too many"), "{body}");
    // The instance renew endpoint does not use portal credentials.
    let (s, _) = app.renew("not-a-token", None).await;
    assert_eq!(s, 401);
    app.stop().await;
}
