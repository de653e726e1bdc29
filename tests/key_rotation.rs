//! Issue 16: signing keys in the store, rotated live. A rotation publishes
//! the new key before it signs, the old key verifies until its tokens are
//! past their renewal grace, an emergency rotation refuses the old key's
//! tokens at once; keys of a keys directory are imported with their kids;
//! a missing or wrong master key stops the start-up with the file named;
//! no private key leaves the store unsealed.

mod common;

use base64::Engine;
use common::procs::eventually;
use common::{Auth, Backend, Data, TestApp, kid_of};
use serde_json::{Value, json};

async fn jwks_kids(app: &TestApp) -> (Vec<String>, String) {
    let res = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks");
    let cache = res
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = res.json().await.expect("json");
    let mut kids: Vec<String> = body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect();
    kids.sort();
    (kids, cache)
}

/// kid → state, from `GET /api/keys`.
async fn states(app: &TestApp) -> Vec<(String, String)> {
    let (s, keys) = app.get("/api/keys").await;
    assert_eq!(s, 200, "{keys}");
    let text = keys.to_string();
    assert!(
        !text.contains("PRIVATE") && !text.contains("sealed"),
        "{text}"
    );
    keys.as_array()
        .expect("list")
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().expect("kid").to_string(),
                k["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

fn state_of(states: &[(String, String)], kid: &str) -> Option<String> {
    states
        .iter()
        .find(|(k, _)| k == kid)
        .map(|(_, s)| s.clone())
}

/// The whole life of a key through the API and the schedule: next (in the
/// JWKS, not signing) → current → previous (its tokens renew) → retired
/// once its last token is past `exp` + grace.
async fn a_rotated_key_is_published_first_then_signs_then_retires(backend: Backend) {
    let app = TestApp::start_with(backend, |a| {
        a.key_prepublish_hours = Some(3.0 / 3600.0);
        a.key_poll_secs = Some(1);
        a.renew_grace_days = Some(0);
    })
    .await;
    let initial = states(&app).await;
    assert_eq!(initial.len(), 1, "{initial:?}");
    let (old, state) = initial[0].clone();
    assert_eq!(state, "current");
    // The JWKS may be cached for a quarter of the prepublication at most.
    let (kids, cache) = jwks_kids(&app).await;
    assert_eq!(kids, std::slice::from_ref(&old));
    assert_eq!(cache, "public, max-age=0");

    // Tokens of the old key, under a license that ends soon (so that they
    // expire, and the old key can retire, within the test).
    let expires = charter_token::now() + 12;
    let license = app
        .license(
            json!({"expires_at": charter::domain::rfc3339::format(expires), "max_instances": 5}),
        )
        .await;
    let lid = license["lid"].as_str().expect("lid");
    let (s, first) = app.issue(lid, "https://a.example.com/").await;
    assert_eq!(s, 201, "{first}");
    let first = first["token"].as_str().expect("token").to_string();
    assert_eq!(kid_of(&first), old);

    // Only an Admin may rotate; every role may list.
    let (_, viewer) = app.service_account("keys-viewer", "Viewer").await;
    let (_, editor) = app.service_account("keys-editor", "Editor").await;
    let viewer = Auth::Bearer(viewer);
    let (s, body) = app
        .call(&viewer, reqwest::Method::GET, "/api/keys", None)
        .await;
    assert_eq!(s, 200, "{body}");
    for who in [&viewer, &Auth::Bearer(editor)] {
        let (s, body) = app
            .call(who, reqwest::Method::POST, "/api/keys/rotate", None)
            .await;
        assert_eq!(s, 403, "{body}");
        assert!(
            body["message"].to_string().contains("keys:rotate"),
            "{body}"
        );
    }

    let (s, rotated) = app.post("/api/keys/rotate", json!(null)).await;
    assert_eq!(s, 201, "{rotated}");
    let new = rotated["key"]["kid"].as_str().expect("kid").to_string();
    assert_eq!(rotated["key"]["state"], "next");
    assert_eq!(rotated["replaces"], old.as_str());
    assert!(
        rotated["message"]
            .as_str()
            .is_some_and(|m| m.contains("signs from"))
    );
    // Published at once, not signing yet.
    let (kids, _) = jwks_kids(&app).await;
    assert!(kids.contains(&new) && kids.contains(&old), "{kids:?}");
    let (s, body) = app.issue(lid, "https://b.example.com/").await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        kid_of(body["token"].as_str().expect("token")),
        old,
        "the new key waits"
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for series in [
        "charter_signing_keys{state=\"next\"} 1",
        "charter_signing_keys{state=\"current\"} 1",
        "charter_signing_keys{state=\"retired\"} 0",
        "charter_signing_key_age_seconds ",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    // A second rotation while one waits is a conflict.
    let (s, body) = app.post("/api/keys/rotate", json!(null)).await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(&new)),
        "{body}"
    );

    // After the prepublication the new key signs; the old one verifies.
    assert!(
        eventually(10, || async {
            let (_, t) = app.issue(lid, "https://b.example.com/").await;
            t["token"].as_str().is_some_and(|t| kid_of(t) == new)
        })
        .await,
        "the new key signs after its prepublication"
    );
    let now = states(&app).await;
    assert_eq!(state_of(&now, &new).as_deref(), Some("current"));
    assert_eq!(state_of(&now, &old).as_deref(), Some("previous"));
    let (s, renewed) = app.renew(&first, None).await;
    assert_eq!(s, 200, "a token of the previous key renews: {renewed}");
    assert_eq!(kid_of(renewed["token"].as_str().expect("token")), new);

    // Retired once its tokens are past exp (+ 0 days of grace).
    assert!(
        eventually(25, || async {
            state_of(&states(&app).await, &old).as_deref() == Some("retired")
        })
        .await,
        "the previous key retires after its last token expired"
    );
    assert!(
        charter_token::now() >= expires,
        "not before its tokens expired"
    );
    // The JWKS follows the key set within a poll.
    assert!(
        eventually(3, || async { jwks_kids(&app).await.0 == [new.clone()] }).await,
        "the retired key is no longer published"
    );
    let (_, audit) = app.get("/api/audit?target_type=signing_key").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["key.import", "key.rotate", "key.activate", "key.retire"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    app.stop().await;
}

/// A compromised key: the new key signs at once, the old one is retired
/// at once and its tokens renew with 401.
async fn an_emergency_rotation_refuses_the_old_keys_tokens(backend: Backend) {
    let app = TestApp::start(backend).await;
    let old = states(&app).await[0].0.clone();
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (_, issued) = app.issue(lid, "https://a.example.com/").await;
    let stolen = issued["token"].as_str().expect("token").to_string();
    assert_eq!(kid_of(&stolen), old);

    let (s, rotated) = app
        .post("/api/keys/rotate?immediate=true", json!(null))
        .await;
    assert_eq!(s, 201, "{rotated}");
    let new = rotated["key"]["kid"].as_str().expect("kid").to_string();
    assert_eq!(rotated["key"]["state"], "current");
    assert!(
        rotated["message"]
            .as_str()
            .is_some_and(|m| m.contains("401")),
        "the answer says what happens to the old tokens: {rotated}"
    );
    let now = states(&app).await;
    assert_eq!(state_of(&now, &old).as_deref(), Some("retired"));
    assert_eq!(jwks_kids(&app).await.0, std::slice::from_ref(&new));
    let (s, refused) = app.renew(&stolen, None).await;
    assert_eq!(s, 401, "{refused}");
    let (s, fresh) = app.issue(lid, "https://a.example.com/").await;
    assert_eq!(s, 201, "{fresh}");
    let fresh = fresh["token"].as_str().expect("token").to_string();
    assert_eq!(kid_of(&fresh), new);
    let (s, body) = app.renew(&fresh, None).await;
    assert_eq!(s, 200, "{body}");
    app.stop().await;
}

/// Today's deployments: the keys directory's keys are imported with their
/// kids on the first start; their tokens renew; afterwards the directory
/// is not needed (the key set is in the database).
async fn keys_of_a_keys_directory_are_imported_with_their_kids(backend: Backend) {
    let data = Data::new(backend).await;
    let dir = data.keys_dir();
    let before = charter_token::Keyring::load(&dir).expect("keys");
    let kid = before.signing_key().kid().to_string();
    // A second, verifying key, as `charter keys rotate --dir` left it.
    let extra =
        charter_token::keys::generate(&dir, charter_token::KeyAlg::EdDsa, 0, false).expect("key");
    let app = TestApp::start_on(data).await;
    let listed = states(&app).await;
    assert_eq!(
        state_of(&listed, &kid).as_deref(),
        Some("current"),
        "{listed:?}"
    );
    assert_eq!(state_of(&listed, &extra.kid).as_deref(), Some("previous"));
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid");
    let (_, issued) = app.issue(lid, "https://a.example.com/").await;
    let token = issued["token"].as_str().expect("token").to_string();
    assert_eq!(kid_of(&token), kid, "the kid is unchanged");

    // The directory's key files go (e.g. the Secret is no longer mounted):
    // the key set is the database's, the old token still renews.
    for entry in std::fs::read_dir(&dir).expect("dir").filter_map(Result::ok) {
        if entry.path().extension().is_some_and(|e| e == "pem") {
            std::fs::remove_file(entry.path()).expect("rm");
        }
    }
    let app = app.restart().await;
    let (s, renewed) = app.renew(&token, None).await;
    assert_eq!(s, 200, "{renewed}");
    assert_eq!(kid_of(renewed["token"].as_str().expect("token")), kid);
    app.stop().await;
}

/// The master key missing or wrong: the start fails naming the file, and
/// nothing is overwritten (neither the file nor the key set).
async fn a_missing_or_wrong_master_key_stops_the_start(backend: Backend) {
    let app = TestApp::start(backend).await;
    let before = states(&app).await;
    let data = {
        let mut app = app;
        if let Some(s) = app.server.take() {
            s.stop().await.expect("stops");
        }
        app.data
    };
    let master = data.keys_dir().join("master.key");
    let original = std::fs::read(&master).expect("master key made on first start");

    std::fs::remove_file(&master).expect("rm");
    let err = match charter::serve::start(data.config()).await {
        Ok(_) => panic!("started without its master key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&master.display().to_string()) && err.contains("not found"),
        "{err}"
    );
    assert!(
        !master.exists(),
        "no new master key was made over the key set"
    );

    let mut other = [0u8; 32];
    aws_lc_rs::rand::fill(&mut other).expect("rand");
    std::fs::write(&master, other).expect("write");
    let err = match charter::serve::start(data.config()).await {
        Ok(_) => panic!("started with another master key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&master.display().to_string()) && err.contains("does not open"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&master).expect("read"),
        other,
        "left as it was"
    );

    // The right key back (as base64 this time, as a Secret may hold it).
    std::fs::write(
        &master,
        base64::engine::general_purpose::STANDARD.encode(&original),
    )
    .expect("write");
    let app = TestApp::start_on(data).await;
    assert_eq!(states(&app).await, before, "the key set is intact");
    app.stop().await;
}

/// `--key-rotation-days`: the schedule alone takes a key through next →
/// current → previous → retired, and the next one after it, on time.
async fn scheduled_rotation_runs_the_whole_cycle(backend: Backend) {
    // Rotation every 8 s, a new key published 3 s before it signs.
    let app = TestApp::start_with(backend, |a| {
        a.key_rotation_days = Some(8.0 / 86_400.0);
        a.key_prepublish_hours = Some(3.0 / 3600.0);
        a.key_poll_secs = Some(1);
        a.renew_grace_days = Some(0);
    })
    .await;
    let first = states(&app).await[0].0.clone();
    let expires = charter_token::now() + 10;
    let license = app
        .license(
            json!({"expires_at": charter::domain::rfc3339::format(expires), "max_instances": 5}),
        )
        .await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (_, issued) = app.issue(&lid, "https://a.example.com/").await;
    assert_eq!(kid_of(issued["token"].as_str().expect("token")), first);
    // Every state of the first key, seen in order, and a second key's.
    let mut seen: Vec<String> = Vec::new();
    let mut second = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let mut done = false;
    while !done && std::time::Instant::now() < deadline {
        let now = states(&app).await;
        if let Some(s) = state_of(&now, &first)
            && seen.last() != Some(&s)
        {
            seen.push(s);
        }
        if second.is_none() {
            second = now
                .iter()
                .find(|(k, _)| *k != first)
                .map(|(k, _)| k.clone());
        }
        done = seen.last().map(String::as_str) == Some("retired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(done, "the first key retires: {seen:?}");
    assert_eq!(seen, ["current", "previous", "retired"]);
    let second = second.expect("a second key");
    let now = states(&app).await;
    assert_eq!(
        state_of(&now, &second).as_deref(),
        Some("current"),
        "{now:?}"
    );
    let (kids, _) = jwks_kids(&app).await;
    assert!(!kids.contains(&first), "{kids:?}");
    // And the schedule goes on: the second key gets its successor.
    assert!(
        eventually(15, || async { states(&app).await.len() >= 3 }).await,
        "a third key is published before the second one's term ends"
    );
    app.stop().await;
}

/// Rotations racing on two replicas of one database: exactly one next key
/// is made, the other caller learns so (409), and an emergency rotation
/// racing another leaves exactly one current key.
async fn racing_rotations_leave_one_next_and_one_current_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    // A second replica on the same database and master key.
    let other = charter::serve::start(app.data.config())
        .await
        .expect("second replica");
    let other_base = format!("http://{}", other.addr);
    let rotate = |base: String, query: &'static str| {
        let http = app.http.clone();
        async move {
            let res = http
                .post(format!("{base}/api/keys/rotate{query}"))
                .basic_auth(common::ADMIN.0, Some(common::ADMIN.1))
                .send()
                .await
                .expect("rotate");
            res.status().as_u16()
        }
    };
    let (a, b) = tokio::join!(rotate(app.base.clone(), ""), rotate(other_base.clone(), ""));
    let mut statuses = [a, b];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    let next: Vec<_> = states(&app)
        .await
        .into_iter()
        .filter(|(_, s)| s == "next")
        .collect();
    assert_eq!(next.len(), 1, "{next:?}");
    let (a, b) = tokio::join!(
        rotate(app.base.clone(), "?immediate=true"),
        rotate(other_base, "?immediate=true")
    );
    assert!(a == 201 || b == 201, "{a} {b}");
    assert!([a, b].iter().all(|s| *s == 201 || *s == 409), "{a} {b}");
    let now = states(&app).await;
    assert_eq!(
        now.iter().filter(|(_, s)| s == "current").count(),
        1,
        "{now:?}"
    );
    other.stop().await.expect("stops");
    app.stop().await;
}

both_stores!(
    racing_rotations_leave_one_next_and_one_current_key,
    scheduled_rotation_runs_the_whole_cycle,
    a_rotated_key_is_published_first_then_signs_then_retires,
    an_emergency_rotation_refuses_the_old_keys_tokens,
    keys_of_a_keys_directory_are_imported_with_their_kids,
    a_missing_or_wrong_master_key_stops_the_start,
);
