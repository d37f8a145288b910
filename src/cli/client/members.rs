//! `walship members`: the nodes registered in ZooKeeper (`members/<id>` with
//! its address) and who holds the `leader` znode, in which term. Without
//! `--zk` and `--cluster` it asks the endpoints' `/v1/status` instead.

use std::time::Duration;

use serde_json::json;
use serde_json::Value;

use super::print_json;
use super::status::leader_of;
use super::status::poll;
use super::table::cell;
use super::table::table;
use super::transport::Transport;
use super::zkview;
use super::zkview::ZkView;
use super::Failure;
use super::MembersArgs;
use super::EXIT_OK;
use super::EXIT_UNAVAILABLE;

pub async fn run(args: MembersArgs) -> Result<u8, Failure> {
    match zkview::target(&args.zk)? {
        Some(target) => {
            let view = zkview::read(&target, Duration::from_millis(args.opts.timeout_ms)).await?;
            if args.opts.json {
                print_json(&json!({
                    "source": "zookeeper",
                    "zk": target.zk,
                    "cluster": target.cluster,
                    "members": view.members_json(),
                    "leader": view.leader_json(),
                }));
            } else {
                print!("{}", render_zk(&view));
            }
            Ok(EXIT_OK)
        }
        None => from_endpoints(&args).await,
    }
}

fn render_zk(v: &ZkView) -> String {
    let mut rows = vec![vec!["ID".to_string(), "ADDRESS".to_string(), "LEADER".to_string()]];
    for (id, m) in &v.members {
        let leads = v.leader.as_ref().filter(|l| l.id == *id);
        rows.push(vec![
            id.to_string(),
            m.as_ref().map_or_else(
                || "- (not registered: down or starting)".to_string(),
                |m| m.addr.clone(),
            ),
            leads.map_or_else(String::new, |l| format!("yes, term {}", l.term)),
        ]);
    }
    let mut out = format!("from ZooKeeper {}, cluster {:?}\n", v.target.zk, v.target.cluster);
    out.push_str(&table(&rows));
    if v.leader.is_none() {
        out.push_str("no leader znode: no node leads at the moment\n");
    }
    out
}

/// The fallback: who the endpoints say they are.
async fn from_endpoints(args: &MembersArgs) -> Result<u8, Failure> {
    let t = Transport::new(&args.opts)?;
    let nodes = poll(&t).await;
    if nodes.iter().all(|n| n.status.is_err()) {
        let why: Vec<String> = nodes
            .iter()
            .map(|n| {
                format!(
                    "{}: {}",
                    n.endpoint,
                    n.status.as_ref().err().cloned().unwrap_or_default()
                )
            })
            .collect();
        return Err(Failure::new(
            EXIT_UNAVAILABLE,
            format!("no endpoint reachable: {}", why.join("; ")),
        ));
    }
    let leader = leader_of(&nodes);
    let field = |s: &Value, f: &str| s.get(f).and_then(Value::as_u64);
    if args.opts.json {
        let members: Vec<Value> = nodes
            .iter()
            .map(|n| match &n.status {
                Ok(s) => json!({
                    "id": field(s, "id"),
                    "addr": n.endpoint,
                    "answered": true,
                    "role": s.get("role"),
                    "term": field(s, "term"),
                    "leader": leader.is_some_and(|(id, _, _)| Some(id) == field(s, "id")),
                }),
                Err(e) => json!({ "id": null, "addr": n.endpoint, "answered": false, "error": e }),
            })
            .collect();
        print_json(&json!({
            "source": "endpoints",
            "members": members,
            "leader": leader.map(|(id, term, _)| json!({ "id": id, "term": term })),
        }));
    } else {
        let mut rows = vec![["ID", "ADDRESS", "ROLE", "TERM", "LEADER"].map(String::from).to_vec()];
        for n in &nodes {
            rows.push(match &n.status {
                Ok(s) => vec![
                    cell(field(s, "id")),
                    n.endpoint.clone(),
                    s.get("role").and_then(Value::as_str).unwrap_or("?").to_string(),
                    cell(field(s, "term")),
                    if leader.is_some_and(|(id, _, _)| Some(id) == field(s, "id")) {
                        "yes".into()
                    } else {
                        String::new()
                    },
                ],
                Err(e) => vec!["-".into(), n.endpoint.clone(), format!("no answer: {e}")],
            });
        }
        print!(
            "from the endpoints' /v1/status (give --zk and --cluster for ZooKeeper's registry)\n{}",
            table(&rows)
        );
    }
    Ok(EXIT_OK)
}
