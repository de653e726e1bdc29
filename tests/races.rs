//! Several writers at once, as a vendor's portal sees them: Editors
//! changing a license's terms, an Admin suspending and resuming it, an
//! instance renewing, someone turning push on and off, new instances being
//! bound, the push job running — and in the middle of it all, a
//! revocation. Afterwards every promise holds: revoked stays revoked and is
//! listed, each change that was answered has exactly one audit event,
//! `push_enabled` is the last value written, and every instance bound with
//! credentials has them. Both stores.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Auth, Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

both_stores!(
    a_revocation_holds_against_every_other_writer,
    a_stale_if_match_is_refused_and_a_patch_without_one_applies
);

/// How long the writers race.
const RACE: Duration = Duration::from_millis(2500);
/// When the revocation goes in.
const REVOKE_AFTER: Duration = Duration::from_millis(1200);

/// How many events of `action` the audit trail has for `target`.
async fn events(app: &TestApp, action: &str, target: &str) -> u64 {
    let (s, page) = app
        .get(&format!(
            "/api/audit?action={action}&target_id={target}&per_page=1"
        ))
        .await;
    assert_eq!(s, 200, "{page}");
    page["total"].as_u64().expect("total")
}

async fn a_revocation_holds_against_every_other_writer(backend: Backend) {
    let app = Arc::new(TestApp::start(backend).await);
    let license = app.license(json!({"max_instances": 1000})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (_, editor) = app.service_account("race-editor", "Editor").await;
    let editor = Auth::Bearer(editor);

    // The instance that renews and whose push is toggled. Its URL has no
    // server behind it: pushes fail and back off, as in life.
    let (s, inst) = app
        .post(
            &format!("/api/licenses/{lid}/instances"),
            json!({"url": "http://127.0.0.1:9/renewer/", "push_enabled": true,
                   "credentials": {"type": "bearer", "token": "push-secret"}}),
        )
        .await;
    assert_eq!(s, 201, "{inst}");
    let iid = inst["id"].as_str().expect("id").to_string();
    let (s, issued) = app.issue(&lid, "http://127.0.0.1:9/renewer/").await;
    assert_eq!(s, 201, "{issued}");
    let first_token = issued["token"].as_str().expect("token").to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let lpath = format!("/api/licenses/{lid}");
    let ipath = format!("/api/licenses/{lid}/instances/{iid}");
    let mut tasks = tokio::task::JoinSet::new();

    // Eight Editors changing the terms.
    let patched = Arc::new(AtomicU64::new(0));
    for n in 0..8i64 {
        let (app, stop, patched, editor, lpath) = (
            app.clone(),
            stop.clone(),
            patched.clone(),
            editor.clone(),
            lpath.clone(),
        );
        tasks.spawn(async move {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let body = json!({"included_users": n * 1000 + k});
                let (s, got) = app.call(&editor, Method::PATCH, &lpath, Some(body)).await;
                match s {
                    200 => {
                        patched.fetch_add(1, Ordering::Relaxed);
                    }
                    409 => assert!(got.to_string().contains("revoked"), "{got}"),
                    _ => panic!("PATCH license: {s} {got}"),
                }
            }
        });
    }

    // An Admin suspending and resuming.
    let toggled_status = Arc::new(AtomicU64::new(0));
    {
        let (app, stop, toggled_status, lpath) = (
            app.clone(),
            stop.clone(),
            toggled_status.clone(),
            lpath.clone(),
        );
        tasks.spawn(async move {
            let mut suspend = true;
            while !stop.load(Ordering::Relaxed) {
                let what = if suspend { "suspend" } else { "resume" };
                let (s, got) = app.post(&format!("{lpath}/{what}"), json!({})).await;
                match s {
                    200 => {
                        toggled_status.fetch_add(1, Ordering::Relaxed);
                        suspend = !suspend;
                    }
                    409 => assert!(got.to_string().contains("revoked"), "{got}"),
                    _ => panic!("{what}: {s} {got}"),
                }
            }
        });
    }

    // Push switched on and off; the last value answered 200 is remembered.
    let push_written = Arc::new(std::sync::Mutex::new((0u64, true)));
    {
        let (app, stop, push_written, editor, ipath) = (
            app.clone(),
            stop.clone(),
            push_written.clone(),
            editor.clone(),
            ipath.clone(),
        );
        tasks.spawn(async move {
            let mut on = false;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"push_enabled": on});
                let (s, got) = app.call(&editor, Method::PATCH, &ipath, Some(body)).await;
                assert_eq!(s, 200, "PATCH instance: {got}");
                assert_eq!(got["push_enabled"], on, "{got}");
                if let Ok(mut w) = push_written.lock() {
                    *w = (w.0 + 1, on);
                }
                on = !on;
            }
        });
    }

    // The instance renewing with its newest token.
    let renewed = Arc::new(AtomicU64::new(0));
    {
        let (app, stop, renewed) = (app.clone(), stop.clone(), renewed.clone());
        tasks.spawn(async move {
            let mut token = first_token;
            while !stop.load(Ordering::Relaxed) {
                let (s, got) = app
                    .renew(&token, Some(json!({"usage": {"users": 3}})))
                    .await;
                match s {
                    200 => {
                        renewed.fetch_add(1, Ordering::Relaxed);
                        token = got["token"].as_str().expect("token").to_string();
                    }
                    403 => {
                        let m = got["message"].as_str().unwrap_or_default();
                        assert!(m.contains("suspended") || m.contains("revoked"), "{got}");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    429 => tokio::time::sleep(Duration::from_millis(20)).await,
                    _ => panic!("renew: {s} {got}"),
                }
            }
        });
    }

    // New instances bound with their credentials.
    let bound = Arc::new(AtomicU64::new(0));
    {
        let (app, stop, bound, lid) = (app.clone(), stop.clone(), bound.clone(), lid.clone());
        tasks.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({"url": format!("http://127.0.0.1:9/bound-{n}/"),
                    "push_enabled": n % 2 == 0,
                    "credentials": {"type": "basic", "username": "u", "password": "p"}});
                let (s, got) = app
                    .post(&format!("/api/licenses/{lid}/instances"), body)
                    .await;
                match s {
                    201 => {
                        assert_eq!(got["has_credentials"], true, "{got}");
                        bound.fetch_add(1, Ordering::Relaxed);
                    }
                    409 => assert!(got.to_string().contains("revoked"), "{got}"),
                    _ => panic!("bind: {s} {got}"),
                }
            }
        });
    }

    // The push job, as the scheduler runs it.
    {
        let (app, stop) = (app.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = charter::licensing::push::run_once(app.state()).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    tokio::time::sleep(REVOKE_AFTER).await;
    let (s, revoked) = app.post(&format!("{lpath}/revoke"), json!({})).await;
    assert_eq!(s, 200, "{revoked}");
    assert_eq!(revoked["state"], "revoked", "{revoked}");
    tokio::time::sleep(RACE.saturating_sub(REVOKE_AFTER)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }

    // Revoked stays revoked, and is listed.
    let (_, l) = app.get(&lpath).await;
    assert_eq!(l["state"], "revoked", "{l}");
    let (_, list) = app.get("/api/revocations").await;
    assert!(
        list["revoked"]
            .as_array()
            .expect("revoked")
            .iter()
            .any(|v| v == lid.as_str()),
        "{list}"
    );
    // Exactly one event per answered change.
    let n = patched.load(Ordering::Relaxed);
    assert!(n > 0, "some PATCHes went through before the revocation");
    assert_eq!(
        events(&app, "license.update", &lid).await,
        n,
        "license.update"
    );
    let suspends = events(&app, "license.suspend", &lid).await;
    let resumes = events(&app, "license.resume", &lid).await;
    assert_eq!(
        suspends + resumes,
        toggled_status.load(Ordering::Relaxed),
        "suspend/resume"
    );
    assert_eq!(events(&app, "license.revoke", &lid).await, 1);
    let (writes, last) = *push_written.lock().expect("lock");
    assert_eq!(events(&app, "instance.update", &iid).await, writes);
    // Renewals and push runs never undo a push setting.
    let (_, inst) = app.get(&ipath).await;
    assert_eq!(inst["push_enabled"], last, "{inst}");
    // Every instance was bound with its credentials, and the revocation
    // queued a removal for each push-enabled one.
    let (_, all) = app.get(&format!("/api/licenses/{lid}/instances")).await;
    let all = all.as_array().expect("instances");
    assert_eq!(all.len() as u64, bound.load(Ordering::Relaxed) + 1);
    for i in all {
        assert_eq!(i["has_credentials"], true, "{i}");
    }
    assert!(renewed.load(Ordering::Relaxed) > 0, "the instance renewed");
    // The revoked license's instances no longer renew.
    let (s, _) = app.issue(&lid, "http://127.0.0.1:9/late/").await;
    assert_eq!(s, 409);
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("a writer still holds the app"),
    }
}

/// Two issuers on one PostgreSQL, as the chart runs them: Editors PATCH the
/// license through both, one replica suspends and resumes it, the other
/// revokes it. Nothing in one process orders them; the versions and the
/// revocation rules in the SQL must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_holds_across_replicas() {
    let app = Arc::new(TestApp::start(Backend::Postgres).await);
    let other = charter::serve::start(app.data.config())
        .await
        .expect("second replica");
    let bases = [app.base.clone(), format!("http://{}", other.addr)];
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (_, editor) = app.service_account("replica-editor", "Editor").await;
    let stop = Arc::new(AtomicBool::new(false));
    let patched = Arc::new(AtomicU64::new(0));
    let toggled = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..6i64 {
        let base = bases[(n % 2) as usize].clone();
        let (stop, patched, editor, lid) =
            (stop.clone(), patched.clone(), editor.clone(), lid.clone());
        tasks.spawn(async move {
            let http = reqwest::Client::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let (s, got) = common::send(
                    http.patch(format!("{base}/api/licenses/{lid}"))
                        .bearer_auth(&editor)
                        .json(&json!({"included_users": n * 1000 + k})),
                )
                .await;
                match s {
                    200 => {
                        patched.fetch_add(1, Ordering::Relaxed);
                    }
                    409 => assert!(got.to_string().contains("revoked"), "{got}"),
                    _ => panic!("PATCH via {base}: {s} {got}"),
                }
            }
        });
    }
    {
        let (base, stop, toggled, lid) =
            (bases[0].clone(), stop.clone(), toggled.clone(), lid.clone());
        tasks.spawn(async move {
            let http = reqwest::Client::new();
            let mut suspend = true;
            while !stop.load(Ordering::Relaxed) {
                let what = if suspend { "suspend" } else { "resume" };
                let (s, got) = common::send(
                    http.post(format!("{base}/api/licenses/{lid}/{what}"))
                        .basic_auth(common::ADMIN.0, Some(common::ADMIN.1)),
                )
                .await;
                match s {
                    200 => {
                        toggled.fetch_add(1, Ordering::Relaxed);
                        suspend = !suspend;
                    }
                    409 => assert!(got.to_string().contains("revoked"), "{got}"),
                    _ => panic!("{what}: {s} {got}"),
                }
            }
        });
    }
    tokio::time::sleep(REVOKE_AFTER).await;
    let (s, revoked) = common::send(
        reqwest::Client::new()
            .post(format!("{}/api/licenses/{lid}/revoke", bases[1]))
            .basic_auth(common::ADMIN.0, Some(common::ADMIN.1)),
    )
    .await;
    assert_eq!(
        (s, &revoked["state"]),
        (200, &json!("revoked")),
        "{revoked}"
    );
    tokio::time::sleep(RACE.saturating_sub(REVOKE_AFTER)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
    for base in &bases {
        let (_, l) = common::send(
            reqwest::Client::new()
                .get(format!("{base}/api/licenses/{lid}"))
                .basic_auth(common::ADMIN.0, Some(common::ADMIN.1)),
        )
        .await;
        assert_eq!(l["state"], "revoked", "via {base}: {l}");
    }
    let n = patched.load(Ordering::Relaxed);
    assert!(n > 0, "some PATCHes went through before the revocation");
    assert_eq!(events(&app, "license.update", &lid).await, n);
    let changes =
        events(&app, "license.suspend", &lid).await + events(&app, "license.resume", &lid).await;
    assert_eq!(changes, toggled.load(Ordering::Relaxed));
    assert_eq!(events(&app, "license.revoke", &lid).await, 1);
    other.stop().await.expect("second replica stops");
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("a writer still holds the app"),
    }
}

async fn a_stale_if_match_is_refused_and_a_patch_without_one_applies(backend: Backend) {
    let app = TestApp::start(backend).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    let path = format!("/api/licenses/{lid}");
    let etag = |res: &reqwest::Response| {
        res.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .expect("ETag")
            .to_string()
    };
    let res = app.admin(Method::GET, &path).send().await.expect("GET");
    let first = etag(&res);

    // Someone else changes it: the first copy is stale.
    let (s, _) = app.patch(&path, json!({"included_users": 11})).await;
    assert_eq!(s, 200);
    let res = app
        .admin(Method::PATCH, &path)
        .header("if-match", &first)
        .json(&json!({"included_users": 12}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(res.status().as_u16(), 412);
    let body: Value = res.json().await.expect("JSON");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("If-Match"),
        "{body}"
    );
    let (_, now) = app.get(&path).await;
    assert_eq!(now["included_users"], 11, "a refused PATCH changes nothing");

    // With the current ETag it applies, and answers the next one.
    let res = app.admin(Method::GET, &path).send().await.expect("GET");
    let current = etag(&res);
    assert_ne!(current, first);
    let res = app
        .admin(Method::PATCH, &path)
        .header("if-match", &current)
        .json(&json!({"included_users": 12}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(res.status().as_u16(), 200);
    let next = etag(&res);
    assert_ne!(next, current);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["included_users"], 12);

    // Accounts, products and instances carry ETags too.
    let account = license["account_id"].as_str().expect("account");
    let inst_path = {
        let (s, i) = app
            .post(
                &format!("/api/licenses/{lid}/instances"),
                json!({"url": "https://grafana.example.com/"}),
            )
            .await;
        assert_eq!(s, 201, "{i}");
        format!(
            "/api/licenses/{lid}/instances/{}",
            i["id"].as_str().expect("id")
        )
    };
    for (path, change) in [
        (
            format!("/api/accounts/{account}"),
            json!({"company": "Acme Two"}),
        ),
        (
            "/api/products/grafana-enterprise".to_string(),
            json!({"name": "Grafana Enterprise 2"}),
        ),
        (inst_path, json!({"dialect": "consul"})),
    ] {
        let res = app.admin(Method::GET, &path).send().await.expect("GET");
        let tag = etag(&res);
        let (s, _) = app.patch(&path, change.clone()).await;
        assert_eq!(s, 200, "{path} without If-Match");
        let res = app
            .admin(Method::PATCH, &path)
            .header("if-match", &tag)
            .json(&change)
            .send()
            .await
            .expect("PATCH");
        assert_eq!(res.status().as_u16(), 412, "{path} with a stale If-Match");
    }

    // The audit says what changed.
    let (_, page) = app
        .get(&format!("/api/audit?action=license.update&target_id={lid}"))
        .await;
    let newest = &page["items"][0];
    assert_eq!(
        newest["detail"]["changes"]["included_users"],
        json!({"old": 11, "new": 12}),
        "{newest}"
    );
    app.stop().await;
}
