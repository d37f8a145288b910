//! walship as a benchmark target: `PUT /v1/kv/<key>` (acknowledged = 200,
//! i.e. committed, hence in ZooKeeper) and linearizable `GET /v1/kv/<key>`
//! through `walship::client::NodeClient`, straight to the leader (a
//! follower would forward: one more hop). The throughput points use the
//! bare HTTP/1.1 load generator instead (`http1`).

use std::net::SocketAddr;
use std::time::Duration;

use walship::client::ClientOptions;
use walship::client::NodeClient;

/// A client of the node at `addr`, keeping idle connections 30 s (`at`
/// gives clients of other nodes on the same pool).
pub fn client(addr: SocketAddr) -> NodeClient {
    let options = ClientOptions {
        pool_idle_timeout: Some(Duration::from_secs(30)),
        ..ClientOptions::default()
    };
    NodeClient::new(addr, &options).expect("a plain http client builds")
}

/// `PUT key`: `Ok` once acknowledged, else what came back instead.
pub async fn put(node: &NodeClient, key: &str, value: Vec<u8>) -> Result<(), String> {
    match node.put(key, value).await.into_result() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("PUT {key}: {e}")),
    }
}

/// Linearizable `GET key`: the value, `None` if absent, or what came back instead.
pub async fn get(node: &NodeClient, key: &str) -> Result<Option<Vec<u8>>, String> {
    node.get_bytes(key, false)
        .await
        .into_result()
        .map_err(|e| format!("GET {key}: {e}"))
}
