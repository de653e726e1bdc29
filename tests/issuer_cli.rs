//! The `charter` binary as an operator uses it: `serve` with no flags in an
//! empty directory, `migrate`, `token verify --jwks <url>`, and the OpenAPI
//! document served by a running issuer.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use serde_json::json;

fn charter() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_charter"));
    // Nothing from the developer's environment leaks into these runs.
    for (k, _) in std::env::vars() {
        if k.starts_with("CHARTER_") {
            c.env_remove(k);
        }
    }
    c
}

/// A `charter serve` process; killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `charter serve` in `dir` and returns it with its address and everything it printed.
fn serve_in(dir: &Path, args: &[&str]) -> (Proc, String, String) {
    let mut child = charter()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn charter serve");
    let stderr = child.stderr.take().expect("stderr");
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("listening") {
            let addr = line
                .rsplit("addr=")
                .next()
                .expect("addr")
                .trim()
                .trim_end_matches('"')
                .to_string();
            return (proc, addr, printed);
        }
    }
    panic!("charter serve did not start:\n{printed}");
}

#[tokio::test]
async fn serve_with_no_flags_keeps_data_and_keys_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let (proc, addr, printed) = serve_in(dir.path(), &[]);
    assert!(
        dir.path().join("data/charter.db").exists(),
        "SQLite file made:\n{printed}"
    );
    assert!(
        printed.contains("generated an RS256 key"),
        "says it made a key:\n{printed}"
    );
    // The signing key lives in the database, sealed; the keys directory
    // holds only the master key that seals it, readable by its owner only.
    let files: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
        .expect("keys dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["master.key"], "{printed}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("keys/master.key")).expect("meta");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "master key readable by its owner only"
        );
    }
    // The generated admin password is printed once and works.
    let password = printed
        .lines()
        .find_map(|l| {
            l.split("Generated admin password for user \"admin\": ")
                .nth(1)
        })
        .expect("password printed")
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let res = http
        .get(format!("http://{addr}/api/licenses"))
        .basic_auth("admin", Some(&password))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    let health: serde_json::Value = http
        .get(format!("http://{addr}/api/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health, json!({"status": "ok", "database": "sqlite"}));
    drop(proc);

    // A second start reuses key and password, and prints the password no more.
    let (_proc, addr, printed) = serve_in(dir.path(), &[]);
    assert!(!printed.contains("Generated admin password"), "{printed}");
    assert!(
        !printed.contains(&password),
        "the password is never printed again"
    );
    assert!(!printed.contains("generated an RS256 key"), "{printed}");
    let res = http
        .get(format!("http://{addr}/api/licenses"))
        .basic_auth("admin", Some(&password))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_served_token_verifies_with_the_cli_against_the_jwks_url() {
    let app = TestApp::start(Backend::Sqlite).await;
    let license = app.license(json!({})).await;
    let (s, issued) = app
        .issue(
            license["lid"].as_str().expect("lid"),
            "https://grafana.acme.example/",
        )
        .await;
    assert_eq!(s, 201);
    let token = issued["token"].as_str().expect("token").to_string();
    let jwks = app.url("/.well-known/jwks.json");
    let run = |token: String, instance: &'static str| {
        let jwks = jwks.clone();
        tokio::task::spawn_blocking(move || {
            let mut child = charter()
                .args(["token", "verify", "--jwks", &jwks, "--instance", instance])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(token.as_bytes())
                .expect("write");
            child.wait_with_output().expect("output")
        })
    };
    let out = run(token.clone(), "https://grafana.acme.example")
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("valid:"), "{stdout}");
    let out = run(token, "https://other.example").await.expect("join");
    assert!(!out.status.success(), "another instance is refused");
    app.stop().await;
}

#[tokio::test]
async fn migrate_applies_the_schema_to_both_stores() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("m.db");
    let out = charter()
        .args([
            "migrate",
            "--database-url",
            &format!("sqlite://{}", db.display()),
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());

    let data = common::Data::new(Backend::Postgres).await;
    let url = data.database_url.clone();
    for _ in 0..2 {
        // Twice: the second run has nothing to do and still succeeds.
        let url = url.clone();
        let out = tokio::task::spawn_blocking(move || {
            charter()
                .args(["migrate"])
                .env("CHARTER_DATABASE_URL", url)
                .output()
        })
        .await
        .expect("join")
        .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('licenses', 'instances', 'tokens')", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(n, 3);
    drop(client);
    let _ = task.await;

    // A server started with --no-migrate on the migrated database works.
    let mut config = data.config();
    config.migrate = false;
    let server = charter::serve::start(config)
        .await
        .expect("starts without migrating");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (s, doc) = common::send(app.http.get(app.url("/api/openapi.json"))).await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/health", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/api/products", "post"),
        ("/api/products/{slug}", "patch"),
        ("/api/accounts", "get"),
        ("/api/accounts/{id}", "patch"),
        ("/api/licenses", "get"),
        ("/api/licenses", "post"),
        ("/api/licenses/{lid}", "patch"),
        ("/api/licenses/{lid}/suspend", "post"),
        ("/api/licenses/{lid}/resume", "post"),
        ("/api/licenses/{lid}/revoke", "post"),
        ("/api/licenses/{lid}/instances", "post"),
        ("/api/licenses/{lid}/instances/{id}", "delete"),
        ("/api/licenses/{lid}/tokens", "post"),
        ("/api/licenses/{lid}/tokens", "get"),
        ("/api/tokens/renew", "post"),
        ("/api/licenses/{lid}/instances/{id}/push", "post"),
        ("/api/revocations", "get"),
        ("/api/serviceaccounts", "post"),
        ("/api/serviceaccounts/search", "get"),
        ("/api/auth/keys", "get"),
        ("/api/auth/keys", "post"),
        ("/api/audit", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["License"].is_object());
    assert!(doc["components"]["schemas"]["Claims"]["properties"]["anonymousRatio"].is_object());
    app.stop().await;
}

#[test]
fn a_bad_setting_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("charter.toml");
    std::fs::write(&cfg, "renew_grace_days = -3\n").expect("write");
    let out = charter()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("renew_grace_days"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&cfg, "listen_port = 80\n").expect("write");
    let out = charter()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listen_port"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn postgres_tls_follows_sslmode() {
    let data = common::Data::new(Backend::Postgres).await;
    let url = &data.database_url;
    // The local server offers TLS with a self-signed certificate: `prefer`
    // (the default) and `require` encrypt, `verify-full` refuses it, `disable` is plain.
    for ok in [
        url.clone(),
        format!("{url}?sslmode=require"),
        format!("{url}?sslmode=disable"),
    ] {
        charter::db::PgStore::connect(&ok)
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e:#}"));
    }
    let strict = format!("{url}?sslmode=verify-full");
    let err = match charter::db::PgStore::connect(&strict).await {
        Ok(_) => panic!("a self-signed certificate must not pass verify-full"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("TLS") || err.contains("certificate"), "{err}");
}

#[test]
fn token_verify_without_keys_says_either_source_will_do() {
    let out = charter()
        .args(["token", "verify", "/dev/null"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--keys") && err.contains("--jwks"), "{err}");
}
