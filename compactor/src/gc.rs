//! Orphan GC: deletes segment objects no index entry names.
//!
//! An object is an orphan when no index entry of any partition names it and it is older
//! than `orphan_min_age` (a flush whose commit failed, a zombie's flush, or an object whose
//! entries a merge, a compaction or retention replaced). It is deleted once this compactor
//! has seen it unreferenced for `gc_grace`, so readers that still hold its old entries
//! keep working that long. Objects are never referenced again once unreferenced: every
//! new index entry names a new object. The job runs under the `orphan-gc` claim, so one
//! compactor at a time does it.

use std::collections::HashSet;

use strata_metastore::ORPHAN_GC_JOB;
use strata_storage::store::ObjectInfo;
use tracing::instrument;

use crate::job::duration_ms;
use crate::{Inner, Result};

/// Where segment objects live in the store.
const SEGMENTS_PREFIX: &str = "segments/";

/// An object no index entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Its name in the store.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// How long ago it was written, ms.
    pub age_ms: i64,
}

impl Inner {
    /// Every unreferenced object older than `orphan_min_age`.
    #[instrument(name = "compactor.orphans", skip(self))]
    pub(crate) async fn orphans(&self) -> Result<Vec<Orphan>> {
        // The index first: an object written after this read is young, so never taken
        // for an orphan below.
        let mut referenced: HashSet<String> = HashSet::new();
        for topic in self.metastore.list_topics().await? {
            for partition in 0..topic.partitions {
                for entry in self
                    .metastore
                    .index_entries(&topic.name, partition, 0, 0)
                    .await?
                {
                    referenced.insert(entry.object);
                }
            }
        }
        let listed: Vec<ObjectInfo> = self.store.list(SEGMENTS_PREFIX).await?;
        let now = self.clock.now_ms();
        let min_age = duration_ms(self.config.orphan_min_age);
        Ok(listed
            .into_iter()
            .filter(|o| !referenced.contains(&o.name))
            .map(|o| Orphan {
                age_ms: now - o.last_modified_ms,
                name: o.name,
                size: o.size,
            })
            .filter(|o| o.age_ms >= min_age)
            .collect())
    }

    /// Deletes the orphans seen unreferenced for the grace period; returns how many.
    pub(crate) async fn collect_garbage(&self) -> Result<u64> {
        let Some(claim) = self.claim_job(ORPHAN_GC_JOB).await? else {
            return Ok(0);
        };
        let result = self.delete_due_orphans().await;
        self.finish_job(ORPHAN_GC_JOB, claim, result.is_ok()).await;
        result
    }

    async fn delete_due_orphans(&self) -> Result<u64> {
        let orphans = self.orphans().await?;
        let now = self.clock.now_ms();
        let grace = duration_ms(self.config.gc_grace);
        let due: Vec<Orphan> = {
            let mut seen = self.unreferenced.lock().expect("gc lock");
            let current: HashSet<&str> = orphans.iter().map(|o| o.name.as_str()).collect();
            seen.retain(|name, _| current.contains(name.as_str()));
            orphans
                .into_iter()
                .filter(|o| now - *seen.entry(o.name.clone()).or_insert(now) >= grace)
                .collect()
        };
        let mut deleted = 0;
        for orphan in due {
            self.store.delete(&orphan.name).await?;
            self.unreferenced
                .lock()
                .expect("gc lock")
                .remove(&orphan.name);
            tracing::info!(object = %orphan.name, bytes = orphan.size, age_ms = orphan.age_ms, "orphan deleted");
            deleted += 1;
        }
        Ok(deleted)
    }
}
