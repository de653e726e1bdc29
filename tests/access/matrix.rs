//! The permission matrix: every portal endpoint, called by each role and the
//! server admin, is allowed or refused with 403 naming the permission; with
//! no credentials it is 401.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Auth, Backend, TestApp};

/// One portal endpoint: method, path, body, and the permission it needs
/// (`None`: any authenticated caller).
struct Endpoint {
    method: Method,
    path: String,
    body: Option<Value>,
    needs: Option<&'static str>,
}

fn ep(
    method: Method,
    path: impl Into<String>,
    body: Option<Value>,
    needs: Option<&'static str>,
) -> Endpoint {
    Endpoint {
        method,
        path: path.into(),
        body,
        needs,
    }
}

/// What each role is granted (the server admin has everything).
fn granted(role: &str, permission: &str) -> bool {
    match role {
        "Viewer" => permission == "licensing:read",
        "Editor" => matches!(permission, "licensing:read" | "licensing:write"),
        _ => true,
    }
}

/// Every portal endpoint, in an order where the destructive ones come last.
async fn endpoints(app: &TestApp) -> Vec<Endpoint> {
    let license = app.license(json!({"max_instances": 100})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let account = license["account_id"].as_str().expect("account").to_string();
    let (s, inst) = app
        .post(
            &format!("/api/licenses/{lid}/instances"),
            json!({"url": "https://matrix.example/"}),
        )
        .await;
    assert_eq!(s, 201, "{inst}");
    let iid = inst["id"].as_str().expect("id").to_string();
    // A service account and tokens for the endpoints to act on.
    let (sid, _) = app.service_account("matrix-target", "Viewer").await;
    let (_, victim) = app
        .post(
            &format!("/api/serviceaccounts/{sid}/tokens"),
            json!({"name": "victim"}),
        )
        .await;
    let victim = victim["id"].as_i64().expect("token id");
    let (_, key) = app
        .post(
            &format!("/api/serviceaccounts/{sid}/tokens"),
            json!({"name": "legacy-victim"}),
        )
        .await;
    let key = key["id"].as_i64().expect("token id");
    let (r, w, d) = (
        Some("licensing:read"),
        Some("licensing:write"),
        Some("licensing:delete"),
    );
    let (sr, sw, sd) = (
        Some("serviceaccounts:read"),
        Some("serviceaccounts:write"),
        Some("serviceaccounts:delete"),
    );
    let li = format!("/api/licenses/{lid}");
    let inst = format!("{li}/instances/{iid}");
    let sa = format!("/api/serviceaccounts/{sid}");
    vec![
        ep(Method::GET, "/api/products", None, r),
        ep(
            Method::POST,
            "/api/products",
            Some(json!({"slug": "matrix", "name": "M"})),
            w,
        ),
        ep(Method::GET, "/api/products/grafana-enterprise", None, r),
        ep(
            Method::PATCH,
            "/api/products/grafana-enterprise",
            Some(json!({"name": "GE"})),
            w,
        ),
        ep(Method::GET, "/api/accounts", None, r),
        ep(
            Method::POST,
            "/api/accounts",
            Some(json!({"company": "M", "slug": "matrix"})),
            w,
        ),
        ep(Method::GET, format!("/api/accounts/{account}"), None, r),
        ep(
            Method::PATCH,
            format!("/api/accounts/{account}"),
            Some(json!({"company": "Acme"})),
            w,
        ),
        ep(Method::GET, "/api/licenses", None, r),
        ep(
            Method::POST,
            "/api/licenses",
            Some(
                json!({"account_id": account, "products": ["grafana-enterprise"],
                        "expires_at": "2099-01-01T00:00:00Z"}),
            ),
            w,
        ),
        ep(Method::GET, li.clone(), None, r),
        ep(
            Method::PATCH,
            li.clone(),
            Some(json!({"included_users": 20})),
            w,
        ),
        ep(Method::GET, format!("{li}/instances"), None, r),
        ep(
            Method::POST,
            format!("{li}/instances"),
            Some(json!({"url": "https://m2.example/"})),
            w,
        ),
        ep(Method::GET, inst.clone(), None, r),
        ep(Method::POST, format!("{inst}/push"), None, w),
        ep(
            Method::PATCH,
            inst.clone(),
            Some(json!({"push_enabled": true})),
            w,
        ),
        ep(
            Method::POST,
            format!("{li}/tokens"),
            Some(json!({"instance": "https://m3.example/"})),
            w,
        ),
        ep(Method::GET, format!("{li}/tokens"), None, r),
        ep(Method::POST, format!("{li}/suspend"), None, d),
        ep(Method::POST, format!("{li}/resume"), None, w),
        ep(Method::GET, "/api/audit", None, Some("audit:read")),
        ep(
            Method::POST,
            "/api/serviceaccounts",
            Some(json!({"name": "matrix-new"})),
            sw,
        ),
        ep(Method::GET, "/api/serviceaccounts/search", None, sr),
        ep(Method::GET, sa.clone(), None, sr),
        ep(
            Method::PATCH,
            sa.clone(),
            Some(json!({"role": "Viewer"})),
            sw,
        ),
        ep(Method::GET, format!("{sa}/tokens"), None, sr),
        ep(
            Method::POST,
            format!("{sa}/tokens"),
            Some(json!({"name": "m"})),
            sw,
        ),
        ep(Method::GET, "/api/auth/keys", None, Some("apikeys:read")),
        ep(
            Method::POST,
            "/api/auth/keys",
            Some(json!({"name": "k", "role": "Admin"})),
            None,
        ),
        ep(
            Method::DELETE,
            format!("/api/auth/keys/{key}"),
            None,
            Some("apikeys:delete"),
        ),
        ep(Method::DELETE, format!("{sa}/tokens/{victim}"), None, sw),
        ep(Method::DELETE, inst, None, d),
        ep(Method::POST, format!("{li}/revoke"), None, d),
        ep(Method::DELETE, sa, None, sd),
    ]
}

pub async fn permission_matrix(backend: Backend) {
    let app = TestApp::start(backend).await;
    let eps = endpoints(&app).await;
    let mut callers = vec![];
    for role in ["Viewer", "Editor", "Admin"] {
        let (_, token) = app
            .service_account(&format!("matrix-{}", role.to_lowercase()), role)
            .await;
        callers.push((role, Auth::Bearer(token)));
    }
    callers.push(("server admin", Auth::Admin));
    let mut checked = 0;
    for e in &eps {
        // No credentials: 401 with a challenge, whatever the endpoint.
        let res = app
            .request(&Auth::None, e.method.clone(), &e.path)
            .send()
            .await
            .expect("request");
        assert_eq!(
            res.status(),
            401,
            "{} {} without credentials",
            e.method,
            e.path
        );
        assert!(res.headers().contains_key("www-authenticate"));
        for (role, auth) in &callers {
            let (s, body) = app
                .call(auth, e.method.clone(), &e.path, e.body.clone())
                .await;
            let allowed = e.needs.is_none_or(|p| granted(role, p));
            if allowed {
                assert!(
                    s != 401 && s != 403 && s < 500,
                    "{role} may {} {}: got {s} {body}",
                    e.method,
                    e.path
                );
            } else {
                let permission = e.needs.expect("a permission");
                assert_eq!(s, 403, "{role} may not {} {}: {body}", e.method, e.path);
                let message = body["message"].as_str().expect("message");
                assert!(
                    message.contains(permission),
                    "403 names {permission}: {message}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, eps.len() * 4);
    // Spot checks of what "allowed" did.
    let viewer = &callers[0].1;
    let (s, page) = app.call(viewer, Method::GET, "/api/licenses", None).await;
    assert_eq!(s, 200, "{page}");
    assert!(
        page["total"].as_i64() >= Some(2),
        "licenses made by writers: {page}"
    );
    let (s, legacy) = app.call(viewer, Method::POST, "/api/auth/keys", None).await;
    assert_eq!(s, 410, "obsolete for every caller: {legacy}");
    let (s, _) = app
        .call(
            &callers[1].1,
            Method::POST,
            "/api/products",
            Some(json!({"slug": "by-editor", "name": "E"})),
        )
        .await;
    assert_eq!(s, 201);
    // Public endpoints need nothing.
    for path in ["/api/health", "/.well-known/jwks.json", "/api/openapi.json"] {
        let (s, _) = app.call(&Auth::None, Method::GET, path, None).await;
        assert_eq!(s, 200, "{path}");
    }
    app.stop().await;
}
