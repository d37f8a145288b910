//! The storage layer's own counters. A store is handed them (no process-wide
//! registry here): the node creates one [`StorageMetrics`], registers its
//! [`collectors`](StorageMetrics::collectors) in its registry and passes it to
//! [`crate::open_local`]. A store opened without one (tools, tests) counts
//! into counters of its own that nobody reads.

use prometheus::core::Collector;
use prometheus::IntCounter;

/// Clones share their counts.
#[derive(Clone, Debug)]
pub struct StorageMetrics {
    /// Torn tails cut from the last local log segment at start-up.
    pub local_log_tail_repairs: IntCounter,
    /// Starts that moved unreadable local state aside (`--rebuild-from-witness`).
    pub local_rebuilds: IntCounter,
    /// Log entries read back from the segment files (older than the cache).
    pub log_entries_read_back: IntCounter,
}

impl StorageMetrics {
    pub fn new() -> StorageMetrics {
        let local_log_tail_repairs = IntCounter::new(
            "local_log_tail_repairs_total",
            "torn tails (bad or half-written records) cut from the last local log segment at start-up; the node re-adopts them from ZooKeeper",
        )
        .expect("metric");
        let local_rebuilds = IntCounter::new(
            "local_rebuilds_total",
            "starts that moved an unreadable local log, state file or snapshot aside and rebuilt from ZooKeeper (--rebuild-from-witness)",
        )
        .expect("metric");
        let log_entries_read_back = IntCounter::new(
            "log_entries_read_back_total",
            "log entries read back from the local log files because they were older than the in-memory cache (log_cache_max_bytes): a follower far behind, an adoption",
        )
        .expect("metric");
        StorageMetrics {
            local_log_tail_repairs,
            local_rebuilds,
            log_entries_read_back,
        }
    }

    /// Every counter, for a prometheus registry (their names carry no prefix:
    /// the registry adds one).
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.local_log_tail_repairs.clone()),
            Box::new(self.local_rebuilds.clone()),
            Box::new(self.log_entries_read_back.clone()),
        ]
    }
}

impl Default for StorageMetrics {
    fn default() -> Self {
        StorageMetrics::new()
    }
}
