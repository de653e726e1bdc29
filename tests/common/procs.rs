//! Real `charter` processes for end-to-end tests: an issuer (`serve`) and
//! instances (`instance`), each on a loopback port, killed on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    pub base: String,
    pub log: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn charter() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_charter"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CHARTER_") {
            c.env_remove(k);
        }
    }
    c
}

/// Spawns `charter <args>` and waits for its "listening addr=" log line.
fn spawn(mut cmd: Command, dir: &Path) -> Proc {
    let mut child = cmd
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn charter");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the receiver is gone, so the child never sees a broken pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains("listening") && line.contains("addr=") {
                let addr = line
                    .rsplit("addr=")
                    .next()
                    .expect("addr")
                    .trim()
                    .trim_matches('"')
                    .to_string();
                return Proc {
                    child,
                    base: format!("http://{addr}/"),
                    log: rx,
                };
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("charter exited with {status}:\n{seen}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("charter did not start:\n{seen}");
}

/// `charter serve` on a free loopback port; `extra` are more flags.
pub fn issuer(dir: &Path, database_url: &str, extra: &[&str]) -> Proc {
    let mut cmd = charter();
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
        .args(["--keys-dir", &dir.join("keys").to_string_lossy()])
        // Instances and receivers in tests listen on loopback.
        .arg("--push-allow-private")
        .args(extra)
        .env("CHARTER_ADMIN_PASSWORD", super::ADMIN.1);
    spawn(cmd, dir)
}

/// `charter instance` on `port` (0 for any), trusting the issuer's JWKS.
pub fn instance(dir: &Path, issuer: &str, port: u16, dialects: &str, password: &str) -> Proc {
    instance_with(dir, issuer, port, dialects, password, &[])
}

/// [`instance`] with more flags.
pub fn instance_with(
    dir: &Path,
    issuer: &str,
    port: u16,
    dialects: &str,
    password: &str,
    extra: &[&str],
) -> Proc {
    let data = dir.join(format!("instance-{dialects}-{port}"));
    let mut cmd = charter();
    cmd.arg("instance")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--issuer", issuer])
        .args(["--root-url", &format!("http://127.0.0.1:{port}/")])
        .args(["--data", &data.to_string_lossy(), "--dialects", dialects])
        .args(extra)
        .env("CHARTER_INSTANCE_ADMIN_PASSWORD", password);
    spawn(cmd, dir)
}

/// A port free now (for an instance whose root URL must be known before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `check` until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The admin side of an issuer process.
pub struct Portal {
    pub base: String,
    pub http: reqwest::Client,
}

impl Portal {
    pub fn new(base: &str) -> Portal {
        Portal {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(m, format!("{}{path}", self.base))
            .basic_auth(super::ADMIN.0, Some(super::ADMIN.1))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        super::send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        super::send(self.req(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        super::send(self.req(reqwest::Method::PATCH, path).json(&body)).await
    }

    /// A product, an account and a license with `extra` terms; returns the lid.
    pub async fn license(&self, extra: serde_json::Value) -> String {
        let (s, _) = self
            .post("/api/products", serde_json::json!({"slug": "grafana-enterprise", "name": "Grafana Enterprise", "features": ["reporting"]}))
            .await;
        assert!(s == 201 || s == 409);
        let slug = format!("acme-{}", uuid::Uuid::new_v4().simple());
        let (s, account) = self
            .post(
                "/api/accounts",
                serde_json::json!({"company": "Acme", "slug": slug}),
            )
            .await;
        assert_eq!(s, 201, "{account}");
        let mut body = serde_json::json!({"account_id": account["id"], "products": ["grafana-enterprise"],
            "expires_at": "2099-01-01T00:00:00Z", "features": ["reporting"], "included_users": 10});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (s, l) = self.post("/api/licenses", body).await;
        assert_eq!(s, 201, "{l}");
        l["lid"].as_str().expect("lid").to_string()
    }
}

/// What a receiver got: for each instance (path prefix), the token ids in order.
pub type Deliveries = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// A loopback receiver standing in for many Grafana instances on one port:
/// `POST /{n}/api/licensing/token` records the token's `jti` after `delay`.
pub async fn receiver(delay: Duration) -> (String, Deliveries) {
    use axum::extract::{Path, State};
    let got: Deliveries = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{n}/api/licensing/token",
            axum::routing::post(
                move |State(got): State<Deliveries>,
                      Path(n): Path<String>,
                      body: axum::Json<serde_json::Value>| async move {
                    tokio::time::sleep(delay).await;
                    let token = body.0["token"].as_str().unwrap_or_default().to_string();
                    let jti = charter_token::insecure_decode(&token)
                        .map(|(_, c)| c.jti)
                        .unwrap_or_default();
                    got.lock().expect("lock").entry(n).or_default().push(jti);
                    axum::Json(serde_json::json!({}))
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), got)
}
