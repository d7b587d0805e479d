//! The read path: committed offsets, the index cache, block reads and the tail long-poll.
//!
//! Invariants:
//! - only committed records (below the high watermark) are ever returned;
//! - a block that fails its checksum or offset checks is reported as data loss for its
//!   byte range, never returned as records, and never cached;
//! - `max_bytes` bounds the records returned (keys, values, headers and
//!   [`RECORD_FRAMING`] bytes each), except that one record is always returned when one is
//!   available, so a consumer never stalls;
//! - a fetch's next offset moves past offsets log compaction removed (an index entry may
//!   hold fewer records than offsets, or none), so a consumer never stalls on a gap;
//! - cached index entries may name objects a compactor has since replaced and deleted
//!   (after its grace period): a read that finds its object gone drops the partition's
//!   cached entries and the log start it knew, and locates the offset again.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use strata_metastore::{AbortedRange, IndexEntry};
use strata_storage::BatchKind;
use strata_storage::Record;
use strata_storage::cache::CacheTier;
use strata_storage::record::{decode_block_batches_off_async, decode_block_off_async, split_block};
use tokio::sync::watch;
use tracing::instrument;

use crate::agent::{FetchSpec, Inner, PartitionKey};
use crate::{Error, Result};

/// Committed bounds of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Committed {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// The first offset of the oldest open transaction, or the high watermark.
    pub last_stable_offset: i64,
}

/// A partition's aborted transactions as this agent knows them: complete for every abort
/// marker below `complete_to`.
#[derive(Debug, Default)]
struct AbortedCache {
    complete_to: i64,
    ranges: Vec<AbortedRange>,
}

/// What the agent knows of one partition's committed log.
#[derive(Debug)]
pub(crate) struct PartitionLog {
    committed: watch::Sender<Committed>,
    /// Index entries by base offset: those this agent committed and those it loaded.
    index: std::sync::Mutex<BTreeMap<i64, IndexEntry>>,
    /// When the owner last read the log start from the metastore (the compactor moves it).
    start_checked: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// When `index` was last loaded whole from the metastore.
    index_loaded: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Aborted transactions, for `read_committed` reads.
    aborted: std::sync::Mutex<AbortedCache>,
}

impl PartitionLog {
    pub(crate) fn new() -> Self {
        Self {
            committed: watch::Sender::new(Committed::default()),
            index: std::sync::Mutex::new(BTreeMap::new()),
            start_checked: std::sync::Mutex::new(None),
            index_loaded: std::sync::Mutex::new(None),
            aborted: std::sync::Mutex::new(AbortedCache::default()),
        }
    }

    /// Records the log start the metastore holds, and forgets cached entries below it.
    fn set_log_start(&self, log_start_offset: i64) {
        self.committed
            .send_modify(|c| c.log_start_offset = log_start_offset);
        let mut index = self.index.lock().expect("index lock");
        index.retain(|_, e| e.last_offset >= log_start_offset);
    }

    /// Moves the known log start up to `log_start_offset` (records were deleted).
    pub(crate) fn move_log_start(&self, log_start_offset: i64) {
        if log_start_offset > self.committed.borrow().log_start_offset {
            self.set_log_start(log_start_offset);
        }
    }

    /// Forgets every cached entry: they may name objects that are gone.
    fn forget_index(&self) {
        self.index.lock().expect("index lock").clear();
        *self.start_checked.lock().expect("start lock") = None;
        *self.index_loaded.lock().expect("index lock") = None;
    }

    /// Whether the cached entries were last loaded whole longer than [`INDEX_RECHECK`]
    /// ago (or never): a compactor may have replaced them since.
    fn index_is_stale(&self) -> bool {
        self.index_loaded
            .lock()
            .expect("index lock")
            .is_none_or(|at| at.elapsed() >= INDEX_RECHECK)
    }

    /// Puts `loaded`, the metastore's entries from base `from` on, in place of the cached
    /// ones from `from` on (all of them when `from` is 0).
    fn replace_index_from(&self, from: i64, loaded: Vec<IndexEntry>) {
        let mut index = self.index.lock().expect("index lock");
        index.retain(|base, _| *base < from);
        for entry in loaded {
            index.insert(entry.base_offset, entry);
        }
        if from == 0 {
            *self.index_loaded.lock().expect("index lock") = Some(tokio::time::Instant::now());
        }
    }

    /// Records the committed bounds read from the metastore, in one change (a reader
    /// never sees a last stable offset of another read).
    pub(crate) fn set_committed(
        &self,
        log_start_offset: i64,
        high_watermark: i64,
        last_stable_offset: i64,
    ) {
        self.committed.send_replace(Committed {
            log_start_offset,
            high_watermark,
            last_stable_offset: last_stable_offset.min(high_watermark),
        });
    }

    /// Records every aborted transaction whose marker is below `complete_to` (the owner,
    /// when it takes the partition; a reader, when it reloads them).
    pub(crate) fn set_aborted(&self, aborted: Vec<AbortedRange>, complete_to: i64) {
        *self.aborted.lock().expect("aborted lock") = AbortedCache {
            complete_to,
            ranges: aborted,
        };
    }

    /// After a commit of this agent (the owner): the last stable offset, and the aborted
    /// transactions the commit added (every marker below `complete_to` is now known).
    pub(crate) fn add_stable(
        &self,
        last_stable_offset: i64,
        aborted: &[AbortedRange],
        complete_to: i64,
    ) {
        // The aborts first: a reader that sees the new last stable offset must find every
        // abort below it (else a read_committed client would take an aborted
        // transaction's records for committed ones).
        {
            let mut cache = self.aborted.lock().expect("aborted lock");
            cache.ranges.extend_from_slice(aborted);
            cache.complete_to = cache.complete_to.max(complete_to);
        }
        self.committed
            .send_modify(|c| c.last_stable_offset = last_stable_offset.min(c.high_watermark));
    }

    /// Changes of the committed bounds.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// The aborted transactions, if every marker below `to` is known.
    fn aborted_below(&self, to: i64) -> Option<Vec<AbortedRange>> {
        let cache = self.aborted.lock().expect("aborted lock");
        (cache.complete_to >= to).then(|| cache.ranges.clone())
    }

    /// Records a commit of this agent: the new entry, and the high watermark after it.
    pub(crate) fn on_commit(&self, entry: IndexEntry) {
        let high_watermark = entry.last_offset + 1;
        self.index
            .lock()
            .expect("index lock")
            .insert(entry.base_offset, entry);
        self.committed.send_modify(|c| {
            c.high_watermark = high_watermark;
        });
    }
}

/// The run of `index` entries from the one holding `offset` up to `high_watermark` in
/// which each entry starts where the previous one ends, and the first offset below the
/// high watermark that run does not reach (`None` if it reaches it).
fn contiguous_entries(
    index: &BTreeMap<i64, IndexEntry>,
    offset: i64,
    high_watermark: i64,
) -> (Vec<IndexEntry>, Option<i64>) {
    let Some(start) = index
        .range(..=offset)
        .next_back()
        .filter(|(_, e)| e.last_offset >= offset)
        .map(|(base, _)| *base)
    else {
        return (Vec::new(), Some(offset));
    };
    let mut entries = Vec::new();
    let mut expected = start;
    for (base, entry) in index.range(start..high_watermark) {
        if *base != expected {
            return (entries, Some(expected));
        }
        entries.push(entry.clone());
        expected = entry.last_offset + 1;
    }
    let missing = (expected < high_watermark).then_some(expected);
    (entries, missing)
}

/// The error of a fetch at `offset` outside the committed bounds.
fn out_of_range(key: &PartitionKey, offset: i64, committed: Committed) -> Error {
    Error::OffsetOutOfRange {
        topic: key.0.clone(),
        partition: key.1,
        offset,
        log_start_offset: committed.log_start_offset,
        high_watermark: committed.high_watermark,
    }
}

/// What a reader sees of transactions (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Every data record up to the high watermark.
    #[default]
    ReadUncommitted,
    /// Records of committed transactions and records outside transactions, up to the
    /// last stable offset.
    ReadCommitted,
}

impl Isolation {
    /// One past the last offset it reads.
    fn readable(self, committed: &Committed) -> i64 {
        match self {
            Self::ReadUncommitted => committed.high_watermark,
            Self::ReadCommitted => committed.last_stable_offset,
        }
    }
}

/// Batches read by one Kafka fetch, as stored.
#[derive(Debug, Clone)]
pub struct BatchFetch {
    /// Whole batches, in offset order: the first holds the offset asked for (it may start
    /// before it).
    pub batches: Vec<FetchedBatch>,
    /// The partition's log start.
    pub log_start_offset: i64,
    /// Its high watermark.
    pub high_watermark: i64,
    /// Its last stable offset.
    pub last_stable_offset: i64,
    /// For `read_committed`: the aborted transactions among the batches, as (producer id,
    /// first offset), in offset order.
    pub aborted: Vec<(i64, i64)>,
}

/// One stored batch.
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    /// Offset of its first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its bytes: a RecordBatch v2.
    pub bytes: Bytes,
}

/// Records read by one fetch.
#[derive(Debug)]
pub(crate) struct FetchResult {
    pub topic_id: String,
    pub records: Vec<Record>,
    pub committed: Committed,
    pub next_offset: i64,
}

/// Bytes each record adds to a response besides its key, value and headers (offset,
/// timestamp, field tags): counted against `max_bytes`.
const RECORD_FRAMING: usize = 24;

/// What offset of a partition a ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first offset whose record timestamp is at or after this.
    Timestamp(i64),
    /// The offset of the record with the largest timestamp.
    MaxTimestamp,
}

/// Blocks one fetch reads from the object store at once.
const READ_AHEAD: usize = 8;

/// How often a fetch at the tail of a partition this agent does not own re-reads the
/// metastore.
const FOLLOWER_POLL: Duration = Duration::from_millis(100);

/// How often the owner of a partition re-reads its log start, which the compactor's
/// retention moves.
const LOG_START_CHECK: Duration = Duration::from_secs(1);

/// How long cached index entries are used before the partition's index is read again:
/// a compactor's merges and compactions replace entries, and readers see the replacement
/// within this long.
const INDEX_RECHECK: Duration = Duration::from_secs(10);

impl Inner {
    async fn refresh_committed(&self, key: &PartitionKey, topic_id: &str) -> Result<Committed> {
        let log = self.partition_log(key);
        if !self.owns_incarnation(key, topic_id) {
            let state = self.metastore.partition_state(&key.0, key.1).await?;
            // Committed by another incarnation of the topic than the one this agent
            // holds: never served as this one's.
            if let Some(owner) = &state.owner
                && owner.topic_id != topic_id
            {
                return Err(self.topic_changed(
                    &key.0,
                    topic_id,
                    "it was deleted and created again".to_string(),
                ));
            }
            log.set_committed(
                state.log_start_offset,
                state.high_watermark,
                state.last_stable_offset,
            );
            log.set_log_start(state.log_start_offset);
        } else {
            // The owner knows its high watermark; only the log start moves elsewhere.
            let now = tokio::time::Instant::now();
            let due = log
                .start_checked
                .lock()
                .expect("start lock")
                .is_none_or(|at| now.duration_since(at) >= LOG_START_CHECK);
            if due {
                let state = self.metastore.partition_state(&key.0, key.1).await?;
                log.set_log_start(state.log_start_offset);
                *log.start_checked.lock().expect("start lock") = Some(now);
            }
        }
        Ok(*log.committed.borrow())
    }

    /// The aborted transactions a `read_committed` read of the partition needs (with the
    /// committed bounds, the last stable offset included: the owner's own, or read with
    /// the partition's state): the owner knows them; another agent reads them when it
    /// lacks some.
    async fn stable_bounds(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        committed: Committed,
    ) -> Result<(Committed, Vec<AbortedRange>)> {
        let log = self.partition_log(key);
        if !self.owns_incarnation(key, topic_id)
            && log.aborted_below(committed.high_watermark).is_none()
        {
            let ranges = self.metastore.aborted_ranges(&key.0, key.1).await?;
            log.set_aborted(ranges, committed.high_watermark);
        }
        let aborted = match log.aborted_below(committed.last_stable_offset) {
            Some(aborted) => aborted,
            // Never a read_committed answer without every abort below its bound: they
            // are stored with the commit that wrote their markers, so the metastore has
            // them all.
            None => self.metastore.aborted_ranges(&key.0, key.1).await?,
        };
        Ok((committed, aborted))
    }

    /// The committed bounds (and, for `read_committed`, the aborted transactions) a read
    /// of a partition from `spec.offset` sees, and one past the last offset it may read:
    /// at what is readable it first waits up to `spec.max_wait` for more.
    async fn fetch_bounds(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        spec: FetchSpec,
    ) -> Result<(Committed, Vec<AbortedRange>, i64)> {
        let FetchSpec {
            offset,
            max_wait,
            isolation,
            ..
        } = spec;
        let mut committed = self.refresh_committed(key, topic_id).await?;
        if offset < committed.log_start_offset || offset > committed.high_watermark {
            return Err(out_of_range(key, offset, committed));
        }
        let mut aborted = Vec::new();
        if isolation == Isolation::ReadCommitted {
            (committed, aborted) = self.stable_bounds(key, topic_id, committed).await?;
        }
        if offset >= isolation.readable(&committed) && !max_wait.is_zero() {
            committed = self
                .wait_for_records(key, topic_id, offset, max_wait, isolation)
                .await?;
            if isolation == Isolation::ReadCommitted {
                (committed, aborted) = self.stable_bounds(key, topic_id, committed).await?;
            }
        }
        let upper = isolation.readable(&committed);
        Ok((committed, aborted, upper))
    }

    /// Runs `read` (a read of the partition from `offset`); if it finds an object gone (a
    /// compactor replaced the entries this agent had cached, by a merge or compaction, or
    /// dropped them, by retention, and deleted the object after its grace period), reads
    /// the index and log start again (into `committed`) and runs it once more.
    async fn reading<T, F, Fut>(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        offset: i64,
        committed: &mut Committed,
        read: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match read().await {
            Err(Error::ObjectGone(object)) => {
                tracing::debug!(%object, "cached index entry names a deleted object; reloading");
                self.partition_log(key).forget_index();
                let refreshed = self.refresh_committed(key, topic_id).await?;
                if offset < refreshed.log_start_offset {
                    return Err(out_of_range(key, offset, refreshed));
                }
                committed.log_start_offset = refreshed.log_start_offset;
                read().await
            }
            other => other,
        }
    }

    /// Reads committed records of a partition from `offset`.
    #[instrument(name = "agent.fetch", skip(self), fields(topic = %key.0, partition = key.1))]
    pub(crate) async fn fetch(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        spec: FetchSpec,
    ) -> Result<FetchResult> {
        let FetchSpec {
            offset,
            max_bytes,
            isolation,
            ..
        } = spec;
        let (mut committed, aborted, upper) = self.fetch_bounds(key, topic_id, spec).await?;
        if offset >= upper {
            return Ok(FetchResult {
                topic_id: topic_id.to_string(),
                records: Vec::new(),
                committed,
                next_offset: offset,
            });
        }
        let filter = (isolation == Isolation::ReadCommitted).then_some(&aborted[..]);
        let (records, next_offset) = self
            .reading(key, topic_id, offset, &mut committed, || {
                self.read_records(key, topic_id, offset, upper, max_bytes, filter)
            })
            .await?;
        Ok(FetchResult {
            topic_id: topic_id.to_string(),
            records,
            committed,
            next_offset,
        })
    }

    /// Reads committed batches of a partition as stored, from the one holding `offset`
    /// (Kafka's fetch: the client skips what is before its offset, leaves out transaction
    /// markers, and for `read_committed` the aborted transactions returned with them).
    #[instrument(name = "agent.fetch_batches", skip(self), fields(topic = %key.0, partition = key.1))]
    pub(crate) async fn fetch_batches(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        spec: FetchSpec,
    ) -> Result<BatchFetch> {
        let FetchSpec {
            offset, max_bytes, ..
        } = spec;
        let (mut committed, aborted, upper) = self.fetch_bounds(key, topic_id, spec).await?;
        // A `max_bytes` of 0 asks for the bounds alone.
        let batches = if offset >= upper || max_bytes == 0 {
            Vec::new()
        } else {
            self.reading(key, topic_id, offset, &mut committed, || {
                self.read_batches(key, topic_id, offset, upper, max_bytes)
            })
            .await?
        };
        let end = batches.last().map_or(offset, |b| b.last_offset + 1);
        let aborted = aborted
            .iter()
            .filter(|r| r.last_offset >= offset && r.first_offset < end)
            .map(|r| (r.producer_id, r.first_offset))
            .collect();
        Ok(BatchFetch {
            batches,
            log_start_offset: committed.log_start_offset,
            high_watermark: committed.high_watermark,
            last_stable_offset: committed.last_stable_offset,
            aborted,
        })
    }

    /// The offset (and its record's timestamp, -1 for `Earliest`/`Latest`) that `spec`
    /// names in a partition; `None` if no readable record qualifies. Found from the index
    /// entries' newest timestamps: the first entry whose newest record is at or after the
    /// time holds the answer (every record before it is older), so one block is read (a
    /// few, if records were deleted below the log start in the middle of one).
    pub(crate) async fn offset_at(
        &self,
        key: &PartitionKey,
        spec: OffsetSpec,
    ) -> Result<Option<(i64, i64)>> {
        let state = self.metastore.partition_state(&key.0, key.1).await?;
        let readable = state.log_start_offset..state.high_watermark;
        let (max_timestamp, target) = match spec {
            OffsetSpec::Earliest => return Ok(Some((state.log_start_offset, -1))),
            OffsetSpec::Latest => return Ok(Some((state.high_watermark, -1))),
            OffsetSpec::Timestamp(t) => (false, t),
            OffsetSpec::MaxTimestamp => (true, i64::MIN),
        };
        let entries: Vec<IndexEntry> = self
            .metastore
            .index_entries(&key.0, key.1, 0, 0)
            .await?
            .into_iter()
            .filter(|e| {
                !e.is_empty() && e.last_offset >= readable.start && e.base_offset < readable.end
            })
            .collect();
        let newest = entries.iter().map(|e| e.max_timestamp_ms).max();
        let candidates = entries.iter().filter(|e| {
            if max_timestamp {
                Some(e.max_timestamp_ms) == newest
            } else {
                e.max_timestamp_ms >= target
            }
        });
        for entry in candidates {
            let (block, _) = self.read_block(entry).await?;
            let records = decode_block_off_async(
                block,
                &entry.object,
                entry.byte_start,
                entry.base_offset..=entry.last_offset,
            )
            .await?;
            let found = records.iter().find(|r| {
                readable.contains(&r.offset)
                    && if max_timestamp {
                        r.timestamp_ms == entry.max_timestamp_ms
                    } else {
                        r.timestamp_ms >= target
                    }
            });
            if let Some(record) = found {
                return Ok(Some((record.offset, record.timestamp_ms)));
            }
        }
        Ok(None)
    }

    /// Waits until the high watermark passes `offset` or `max_wait` runs out.
    async fn wait_for_records(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        offset: i64,
        max_wait: Duration,
        isolation: Isolation,
    ) -> Result<Committed> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let log = self.partition_log(key);
        let past = |c: &Committed| isolation.readable(c) > offset;
        loop {
            if self.owns_incarnation(key, topic_id) {
                let mut changes = log.committed.subscribe();
                let _ = tokio::time::timeout_at(deadline, changes.wait_for(past)).await;
                return Ok(*log.committed.borrow());
            }
            let mut committed = self.refresh_committed(key, topic_id).await?;
            if isolation == Isolation::ReadCommitted && committed.high_watermark > offset {
                committed = self.stable_bounds(key, topic_id, committed).await?.0;
            }
            if past(&committed) || tokio::time::Instant::now() >= deadline {
                return Ok(committed);
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + FOLLOWER_POLL))
                .await;
        }
    }

    /// The index entries holding `[offset, high_watermark)`, in order and contiguous:
    /// each starts where the one before ends. The agent's cached entries may have holes
    /// (it committed some runs itself, other agents committed the runs between them), so
    /// the first hole found is filled from the metastore; if one remains, the whole index
    /// is read again (a compactor may have replaced entries with ones starting before the
    /// hole), and if one still remains, only the entries before it are returned. Offsets
    /// are never skipped.
    async fn locate(
        &self,
        key: &PartitionKey,
        offset: i64,
        high_watermark: i64,
    ) -> Result<Vec<IndexEntry>> {
        let log = self.partition_log(key);
        if log.index_is_stale() {
            self.load_index(key, &log, 0).await?;
        }
        let mut loaded_from = None;
        let mut loaded_whole = false;
        loop {
            let (entries, missing) = {
                let index = log.index.lock().expect("index lock");
                contiguous_entries(&index, offset, high_watermark)
            };
            let Some(missing) = missing else {
                return Ok(entries);
            };
            // Where the missing run's entry starts: exactly at `missing` after a known
            // entry; unknown (load all) when no known entry holds `offset`.
            let mut from = if entries.is_empty() { 0 } else { missing };
            if loaded_from == Some(from) {
                if loaded_whole {
                    if entries.is_empty() {
                        return Err(Error::DataLoss(format!(
                            "no index entry holds committed offset {offset} of {}/{}",
                            key.0, key.1
                        )));
                    }
                    return Ok(entries);
                }
                from = 0;
            }
            self.load_index(key, &log, from).await?;
            loaded_whole |= from == 0;
            loaded_from = Some(from);
        }
    }

    /// Reads the partition's index entries from base `from` on into the cache.
    async fn load_index(&self, key: &PartitionKey, log: &PartitionLog, from: i64) -> Result<()> {
        let loaded = self.metastore.index_entries(&key.0, key.1, from, 0).await?;
        log.replace_index_from(from, loaded);
        Ok(())
    }

    /// One block's bytes: from the cache, else one ranged GET. An entry compaction
    /// emptied has no bytes.
    async fn read_block(&self, entry: &IndexEntry) -> Result<(Bytes, bool)> {
        if entry.is_empty() {
            return Ok((Bytes::new(), true));
        }
        let lookups = &self.metrics.cache_lookups;
        if let Some((bytes, tier)) = self
            .cache
            .get(&entry.object, entry.byte_start, entry.byte_len)
            .await
        {
            let tier = match tier {
                CacheTier::Memory => "memory",
                CacheTier::Disk => "disk",
            };
            lookups.with_label_values(&[tier]).inc();
            return Ok((bytes, true));
        }
        lookups.with_label_values(&["miss"]).inc();
        let timer = self.metrics.get_latency.start_timer();
        let range = entry.byte_start..entry.byte_start + entry.byte_len;
        let bytes = match self.store.get_range(&entry.object, range).await {
            Err(strata_storage::Error::NotFound(_)) => {
                return Err(Error::ObjectGone(entry.object.clone()));
            }
            other => other?,
        };
        timer.observe_duration();
        self.metrics.object_gets.inc();
        self.metrics.object_get_bytes.inc_by(bytes.len() as u64);
        Ok((bytes, false))
    }

    /// The blocks holding `[offset, upper)`, in order, as a stream of (entry, bytes and
    /// whether they came from the cache). The blocks a read of `max_bytes` will likely
    /// need (their stored sizes add up to `max_bytes`) are read concurrently, at most
    /// [`READ_AHEAD`] at a time; further blocks, rarely needed, one by one. So a catch-up
    /// fetch costs about one GET round trip, and no block is read that the fetch does not
    /// use.
    async fn located_blocks(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        offset: i64,
        upper: i64,
        max_bytes: usize,
    ) -> Result<impl futures::Stream<Item = (IndexEntry, Result<(Bytes, bool)>)> + '_> {
        let entries = self.locate(key, offset, upper).await?;
        // Runs written for another incarnation of the topic (it was deleted and created
        // again while this agent held its index): never served as this one's.
        if let Some(other) = entries
            .iter()
            .find(|e| !e.topic_id.is_empty() && e.topic_id != topic_id)
        {
            let reason = format!(
                "its index names incarnation {}, the request {topic_id}",
                other.topic_id
            );
            return Err(self.topic_changed(&key.0, topic_id, reason));
        }
        let mut planned = 0;
        let mut stored = 0u64;
        for entry in &entries {
            planned += 1;
            stored += entry.byte_len;
            if stored >= max_bytes as u64 {
                break;
            }
        }
        let read = move |entry: IndexEntry| async move {
            let block = self.read_block(&entry).await;
            (entry, block)
        };
        let later = entries[planned..].to_vec();
        let mut first = entries;
        first.truncate(planned);
        Ok(futures::stream::iter(first.into_iter().map(read))
            .buffered(READ_AHEAD)
            .chain(futures::stream::iter(later.into_iter().map(read)).buffered(1)))
    }

    /// Reads whole batches from the one holding `offset` up to `max_bytes` (at least one
    /// batch when there is one), as stored, each CRC checked.
    async fn read_batches(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        offset: i64,
        upper: i64,
        max_bytes: usize,
    ) -> Result<Vec<FetchedBatch>> {
        let blocks = self
            .located_blocks(key, topic_id, offset, upper, max_bytes)
            .await?;
        futures::pin_mut!(blocks);
        let mut out: Vec<FetchedBatch> = Vec::new();
        let mut bytes = 0usize;
        while let Some((entry, block)) = blocks.next().await {
            let (block, cached) = block?;
            let batches = split_block(block.clone(), &entry.object, entry.byte_start)?;
            // Base offsets are outside the CRC: each batch must lie within its index entry,
            // in order, or the block is corrupt.
            let mut previous = entry.base_offset - 1;
            for (header, _) in &batches {
                if header.base_offset <= previous
                    || header.last_offset < header.base_offset
                    || header.last_offset > entry.last_offset
                {
                    return Err(Error::DataLoss(format!(
                        "corrupt data in '{}' bytes {}..{}: batch offsets {}..={} outside \
                         the index entry's {}..={} or out of order",
                        entry.object,
                        entry.byte_start,
                        entry.byte_start + entry.byte_len,
                        header.base_offset,
                        header.last_offset,
                        entry.base_offset,
                        entry.last_offset
                    )));
                }
                previous = header.last_offset;
            }
            if !cached {
                self.cache.insert(&entry.object, entry.byte_start, block);
            }
            for (header, batch) in batches {
                if header.last_offset < offset {
                    continue;
                }
                if header.base_offset >= upper {
                    return Ok(out);
                }
                if !out.is_empty() && bytes + batch.len() > max_bytes {
                    return Ok(out);
                }
                bytes += batch.len();
                out.push(FetchedBatch {
                    base_offset: header.base_offset,
                    last_offset: header.last_offset,
                    bytes: batch,
                });
            }
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Reads records from `offset` up to `max_bytes`, and the offset to read next. The
    /// blocks the fetch will likely need (their stored sizes add up to `max_bytes`) are
    /// read concurrently, at most [`READ_AHEAD`] at a time, and decoded in order; further
    /// blocks, rarely needed, one by one. So a catch-up fetch costs about one GET round
    /// trip, and no block is read that the fetch does not use.
    async fn read_records(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        offset: i64,
        high_watermark: i64,
        max_bytes: usize,
        aborted: Option<&[AbortedRange]>,
    ) -> Result<(Vec<Record>, i64)> {
        let blocks = self
            .located_blocks(key, topic_id, offset, high_watermark, max_bytes)
            .await?;
        futures::pin_mut!(blocks);
        let mut out: Vec<Record> = Vec::new();
        let mut bytes = 0usize;
        // Every offset below this was read (or compacted away).
        let mut next_offset = offset;
        while let Some((entry, block)) = blocks.next().await {
            let (block, cached) = block?;
            let batches = decode_block_batches_off_async(
                block.clone(),
                &entry.object,
                entry.byte_start,
                entry.base_offset..=entry.last_offset,
            )
            .await?;
            if !cached {
                self.cache.insert(&entry.object, entry.byte_start, block);
            }
            // Transaction markers are never data; read_committed leaves out the records
            // of aborted transactions.
            let records = batches.into_iter().flat_map(|batch| {
                let header = batch.header;
                let keep = match (header.kind, aborted) {
                    (BatchKind::Control, _) => false,
                    (BatchKind::Transactional, Some(aborted)) => {
                        let producer = header.producer.map_or(-1, |p| p.producer_id);
                        !aborted
                            .iter()
                            .any(|r| r.covers(producer, header.base_offset))
                    }
                    _ => true,
                };
                batch.records.into_iter().filter(move |_| keep)
            });
            for record in records {
                if record.offset < offset || record.offset >= high_watermark {
                    continue;
                }
                // Framing counts too, so that many tiny records cannot make a response
                // many times larger than `max_bytes`.
                let size = record.payload_size() + RECORD_FRAMING;
                if !out.is_empty() && bytes + size > max_bytes {
                    return Ok((out, next_offset));
                }
                bytes += size;
                next_offset = record.offset + 1;
                out.push(record);
            }
            next_offset = next_offset.max((entry.last_offset + 1).min(high_watermark));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok((out, next_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: i64, last: i64) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            last_offset: last,
            object: format!("o{base}"),
            byte_start: 0,
            byte_len: 1,
            max_timestamp_ms: 0,
            appended_at_ms: 0,
            topic_id: String::new(),
        }
    }

    fn index(entries: &[(i64, i64)]) -> BTreeMap<i64, IndexEntry> {
        entries.iter().map(|(b, l)| (*b, entry(*b, *l))).collect()
    }

    fn bases(entries: &[IndexEntry]) -> Vec<i64> {
        entries.iter().map(|e| e.base_offset).collect()
    }

    #[test]
    fn a_hole_between_cached_runs_is_reported_not_skipped() {
        // This agent committed 0..=9 and 30..=39; another agent committed 10..=29.
        let index = index(&[(0, 9), (30, 39)]);
        let (entries, missing) = contiguous_entries(&index, 5, 40);
        assert_eq!(bases(&entries), [0]);
        assert_eq!(missing, Some(10));
    }

    #[test]
    fn contiguous_runs_reach_the_high_watermark() {
        let index = index(&[(0, 9), (10, 19), (20, 29)]);
        let (entries, missing) = contiguous_entries(&index, 12, 30);
        assert_eq!(bases(&entries), [10, 20]);
        assert_eq!(missing, None);
        // Known entries end before the high watermark: the rest is missing.
        let (_, missing) = contiguous_entries(&index, 12, 35);
        assert_eq!(missing, Some(30));
        // No known entry holds the offset.
        let (entries, missing) = contiguous_entries(&index, 31, 35);
        assert!(entries.is_empty());
        assert_eq!(missing, Some(31));
    }
}
