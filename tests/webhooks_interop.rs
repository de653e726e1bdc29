//! Issue 15: a receiver that verifies every delivery with the Standard
//! Webhooks reference library (PyPI `standardwebhooks`) sees every event
//! of a scripted scenario, in spite of a receiver outage of a few seconds
//! and an issuer SIGKILLed in the middle of a delivery. A delivery the
//! issuer could not record may come again, with the same `webhook-id`
//! (receivers deduplicate by it, as the specification says); no event is
//! missing and none comes twice under two ids.
//!
//! Needs a Python with `standardwebhooks`: `$CHARTER_PYTHON`, else
//! `.venv/bin/python` (`.ci/run` makes it). Skipped locally without one,
//! a failure when `CI` is set.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::procs::{self, Portal, eventually};
use common::{Backend, Data};
use serde_json::{Value, json};

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("CHARTER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

/// The Python receiver, killed on drop.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn receiver(
    python: &Path,
    port: u16,
    secret: &str,
    out: &Path,
    delay_first: Option<f64>,
) -> Receiver {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/webhook_receiver.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(port.to_string()).arg(secret).arg(out);
    if let Some(d) = delay_first {
        cmd.args(["--delay-first", &d.to_string()]);
    }
    let child = cmd.spawn().expect("start the Python receiver");
    let up = eventually(20, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "the receiver listens on {port}");
    Receiver(child)
}

/// What the receiver logged.
fn lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Verified deliveries: id → (type, times received).
fn verified(out: &Path) -> BTreeMap<String, (String, usize)> {
    let mut seen = BTreeMap::new();
    for l in lines(out) {
        assert_ne!(l["ok"], false, "a delivery failed verification: {l}");
        if l["ok"] == true {
            let id = l["id"].as_str().unwrap_or_default().to_string();
            let kind = l["type"].as_str().unwrap_or_default().to_string();
            seen.entry(id).or_insert((kind, 0)).1 += 1;
        }
    }
    seen
}

const FLAGS: &[&str] = &[
    "--webhook-interval-secs",
    "1",
    "--webhook-timeout-secs",
    "3",
    "--webhook-retry-schedule",
    "1,1,1,1,2,2,2,2,3,3,3,3,5,5,5,5,5,5",
    "--events-interval-secs",
    "0",
    "--push-interval-secs",
    "0",
];

async fn every_event_arrives_verified_through_an_outage_and_a_sigkill(backend: Backend) {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the Standard Webhooks interop check: no Python with standardwebhooks"
        );
        eprintln!("skipped: no Python with standardwebhooks; run .ci/run or set CHARTER_PYTHON");
        return;
    };
    let data = Data::new(backend).await;
    let dir = data.dir.path().to_path_buf();
    let out = dir.join("received.jsonl");
    let mut issuer = procs::issuer(&dir, &data.database_url, FLAGS);
    let portal = Portal::new(&issuer.base);
    let port = procs::free_port();
    let (s, hook) = portal
        .post(
            "/api/webhooks",
            json!({
                "url": format!("http://127.0.0.1:{port}/hook"),
                "event_types": ["license.created", "license.updated", "license.suspended",
                    "license.resumed", "license.revoked", "instance.bound", "token.issued"],
            }),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let id = hook["id"].as_str().expect("id").to_string();
    let secret = hook["secret"].as_str().expect("secret").to_string();
    let rx = receiver(&python, port, &secret, &out, None).await;

    // 1. A license, a token for a new instance, suspended and resumed.
    let lid = portal.license(json!({"max_instances": 2})).await;
    let (s, body) = portal
        .post(
            &format!("/api/licenses/{lid}/tokens"),
            json!({"instance": "https://grafana.acme.example/"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    for action in ["suspend", "resume"] {
        let (s, body) = portal
            .post(&format!("/api/licenses/{lid}/{action}"), json!({}))
            .await;
        assert_eq!(s, 200, "{body}");
    }
    let out2 = out.clone();
    assert!(
        eventually(20, || {
            let out = out2.clone();
            async move { verified(&out).len() == 5 }
        })
        .await,
        "{:?}",
        lines(&out)
    );

    // 2. The receiver is down for a few seconds while two changes happen.
    drop(rx);
    let (s, _) = portal
        .patch(
            &format!("/api/licenses/{lid}"),
            json!({"included_users": 20}),
        )
        .await;
    assert_eq!(s, 200);
    portal.license(json!({})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rx = receiver(&python, port, &secret, &out, None).await;
    let out2 = out.clone();
    assert!(
        eventually(30, || {
            let out = out2.clone();
            async move { verified(&out).len() == 7 }
        })
        .await,
        "after the outage: {:?}",
        lines(&out)
    );

    // 3. The issuer is SIGKILLed while the receiver holds a delivery.
    drop(rx);
    let _rx = receiver(&python, port, &secret, &out, Some(2.5)).await;
    portal.license(json!({})).await;
    let out2 = out.clone();
    assert!(
        eventually(20, || {
            let out = out2.clone();
            async move { lines(&out).iter().any(|l| l.get("start").is_some()) }
        })
        .await,
        "a delivery reached the slow receiver"
    );
    let held = lines(&out)
        .into_iter()
        .find_map(|l| l["start"].as_str().map(str::to_string))
        .expect("held id");
    issuer.kill();
    issuer = procs::issuer(&dir, &data.database_url, FLAGS);
    let portal = Portal::new(&issuer.base);
    let (s, _) = portal
        .post(&format!("/api/licenses/{lid}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200);

    // Every delivery recorded as delivered, and each one's event received.
    let settled = eventually(60, || {
        let portal = &portal;
        let id = &id;
        async move {
            let (_, d) = portal
                .get(&format!("/api/webhooks/{id}/deliveries?per_page=100"))
                .await;
            d["items"]
                .as_array()
                .is_some_and(|i| i.len() == 9 && i.iter().all(|d| d["state"] == "delivered"))
        }
    })
    .await;
    let (_, deliveries) = portal
        .get(&format!("/api/webhooks/{id}/deliveries?per_page=100"))
        .await;
    assert!(settled, "{deliveries}");
    let recorded: BTreeSet<String> = deliveries["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let seen = verified(&out);
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        recorded,
        "each event arrived, under its own id"
    );
    let mut kinds: Vec<&str> = seen.values().map(|(k, _)| k.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "instance.bound",
            "license.created",
            "license.created",
            "license.created",
            "license.resumed",
            "license.revoked",
            "license.suspended",
            "license.updated",
            "token.issued",
        ]
    );
    for (msg, (kind, times)) in &seen {
        if *msg == held {
            // Received before the kill (the issuer died before it could
            // record the answer), then sent again after the lease, under
            // the same id.
            assert_eq!(*times, 2, "{kind} {msg}");
        } else {
            assert_eq!(*times, 1, "{kind} {msg} came {times} times");
        }
    }
    issuer.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    every_event_arrives_verified_through_an_outage_and_a_sigkill(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    every_event_arrives_verified_through_an_outage_and_a_sigkill(Backend::Postgres).await;
}
