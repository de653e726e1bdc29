//! Issue 16, end to end: two issuers on one PostgreSQL and three
//! `charter instance` processes renewing continuously, each reading the
//! JWKS from one issuer or the other. A rotation through one issuer (with
//! `charter keys rotate --issuer`) costs not one renewal: the new kid is in
//! both issuers' JWKS before any token carries it, and every instance
//! verifies every new token. Then an emergency rotation: the old key's
//! tokens are refused at renewal and by the instances after their refresh.
//! And nothing private leaves the store unsealed: not in the logs, the
//! answers, nor the database.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::procs::{self, Portal, eventually, free_port};
use common::{Backend, Data, kid_of};
use serde_json::{Value, json};

const INSTANCE_PW: &str = "instance-admin-pw";

async fn jwks(http: &reqwest::Client, issuer: &str) -> Vec<String> {
    let Ok(res) = http
        .get(format!("{issuer}.well-known/jwks.json"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let body: Value = res.json().await.unwrap_or_default();
    body["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

fn charter(args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_charter"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CHARTER_") {
            c.env_remove(k);
        }
    }
    c.args(args).output().expect("charter runs")
}

/// What the test saw, for the assertions at the end.
#[derive(Default)]
struct Seen {
    /// kid → when it first appeared in issuer A's / B's JWKS.
    published: [HashMap<String, Instant>; 2],
    /// kid → when an instance first got a token signed with it.
    first_token: HashMap<String, Instant>,
    renewals: usize,
    failures: Vec<String>,
}

struct Instance {
    proc: procs::Proc,
    root: String,
    data: std::path::PathBuf,
}

impl Instance {
    fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("license.jwt"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    common::send(req.basic_auth("admin", Some(INSTANCE_PW))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_across_two_issuers_fails_no_renewal_and_no_verification() {
    let data = Data::new(Backend::Postgres).await;
    let flags = [
        "--push-interval-secs",
        "0",
        "--key-prepublish-hours",
        "0.0015", // 5.4 s
        "--key-poll-secs",
        "1",
        "--renew-limit-per-license",
        "0",
        "--renew-limit-per-address",
        "0",
    ];
    let a = procs::issuer(data.dir.path(), &data.database_url, &flags);
    // The second replica shares only the database and the master key.
    let b_dir = tempfile::tempdir().expect("dir");
    let master = data.keys_dir().join("master.key");
    let mut b_flags = flags.to_vec();
    b_flags.extend(["--master-key-file", master.to_str().expect("path")]);
    let b = procs::issuer(b_dir.path(), &data.database_url, &b_flags);
    let issuers = [a.base.clone(), b.base.clone()];
    let portal = Portal::new(&a.base);
    let http = reqwest::Client::new();
    let old = jwks(&http, &issuers[0]).await;
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(jwks(&http, &issuers[1]).await, old, "one key set for both");
    let old = old[0].clone();

    // Three instances: renewing through A, B, A; keys from A, B, B.
    let lid = portal.license(json!({"max_instances": 3})).await;
    let work = tempfile::tempdir().expect("dir");
    let mut instances = Vec::new();
    for (renew_via, keys_from) in [(0, 0), (1, 1), (0, 1)] {
        let port = free_port();
        let jwks_url = format!("{}.well-known/jwks.json", issuers[keys_from]);
        let proc = procs::instance_with(
            work.path(),
            &issuers[renew_via],
            port,
            "grafana",
            INSTANCE_PW,
            &["--jwks", &jwks_url, "--jwks-refresh-secs", "1"],
        );
        let root = format!("http://127.0.0.1:{port}/");
        let (s, issued) = portal
            .post(
                &format!("/api/licenses/{lid}/tokens"),
                json!({"instance": root}),
            )
            .await;
        assert_eq!(s, 201, "{issued}");
        let (s, installed) = call(
            http.post(format!("{root}api/licensing/token"))
                .json(&json!({"token": issued["token"]})),
        )
        .await;
        assert_eq!(s, 200, "{installed}");
        instances.push(Instance {
            proc,
            data: work.path().join(format!("instance-grafana-{port}")),
            root,
        });
    }

    // Watch both JWKS, and renew through every instance, continuously.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, issuer) in issuers.iter().enumerate() {
        let (seen, stop, http, issuer) = (seen.clone(), stop.clone(), http.clone(), issuer.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let kids = jwks(&http, &issuer).await;
                let at = Instant::now();
                {
                    let mut s = seen.lock().expect("lock");
                    for kid in kids {
                        s.published[i].entry(kid).or_insert(at);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for (n, me) in instances.iter().enumerate() {
        let (seen, stop, http) = (seen.clone(), stop.clone(), http.clone());
        let (root, file) = (me.root.clone(), me.data.join("license.jwt"));
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (s, body) = call(http.post(format!("{root}api/licensing/token/renew"))).await;
                let (_, valid) = call(http.get(format!("{root}api/licensing/check"))).await;
                let token = std::fs::read_to_string(&file).unwrap_or_default();
                let at = Instant::now();
                {
                    let mut seen = seen.lock().expect("lock");
                    if s != 200 || valid != json!(true) {
                        seen.failures
                            .push(format!("instance {n}: renew {s} {body}, check {valid}"));
                    } else {
                        seen.renewals += 1;
                        seen.first_token.entry(kid_of(token.trim())).or_insert(at);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Rotate through issuer A with the CLI and an Admin service account.
    let (s, sa) = portal
        .post(
            "/api/serviceaccounts",
            json!({"name": "rotator", "role": "Admin"}),
        )
        .await;
    assert_eq!(s, 201, "{sa}");
    let (s, token) = portal
        .post(
            &format!("/api/serviceaccounts/{}/tokens", sa["id"]),
            json!({"name": "rotate"}),
        )
        .await;
    assert_eq!(s, 200, "{token}");
    let sa_token = token["key"].as_str().expect("key").to_string();
    let out = charter(&[
        "keys",
        "rotate",
        "--issuer",
        &issuers[0],
        "--token",
        &sa_token,
    ]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("signs from"), "{printed}");
    let out = charter(&[
        "keys",
        "list",
        "--issuer",
        &issuers[1],
        "--token",
        &sa_token,
    ]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let new = listed
        .lines()
        .find(|l| l.contains("\tnext\t"))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("a next key, listed by the other issuer: {listed}"))
        .to_string();

    // Every instance ends up renewing with the new key, and keeps going.
    let files: Vec<_> = instances
        .iter()
        .map(|i| i.data.join("license.jwt"))
        .collect();
    let all_new = eventually(40, || {
        let (files, new) = (files.clone(), new.clone());
        async move {
            files
                .iter()
                .all(|f| kid_of(std::fs::read_to_string(f).unwrap_or_default().trim()) == new)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let seen = Arc::try_unwrap(seen)
        .map_err(|_| "still shared")
        .expect("seen")
        .into_inner()
        .expect("lock");
    assert!(all_new, "every instance holds a token of the new key");
    assert!(seen.failures.is_empty(), "failures: {:#?}", seen.failures);
    assert!(
        seen.renewals >= 30,
        "renewed continuously: {}",
        seen.renewals
    );
    let first = seen.first_token[&new];
    for (i, published) in seen.published.iter().enumerate() {
        let at = published
            .get(&new)
            .unwrap_or_else(|| panic!("issuer {i} published {new}"));
        assert!(
            *at < first,
            "issuer {i} published the new key before any token carried it"
        );
    }
    assert!(
        seen.first_token.contains_key(&old),
        "the old key signed before"
    );

    // Emergency rotation through B: the new key's tokens are refused at
    // renewal, and the instances stop trusting them after their refresh.
    let compromised = new;
    let out = charter(&[
        "keys",
        "rotate",
        "--issuer",
        &issuers[1],
        "--token",
        &sa_token,
        "--immediate",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("401"), "{printed}");
    for issuer in &issuers {
        let issuer = issuer.clone();
        let gone = eventually(10, || {
            let (http, issuer, compromised) = (http.clone(), issuer.clone(), compromised.clone());
            async move { !jwks(&http, &issuer).await.contains(&compromised) }
        })
        .await;
        assert!(gone, "{issuer} no longer publishes {compromised}");
    }
    let held = instances[0].token();
    assert_eq!(kid_of(&held), compromised);
    let (s, refused) = common::send(
        http.post(format!("{}api/tokens/renew", issuers[0]))
            .bearer_auth(&held),
    )
    .await;
    assert_eq!(s, 401, "{refused}");
    for root in instances.iter().map(|i| i.root.clone()) {
        let untrusted =
            eventually(10, || {
                let (http, root) = (http.clone(), root.clone());
                async move {
                    call(http.get(format!("{root}api/licensing/check"))).await.1 == json!(false)
                }
            })
            .await;
        assert!(untrusted, "{root} stops trusting the retired key's token");
    }

    // Nothing private in the clear: the private halves of every key the
    // store held, as PEM lines, are nowhere in the logs, the API's answers
    // or the database's text.
    let sealer = charter::sealed::Sealer::load(&master).expect("master key");
    let (client, conn) = tokio_postgres::connect(&data.database_url, tokio_postgres::NoTls)
        .await
        .expect("pg");
    tokio::spawn(conn);
    let rows = client
        .query("SELECT kid, sealed_key FROM signing_keys", &[])
        .await
        .expect("keys");
    let mut secrets = Vec::new();
    for r in &rows {
        let (kid, sealed): (String, String) = (r.get(0), r.get(1));
        if sealed.is_empty() {
            continue; // retired: erased
        }
        let pem = sealer.open_signing_key(&sealed, &kid).expect("opens");
        secrets.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 20)
                .map(str::to_string),
        );
        secrets.push(STANDARD.encode(pem.as_bytes()));
    }
    // The imported key's private half too (retired by now, erased in the store).
    for entry in std::fs::read_dir(data.keys_dir())
        .expect("dir")
        .filter_map(Result::ok)
    {
        if entry.path().extension().is_some_and(|e| e == "pem") {
            let pem = std::fs::read_to_string(entry.path()).expect("pem");
            secrets.extend(
                pem.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() > 20)
                    .map(str::to_string),
            );
        }
    }
    assert!(secrets.len() >= 20, "there are secrets to look for");
    let mut haystack = String::new();
    for table in [
        "signing_keys",
        "audit_events",
        "tokens",
        "instances",
        "licenses",
        "settings",
    ] {
        for r in client
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"))
        {
            haystack.push_str(r.get::<_, &str>(0));
        }
    }
    for path in [
        "/api/keys",
        "/api/audit?per_page=100",
        "/.well-known/jwks.json",
    ] {
        for issuer in &issuers {
            let (_, body) = Portal::new(issuer).get(path).await;
            haystack.push_str(&body.to_string());
        }
    }
    for log in [&a.log, &b.log] {
        while let Ok(line) = log.try_recv() {
            haystack.push_str(&line);
        }
    }
    for i in instances.iter() {
        while let Ok(line) = i.proc.log.try_recv() {
            haystack.push_str(&line);
        }
    }
    assert!(
        haystack.contains(&compromised),
        "the haystack holds what was said"
    );
    for secret in &secrets {
        assert!(
            !haystack.contains(secret.as_str()),
            "private key material found in the clear"
        );
    }
}
