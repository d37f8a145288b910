//! ZooKeeper's view of a cluster, for `walship status` and `walship members`:
//! W's record (vote, last log id, committed id, snapshot), the `members/<id>`
//! znodes (through `network::directory`) and the `leader` znode. Read only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use serde_json::Value;
use walship_zk::ZkSession;
use zookeeper_client as zk;

use super::Failure;
use super::EXIT_UNAVAILABLE;
use super::EXIT_USAGE;
use crate::cli::ZkTarget;
use crate::network::directory::Directory;
use crate::network::directory::MemberInfo;
use crate::node::LeaderInfo;
use crate::types::LogId;
use crate::types::NODE_IDS;
use crate::witness::record::decode_record;
use crate::witness::record::Paths;
use crate::witness::record::WitnessRecord;
use crate::witness::WitnessError;

/// What ZooKeeper holds about the cluster's members and W.
#[derive(Debug, Clone)]
pub struct ZkView {
    pub target: ZkTarget,
    pub record: WitnessRecord,
    /// Node id and its `members/<id>` record, None when not registered.
    pub members: Vec<(u64, Option<MemberInfo>)>,
    /// The `leader` znode's holder, None when there is none.
    pub leader: Option<LeaderInfo>,
}

/// Reads the view within `timeout`. A failure carries exit code 3
/// (ZooKeeper unreachable) or 2 (no such cluster).
pub async fn read(target: &ZkTarget, timeout: Duration) -> Result<ZkView, Failure> {
    let unreachable = |why: String| Failure::new(EXIT_UNAVAILABLE, format!("ZooKeeper at {}: {why}", target.zk));
    let read = async {
        let (session, witness) = crate::cli::wal::connect(target)
            .await
            .map_err(|stop| Failure::new(EXIT_UNAVAILABLE, stop.message))?;
        let view = read_with(target, &session, witness.paths().clone()).await;
        session.close().await;
        view
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(unreachable(format!("no answer within {} ms", timeout.as_millis()))),
    }
}

async fn read_with(target: &ZkTarget, session: &Arc<ZkSession>, paths: Paths) -> Result<ZkView, Failure> {
    let failed = |e: WitnessError| match e {
        e if e.is_zk(zk::Error::NoNode) => Failure::new(
            EXIT_USAGE,
            format!(
                "no cluster {:?} in ZooKeeper at {} ({} does not exist)",
                target.cluster,
                target.zk,
                paths.witness()
            ),
        ),
        e => Failure::new(EXIT_UNAVAILABLE, format!("reading ZooKeeper at {}: {e}", target.zk)),
    };
    let path = paths.witness();
    let (bytes, _) = session
        .run(&format!("get {path}"), |c| async move { c.get_data(&path).await })
        .await
        .map_err(|e| failed(e.into()))?;
    let record = decode_record(&bytes, &paths.witness()).map_err(failed)?;
    let directory = Directory::new(Arc::clone(session), paths.clone());
    let mut members = Vec::new();
    for id in NODE_IDS {
        members.push((id, directory.lookup(id).await.map_err(failed)?));
    }
    let path = paths.leader();
    let leader = match session
        .run(&format!("get {path}"), |c| async move { c.get_data(&path).await })
        .await
    {
        Ok((bytes, _)) => serde_json::from_slice::<LeaderInfo>(&bytes).ok(),
        Err(e) if e.is_zk(zk::Error::NoNode) => None,
        Err(e) => return Err(failed(e.into())),
    };
    Ok(ZkView {
        target: target.clone(),
        record,
        members,
        leader,
    })
}

/// `--zk` and `--cluster` together, or neither (then None); one alone is bad usage.
pub fn target(opts: &super::args::ZkOpts) -> Result<Option<ZkTarget>, Failure> {
    // An empty value (WALSHIP_ZK= in an environment file) counts as not given.
    let zk = opts.zk.as_ref().filter(|s| !s.trim().is_empty());
    let cluster = opts.cluster.as_ref().filter(|s| !s.trim().is_empty());
    match (zk, cluster) {
        (Some(zk), Some(cluster)) => {
            crate::config::check_cluster_name(cluster).map_err(|e| Failure::usage(format!("--cluster: {e}")))?;
            Ok(Some(ZkTarget {
                zk: zk.clone(),
                cluster: cluster.clone(),
                secret_file: opts.secret_file.clone(),
                security: opts.security.clone(),
            }))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(Failure::usage("--zk needs --cluster (or WALSHIP_CLUSTER)")),
        (None, Some(_)) => Err(Failure::usage("--cluster needs --zk (or WALSHIP_ZK)")),
    }
}

pub fn log_id_json(l: Option<LogId>) -> Value {
    match l {
        Some(l) => json!({ "index": l.index, "term": l.leader_id.term, "leader": l.leader_id.node_id }),
        None => Value::Null,
    }
}

pub fn log_id_text(l: Option<LogId>) -> String {
    match l {
        Some(l) => format!(
            "index {} (term {}, leader {})",
            l.index, l.leader_id.term, l.leader_id.node_id
        ),
        None => "none".into(),
    }
}

impl ZkView {
    pub fn members_json(&self) -> Value {
        Value::from(
            self.members
                .iter()
                .map(|(id, m)| {
                    json!({
                        "id": id,
                        "registered": m.is_some(),
                        "addr": m.as_ref().map(|m| m.addr.clone()),
                        "leader": self.leader.as_ref().is_some_and(|l| l.id == *id),
                    })
                })
                .collect::<Vec<_>>(),
        )
    }

    pub fn leader_json(&self) -> Value {
        match &self.leader {
            Some(l) => json!({ "id": l.id, "term": l.term, "addr": l.addr }),
            None => Value::Null,
        }
    }
}
