//! Test harness: a real issuer on a loopback port, on SQLite (a temp file)
//! or PostgreSQL (a fresh database at 127.0.0.1:5432, dropped afterwards).

#![allow(dead_code)]

pub mod pgtemp;
pub mod procs;

use std::path::PathBuf;

use charter::config::{Config, ServeArgs};
use charter::serve::{self, Server};
use serde_json::{Value, json};

pub const ADMIN: (&str, &str) = ("admin", "test-password-1");
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's data lives; survives server restarts, removed on drop.
pub struct Data {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pg_db: Option<String>,
}

impl Data {
    /// A fresh database and a keys directory holding one RS256 key, which
    /// the issuer imports on its first start (so that tests know the
    /// private key that signs).
    pub async fn new(backend: Backend) -> Data {
        let dir = tempfile::tempdir().expect("temp dir");
        charter_token::keys::generate(
            &dir.path().join("keys"),
            charter_token::KeyAlg::Rs256,
            2048,
            true,
        )
        .expect("signing key");
        match backend {
            Backend::Sqlite => Data {
                database_url: format!("sqlite://{}", dir.path().join("charter.db").display()),
                dir,
                pg_db: None,
            },
            Backend::Postgres => {
                let name = format!("charter_test_{}", uuid::Uuid::new_v4().simple());
                pg_admin(&format!("CREATE DATABASE {name}")).await;
                Data {
                    database_url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    dir,
                    pg_db: Some(name),
                }
            }
        }
    }

    /// SQLite at `db` (e.g. on a small or read-only filesystem); keys and the
    /// rest in a temp dir.
    pub fn sqlite_at(db: &std::path::Path) -> Data {
        Data {
            dir: tempfile::tempdir().expect("temp dir"),
            database_url: format!("sqlite://{}", db.display()),
            pg_db: None,
        }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    pub fn config(&self) -> Config {
        self.config_with(|_| {})
    }

    /// The test configuration with some settings changed.
    pub fn config_with(&self, change: impl FnOnce(&mut ServeArgs)) -> Config {
        let mut args = ServeArgs {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            public_url: Some("https://issuer.test/".into()),
            database_url: Some(self.database_url.clone()),
            keys_dir: Some(self.keys_dir()),
            admin_user: Some(ADMIN.0.into()),
            admin_password: Some(ADMIN.1.into()),
            // Tests run the push job themselves (`charter::licensing::push::run_once`).
            push_interval_secs: Some(0),
            // Their instances and receivers listen on loopback.
            push_allow_private: true,
            // Tests deliver webhooks and run the event scheduler themselves
            // (`charter::licensing::webhooks::{run_once, schedule_once}`).
            webhook_interval_secs: Some(0),
            events_interval_secs: Some(0),
            ..Default::default()
        };
        change(&mut args);
        Config::from_args(args).expect("config")
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        if let Some(name) = self.pg_db.take() {
            // Drop runs outside any runtime's async context: use a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(pg_admin(&format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )));
                }
            })
            .join();
        }
    }
}

async fn pg_admin(sql: &str) {
    let (client, conn) = tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432");
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
    drop(client);
    let _ = task.await;
}

/// A running issuer and an HTTP client for it.
pub struct TestApp {
    pub server: Option<Server>,
    pub base: String,
    pub http: reqwest::Client,
    pub data: Data,
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        let data = Data::new(backend).await;
        Self::start_on(data).await
    }

    pub async fn start_on(data: Data) -> TestApp {
        let config = data.config();
        Self::start_config(data, config).await
    }

    /// Starts on fresh data with some settings changed.
    pub async fn start_with(backend: Backend, change: impl FnOnce(&mut ServeArgs)) -> TestApp {
        let data = Data::new(backend).await;
        let config = data.config_with(change);
        Self::start_config(data, config).await
    }

    pub async fn start_config(data: Data, config: Config) -> TestApp {
        let server = serve::start(config).await.expect("server starts");
        TestApp {
            base: format!("http://{}", server.addr),
            server: Some(server),
            http: reqwest::Client::new(),
            data,
        }
    }

    /// Stops the server (gracefully) and starts a new one on the same data.
    pub async fn restart(mut self) -> TestApp {
        if let Some(s) = self.server.take() {
            s.stop().await.expect("server stops");
        }
        Self::start_on(self.data).await
    }

    pub fn state(&self) -> &charter::api::AppState {
        &self.server.as_ref().expect("running").state
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// An admin request.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(self.admin(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        send(self.admin(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        send(self.admin(reqwest::Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        send(self.admin(reqwest::Method::DELETE, path)).await
    }

    /// `POST /api/tokens/renew` with a bearer token and an optional body.
    pub async fn renew(&self, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url("/api/tokens/renew"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    /// Creates a product, an account and a license; returns the license.
    pub async fn license(&self, extra: Value) -> Value {
        let (s, _) = self
            .post(
                "/api/products",
                json!({"slug": "grafana-enterprise", "name": "Grafana Enterprise",
                       "features": ["reporting", "saml", "white-labeling"]}),
            )
            .await;
        assert!(s == 201 || s == 409, "product: {s}");
        let slug = format!("acme-{}", uuid::Uuid::new_v4().simple());
        let (s, account) = self
            .post(
                "/api/accounts",
                json!({"company": "Acme Corp", "slug": slug}),
            )
            .await;
        assert_eq!(s, 201, "account: {account}");
        let mut body = json!({
            "account_id": account["id"],
            "products": ["grafana-enterprise"],
            "expires_at": "2099-01-01T00:00:00Z",
            "included_users": 10,
            "features": ["reporting"],
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (s, license) = self.post("/api/licenses", body).await;
        assert_eq!(s, 201, "license: {license}");
        license
    }

    /// Issues a token for `instance` under license `lid`: (status, body).
    pub async fn issue(&self, lid: &str, instance: &str) -> (u16, Value) {
        self.post(
            &format!("/api/licenses/{lid}/tokens"),
            json!({"instance": instance}),
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.expect("server stops");
        }
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"))
    };
    (status, value)
}

/// Runs a test body on both stores.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// How a test request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// The server admin (HTTP Basic).
    Admin,
    Basic(String, String),
    /// `Authorization: Bearer <token>` (a service-account token).
    Bearer(String),
}

impl TestApp {
    /// A request with the given credentials.
    pub fn request(
        &self,
        auth: &Auth,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match auth {
            Auth::None => req,
            Auth::Admin => req.basic_auth(ADMIN.0, Some(ADMIN.1)),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        }
    }

    /// Sends a request with the given credentials and optional JSON body.
    pub async fn call(
        &self,
        auth: &Auth,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.request(auth, method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    /// Creates (as the server admin) a service account with `role` and a
    /// token for it; returns the account's id and the token.
    pub async fn service_account(&self, name: &str, role: &str) -> (i64, String) {
        let (s, sa) = self
            .post("/api/serviceaccounts", json!({"name": name, "role": role}))
            .await;
        assert_eq!(s, 201, "service account: {sa}");
        let id = sa["id"].as_i64().expect("id");
        let (s, token) = self
            .post(
                &format!("/api/serviceaccounts/{id}/tokens"),
                json!({"name": format!("{name}-token")}),
            )
            .await;
        assert_eq!(s, 200, "token: {token}");
        (id, token["key"].as_str().expect("key").to_string())
    }
}

/// The `kid` in a token's JOSE header (empty when there is none).
pub fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h["kid"].as_str().map(str::to_string))
        .unwrap_or_default()
}
