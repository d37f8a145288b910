//! `node.meta`: which cluster and node a data dir belongs to, so a node is
//! never started on another node's (or another cluster's) disk.

use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;
use walship_types::NodeId;

use super::error::Result;
use super::error::StoreError;
use super::frame;

pub(super) const META_FILE: &str = "node.meta";
const META_MAGIC: &[u8; 8] = b"WSHIPNM1";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    /// The cluster name (the ZooKeeper path component `/walship/<cluster>`).
    pub cluster: String,
    /// The id W's genesis was created with; tells apart two incarnations of
    /// a cluster with the same name.
    pub cluster_id: String,
    pub node_id: NodeId,
}

impl NodeMeta {
    /// Errors unless this data dir was made for the cluster incarnation `cluster_id`.
    pub fn ensure_cluster_id(&self, data_dir: &Path, cluster_id: &str) -> Result<()> {
        if self.cluster_id == cluster_id {
            return Ok(());
        }
        Err(StoreError::ForeignDataDir {
            path: data_dir.to_path_buf(),
            found: format!("cluster {:?} with cluster_id {:?}", self.cluster, self.cluster_id),
            expected: format!("in cluster {:?} with cluster_id {:?}", self.cluster, cluster_id),
        })
    }
}

pub fn meta_path(data_dir: &Path) -> PathBuf {
    data_dir.join(META_FILE)
}

/// Reads `node.meta`; `None` if the data dir has none yet.
pub fn read_meta(data_dir: &Path) -> Result<Option<NodeMeta>> {
    let path = meta_path(data_dir);
    let Some(payload) = frame::read_checked_file(&path, META_MAGIC)? else {
        return Ok(None);
    };
    bincode::deserialize(&payload)
        .map(Some)
        .map_err(|e| StoreError::corrupt(&path, 0, format!("undecodable node meta: {e}")))
}

/// Creates `data_dir` if needed and checks that it belongs to `cluster` and
/// `node_id`. `None` means a fresh dir: the caller learns the cluster id from
/// ZooKeeper and calls [`write_meta`] before it writes any Raft data. A dir
/// holding Raft data but no `node.meta` is refused, since its owner is unknown.
pub fn open_or_init_meta(data_dir: &Path, cluster: &str, node_id: NodeId) -> Result<Option<NodeMeta>> {
    frame::create_dir_durable(data_dir)?;
    match read_meta(data_dir)? {
        Some(meta) if meta.cluster == cluster && meta.node_id == node_id => Ok(Some(meta)),
        Some(meta) => Err(StoreError::ForeignDataDir {
            path: data_dir.to_path_buf(),
            found: format!("node {} of cluster {:?}", meta.node_id, meta.cluster),
            expected: format!("node {node_id} of cluster {cluster:?}"),
        }),
        None if has_raft_data(data_dir)? => Err(StoreError::ForeignDataDir {
            path: data_dir.to_path_buf(),
            found: "an unknown node (Raft data without node.meta)".to_string(),
            expected: format!("node {node_id} of cluster {cluster:?}"),
        }),
        None => Ok(None),
    }
}

/// Durably writes `node.meta` (atomic replace).
pub fn write_meta(data_dir: &Path, meta: &NodeMeta) -> Result<()> {
    frame::create_dir_durable(data_dir)?;
    let payload = bincode::serialize(meta).map_err(|source| StoreError::Encode {
        what: "node meta",
        source,
    })?;
    frame::write_checked_file(&meta_path(data_dir), META_MAGIC, &payload)
}

/// True if any file exists below `raft/` or `snapshot/` (empty dirs, which
/// opening a store creates, do not count).
fn has_raft_data(data_dir: &Path) -> Result<bool> {
    fn any_file(dir: &Path) -> Result<bool> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list", dir, e))?;
            let path = entry.path();
            let data = if path.is_dir() {
                any_file(&path)?
            } else {
                // The lock file is created by merely opening a store.
                path.file_name().is_none_or(|n| n != "LOCK")
            };
            if data {
                return Ok(true);
            }
        }
        Ok(false)
    }
    Ok(any_file(&data_dir.join("raft"))? || any_file(&data_dir.join("snapshot"))?)
}
