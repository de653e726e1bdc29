//! `charter serve` killed with SIGKILL in the middle of issuances, renewals
//! and pushes, on both stores, then restarted on the same data: every token
//! answered before the kill is recorded, every token row belongs to an
//! instance that points at its newest token (issuance writes both in one
//! transaction), and every push that was due is delivered after the restart
//! (the dead process's lease expires and the push is retried).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Backend;
use common::procs::{self, Portal, eventually, receiver};
use serde_json::{Value, json};

both_stores!(sigkill_mid_issuance_and_push);

const PUSHED: usize = 24;
const FLAGS: [&str; 14] = [
    "--push-interval-secs",
    "1",
    "--push-concurrency",
    "4",
    "--push-lease-secs",
    "4",
    "--push-timeout-secs",
    "2",
    "--push-backoff-base-secs",
    "1",
    "--renew-limit-per-license",
    "0",
    "--renew-limit-per-address",
    "0",
];

async fn sigkill_mid_issuance_and_push(backend: Backend) {
    let data = common::Data::new(backend).await;
    let dir = data.dir.path();
    let issuer = procs::issuer(dir, &data.database_url, &FLAGS);
    let portal = Portal::new(&issuer.base);
    let lid = portal.license(json!({"max_instances": 1000})).await;
    let (target, got) = receiver(Duration::from_millis(300)).await;

    // Instances with push on: each is due at once, four deliveries at a time.
    for n in 0..PUSHED {
        let (s, b) = portal
            .post(
                &format!("/api/licenses/{lid}/instances"),
                json!({"url": format!("{target}/{n}/"), "push_enabled": true}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    // Issuances (new instances) and renewals, answered ones remembered.
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let issuing = {
        let (http, base, lid, answered) = (
            portal.http.clone(),
            portal.base.clone(),
            lid.clone(),
            answered.clone(),
        );
        tokio::spawn(async move {
            for n in 0.. {
                let req = http
                    .post(format!("{base}/api/licenses/{lid}/tokens"))
                    .basic_auth(common::ADMIN.0, Some(common::ADMIN.1))
                    .json(&json!({"instance": format!("https://k{n}.example/")}));
                let Ok(res) = req.send().await else { return n };
                let Ok(body) = res.json::<Value>().await else {
                    return n;
                };
                let Some(token) = body["token"].as_str() else {
                    return n;
                };
                answered
                    .lock()
                    .expect("lock")
                    .push(body["claims"]["jti"].as_str().expect("jti").to_string());
                let req = http
                    .post(format!("{base}/api/tokens/renew"))
                    .bearer_auth(token);
                let Ok(res) = req.send().await else { return n };
                let Ok(body) = res.json::<Value>().await else {
                    return n;
                };
                if let Some(jti) = body["claims"]["jti"].as_str() {
                    answered.lock().expect("lock").push(jti.to_string());
                }
            }
            0
        })
    };
    // Kill once some pushes arrived and more are in flight.
    let started = eventually(30, || async {
        got.lock().expect("lock").len() >= 4 && answered.lock().expect("lock").len() >= 2
    })
    .await;
    assert!(started, "pushes started");
    let delivered_before = got.lock().expect("lock").len();
    issuer.kill();
    let issued_before_kill = issuing.await.expect("join");
    assert!(issued_before_kill > 0, "issuances ran before the kill");

    // Restart on the same data and keys.
    let issuer = procs::issuer(dir, &data.database_url, &FLAGS);
    let portal = Portal::new(&issuer.base);
    // The restarted issuer's push job records tokens meanwhile: read the
    // instances, the tokens and the instances again, until no push came in
    // between (a consistent pair of reads).
    let mut snapshot = None;
    for _ in 0..50 {
        let (s, before) = portal.get(&format!("/api/licenses/{lid}/instances")).await;
        assert_eq!(s, 200, "{before}");
        let (s, tokens) = portal
            .get(&format!("/api/licenses/{lid}/tokens?per_page=1000"))
            .await;
        assert_eq!(s, 200, "{tokens}");
        let (_, after) = portal.get(&format!("/api/licenses/{lid}/instances")).await;
        if before == after {
            snapshot = Some((before, tokens));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (instances, tokens) = snapshot.expect("the instances held still between two reads");
    let instances = instances.as_array().expect("list").clone();
    let tokens = tokens["items"].as_array().expect("items").clone();

    // Every answered token is recorded.
    let recorded: HashSet<&str> = tokens.iter().filter_map(|t| t["jti"].as_str()).collect();
    let answered = answered.lock().expect("lock").clone();
    for jti in &answered {
        assert!(recorded.contains(jti.as_str()), "answered {jti} but lost");
    }
    // No half-written issuance: each token belongs to an instance, and each
    // instance's last token is recorded and is its newest.
    let ids: HashSet<&str> = instances.iter().filter_map(|i| i["id"].as_str()).collect();
    let mut newest: HashMap<&str, &Value> = HashMap::new();
    for t in &tokens {
        let id = t["instance_id"].as_str().expect("instance_id");
        assert!(ids.contains(id), "token {} of no instance", t["jti"]);
        // Listed newest first: the first seen per instance is its newest.
        newest.entry(id).or_insert(t);
    }
    for i in &instances {
        let id = i["id"].as_str().expect("id");
        match (i["last_jti"].as_str(), newest.get(id)) {
            (Some(last), Some(t)) => {
                assert!(
                    recorded.contains(last),
                    "instance {id} points at a lost token"
                );
                assert_eq!(
                    t["iat"],
                    tokens.iter().find(|t| t["jti"] == last).expect("its token")["iat"],
                    "instance {id} points at its newest token"
                );
            }
            (None, None) => {}
            (last, t) => panic!("instance {id}: last_jti {last:?} but tokens {t:?}"),
        }
    }

    // Every due push is delivered after the restart: each pushed instance
    // eventually receives the token it now points at.
    let all = eventually(60, || async {
        let (_, list) = portal.get(&format!("/api/licenses/{lid}/instances")).await;
        let got = got.lock().expect("lock");
        list.as_array().is_some_and(|l| {
            l.iter().filter(|i| i["push_enabled"] == true).all(|i| {
                let n = i["url"]
                    .as_str()
                    .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
                    .unwrap_or_default();
                match (i["last_jti"].as_str(), got.get(n)) {
                    (Some(last), Some(jtis)) => jtis.iter().any(|j| j == last),
                    _ => false,
                }
            })
        })
    })
    .await;
    let got = got.lock().expect("lock").clone();
    assert!(
        all,
        "every due push delivered after the restart: {} of {PUSHED}",
        got.len()
    );
    let deliveries: usize = got.values().map(Vec::len).sum();
    eprintln!(
        "{backend:?}: killed with {delivered_before} of {PUSHED} pushes delivered and {} issuances/renewals answered; \
         after restart all {PUSHED} delivered ({deliveries} deliveries), {} tokens recorded, none lost",
        answered.len(),
        tokens.len()
    );
    issuer.terminate();
}
