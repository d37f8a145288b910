//! The HTTP listener, with bounds: a cap on concurrent connections, a time
//! limit on reading a request's head (which is also how long an idle
//! keep-alive connection may stay open: hyper starts it when the connection
//! waits for the next request), and a deadline on each whole request.
//!
//! Why not `axum::serve`: it has none of these. With no limit, about a
//! thousand idle connections under a 1,024-descriptor limit made the leader
//! fail to write its state file; and a 1 GiB Content-Length held a
//! connection and a task forever.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The listener's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A request's head must arrive within this (and an idle connection is
    /// closed after it).
    pub header_read_timeout: Duration,
    /// A whole request, body included, must be answered within this: 408 else.
    pub request_timeout: Duration,
}

impl Limits {
    /// The node's settings; `max_connections` 0 means half the process's
    /// descriptor limit (the rest is for the log, the snapshot, ZooKeeper
    /// and the peer), between 64 and 4,096.
    pub fn of(cfg: &crate::node::NodeConfig) -> Limits {
        let max_connections = match cfg.max_connections {
            0 => half_the_descriptor_limit(),
            n => n,
        };
        Limits {
            max_connections,
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
        }
    }
}

fn half_the_descriptor_limit() -> usize {
    {
        let mut rlim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) } == 0 {
            rlim.rlim_cur
        } else {
            1024
        };
        (soft / 2).clamp(64, 4096) as usize
    }
}

/// How long open connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` within `limits` until `shutdown` resolves,
/// then lets requests in flight finish (at most `DRAIN_TIMEOUT`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        request_deadline(limits.request_timeout, req, next)
    }));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut refused_logged: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                refused_logged = Some(std::time::Instant::now());
                tracing::warn!(%peer, max = limits.max_connections, "too many connections: closing new ones");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

/// Answers 408 if the request (reading its body included) is not answered
/// within `timeout`. A write cut off here may still commit, like any 504.
async fn request_deadline(
    timeout: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({
                "error": format!("request not completed within {} ms (a write may still commit)", timeout.as_millis())
            })),
        )
            .into_response(),
    }
}
