//! A full run of `charter serve` with `CHARTER_LOG=debug`, its stderr
//! captured: the admin password, service-account token secrets, a guessed
//! password and the private key material never appear in it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::{Backend, Data, send};

/// A `charter serve` process; killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn logs_hold_no_secrets(backend: Backend) {
    let data = Data::new(backend).await;
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_charter"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CHARTER_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg("serve")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "https://issuer.test/",
        ])
        .env("CHARTER_DATABASE_URL", &data.database_url)
        .env("CHARTER_KEYS_DIR", data.keys_dir())
        .env("CHARTER_ADMIN_PASSWORD", &password)
        .env("CHARTER_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn charter serve");
    let pid = child.id();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut readers = vec![];
    let streams: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stderr.take().expect("stderr")),
        Box::new(child.stdout.take().expect("stdout")),
    ];
    for stream in streams {
        let lines = lines.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        }));
    }
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(
            Instant::now() < deadline,
            "no listening line: {:?}",
            lines.lock().expect("lines")
        );
        let found = lines.lock().expect("lines").iter().find_map(|l| {
            l.contains("listening").then(|| {
                l.rsplit("addr=")
                    .next()
                    .expect("addr")
                    .trim()
                    .trim_end_matches('"')
                    .to_string()
            })
        });
        if let Some(a) = found {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let admin = |m: Method, path: &str| {
        http.request(m, format!("{base}{path}"))
            .basic_auth("admin", Some(&password))
    };

    // A full run: products, accounts, licenses, tokens, renewals, service
    // accounts and their tokens, failed logins, legacy key deletion.
    let (s, _) = send(
        admin(Method::POST, "/api/products")
            .json(&json!({"slug": "ge", "name": "GE", "features": ["saml"]})),
    )
    .await;
    assert_eq!(s, 201);
    let (_, account) = send(
        admin(Method::POST, "/api/accounts").json(&json!({"company": "Acme", "slug": "acme"})),
    )
    .await;
    let (s, license) = send(admin(Method::POST, "/api/licenses").json(&json!({
        "account_id": account["id"], "products": ["ge"], "expires_at": "2099-01-01T00:00:00Z"})))
    .await;
    assert_eq!(s, 201, "{license}");
    let lid = license["lid"].as_str().expect("lid");
    let (s, issued) = send(
        admin(Method::POST, &format!("/api/licenses/{lid}/tokens"))
            .json(&json!({"instance": "https://g.example"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = send(
        http.post(format!("{base}/api/tokens/renew"))
            .bearer_auth(issued["token"].as_str().expect("token")),
    )
    .await;
    assert_eq!(s, 200);
    let (s, sa) = send(
        admin(Method::POST, "/api/serviceaccounts").json(&json!({"name": "ci", "role": "Admin"})),
    )
    .await;
    assert_eq!(s, 201);
    let mut keys = vec![];
    for name in ["one", "two"] {
        let (s, t) = send(
            admin(
                Method::POST,
                &format!("/api/serviceaccounts/{}/tokens", sa["id"]),
            )
            .json(&json!({"name": name})),
        )
        .await;
        assert_eq!(s, 200);
        keys.push((
            t["id"].as_i64().expect("id"),
            t["key"].as_str().expect("key").to_string(),
        ));
    }
    for (_, key) in &keys {
        let (s, _) = send(http.get(format!("{base}/api/auth/keys")).bearer_auth(key)).await;
        assert_eq!(s, 200);
    }
    let guessed = format!("guess-{}", uuid::Uuid::new_v4().simple());
    let (s, _) = send(
        http.get(format!("{base}/api/licenses"))
            .basic_auth("admin", Some(&guessed)),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = send(
        http.get(format!("{base}/api/licenses"))
            .basic_auth(&password, Some(&password)),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = send(
        http.delete(format!("{base}/api/auth/keys/{}", keys[0].0))
            .bearer_auth(&keys[1].1),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(
        http.get(format!("{base}/api/licenses"))
            .bearer_auth(&keys[0].1),
    )
    .await;
    assert_eq!(s, 401);

    // Stop gracefully, so the shutdown is logged too, then read everything.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stop = Instant::now() + Duration::from_secs(20);
    while readers.iter().any(|r| !r.is_finished()) && Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(proc);
    for r in readers {
        let _ = r.join();
    }
    let log = lines.lock().expect("lines").join("\n");
    assert!(log.contains("DEBUG"), "debug logs captured:\n{log}");
    assert!(
        log.contains("service account token created"),
        "the run is in the log"
    );
    assert!(
        log.contains("authentication failed"),
        "failures are logged, without the secret"
    );

    let mut secrets = vec![
        ("admin password", password.clone()),
        ("guessed password", guessed),
    ];
    for (_, key) in &keys {
        secrets.push(("token", key.clone()));
        secrets.push(("token secret", key["chr_sa_".len()..].to_string()));
    }
    // The private keys: every line of their PEM bodies.
    for entry in std::fs::read_dir(data.keys_dir())
        .expect("keys dir")
        .filter_map(Result::ok)
    {
        if entry.path().extension().is_some_and(|e| e == "pem") {
            let pem = std::fs::read_to_string(entry.path()).expect("pem");
            assert!(pem.contains("PRIVATE KEY"));
            for line in pem
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            {
                secrets.push(("private key", line.to_string()));
            }
        }
    }
    assert!(
        secrets.iter().any(|(what, _)| *what == "private key"),
        "a key was generated"
    );
    for (what, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "the log holds a {what}");
    }
}
