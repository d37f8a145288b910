//! `walship status`: every endpoint's `/v1/status` side by side (role, term,
//! leader, log indexes, lag behind the leader, whether it answered), and
//! ZooKeeper's view (W's log and vote, the `leader` and `members/<id>`
//! znodes) when `--zk` and `--cluster` are given. Asks everything at once.
//!
//! Exit 0 when every endpoint answered (and ZooKeeper, if asked, was read);
//! 2 when ZooKeeper has no such cluster; 3 when anything did not answer. The
//! report is printed in every case.

use std::time::Duration;

use serde_json::json;
use serde_json::Value;

use super::print_json;
use super::table::cell;
use super::table::table;
use super::transport::json_body;
use super::transport::Transport;
use super::zkview;
use super::zkview::log_id_json;
use super::zkview::log_id_text;
use super::zkview::ZkView;
use super::Failure;
use super::StatusArgs;
use super::EXIT_OK;
use super::EXIT_UNAVAILABLE;
use crate::client::Attempt;
use crate::client::Method;

/// One endpoint's answer, or why there is none.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub status: Result<Value, String>,
}

impl EndpointStatus {
    fn u64(&self, field: &str) -> Option<u64> {
        self.status
            .as_ref()
            .ok()
            .and_then(|s| s.get(field))
            .and_then(Value::as_u64)
    }
    fn str(&self, field: &str) -> Option<&str> {
        self.status
            .as_ref()
            .ok()
            .and_then(|s| s.get(field))
            .and_then(Value::as_str)
    }
}

/// The leader among the answers (the highest term if two claim it): its id,
/// term and last log index.
pub fn leader_of(nodes: &[EndpointStatus]) -> Option<(u64, u64, Option<u64>)> {
    nodes
        .iter()
        .filter(|n| n.str("role") == Some("leader"))
        .filter_map(|n| Some((n.u64("id")?, n.u64("term").unwrap_or(0), n.u64("last_log_index"))))
        .max_by_key(|(_, term, _)| *term)
}

/// How far `applied` is behind the leader's last log index.
fn lag(leader_last: Option<u64>, applied: Option<u64>) -> Option<u64> {
    Some(leader_last?.saturating_sub(applied.unwrap_or(0)))
}

/// Asks every endpoint for `/v1/status` at once.
pub async fn poll(t: &Transport) -> Vec<EndpointStatus> {
    let polls = t.nodes.iter().map(|node| async move {
        let status = match t.try_one(node, Method::GET, "/v1/status", None).await {
            Attempt::Answered(r) if r.status == 200 => json_body(&r).map_err(|f| f.message),
            Attempt::Answered(r) => Err(format!("{} ({})", r.error_text(), r.status)),
            Attempt::NotSent(why) | Attempt::NoAnswer(why) => Err(why),
        };
        EndpointStatus {
            endpoint: node.endpoint().to_string(),
            status,
        }
    });
    futures::future::join_all(polls).await
}

pub async fn run(args: StatusArgs) -> Result<u8, Failure> {
    let t = Transport::new(&args.opts)?;
    let target = zkview::target(&args.zk)?;
    let timeout = Duration::from_millis(args.opts.timeout_ms);
    let zk = async {
        match &target {
            Some(target) => Some(zkview::read(target, timeout).await),
            None => None,
        }
    };
    let (nodes, zk) = futures::future::join(poll(&t), zk).await;
    let leader = leader_of(&nodes);
    if args.opts.json {
        print_json(&to_json(&nodes, leader, &zk));
    } else {
        print!("{}", render(&nodes, leader, &zk, target.is_some()));
    }
    let silent: Vec<&str> = nodes
        .iter()
        .filter(|n| n.status.is_err())
        .map(|n| n.endpoint.as_str())
        .collect();
    match zk {
        Some(Err(f)) => Err(f),
        _ if !silent.is_empty() => Err(Failure::new(
            EXIT_UNAVAILABLE,
            format!(
                "{} of {} endpoints did not answer: {}",
                silent.len(),
                nodes.len(),
                silent.join(", ")
            ),
        )),
        _ => Ok(EXIT_OK),
    }
}

pub fn render(
    nodes: &[EndpointStatus],
    leader: Option<(u64, u64, Option<u64>)>,
    zk: &Option<Result<ZkView, Failure>>,
    zk_asked: bool,
) -> String {
    let leader_last = leader.and_then(|(_, _, last)| last);
    let mut rows = vec![[
        "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "LAST", "APPLIED", "WITNESS", "LAG", "ZK", "CONTACT",
    ]
    .map(String::from)
    .to_vec()];
    for n in nodes {
        let row = match &n.status {
            Ok(_) => vec![
                n.endpoint.clone(),
                cell(n.u64("id")),
                n.str("role").unwrap_or("?").to_string(),
                cell(n.u64("term")),
                cell(n.u64("leader")),
                cell(n.u64("last_log_index")),
                cell(n.u64("applied_index")),
                cell(n.u64("witness_log_index")),
                cell(lag(leader_last, n.u64("applied_index"))),
                match n
                    .status
                    .as_ref()
                    .ok()
                    .and_then(|s| s.get("zk_connected"))
                    .and_then(Value::as_bool)
                {
                    Some(true) => "ok".into(),
                    Some(false) => "lost".into(),
                    None => "-".into(),
                },
                "now".into(),
            ],
            Err(e) => {
                let mut row = vec![n.endpoint.clone()];
                row.extend(std::iter::repeat_n("-".to_string(), 9));
                row.push(format!("error: {e}"));
                row
            }
        };
        rows.push(row);
    }
    let mut out = table(&rows);
    match leader {
        Some((id, term, _)) => out.push_str(&format!("leader: node {id}, term {term}\n")),
        None => out.push_str("leader: none among the endpoints that answered\n"),
    }
    match zk {
        None if !zk_asked => {
            out.push_str("ZooKeeper: not read (give --zk and --cluster, or WALSHIP_ZK and WALSHIP_CLUSTER)\n")
        }
        None => {}
        Some(Err(f)) => out.push_str(&format!("\nZooKeeper: {}\n", f.message)),
        Some(Ok(v)) => {
            let r = &v.record;
            out.push_str(&format!(
                "\nZooKeeper {}, cluster {:?}\n",
                v.target.zk, v.target.cluster
            ));
            let behind = match (leader_last, r.last_log_id) {
                (Some(last), w) => format!(", {} behind the leader", last.saturating_sub(w.map_or(0, |l| l.index))),
                _ => String::new(),
            };
            let mut lines = vec![
                vec![
                    "W's last log id".to_string(),
                    format!("{}{behind}", log_id_text(r.last_log_id)),
                ],
                vec![
                    "W's vote".to_string(),
                    format!(
                        "term {}, node {}, {}",
                        r.vote.leader_id.term,
                        r.vote.leader_id.node_id,
                        if r.vote.committed { "committed" } else { "not committed" }
                    ),
                ],
                vec!["W's committed".to_string(), log_id_text(r.committed)],
                vec!["W's snapshot".to_string(), log_id_text(r.purged())],
                vec![
                    "leader znode".to_string(),
                    match &v.leader {
                        Some(l) => format!("node {}, term {}, {}", l.id, l.term, l.addr),
                        None => "none".to_string(),
                    },
                ],
            ];
            for (id, m) in &v.members {
                lines.push(vec![
                    format!("members/{id}"),
                    match m {
                        Some(m) => m.addr.clone(),
                        None => "not registered (down or starting)".to_string(),
                    },
                ]);
            }
            for line in table(&lines).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out
}

/// The `--json` document; its fields are a contract with scripts.
pub fn to_json(
    nodes: &[EndpointStatus],
    leader: Option<(u64, u64, Option<u64>)>,
    zk: &Option<Result<ZkView, Failure>>,
) -> Value {
    let leader_last = leader.and_then(|(_, _, last)| last);
    let endpoints: Vec<Value> = nodes
        .iter()
        .map(|n| match &n.status {
            Ok(s) => json!({
                "endpoint": n.endpoint,
                "answered": true,
                "error": null,
                "id": n.u64("id"),
                "role": n.str("role"),
                "term": n.u64("term"),
                "leader": n.u64("leader"),
                "last_log_index": n.u64("last_log_index"),
                "applied_index": n.u64("applied_index"),
                "witness_log_index": n.u64("witness_log_index"),
                "lag": lag(leader_last, n.u64("applied_index")),
                "status": s,
            }),
            Err(e) => json!({ "endpoint": n.endpoint, "answered": false, "error": e }),
        })
        .collect();
    let zookeeper = match zk {
        None => Value::Null,
        Some(Err(f)) => json!({ "error": f.message }),
        Some(Ok(v)) => {
            let r = &v.record;
            json!({
                "zk": v.target.zk,
                "cluster": v.target.cluster,
                "error": null,
                "witness": {
                    "last_log_id": log_id_json(r.last_log_id),
                    "lag": leader_last.map(|last| last.saturating_sub(r.last_log_id.map_or(0, |l| l.index))),
                    "vote": {
                        "term": r.vote.leader_id.term,
                        "node": r.vote.leader_id.node_id,
                        "committed": r.vote.committed,
                    },
                    "committed": log_id_json(r.committed),
                    "snapshot": log_id_json(r.purged()),
                },
                "leader": v.leader_json(),
                "members": v.members_json(),
            })
        }
    };
    json!({
        "endpoints": endpoints,
        "leader": leader.map(|(id, term, last)| json!({ "id": id, "term": term, "last_log_index": last })),
        "zookeeper": zookeeper,
    })
}
