//! Failover: kill the leader (SIGKILL, or SIGTERM for the graceful
//! hand-over) and time from the signal to the first acknowledged write
//! through the survivor. A prober sends a fresh write to the survivor every
//! `PROBE_EVERY` from the signal on, each with its own timeout, and the time
//! is that of the earliest acknowledgement. Between kills the victim is
//! restarted (disk kept) and both nodes catch up.

use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Result;
use serde::Serialize;
use tokio::task::JoinSet;

use walship::client::NodeClient;
use walship_testkit::Cluster;

use super::load::Spread;
use super::target;

const PROBE_EVERY: Duration = Duration::from_millis(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);
const CATCH_UP: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kill {
    Sigkill,
    Sigterm,
}

impl Kill {
    pub fn name(self) -> &'static str {
        match self {
            Kill::Sigkill => "kill -9",
            Kill::Sigterm => "SIGTERM",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    pub kill: Kill,
    #[serde(flatten)]
    pub spread: Spread,
    pub samples_ms: Vec<f64>,
}

/// `kills` rounds of `kill` against the current leader.
pub async fn run(cluster: &mut Cluster, kill: Kill, kills: u64) -> Result<Failover> {
    let pool = target::client(cluster.node(1).listen());
    let mut samples = Vec::new();
    for round in 1..=kills {
        let leader = cluster.wait_caught_up(CATCH_UP).await?;
        let survivor = 3 - leader;
        let client = pool.at(cluster.node(survivor).listen());
        // Warm the survivor's connection, as a client would have one.
        let _ = target::get(&client.with_timeout(Duration::from_secs(2)), "failover-warm").await;
        let t0 = Instant::now();
        let node = cluster.node_mut(leader);
        let (stopped, acked) = match kill {
            Kill::Sigkill => tokio::join!(node.kill9(), probe(&client, round, t0)),
            Kill::Sigterm => tokio::join!(node.stop(), probe(&client, round, t0)),
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
    })
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
