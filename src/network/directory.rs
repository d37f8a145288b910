//! Where each node listens, as its `members/<id>` ephemeral znode says.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;
use serde::Serialize;
use walship_zk::ZkSession;

use crate::types::NodeId;
use crate::witness::record::Paths;
use crate::witness::WitnessError;

/// The payload of `members/<id>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    /// host:port of the node's HTTP listener (client API and Raft RPC).
    pub addr: String,
}

/// How long a looked-up address is trusted before it is read again.
const ADDR_TTL: Duration = Duration::from_secs(2);

pub struct Directory {
    zk: Arc<ZkSession>,
    paths: Paths,
    cache: Mutex<HashMap<NodeId, (String, Instant)>>,
}

impl Directory {
    pub fn new(zk: Arc<ZkSession>, paths: Paths) -> Directory {
        Directory {
            zk,
            paths,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The node's address, from cache or ZooKeeper. `None` if the node has no
    /// `members/<id>` znode (it is down, or has not registered yet).
    pub async fn addr(&self, id: NodeId) -> Result<Option<String>, WitnessError> {
        if let Some((addr, at)) = self.cache.lock().expect("directory lock").get(&id) {
            if at.elapsed() < ADDR_TTL {
                return Ok(Some(addr.clone()));
            }
        }
        let info = self.lookup(id).await?;
        let mut cache = self.cache.lock().expect("directory lock");
        match &info {
            Some(m) => {
                cache.insert(id, (m.addr.clone(), Instant::now()));
            }
            None => {
                cache.remove(&id);
            }
        }
        Ok(info.map(|m| m.addr))
    }

    pub async fn lookup(&self, id: NodeId) -> Result<Option<MemberInfo>, WitnessError> {
        let path = self.paths.member(id);
        let p = path.clone();
        let got = self
            .zk
            .run(&format!("get {path}"), |c| async move { c.get_data(&p).await })
            .await;
        match got {
            Ok((bytes, _)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| WitnessError::corrupt(&path, format!("bad member record: {e}"))),
            Err(e) if e.is_zk(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The cached address, however old (for use when ZooKeeper is gone).
    pub fn cached_addr(&self, id: NodeId) -> Option<String> {
        self.cache
            .lock()
            .expect("directory lock")
            .get(&id)
            .map(|(a, _)| a.clone())
    }

    /// Forget a cached address after a failed connection.
    pub fn invalidate(&self, id: NodeId) {
        self.cache.lock().expect("directory lock").remove(&id);
    }
}
