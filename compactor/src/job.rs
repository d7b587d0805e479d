//! One partition's job: the archive, then retention, then log compaction, then merges.
//!
//! Rewrites (merge and compaction) go through [`Rewriter`]: new blocks are packed into
//! objects of about `segment_target_bytes`, each object is PUT (create-only, a fresh name)
//! and only then are the runs of old entries it replaces swapped, one transaction per run,
//! in offset order.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use strata_metastore::{CleanState, IndexEntry, Liveness, TopicMeta, compaction_job};
use strata_storage::BatchKind;
use strata_storage::record::{
    Compression, Record, decode_block_batches_off_async, decode_block_off_async, encode_batch,
};
use strata_storage::segment::{BlockLocation, SegmentBuilder};
use tracing::instrument;

use crate::error::off_async;
use crate::plan::{MergeLimits, archived_prefix, expired_prefix, merge_runs};
use crate::policy::TopicPolicy;
use crate::{Error, Inner, PassReport, Result};

/// Blocks a job reads from the object store at once.
pub(crate) const READ_AHEAD: usize = 8;

/// One new block: encoded batches (empty: the run holds no record any more) and the
/// offsets its index entry covers.
#[derive(Debug)]
struct NewBlock {
    bytes: Bytes,
    base_offset: i64,
    last_offset: i64,
    max_timestamp_ms: i64,
    /// The latest `appended_at_ms` of the entries it replaces.
    appended_at_ms: i64,
}

/// A run of old entries and the blocks that replace it, covering the same offsets.
#[derive(Debug)]
struct Replacement {
    old: Vec<IndexEntry>,
    blocks: Vec<NewBlock>,
}

impl Replacement {
    /// The incarnation the replaced runs were written for (the entries of one job are of
    /// one incarnation, or of none for entries written before topics had ids): the new
    /// entries and footers keep it.
    fn topic_id(&self) -> &str {
        self.old
            .iter()
            .map(|e| e.topic_id.as_str())
            .find(|id| !id.is_empty())
            .unwrap_or_default()
    }
}

/// Packs replacements into objects and swaps them in, in order.
struct Rewriter<'a> {
    inner: &'a Inner,
    topic: &'a str,
    partition: u32,
    claim: &'a dyn Liveness,
    /// `merge` or `compact`: names the failpoints.
    kind: &'static str,
    builder: SegmentBuilder,
    /// Replacements whose blocks are in `builder`, with each block's byte start there.
    pending: Vec<(Replacement, Vec<u64>)>,
    /// Old entries swapped out so far.
    swapped: u64,
    objects: u64,
}

impl<'a> Rewriter<'a> {
    fn new(
        inner: &'a Inner,
        topic: &'a str,
        partition: u32,
        claim: &'a dyn Liveness,
        kind: &'static str,
    ) -> Self {
        Self {
            inner,
            topic,
            partition,
            claim,
            kind,
            builder: SegmentBuilder::new(),
            pending: Vec::new(),
            swapped: 0,
            objects: 0,
        }
    }

    /// Adds a replacement; writes the object and swaps its runs once it is big enough.
    /// `false` if a swap found the index changed (the job stops; its objects are orphans).
    async fn add(&mut self, replacement: Replacement) -> Result<bool> {
        let topic_id = replacement.topic_id().to_string();
        let starts = replacement
            .blocks
            .iter()
            .map(|b| {
                let start = self.builder.body_len();
                if !b.bytes.is_empty() {
                    self.builder.add_encoded_block(
                        &b.bytes,
                        BlockLocation {
                            topic: self.topic.to_string(),
                            topic_id: topic_id.clone(),
                            partition: self.partition,
                            base_offset: b.base_offset,
                            last_offset: b.last_offset,
                            byte_start: 0,
                            byte_len: 0,
                            max_timestamp_ms: b.max_timestamp_ms,
                        },
                    );
                }
                start
            })
            .collect();
        self.pending.push((replacement, starts));
        if self.builder.body_len() >= self.inner.config.segment_target_bytes {
            return self.flush().await;
        }
        Ok(true)
    }

    /// Writes the pending object, then swaps its runs.
    #[instrument(name = "compactor.rewrite", skip(self), fields(topic = %self.topic, partition = self.partition, kind = self.kind))]
    async fn flush(&mut self) -> Result<bool> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(true);
        }
        let builder = std::mem::take(&mut self.builder);
        let object = if builder.is_empty() {
            String::new()
        } else {
            let name = self.inner.next_object_name();
            let bytes = builder.finish_payload();
            let size = bytes.content_length() as u64;
            self.inner.store.put_create_only(&name, bytes).await?;
            self.inner.metrics.bytes_written.inc_by(size);
            self.inner.metrics.objects_written.inc();
            self.objects += 1;
            self.inner.failpoint(&format!("{}-put", self.kind)).await;
            name
        };
        for (replacement, starts) in pending {
            let new: Vec<IndexEntry> = replacement
                .blocks
                .iter()
                .zip(starts)
                .map(|(b, start)| IndexEntry {
                    base_offset: b.base_offset,
                    last_offset: b.last_offset,
                    object: if b.bytes.is_empty() {
                        String::new()
                    } else {
                        object.clone()
                    },
                    byte_start: if b.bytes.is_empty() { 0 } else { start },
                    byte_len: b.bytes.len() as u64,
                    max_timestamp_ms: b.max_timestamp_ms,
                    appended_at_ms: b.appended_at_ms,
                    topic_id: replacement.topic_id().to_string(),
                })
                .collect();
            ensure_held(self.claim, self.topic, self.partition)?;
            let swapped = self
                .inner
                .metastore
                .replace_index_entries(self.topic, self.partition, &replacement.old, &new)
                .await?;
            if !swapped {
                tracing::warn!(topic = %self.topic, partition = self.partition, "index changed under a rewrite; stopping it");
                return Ok(false);
            }
            self.swapped += replacement.old.len() as u64;
            self.inner.failpoint(&format!("{}-swap", self.kind)).await;
        }
        Ok(true)
    }
}

impl Inner {
    /// Retention, compaction and merges of one partition, under its claim; an empty
    /// report with `busy` set if another compactor holds it.
    pub(crate) async fn partition_job(
        &self,
        topic: &TopicMeta,
        partition: u32,
    ) -> Result<PassReport> {
        let job = compaction_job(&topic.name, partition);
        let Some(claim) = self.claim_job(&job).await? else {
            return Ok(PassReport {
                busy: 1,
                ..PassReport::default()
            });
        };
        let result = self.partition_work(topic, partition, claim.as_ref()).await;
        self.finish_job(&job, claim, result.is_ok()).await;
        result
    }

    async fn partition_work(
        &self,
        topic: &TopicMeta,
        partition: u32,
        claim: &dyn Liveness,
    ) -> Result<PassReport> {
        let mut report = PassReport {
            partitions: 1,
            ..PassReport::default()
        };
        let policy = TopicPolicy::from_config(&topic.config);
        let name = topic.name.as_str();
        // Each step's failure is counted under its kind.
        let step = |kind: &'static str| {
            move |e: crate::Error| {
                self.metrics.failed(kind);
                e
            }
        };
        // The index is read once, and again only after a step changed it.
        let mut entries = self
            .metastore
            .index_entries(name, partition, 0, 0)
            .await
            .map_err(|e| step("retention")(e.into()))?;
        // Entries of another incarnation than the topic listed: it was deleted and created
        // again since; the next pass works on the new one.
        if let Some(other) = entries
            .iter()
            .find(|e| !e.topic_id.is_empty() && e.topic_id != topic.topic_id)
        {
            tracing::info!(
                topic = name,
                partition,
                listed = %topic.topic_id,
                indexed = %other.topic_id,
                "the topic changed since it was listed; skipping it this pass"
            );
            return Ok(report);
        }
        // The log start (retention moves it) and the last stable offset: archives and
        // compaction stay below the first offset of the oldest open transaction, whose
        // outcome is not known yet.
        let state = self
            .metastore
            .partition_state(name, partition)
            .await
            .map_err(|e| step("retention")(e.into()))?;
        let stable = entries
            .iter()
            .take_while(|e| e.last_offset < state.last_stable_offset)
            .count();
        // On an archived topic, retention and compaction stay below what is archived.
        let archived_to = if policy.archive {
            let archived_files = report.archived_files;
            let to = self
                .archive(name, partition, &entries[..stable], claim, &mut report)
                .await
                .map_err(step("archive"))?;
            if report.archived_files > archived_files {
                self.metrics.done("archive");
            }
            let end = entries.last().map_or(to, |e| e.last_offset + 1);
            report
                .archive_lag
                .insert(name.to_string(), (end - to).max(0));
            Some(to)
        } else {
            None
        };
        // Entries wholly below the log start (records deleted) go like expired ones.
        let log_start = state.log_start_offset;
        let deleted = entries
            .iter()
            .take_while(|e| e.last_offset < log_start)
            .count();
        let expired = expired_prefix(&entries, &policy, self.clock.now_ms())
            .max(deleted)
            .min(archived_prefix(&entries, archived_to));
        if self
            .apply_retention(name, partition, &entries[..expired], claim, &mut report)
            .await
            .map_err(step("retention"))?
        {
            self.metrics.done("retention");
            entries = self
                .metastore
                .index_entries(name, partition, 0, 0)
                .await
                .map_err(|e| step("retention")(e.into()))?;
        }
        let settled = archived_prefix(&entries, archived_to).min(
            entries
                .iter()
                .take_while(|e| e.last_offset < state.last_stable_offset)
                .count(),
        );
        if policy.compact
            && self
                .compact(
                    topic,
                    partition,
                    &entries[..settled],
                    &policy,
                    claim,
                    &mut report,
                )
                .await
                .map_err(step("compaction"))?
        {
            if report.compacted_entries > 0 {
                self.metrics.done("compaction");
            }
            entries = self
                .metastore
                .index_entries(name, partition, 0, 0)
                .await
                .map_err(|e| step("compaction")(e.into()))?;
        }
        self.merge(name, partition, &entries, claim, &mut report)
            .await
            .map_err(step("merge"))?;
        if report.merged_entries > 0 {
            self.metrics.done("merge");
        }
        Ok(report)
    }

    /// Retention: drops `expired`, the first entries of the log (past `retention.ms` /
    /// `retention.bytes`, and on an archived topic archived), moving the log start
    /// offset. Returns whether the index changed.
    #[instrument(
        name = "compactor.retention",
        skip(self, expired, claim, report),
        fields(expired = expired.len())
    )]
    async fn apply_retention(
        &self,
        topic: &str,
        partition: u32,
        expired: &[IndexEntry],
        claim: &dyn Liveness,
        report: &mut PassReport,
    ) -> Result<bool> {
        for chunk in expired.chunks(self.metastore.max_swap_entries()) {
            ensure_held(claim, topic, partition)?;
            if !self.metastore.truncate_log(topic, partition, chunk).await? {
                return Ok(true);
            }
            report.expired_entries += chunk.len() as u64;
            let start = chunk.last().map_or(0, |e| e.last_offset + 1);
            tracing::info!(
                topic,
                partition,
                log_start = start,
                entries = chunk.len(),
                "retention moved the log start"
            );
        }
        Ok(!expired.is_empty())
    }

    /// Merges runs of small entries into per-partition blocks, copying the stored batches
    /// unchanged (after checking them).
    #[instrument(name = "compactor.merge", skip(self, entries, claim, report))]
    async fn merge(
        &self,
        topic: &str,
        partition: u32,
        entries: &[IndexEntry],
        claim: &dyn Liveness,
        report: &mut PassReport,
    ) -> Result<()> {
        let limits = MergeLimits {
            block_bytes: self.config.block_target_bytes,
            max_entries: self.metastore.max_swap_entries(),
            min_age_ms: duration_ms(self.config.merge_min_age),
        };
        let runs = merge_runs(entries, &limits, self.clock.now_ms());
        if runs.is_empty() {
            return Ok(());
        }
        let mut rewriter = Rewriter::new(self, topic, partition, claim, "merge");
        for run in runs {
            let old = entries[run].to_vec();
            let mut bytes = Vec::new();
            let reads: Vec<_> = old.iter().map(|e| self.read_block(e)).collect();
            let mut blocks = futures::stream::iter(reads).buffered(READ_AHEAD);
            for entry in &old {
                let block = blocks.next().await.expect("one block per entry")?;
                // Checked (CRC, offsets) before it is copied: a merge never spreads
                // corruption into a new object.
                decode_block_off_async(
                    block.clone(),
                    &entry.object,
                    entry.byte_start,
                    entry.base_offset..=entry.last_offset,
                )
                .await?;
                bytes.extend_from_slice(&block);
            }
            drop(blocks);
            let block = NewBlock {
                bytes: Bytes::from(bytes),
                base_offset: old[0].base_offset,
                last_offset: old[old.len() - 1].last_offset,
                max_timestamp_ms: old.iter().map(|e| e.max_timestamp_ms).max().unwrap_or(0),
                appended_at_ms: appended_at(&old),
            };
            if !rewriter
                .add(Replacement {
                    old,
                    blocks: vec![block],
                })
                .await?
            {
                break;
            }
        }
        rewriter.flush().await?;
        report.merged_entries += rewriter.swapped;
        report.objects_written += rewriter.objects;
        Ok(())
    }

    /// Log compaction: in the part of the log older than `min.compaction.lag.ms`, keeps
    /// only the newest record of each key (and its tombstone until `delete.retention.ms`
    /// after it), at its original offset.
    /// Returns whether the index changed.
    #[instrument(name = "compactor.compact", skip(self, topic, entries, policy, claim, report), fields(topic = %topic.name))]
    async fn compact(
        &self,
        topic: &TopicMeta,
        partition: u32,
        entries: &[IndexEntry],
        policy: &TopicPolicy,
        claim: &dyn Liveness,
        report: &mut PassReport,
    ) -> Result<bool> {
        let name = topic.name.as_str();
        let now = self.clock.now_ms();
        let clean = self.metastore.clean_state(name, partition).await?;
        let lag_limit = now.saturating_sub(policy.min_compaction_lag_ms);
        let cleanable_len = entries
            .iter()
            .take_while(|e| e.time_ms() <= lag_limit)
            .count();
        let cleanable = &entries[..cleanable_len];
        let Some(end) = cleanable.last().map(|e| e.last_offset + 1) else {
            return Ok(false);
        };
        let tombstone_expired = |ts: i64| {
            policy
                .delete_retention_ms
                .is_some_and(|ms| ts < now.saturating_sub(ms))
        };
        let dirty = end > clean.cleaned_to;
        if !dirty && !clean.oldest_tombstone_ms.is_some_and(tombstone_expired) {
            return Ok(false);
        }
        // Pass 1: the newest offset of every key.
        let mut newest: HashMap<Bytes, i64> = HashMap::new();
        for entry in cleanable {
            for record in self.read_records(name, partition, entry).await? {
                if let Some(key) = record.key {
                    newest.insert(key, record.offset);
                }
            }
        }
        // Pass 2: rewrite each run of entries with only the records that stay.
        let compression = topic
            .config
            .get("compression.type")
            .and_then(|c| Compression::parse(c))
            .unwrap_or_default();
        let mut rewriter = Rewriter::new(self, name, partition, claim, "compact");
        let mut oldest_tombstone: Option<i64> = None;
        let mut removed = 0u64;
        for run in cleanable.chunks(self.metastore.max_swap_entries()) {
            let mut total = 0usize;
            let mut kept: Vec<Record> = Vec::new();
            for entry in run {
                // A tombstone's age is its timestamp's, but never later than its entry
                // was appended (a future-dated tombstone still expires).
                let appended = Some(entry.appended_at_ms).filter(|t| *t > 0);
                let (records, left_out) = self.read_committed(name, partition, entry).await?;
                total += left_out;
                for record in records {
                    total += 1;
                    let time = appended.map_or(record.timestamp_ms, |t| t.min(record.timestamp_ms));
                    let stays = match &record.key {
                        None => true,
                        Some(key) => {
                            newest.get(key) == Some(&record.offset)
                                && !(record.value.is_none() && tombstone_expired(time))
                        }
                    };
                    if stays {
                        if record.value.is_none() {
                            oldest_tombstone = Some(oldest_tombstone.map_or(time, |t| t.min(time)));
                        }
                        kept.push(record);
                    }
                }
            }
            removed += (total - kept.len()) as u64;
            if kept.len() == total {
                // Nothing to drop here: leave the run as it is (merges handle its size).
                continue;
            }
            let blocks = {
                let (run, block_bytes) = (run.to_vec(), self.config.block_target_bytes);
                off_async(move || encode_blocks(&run, kept, compression, block_bytes)).await?
            };
            if !rewriter
                .add(Replacement {
                    old: run.to_vec(),
                    blocks,
                })
                .await?
            {
                return Ok(true);
            }
        }
        if !rewriter.flush().await? {
            return Ok(true);
        }
        report.compacted_entries += rewriter.swapped;
        report.compacted_records += removed;
        report.objects_written += rewriter.objects;
        let cleaned = CleanState {
            cleaned_to: end,
            oldest_tombstone_ms: oldest_tombstone,
        };
        ensure_held(claim, name, partition)?;
        self.metastore
            .store_clean_state(name, partition, &clean, &cleaned)
            .await?;
        tracing::info!(
            topic = name,
            partition,
            cleaned_to = end,
            removed,
            keys = newest.len(),
            "log compacted"
        );
        Ok(rewriter.swapped > 0)
    }

    /// An entry's stored bytes (none for an entry compaction emptied).
    async fn read_block(&self, entry: &IndexEntry) -> Result<Bytes> {
        if entry.is_empty() {
            return Ok(Bytes::new());
        }
        let range = entry.byte_start..entry.byte_start + entry.byte_len;
        let block = self.store.get_range(&entry.object, range).await?;
        self.metrics.bytes_read.inc_by(block.len() as u64);
        Ok(block)
    }

    /// An entry's data records that are committed (checked): what compaction keeps from
    /// and the archive holds. Transaction markers and the records of aborted transactions
    /// are left out (the entry must be below the partition's last stable offset).
    pub(crate) async fn read_records(
        &self,
        topic: &str,
        partition: u32,
        entry: &IndexEntry,
    ) -> Result<Vec<Record>> {
        Ok(self.read_committed(topic, partition, entry).await?.0)
    }

    /// [`Inner::read_records`], and how many records it left out.
    async fn read_committed(
        &self,
        topic: &str,
        partition: u32,
        entry: &IndexEntry,
    ) -> Result<(Vec<Record>, usize)> {
        let block = self.read_block(entry).await?;
        let batches = decode_block_batches_off_async(
            block,
            &entry.object,
            entry.byte_start,
            entry.base_offset..=entry.last_offset,
        )
        .await?;
        // The aborted transactions are read only for entries with transactional records.
        let mut aborted = None;
        let mut records = Vec::new();
        let mut left_out = 0;
        for batch in batches {
            let keep = match batch.header.kind {
                BatchKind::Data => true,
                BatchKind::Control => false,
                BatchKind::Transactional => {
                    if aborted.is_none() {
                        aborted = Some(self.metastore.aborted_ranges(topic, partition).await?);
                    }
                    let producer = batch.header.producer.map_or(-1, |p| p.producer_id);
                    let offset = batch.header.base_offset;
                    !aborted
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .any(|r| r.covers(producer, offset))
                }
            };
            if keep {
                records.extend(batch.records);
            } else {
                left_out += batch.records.len();
            }
        }
        Ok((records, left_out))
    }
}

/// The blocks replacing `run` with `kept` (its surviving records, in offset order):
/// about `block_bytes` each, together covering exactly the run's offsets.
fn encode_blocks(
    run: &[IndexEntry],
    kept: Vec<Record>,
    compression: Compression,
    block_bytes: u64,
) -> Result<Vec<NewBlock>> {
    let base = run[0].base_offset;
    let last = run[run.len() - 1].last_offset;
    let run_max_ts = run.iter().map(|e| e.max_timestamp_ms).max().unwrap_or(0);
    let appended_at_ms = appended_at(run);
    let mut chunks: Vec<Vec<Record>> = Vec::new();
    let mut size = 0usize;
    for record in kept {
        if chunks.is_empty() || size >= block_bytes as usize {
            chunks.push(Vec::new());
            size = 0;
        }
        size += record.payload_size();
        chunks.last_mut().expect("pushed above").push(record);
    }
    if chunks.is_empty() {
        return Ok(vec![NewBlock {
            bytes: Bytes::new(),
            base_offset: base,
            last_offset: last,
            max_timestamp_ms: run_max_ts,
            appended_at_ms,
        }]);
    }
    let starts: Vec<i64> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| if i == 0 { base } else { c[0].offset })
        .collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, records)| {
            Ok(NewBlock {
                bytes: encode_batch(records, compression)?,
                base_offset: starts[i],
                last_offset: starts.get(i + 1).map_or(last, |next| next - 1),
                max_timestamp_ms: records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0),
                appended_at_ms,
            })
        })
        .collect()
}

/// The `appended_at_ms` of a rewrite of `entries`: the latest of theirs (0, unknown, if
/// any of them has none, so that its records' own timestamps count).
fn appended_at(entries: &[IndexEntry]) -> i64 {
    if entries.iter().any(|e| e.appended_at_ms == 0) {
        return 0;
    }
    entries.iter().map(|e| e.appended_at_ms).max().unwrap_or(0)
}

/// Stops a job whose claim lapsed: another compactor may hold the partition now.
pub(crate) fn ensure_held(claim: &dyn Liveness, topic: &str, partition: u32) -> Result<()> {
    if claim.is_lost() {
        return Err(Error::ClaimLost(compaction_job(topic, partition)));
    }
    Ok(())
}

/// A duration in whole milliseconds, as an i64.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}
