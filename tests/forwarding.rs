//! A follower forwards a client's request to the leader exactly: the key the
//! leader writes is the key the client sent, whichever node got the request.
//! On 342ed45 a follower forwarded the decoded key unescaped, so through a
//! follower `PUT /v1/kv/a%23b` wrote `a`, `q%3Fstale=true` wrote `q` and
//! `d%2F..%2Fvictim` overwrote `victim`.

mod common;

use std::time::Duration;

use anyhow::ensure;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::Cluster;
use common::Reply;
use proptest::strategy::Strategy;
use proptest::strategy::ValueTree;

const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

async fn keys_round_trip(cluster: &mut Cluster) -> Result<()> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let (lapi, fapi) = (cluster.client(leader), cluster.client(follower));

    // The issue's cases, then generated keys full of reserved characters.
    let mut keys: Vec<String> = [
        "a#b",
        "q?stale=true",
        "d/../victim",
        "victim",
        "a",
        "q",
        "%41",
        "x y+z",
        "é/ü",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let generated = proptest::collection::vec(
        proptest::string::string_regex(r"[a-z0-9:/?#\[\]@!$&'()*+,;=% .~_é-]{1,16}").expect("regex"),
        60,
    )
    .new_tree(&mut runner)
    .expect("keys")
    .current();
    keys.extend(generated.into_iter().filter(|k| k != "." && k != ".."));
    keys.sort();
    keys.dedup();

    // Each key written through one node (alternating), with a value naming it.
    for (i, key) in keys.iter().enumerate() {
        let via = if i % 2 == 0 { &fapi } else { &lapi };
        let value = format!("value of {key:?}");
        let r = via.put(key, value.clone()).await;
        ensure!(r.is_success(), "PUT {key:?} via {via:?}: {r}");
    }
    // Read back through the other node, linearizably: every key holds its own
    // value, so no write landed on another key.
    for (i, key) in keys.iter().enumerate() {
        let via = if i % 2 == 0 { &lapi } else { &fapi };
        let got = via.get(key).await;
        let want = format!("value of {key:?}");
        match got {
            Reply::Success { value: Some(v), .. } if v == want => {}
            other => anyhow::bail!("GET {key:?} via {via:?}: {other}, want {want:?}"),
        }
    }
    // And a key no one wrote is absent: "a#b" did not write "a"'s prefix etc.
    for absent in ["d", "d/..", "q?stale"] {
        if keys.iter().any(|k| k == absent) {
            continue;
        }
        let got = fapi.get(absent).await;
        ensure!(
            matches!(got, Reply::Success { value: None, .. }),
            "{absent:?} was never written, yet: {got}"
        );
    }
    // Keys no URL can carry are refused by both nodes alike (sent over a raw
    // socket: HTTP clients fold the dot-segment away before sending).
    for id in [leader, follower] {
        let status = raw_put_status(cluster.node(id).listen(), "/v1/kv/%2E%2E").await?;
        ensure!(
            status.starts_with("HTTP/1.1 400"),
            "PUT key \"..\" on node {id}: {status}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_keys_are_the_keys_the_client_sent() -> Result<()> {
    let mut cluster = Cluster::start("forwarding").await?;
    let r = keys_round_trip(&mut cluster).await;
    r.in_cluster(&cluster)
}

/// The status line of a PUT sent as raw bytes.
async fn raw_put_status(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("PUT {path} HTTP/1.1\r\nHost: walship\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}
