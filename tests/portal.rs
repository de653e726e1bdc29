//! The web portal's server-side rules, against a real issuer on both
//! stores: sign-in and sessions kept in the store (by hash, ending idle,
//! at the absolute limit and at logout), CSRF and cross-site refusal,
//! roles (a Viewer sees no write control and a forged POST gets 403), the
//! failed-login limit, forms whose errors name their field, a token issued
//! and downloaded as `license.jwt`, and the 404 / 503 pages. The browser
//! test (`tests/browser/`, run by `.ci/browser.sh`) drives the same pages
//! in Chromium.

mod common;

use std::collections::HashMap;

use charter::portal::session::{ABSOLUTE, COOKIE, IDLE};
use common::{ADMIN, Backend, TestApp};
use reqwest::header::{HeaderMap, SET_COOKIE};

/// A browser without a browser: keeps the cookies and never follows redirects.
struct Client {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

/// A page: status, headers, body.
struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let re = regex::Regex::new(r#"name="csrf" value="([^"]+)""#).expect("re");
        re.captures(&self.body)
            .map(|c| c[1].to_string())
            .unwrap_or_default()
    }
}

impl Client {
    fn new(app: &TestApp) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: app.base.clone(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let res = req
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("request");
        for c in res.headers().get_all(SET_COOKIE) {
            let c = c.to_str().expect("cookie");
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').expect("name=value");
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res.text().await.expect("body"),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// A same-origin form POST, as a browser sends it.
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .header("sec-fetch-site", "same-origin")
            .form(form);
        self.send(req).await
    }

    /// Signs in with the sign-in form; the answer to the POST.
    async fn sign_in(&mut self, fields: &[(&str, &str)]) -> Page {
        let page = self.get("/portal/login").await;
        assert_eq!(page.status, 200);
        let csrf = page.csrf();
        let mut form = vec![("csrf", csrf.as_str()), ("next", "/portal/")];
        form.extend_from_slice(fields);
        self.post("/portal/login", &form).await
    }

    async fn admin(app: &TestApp) -> Client {
        let mut c = Client::new(app);
        let page = c.sign_in(&[("user", ADMIN.0), ("password", ADMIN.1)]).await;
        assert_eq!(page.status, 303, "{}", page.body);
        c
    }

    /// The CSRF token of the session (from any page with a form).
    async fn csrf(&mut self) -> String {
        let page = self.get("/portal/").await;
        assert_eq!(page.status, 200, "{}", page.body);
        page.csrf()
    }
}

fn sha256_hex(s: &str) -> String {
    charter::api::auth::sa_token_hash(s)
}

async fn sign_in_keeps_a_hashed_session_until_logout(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = Client::new(&app);
    // Not signed in: to the sign-in page, and back after.
    let page = c.get("/portal/licenses").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/portal/login?next=%2Fportal%2Flicenses");
    // A wrong password: the page again, 401, saying so.
    let page = c.sign_in(&[("user", ADMIN.0), ("password", "wrong")]).await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("Wrong user name or password"));
    let page = c.sign_in(&[("user", ADMIN.0), ("password", ADMIN.1)]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/portal/");
    let set = page
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .find(|v| v.starts_with(COOKIE))
        .expect("session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    // The test issuer's public URL is https: the cookie is Secure.
    assert!(set.contains("Secure"), "{set}");
    let id = c.cookies[COOKIE].clone();
    let store = &app.state().store;
    let row = store
        .get_session(&sha256_hex(&id))
        .await
        .expect("store")
        .expect("kept by its hash");
    assert_eq!(row.actor, ADMIN.0);
    assert!(store.get_session(&id).await.expect("store").is_none());
    let page = c.get("/portal/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Dashboard") && page.body.contains("renewals-chart"));
    // Security headers of a page.
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers["x-frame-options"], "DENY");
    // Logout ends it in the store.
    let csrf = page.csrf();
    let page = c.post("/portal/logout", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    assert!(
        store
            .get_session(&sha256_hex(&id))
            .await
            .expect("store")
            .is_none()
    );
    c.cookies.insert(COOKIE.into(), id);
    assert_eq!(
        c.get("/portal/").await.status,
        303,
        "the old cookie is dead"
    );
    let (_, audit) = app.get("/api/audit?action=portal.login").await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
    app.stop().await;
}

async fn sessions_end_idle_and_at_the_absolute_limit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let store = app.state().store.clone();
    let t = charter_token::now();
    // Idle: last seen longer ago than IDLE.
    let mut c = Client::admin(&app).await;
    let hash = sha256_hex(&c.cookies[COOKIE]);
    store
        .touch_session(&hash, t - IDLE - 5)
        .await
        .expect("touch");
    assert_eq!(c.get("/portal/").await.status, 303);
    assert!(store.get_session(&hash).await.expect("store").is_none());
    // Absolute: busy, but signed in longer ago than ABSOLUTE.
    let mut c2 = Client::admin(&app).await;
    let hash = sha256_hex(&c2.cookies[COOKIE]);
    let mut row = store.get_session(&hash).await.expect("store").expect("row");
    store.delete_session(&hash).await.expect("delete");
    row.created_at = t - ABSOLUTE - 5;
    row.last_seen_at = t;
    store.insert_session(&row).await.expect("insert");
    assert_eq!(c2.get("/portal/").await.status, 303);
    // A live session's last use is written (at most once a minute).
    let mut c3 = Client::admin(&app).await;
    let hash = sha256_hex(&c3.cookies[COOKIE]);
    store.touch_session(&hash, t - 120).await.expect("touch");
    assert_eq!(c3.get("/portal/").await.status, 200);
    let row = store.get_session(&hash).await.expect("store").expect("row");
    assert!(row.last_seen_at >= t, "touched");
    drop(c);
    app.stop().await;
}

async fn cross_site_and_tokenless_posts_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = Client::admin(&app).await;
    let csrf = c.csrf().await;
    let form = [
        ("csrf", csrf.as_str()),
        ("company", "Evil"),
        ("slug", "evil"),
    ];
    // Without the token, with a wrong one.
    let page = c.post("/portal/accounts", &form[1..]).await;
    assert_eq!(page.status, 403);
    assert!(
        page.headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert!(page.body.contains("security token"), "{}", page.body);
    let bad = [("csrf", "x"), ("company", "Evil"), ("slug", "evil")];
    assert_eq!(c.post("/portal/accounts", &bad).await.status, 403);
    // With the token, but from another site.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let req = c
            .http
            .post(format!("{}/portal/accounts", c.base))
            .header(name, value)
            .form(&form);
        assert_eq!(c.send(req).await.status, 403, "{name}: {value}");
    }
    // The sign-in form too.
    let login = c.get("/portal/login").await.csrf();
    let req = c
        .http
        .post(format!("{}/portal/login", c.base))
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf", login.as_str()),
            ("user", ADMIN.0),
            ("password", ADMIN.1),
        ]);
    assert_eq!(c.send(req).await.status, 403);
    // Nothing was created; the right form is.
    let (_, accounts) = app.get("/api/accounts").await;
    assert_eq!(accounts["total"], 0, "{accounts}");
    let page = c.post("/portal/accounts", &form).await;
    assert_eq!(page.status, 303, "{}", page.body);
    app.stop().await;
}

async fn a_viewer_has_no_write_controls_and_a_forged_post_gets_403(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(serde_json::json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (_, token) = app.service_account("viewer", "Viewer").await;
    let mut v = Client::new(&app);
    let page = v.sign_in(&[("token", &token)]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    for path in [
        "/portal/".to_string(),
        "/portal/licenses".into(),
        format!("/portal/licenses/{lid}"),
        "/portal/accounts".into(),
        "/portal/products".into(),
    ] {
        let page = v.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        // The only form a Viewer gets is sign-out.
        assert_eq!(
            page.body.matches("method=\"post\"").count(),
            1,
            "{path}: {}",
            page.body
        );
        for control in [
            "New license",
            "Revoke",
            "Suspend",
            "Edit terms",
            "Issue token",
            "New account",
            "New product",
        ] {
            assert!(!page.body.contains(control), "{path} shows {control}");
        }
    }
    assert!(
        !v.get("/portal/").await.body.contains("/portal/audit"),
        "no audit link"
    );
    assert_eq!(v.get("/portal/audit").await.status, 403);
    assert_eq!(v.get("/portal/licenses/new").await.status, 403);
    let csrf = v.csrf().await;
    let posts = [
        (
            format!("/portal/licenses/{lid}/status/revoke"),
            vec![("csrf", csrf.as_str())],
        ),
        (
            format!("/portal/licenses/{lid}/tokens"),
            vec![("csrf", csrf.as_str()), ("instance", "https://x.example/")],
        ),
        (
            "/portal/accounts".into(),
            vec![("csrf", csrf.as_str()), ("company", "V"), ("slug", "v")],
        ),
    ];
    for (path, form) in &posts {
        let page = v.post(path, form).await;
        assert_eq!(page.status, 403, "{path}");
        assert!(page.body.contains("Permissions needed"), "{}", page.body);
    }
    let (_, l) = app.get(&format!("/api/licenses/{lid}")).await;
    assert_eq!(l["status"], "active");
    app.stop().await;
}

async fn the_failed_login_limit_applies(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = Client::new(&app);
    for _ in 0..charter::api::auth::AuthLimiter::MAX_FAILURES {
        let page = c.sign_in(&[("user", ADMIN.0), ("password", "wrong")]).await;
        assert_eq!(page.status, 401);
    }
    let page = c.sign_in(&[("user", ADMIN.0), ("password", ADMIN.1)]).await;
    assert_eq!(page.status, 429, "even the right password, now");
    assert!(page.body.contains("Too many failed sign-ins"));
    // The API shares the limit.
    let (status, _) = app.get("/api/accounts").await;
    assert_eq!(status, 429);
    app.stop().await;
}

async fn forms_name_their_fields_and_a_token_downloads(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut c = Client::admin(&app).await;
    let csrf = c.csrf().await;
    let page = c
        .post(
            "/portal/products",
            &[("csrf", &csrf), ("slug", "Not A Slug"), ("name", "")],
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(
        page.body.contains("href=\"#f-slug\">slug</a>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"f-slug\"") && page.body.contains("aria-invalid=\"true\""));
    let ok = [
        ("csrf", csrf.as_str()),
        ("slug", "grafana"),
        ("name", "Grafana"),
        ("features", "reporting, saml"),
    ];
    assert_eq!(c.post("/portal/products", &ok).await.status, 303);
    let page = c.post("/portal/products", &ok).await;
    assert_eq!(page.status, 409, "taken: {}", page.body);
    assert_eq!(
        c.post(
            "/portal/accounts",
            &[("csrf", &csrf), ("company", "Acme"), ("slug", "acme")]
        )
        .await
        .status,
        303
    );
    let (_, accounts) = app.get("/api/accounts").await;
    let account = accounts["items"][0]["id"].as_str().expect("id").to_string();
    // A feature no product grants: named.
    let mut form = vec![
        ("csrf", csrf.as_str()),
        ("account_id", account.as_str()),
        ("products", "grafana"),
        ("expires_at", "2099-01-01"),
        ("included_users", "10"),
        ("features", "white-labeling"),
        ("limits", "shards_limit=4"),
        ("flags", "package=premium"),
    ];
    let page = c.post("/portal/licenses", &form).await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("#f-features"), "{}", page.body);
    form[5] = ("features", "reporting");
    let page = c.post("/portal/licenses", &form).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let lid = page.location().rsplit('/').next().expect("lid").to_string();
    let (_, l) = app.get(&format!("/api/licenses/{lid}")).await;
    assert_eq!(l["limits"]["shards_limit"], 4, "{l}");
    assert_eq!(l["flags"]["package"], "premium", "{l}");
    // Edit: the form comes filled in; a change is saved, a bad value named.
    let edit = c.get(&format!("/portal/licenses/{lid}/edit")).await;
    assert_eq!(edit.status, 200);
    assert!(edit.body.contains("value=\"2099-01-01\""), "{}", edit.body);
    let path = format!("/portal/licenses/{lid}/edit");
    let mut changed: Vec<(&str, &str)> = form
        .iter()
        .copied()
        .filter(|(k, _)| *k != "account_id")
        .collect();
    changed.push(("starts_at", "2026-01-01"));
    changed.retain(|(k, _)| *k != "included_users");
    changed.push(("included_users", "-1"));
    let page = c.post(&path, &changed).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains("href=\"#f-included_users\""),
        "{}",
        page.body
    );
    changed.pop();
    changed.push(("included_users", "25"));
    let page = c.post(&path, &changed).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (_, l) = app.get(&format!("/api/licenses/{lid}")).await;
    assert_eq!(l["included_users"], 25, "{l}");
    // Suspend and resume through their confirmations.
    for (to, status) in [("suspend", "suspended"), ("resume", "active")] {
        let confirm = c.get(&format!("/portal/licenses/{lid}/status/{to}")).await;
        assert_eq!(confirm.status, 200);
        assert!(confirm.body.contains(&lid));
        let page = c
            .post(
                &format!("/portal/licenses/{lid}/status/{to}"),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        let (_, l) = app.get(&format!("/api/licenses/{lid}")).await;
        assert_eq!(l["status"], status);
    }
    // Issue for an instance, then download it.
    let page = c
        .post(
            &format!("/portal/licenses/{lid}/tokens"),
            &[("csrf", &csrf), ("instance", "https://grafana.acme.test")],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let jti = page
        .location()
        .split("issued=")
        .nth(1)
        .expect("jti")
        .split('#')
        .next()
        .expect("jti")
        .to_string();
    let detail = c.get(page.location()).await;
    assert!(detail.body.contains("Download license.jwt"));
    assert!(detail.body.contains("https://grafana.acme.test/"));
    let file = c
        .get(&format!("/portal/licenses/{lid}/tokens/{jti}/license.jwt"))
        .await;
    assert_eq!(file.status, 200);
    assert_eq!(
        file.headers["content-disposition"],
        "attachment; filename=\"license.jwt\""
    );
    let (_, claims) = charter_token::insecure_decode(&file.body).expect("a JWT");
    assert_eq!(claims.jti, jti);
    assert_eq!(claims.sub, "https://grafana.acme.test/");
    // Not found is a page.
    let page = c.get("/portal/licenses/nope").await;
    assert_eq!(page.status, 404);
    assert!(page.body.contains("<h1>Page not found</h1>"));
    assert_eq!(c.get("/portal/no/such/page").await.status, 404);
    app.stop().await;
}

async fn the_dashboard_lists_instances_whose_pushes_fail(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(serde_json::json!({"max_instances": 2})).await;
    let lid = license["lid"].as_str().expect("lid");
    // Nothing listens there: the push fails.
    let (s, body) = app
        .post(
            &format!("/api/licenses/{lid}/instances"),
            serde_json::json!({"url": "http://127.0.0.1:9/", "push_enabled": true}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    charter::licensing::push::run_once(app.state())
        .await
        .expect("push run");
    let mut c = Client::admin(&app).await;
    let page = c.get("/portal/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("id=\"stat-failing\">1<"),
        "{}",
        page.body
    );
    assert!(page.body.contains("failing-table"), "{}", page.body);
    assert!(page.body.contains("http://127.0.0.1:9/"), "{}", page.body);
    let detail = c.get(&format!("/portal/licenses/{lid}")).await;
    assert!(detail.body.contains("badge-failing"), "{}", detail.body);
    app.stop().await;
}

/// A license over its included counts says so on its page.
async fn a_license_over_its_limit_says_so(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(serde_json::json!({"included_users": 5})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (s, body) = app.issue(lid, "https://a.example.com/").await;
    assert_eq!(s, 201, "{body}");
    let token = body["token"].as_str().expect("token");
    let (s, body) = app
        .renew(token, Some(serde_json::json!({"usage": {"users": 9}})))
        .await;
    assert_eq!(s, 200, "{body}");
    let mut c = Client::admin(&app).await;
    let before = c.get(&format!("/portal/licenses/{lid}")).await;
    assert!(!before.body.contains("Over its limit"), "{}", before.body);
    charter::licensing::usage::check_limits(&app.state().core, charter_token::now() + 86_400)
        .await
        .expect("check");
    let after = c.get(&format!("/portal/licenses/{lid}")).await;
    assert!(after.body.contains("Over its limit"), "{}", after.body);
    assert!(
        after.body.contains("9 users of 5 included"),
        "{}",
        after.body
    );
    app.stop().await;
}

/// The session store called directly: rows round-trip, idle and old ones
/// are pruned, a touch moves `last_seen_at`, a delete says whether it found one.
async fn the_session_store_keeps_prunes_and_deletes(backend: Backend) {
    use charter::db::PortalSession;
    use charter::domain::{ActorKind, Role};
    let data = common::Data::new(backend).await;
    let store = charter::db::open(&data.database_url, true)
        .await
        .expect("store");
    let t = charter_token::now();
    let session = |id: &str, created_at: i64, last_seen_at: i64| PortalSession {
        id_hash: sha256_hex(id),
        actor_kind: ActorKind::ServiceAccount,
        actor: "sa-bot".into(),
        service_account_id: Some(7),
        token_id: Some(9),
        role: Role::Editor,
        csrf: format!("csrf-{id}"),
        ip: Some("192.0.2.1".into()),
        created_at,
        last_seen_at,
    };
    let fresh = session("fresh", t - 60, t - 30);
    store.insert_session(&fresh).await.expect("insert");
    store
        .insert_session(&session("idle", t - 3600, t - IDLE - 1))
        .await
        .expect("insert");
    store
        .insert_session(&session("old", t - ABSOLUTE - 1, t))
        .await
        .expect("insert");
    assert_eq!(
        store.get_session(&fresh.id_hash).await.expect("get"),
        Some(fresh.clone())
    );
    assert_eq!(
        store
            .prune_sessions(t - IDLE, t - ABSOLUTE)
            .await
            .expect("prune"),
        2
    );
    assert!(
        store
            .get_session(&sha256_hex("idle"))
            .await
            .expect("get")
            .is_none()
    );
    store.touch_session(&fresh.id_hash, t).await.expect("touch");
    let row = store
        .get_session(&fresh.id_hash)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.last_seen_at, t);
    assert!(store.delete_session(&fresh.id_hash).await.expect("delete"));
    assert!(!store.delete_session(&fresh.id_hash).await.expect("delete"));
    assert!(
        store
            .get_session(&fresh.id_hash)
            .await
            .expect("get")
            .is_none()
    );
}

both_stores!(
    sign_in_keeps_a_hashed_session_until_logout,
    sessions_end_idle_and_at_the_absolute_limit,
    cross_site_and_tokenless_posts_are_refused,
    a_viewer_has_no_write_controls_and_a_forged_post_gets_403,
    the_failed_login_limit_applies,
    forms_name_their_fields_and_a_token_downloads,
    the_dashboard_lists_instances_whose_pushes_fail,
    the_session_store_keeps_prunes_and_deletes,
    a_license_over_its_limit_says_so,
);

/// `/` leads to the portal; the API's unknown paths stay JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_leads_to_the_portal_and_the_api_stays_json() {
    let app = TestApp::start(Backend::Sqlite).await;
    let mut c = Client::new(&app);
    let page = c.get("/").await;
    assert_eq!((page.status, page.location()), (303, "/portal/"));
    let (status, body) = common::send(app.http.get(app.url("/api/nope"))).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("no such endpoint"))
    );
    let (_, doc) = app.get("/api/openapi.json").await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        paths.keys().all(|p| !p.starts_with("/portal") && p != "/"),
        "{:?}",
        paths.keys()
    );
    app.stop().await;
}

/// The database lost under a running issuer: a 503 page, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_a_503_page() {
    let app = TestApp::start(Backend::Postgres).await;
    let mut c = Client::admin(&app).await;
    assert_eq!(c.get("/portal/").await.status, 200);
    let name = app
        .data
        .database_url
        .rsplit('/')
        .next()
        .expect("db")
        .to_string();
    let (admin, conn) = tokio_postgres::connect(common::PG_ADMIN_URL, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL");
    let task = tokio::spawn(conn);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .expect("cut off");
    let page = c.get("/portal/licenses").await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(page.body.contains("Database unavailable"), "{}", page.body);
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .expect("back");
    drop(admin);
    let _ = task.await;
    app.stop().await;
}
