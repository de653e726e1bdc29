//! Access control end to end, on both stores: the permission matrix, what
//! is refused with 401, service accounts and their tokens, Grafana's legacy
//! API keys exactly as the seed has them, the audit trail, the limit on
//! failed authentication, and logs that never hold a secret.

mod common;

#[path = "access/audit.rs"]
mod audit;
#[path = "access/logs.rs"]
mod logs;
#[path = "access/matrix.rs"]
mod matrix;

use std::time::Duration;

use audit::{audit_trail, failed_auth_rate_limit};
use common::{Auth, Backend, TestApp};
use logs::logs_hold_no_secrets;
use matrix::permission_matrix;
use reqwest::Method;
use serde_json::{Value, json};

both_stores!(
    permission_matrix,
    refused_credentials,
    service_accounts,
    legacy_api_keys,
    audit_trail,
    failed_auth_rate_limit,
    logs_hold_no_secrets,
);

fn message(v: &Value) -> &str {
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {v}"))
}

/// Expired, deleted, disabled, unknown or malformed credentials: 401, with
/// one message that does not say which part was wrong.
async fn refused_credentials(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (id, key) = app.service_account("ci", "Editor").await;
    let bearer = Auth::Bearer(key.clone());
    let (s, _) = app.call(&bearer, Method::GET, "/api/licenses", None).await;
    assert_eq!(s, 200);

    let unauthorized = json!({"message": "invalid or missing credentials"});
    let check = |what: &'static str, (s, body): (u16, Value)| {
        assert_eq!((s, &body), (401, &unauthorized), "{what}");
    };
    check(
        "none",
        app.call(&Auth::None, Method::GET, "/api/licenses", None)
            .await,
    );

    // A token that lives one second is refused once it has expired.
    let (s, short) = app
        .post(
            &format!("/api/serviceaccounts/{id}/tokens"),
            json!({"name": "short", "secondsToLive": 1}),
        )
        .await;
    assert_eq!(s, 200, "{short}");
    let short = Auth::Bearer(short["key"].as_str().expect("key").into());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    check(
        "expired",
        app.call(&short, Method::GET, "/api/licenses", None).await,
    );
    let (_, tokens) = app.get(&format!("/api/serviceaccounts/{id}/tokens")).await;
    let listed = tokens
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "short"))
        .expect("listed");
    assert_eq!(listed["hasExpired"], true);
    assert_eq!(listed["secondsUntilExpiration"], 0);

    // A disabled account's tokens are refused, and work again once enabled.
    let (s, _) = app
        .patch(
            &format!("/api/serviceaccounts/{id}"),
            json!({"isDisabled": true}),
        )
        .await;
    assert_eq!(s, 200);
    check(
        "disabled",
        app.call(&bearer, Method::GET, "/api/licenses", None).await,
    );
    let (s, _) = app
        .patch(
            &format!("/api/serviceaccounts/{id}"),
            json!({"isDisabled": false}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app.call(&bearer, Method::GET, "/api/licenses", None).await;
    assert_eq!(s, 200, "enabled again");

    // Unknown and malformed credentials, wrong user or password: one answer.
    let forged = Auth::Bearer(format!("chr_sa_{}", "A".repeat(43)));
    check(
        "unknown token",
        app.call(&forged, Method::GET, "/api/licenses", None).await,
    );
    let wrong_user = Auth::Basic("root".into(), common::ADMIN.1.into());
    check(
        "wrong user",
        app.call(&wrong_user, Method::GET, "/api/licenses", None)
            .await,
    );
    let wrong_password = Auth::Basic(common::ADMIN.0.into(), "nope-nope".into());
    check(
        "wrong password",
        app.call(&wrong_password, Method::GET, "/api/licenses", None)
            .await,
    );

    // A deleted token is refused at once (the last: it may reach the limit).
    let (_, tokens) = app.get(&format!("/api/serviceaccounts/{id}/tokens")).await;
    let tid = tokens[0]["id"].as_i64().expect("id");
    let (s, body) = app
        .delete(&format!("/api/serviceaccounts/{id}/tokens/{tid}"))
        .await;
    assert_eq!((s, message(&body)), (200, "Service account token deleted"));
    check(
        "deleted",
        app.call(&bearer, Method::GET, "/api/licenses", None).await,
    );
    app.stop().await;
}

/// Grafana's service account API: create, search, get, update, delete,
/// tokens; the key is shown once and never again.
async fn service_accounts(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (s, sa) = app
        .post(
            "/api/serviceaccounts",
            json!({"name": "Grafana Sync", "role": "Editor"}),
        )
        .await;
    assert_eq!(s, 201, "{sa}");
    let id = sa["id"].as_i64().expect("id");
    assert_eq!(
        (
            &sa["name"],
            &sa["login"],
            &sa["role"],
            &sa["isDisabled"],
            &sa["tokens"],
            &sa["orgId"]
        ),
        (
            &json!("Grafana Sync"),
            &json!("sa-grafana-sync"),
            &json!("Editor"),
            &json!(false),
            &json!(0),
            &json!(1)
        )
    );
    let (s, body) = app
        .post("/api/serviceaccounts", json!({"name": "Grafana Sync"}))
        .await;
    assert_eq!(s, 409, "{body}");
    for (bad, field) in [
        (json!({"name": "x", "role": "Root"}), "role"),
        (json!({"name": " "}), "name"),
        (json!({"role": "Viewer"}), "name"),
        (json!({"name": 3}), "name"),
    ] {
        let (s, body) = app.post("/api/serviceaccounts", bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(message(&body).contains(field), "{bad}: {body}");
    }
    for name in ["alpha", "beta", "gamma"] {
        let (s, _) = app
            .post("/api/serviceaccounts", json!({"name": name}))
            .await;
        assert_eq!(s, 201);
    }
    let (s, page) = app
        .get("/api/serviceaccounts/search?perpage=2&page=1")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (&page["totalCount"], &page["page"], &page["perPage"]),
        (&json!(4), &json!(1), &json!(2))
    );
    assert_eq!(page["serviceAccounts"].as_array().map(Vec::len), Some(2));
    let (_, page) = app
        .get("/api/serviceaccounts/search?perpage=2&page=2")
        .await;
    assert_eq!(page["serviceAccounts"].as_array().map(Vec::len), Some(2));
    let (_, found) = app.get("/api/serviceaccounts/search?query=SYNC").await;
    assert_eq!(found["totalCount"], 1);
    assert_eq!(found["serviceAccounts"][0]["id"], id);
    let (_, none) = app.get("/api/serviceaccounts/search?query=%25").await;
    assert_eq!(none["totalCount"], 0, "% is not a wildcard");
    let (s, body) = app.get("/api/serviceaccounts/search?perpage=0").await;
    assert_eq!((s, message(&body).contains("perpage")), (400, true));
    let (s, body) = app.get("/api/serviceaccounts/abc").await;
    assert_eq!((s, message(&body).contains("id")), (400, true), "{body}");
    let (s, _) = app.get("/api/serviceaccounts/999999").await;
    assert_eq!(s, 404);

    // Tokens: the key once, with its prefix; the list never shows it.
    let (s, created) = app
        .post(
            &format!("/api/serviceaccounts/{id}/tokens"),
            json!({"name": "ci", "secondsToLive": 3600}),
        )
        .await;
    assert_eq!(s, 200, "{created}");
    let key = created["key"].as_str().expect("key").to_string();
    assert!(key.starts_with("chr_sa_") && key.len() > 40, "{key}");
    assert_eq!(created["name"], "ci");
    let (s, body) = app
        .post(
            &format!("/api/serviceaccounts/{id}/tokens"),
            json!({"name": "ci"}),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    let (s, body) = app
        .post(
            &format!("/api/serviceaccounts/{id}/tokens"),
            json!({"name": "x", "secondsToLive": -5}),
        )
        .await;
    assert_eq!(
        (s, message(&body).contains("secondsToLive")),
        (400, true),
        "{body}"
    );
    let (s, tokens) = app.get(&format!("/api/serviceaccounts/{id}/tokens")).await;
    assert_eq!(s, 200);
    let t = &tokens[0];
    assert_eq!(
        (&t["id"], &t["name"], &t["hasExpired"]),
        (&created["id"], &json!("ci"), &json!(false))
    );
    assert!(t["expiration"].is_string() && t["created"].is_string());
    let secs = t["secondsUntilExpiration"].as_i64().expect("seconds");
    assert!((3590..=3600).contains(&secs), "{secs}");
    let (_, sa) = app.get(&format!("/api/serviceaccounts/{id}")).await;
    assert_eq!(sa["tokens"], 1);
    for path in [
        format!("/api/serviceaccounts/{id}/tokens"),
        format!("/api/serviceaccounts/{id}"),
        "/api/serviceaccounts/search".into(),
        "/api/auth/keys?includeExpired=true".into(),
        "/api/audit?per_page=1000".into(),
    ] {
        let (_, body) = app.get(&path).await;
        assert!(
            !body.to_string().contains(&key[7..]),
            "{path} shows the key"
        );
    }
    if backend == Backend::Sqlite {
        let dir = app.data.dir.path();
        for f in ["charter.db", "charter.db-wal"] {
            let bytes = std::fs::read(dir.join(f)).unwrap_or_default();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "{f} holds the key"
            );
        }
    }

    // The key works with the account's role: an Editor writes but cannot manage accounts.
    let bearer = Auth::Bearer(key.clone());
    let (s, _) = app
        .call(
            &bearer,
            Method::POST,
            "/api/products",
            Some(json!({"slug": "p", "name": "P"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, body) = app
        .call(&bearer, Method::GET, "/api/serviceaccounts/search", None)
        .await;
    assert_eq!(
        (s, message(&body).contains("serviceaccounts:read")),
        (403, true),
        "{body}"
    );
    // Role changes take effect at once.
    let (s, upd) = app
        .patch(
            &format!("/api/serviceaccounts/{id}"),
            json!({"role": "Viewer"}),
        )
        .await;
    assert_eq!(
        (s, upd["message"].as_str()),
        (200, Some("Service account updated")),
        "{upd}"
    );
    assert_eq!(upd["serviceaccount"]["role"], "Viewer");
    let (s, _) = app
        .call(
            &bearer,
            Method::POST,
            "/api/products",
            Some(json!({"slug": "q", "name": "Q"})),
        )
        .await;
    assert_eq!(s, 403);

    // Deleting the account ends its tokens.
    let (s, body) = app.delete(&format!("/api/serviceaccounts/{id}")).await;
    assert_eq!(
        (s, body),
        (200, json!({"message": "Service account deleted"}))
    );
    let (s, _) = app.call(&bearer, Method::GET, "/api/products", None).await;
    assert_eq!(s, 401);
    let (s, _) = app.get(&format!("/api/serviceaccounts/{id}")).await;
    assert_eq!(s, 404);
    app.stop().await;
}

/// `/api/auth/keys` exactly as `seeds/grafana-auth-api.md` shows it.
async fn legacy_api_keys(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (s, sa) = app
        .post(
            "/api/serviceaccounts",
            json!({"name": "legacy", "role": "Admin"}),
        )
        .await;
    assert_eq!(s, 201);
    let sid = sa["id"].as_i64().expect("id");
    let (_, api) = app
        .post(
            &format!("/api/serviceaccounts/{sid}/tokens"),
            json!({"name": "API"}),
        )
        .await;
    let (_, old) = app
        .post(
            &format!("/api/serviceaccounts/{sid}/tokens"),
            json!({"name": "TestAdmin", "secondsToLive": 1}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let api_key = Auth::Bearer(api["key"].as_str().expect("key").into());

    // List: expired keys hidden unless includeExpired; `expiration` only when set.
    let (s, keys) = app
        .call(&api_key, Method::GET, "/api/auth/keys", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        keys,
        json!([{"id": api["id"], "name": "API", "role": "Admin"}])
    );
    let (s, keys) = app
        .call(
            &api_key,
            Method::GET,
            "/api/auth/keys?includeExpired=true",
            None,
        )
        .await;
    assert_eq!(s, 200);
    let expiration = keys[1]["expiration"]
        .as_str()
        .expect("expiration")
        .to_string();
    assert!(
        time::OffsetDateTime::parse(&expiration, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    assert_eq!(
        keys,
        json!([{"id": api["id"], "name": "API", "role": "Admin"},
               {"id": old["id"], "name": "TestAdmin", "role": "Admin", "expiration": expiration}])
    );

    // Create: 410 with the seed's message, byte for byte.
    let res = app
        .request(&api_key, Method::POST, "/api/auth/keys")
        .json(&json!({"name": "mykey", "role": "Admin", "secondsToLive": 86400}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 410);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("application/json")
    );
    assert_eq!(
        res.text().await.expect("body"),
        r#"{"message":"this endpoint has been removed, please use POST /api/serviceaccounts and POST /api/serviceaccounts/{id}/tokens instead"}"#
    );

    // Delete: 200 {"message":"API key deleted"}; the key is refused at once.
    let (s, _) = app.call(&api_key, Method::GET, "/api/licenses", None).await;
    assert_eq!(s, 200);
    let res = app
        .request(
            &Auth::Admin,
            Method::DELETE,
            &format!("/api/auth/keys/{}", api["id"]),
        )
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.expect("body"),
        r#"{"message":"API key deleted"}"#
    );
    let (s, _) = app.call(&api_key, Method::GET, "/api/licenses", None).await;
    assert_eq!(s, 401, "deleted key refused at once");
    let (s, _) = app.delete(&format!("/api/auth/keys/{}", api["id"])).await;
    assert_eq!(s, 404);
    let (s, body) = app.delete("/api/auth/keys/x").await;
    assert_eq!((s, message(&body).contains("id")), (400, true));

    // Permissions as the seed names them.
    let (_, viewer) = app.service_account("viewer", "Viewer").await;
    let viewer = Auth::Bearer(viewer);
    let (s, body) = app.call(&viewer, Method::GET, "/api/auth/keys", None).await;
    assert_eq!(
        (s, message(&body).contains("apikeys:read")),
        (403, true),
        "{body}"
    );
    let (s, body) = app
        .call(
            &viewer,
            Method::DELETE,
            &format!("/api/auth/keys/{}", old["id"]),
            None,
        )
        .await;
    assert_eq!(
        (s, message(&body).contains("apikeys:delete")),
        (403, true),
        "{body}"
    );
    let (s, _) = app
        .call(&Auth::None, Method::GET, "/api/auth/keys", None)
        .await;
    assert_eq!(s, 401);
    app.stop().await;
}
