//! Security hardening after the outside review, end to end on both stores:
//! client request ids are screened before they reach the logs; every answer
//! says `nosniff` and the API's are not cached; service-account tokens
//! record when they were last used; a token from the future does not renew;
//! and (SQLite, unix) the database is created readable by its owner only.

mod common;

use charter::domain::rfc3339;
use charter_token::{Claims, Keyring, now};
use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

both_stores!(
    request_ids_are_screened,
    security_headers,
    last_used_at_is_recorded_once_a_minute,
    renew_refuses_a_token_not_yet_valid,
);

/// The `x-request-id` of the answer to a GET of `/api/health` that sends `ids`.
async fn answered_id(app: &TestApp, ids: &[&str]) -> String {
    let mut req = app.http.get(app.url("/api/health"));
    for id in ids {
        req = req.header("x-request-id", *id);
    }
    let res = req.send().await.expect("health");
    assert_eq!(res.status(), 200);
    let mut answered = res.headers().get_all("x-request-id").iter();
    let id = answered
        .next()
        .expect("an x-request-id")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(answered.next().is_none(), "one x-request-id");
    id
}

/// A fresh id: a UUID that is not what the client sent.
fn assert_fresh(id: &str, sent: &str) {
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a UUID: {id:.100}");
    assert_ne!(id, sent);
}

/// A client's request id is kept when it is 1-64 characters of
/// `[A-Za-z0-9._-]`, and replaced by a fresh UUID otherwise (it goes into
/// every log line of the request).
async fn request_ids_are_screened(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fresh = answered_id(&app, &[]).await;
    assert_fresh(&fresh, "");

    let longest = "a".repeat(64);
    for good in ["abc-123", "A.b_C-9", "0", longest.as_str()] {
        assert_eq!(answered_id(&app, &[good]).await, good);
    }

    let too_long = "a".repeat(65);
    let huge = "x}".repeat(32 * 1024);
    for bad in [
        too_long.as_str(),
        huge.as_str(),
        "}",
        r#"abc"}{"level":"ERROR"#,
        "two words",
        "tab\there",
        "semi;colon",
        "slash/path",
        "",
    ] {
        let id = answered_id(&app, &[bad]).await;
        assert_fresh(&id, bad);
    }
    // Sent twice: neither is kept.
    assert_fresh(&answered_id(&app, &["one", "two"]).await, "one");

    // Screened on answers that are errors too.
    let res = app
        .http
        .get(app.url("/api/licenses"))
        .header("x-request-id", "{bad}")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 401);
    let id = res.headers()["x-request-id"].to_str().expect("ascii");
    assert_fresh(id, "{bad}");
    app.stop().await;
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().expect("ascii"))
}

/// `(status, nosniff, cache-control)` of an answer.
async fn headers_of(req: reqwest::RequestBuilder) -> (u16, Option<String>, Option<String>) {
    let res = req.send().await.expect("request");
    let nosniff = header(&res, "x-content-type-options").map(str::to_string);
    let cache = header(&res, "cache-control").map(str::to_string);
    (res.status().as_u16(), nosniff, cache)
}

/// Every answer carries `X-Content-Type-Options: nosniff`; every `/api/`
/// answer `Cache-Control: no-store` (tokens, keys and customer data),
/// except the public, signed revocation list; the JWKS keeps its caching.
async fn security_headers(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (sa, key) = app.service_account("hardening", "Admin").await;
    let issued = app.issue(&lid, "https://a.example/").await.1;
    let token = issued["token"].as_str().expect("token").to_string();
    let nosniff = Some("nosniff".to_string());
    let no_store = Some("no-store".to_string());

    let api: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("health", app.http.get(app.url("/api/health"))),
        ("openapi", app.http.get(app.url("/api/openapi.json"))),
        (
            "issue a token",
            app.admin(Method::POST, &format!("/api/licenses/{lid}/tokens"))
                .json(&json!({"instance": "https://b.example/"})),
        ),
        (
            "token history",
            app.admin(Method::GET, &format!("/api/licenses/{lid}/tokens")),
        ),
        (
            "renew",
            app.http
                .post(app.url("/api/tokens/renew"))
                .bearer_auth(&token),
        ),
        (
            "a service-account token",
            app.admin(Method::POST, &format!("/api/serviceaccounts/{sa}/tokens"))
                .json(&json!({"name": "second"})),
        ),
        (
            "as a service account",
            app.http.get(app.url("/api/licenses")).bearer_auth(&key),
        ),
        ("401", app.http.get(app.url("/api/licenses"))),
        ("404", app.admin(Method::GET, "/api/licenses/nope")),
        ("no such endpoint", app.http.get(app.url("/api/nope"))),
        (
            "405",
            app.http
                .delete(app.url("/api/health"))
                .basic_auth("a", Some("b")),
        ),
        (
            "400",
            app.admin(Method::POST, "/api/licenses")
                .header("content-type", "application/json")
                .body("{not json"),
        ),
    ];
    for (what, req) in api {
        let (status, sniff, cache) = headers_of(req).await;
        assert!(status < 500, "{what}: {status}");
        assert_eq!(sniff, nosniff, "{what} ({status})");
        assert_eq!(cache, no_store, "{what} ({status})");
    }

    let (status, sniff, cache) = headers_of(app.http.get(app.url("/api/revocations"))).await;
    assert_eq!(status, 200);
    assert_eq!(sniff, nosniff);
    assert_eq!(cache.as_deref(), Some("public, max-age=60"));

    let (status, sniff, cache) = headers_of(app.http.get(app.url("/.well-known/jwks.json"))).await;
    assert_eq!(status, 200);
    assert_eq!(sniff, nosniff);
    assert_eq!(cache.as_deref(), Some("public, max-age=300"));

    for path in ["/metrics", "/nope"] {
        let (_, sniff, cache) = headers_of(app.http.get(app.url(path))).await;
        assert_eq!(sniff, nosniff, "{path}");
        assert_ne!(cache, no_store, "{path} is not the API");
    }
    app.stop().await;
}

/// `lastUsedAt` of the service account's tokens, by token name.
async fn last_used(app: &TestApp, sa: i64) -> Vec<(String, Value)> {
    let (s, tokens) = app.get(&format!("/api/serviceaccounts/{sa}/tokens")).await;
    assert_eq!(s, 200, "{tokens}");
    tokens
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| {
            let name = t["name"].as_str().expect("name").to_string();
            (name, t["lastUsedAt"].clone())
        })
        .collect()
}

/// The store records a token's last use at most once a minute; the token
/// list shows it as `lastUsedAt` (RFC 3339), null until then.
async fn last_used_at_is_recorded_once_a_minute(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (sa, _key) = app.service_account("ci", "Editor").await;
    let (s, second) = app
        .post(
            &format!("/api/serviceaccounts/{sa}/tokens"),
            json!({"name": "other"}),
        )
        .await;
    assert_eq!(s, 200, "{second}");
    let tokens = app.state().store.list_sa_tokens(sa).await.expect("tokens");
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t.last_used_at.is_none()));
    let first = tokens[0].id;
    let null = |name: &str| (name.to_string(), Value::Null);
    assert_eq!(last_used(&app, sa).await, [null("ci-token"), null("other")]);

    let store = &app.state().store;
    let t = now();
    let at = |secs: i64| ("ci-token".to_string(), json!(rfc3339::format(secs)));
    store.touch_sa_token(first, t).await.expect("touch");
    assert_eq!(last_used(&app, sa).await, [at(t), null("other")]);
    // Within the minute: not written again.
    store.touch_sa_token(first, t + 30).await.expect("touch");
    store.touch_sa_token(first, t + 60).await.expect("touch");
    assert_eq!(last_used(&app, sa).await, [at(t), null("other")]);
    // After it: written.
    store.touch_sa_token(first, t + 61).await.expect("touch");
    assert_eq!(last_used(&app, sa).await, [at(t + 61), null("other")]);
    // The store's reads of tokens carry it.
    let found = store
        .list_sa_tokens(sa)
        .await
        .expect("tokens")
        .into_iter()
        .find(|k| k.id == first)
        .expect("the token");
    assert_eq!(found.last_used_at, Some(t + 61));
    // A token that is gone is not an error.
    store
        .touch_sa_token(999_999, t)
        .await
        .expect("no such token");
    app.stop().await;
}

/// A request with a service-account token records its use.
async fn authentication_records_last_use(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (sa, key) = app.service_account("ci", "Editor").await;
    assert_eq!(last_used(&app, sa).await[0].1, Value::Null);
    let before = now();
    let (s, _) = common::send(app.http.get(app.url("/api/licenses")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    let used = last_used(&app, sa).await[0].1.clone();
    let at = rfc3339::parse(
        used.as_str()
            .unwrap_or_else(|| panic!("lastUsedAt: {used}")),
    )
    .expect("RFC 3339");
    assert!((before..=now()).contains(&at), "{at} not in {before}..now");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_records_last_use_sqlite() {
    authentication_records_last_use(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_records_last_use_postgres() {
    authentication_records_last_use(Backend::Postgres).await;
}

/// Signs claims with the server's own keys.
fn sign_as_server(app: &TestApp, claims: &Claims) -> String {
    Keyring::load(&app.data.keys_dir())
        .expect("keys")
        .sign(claims)
        .expect("sign")
}

/// A presented token whose `nbf` is more than a minute ahead is refused
/// (401, reason `not_yet_valid`); within the minute (clock skew) it renews.
async fn renew_refuses_a_token_not_yet_valid(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (_, issued) = app.issue(lid, "https://a.example/").await;
    let c: Claims = serde_json::from_value(issued["claims"].clone()).expect("claims");

    let mut future = c.clone();
    future.jti = "from-the-future".into();
    future.nbf = now() + 3600;
    let (s, body) = app.renew(&sign_as_server(&app, &future), None).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body, json!({"message": "license token not yet valid"}));

    let mut skewed = c.clone();
    skewed.jti = "a-little-ahead".into();
    skewed.nbf = now() + 30;
    let (s, body) = app.renew(&sign_as_server(&app, &skewed), None).await;
    assert_eq!(s, 200, "{body}");

    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let line = r#"charter_renewals_refused_total{reason="not_yet_valid"} 1"#;
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
    app.stop().await;
}

/// The SQLite database holds renewal-capable tokens: the directories
/// Charter creates for it are 0700, the database and its WAL and shared
/// memory files 0600; a directory that exists keeps its mode.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let db = root.path().join("data").join("charter").join("charter.db");
    let app = TestApp::start_on(common::Data::sqlite_at(&db)).await;
    // A write, so that the WAL holds something.
    app.license(json!({})).await;
    assert_eq!(
        mode(root.path()),
        0o755,
        "an existing directory keeps its mode"
    );
    for dir in [root.path().join("data"), root.path().join("data/charter")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // Reopened (with the same master key): still works, modes unchanged.
    let app = app.restart().await;
    assert_eq!(app.get("/api/licenses").await.0, 200);
    assert_eq!(mode(&db), 0o600);
    app.stop().await;
}
