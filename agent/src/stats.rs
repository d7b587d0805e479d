//! Counters of what the agent's work costs: object-store requests and metastore commits.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters, shared by the write and read paths.
#[derive(Debug, Default)]
pub struct Stats {
    /// Segment PUTs.
    pub segment_puts: AtomicU64,
    /// Bytes of segments PUT.
    pub segment_bytes: AtomicU64,
    /// Ranged GETs on cache misses.
    pub object_gets: AtomicU64,
    /// Metastore transactions committing flushes.
    pub metastore_commits: AtomicU64,
    /// Committed flushes.
    pub flushes: AtomicU64,
    /// Partition blocks in committed flushes.
    pub partition_blocks: AtomicU64,
    /// Records in committed flushes.
    pub records_committed: AtomicU64,
    /// Block reads served by the cache.
    pub cache_hits: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
