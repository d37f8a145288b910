//! Client sessions opened at the same moment must get distinct ids.
//!
//! Fails on main (fe84cf4): a session's id is the log index of its
//! `OpenSession` (crates/storage/src/state_machine.rs, `Request::OpenSession`),
//! but the proposer group-commits concurrent requests into one entry, so
//! sessions opened together share one id. Two clients holding the same id
//! both number their first request 1: the second is answered 200 with the
//! first's reply and never applied (an acknowledged write lost).
mod common;
use anyhow::Result;
use common::Cluster;
use walship::client::Attempt;
use walship::client::SessionTag;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_open_sessions_get_distinct_ids() -> Result<()> {
    let mut c = Cluster::start("session-repro").await?;
    let leader = c.wait_for_leader(std::time::Duration::from_secs(20)).await?;
    let client = c.client(leader);
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let cl = client.clone();
            tokio::spawn(async move { cl.open_session().await })
        })
        .collect();
    let mut ids = Vec::new();
    for o in opens {
        ids.push(o.await?.into_result()?);
    }
    println!("session ids of 8 concurrent POST /v1/session: {ids:?}");
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() < ids.len() {
        // Two clients that were handed the same id each send their request 1.
        let id = ids
            .iter()
            .find(|i| ids.iter().filter(|j| j == i).count() > 1)
            .copied()
            .unwrap();
        for key in ["client-a-key", "client-b-key"] {
            let tag = SessionTag {
                client: id,
                seq: 1,
                acked_below: 1,
            };
            let a = client
                .send_in(
                    Some(tag),
                    walship::client::Method::PUT,
                    &format!("/v1/kv/{key}"),
                    Some(key.as_bytes().to_vec()),
                )
                .await;
            let status = match &a {
                Attempt::Answered(r) => r.status.to_string(),
                other => format!("{other:?}"),
            };
            let read = client.get(key).await;
            println!("PUT {key} in session {id} seq 1 -> {status}; GET {key} -> {read}");
        }
    }
    assert_eq!(distinct.len(), ids.len(), "sessions share ids: {ids:?}");
    Ok(())
}
