//! The throughput points' HTTP client: one persistent HTTP/1.1 connection
//! per closed-loop client (hyper's connection API), nothing else.
//!
//! Why not reqwest here: the load generator shares the two cores with the
//! systems it measures, and reqwest's per-request work (URL parsing, its
//! pool, redirect and timeout layers) cost about 23 µs of CPU per request,
//! a quarter of a core at 12k requests/s. Each client owning its connection
//! also keeps the pool's hand-offs out of the measured latency. Both HTTP
//! systems (walship and etcd's gateway) are driven by this same client.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::header;
use hyper::Method;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

/// Per-request limit, above the node's 5 s write timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Http1 {
    addr: SocketAddr,
    host: header::HeaderValue,
    /// One connection per client index, opened on first use and again
    /// after any failure.
    conns: Vec<Mutex<Option<SendRequest<Full<Bytes>>>>>,
}

impl Http1 {
    pub fn new(addr: SocketAddr, clients: usize) -> Http1 {
        Http1 {
            addr,
            host: header::HeaderValue::from_str(&addr.to_string()).expect("an address is a valid Host"),
            conns: (0..clients.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr))
            .await
            .map_err(|_| format!("connect {}: timed out", self.addr))?
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake {}: {e}", self.addr))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one request on client `client`'s connection; the status and
    /// the whole body, or why there is none.
    pub async fn send(
        &self,
        client: usize,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let slot = &self.conns[client % self.conns.len()];
        let mut guard = slot.lock().await;
        let exchange = async {
            let sender = match guard.as_mut() {
                Some(s) if !s.is_closed() => s,
                _ => guard.insert(self.connect().await?),
            };
            sender.ready().await.map_err(|e| format!("connection: {e}"))?;
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, self.host.clone())
                .body(Full::new(body))
                .map_err(|e| format!("request: {e}"))?;
            let resp = sender.send_request(req).await.map_err(|e| format!("{e}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let res = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
        };
        if res.is_err() {
            // The connection's state is unknown: start afresh next time.
            *guard = None;
        }
        res
    }
}
