//! Failover: kill the leader (SIGKILL, or SIGTERM for the graceful
//! hand-over), or make its machine vanish (blackhole: every byte to and
//! from it dropped, nothing refused), and time from the signal or the cut
//! to the first acknowledged write through the survivor. A prober sends a fresh write to the survivor every
//! `PROBE_EVERY` from the signal on, each with its own timeout, and the time
//! is that of the earliest acknowledgement. Between kills the victim is
//! restarted (disk kept) and both nodes catch up.
//!
//! A blackhole needs a cluster whose links run through fault proxies
//! (`Setup::partitionable` for the peer links, `Setup::zk_cuttable` for
//! each node's ZooKeeper link); the prober talks to the survivor's real
//! address, which no proxy is in front of, so only the old leader vanishes.
//! After the acknowledgement the old leader is killed with -9 (a vanished
//! machine does not come back as it was), the links are healed and it
//! restarts with its disk.

use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Result;
use serde::Serialize;
use tokio::task::JoinSet;

use walship::client::NodeClient;
use walship_testkit::faultproxy::CutMode;
use walship_testkit::Cluster;

use super::load::Spread;
use super::target;

const PROBE_EVERY: Duration = Duration::from_millis(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);
const CATCH_UP: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kill {
    Sigkill,
    Sigterm,
    /// The leader's peer links (both directions) and its ZooKeeper link
    /// blackholed at once: its machine vanished.
    Blackhole,
}

impl Kill {
    pub const ALL: [Kill; 3] = [Kill::Sigkill, Kill::Sigterm, Kill::Blackhole];

    pub fn name(self) -> &'static str {
        match self {
            Kill::Sigkill => "kill -9",
            Kill::Sigterm => "SIGTERM",
            Kill::Blackhole => "blackhole",
        }
    }

    pub fn parse(s: &str) -> Result<Kill, String> {
        match s.trim() {
            "sigkill" => Ok(Kill::Sigkill),
            "sigterm" => Ok(Kill::Sigterm),
            "blackhole" => Ok(Kill::Blackhole),
            other => Err(format!("unknown failover kind '{other}' (sigkill, sigterm, blackhole)")),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    pub kill: Kill,
    #[serde(flatten)]
    pub spread: Spread,
    pub samples_ms: Vec<f64>,
    /// Wall-clock time of each signal or cut (ms since the Unix epoch), to
    /// find the round in the nodes' logs.
    pub at_unix_ms: Vec<u64>,
}

/// `kills` rounds of `kill` against the current leader (a blackhole needs
/// proxied links: see the module docs).
pub async fn run(cluster: &mut Cluster, kill: Kill, kills: u64) -> Result<Failover> {
    let pool = target::client(cluster.node(1).listen());
    let mut samples = Vec::new();
    let mut at_unix_ms = Vec::new();
    for round in 1..=kills {
        let leader = cluster.wait_caught_up(CATCH_UP).await?;
        let survivor = 3 - leader;
        let client = pool.at(cluster.node(survivor).listen());
        // Warm the survivor's connection, as a client would have one.
        let _ = target::get(&client.with_timeout(Duration::from_secs(2)), "failover-warm").await;
        at_unix_ms.push(unix_ms());
        let t0 = Instant::now();
        let (stopped, acked) = match kill {
            Kill::Sigkill => {
                let node = cluster.node_mut(leader);
                tokio::join!(node.kill9(), probe(&client, round, t0))
            }
            Kill::Sigterm => {
                let node = cluster.node_mut(leader);
                tokio::join!(node.stop(), probe(&client, round, t0))
            }
            Kill::Blackhole => {
                // Both nodes' proxies: the peer's calls to the leader and
                // the leader's calls to the peer.
                cluster.cut_nodes(CutMode::Blackhole);
                cluster.cut_zk(leader, CutMode::Blackhole)?;
                let acked = probe(&client, round, t0).await;
                let killed = cluster.node_mut(leader).kill9().await;
                cluster.heal_nodes();
                cluster.heal_zk(leader)?;
                (killed, acked)
            }
        };
        stopped?;
        let ms = acked?.as_secs_f64() * 1000.0;
        samples.push(ms);
        if round % 10 == 0 || round == kills {
            println!(
                "  {} {round}/{kills}: last {ms:.0} ms (node {leader} -> node {survivor})",
                kill.name()
            );
        }
        cluster.node_mut(leader).start()?;
        cluster.node_mut(leader).wait_live(CATCH_UP).await?;
    }
    cluster.wait_caught_up(CATCH_UP).await?;
    Ok(Failover {
        kill,
        spread: Spread::of(&samples),
        samples_ms: samples,
        at_unix_ms,
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Time from `t0` to the first acknowledged probe write.
async fn probe(client: &NodeClient, round: u64, t0: Instant) -> Result<Duration> {
    let mut inflight = JoinSet::new();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if t0.elapsed() > FAILOVER_DEADLINE {
                    bail!("no write acknowledged within {FAILOVER_DEADLINE:?} of the kill (last error: {last_error})");
                }
                let t = client.with_timeout(PROBE_TIMEOUT);
                let key = format!("failover-{round}-{seq}");
                seq += 1;
                inflight.spawn(async move {
                    target::put(&t, &key, b"probe".to_vec()).await.map(|()| Instant::now())
                });
            }
            Some(done) = inflight.join_next() => match done {
                Ok(Ok(at)) => return Ok(at - t0),
                Ok(Err(e)) => last_error = e,
                Err(e) => last_error = e.to_string(),
            },
        }
    }
}
