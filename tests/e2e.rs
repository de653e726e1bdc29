//! End to end with real processes on loopback: a `charter serve` issuer and
//! `charter instance` processes, renewal pulled by the instance and pushed by
//! the issuer, and two issuers sharing one PostgreSQL.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::procs::{self, Portal, eventually, free_port, receiver};
use serde_json::{Value, json};

const INSTANCE_PW: &str = "instance-admin-pw";

fn instance_client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    common::send(req.basic_auth("admin", Some(INSTANCE_PW))).await
}

/// Issue 5: an instance is given a token, renews it through its Grafana
/// endpoint; once the license is suspended the renewal is refused, and the
/// instance keeps its still-valid token and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_renews_and_keeps_its_token_when_the_issuer_refuses() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("issuer.db").display());
    let issuer = procs::issuer(dir.path(), &db, &["--push-interval-secs", "0"]);
    let portal = Portal::new(&issuer.base);
    let lid = portal.license(json!({})).await;

    let port = free_port();
    let root = format!("http://127.0.0.1:{port}/");
    let instance = procs::instance(
        dir.path(),
        &issuer.base,
        port,
        "grafana,consul",
        INSTANCE_PW,
    );
    let http = instance_client();
    let (s, check) = call(http.get(format!("{root}api/licensing/check"))).await;
    assert_eq!((s, check), (200, json!(false)), "no license yet");

    // The vendor issues a token for this instance; the operator installs it.
    let (s, issued) = portal
        .post(
            &format!("/api/licenses/{lid}/tokens"),
            json!({"instance": root}),
        )
        .await;
    assert_eq!(s, 201, "{issued}");
    let first = issued["token"].as_str().expect("token");
    let (s, installed) = call(
        http.post(format!("{root}api/licensing/token"))
            .json(&json!({"token": first})),
    )
    .await;
    assert_eq!(s, 200, "{installed}");
    assert_eq!(
        (installed["status"].as_i64(), installed["lid"].as_str()),
        (Some(1), Some(lid.as_str()))
    );
    assert_eq!(
        call(http.get(format!("{root}api/licensing/check"))).await.1,
        json!(true)
    );

    // Renewal through the instance's Grafana endpoint reaches the issuer.
    let (s, renewed) = call(http.post(format!("{root}api/licensing/token/renew"))).await;
    assert_eq!(s, 200, "{renewed}");
    assert_ne!(renewed["jti"], issued["claims"]["jti"], "a new token");
    let (_, history) = portal.get(&format!("/api/licenses/{lid}/tokens")).await;
    assert_eq!(history["items"][0]["reason"], "renew");
    assert_eq!(history["items"][0]["jti"], renewed["jti"]);
    let held = std::fs::read_to_string(
        dir.path()
            .join(format!("instance-grafana,consul-{port}/license.jwt")),
    )
    .expect("license.jwt");
    assert_eq!(
        held.trim(),
        history["items"][0]["token"].as_str().expect("token"),
        "the renewed token is on disk"
    );

    // Suspended: the next renewal is refused, the instance keeps its token.
    let (s, _) = portal
        .post(&format!("/api/licenses/{lid}/suspend"), json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, refused) = call(http.post(format!("{root}api/licensing/token/renew"))).await;
    assert_eq!(s, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("suspended")),
        "{refused}"
    );
    assert_eq!(
        call(http.get(format!("{root}api/licensing/check"))).await.1,
        json!(true),
        "still valid"
    );
    let (s, consul) = call(http.get(format!("{root}v1/operator/license"))).await;
    assert_eq!(s, 200, "{consul}");
    assert_eq!(consul["Valid"], true);
    let warnings = consul["Warnings"].to_string();
    assert!(
        warnings.contains("suspended"),
        "the refusal is reported: {warnings}"
    );
    let still = std::fs::read_to_string(
        dir.path()
            .join(format!("instance-grafana,consul-{port}/license.jwt")),
    )
    .expect("license.jwt");
    assert_eq!(still, held, "the stored token is unchanged");
    instance.terminate();
    issuer.terminate();
}

/// Issue 6: the issuer pushes renewed tokens to three instances, one per
/// dialect; one goes down, its pushes back off, it comes back and gets its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_every_dialect_and_a_downed_instance_catches_up() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("issuer.db").display());
    let issuer = procs::issuer(
        dir.path(),
        &db,
        &[
            "--push-interval-secs",
            "1",
            "--push-backoff-base-secs",
            "1",
            "--push-backoff-max-secs",
            "2",
            "--push-timeout-secs",
            "2",
        ],
    );
    let portal = Portal::new(&issuer.base);
    let lid = portal.license(json!({"max_instances": 3})).await;

    let mut instances = HashMap::new();
    for dialect in ["grafana", "consul", "redis"] {
        let port = free_port();
        let proc = procs::instance(dir.path(), &issuer.base, port, dialect, INSTANCE_PW);
        let root = format!("http://127.0.0.1:{port}/");
        let (s, bound) = portal
            .post(
                &format!("/api/licenses/{lid}/instances"),
                json!({"url": root, "dialect": dialect, "push_enabled": true,
                       "credentials": {"type": "basic", "username": "admin", "password": INSTANCE_PW}}),
            )
            .await;
        assert_eq!(s, 201, "{bound}");
        assert_eq!(bound["has_credentials"], true);
        assert!(
            bound.get("credentials").is_none(),
            "credentials are never shown: {bound}"
        );
        instances.insert(
            dialect,
            (
                port,
                root,
                bound["id"].as_str().expect("id").to_string(),
                proc,
            ),
        );
    }
    let http = instance_client();

    // Each instance receives a token by push and serves it in its dialect.
    for (dialect, (_, root, id, _)) in &instances {
        let ok = eventually(20, || async {
            let (_, i) = portal
                .get(&format!("/api/licenses/{lid}/instances/{id}"))
                .await;
            i["push_last_ok_at"].is_string()
        })
        .await;
        assert!(ok, "{dialect} got no push");
        let served = match *dialect {
            "grafana" => {
                call(http.get(format!("{root}api/licensing/check"))).await.1 == json!(true)
            }
            "consul" => {
                call(http.get(format!("{root}v1/operator/license"))).await.1["Valid"] == true
            }
            _ => call(http.get(format!("{root}v1/license"))).await.0 == 200,
        };
        assert!(served, "{dialect} serves the pushed token");
    }

    // Consul goes down; a push now fails and backs off.
    let (port, root, id, proc) = instances.remove("consul").expect("consul");
    proc.terminate();
    let (s, after) = portal
        .post(
            &format!("/api/licenses/{lid}/instances/{id}/push"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{after}");
    assert_eq!(after["push_attempts"], 1, "{after}");
    assert!(
        after["push_last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{after}"
    );
    let backed_off = eventually(10, || async {
        portal
            .get(&format!("/api/licenses/{lid}/instances/{id}"))
            .await
            .1["push_attempts"]
            .as_i64()
            >= Some(2)
    })
    .await;
    assert!(backed_off, "retries while down");

    // It comes back on the same port and data; the next retry delivers the newest token.
    let back = procs::instance(dir.path(), &issuer.base, port, "consul", INSTANCE_PW);
    let recovered = eventually(20, || async {
        portal
            .get(&format!("/api/licenses/{lid}/instances/{id}"))
            .await
            .1["push_attempts"]
            == 0
    })
    .await;
    assert!(recovered, "delivered after it came back");
    let (_, inst) = portal
        .get(&format!("/api/licenses/{lid}/instances/{id}"))
        .await;
    let (_, history) = portal
        .get(&format!("/api/licenses/{lid}/tokens?per_page=100"))
        .await;
    let newest = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["instance_id"] == id.as_str())
        .expect("a token for consul");
    assert_eq!(newest["reason"], "push");
    assert_eq!(inst["last_jti"], newest["jti"]);
    let held = std::fs::read_to_string(
        dir.path()
            .join(format!("instance-consul-{port}/license.jwt")),
    )
    .expect("file");
    assert_eq!(
        held.trim(),
        newest["token"].as_str().expect("token"),
        "consul holds the newest token"
    );
    assert_eq!(
        call(http.get(format!("{root}v1/operator/license"))).await.1["Valid"],
        true
    );

    // The push metrics show deliveries and failures.
    let text = reqwest::get(format!("{}metrics", issuer.base))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(r#"charter_pushes_total{dialect="consul",outcome="failed"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"charter_pushes_total{dialect="redis",outcome="delivered"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("charter_push_instances_in_backoff 0")
            && text.contains("charter_push_instances_at_risk 0"),
        "{text}"
    );
    back.terminate();
    issuer.terminate();
}

/// Revocation travels: an instance with push on gets the removal pushed;
/// one without push learns it from the signed revocation list it polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_instances_by_push_and_by_poll() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("issuer.db").display());
    let issuer = procs::issuer(dir.path(), &db, &["--push-interval-secs", "1"]);
    let portal = Portal::new(&issuer.base);
    let lid = portal.license(json!({"max_instances": 2})).await;
    let http = instance_client();

    let pushed_port = free_port();
    let pushed_root = format!("http://127.0.0.1:{pushed_port}/");
    let pushed = procs::instance(
        dir.path(),
        &issuer.base,
        pushed_port,
        "grafana",
        INSTANCE_PW,
    );
    let polled_port = free_port();
    let polled_root = format!("http://127.0.0.1:{polled_port}/");
    let polled = procs::instance_with(
        dir.path(),
        &issuer.base,
        polled_port,
        "grafana",
        INSTANCE_PW,
        &["--revocations-interval-secs", "1"],
    );
    let (s, _) = portal
        .post(
            &format!("/api/licenses/{lid}/instances"),
            json!({"url": pushed_root, "push_enabled": true,
                   "credentials": {"type": "basic", "username": "admin", "password": INSTANCE_PW}}),
        )
        .await;
    assert_eq!(s, 201);
    let (_, issued) = portal
        .post(
            &format!("/api/licenses/{lid}/tokens"),
            json!({"instance": polled_root}),
        )
        .await;
    let (s, _) = call(
        http.post(format!("{polled_root}api/licensing/token"))
            .json(&json!({"token": issued["token"]})),
    )
    .await;
    assert_eq!(s, 200);
    for root in [&pushed_root, &polled_root] {
        let valid = eventually(20, || async {
            call(http.get(format!("{root}api/licensing/check"))).await.1 == json!(true)
        })
        .await;
        assert!(valid, "{root} holds a valid license");
    }

    let (s, _) = portal
        .post(&format!("/api/licenses/{lid}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200);
    let (_, list) = common::send(http.get(format!("{}api/revocations", issuer.base))).await;
    assert_eq!(list["revoked"], json!([lid]));
    for root in [&pushed_root, &polled_root] {
        let gone = eventually(20, || async {
            call(http.get(format!("{root}api/licensing/check"))).await.1 == json!(false)
        })
        .await;
        if !gone {
            let (_, insts) = portal.get(&format!("/api/licenses/{lid}/instances")).await;
            panic!("{root} still trusts the revoked license; issuer side: {insts}");
        }
    }
    // The push instance had its license removed; the polled one refuses to renew it.
    let (s, body) = call(http.post(format!("{polled_root}api/licensing/token/renew"))).await;
    assert_eq!(s, 403, "{body}");
    pushed.terminate();
    polled.terminate();
    issuer.terminate();
}

/// Issue 6: two issuers on one PostgreSQL database and 500 due instances:
/// every instance gets exactly one token per due renewal; then one issuer is
/// killed in the middle of a run and every renewal is still delivered, one
/// token per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_issuers_deliver_each_renewal_once_even_when_one_dies() {
    const N: usize = 500;
    let data = common::Data::new(common::Backend::Postgres).await;
    let dir = data.dir.path();
    let flags = [
        "--push-interval-secs",
        "1",
        "--push-concurrency",
        "8",
        "--push-lease-secs",
        "6",
        "--push-timeout-secs",
        "3",
    ];
    let a = procs::issuer(dir, &data.database_url, &flags);
    let b = procs::issuer(dir, &data.database_url, &flags);
    let portal = Portal::new(&a.base);
    let lid = portal.license(json!({"max_instances": N})).await;
    let (target, got) = receiver(Duration::from_millis(40)).await;

    // Bind 500 instances with push on: each is due at once.
    let mut set = tokio::task::JoinSet::new();
    for n in 0..N {
        let (http, base, lid, target) = (
            portal.http.clone(),
            portal.base.clone(),
            lid.clone(),
            target.clone(),
        );
        set.spawn(async move {
            let req = http
                .post(format!("{base}/api/licenses/{lid}/instances"))
                .basic_auth(common::ADMIN.0, Some(common::ADMIN.1))
                .json(&json!({"url": format!("{target}/{n}/"), "push_enabled": true}));
            common::send(req).await.0
        });
        if set.len() >= 16 {
            assert_eq!(set.join_next().await.expect("task").expect("join"), 201);
        }
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.expect("join"), 201);
    }
    let all = eventually(120, || async { got.lock().expect("lock").len() == N }).await;
    assert!(
        all,
        "every instance got its first push: {}",
        got.lock().expect("lock").len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let got = got.lock().expect("lock");
        let twice: Vec<_> = got.iter().filter(|(_, v)| v.len() != 1).collect();
        assert!(
            twice.is_empty(),
            "pushed more than once: {:?}",
            &twice[..twice.len().min(3)]
        );
    }

    // Round two: every renewal falls due again; kill issuer A in the middle.
    let (client, conn) = tokio_postgres::connect(&data.database_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    client
        .execute("UPDATE instances SET push_next_at = 0", &[])
        .await
        .expect("make due");
    let started = eventually(30, || async {
        got.lock()
            .expect("lock")
            .values()
            .filter(|v| v.len() >= 2)
            .count()
            >= 40
    })
    .await;
    assert!(started, "round two started");
    a.kill();
    let second = eventually(120, || async {
        got.lock().expect("lock").values().all(|v| v.len() >= 2)
    })
    .await;
    let got = got.lock().expect("lock").clone();
    assert!(
        second,
        "every renewal delivered after the kill: {} of {N}",
        got.values().filter(|v| v.len() >= 2).count()
    );
    let mut redelivered = 0;
    for (n, jtis) in &got {
        let mut distinct = jtis.clone();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            2,
            "instance {n}: one token per renewal, got {jtis:?}"
        );
        redelivered += jtis.len() - distinct.len();
    }
    // Only what A had in flight when it died can arrive twice (the same token).
    assert!(redelivered <= 8, "{redelivered} redeliveries");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM tokens WHERE reason = 'push'", &[])
        .await
        .expect("count")
        .get(0);
    eprintln!(
        "{N} instances, 2 rounds: {} deliveries, {redelivered} redelivered after the kill, {rows} push tokens recorded",
        got.values().map(Vec::len).sum::<usize>()
    );
    assert!(
        rows >= 2 * N as i64 && rows <= 2 * N as i64 + 8,
        "{rows} push tokens"
    );
    b.terminate();
}
