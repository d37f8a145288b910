//! The HTTP listener, with bounds: a cap on concurrent connections, a time
//! limit on reading a request's head (which is also how long an idle
//! keep-alive connection may stay open: hyper starts it when the connection
//! waits for the next request; in TLS mode it bounds the handshake too), a
//! deadline on reading its body, and one on each whole request.
//!
//! In TLS mode (`crate::tls`) every connection is TLS: a client speaking
//! plain HTTP gets a 400 that says so, and each request carries what its
//! connection's client certificate proved (`tls::Identity`, a request
//! extension) for the routes that check it.
//!
//! Why not `axum::serve`: it has none of these. With no limit, about a
//! thousand idle connections under a 1,024-descriptor limit made the leader
//! fail to write its state file; and a 1 GiB Content-Length held a
//! connection and a task forever.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::tls::Identity;

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
    /// A request's body must have arrived within this of its head: 408 else.
    pub body_read_timeout: Duration,
}

/// The listener's TLS: its configuration and the cluster whose node and
/// client names the client certificates are read against.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub cluster: String,
}

impl Limits {
    /// The node's settings; `max_connections` 0 means half the process's
    /// descriptor limit (the rest is for the log, the snapshot, ZooKeeper
    /// and the peer), between 64 and 4,096.
    pub fn of(cfg: &crate::config::NodeConfig) -> Limits {
        let max_connections = match cfg.max_connections {
            0 => half_the_descriptor_limit(),
            n => n,
        };
        Limits {
            max_connections,
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            body_read_timeout: Duration::from_millis(cfg.body_read_timeout_ms),
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

/// Serves `app` on `listener` within `limits` (over TLS if `tls` is set)
/// until `shutdown` resolves, then lets requests in flight finish (at most
/// `DRAIN_TIMEOUT`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // One layer for both deadlines: every layer costs each request a boxed
    // service clone and a boxed future (~15 % of the leader's CPU per
    // write was axum's and tower's layers at 256 clients).
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        deadlines(limits.request_timeout, limits.body_read_timeout, req, next)
    }));
    let acceptor = tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(Arc::clone(&t.config)));
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
        let (app, watcher, acceptor, tls) = (app.clone(), graceful.watcher(), acceptor.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let (Some(acceptor), Some(tls)) = (acceptor, tls) else {
                return serve_connection(stream, Identity::Anonymous, app, limits, watcher).await;
            };
            // The handshake counts against the head's time limit.
            let accepted =
                tokio::time::timeout(limits.header_read_timeout, accept_tls(stream, &acceptor, &tls.cluster)).await;
            match accepted {
                Ok(Ok((stream, identity))) => serve_connection(stream, identity, app, limits, watcher).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not done within the header-read timeout"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

async fn serve_connection<I>(
    io: I,
    identity: Identity,
    app: Router,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(identity);
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a plain-HTTP client gets from a TLS listener, instead of a closed
/// connection it cannot make sense of.
fn plain_http_refusal() -> Vec<u8> {
    let body = r#"{"error":"this node speaks TLS only: use https://"}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The TLS handshake, and what the client's certificate proves. A first
/// byte that cannot start a TLS record (0x16, handshake) is a plain HTTP
/// request: it is answered 400 and the connection closed.
async fn accept_tls(
    mut stream: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    cluster: &str,
) -> std::io::Result<(tokio_rustls::server::TlsStream<TcpStream>, Identity)> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 1 && first[0] != 0x16 {
        stream.write_all(&plain_http_refusal()).await?;
        stream.shutdown().await?;
        // Closing with the request unread would reset the connection, and
        // the client could lose the answer: read a little of it first.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            for _ in 0..16 {
                if matches!(stream.read(&mut sink).await, Ok(0) | Err(_)) {
                    break;
                }
            }
        })
        .await;
        return Err(std::io::Error::other("a plain-HTTP request on the TLS listener"));
    }
    let stream = acceptor.accept(stream).await?;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map_or(Identity::Anonymous, |c| Identity::of(cluster, c));
    Ok((stream, identity))
}

/// Answers 408 if the request (reading its body included) is not answered
/// within `request_timeout` (a write cut off here may still commit, like
/// any 504), or if its body has not arrived within `body_timeout` of its
/// head (a 1 GiB Content-Length that never comes held a connection and a
/// task until the request deadline, a minute by default).
async fn deadlines(
    request_timeout: Duration,
    body_timeout: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let expired = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&expired);
    let req = req.map(|inner| {
        axum::body::Body::new(DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(body_timeout)),
            expired: flag,
        })
    });
    match tokio::time::timeout(request_timeout, next.run(req)).await {
        Ok(resp) if !expired.load(Ordering::Relaxed) => resp,
        Ok(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            // Sent before the body was read: the connection cannot be reused.
            [(axum::http::header::CONNECTION, "close")],
            axum::Json(serde_json::json!({
                "error": format!("request body not received within {} ms; nothing was done", body_timeout.as_millis())
            })),
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({
                "error": format!("request not completed within {} ms (a write may still commit)", request_timeout.as_millis())
            })),
        )
            .into_response(),
    }
}

/// A body that fails (and says so in `expired`) once `sleep` is over.
struct DeadlineBody {
    inner: axum::body::Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new("request body deadline passed"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `route` with a body limit: 413 at once for a larger Content-Length
/// (nothing read), and 413 once more than `max_bytes` arrived otherwise.
pub fn limited<S>(route: axum::routing::MethodRouter<S>, max_bytes: usize) -> axum::routing::MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route
        .layer(axum::extract::DefaultBodyLimit::max(max_bytes))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let refused = declared_too_large(req.headers(), max_bytes);
                async move {
                    match refused {
                        Some(resp) => resp,
                        None => next.run(req).await,
                    }
                }
            },
        ))
}

/// A 413 for a request whose Content-Length is over `max_bytes`, before
/// anything of its body is read (the connection is closed after it).
pub fn declared_too_large(headers: &axum::http::HeaderMap, max_bytes: usize) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())?;
    (declared > max_bytes as u64).then(|| {
        (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            // The body stays unread: the connection cannot be reused.
            [(axum::http::header::CONNECTION, "close")],
            format!("a body of {declared} bytes; this route takes at most {max_bytes}"),
        )
            .into_response()
    })
}
