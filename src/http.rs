//! Serving HTTP with the limits a service on the internet needs and
//! `axum::serve` does not set: a deadline for a request's headers (a client
//! trickling them held a connection for as long as it liked), a deadline
//! for the whole request including its body (`tower_http`'s timeout, 408),
//! and a cap on open connections (beyond it, new ones wait in the listen
//! queue). Used by `charter serve` and `charter instance`. HTTP/1.1 only,
//! as before (the tree has no HTTP/2 server).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// How long a client may take to send its request line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of a server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole request, body included, up to the handler's answer.
    pub request_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// The router with the request deadline: a request not answered within it
/// (a body that never arrives, say) gets 408 and its connection closes.
pub fn with_timeout(app: Router, timeout: Duration) -> Router {
    app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        timeout,
    ))
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// open connections finish their requests (idle ones close at once).
/// Requests carry `ConnectInfo<SocketAddr>` as with `axum::serve`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let app = with_timeout(app, limits.request_timeout);
    let max = limits.max_connections.max(1);
    let open = Arc::new(Semaphore::new(max));
    let (closing, closed) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not die.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let app = app.clone();
                    async move {
                        Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {}))
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn.with_upgrades());
            let closing = async move {
                let _ = closed.wait_for(|c| *c).await;
            };
            let finished = tokio::select! {
                r = conn.as_mut() => Some(r),
                () = closing => None,
            };
            let r = match finished {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, peer = %peer, "connection ended");
            }
            drop(permit);
        });
    }
    let _ = closing.send(true);
    // Every connection gives its permit back when it is done.
    let _ = open.acquire_many(max as u32).await;
    Ok(())
}
