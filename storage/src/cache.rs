//! The read cache of partition blocks: foyer's hybrid cache, memory first, then local disk.
//!
//! Keys are `object#start+len`: a block is immutable once written (objects are create-only
//! and never rewritten), so an entry can never be stale. The agent writes every block it
//! flushes through the cache, so reads at the tail cost no GET.

use std::path::PathBuf;

use bytes::Bytes;
use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder};

use crate::{Error, Result};

/// Sizes and place of the cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Bytes of memory.
    pub memory_bytes: usize,
    /// Directory of the disk tier; `None` = memory only.
    pub disk_dir: Option<PathBuf>,
    /// Bytes of disk.
    pub disk_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            disk_dir: None,
            disk_bytes: 1 << 30,
        }
    }
}

/// Where a cached block was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTier {
    /// In memory.
    Memory,
    /// On local disk.
    Disk,
}

/// The block cache.
#[derive(Debug, Clone)]
pub struct BlockCache {
    cache: HybridCache<String, Bytes>,
}

impl BlockCache {
    /// Builds the cache. The disk tier starts empty: whatever an earlier process left in
    /// `disk_dir` is removed first.
    pub async fn new(config: &CacheConfig) -> Result<Self> {
        let builder = HybridCacheBuilder::new()
            .with_name("strata-blocks")
            .memory(config.memory_bytes)
            .with_weighter(|key: &String, value: &Bytes| key.len() + value.len())
            .storage();
        let builder = match &config.disk_dir {
            Some(dir) => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir).map_err(|e| {
                        Error::Cache(format!("cannot clear {}: {e}", dir.display()))
                    })?;
                }
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Cache(format!("cannot create {}: {e}", dir.display())))?;
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(config.disk_bytes)
                    .build()
                    .map_err(|e| Error::Cache(format!("disk tier {}: {e}", dir.display())))?;
                builder.with_engine_config(BlockEngineConfig::new(device))
            }
            None => builder,
        };
        let cache = builder
            .build()
            .await
            .map_err(|e| Error::Cache(e.to_string()))?;
        Ok(Self { cache })
    }

    fn key(object: &str, start: u64, len: u64) -> String {
        format!("{object}#{start}+{len}")
    }

    /// Adds a block.
    pub fn insert(&self, object: &str, start: u64, block: Bytes) {
        self.cache
            .insert(Self::key(object, start, block.len() as u64), block);
    }

    /// Flushes and closes the disk tier; call once, when the agent stops.
    pub async fn close(&self) {
        if let Err(e) = self.cache.close().await {
            tracing::warn!(error = %e, "closing the block cache failed");
        }
    }

    /// A cached block, and the tier that had it.
    pub async fn get(&self, object: &str, start: u64, len: u64) -> Option<(Bytes, CacheTier)> {
        match self.cache.get(&Self::key(object, start, len)).await {
            Ok(entry) => entry.map(|e| {
                let tier = match e.source() {
                    foyer::Source::Disk => CacheTier::Disk,
                    _ => CacheTier::Memory,
                };
                (e.value().clone(), tier)
            }),
            Err(e) => {
                tracing::warn!(error = %e, "block cache read failed; reading the object store");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_come_back_from_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlockCache::new(&CacheConfig {
            memory_bytes: 1 << 20,
            disk_dir: Some(dir.path().join("cache")),
            disk_bytes: 64 << 20,
        })
        .await
        .unwrap();
        cache.insert("seg-1", 10, Bytes::from_static(b"hello"));
        let (block, tier) = cache.get("seg-1", 10, 5).await.unwrap();
        assert_eq!(
            (block, tier),
            (Bytes::from_static(b"hello"), CacheTier::Memory)
        );
        assert_eq!(cache.get("seg-1", 11, 5).await, None);
        assert_eq!(cache.get("seg-2", 10, 5).await, None);
    }
}
