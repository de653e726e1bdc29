//! Hostile input against the issuer, on both stores: forged and confused
//! tokens on the renew endpoint (`alg: none`, HS256 keyed with the public
//! key, a `kid` naming another key or a path), oversized headers, tokens and
//! bodies, deep JSON, wrong content types, SQL and NUL bytes, negative and
//! huge numbers, instance URLs with credentials or odd schemes, and replayed
//! renewals of a revoked license. Every answer is a 4xx with a JSON
//! `message`, and a snapshot of what is stored is the same after each.

mod common;

use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use charter_token::KeyAlg;
use common::{Backend, Data, TestApp};
use serde_json::{Value, json};

both_stores!(
    forged_tokens,
    hostile_renew_bodies,
    hostile_portal_input,
    replayed_renewals_of_a_revoked_license,
    oversized_bodies_get_their_413
);

struct Setup {
    app: TestApp,
    lid: String,
    token: String,
    /// The issuer's signing key (kid, key pair).
    signing: (String, RsaKeyPair),
    /// Another published key (RS256) and a published EdDSA key.
    other_rsa: String,
    other_eddsa: String,
}

fn key_pair(path: &std::path::Path) -> RsaKeyPair {
    let text = std::fs::read_to_string(path).expect("key file");
    let block = pem::parse(text).expect("PEM");
    RsaKeyPair::from_pkcs8(block.contents()).expect("PKCS#8 RSA")
}

async fn setup(backend: Backend) -> Setup {
    let data = Data::new(backend).await;
    let dir = data.keys_dir();
    let a = charter_token::keys::generate(&dir, KeyAlg::Rs256, 2048, true).expect("key A");
    let b = charter_token::keys::generate(&dir, KeyAlg::Rs256, 2048, false).expect("key B");
    let c = charter_token::keys::generate(&dir, KeyAlg::EdDsa, 0, false).expect("key C");
    let app = TestApp::start_on(data).await;
    let license = app.license(json!({})).await;
    let lid = license["lid"].as_str().expect("lid").to_string();
    let (s, issued) = app.issue(&lid, "https://a.example/").await;
    assert_eq!(s, 201, "{issued}");
    Setup {
        lid,
        token: issued["token"].as_str().expect("token").to_string(),
        signing: (a.kid, key_pair(&a.path)),
        other_rsa: b.kid,
        other_eddsa: c.kid,
        app,
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` of a token, with the payload kept from `token`.
fn signing_input(header: &Value, token: &str) -> String {
    let payload = token.split('.').nth(1).expect("payload");
    format!("{}.{payload}", b64(header.to_string().as_bytes()))
}

fn rs256(kp: &RsaKeyPair, input: &str) -> String {
    let mut sig = vec![0; kp.public_modulus_len()];
    kp.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", b64(&sig))
}

fn hs256(secret: &[u8], input: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// What is stored, as the portal shows it.
async fn snapshot(app: &TestApp, lid: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/api/products".to_string(),
        "/api/accounts".to_string(),
        "/api/licenses?per_page=1000".to_string(),
        format!("/api/licenses/{lid}"),
        format!("/api/licenses/{lid}/instances"),
        format!("/api/licenses/{lid}/tokens?per_page=1000"),
        "/api/audit?per_page=1000".to_string(),
        "/api/serviceaccounts/search".to_string(),
    ] {
        let (s, mut v) = app.get(&path).await;
        assert_eq!(s, 200, "{path}: {v}");
        if path.starts_with("/api/audit") {
            // Records of reads and of refused attempts are not changes:
            // the snapshot itself reads tokens, and the attacks fail logins.
            let changes: Vec<Value> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| !matches!(e["action"].as_str(), Some("token.read" | "auth.failed")))
                .cloned()
                .collect();
            v = Value::Array(changes);
        }
        out.push(v);
    }
    out
}

/// Sends and checks the answer is a 4xx (not 429) with a JSON message; returns (status, message).
async fn refused(req: reqwest::RequestBuilder, what: &str) -> (u16, String) {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.expect("body");
    assert!(
        (400..500).contains(&status),
        "{what}: expected a 4xx, got {status}: {text}"
    );
    assert!(ct.starts_with("application/json"), "{what}: {ct} {text}");
    let v: Value = serde_json::from_str(&text).expect("JSON body");
    let m = v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no message in {text}"));
    assert!(!m.is_empty(), "{what}");
    (status, m.to_string())
}

fn renew_req(app: &TestApp, token: &str) -> reqwest::RequestBuilder {
    app.http
        .post(app.url("/api/tokens/renew"))
        .header("authorization", format!("Bearer {token}"))
}

async fn forged_tokens(backend: Backend) {
    let s = setup(backend).await;
    let app = &s.app;
    let before = snapshot(app, &s.lid).await;
    let (kid, kp) = &s.signing;
    let head = |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid});
    let public_der = kp.public_key().as_ref().to_vec();
    let public_pem = pem::encode(&pem::Pem::new("RSA PUBLIC KEY", public_der.clone()));
    let jwks = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .text()
        .await
        .expect("jwks body");
    let outsider_pem = charter_token::keys::generate_pem(KeyAlg::Rs256, 2048).expect("outsider");
    let outsider = RsaKeyPair::from_pkcs8(pem::parse(outsider_pem).expect("PEM").contents())
        .expect("outsider key");
    let t = &s.token;
    let mut tampered: Vec<String> = t.split('.').map(str::to_string).collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&tampered[1]).expect("b64")).expect("json");
    claims["included_users"] = json!(1_000_000);
    tampered[1] = b64(claims.to_string().as_bytes());

    // (name, token, expected status, a word of the message)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "alg none",
            format!("{}.", signing_input(&head("none", kid), t)),
            401,
            "algorithm",
        ),
        (
            "alg None",
            format!("{}.", signing_input(&head("None", kid), t)),
            401,
            "algorithm",
        ),
        (
            "HS256 keyed with the public key PEM",
            hs256(
                public_pem.as_bytes(),
                &signing_input(&head("HS256", kid), t),
            ),
            401,
            "algorithm",
        ),
        (
            "HS256 keyed with the public key DER",
            hs256(&public_der, &signing_input(&head("HS256", kid), t)),
            401,
            "algorithm",
        ),
        (
            "HS256 keyed with the JWKS",
            hs256(jwks.as_bytes(), &signing_input(&head("HS256", kid), t)),
            401,
            "algorithm",
        ),
        (
            "kid of another RSA key",
            rs256(kp, &signing_input(&head("RS256", &s.other_rsa), t)),
            401,
            "signature",
        ),
        (
            "kid of the EdDSA key",
            rs256(kp, &signing_input(&head("RS256", &s.other_eddsa), t)),
            401,
            "does not match",
        ),
        (
            "EdDSA alg on the RSA kid",
            rs256(kp, &signing_input(&head("EdDSA", kid), t)),
            401,
            "does not match",
        ),
        (
            "outsider key with our kid",
            rs256(&outsider, &signing_input(&head("RS256", kid), t)),
            401,
            "signature",
        ),
        (
            "kid with a path",
            rs256(kp, &signing_input(&head("RS256", "../../etc/passwd"), t)),
            401,
            "unknown",
        ),
        (
            "kid with a NUL",
            rs256(
                kp,
                &signing_input(&head("RS256", &format!("{kid}\u{0}")), t),
            ),
            401,
            "unknown",
        ),
        (
            "kid of 4 KiB",
            rs256(kp, &signing_input(&head("RS256", &"k".repeat(4096)), t)),
            401,
            "unknown",
        ),
        (
            "no kid",
            rs256(
                kp,
                &signing_input(&json!({"alg": "RS256", "typ": "JWT"}), t),
            ),
            401,
            "kid",
        ),
        (
            "kid a number",
            rs256(kp, &signing_input(&json!({"alg": "RS256", "kid": 7}), t)),
            401,
            "malformed",
        ),
        (
            "crit header",
            rs256(
                kp,
                &signing_input(&json!({"alg": "RS256", "kid": kid, "crit": ["exp"]}), t),
            ),
            401,
            "crit",
        ),
        ("payload changed", tampered.join("."), 401, "signature"),
        (
            "not base64",
            "eyJhbGciOiJSUzI1NiJ9.%%%.%%%".to_string(),
            401,
            "refused",
        ),
        (
            "two parts",
            "eyJhbGciOiJSUzI1NiJ9.e30".to_string(),
            401,
            "malformed",
        ),
        ("empty parts", "..".to_string(), 401, "refused"),
        (
            "token of 17 KiB",
            format!("{t}{}", "A".repeat(17 * 1024)),
            413,
            "larger",
        ),
        (
            "SQL",
            "' OR 1=1; DROP TABLE tokens;--".to_string(),
            401,
            "refused",
        ),
    ];
    for (name, token, status, word) in cases {
        let (got, m) = refused(renew_req(app, &token), name).await;
        assert_eq!(got, status, "{name}: {m}");
        assert!(
            m.to_lowercase().contains(word),
            "{name}: {m:?} should say {word:?}"
        );
    }

    // The header itself: no scheme, another scheme, non-ASCII, 60 KiB.
    let raw = |value: Vec<u8>| {
        app.http.post(app.url("/api/tokens/renew")).header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(&value).expect("header value"),
        )
    };
    for (name, value) in [
        ("no scheme", t.as_bytes().to_vec()),
        ("Basic", format!("Basic {t}").into_bytes()),
        ("Latin-1", b"Bearer \xe9\xe9".to_vec()),
        ("empty bearer", b"Bearer ".to_vec()),
    ] {
        let (got, _) = refused(raw(value), name).await;
        assert_eq!(got, 401, "{name}");
    }
    let (got, _) = refused(
        raw(format!("Bearer {}", "A".repeat(60 * 1024)).into_bytes()),
        "60 KiB",
    )
    .await;
    assert_eq!(got, 413);
    // Headers beyond what the HTTP server parses are cut at the connection
    // (hyper answers 431 with no body, or closes): never a 5xx, never stored.
    let many = (0..200).fold(renew_req(app, t), |r, i| r.header(format!("x-h{i}"), "v"));
    if let Ok(res) = many.send().await {
        assert!(res.status().is_client_error(), "{}", res.status());
    }

    assert_eq!(snapshot(app, &s.lid).await, before, "nothing changed");
    // The real token still renews.
    let (st, body) = app.renew(t, None).await;
    assert_eq!(st, 200, "{body}");
    s.app.stop().await;
}

async fn hostile_renew_bodies(backend: Backend) {
    let s = setup(backend).await;
    let app = &s.app;
    let before = snapshot(app, &s.lid).await;
    let body = |ct: &str, b: Vec<u8>| {
        renew_req(app, &s.token)
            .header("content-type", ct.to_string())
            .body(b)
    };
    let deep = format!("{{\"usage\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "deep JSON",
            body("application/json", deep.into_bytes()),
            400,
        ),
        (
            "deep objects",
            body(
                "application/json",
                format!("{}{}", "{\"a\":".repeat(3000), "}".repeat(3000)).into_bytes(),
            ),
            400,
        ),
        (
            "100 KiB body",
            body(
                "application/json",
                format!(
                    "{{\"usage\":{{\"users\":1}},\"pad\":\"{}\"}}",
                    "x".repeat(100 * 1024)
                )
                .into_bytes(),
            ),
            413,
        ),
        (
            "form body",
            body("application/x-www-form-urlencoded", b"usage=1".to_vec()),
            400,
        ),
        (
            "XML",
            body(
                "application/xml",
                b"<usage><users>1</users></usage>".to_vec(),
            ),
            400,
        ),
        (
            "not UTF-8",
            body("application/json", b"{\"usage\":{\"\xff\xfe\":1}}".to_vec()),
            400,
        ),
        (
            "negative count",
            body("application/json", br#"{"usage":{"users":-1}}"#.to_vec()),
            400,
        ),
        (
            "i64::MIN",
            body(
                "application/json",
                br#"{"usage":{"users":-9223372036854775808}}"#.to_vec(),
            ),
            400,
        ),
        (
            "beyond i64",
            body(
                "application/json",
                br#"{"usage":{"users":9223372036854775808}}"#.to_vec(),
            ),
            400,
        ),
        (
            "1e30",
            body("application/json", br#"{"usage":{"users":1e30}}"#.to_vec()),
            400,
        ),
        (
            "fraction",
            body("application/json", br#"{"usage":{"users":1.5}}"#.to_vec()),
            400,
        ),
        (
            "NaN",
            body("application/json", br#"{"usage":{"users":NaN}}"#.to_vec()),
            400,
        ),
        (
            "string count",
            body("application/json", br#"{"usage":{"users":"7"}}"#.to_vec()),
            400,
        ),
        (
            "NUL in a name",
            body(
                "application/json",
                br#"{"usage":{"us\u0000ers":1}}"#.to_vec(),
            ),
            400,
        ),
        (
            "empty name",
            body("application/json", br#"{"usage":{"":1}}"#.to_vec()),
            400,
        ),
        (
            "long name",
            body(
                "application/json",
                format!("{{\"usage\":{{\"{}\":1}}}}", "n".repeat(65)).into_bytes(),
            ),
            400,
        ),
        (
            "unknown field",
            body(
                "application/json",
                br#"{"usage":{},"lid":"other"}"#.to_vec(),
            ),
            400,
        ),
        ("array", body("application/json", b"[1,2,3]".to_vec()), 400),
        (
            "truncated",
            body("application/json", b"{\"usage\":".to_vec()),
            400,
        ),
        (
            "usage a string",
            body(
                "application/json",
                br#"{"usage":"DROP TABLE tokens"}"#.to_vec(),
            ),
            400,
        ),
    ];
    for (name, req, status) in cases {
        let (got, m) = refused(req, name).await;
        assert_eq!(got, status, "{name}: {m}");
    }
    let many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("u{i}"), json!(1))).collect();
    let (got, m) = refused(
        renew_req(app, &s.token).json(&json!({"usage": many})),
        "101 entries",
    )
    .await;
    assert_eq!(got, 400, "{m}");
    assert_eq!(snapshot(app, &s.lid).await, before, "nothing changed");

    // SQL in a usage name is data: stored as sent.
    let sql = "'); DROP TABLE tokens;--";
    let (st, b) = app.renew(&s.token, Some(json!({"usage": {sql: 3}}))).await;
    assert_eq!(st, 200, "{b}");
    let (_, instances) = app.get(&format!("/api/licenses/{}/instances", s.lid)).await;
    assert_eq!(instances[0]["usage"][sql], 3, "{instances}");
    let (_, tokens) = app.get(&format!("/api/licenses/{}/tokens", s.lid)).await;
    assert_eq!(tokens["total"], 2);
    s.app.stop().await;
}

async fn hostile_portal_input(backend: Backend) {
    let s = setup(backend).await;
    let app = &s.app;
    let lid = &s.lid;
    let before = snapshot(app, lid).await;
    let post = |path: &str, body: Value| app.admin(reqwest::Method::POST, path).json(&body);
    let (_, accounts) = app.get("/api/accounts").await;
    let account_id = accounts["items"][0]["id"]
        .as_str()
        .or_else(|| accounts[0]["id"].as_str())
        .expect("account id")
        .to_string();
    let license = |extra: Value| {
        let mut b = json!({"account_id": account_id, "products": ["grafana-enterprise"],
                           "expires_at": "2099-01-01T00:00:00Z"});
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        b
    };
    let instances = format!("/api/licenses/{lid}/instances");
    let mut cases: Vec<(String, reqwest::RequestBuilder)> = vec![
        (
            "users 2^63".into(),
            post(
                "/api/licenses",
                license(json!({"included_users": 9_223_372_036_854_775_807_i64})),
            ),
        ),
        (
            "users -1".into(),
            post("/api/licenses", license(json!({"included_users": -1}))),
        ),
        (
            "users 1e300".into(),
            post("/api/licenses", license(json!({"included_users": 1e300}))),
        ),
        (
            "max_instances -5".into(),
            post("/api/licenses", license(json!({"max_instances": -5}))),
        ),
        (
            "update_days huge".into(),
            post(
                "/api/licenses",
                license(json!({"update_days": 4_294_967_296_i64})),
            ),
        ),
        (
            "token_ttl_days huge".into(),
            post(
                "/api/licenses",
                license(json!({"token_ttl_days": i64::MAX})),
            ),
        ),
        (
            "expires year 10000".into(),
            post(
                "/api/licenses",
                license(json!({"expires_at": "10000-01-01T00:00:00Z"})),
            ),
        ),
        (
            "expires negative".into(),
            post(
                "/api/licenses",
                license(json!({"expires_at": "-0001-01-01T00:00:00Z"})),
            ),
        ),
        (
            "NUL in feature".into(),
            post(
                "/api/licenses",
                license(json!({"features": ["re\u{0}porting"]})),
            ),
        ),
        (
            "SQL account id".into(),
            post(
                "/api/licenses",
                license(json!({"account_id": "' OR '1'='1"})),
            ),
        ),
        (
            "NUL company".into(),
            post(
                "/api/accounts",
                json!({"company": "a\u{0}b", "slug": "nul"}),
            ),
        ),
        (
            "NUL slug".into(),
            post("/api/products", json!({"slug": "p\u{0}", "name": "P"})),
        ),
        (
            "SQL slug".into(),
            post(
                "/api/products",
                json!({"slug": "x'; DROP TABLE products;--", "name": "P"}),
            ),
        ),
        (
            "huge body".into(),
            post(
                "/api/accounts",
                json!({"company": "x".repeat(200_000), "slug": "big"}),
            ),
        ),
        (
            "deep JSON".into(),
            app.admin(reqwest::Method::POST, "/api/accounts")
                .header("content-type", "application/json")
                .body(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))),
        ),
        (
            "text/plain".into(),
            app.admin(reqwest::Method::POST, "/api/accounts")
                .header("content-type", "text/plain")
                .body(r#"{"company":"A","slug":"a"}"#),
        ),
        (
            "no content type".into(),
            app.admin(reqwest::Method::POST, "/api/accounts")
                .body(r#"{"company":"A","slug":"a"}"#),
        ),
        (
            "page 2^70".into(),
            app.admin(
                reqwest::Method::GET,
                "/api/licenses?page=1180591620717411303424",
            ),
        ),
        (
            "per_page -1".into(),
            app.admin(reqwest::Method::GET, "/api/licenses?per_page=-1"),
        ),
        (
            "audit since garbage".into(),
            app.admin(reqwest::Method::GET, "/api/audit?since=yesterday"),
        ),
        (
            "dialect unknown".into(),
            post(
                &instances,
                json!({"url": "https://b.example/", "dialect": "ftp"}),
            ),
        ),
        (
            "credentials with NUL".into(),
            post(
                &instances,
                json!({"url": "https://b.example/", "credentials": {"type": "bearer", "token": "a\u{0}b"}}),
            ),
        ),
        (
            "SQL path".into(),
            app.admin(reqwest::Method::GET, "/api/licenses/'%20OR%201=1--"),
        ),
        (
            "NUL path".into(),
            app.admin(reqwest::Method::GET, "/api/licenses/%00"),
        ),
        (
            "traversal path".into(),
            app.admin(
                reqwest::Method::GET,
                &format!("/api/licenses/{lid}/instances/..%2F..%2Fetc%2Fpasswd"),
            ),
        ),
        (
            "unknown license instance".into(),
            post(
                "/api/licenses/nope/instances",
                json!({"url": "https://b.example/"}),
            ),
        ),
        (
            "sa token 2^63 seconds".into(),
            post(
                "/api/serviceaccounts/1/tokens",
                json!({"name": "x", "secondsToLive": 9_223_372_036_854_775_807_i64}),
            ),
        ),
        (
            "sa role".into(),
            post("/api/serviceaccounts", json!({"name": "x", "role": "Root"})),
        ),
    ];
    for url in [
        "https://user:pw@b.example/",
        "https://user@b.example/",
        "ftp://b.example/",
        "gopher://b.example/",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:text/plain,hi",
        "http://[::1",
        "http://b.example/\u{0}",
        "https://b.example/#frag",
        "//b.example/",
        "",
    ] {
        cases.push((
            format!("instance {url:?}"),
            post(&instances, json!({"url": url})),
        ));
        cases.push((
            format!("issue {url:?}"),
            post(
                &format!("/api/licenses/{lid}/tokens"),
                json!({"instance": url}),
            ),
        ));
    }
    for (name, req) in cases {
        let (got, m) = refused(req, &name).await;
        assert_ne!(got, 429, "{name}: {m}");
        if name.starts_with("400 ") {
            assert_eq!(got, 400, "{name}: {m}");
        }
    }
    assert_eq!(snapshot(app, lid).await, before, "nothing changed");
    s.app.stop().await;
}

async fn replayed_renewals_of_a_revoked_license(backend: Backend) {
    let s = setup(backend).await;
    let app = &s.app;
    let (st, renewed) = app.renew(&s.token, None).await;
    assert_eq!(st, 200, "{renewed}");
    let newer = renewed["token"].as_str().expect("token").to_string();
    let (st, b) = app
        .post(&format!("/api/licenses/{}/revoke", s.lid), json!({}))
        .await;
    assert_eq!(st, 200, "{b}");
    let before = snapshot(app, &s.lid).await;
    for (name, token) in [("the first token", &s.token), ("the renewed token", &newer)] {
        for _ in 0..3 {
            let (got, m) = refused(renew_req(app, token), name).await;
            assert_eq!(got, 403, "{name}: {m}");
            assert!(m.contains("revoked"), "{name}: {m}");
        }
    }
    // Resume cannot undo a revocation, so replays stay refused.
    let (st, _) = app
        .post(&format!("/api/licenses/{}/resume", s.lid), json!({}))
        .await;
    assert!(
        (400..500).contains(&st),
        "resume of a revoked license: {st}"
    );
    let (got, _) = refused(renew_req(app, &newer), "after resume").await;
    assert_eq!(got, 403);
    // Issuing through the portal is refused too.
    let (st, b) = app.issue(&s.lid, "https://a.example/").await;
    assert_eq!(st, 409, "{b}");
    assert_eq!(snapshot(app, &s.lid).await, before, "nothing changed");
    s.app.stop().await;
}

/// A client sending a body over the limit reads the 413 and its message,
/// every time, rather than a connection reset while it is still sending
/// (the server reads and drops the rest before answering). Nothing is stored.
async fn oversized_bodies_get_their_413(backend: Backend) {
    let app = TestApp::start(backend).await;
    let before = app.get("/api/accounts").await;
    let body = json!({"company": "x".repeat(1024 * 1024), "slug": "big"}).to_string();
    for i in 0..20 {
        let res = app
            .admin(reqwest::Method::POST, "/api/accounts")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {i}: no answer: {e}"));
        assert_eq!(res.status().as_u16(), 413, "attempt {i}");
        let v: Value = res.json().await.expect("JSON body");
        let m = v["message"].as_str().expect("message");
        assert!(m.contains("limit"), "{m}");
        // The connection is still good for the next request.
        let (s, v) = common::send(
            app.admin(reqwest::Method::POST, "/api/accounts")
                .json(&json!({"company": "", "slug": "-"})),
        )
        .await;
        assert_eq!(s, 400, "attempt {i}: {v}");
    }
    let token = "A".repeat(200 * 1024);
    let res = app
        .http
        .post(app.url("/api/tokens/renew"))
        .header("content-type", "application/json")
        .body(format!("{{\"usage\":{{\"pad\":\"{token}\"}}}}"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(res.status().as_u16(), 413);

    // Chunked (no Content-Length): over the limit is 413 with the
    // connection still good; under it, the body reaches the handler whole.
    let addr = app.url("").trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        common::ADMIN.0,
        common::ADMIN.1
    ));
    let chunked = |chunks: &[String]| {
        let mut req = format!(
            "POST /api/accounts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        for c in chunks {
            req.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
        }
        req.push_str("0\r\n\r\n");
        req
    };
    let big: Vec<String> = std::iter::once("{\"company\":\"".to_string())
        .chain((0..64).map(|_| "x".repeat(16 * 1024)))
        .chain(std::iter::once("\",\"slug\":\"big\"}".to_string()))
        .collect();
    let (status, body) = http1_exchange(&mut conn, &chunked(&big)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limit"), "{body}");
    let small = [
        "{\"company\":\"Chunked".to_string(),
        " Inc\",\"slug\":\"chunked\"}".to_string(),
    ];
    let (status, body) = http1_exchange(&mut conn, &chunked(&small)).await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("Chunked Inc"), "{body}");
    // Nothing else was stored: the accounts are those before, and the chunked one.
    let slugs = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|a| a["slug"].as_str().map(str::to_string))
            .collect()
    };
    let mut expected = slugs(&before.1);
    expected.push("chunked".into());
    expected.sort();
    let mut got = slugs(&app.get("/api/accounts").await.1);
    got.sort();
    assert_eq!(got, expected);
    app.stop().await;
}

/// Writes one HTTP/1.1 request on `conn` and reads one response: its status
/// and body (by `Content-Length`).
async fn http1_exchange(conn: &mut tokio::net::TcpStream, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    (status, body)
}
