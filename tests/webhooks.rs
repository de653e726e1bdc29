//! Issue 15 (events and webhooks): events are recorded with the change that
//! causes them (none for a change that did not happen), delivered signed as
//! Standard Webhooks say, retried, and the endpoint disabled when delivery
//! keeps failing; expiries are announced once, also by two replicas at
//! once; usage over the included counts sets `over_limit` and clears it.

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use charter::licensing::webhooks;
use common::{Auth, Backend, TestApp};
use serde_json::{Value, json};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
    fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }
}

/// A loopback receiver answering `status` (changeable) to every POST.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> Receiver {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        type S = (Arc<Mutex<Vec<Got>>>, Arc<AtomicU16>);
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |State((got, status)): State<S>, headers: HeaderMap, body: String| async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let code = status.load(Ordering::SeqCst);
                        if code == 200 {
                            got.lock().expect("lock").push(Got {
                                id: h("webhook-id"),
                                timestamp: h("webhook-timestamp"),
                                signature: h("webhook-signature"),
                                body,
                            });
                        }
                        StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
                    },
                ),
            )
            .with_state((got.clone(), status.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            got,
            status,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }

    fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self.got().iter().map(Got::kind).collect();
        k.sort();
        k
    }
}

async fn deliver(app: &TestApp) {
    webhooks::run_once(&app.state().core)
        .await
        .expect("delivery run");
}

async fn hook(app: &TestApp, url: &str, types: &[&str]) -> (String, String) {
    let (s, body) = app
        .post(
            "/api/webhooks",
            json!({"url": url, "event_types": types, "description": "CRM"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    (
        body["id"].as_str().expect("id").to_string(),
        body["secret"].as_str().expect("secret").to_string(),
    )
}

async fn events_are_recorded_with_their_change_and_delivered_signed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let (id, secret) = hook(
        &app,
        &rx.url,
        &[
            "license.created",
            "license.updated",
            "license.suspended",
            "license.resumed",
            "license.revoked",
            "instance.bound",
            "instance.unbound",
            "token.issued",
        ],
    )
    .await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The secret is shown once.
    let (s, shown) = app.get(&format!("/api/webhooks/{id}")).await;
    assert_eq!(s, 200);
    assert!(shown.get("secret").is_none(), "{shown}");
    assert!(!shown.to_string().contains(&secret[6..]));

    let license = app.license(json!({"max_instances": 2})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (s, _) = app.issue(lid, "https://grafana.acme.example/").await;
    assert_eq!(s, 201);
    let (s, _) = app
        .patch(
            &format!("/api/licenses/{lid}"),
            json!({"included_users": 20}),
        )
        .await;
    assert_eq!(s, 200);
    // A PATCH refused changes nothing and announces nothing.
    let (s, _) = app
        .patch(&format!("/api/licenses/{lid}"), json!({"max_instances": 0}))
        .await;
    assert_eq!(s, 400);
    for (path, status) in [("suspend", 200), ("suspend", 200), ("resume", 200)] {
        let (s, body) = app
            .post(&format!("/api/licenses/{lid}/{path}"), json!({}))
            .await;
        assert_eq!(s, status, "{path}: {body}");
    }
    let (_, instances) = app.get(&format!("/api/licenses/{lid}/instances")).await;
    let iid = instances[0]["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let (s, _) = app
        .delete(&format!("/api/licenses/{lid}/instances/{iid}"))
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .post(&format!("/api/licenses/{lid}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200);

    deliver(&app).await;
    // Each change once; the second suspend changed nothing.
    assert_eq!(
        rx.kinds(),
        [
            "instance.bound",
            "instance.unbound",
            "license.created",
            "license.resumed",
            "license.revoked",
            "license.suspended",
            "license.updated",
            "token.issued",
        ]
    );
    for g in rx.got() {
        let ts: i64 = g.timestamp.parse().expect("timestamp");
        let expected = webhooks::sign(&secret, &g.id, ts, &g.body).expect("sign");
        assert_eq!(g.signature, expected, "{}", g.kind());
        assert!(g.id.starts_with("msg_"), "{}", g.id);
        let v = g.json();
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        let text = g.body.clone();
        assert!(!text.contains("eyJ"), "no token text in an event: {text}");
    }
    let by_kind = |k: &str| {
        rx.got()
            .into_iter()
            .find(|g| g.kind() == k)
            .map(|g| g.json()["data"].clone())
            .expect(k)
    };
    assert_eq!(by_kind("license.updated")["license"]["included_users"], 20);
    assert_eq!(
        by_kind("license.updated")["changes"]["included_users"],
        json!({"old": 10, "new": 20})
    );
    assert_eq!(by_kind("license.revoked")["license"]["status"], "revoked");
    assert_eq!(by_kind("license.revoked")["previous_status"], "active");
    assert_eq!(
        by_kind("instance.bound")["instance"]["url"],
        "https://grafana.acme.example/"
    );
    assert_eq!(by_kind("token.issued")["lid"], lid);

    // A second run delivers nothing again; the deliveries say delivered.
    deliver(&app).await;
    assert_eq!(rx.got().len(), 8);
    let (s, list) = app.get(&format!("/api/webhooks/{id}/deliveries")).await;
    assert_eq!(s, 200, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 8);
    assert!(
        items
            .iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1 && d["last_status"] == 200),
        "{list}"
    );
    app.stop().await;
}

async fn only_admins_manage_webhooks_and_bad_input_is_named(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, editor) = app.service_account("ci", "Editor").await;
    let (s, _) = app
        .call(
            &Auth::Bearer(editor.clone()),
            reqwest::Method::GET,
            "/api/webhooks",
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .call(
            &Auth::Bearer(editor),
            reqwest::Method::POST,
            "/api/webhooks",
            Some(
                json!({"url": "https://crm.example.com/hook", "event_types": ["license.created"]}),
            ),
        )
        .await;
    assert_eq!(s, 403);
    for (body, field) in [
        (json!({"event_types": ["license.created"]}), "url"),
        (
            json!({"url": "ftp://x.example.com/", "event_types": ["license.created"]}),
            "url",
        ),
        (
            json!({"url": "https://x.example.com/", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://x.example.com/", "event_types": ["license.exploded"]}),
            "event_types",
        ),
        (
            json!({"url": "https://x.example.com/", "event_types": ["webhook.test"]}),
            "event_types",
        ),
    ] {
        let (s, e) = app.post("/api/webhooks", body.clone()).await;
        assert_eq!(s, 400, "{body}: {e}");
        assert!(
            e["message"].as_str().is_some_and(|m| m.starts_with(field)),
            "{body}: {e}"
        );
    }
    let (s, list) = app.get("/api/webhooks").await;
    assert_eq!((s, list), (200, json!([])), "nothing was stored");
    let (s, _) = app.get("/api/webhooks/wh_nope").await;
    assert_eq!(s, 404);
    app.stop().await;
}

/// Without `--push-allow-private`, an endpoint on a private address is
/// refused when it is created.
async fn private_endpoints_are_refused_by_default(backend: Backend) {
    let app = TestApp::start_with(backend, |a| a.push_allow_private = false).await;
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://10.0.0.8/hook",
        "http://[::1]/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest",
    ] {
        let (s, e) = app
            .post(
                "/api/webhooks",
                json!({"url": url, "event_types": ["license.created"]}),
            )
            .await;
        assert_eq!(s, 400, "{url}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| m.contains("private")));
    }
    app.stop().await;
}

async fn last_delivery(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/webhooks/{id}/deliveries")).await.1["items"][0].clone()
}

async fn failing_deliveries_are_retried_then_fail_and_disable_the_endpoint(backend: Backend) {
    let app = TestApp::start_with(backend, |a| {
        a.webhook_retry_schedule = Some("1,1".into());
    })
    .await;
    let rx = Receiver::start().await;
    let watcher = Receiver::start().await;
    let (id, _) = hook(&app, &rx.url, &["license.created"]).await;
    hook(&app, &watcher.url, &["webhook.disabled"]).await;
    rx.status.store(503, Ordering::SeqCst);
    app.license(json!({})).await;

    deliver(&app).await;
    let d = last_delivery(&app, &id).await;
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_i64()),
        (Some("pending"), Some(1)),
        "{d}"
    );
    assert_eq!(d["last_status"], 503);
    assert!(d["next_attempt_at"].is_string(), "{d}");
    // Not due yet: nothing happens.
    deliver(&app).await;
    assert_eq!(last_delivery(&app, &id).await["attempts"], 1);
    for attempts in [2, 3] {
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        deliver(&app).await;
        assert_eq!(last_delivery(&app, &id).await["attempts"], attempts);
    }
    let d = last_delivery(&app, &id).await;
    assert_eq!(d["state"], "failed", "{d}");
    let (_, w) = app.get(&format!("/api/webhooks/{id}")).await;
    assert_eq!(w["enabled"], false, "{w}");
    assert!(
        w["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("no delivery succeeded")),
        "{w}"
    );
    deliver(&app).await;
    assert_eq!(watcher.kinds(), ["webhook.disabled"]);
    assert_eq!(watcher.got()[0].json()["data"]["webhook_id"], id);
    let (_, audit) = app.get("/api/audit?action=webhook.disable").await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");

    // Disabled: new events are not queued for it; a test still goes out.
    rx.status.store(200, Ordering::SeqCst);
    app.license(json!({})).await;
    let (s, d) = app
        .post(&format!("/api/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(s, 202, "{d}");
    deliver(&app).await;
    assert_eq!(rx.kinds(), ["webhook.test"]);
    // Enabled again: its reason is gone, and it receives new events.
    let (s, w) = app
        .patch(&format!("/api/webhooks/{id}"), json!({"enabled": true}))
        .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["disabled_reason"], Value::Null);
    app.license(json!({})).await;
    deliver(&app).await;
    assert_eq!(rx.kinds(), ["license.created", "webhook.test"]);

    // 410 Gone disables at once.
    rx.status.store(410, Ordering::SeqCst);
    app.license(json!({})).await;
    deliver(&app).await;
    let (_, w) = app.get(&format!("/api/webhooks/{id}")).await;
    assert_eq!(w["enabled"], false, "{w}");
    assert!(
        w["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410"))
    );
    app.stop().await;
}

async fn a_rotated_secret_signs_beside_the_old_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let (id, old) = hook(&app, &rx.url, &["license.created"]).await;
    let (s, rotated) = app
        .post(&format!("/api/webhooks/{id}/rotate-secret"), json!({}))
        .await;
    assert_eq!(s, 200, "{rotated}");
    let new = rotated["secret"].as_str().expect("secret").to_string();
    assert_ne!(new, old);
    app.license(json!({})).await;
    deliver(&app).await;
    let g = &rx.got()[0];
    let ts: i64 = g.timestamp.parse().expect("ts");
    let sigs: Vec<&str> = g.signature.split(' ').collect();
    assert_eq!(
        sigs,
        [
            webhooks::sign(&new, &g.id, ts, &g.body)
                .expect("new")
                .as_str(),
            webhooks::sign(&old, &g.id, ts, &g.body)
                .expect("old")
                .as_str(),
        ]
    );
    let (s, _) = app.delete(&format!("/api/webhooks/{id}")).await;
    assert_eq!(s, 204);
    let (s, _) = app.get(&format!("/api/webhooks/{id}/deliveries")).await;
    assert_eq!(s, 404);
    app.stop().await;
}

/// Two replicas announcing and delivering at once: each expiry announced
/// once, each delivery made once.
async fn expiries_are_announced_once_by_racing_replicas(backend: Backend) {
    let app = TestApp::start(backend).await;
    let other = charter::serve::start(app.data.config())
        .await
        .expect("second replica");
    let rx = Receiver::start().await;
    hook(&app, &rx.url, &["license.expiring", "license.expired"]).await;
    let in_days = |d: i64| charter::domain::rfc3339::format(charter_token::now() + d * 86_400);
    let mut lids = Vec::new();
    for _ in 0..5 {
        let l = app
            .license(json!({"expires_at": in_days(10), "lic_exp_warn_days": 30}))
            .await;
        lids.push(l["lid"].as_str().expect("lid").to_string());
    }
    // Outside its window: not announced.
    app.license(json!({"expires_at": in_days(60), "lic_exp_warn_days": 30}))
        .await;
    let t = charter_token::now();
    let (a, b) = tokio::join!(
        charter::licensing::events::announce_expiries(&app.state().core, t),
        charter::licensing::events::announce_expiries(&other.state.core, t),
    );
    assert_eq!(a.expect("a") + b.expect("b"), 5);
    let (a, b) = tokio::join!(
        webhooks::run_once(&app.state().core),
        webhooks::run_once(&other.state.core)
    );
    a.expect("a");
    b.expect("b");
    assert_eq!(rx.kinds(), vec!["license.expiring"; 5]);
    let got = rx.got();
    let mut announced: Vec<String> = got
        .iter()
        .map(|g| {
            g.json()["data"]["license"]["lid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    announced.sort();
    lids.sort();
    assert_eq!(announced, lids);
    assert_eq!(got[0].json()["data"]["days_left"], 10);
    // Again: nothing new.
    let n = charter::licensing::events::announce_expiries(&other.state.core, t)
        .await
        .expect("again");
    assert_eq!(n, 0);
    // Extended, then inside its new window: announced for the new expiry;
    // and once the date passes, expired.
    let (s, _) = app
        .patch(
            &format!("/api/licenses/{}", lids[0]),
            json!({"expires_at": in_days(20)}),
        )
        .await;
    assert_eq!(s, 200);
    let n = charter::licensing::events::announce_expiries(&app.state().core, t)
        .await
        .expect("extended");
    assert_eq!(n, 1);
    // Eleven days on, the four others have expired (lids[0] now expires
    // in twenty days and was announced as expiring for that date).
    let later = t + 11 * 86_400;
    let n = charter::licensing::events::announce_expiries(&app.state().core, later)
        .await
        .expect("expired");
    assert_eq!(n, 4);
    other.stop().await.expect("stops");
    app.stop().await;
}

async fn usage_over_the_included_count_sets_over_limit_and_clears_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    hook(
        &app,
        &rx.url,
        &["license.over_limit", "license.back_within_limit"],
    )
    .await;
    let license = app
        .license(json!({"max_instances": 2, "included_users": 10}))
        .await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let mut tokens = Vec::new();
    for url in ["https://a.example.com/", "https://b.example.com/"] {
        let (s, body) = app.issue(&lid, url).await;
        assert_eq!(s, 201);
        tokens.push(body["token"].as_str().expect("token").to_string());
    }
    let renew = |token: String, users: i64| {
        let app = &app;
        async move {
            let (s, body) = app
                .renew(&token, Some(json!({"usage": {"users": users}})))
                .await;
            assert_eq!(s, 200, "{body}");
            body["token"].as_str().expect("token").to_string()
        }
    };
    // a: 9 then 8; b: 5. The latest of each: 8 + 5 = 13 > 10.
    let a = renew(tokens[0].clone(), 9).await;
    let _a = renew(a, 8).await;
    let b = renew(tokens[1].clone(), 5).await;
    // The check looks at the latest complete day: run it as of tomorrow,
    // on two replicas at once: one of them records the transition.
    let tomorrow = charter_token::now() + 86_400;
    let core = &app.state().core;
    let other = charter::serve::start(app.data.config())
        .await
        .expect("second replica");
    let (here, there) = tokio::join!(
        charter::licensing::usage::check_limits(core, tomorrow),
        charter::licensing::usage::check_limits(&other.state.core, tomorrow),
    );
    assert_eq!(here.expect("here") + there.expect("there"), 1);
    other.stop().await.expect("stops");
    let (_, l) = app.get(&format!("/api/licenses/{lid}")).await;
    assert_eq!(
        l["over_limit"]["counters"]["users"],
        json!({"used": 13, "included": 10}),
        "{l}"
    );
    assert!(l["over_limit"]["since"].is_string());
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains("charter_licenses_over_limit 1"), "{text}");
    // Checked again: no second event.
    assert_eq!(
        charter::licensing::usage::check_limits(core, tomorrow)
            .await
            .expect("again"),
        0
    );
    // b drops to 1: 8 + 1 = 9, within.
    renew(b, 1).await;
    assert_eq!(
        charter::licensing::usage::check_limits(core, tomorrow)
            .await
            .expect("within"),
        1
    );
    let (_, l) = app.get(&format!("/api/licenses/{lid}")).await;
    assert_eq!(l["over_limit"], Value::Null, "{l}");
    deliver(&app).await;
    assert_eq!(
        rx.kinds(),
        ["license.back_within_limit", "license.over_limit"]
    );
    app.stop().await;
}

/// Retention: events no delivery waits for go (with their deliveries);
/// one with a delivery pending stays.
async fn old_events_are_pruned_unless_a_delivery_waits(backend: Backend) {
    let app = TestApp::start(backend).await;
    let ok = Receiver::start().await;
    let down = Receiver::start().await;
    down.status.store(503, Ordering::SeqCst);
    let (a, _) = hook(&app, &ok.url, &["license.created"]).await;
    let (b, _) = hook(&app, &down.url, &["license.created"]).await;
    let l = app.license(json!({})).await;
    let lid = l["lid"].as_str().expect("lid");
    // license.updated: recorded, and nobody subscribes.
    let (s, _) = app
        .patch(
            &format!("/api/licenses/{lid}"),
            json!({"included_users": 3}),
        )
        .await;
    assert_eq!(s, 200);
    deliver(&app).await;
    let store = &app.state().store;
    let later = charter_token::now() + 60;
    assert_eq!(store.prune_events(later, 100).await.expect("prune"), 1);
    let (_, d) = app.get(&format!("/api/webhooks/{a}/deliveries")).await;
    assert_eq!(d["items"].as_array().map(Vec::len), Some(1), "{d}");
    // Nothing recent goes.
    assert_eq!(
        store
            .prune_events(charter_token::now() - 3600, 100)
            .await
            .expect("prune"),
        0
    );
    let (s, _) = app.delete(&format!("/api/webhooks/{b}")).await;
    assert_eq!(s, 204);
    assert_eq!(store.prune_events(later, 100).await.expect("prune"), 1);
    let (_, d) = app.get(&format!("/api/webhooks/{a}/deliveries")).await;
    assert_eq!(d["items"], json!([]), "its deliveries went with it");
    app.stop().await;
}

/// Two admins on two replicas change different fields of one endpoint at
/// once, many times: neither change is lost, and each made one audit event.
async fn racing_changes_of_an_endpoint_keep_both(backend: Backend) {
    let app = TestApp::start(backend).await;
    let other = charter::serve::start(app.data.config())
        .await
        .expect("second replica");
    let other_base = format!("http://{}", other.addr);
    let (id, _) = hook(&app, "https://crm.example.com/hook", &["license.created"]).await;
    let patch = |base: String, body: Value| {
        let (http, id) = (app.http.clone(), id.clone());
        async move {
            let res = http
                .patch(format!("{base}/api/webhooks/{id}"))
                .basic_auth(common::ADMIN.0, Some(common::ADMIN.1))
                .json(&body)
                .send()
                .await
                .expect("patch");
            res.status().as_u16()
        }
    };
    for round in 0..10 {
        let types = if round % 2 == 0 {
            json!(["license.created", "license.revoked"])
        } else {
            json!(["license.created", "license.expiring"])
        };
        let (a, b) = tokio::join!(
            patch(
                app.base.clone(),
                json!({"description": format!("round {round}")})
            ),
            patch(other_base.clone(), json!({"event_types": types.clone()})),
        );
        assert_eq!((a, b), (200, 200), "round {round}");
        let (_, w) = app.get(&format!("/api/webhooks/{id}")).await;
        assert_eq!(w["description"], format!("round {round}"), "{w}");
        assert_eq!(w["event_types"], types, "{w}");
    }
    let (_, audit) = app
        .get(&format!(
            "/api/audit?action=webhook.update&target_id={id}&per_page=100"
        ))
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(20), "{audit}");
    // The subscriptions follow the last change: a revocation is not sent.
    let rx = Receiver::start().await;
    let (s, _) = app
        .patch(&format!("/api/webhooks/{id}"), json!({"url": rx.url}))
        .await;
    assert_eq!(s, 200);
    let l = app.license(json!({})).await;
    let lid = l["lid"].as_str().expect("lid");
    app.post(&format!("/api/licenses/{lid}/revoke"), json!({}))
        .await;
    deliver(&app).await;
    assert_eq!(rx.kinds(), ["license.created"]);
    other.stop().await.expect("stops");
    app.stop().await;
}

/// `token.renewed` is opt-in: recorded for renewals while an endpoint
/// subscribes, not before.
async fn renewals_are_announced_only_to_subscribers(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let (id, _) = hook(&app, &rx.url, &["license.created"]).await;
    let l = app.license(json!({})).await;
    let lid = l["lid"].as_str().expect("lid");
    let (_, body) = app.issue(lid, "https://a.example.com/").await;
    let token = body["token"].as_str().expect("token").to_string();
    let (s, body) = app.renew(&token, None).await;
    assert_eq!(s, 200, "{body}");
    let renewed = body["token"].as_str().expect("token").to_string();
    let (s, _) = app
        .patch(
            &format!("/api/webhooks/{id}"),
            json!({"event_types": ["token.renewed"]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = app.renew(&renewed, None).await;
    assert_eq!(s, 200, "{body}");
    deliver(&app).await;
    assert_eq!(rx.kinds(), ["license.created", "token.renewed"]);
    let data = rx
        .got()
        .into_iter()
        .find(|g| g.kind() == "token.renewed")
        .expect("renewed")
        .json()["data"]
        .clone();
    assert_eq!(data["reason"], "renew");
    assert_eq!(data["lid"], lid);
    assert_eq!(data["instance"]["url"], "https://a.example.com/");
    let new_jti = charter_token::insecure_decode(body["token"].as_str().expect("token"))
        .expect("decode")
        .1
        .jti;
    assert_eq!(data["jti"], new_jti);
    app.stop().await;
}

both_stores!(
    renewals_are_announced_only_to_subscribers,
    racing_changes_of_an_endpoint_keep_both,
    old_events_are_pruned_unless_a_delivery_waits,
    events_are_recorded_with_their_change_and_delivered_signed,
    only_admins_manage_webhooks_and_bad_input_is_named,
    private_endpoints_are_refused_by_default,
    failing_deliveries_are_retried_then_fail_and_disable_the_endpoint,
    a_rotated_secret_signs_beside_the_old_one,
    expiries_are_announced_once_by_racing_replicas,
    usage_over_the_included_count_sets_over_limit_and_clears_it,
);
