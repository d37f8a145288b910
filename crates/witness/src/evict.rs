//! Keeps W's bytes out of ZooKeeper's in-memory transaction history.
//!
//! ZooKeeper keeps its last 500 committed transactions in memory, whatever
//! their size, to bring a lagging ensemble member up to date
//! (`ZKDatabase.committedLog`; 3.8 refuses a `zookeeper.commitLogCount`
//! below 500), and it keeps about three copies of each: the request, the
//! transaction and the proposal packet. W's multis are big: 64 clients of
//! 4 KiB values make ~240 KiB appends, so that history alone held ~360 MB
//! live in ZooKeeper's heap, replaced every ~2 s, and ZooKeeper's collector
//! paused it for up to 50 ms at a time (BENCHMARKS.md, issue 12, fifth pass).
//!
//! After a multi that carried N full `EVICT_EVERY_BYTES` of data, N empty
//! `setData`s on the cluster's root znode push it out of that history
//! sooner: each is a transaction of a few bytes. The root's data is unused
//! (its version only counts these writes), nothing waits for them and a
//! failed one is only logged: they carry no state, so they cannot change
//! what W holds or decides.

use std::sync::Arc;

use walship_zk::ZkSession;

/// One empty write per this many bytes of data in a multi: W's bytes stay
/// at most ~1/4 of ZooKeeper's history for the largest multis, and small
/// writes (under 64 KiB a multi) cost nothing extra.
pub const EVICT_EVERY_BYTES: u64 = 64 * 1024;

/// Sends the empty writes a landed multi that carried `bytes` of data
/// calls for, without waiting.
pub(crate) fn after_multi(zk: &Arc<ZkSession>, root: &str, bytes: u64, sent: &prometheus::IntCounter) {
    let count = bytes / EVICT_EVERY_BYTES;
    if count == 0 {
        return;
    }
    sent.inc_by(count);
    let (zk, root) = (Arc::clone(zk), root.to_string());
    tokio::spawn(async move {
        let what = format!("set {root} (evicting W's multi from ZooKeeper's history)");
        // All at once, as the multi went: ZooKeeper fsyncs them as one group.
        let writes = (0..count).map(|_| {
            zk.run(&what, |c| {
                let root = root.clone();
                async move { c.set_data(&root, &[], None).await }
            })
        });
        if let Some(Err(e)) = futures::future::join_all(writes).await.into_iter().find(Result::is_err) {
            tracing::debug!(error = %e, "{what}");
        }
    });
}
