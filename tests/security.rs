//! Attacks from the outside review, kept as regression tests (issuer side,
//! both stores where storage is involved).

mod common;

use std::time::Duration;

use common::{Auth, Backend, TestApp};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_stores!(viewers_see_token_history_without_the_tokens);

/// A token renews, so it is a credential: a Viewer must not be able to
/// read one from the history and renew as the instance.
async fn viewers_see_token_history_without_the_tokens(backend: Backend) {
    let app = TestApp::start(backend).await;
    let lid = app.license(json!({})).await["lid"]
        .as_str()
        .expect("lid")
        .to_string();
    let (s, issued) = app.issue(&lid, "https://grafana.example.com/").await;
    assert_eq!(s, 201, "{issued}");
    let path = format!("/api/licenses/{lid}/tokens");

    let (_, viewer) = app.service_account("auditor", "Viewer").await;
    let (s, page) = app
        .call(&Auth::Bearer(viewer), Method::GET, &path, None)
        .await;
    assert_eq!(s, 200, "{page}");
    let item = &page["items"][0];
    assert_eq!(item["jti"], issued["claims"]["jti"], "{page}");
    assert!(item.get("token").is_none(), "no token text: {page}");

    let (_, editor) = app.service_account("support", "Editor").await;
    let (s, page) = app
        .call(&Auth::Bearer(editor), Method::GET, &path, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["items"][0]["token"], issued["token"]);
    // That read is in the audit trail, naming who and which tokens.
    let (_, events) = app
        .get(&format!("/api/audit?action=token.read&target_id={lid}"))
        .await;
    assert_eq!(events["total"], 1, "{events}");
    assert_eq!(events["items"][0]["actor"], "sa-support");
    assert_eq!(
        events["items"][0]["detail"]["jtis"][0],
        issued["claims"]["jti"]
    );
    app.stop().await;
}

/// Opens a connection and sends `head` without ever finishing the request:
/// how long until the server gives up on it (or `None` within `limit`).
async fn held_open(addr: &str, head: &[u8], limit: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(head).await.expect("write");
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), conn.read(&mut buf)).await
        {
            // Closed (or answered 408 and then closed).
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// Slow clients no longer hold a connection forever: headers trickled in,
/// or a body promised by `Content-Length` and never sent, are cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let app = TestApp::start_with(Backend::Sqlite, |a| {
        a.request_timeout_secs = Some(2);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let limit = Duration::from_secs(20);
    // Headers never finished.
    let cut = held_open(
        &addr,
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        limit,
    )
    .await;
    assert!(cut.is_some(), "an unfinished header is cut off");
    // A body that never arrives.
    let cut = held_open(
        &addr,
        b"POST /api/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        limit,
    )
    .await;
    assert!(cut.is_some(), "a body that never arrives is cut off");
    app.stop().await;
}
