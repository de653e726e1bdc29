//! `charter instance` as a process: flags and environment, the chosen
//! dialects on one port, the license kept across a restart, graceful
//! shutdown on SIGTERM. (The end-to-end test with a real issuer is separate.)

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use charter_token::keys::generate_pem;
use charter_token::{Claims, DAY, KeyAlg, Keyring, SigningKey, now};
use serde_json::{Value, json};

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binds");
    l.local_addr().expect("address").port()
}

fn start(port: u16, dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_charter"))
        .arg("instance")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--root-url", &format!("http://127.0.0.1:{port}/")])
        .args(["--data", &dir.join("data").to_string_lossy()])
        .args(["--jwks", &dir.join("jwks.json").to_string_lossy()])
        .args(extra)
        .env("CHARTER_INSTANCE_ADMIN_PASSWORD", "pw")
        .env("CHARTER_INSTANCE_DIALECTS", "grafana,redis")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("charter instance starts")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client
            .get(format!("{base}api/licensing/check"))
            .send()
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("charter instance did not listen in time");
}

fn stop(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            assert!(status.success(), "graceful exit, got {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("charter instance did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serves_the_chosen_dialects_keeps_the_license_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::from_pem(&generate_pem(KeyAlg::EdDsa, 0).expect("key")).expect("parses");
    let keyring = Keyring::from_keys(key, vec![]);
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_string(&keyring.jwks()).expect("serialises"),
    )
    .expect("writes");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/");
    let t = now();
    let token = keyring
        .sign(&Claims {
            sub: base.clone(),
            lid: "lic-cli".into(),
            iat: t,
            nbf: t,
            exp: t + 30 * DAY,
            lexp: t + 365 * DAY,
            ..Claims::default()
        })
        .expect("signs");
    let client = reqwest::Client::new();

    let child = start(port, dir.path(), &[]);
    wait_ready(&client, &base).await;
    let check = |c: &reqwest::Client| {
        c.get(format!("{base}api/licensing/check"))
            .basic_auth("admin", Some("pw"))
            .send()
    };
    let resp = check(&client).await.expect("answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.expect("JSON"), json!(false));
    let resp = client
        .post(format!("{base}api/licensing/token"))
        .basic_auth("admin", Some("pw"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["status"], 1);
    assert_eq!(body["lid"], "lic-cli");
    let resp = client
        .get(format!("{base}v1/license"))
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    // Consul was not chosen.
    let resp = client
        .get(format!("{base}v1/operator/license"))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 404);
    stop(child);

    let child = start(port, dir.path(), &["--admin-user", "root"]);
    wait_ready(&client, &base).await;
    let resp = client
        .get(format!("{base}api/licensing/check"))
        .basic_auth("root", Some("pw"))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        resp.json::<Value>().await.expect("JSON"),
        json!(true),
        "kept across restart"
    );
    let resp = check(&client).await.expect("answers");
    assert_eq!(resp.status(), 401, "the admin user is now root");
    stop(child);
}

#[test]
fn refuses_to_start_without_a_password_or_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_charter"))
        .args([
            "instance",
            "--root-url",
            "http://127.0.0.1:1/",
            "--issuer",
            "http://127.0.0.1:1",
        ])
        .args(["--data", &dir.path().to_string_lossy()])
        .env_remove("CHARTER_INSTANCE_ADMIN_PASSWORD")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-password"));

    let out = Command::new(env!("CARGO_BIN_EXE_charter"))
        .args([
            "instance",
            "--root-url",
            "http://127.0.0.1:1/",
            "--admin-password",
            "pw",
        ])
        .args(["--data", &dir.path().to_string_lossy()])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--issuer or --jwks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The instance started on a `license.jwt` that is damaged on disk, or gone:
/// it says why (Consul's `Warnings`, and the log) and serves the built-in
/// license it was started with.
#[tokio::test]
async fn a_damaged_or_missing_license_file_falls_back_to_the_builtin_license() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::from_pem(&generate_pem(KeyAlg::EdDsa, 0).expect("key")).expect("parses");
    let keyring = Keyring::from_keys(key, vec![]);
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_string(&keyring.jwks()).expect("serialises"),
    )
    .expect("writes");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/");
    let t = now();
    let sign = |lid: &str| {
        keyring
            .sign(&Claims {
                sub: base.clone(),
                lid: lid.into(),
                iat: t,
                nbf: t,
                exp: t + 30 * DAY,
                lexp: t + 365 * DAY,
                ..Claims::default()
            })
            .expect("signs")
    };
    let builtin = dir.path().join("builtin.jwt");
    std::fs::write(&builtin, sign("built-in")).expect("writes");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let stored = sign("stored");
    let client = reqwest::Client::new();
    let consul = |c: &reqwest::Client| {
        c.get(format!("{base}v1/operator/license"))
            .basic_auth("admin", Some("pw"))
            .send()
    };
    let flags = ["--builtin-license", &builtin.to_string_lossy()];
    let run = |content: Option<Vec<u8>>| {
        let file = data.join("license.jwt");
        match content {
            Some(c) => std::fs::write(&file, c).expect("writes"),
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
        // Consul too, for its `Warnings`; stderr kept for the log.
        Command::new(env!("CARGO_BIN_EXE_charter"))
            .arg("instance")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--root-url", &base])
            .args(["--data", &data.to_string_lossy()])
            .args(["--jwks", &dir.path().join("jwks.json").to_string_lossy()])
            .args(flags)
            .env("CHARTER_INSTANCE_ADMIN_PASSWORD", "pw")
            .env("CHARTER_INSTANCE_DIALECTS", "grafana,consul")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("charter instance starts")
    };

    // A good file: served, no warning.
    let child = run(Some(stored.clone().into_bytes()));
    wait_ready(&client, &base).await;
    let body: Value = consul(&client)
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["License"]["license_id"], "stored", "{body}");
    assert_eq!(body["Warnings"], json!([]), "{body}");
    stop(child);

    let mut half = stored.clone().into_bytes();
    half.truncate(half.len() / 2);
    for (name, content, says) in [
        ("garbage", Some(b"\x00\xffnot a token".to_vec()), "unusable"),
        ("truncated", Some(half), "unusable"),
        ("deleted", None, ""),
    ] {
        let mut child = run(content);
        wait_ready(&client, &base).await;
        let body: Value = consul(&client)
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
        assert_eq!(body["Valid"], true, "{name}: {body}");
        assert_eq!(body["License"]["license_id"], "built-in", "{name}: {body}");
        let warnings = body["Warnings"].to_string();
        assert!(warnings.contains(says), "{name}: {warnings}");
        let check: Value = client
            .get(format!("{base}api/licensing/check"))
            .basic_auth("admin", Some("pw"))
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
        assert_eq!(check, json!(true), "{name}");
        if !says.is_empty() {
            // The log says it too.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let output = child.wait_with_output().expect("exits");
            let log = String::from_utf8_lossy(&output.stderr);
            assert!(
                log.contains("stored license is unusable") && log.contains("built-in"),
                "{name}: {log}"
            );
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
