//! walship as a benchmark target: `PUT /v1/kv/<key>` (acknowledged = 200,
//! i.e. committed, hence in ZooKeeper) and linearizable `GET /v1/kv/<key>`,
//! over one reqwest connection pool sized to the concurrency, straight to
//! the leader (a follower would forward: one more hop).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use reqwest::StatusCode;

/// Per-request limit, above the node's 5 s write timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool with one idle connection kept per client.
pub fn pool(clients: usize) -> Client {
    Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(clients.max(1))
        .pool_idle_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("reqwest client")
}

#[derive(Clone)]
pub struct Walship {
    http: Client,
    base: Arc<str>,
}

impl Walship {
    pub fn new(http: Client, addr: SocketAddr) -> Walship {
        Walship {
            http,
            base: format!("http://{addr}/v1/kv/").into(),
        }
    }

    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        let resp = self
            .http
            .put(format!("{}{key}", self.base))
            .body(value)
            .send()
            .await
            .map_err(|e| format!("PUT {key}: {e}"))?;
        answer(resp, key).await
    }

    pub async fn put_timeout(&self, key: &str, value: Vec<u8>, timeout: Duration) -> Result<(), String> {
        let resp = self
            .http
            .put(format!("{}{key}", self.base))
            .timeout(timeout)
            .body(value)
            .send()
            .await
            .map_err(|e| format!("PUT {key}: {e}"))?;
        answer(resp, key).await
    }

    pub async fn get_timeout(&self, key: &str, timeout: Duration) -> Result<Option<Vec<u8>>, String> {
        let resp = self
            .http
            .get(format!("{}{key}", self.base))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("GET {key}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("GET {key}: body: {e}"))?;
        match status {
            StatusCode::OK => Ok(Some(body.to_vec())),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(format!(
                "GET {key}: HTTP {}: {}",
                s.as_u16(),
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

async fn answer(resp: reqwest::Response, key: &str) -> Result<(), String> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("PUT {key}: body: {e}"))?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!(
            "PUT {key}: HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        ))
    }
}
