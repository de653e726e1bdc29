//! The issuer end to end over HTTP, on both stores: the license lifecycle,
//! every renew rule, max_instances, bad input, and a restart that loses nothing.

mod common;

use charter_token::{Claims, DAY, KeySet, Keyring, now};
use common::{Backend, TestApp};
use serde_json::{Value, json};

both_stores!(
    lifecycle,
    renew_rules,
    grace_window,
    max_instances,
    idempotent_retry_under_concurrency,
    bad_input_changes_nothing,
    list_filters_and_pages,
    restart_loses_nothing,
);

fn claims(v: &Value) -> Claims {
    serde_json::from_value(v["claims"].clone()).expect("claims")
}

async fn jwks(app: &TestApp) -> KeySet {
    let text = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .text()
        .await
        .expect("body");
    KeySet::from_jwks_json(&text).expect("a JWKS")
}

fn message(v: &Value) -> &str {
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {v}"))
}

async fn lifecycle(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app
        .license(json!({"max_instances": 2, "limits": {"shards_limit": 4}}))
        .await;
    let lid = license["lid"].as_str().expect("lid");
    assert_eq!(license["state"], "active");

    // Issue: the token verifies against the published JWKS and carries the license.
    let (s, issued) = app.issue(lid, "HTTPS://Grafana.Acme.example").await;
    assert_eq!(s, 201, "{issued}");
    let token = issued["token"].as_str().expect("token");
    let keys = jwks(&app).await;
    let c = keys
        .verify(token, now())
        .expect("issued token verifies against the JWKS");
    assert_eq!(c, claims(&issued));
    assert_eq!(
        c.sub, "https://grafana.acme.example/",
        "instance URL normalised"
    );
    assert_eq!(c.iss, "https://issuer.test/");
    assert_eq!((c.included_users, c.limit("shards_limit")), (10, Some(4)));
    assert_eq!(
        (c.company.as_str(), c.prod.clone()),
        ("Acme Corp", vec!["grafana-enterprise".to_string()])
    );
    assert_eq!(c.exp, c.iat + 7 * DAY, "server default token TTL");

    // The instance was bound by the issuance.
    let (s, instances) = app.get(&format!("/api/licenses/{lid}/instances")).await;
    assert_eq!(s, 200);
    assert_eq!(instances.as_array().map(Vec::len), Some(1));
    let instance_id = instances[0]["id"].as_str().expect("id").to_string();
    assert_eq!(instances[0]["last_jti"], c.jti.as_str());

    // Renew, with a usage report stored on the instance.
    let (s, renewed) = app
        .renew(token, Some(json!({"usage": {"users": 7, "shards": 2}})))
        .await;
    assert_eq!(s, 200, "{renewed}");
    let r = claims(&renewed);
    assert_ne!(r.jti, c.jti);
    assert!(
        keys.verify(renewed["token"].as_str().expect("token"), now())
            .is_ok()
    );
    let (_, inst) = app
        .get(&format!("/api/licenses/{lid}/instances/{instance_id}"))
        .await;
    assert_eq!(inst["usage"], json!({"users": 7, "shards": 2}));
    assert_eq!(inst["last_jti"], r.jti.as_str());
    assert!(inst["next_renewal_at"].is_string());

    // A PATCH to the license shows in the next renewal.
    let (s, patched) = app
        .patch(
            &format!("/api/licenses/{lid}"),
            json!({"included_users": 50, "features": ["reporting", "saml"]}),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    let token2 = renewed["token"].as_str().expect("token");
    let (s, renewed2) = app.renew(token2, None).await;
    assert_eq!(s, 200, "{renewed2}");
    let r2 = claims(&renewed2);
    assert_eq!(r2.included_users, 50);
    assert_eq!(r2.features, vec!["reporting", "saml"]);
    let token3 = renewed2["token"].as_str().expect("token").to_string();

    // Suspend: renewals refused with 403 saying so; resume: accepted again.
    let (s, l) = app
        .post(&format!("/api/licenses/{lid}/suspend"), json!({}))
        .await;
    assert_eq!((s, l["state"].as_str()), (200, Some("suspended")));
    let (s, body) = app.renew(&token3, None).await;
    assert_eq!(s, 403);
    assert!(message(&body).contains("suspended"), "{body}");
    let (s, body) = app.issue(lid, "https://grafana.acme.example/").await;
    assert_eq!(s, 409, "no issuance while suspended: {body}");
    let (s, _) = app
        .post(&format!("/api/licenses/{lid}/resume"), json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, renewed3) = app.renew(&token3, None).await;
    assert_eq!(s, 200, "{renewed3}");

    // Revoke: final.
    let (s, l) = app
        .post(&format!("/api/licenses/{lid}/revoke"), json!({}))
        .await;
    assert_eq!((s, l["state"].as_str()), (200, Some("revoked")));
    let (s, body) = app
        .renew(renewed3["token"].as_str().expect("token"), None)
        .await;
    assert_eq!(s, 403);
    assert!(message(&body).contains("revoked"), "{body}");
    let (s, body) = app
        .post(&format!("/api/licenses/{lid}/resume"), json!({}))
        .await;
    assert_eq!(s, 409, "{body}");
    let (s, _) = app
        .patch(
            &format!("/api/licenses/{lid}"),
            json!({"included_users": 1}),
        )
        .await;
    assert_eq!(s, 409);

    // History: every token, newest first, with why it was issued.
    let (s, history) = app.get(&format!("/api/licenses/{lid}/tokens")).await;
    assert_eq!(s, 200);
    assert_eq!(history["total"], 4);
    let reasons: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(reasons, ["renew", "renew", "renew", "issue"]);
    assert_eq!(history["items"][3]["token"], token);
    app.stop().await;
}

/// Signs claims with the server's own keys (to make expired or odd tokens).
fn sign_as_server(app: &TestApp, claims: &Claims) -> String {
    Keyring::load(&app.data.keys_dir())
        .expect("keys")
        .sign(claims)
        .expect("sign")
}

async fn renew_rules(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (_, issued) = app.issue(lid, "https://a.example/").await;
    let token = issued["token"].as_str().expect("token");
    let c = claims(&issued);

    // No token, or not a bearer: 401.
    let (s, body) = common::send(app.http.post(app.url("/api/tokens/renew"))).await;
    assert_eq!(s, 401, "{body}");
    let (s, _) = common::send(
        app.http
            .post(app.url("/api/tokens/renew"))
            .basic_auth("a", Some("b")),
    )
    .await;
    assert_eq!(s, 401);

    // A changed payload: bad signature, 401.
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = c.clone();
    forged.included_users = 10_000;
    let payload = base64_url(&serde_json::to_vec(&forged).expect("json"));
    let (s, body) = app
        .renew(&format!("{}.{}.{}", parts[0], payload, parts[2]), None)
        .await;
    assert_eq!(s, 401, "{body}");

    // Signed by a key the issuer does not know: 401.
    let other = tempfile::tempdir().expect("dir");
    charter_token::keys::generate(other.path(), charter_token::KeyAlg::EdDsa, 0, true)
        .expect("key");
    let foreign = Keyring::load(other.path())
        .expect("keys")
        .sign(&c)
        .expect("sign");
    let (s, body) = app.renew(&foreign, None).await;
    assert_eq!(s, 401);
    assert!(message(&body).contains("unknown signing key"), "{body}");

    // alg none: 401.
    let none = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let (s, _) = app.renew(&none, None).await;
    assert_eq!(s, 401);

    // Garbage: 401; a malformed body: 400.
    let (s, _) = app.renew("not-a-token", None).await;
    assert_eq!(s, 401);
    let (s, body) = common::send(
        app.http
            .post(app.url("/api/tokens/renew"))
            .bearer_auth(token)
            .body("{not json"),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = app
        .renew(token, Some(json!({"usage": {"users": "many"}})))
        .await;
    assert_eq!(s, 400, "{body}");

    // A valid token for an instance that is not bound: 422.
    let mut stray = c.clone();
    stray.jti = "stray".into();
    stray.sub = "https://elsewhere.example/".into();
    let (s, body) = app.renew(&sign_as_server(&app, &stray), None).await;
    assert_eq!(s, 422, "{body}");
    assert!(message(&body).contains("not bound"), "{body}");

    // Unbinding an instance makes its renewals 422.
    let id = app.get(&format!("/api/licenses/{lid}/instances")).await.1[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (s, _) = app
        .delete(&format!("/api/licenses/{lid}/instances/{id}"))
        .await;
    assert_eq!(s, 204);
    let (s, _) = app.renew(token, None).await;
    assert_eq!(s, 422);
    app.stop().await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn grace_window(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (_, issued) = app.issue(lid, "https://a.example/").await;
    let c = claims(&issued);
    let t = now();

    // Expired 10 days ago: within the 30-day grace, renewed.
    let mut old = c.clone();
    (old.jti, old.iat, old.nbf, old.exp) =
        ("old-1".into(), t - 20 * DAY, t - 20 * DAY, t - 10 * DAY);
    let (s, body) = app.renew(&sign_as_server(&app, &old), None).await;
    assert_eq!(s, 200, "{body}");
    assert!(claims(&body).exp > t);

    // Expired 31 days ago: beyond the grace, 401 saying so.
    (old.jti, old.iat, old.nbf, old.exp) =
        ("old-2".into(), t - 40 * DAY, t - 40 * DAY, t - 31 * DAY);
    let (s, body) = app.renew(&sign_as_server(&app, &old), None).await;
    assert_eq!(s, 401, "{body}");
    assert!(message(&body).contains("grace"), "{body}");

    // The license itself expired: 403 saying so (set in the store: the API refuses past dates).
    let mut l = app
        .state()
        .store
        .get_license(lid)
        .await
        .expect("store")
        .expect("license");
    let read = l.clone();
    l.starts_at = t - 100 * DAY;
    l.expires_at = t - DAY;
    let event = charter::licensing::Actor::system("test").event("license.update", "license", lid);
    app.state()
        .store
        .update_license_terms(&l, &read, None, &event)
        .await
        .expect("store");
    let (s, body) = app
        .renew(issued["token"].as_str().expect("token"), None)
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(message(&body).contains("expired"), "{body}");
    let (_, got) = app.get(&format!("/api/licenses/{lid}")).await;
    assert_eq!(got["state"], "expired");
    app.stop().await;
}

async fn max_instances(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({"max_instances": 2})).await;
    let lid = license["lid"].as_str().expect("lid");
    assert_eq!(app.issue(lid, "https://one.example/").await.0, 201);
    let (s, body) = app
        .post(
            &format!("/api/licenses/{lid}/instances"),
            json!({"url": "https://two.example", "dialect": "consul"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        (body["url"].as_str(), body["dialect"].as_str()),
        (Some("https://two.example/"), Some("consul"))
    );
    let two = body["id"].as_str().expect("id").to_string();

    // Full: a third instance is refused, by issuance and by binding.
    let (s, body) = app.issue(lid, "https://three.example/").await;
    assert_eq!(s, 409, "{body}");
    assert!(message(&body).contains("2 instance"), "{body}");
    let (s, _) = app
        .post(
            &format!("/api/licenses/{lid}/instances"),
            json!({"url": "https://three.example"}),
        )
        .await;
    assert_eq!(s, 409);
    // The same instance again is not a new one: its token is issued.
    assert_eq!(app.issue(lid, "https://one.example").await.0, 201);
    let (s, _) = app
        .post(
            &format!("/api/licenses/{lid}/instances"),
            json!({"url": "https://one.example/"}),
        )
        .await;
    assert_eq!(s, 409, "already bound");

    // Unbinding frees the place.
    assert_eq!(
        app.delete(&format!("/api/licenses/{lid}/instances/{two}"))
            .await
            .0,
        204
    );
    assert_eq!(
        app.delete(&format!("/api/licenses/{lid}/instances/{two}"))
            .await
            .0,
        404
    );
    assert_eq!(app.issue(lid, "https://three.example/").await.0, 201);
    let (_, list) = app.get(&format!("/api/licenses/{lid}/instances")).await;
    let urls: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|i| i["url"].as_str().expect("url"))
        .collect();
    assert_eq!(urls, ["https://one.example/", "https://three.example/"]);

    // Raising the limit makes room.
    assert_eq!(
        app.patch(&format!("/api/licenses/{lid}"), json!({"max_instances": 3}))
            .await
            .0,
        200
    );
    assert_eq!(app.issue(lid, "https://four.example/").await.0, 201);
    app.stop().await;
}

async fn idempotent_retry_under_concurrency(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (_, issued) = app.issue(lid, "https://a.example/").await;
    let token = issued["token"].as_str().expect("token");
    // Eight retries of one renewal at once: one token is issued, all get it.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let req = app
            .http
            .post(app.url("/api/tokens/renew"))
            .bearer_auth(token);
        set.spawn(common::send(req));
    }
    let answers = set.join_all().await;
    let tokens: std::collections::HashSet<String> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, 200, "{b}");
            b["token"].as_str().expect("token").to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "every retry gets the same token");
    let (_, history) = app.get(&format!("/api/licenses/{lid}/tokens")).await;
    assert_eq!(history["total"], 2, "one issue and one renewal recorded");
    app.stop().await;
}

async fn bad_input_changes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let path = format!("/api/licenses/{lid}");
    let (_, before) = app.get(&path).await;

    // Each: (body, status, a word the message must contain).
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"included_users": -1}), 400, "included_users"),
        (json!({"included_users": "ten"}), 400, "included_users"),
        (json!({"included_users": 1e30}), 400, "included_users"),
        (
            json!({"limits": {"shards_limit": -4}}),
            400,
            "limits.shards_limit",
        ),
        (
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "expires_at",
        ),
        (json!({"expires_at": "tomorrow"}), 400, "expires_at"),
        (
            json!({"starts_at": "2098-01-01T00:00:00Z", "expires_at": "2097-01-01T00:00:00Z"}),
            400,
            "expires_at",
        ),
        (json!({"colour": "red"}), 400, "colour"),
        (
            json!({"features": ["not-in-product"]}),
            422,
            "not-in-product",
        ),
        (
            json!({"products": ["no-such-product"]}),
            422,
            "no-such-product",
        ),
        (json!({"products": []}), 400, "products"),
        (json!({"max_instances": 0}), 400, "max_instances"),
        (json!({"update_days": 0}), 400, "update_days"),
        (
            json!({"details_url": "javascript:alert(1)"}),
            400,
            "details_url",
        ),
        (
            json!({"flags": {"package": "x\u{0}y"}}),
            400,
            "flags.package",
        ),
        (json!({"account_id": "someone-else"}), 400, "account_id"),
    ];
    for (body, status, word) in cases {
        let (s, got) = app.patch(&path, body.clone()).await;
        assert_eq!(s, status, "PATCH {body} -> {got}");
        assert!(
            message(&got).contains(word),
            "PATCH {body}: {got} should name {word}"
        );
    }

    // Not JSON, wrong content type, too large.
    let raw = |body: &'static str, ct: &'static str| {
        app.admin(reqwest::Method::PATCH, &path)
            .header("content-type", ct)
            .body(body)
    };
    let (s, got) = common::send(raw("{\"included_users\": ", "application/json")).await;
    assert_eq!(s, 400, "{got}");
    let (s, got) = common::send(raw("included_users=5", "application/x-www-form-urlencoded")).await;
    assert_eq!(s, 415, "{got}");
    let big = json!({"details_url": format!("https://x.example/{}", "a".repeat(100_000))});
    let (s, got) = app.patch(&path, big).await;
    assert_eq!(s, 413, "{got}");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (s, got) = common::send(
        app.admin(reqwest::Method::POST, "/api/accounts")
            .header("content-type", "application/json")
            .body(deep),
    )
    .await;
    assert_eq!(s, 400, "{got}");

    // SQL in strings is data; NUL bytes are refused.
    let (s, acc) = app
        .post(
            "/api/accounts",
            json!({"company": "Robert'); DROP TABLE licenses;--", "slug": "bobby"}),
        )
        .await;
    assert_eq!(s, 201, "{acc}");
    assert_eq!(acc["company"], "Robert'); DROP TABLE licenses;--");
    let (s, _) = app
        .post(
            "/api/accounts",
            json!({"company": "a\u{0}b", "slug": "nul"}),
        )
        .await;
    assert_eq!(s, 400);

    // Instance URLs: http(s) only, no credentials.
    for url in [
        "ftp://a.example/",
        "https://user:pw@a.example/",
        "a.example",
        "https://a.example/?x=1",
        "file:///etc/passwd",
    ] {
        let (s, got) = app.issue(&lid, url).await;
        assert_eq!(s, 400, "{url}: {got}");
        assert!(message(&got).contains("instance"), "{got}");
    }

    // Credentials, unknown things, wrong methods.
    let (s, got) = common::send(app.http.get(app.url(&path))).await;
    assert_eq!(s, 401, "{got}");
    let (s, _) = common::send(
        app.http
            .get(app.url(&path))
            .basic_auth("admin", Some("wrong-password")),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = common::send(
        app.http
            .get(app.url(&path))
            .basic_auth("root", Some(common::ADMIN.1)),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(app.get("/api/licenses/does-not-exist").await.0, 404);
    assert_eq!(app.get("/api/nothing-here").await.0, 404);
    let (s, got) = app.delete(&path).await;
    assert_eq!(s, 405, "{got}");
    assert_eq!(app.get("/api/licenses?per_page=0").await.0, 400);
    assert_eq!(app.get("/api/licenses?state=sleeping").await.0, 400);
    assert_eq!(app.get("/api/licenses?page=-1").await.0, 400);

    // Nothing changed, and nothing was bound.
    let (_, after) = app.get(&path).await;
    assert_eq!(before, after);
    let (_, instances) = app.get(&format!("{path}/instances")).await;
    assert_eq!(instances, json!([]));
    app.stop().await;
}

async fn list_filters_and_pages(backend: Backend) {
    let app = TestApp::start(backend).await;
    let a = app.license(json!({})).await;
    let b = app.license(json!({})).await;
    let c = app.license(json!({})).await;
    let (_, _) = app
        .post(
            &format!("/api/licenses/{}/suspend", b["lid"].as_str().expect("lid")),
            json!({}),
        )
        .await;

    let (s, page1) = app.get("/api/licenses?per_page=2").await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            page1["total"].as_i64(),
            page1["items"].as_array().map(Vec::len)
        ),
        (Some(3), Some(2))
    );
    let (_, page2) = app.get("/api/licenses?per_page=2&page=2").await;
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["items"][0]["lid"], c["lid"]);

    let (_, suspended) = app.get("/api/licenses?state=suspended").await;
    assert_eq!(suspended["total"], 1);
    assert_eq!(suspended["items"][0]["lid"], b["lid"]);
    let (_, active) = app.get("/api/licenses?state=active").await;
    assert_eq!(active["total"], 2);
    let (_, by_account) = app
        .get(&format!(
            "/api/licenses?account_id={}",
            a["account_id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(by_account["total"], 1);
    let (_, by_product) = app.get("/api/licenses?product=grafana-enterprise").await;
    assert_eq!(by_product["total"], 3);
    let (_, none) = app.get("/api/licenses?product=consul-enterprise").await;
    assert_eq!(none["total"], 0);
    app.stop().await;
}

async fn restart_loses_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (_, issued) = app.issue(&lid, "https://a.example/").await;
    let (_, jwks_before) = app.get("/.well-known/jwks.json").await;
    let (_, licenses_before) = app.get("/api/licenses").await;
    let (_, tokens_before) = app.get(&format!("/api/licenses/{lid}/tokens")).await;

    let app = app.restart().await;
    assert_eq!(
        app.get("/.well-known/jwks.json").await.1,
        jwks_before,
        "same keys"
    );
    assert_eq!(app.get("/api/licenses").await.1, licenses_before);
    assert_eq!(
        app.get(&format!("/api/licenses/{lid}/tokens")).await.1,
        tokens_before
    );
    // A token issued before the restart renews after it.
    let (s, body) = app
        .renew(issued["token"].as_str().expect("token"), None)
        .await;
    assert_eq!(s, 200, "{body}");
    app.stop().await;
}
