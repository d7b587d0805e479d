//! The write path: partition ownership, offset assignment, the open segment and the flusher.
//!
//! Invariants:
//! - offsets of a partition are assigned only here, under the writer lock, by the agent
//!   that holds the partition's current epoch; they are dense;
//! - a segment is flushed by one task at a time, so commits happen in offset order;
//! - a waiter (a produce request with acks=ALL) is answered `Ok` only after the segment
//!   holding its records was PUT and every one of its partitions committed;
//! - when a partition's commit fails (fenced, or outcome unknown) the agent forgets its
//!   ownership and drops that partition's records still waiting in the open segment (their
//!   offsets followed the failed ones); its waiters get errors, never acks. The next
//!   produce takes the partition again, under a new epoch, from the committed high
//!   watermark.
//! - an idempotent producer's batch is checked against the producer's state in the
//!   partition before it gets offsets (see [`crate::producer`]); the state each flush
//!   leaves is committed with it, so it never runs ahead of or behind the high watermark
//!   in the metastore.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use strata_metastore::{
    AbortedRange, PartitionAppend, PartitionOwner, PartitionState, ProducerState, Rejection,
};
use strata_storage::record::control_record;
use strata_storage::segment::object_name;
use strata_storage::{
    BatchKind, BatchRun, BlockLocation, Compression, ProducerFields, Record, SegmentBuilder,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, info_span, instrument};

use crate::agent::{Inner, PartitionKey};
use crate::producer::{SequenceCheck, check_sequence, expired, record_batch};
use crate::{Error, Result};

/// Most idempotent producers with batches in one partition's block of a flush: each
/// adds an operation to the flush's metastore transaction (etcd allows 128 by default).
/// A batch of one more producer waits for the next flush (RESOURCE_EXHAUSTED, retried).
const MAX_PRODUCERS_PER_BLOCK: usize = 64;
/// Most expired producer states one block deletes.
const MAX_EXPIRED_PER_BLOCK: usize = 32;
/// What a marker request does once the writer lock is released.
enum MarkerStep {
    /// Nothing to write (no transaction of the producer open here).
    Done,
    /// An earlier request appended it: wait for its commit at this offset.
    AwaitEarlier(i64, PartitionOwner),
    /// Appended now: wait for the commit.
    Appended(oneshot::Receiver<Result<()>>),
}

/// Longest a second request for a marker waits for the first one's commit.
const MARKER_COMMIT_WAIT: Duration = Duration::from_secs(10);
/// Partitions just taken together whose producers and aborted transactions are read at
/// once (two reads each).
const INSTALL_CONCURRENCY: usize = 32;

/// The write side of an agent.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    state: Mutex<WriterState>,
    /// Wakes the flusher: a segment opened, filled up, or the agent is stopping.
    wake_flusher: Notify,
    /// One lock per partition serializes its take-overs, so it is acquired once.
    acquiring: Mutex<HashMap<PartitionKey, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, Default)]
struct WriterState {
    owned: HashMap<PartitionKey, Ownership>,
    open: OpenSegment,
    /// Bytes of the segment being flushed.
    flushing_bytes: usize,
    next_sequence: u64,
    closed: bool,
}

#[derive(Debug)]
struct Ownership {
    owner: PartitionOwner,
    next_offset: i64,
    /// Offsets below this are committed.
    committed_to: i64,
    /// Idempotent producers' states, with the batches given offsets but not yet
    /// committed.
    producers: HashMap<i64, ProducerState>,
    /// Producers whose state expired, to delete from the metastore with the next flush.
    expired: Vec<i64>,
    /// Open transactions as committed: producer id → first offset. The partition's last
    /// stable offset is the smallest (or the committed high watermark).
    open_transactions: BTreeMap<i64, i64>,
    /// Transaction markers appended so far: a transactional batch checked against the
    /// coordinator's record before a marker was appended is checked again.
    markers: u64,
    /// Whether the metastore holds a last stable offset for the partition (it had an
    /// open transaction at its last flush): the next flush updates or clears it.
    stable_stored: bool,
    /// Markers appended and not known committed: producer id → the marker's offset. A
    /// second request for the same marker waits for it.
    pending_markers: HashMap<i64, i64>,
}

impl Ownership {
    /// The last stable offset: the first offset of the oldest open transaction, or the
    /// committed high watermark.
    fn last_stable_offset(&self) -> i64 {
        self.open_transactions
            .values()
            .copied()
            .min()
            .unwrap_or(self.committed_to)
            .min(self.committed_to)
    }
}

#[derive(Debug, Default)]
struct OpenSegment {
    blocks: BTreeMap<PartitionKey, PendingBlock>,
    bytes: usize,
    opened_at: Option<Instant>,
    waiters: Vec<Waiter>,
}

#[derive(Debug)]
struct PendingBlock {
    owner: PartitionOwner,
    compression: Compression,
    /// Runs of records, each one batch (a run of plain data records takes every following
    /// request's plain data records).
    runs: Vec<Run>,
    /// The state of each producer with a batch here, as of its last batch here.
    producers: BTreeMap<i64, ProducerState>,
    /// Expired producers deleted with this block (at most [`MAX_EXPIRED_PER_BLOCK`],
    /// never one with a batch in it).
    expired: Vec<i64>,
    /// Transactions its abort markers abort.
    aborted: Vec<AbortedRange>,
    /// The partition's last stable offset after the block, to store with it (set when the
    /// block is sealed, for partitions with transactions).
    last_stable_offset: Option<i64>,
}

impl PendingBlock {
    fn new(owner: PartitionOwner, compression: Compression) -> Self {
        Self {
            owner,
            compression,
            runs: Vec::new(),
            producers: BTreeMap::new(),
            expired: Vec::new(),
            aborted: Vec::new(),
            last_stable_offset: None,
        }
    }

    fn bytes(&self) -> usize {
        self.runs.iter().map(Run::bytes).sum()
    }

    /// Notes `state` as producer `id`'s state at the end of the block: it is written, so
    /// it is not deleted as expired.
    fn set_producer(&mut self, id: i64, state: ProducerState) {
        self.expired.retain(|e| *e != id);
        self.producers.insert(id, state);
    }
}

#[derive(Debug)]
struct Waiter {
    partitions: Vec<PartitionKey>,
    done: oneshot::Sender<Result<()>>,
}

/// What a block commits besides its entry: producer states, expired producers deleted,
/// aborted transactions, the last stable offset.
#[derive(Debug, Default)]
struct ProducerChanges {
    producers: Vec<(i64, ProducerState)>,
    expired: Vec<i64>,
    aborted: Vec<AbortedRange>,
    last_stable_offset: Option<i64>,
}

/// A sealed segment after its PUT, waiting for its turn to commit.
#[derive(Debug)]
struct PutSegment {
    sequence: u64,
    object: String,
    /// Bytes it counted against `max_pending_bytes`.
    pending_bytes: usize,
    /// Blocks that are in the object: partition, record count, location.
    written: Vec<(PartitionKey, usize, BlockLocation)>,
    /// Per partition, the producer states and expired producers its block commits.
    producers: HashMap<PartitionKey, ProducerChanges>,
    /// The ownership each block was written under.
    owners: HashMap<PartitionKey, PartitionOwner>,
    /// Partitions already failed (encoding or PUT), with the error their waiters get.
    failed: HashMap<PartitionKey, Error>,
    waiters: Vec<Waiter>,
}

/// One batch of a block in the open segment.
#[derive(Debug)]
enum Run {
    /// Records to encode as one batch, with its producer fields and kind.
    Records {
        producer: Option<ProducerFields>,
        kind: BatchKind,
        records: Vec<Record>,
    },
    /// A Kafka client's batch, stored as sent but for its base offset.
    Encoded {
        batch: EncodedBatch,
        base_offset: i64,
    },
}

impl Run {
    fn bytes(&self) -> usize {
        match self {
            Self::Records { records, .. } => batch_bytes(records),
            Self::Encoded { batch, .. } => batch.bytes.len(),
        }
    }

    /// One past its last offset.
    fn end(&self) -> Option<i64> {
        match self {
            Self::Records { records, .. } => records.last().map(|r| r.offset + 1),
            Self::Encoded { batch, base_offset } => Some(base_offset + batch.count),
        }
    }

    fn count(&self) -> usize {
        match self {
            Self::Records { records, .. } => records.len(),
            Self::Encoded { batch, .. } => batch.count as usize,
        }
    }
}

/// A batch as a Kafka client sent it, checked: stored as is, only its base offset set.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The whole RecordBatch v2.
    pub bytes: Bytes,
    /// Its record count.
    pub count: i64,
    /// Its largest record timestamp.
    pub max_timestamp_ms: i64,
}

/// What a produce request holds for one partition.
#[derive(Debug)]
pub(crate) enum Payload {
    /// Records, encoded at the flush.
    Records(Vec<Record>),
    /// One batch already encoded (a Kafka client's).
    Encoded(EncodedBatch),
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Self::Records(records) => records.len(),
            Self::Encoded(batch) => batch.count as usize,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Records(records) => batch_bytes(records),
            Self::Encoded(batch) => batch.bytes.len(),
        }
    }
}

/// Records of one partition in a produce request, offsets not yet assigned.
#[derive(Debug)]
pub(crate) struct PartitionRecords {
    pub partition: u32,
    pub payload: Payload,
    pub compression: Compression,
    /// Set for a batch of an idempotent producer.
    pub producer: Option<ProducerFields>,
    /// Set for a batch of a transactional producer (with `producer`).
    pub transactional_id: Option<String>,
}

/// What [`Inner::append`] did.
#[derive(Debug)]
pub(crate) struct AppendOutcome {
    /// The first offset given to each entry of the request.
    pub first_offsets: Vec<i64>,
    /// For acks=ALL, resolves once they are committed.
    pub commit: Option<oneshot::Receiver<Result<()>>>,
    /// The request was a retry of an idempotent producer's batch already committed:
    /// nothing was appended, and `first_offsets` are the ones it got then.
    pub duplicate: bool,
}

/// Per-record bookkeeping bytes counted on top of key, value and headers.
const RECORD_OVERHEAD: usize = 24;

fn batch_bytes(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| r.payload_size() + RECORD_OVERHEAD)
        .sum()
}

impl Inner {
    /// Whether this agent currently owns the partition.
    pub(crate) fn owns(&self, key: &PartitionKey) -> bool {
        self.writer
            .state
            .lock()
            .expect("writer lock")
            .owned
            .contains_key(key)
    }

    /// The partitions this agent owns.
    pub(crate) fn owned_partitions(&self) -> Vec<PartitionKey> {
        let state = self.writer.state.lock().expect("writer lock");
        state.owned.keys().cloned().collect()
    }

    /// The partitions this agent owns, with the ownership it took.
    pub(crate) fn owned_with_owners(&self) -> Vec<(PartitionKey, PartitionOwner)> {
        let state = self.writer.state.lock().expect("writer lock");
        state
            .owned
            .iter()
            .map(|(key, o)| (key.clone(), o.owner.clone()))
            .collect()
    }

    /// Gives up partitions: their records not yet flushed are dropped and their waiters
    /// get FAILED_PRECONDITION with `reason`. Records already in flight are committed or
    /// fenced as usual.
    pub(crate) fn disown(&self, keys: &[PartitionKey], reason: &str) {
        self.metrics.partitions_given_up.inc_by(keys.len() as u64);
        let mut state = self.writer.state.lock().expect("writer lock");
        drop_partitions(&mut state, keys, None, |key| Error::NotOwner {
            topic: key.0.clone(),
            partition: key.1,
            reason: reason.to_string(),
        });
    }

    /// Gives up every partition (see [`Inner::disown`]).
    pub(crate) fn disown_all(&self, reason: &str) {
        let keys = self.owned_partitions();
        self.disown(&keys, reason);
    }

    /// Whether this agent owns the partition in topic incarnation `topic_id`. An
    /// ownership of another incarnation (the topic was deleted and created again) is
    /// given up here.
    pub(crate) fn owns_incarnation(&self, key: &PartitionKey, topic_id: &str) -> bool {
        let held = self
            .writer
            .state
            .lock()
            .expect("writer lock")
            .owned
            .get(key)
            .map(|o| o.owner.topic_id == topic_id);
        if held == Some(false) {
            self.disown(
                std::slice::from_ref(key),
                "the topic was deleted and created again",
            );
        }
        held == Some(true)
    }

    /// Takes the partition (of topic incarnation `topic_id`) through the metastore unless
    /// this agent already owns it. Only a registered agent takes partitions, and only
    /// those assigned to it (or not assigned yet: a topic created moments ago).
    pub(crate) async fn ensure_owned(&self, key: &PartitionKey, topic_id: &str) -> Result<()> {
        if self.owns_incarnation(key, topic_id) {
            return Ok(());
        }
        if !self.cluster.registered() {
            return Err(Error::Unavailable(
                "this agent lost its registration lease and is registering again; retry"
                    .to_string(),
            ));
        }
        let assigned = match self.cluster.assignment().agent_of(&key.0, key.1) {
            Some(owner) => Some(owner.to_string()),
            // Not assigned in this agent's view, which may be a tick behind the
            // controller (a topic created moments ago): the stored assignment decides, so
            // that this agent does not take a partition assigned elsewhere.
            None => self
                .metastore
                .assignment()
                .await?
                .and_then(|a| a.agent_of(&key.0, key.1).map(str::to_string)),
        };
        if let Some(owner) = assigned
            && owner != self.config.agent_id
        {
            return Err(Error::NotOwner {
                topic: key.0.clone(),
                partition: key.1,
                reason: format!("it is assigned to agent '{owner}'"),
            });
        }
        let _serial = self.take_over_lock(key).lock_owned().await;
        if self.owns_incarnation(key, topic_id) {
            return Ok(());
        }
        let state = match self
            .metastore
            .acquire_partition(&key.0, key.1, &self.config.agent_id, topic_id)
            .await
        {
            Err(strata_metastore::Error::TopicChanged { reason, .. }) => {
                return Err(self.topic_changed(&key.0, topic_id, reason));
            }
            other => other?,
        };
        self.metrics.take_transactions.inc();
        self.install_ownership(key, state).await
    }

    /// Takes `partitions` of `topic` (incarnation `topic_id`), assigned to this agent, in
    /// as few metastore transactions as it allows ([`Metastore::acquire_partitions`]):
    /// how an agent takes what the controller assigned it, at start and after a
    /// rebalance. Each partition's outcome, for the ones not owned already.
    ///
    /// [`Metastore::acquire_partitions`]: strata_metastore::Metastore::acquire_partitions
    pub(crate) async fn take_partitions(
        &self,
        topic: &str,
        topic_id: &str,
        partitions: &[u32],
    ) -> Result<Vec<(u32, Result<()>)>> {
        if !self.cluster.registered() {
            return Err(Error::Unavailable(
                "this agent lost its registration lease and is registering again; retry"
                    .to_string(),
            ));
        }
        // Each partition's take-over lock, as `ensure_owned` takes it (one at a time, so
        // holding several here cannot deadlock with it).
        let mut serial = Vec::with_capacity(partitions.len());
        let mut wanted = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let key = (topic.to_string(), partition);
            let guard = self.take_over_lock(&key).lock_owned().await;
            if !self.owns_incarnation(&key, topic_id) {
                serial.push(guard);
                wanted.push(partition);
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let report = match self
            .metastore
            .acquire_partitions(topic, &wanted, &self.config.agent_id, topic_id)
            .await
        {
            Err(strata_metastore::Error::TopicChanged { reason, .. }) => {
                return Err(self.topic_changed(topic, topic_id, reason));
            }
            other => other?,
        };
        self.metrics
            .take_transactions
            .inc_by(u64::from(report.transactions));
        let outcomes = report.taken;
        let installs =
            wanted
                .iter()
                .copied()
                .zip(outcomes)
                .map(|(partition, outcome)| async move {
                    let key = (topic.to_string(), partition);
                    let installed = match outcome {
                        Ok(state) => self.install_ownership(&key, state).await,
                        Err(strata_metastore::Error::TopicChanged { reason, .. }) => {
                            Err(self.topic_changed(topic, topic_id, reason))
                        }
                        Err(e) => Err(e.into()),
                    };
                    (partition, installed)
                });
        let taken = futures::stream::iter(installs)
            .buffer_unordered(INSTALL_CONCURRENCY)
            .collect()
            .await;
        drop(serial);
        Ok(taken)
    }

    /// The lock that serializes a partition's take-overs.
    fn take_over_lock(&self, key: &PartitionKey) -> Arc<tokio::sync::Mutex<()>> {
        self.writer
            .acquiring
            .lock()
            .expect("acquiring lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Makes a partition just taken (`state`, read with the take-over) this agent's: its
    /// producers, aborted transactions and committed bounds, then its ownership.
    async fn install_ownership(&self, key: &PartitionKey, state: PartitionState) -> Result<()> {
        let owner = state
            .owner
            .expect("acquire_partition returns the new owner");
        tracing::info!(
            topic = %key.0, partition = key.1, epoch = owner.epoch,
            high_watermark = state.high_watermark, "took partition"
        );
        // Read after the take-over: no earlier owner can commit any more, so this is the
        // state the high watermark read with it leaves.
        let (producers, expired_producers) = self.load_producers(key).await?;
        let aborted = self.metastore.aborted_ranges(&key.0, key.1).await?;
        let last_stable_offset = producers
            .values()
            .filter_map(|p| p.txn_first_offset)
            .min()
            .unwrap_or(state.high_watermark)
            .min(state.high_watermark);
        let log = self.partition_log(key);
        log.set_aborted(aborted, state.high_watermark);
        log.set_committed(
            state.log_start_offset,
            state.high_watermark,
            last_stable_offset,
        );
        let mut writer = self.writer.state.lock().expect("writer lock");
        if !self.cluster.registered() {
            // The registration was lost while taking it: the partition is about to move.
            return Err(Error::Unavailable(
                "this agent lost its registration lease; retry".to_string(),
            ));
        }
        self.metrics.partitions_taken.inc();
        writer.owned.insert(
            key.clone(),
            Ownership {
                owner,
                next_offset: state.high_watermark,
                committed_to: state.high_watermark,
                open_transactions: producers
                    .iter()
                    .filter_map(|(id, p)| Some((*id, p.txn_first_offset?)))
                    .collect(),
                producers,
                expired: expired_producers,
                markers: 0,
                stable_stored: state.last_stable_offset < state.high_watermark,
                pending_markers: HashMap::new(),
            },
        );
        Ok(())
    }

    /// The idempotent producers' states of a partition just taken, and the producers
    /// whose state expired.
    async fn load_producers(
        &self,
        key: &PartitionKey,
    ) -> Result<(HashMap<i64, ProducerState>, Vec<i64>)> {
        let limits = &self.config.limits;
        let stored = self
            .metastore
            .producer_states(&key.0, key.1, limits.max_producers_per_partition)
            .await?;
        let now = self.clock.now_ms();
        // A state with an open transaction never expires: it holds the partition's last
        // stable offset until the transaction's marker.
        let (expired_states, live): (Vec<_>, Vec<_>) =
            stored.into_iter().partition(|(_, state)| {
                expired(state, now, limits.producer_id_expiration_ms)
                    && state.txn_first_offset.is_none()
            });
        Ok((
            live.into_iter().collect(),
            expired_states.into_iter().map(|(id, _)| id).collect(),
        ))
    }

    /// Forgets ownership of every partition of `topic` (after it was deleted).
    pub(crate) fn forget_topic(&self, topic: &str) {
        let mut state = self.writer.state.lock().expect("writer lock");
        let keys: Vec<PartitionKey> = state
            .owned
            .keys()
            .filter(|k| k.0 == topic)
            .cloned()
            .collect();
        drop_partitions(&mut state, &keys, None, |_| {
            Error::TopicNotFound(topic.to_string())
        });
    }

    /// Appends records of one topic: assigns offsets and adds them to the open segment.
    /// A request with an idempotent producer's batch holds that one batch.
    pub(crate) async fn append(
        &self,
        topic: &str,
        topic_id: &str,
        mut batches: Vec<PartitionRecords>,
        wait_for_commit: bool,
    ) -> Result<AppendOutcome> {
        if batches.len() > 1 && batches.iter().any(|b| b.producer.is_some()) {
            return Err(Error::InvalidArgument(
                "a batch of an idempotent producer is for one partition".to_string(),
            ));
        }
        for batch in &batches {
            self.ensure_owned(&(topic.to_string(), batch.partition), topic_id)
                .await?;
        }
        // A transactional batch opening its producer's transaction in the partition is
        // checked against the coordinator's record first (one metastore read).
        // A retry of a batch already written is answered with its offsets even if the
        // transaction has closed since: the check's verdict waits for the sequence check.
        let mut verified: Option<(u64, Result<()>)> = None;
        if let Some(batch) = batches.first()
            && let (Some(fields), Some(transactional_id)) =
                (batch.producer, batch.transactional_id.as_deref())
        {
            let key = (topic.to_string(), batch.partition);
            let (open, markers) = self.transaction_open(&key, fields);
            if !open {
                let verdict = self
                    .verify_transaction(&key, topic_id, transactional_id, fields)
                    .await;
                verified = Some((markers, verdict));
            }
        }
        let request_bytes: usize = batches.iter().map(|b| b.payload.bytes()).sum();
        let mut state = self.writer.state.lock().expect("writer lock");
        if state.closed {
            return Err(Error::Unavailable("agent is shutting down".to_string()));
        }
        let pending = state.open.bytes + state.flushing_bytes;
        if pending > 0 && pending + request_bytes > self.config.max_pending_bytes {
            return Err(Error::Overloaded(format!(
                "{pending} bytes are waiting for the object store; retry later"
            )));
        }
        // Check every partition before touching any, so a request is all or nothing; an
        // ownership of another incarnation of the topic is none.
        for batch in &batches {
            let key = (topic.to_string(), batch.partition);
            if state
                .owned
                .get(&key)
                .is_none_or(|o| o.owner.topic_id != topic_id)
            {
                return Err(Error::NotOwner {
                    topic: topic.to_string(),
                    partition: batch.partition,
                    reason: "ownership was lost while the request waited; retry".to_string(),
                });
            }
        }
        let now = self.clock.now_ms();
        if let Some(batch) = batches.first()
            && let Some(fields) = batch.producer
        {
            let key = (topic.to_string(), batch.partition);
            let checked = self.check_producer(&mut state, &key, fields, batch, now);
            if let Ok(Some(original)) = checked {
                return Ok(AppendOutcome {
                    first_offsets: vec![original],
                    commit: None,
                    duplicate: true,
                });
            }
            if let Some((markers, verdict)) = verified {
                verdict?;
                if state.owned.get(&key).is_some_and(|o| o.markers != markers) {
                    return Err(Error::Unavailable(
                        "a transaction marker was written while the batch was checked; retry"
                            .to_string(),
                    ));
                }
            }
            checked?;
        }
        let mut first_offsets = Vec::with_capacity(batches.len());
        let mut keys = Vec::with_capacity(batches.len());
        for batch in batches.iter_mut() {
            let key = (topic.to_string(), batch.partition);
            let ownership = state.owned.get_mut(&key).expect("checked above");
            let base = ownership.next_offset;
            if let Payload::Records(records) = &mut batch.payload {
                for (i, record) in records.iter_mut().enumerate() {
                    record.offset = base + i as i64;
                }
            }
            ownership.next_offset += batch.payload.len() as i64;
            let transactional = batch.transactional_id.is_some();
            let producer_state = batch.producer.map(|fields| {
                let count = batch.payload.len() as i32;
                let old = ownership.producers.remove(&fields.producer_id);
                let mut new = record_batch(old, fields, count, base, now);
                if transactional && new.txn_first_offset.is_none() {
                    new.txn_first_offset = Some(base);
                }
                ownership.producers.insert(fields.producer_id, new.clone());
                // Written again: no longer expired.
                ownership.expired.retain(|id| *id != fields.producer_id);
                (fields.producer_id, new)
            });
            let kind = if transactional {
                BatchKind::Transactional
            } else {
                BatchKind::Data
            };
            let owner = ownership.owner.clone();
            first_offsets.push(base);
            let mut expired = std::mem::take(&mut ownership.expired);
            let block = state
                .open
                .blocks
                .entry(key.clone())
                .or_insert_with(|| PendingBlock::new(owner, batch.compression));
            let payload = std::mem::replace(&mut batch.payload, Payload::Records(Vec::new()));
            match (block.runs.last_mut(), batch.producer, payload) {
                (
                    Some(Run::Records {
                        producer: None,
                        kind: BatchKind::Data,
                        records,
                    }),
                    None,
                    Payload::Records(mut more),
                ) => records.append(&mut more),
                (_, producer, Payload::Records(records)) => block.runs.push(Run::Records {
                    producer,
                    kind,
                    records,
                }),
                (_, _, Payload::Encoded(encoded)) => block.runs.push(Run::Encoded {
                    batch: encoded,
                    base_offset: base,
                }),
            }
            if let Some((id, producer_state)) = producer_state {
                block.set_producer(id, producer_state);
            }
            // Expired states are deleted a few per block, never one the block writes.
            let room = MAX_EXPIRED_PER_BLOCK.saturating_sub(block.expired.len());
            let take = expired.len().min(room);
            block.expired.extend(
                expired
                    .drain(..take)
                    .filter(|id| !block.producers.contains_key(id)),
            );
            state.owned.get_mut(&key).expect("checked above").expired = expired;
            keys.push(key);
        }
        state.open.bytes += request_bytes;
        let receiver = wait_for_commit.then(|| {
            let (done, receiver) = oneshot::channel();
            state.open.waiters.push(Waiter {
                partitions: keys,
                done,
            });
            receiver
        });
        let just_opened = state.open.opened_at.is_none();
        if just_opened {
            state.open.opened_at = Some(Instant::now());
        }
        let full = state.open.bytes >= self.config.segment_max_bytes;
        drop(state);
        if just_opened || full {
            self.writer.wake_flusher.notify_one();
        }
        Ok(AppendOutcome {
            first_offsets,
            commit: receiver,
            duplicate: false,
        })
    }

    /// Checks an idempotent producer's batch against its state in the partition (owned,
    /// checked by the caller): `Some(base offset)` for a retry of a committed batch,
    /// `None` to append it, or why it is refused.
    fn check_producer(
        &self,
        state: &mut WriterState,
        key: &PartitionKey,
        fields: ProducerFields,
        batch: &PartitionRecords,
        now: i64,
    ) -> Result<Option<i64>> {
        let limits = &self.config.limits;
        let count = i32::try_from(batch.payload.len()).map_err(|_| {
            Error::InvalidArgument("a batch holds more than 2^31 records".to_string())
        })?;
        let in_block = state.open.blocks.get(key).map(|b| {
            (
                b.producers.len(),
                b.producers.contains_key(&fields.producer_id),
            )
        });
        let ownership = state.owned.get_mut(key).expect("checked by the caller");
        let known = ownership.producers.get(&fields.producer_id);
        if let Some(open) = known.filter(|p| p.txn_first_offset.is_some()) {
            if fields.producer_epoch > open.epoch {
                // Its marker is on its way (the coordinator aborts it under the new
                // epoch); until then the old transaction holds the partition.
                return Err(Error::Unavailable(format!(
                    "producer {}'s transaction of epoch {} is still being closed in {}/{}; retry",
                    fields.producer_id, open.epoch, key.0, key.1
                )));
            }
            if batch.transactional_id.is_none() && fields.producer_epoch == open.epoch {
                return Err(Error::InvalidArgument(format!(
                    "producer {} has a transaction open in {}/{}: its batches there are \
                     transactional until it ends",
                    fields.producer_id, key.0, key.1
                )));
            }
        }
        match check_sequence(&key.0, key.1, known, fields, count)? {
            SequenceCheck::Duplicate(original) if original.last_offset < ownership.committed_to => {
                return Ok(Some(original.base_offset));
            }
            SequenceCheck::Duplicate(original) => {
                return Err(Error::Unavailable(format!(
                    "this batch of producer {} (offsets {} to {}) is still being committed; \
                     retry to get its offsets",
                    fields.producer_id, original.base_offset, original.last_offset
                )));
            }
            SequenceCheck::Append => {}
        }
        if known.is_none() {
            if ownership.producers.len() >= limits.max_producers_per_partition {
                // Make room by dropping the states that expired.
                let expiration = limits.producer_id_expiration_ms;
                let gone: Vec<i64> = ownership
                    .producers
                    .iter()
                    .filter(|(_, s)| expired(s, now, expiration) && s.txn_first_offset.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                for id in &gone {
                    ownership.producers.remove(id);
                }
                ownership.expired.extend(gone);
            }
            if ownership.producers.len() >= limits.max_producers_per_partition {
                return Err(crate::limits::full(
                    format!(
                        "{}/{} has {} idempotent producers that wrote within \
                         producer_id_expiration_ms; a new one is refused until one expires",
                        key.0,
                        key.1,
                        ownership.producers.len()
                    ),
                    "max_producers_per_partition",
                ));
            }
        }
        if let Some((producers, false)) = in_block
            && producers >= MAX_PRODUCERS_PER_BLOCK
        {
            return Err(Error::Overloaded(format!(
                "{MAX_PRODUCERS_PER_BLOCK} producers already wrote to {}/{} since the last \
                 flush; retry",
                key.0, key.1
            )));
        }
        Ok(None)
    }

    /// Whether `fields`' producer has an open transaction in the partition under its
    /// epoch, and how many markers the partition had appended (see [`Ownership::markers`]).
    fn transaction_open(&self, key: &PartitionKey, fields: ProducerFields) -> (bool, u64) {
        let state = self.writer.state.lock().expect("writer lock");
        let Some(ownership) = state.owned.get(key) else {
            return (false, 0);
        };
        let open = ownership
            .producers
            .get(&fields.producer_id)
            .is_some_and(|p| p.epoch == fields.producer_epoch && p.txn_first_offset.is_some());
        (open, ownership.markers)
    }

    /// Checks with the transaction's record that a transactional batch may open its
    /// producer's transaction in the partition: the transaction is ongoing under the
    /// batch's producer id and epoch and lists the partition (KIP-890's check).
    async fn verify_transaction(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        transactional_id: &str,
        fields: ProducerFields,
    ) -> Result<()> {
        let record = self.metastore.transaction(transactional_id).await?;
        let not_in = |why: String| Error::NotInTransaction {
            transactional_id: transactional_id.to_string(),
            reason: why,
        };
        let Some(record) = record else {
            return Err(not_in(
                "the transactional id is unknown: call InitTransactions".into(),
            ));
        };
        if record.producer_id != fields.producer_id || record.epoch > fields.producer_epoch {
            return Err(Error::ProducerFenced {
                producer_id: fields.producer_id,
                epoch: fields.producer_epoch,
                current: record.epoch,
            });
        }
        if record.epoch != fields.producer_epoch
            || record.status != strata_metastore::TransactionStatus::Ongoing
        {
            return Err(not_in(format!(
                "its transaction is {} (epoch {})",
                record.status.name(),
                record.epoch
            )));
        }
        let listed = record.partitions.get(&key.0).is_some_and(|t| {
            t.partitions.contains(&key.1) && (t.topic_id.is_empty() || t.topic_id == topic_id)
        });
        if !listed {
            return Err(not_in(format!(
                "{}/{} was not added to the transaction: call AddPartitionsToTransaction first",
                key.0, key.1
            )));
        }
        Ok(())
    }

    /// Appends a transaction's COMMIT (or ABORT) marker for producer `producer_id` to a
    /// partition and waits for its commit. A marker for a transaction the partition does
    /// not have open (already closed, or never opened here) writes nothing.
    pub(crate) async fn write_marker(
        &self,
        key: &PartitionKey,
        topic_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        self.ensure_owned(key, topic_id).await?;
        let step = 'marker: {
            let mut state = self.writer.state.lock().expect("writer lock");
            if state.closed {
                return Err(Error::Unavailable("agent is shutting down".to_string()));
            }
            let now = self.clock.now_ms();
            let Some(ownership) = state.owned.get_mut(key) else {
                return Err(Error::NotOwner {
                    topic: key.0.clone(),
                    partition: key.1,
                    reason: "ownership was lost while the marker waited; retry".to_string(),
                });
            };
            // Any marker request fences: a transactional batch checked against the
            // coordinator's record before it is checked again.
            ownership.markers += 1;
            let Some(producer) = ownership.producers.get_mut(&producer_id) else {
                break 'marker MarkerStep::Done;
            };
            let first = match producer
                .txn_first_offset
                .filter(|_| producer.epoch <= epoch)
            {
                Some(first) => first,
                None => {
                    if epoch > producer.epoch {
                        // A new epoch's history starts empty (its sequences restart).
                        producer.epoch = epoch;
                        producer.batches.clear();
                    }
                    // Closed by a marker not committed yet: answer once it is.
                    let pending = ownership
                        .pending_markers
                        .get(&producer_id)
                        .copied()
                        .filter(|offset| *offset >= ownership.committed_to);
                    break 'marker match pending {
                        Some(offset) => MarkerStep::AwaitEarlier(offset, ownership.owner.clone()),
                        None => MarkerStep::Done,
                    };
                }
            };
            let offset = ownership.next_offset;
            ownership.next_offset += 1;
            ownership.pending_markers.insert(producer_id, offset);
            producer.txn_first_offset = None;
            if epoch > producer.epoch {
                producer.epoch = epoch;
                producer.batches.clear();
            }
            producer.last_write_ms = producer.last_write_ms.max(now);
            let snapshot = producer.clone();
            let owner = ownership.owner.clone();
            let marker = control_record(offset, now, commit, 0);
            let fields = ProducerFields {
                producer_id,
                producer_epoch: epoch,
                base_sequence: -1,
            };
            let bytes = batch_bytes(std::slice::from_ref(&marker));
            let block = state
                .open
                .blocks
                .entry(key.clone())
                .or_insert_with(|| PendingBlock::new(owner, Compression::None));
            block.runs.push(Run::Records {
                producer: Some(fields),
                kind: BatchKind::Control,
                records: vec![marker],
            });
            block.set_producer(producer_id, snapshot);
            if !commit {
                block.aborted.push(AbortedRange {
                    producer_id,
                    first_offset: first,
                    last_offset: offset,
                });
            }
            state.open.bytes += bytes;
            let (done, receiver) = oneshot::channel();
            state.open.waiters.push(Waiter {
                partitions: vec![key.clone()],
                done,
            });
            if state.open.opened_at.is_none() {
                state.open.opened_at = Some(Instant::now());
            }
            MarkerStep::Appended(receiver)
        };
        match step {
            MarkerStep::Done => Ok(()),
            MarkerStep::AwaitEarlier(offset, owner) => self.await_marker(key, offset, owner).await,
            MarkerStep::Appended(receiver) => {
                self.writer.wake_flusher.notify_one();
                receiver
                    .await
                    .map_err(|_| Error::Unavailable("agent stopped before the commit".into()))?
            }
        }
    }

    /// Waits until the marker at `offset` (appended under `owner`) is committed: the
    /// partition's high watermark passes it while the ownership is still `owner`. If the
    /// ownership changed (its flush failed), the marker must be written again: retry.
    async fn await_marker(
        &self,
        key: &PartitionKey,
        offset: i64,
        owner: PartitionOwner,
    ) -> Result<()> {
        let mut committed = self.partition_log(key).subscribe();
        let _ = tokio::time::timeout(
            MARKER_COMMIT_WAIT,
            committed.wait_for(|c| c.high_watermark > offset),
        )
        .await;
        let still_owned = self
            .writer
            .state
            .lock()
            .expect("writer lock")
            .owned
            .get(key)
            .is_some_and(|o| o.owner == owner && o.committed_to > offset);
        if still_owned {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "the marker at {}/{} offset {offset} was not committed; retry",
                key.0, key.1
            )))
        }
    }

    /// Stops accepting writes; the flusher flushes what is open and exits.
    pub(crate) fn close_writer(&self) {
        self.writer.state.lock().expect("writer lock").closed = true;
        self.writer.wake_flusher.notify_one();
    }

    /// The flusher: seals the open segment when it is full or its linger time passed, and
    /// flushes sealed segments as a pipeline: up to `max_inflight_flushes` are encoded and
    /// PUT at once, and a single committer commits and answers them strictly in sealing
    /// order. While every slot is busy the open segment keeps growing (batching under
    /// load; producers get RESOURCE_EXHAUSTED past `max_pending_bytes`).
    ///
    /// Commit order is what keeps offsets dense: a partition's block in segment N+1 starts
    /// where its block in N ends, and the metastore refuses it unless N committed first.
    pub(crate) async fn run_flusher(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.max_inflight_flushes.max(1)));
        let (to_committer, mut sealed) =
            mpsc::unbounded_channel::<(JoinHandle<PutSegment>, OwnedSemaphorePermit)>();
        let committer = tokio::spawn({
            let inner = self.clone();
            async move {
                while let Some((put, slot)) = sealed.recv().await {
                    let put = match put.await {
                        Ok(put) => put,
                        Err(e) => {
                            // Its records' offsets are lost with it, so no later segment
                            // may commit either: the agent fails (and restarts), its
                            // waiters get errors as the segments are dropped.
                            inner.fail("segment write", &crate::agent::panic_message(e));
                            return;
                        }
                    };
                    let span = info_span!("agent.commit", sequence = put.sequence);
                    inner.commit_segment(put).instrument(span).await;
                    drop(slot);
                }
            }
        });
        let mut last_seal: Option<Instant> = None;
        while let Some(slot) = self.next_due_segment(&slots).await {
            let (segment, sequence) = {
                let mut state = self.writer.state.lock().expect("writer lock");
                let mut segment = std::mem::take(&mut state.open);
                seal_stable_offsets(&mut state, &mut segment);
                state.flushing_bytes += segment.bytes;
                state.next_sequence += 1;
                self.metrics
                    .pending_bytes
                    .set((state.flushing_bytes + state.open.bytes) as i64);
                (segment, state.next_sequence)
            };
            let now = Instant::now();
            if let Some(last) = last_seal.replace(now) {
                self.metrics
                    .flush_interval
                    .observe((now - last).as_secs_f64());
            }
            let span = info_span!("agent.flush", sequence, partitions = segment.blocks.len());
            let put = tokio::spawn({
                let inner = self.clone();
                async move { inner.put_segment(segment, sequence).await }.instrument(span)
            });
            // The committer outlives this loop; a send only fails if it panicked.
            let _ = to_committer.send((put, slot));
        }
        drop(to_committer);
        let _ = committer.await;
    }

    /// Waits until the open segment is due (full, lingered, or the agent is closing) and
    /// a flush slot is free; `None` once the agent is closed and nothing is open.
    async fn next_due_segment(&self, slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        loop {
            let (opened_at, full, closed) = {
                let state = self.writer.state.lock().expect("writer lock");
                (
                    state.open.opened_at,
                    state.open.bytes >= self.config.segment_max_bytes,
                    state.closed,
                )
            };
            match opened_at {
                None if closed => return None,
                None => self.writer.wake_flusher.notified().await,
                Some(opened) => {
                    let due = opened + self.config.linger;
                    if full || closed || Instant::now() >= due {
                        return Some(slots.clone().acquire_owned().await.expect("never closed"));
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = self.writer.wake_flusher.notified() => {}
                    }
                }
            }
        }
    }

    /// Encodes a sealed segment, PUTs it and writes its blocks through the cache.
    async fn put_segment(&self, segment: OpenSegment, sequence: u64) -> PutSegment {
        let OpenSegment {
            blocks,
            waiters,
            bytes: pending_bytes,
            ..
        } = segment;
        if crate::failpoint::hit("put-panic") {
            panic!("failpoint put-panic: the segment PUT task panics");
        }
        let owners: HashMap<PartitionKey, PartitionOwner> = blocks
            .iter()
            .map(|(key, block)| (key.clone(), block.owner.clone()))
            .collect();
        let producers: HashMap<PartitionKey, ProducerChanges> = blocks
            .iter()
            .filter(|(_, block)| {
                !block.producers.is_empty()
                    || !block.expired.is_empty()
                    || block.last_stable_offset.is_some()
            })
            .map(|(key, block)| {
                let changes = ProducerChanges {
                    producers: block
                        .producers
                        .iter()
                        .map(|(id, state)| (*id, state.clone()))
                        .collect(),
                    expired: block.expired.clone(),
                    aborted: block.aborted.clone(),
                    last_stable_offset: block.last_stable_offset,
                };
                (key.clone(), changes)
            })
            .collect();
        let object = object_name(self.agent_epoch, sequence);
        // Encoding and compression are CPU work: off the async workers, so a large
        // segment never delays heartbeats and lease renewals.
        let (bytes, mut written, mut failed) = tokio::task::spawn_blocking(move || {
            let mut failed: HashMap<PartitionKey, Error> = HashMap::new();
            let mut builder = SegmentBuilder::new();
            let mut written = Vec::with_capacity(blocks.len());
            for (key, block) in blocks {
                let runs: Vec<BatchRun<'_>> = block
                    .runs
                    .iter()
                    .map(|run| match run {
                        Run::Records {
                            producer,
                            kind,
                            records,
                        } => BatchRun::Records {
                            producer: *producer,
                            kind: *kind,
                            records,
                        },
                        Run::Encoded { batch, base_offset } => BatchRun::Encoded {
                            bytes: &batch.bytes,
                            base_offset: *base_offset,
                            count: batch.count,
                            max_timestamp_ms: batch.max_timestamp_ms,
                        },
                    })
                    .collect();
                let count = block.runs.iter().map(Run::count).sum();
                match builder.add_batches(
                    &key.0,
                    &block.owner.topic_id,
                    key.1,
                    &runs,
                    block.compression,
                ) {
                    Ok((bytes, location)) => {
                        written.push((key, count, bytes, location));
                    }
                    Err(e) => {
                        failed.insert(key, Error::Unavailable(e.to_string()));
                    }
                }
            }
            (builder.finish_payload(), written, failed)
        })
        .await
        .expect("segment encoding panicked");
        let size = bytes.content_length() as u64;
        let timer = self.metrics.put_latency.start_timer();
        let put = self.put_object(&object, bytes).await;
        timer.observe_duration();
        match &put {
            Ok(()) => {
                self.metrics.segment_puts.inc();
                self.metrics.segment_bytes.inc_by(size);
                self.metrics.flush_bytes.observe(size as f64);
                self.metrics.flush_partitions.observe(written.len() as f64);
                for (_, _, block, location) in &written {
                    self.cache
                        .insert(&object, location.byte_start, block.clone());
                }
            }
            Err(e) => {
                tracing::warn!(%object, error = %e, "segment PUT failed; failing its producers");
                for (key, ..) in &written {
                    failed.insert(
                        key.clone(),
                        Error::Unavailable(format!("segment write failed: {e}")),
                    );
                }
                written.clear();
            }
        }
        PutSegment {
            sequence,
            object,
            pending_bytes,
            written: written
                .into_iter()
                .map(|(key, records, _, location)| (key, records, location))
                .collect(),
            producers,
            owners,
            failed,
            waiters,
        }
    }

    /// Commits a PUT segment's partitions in one metastore commit, then answers its
    /// waiters and forgets the partitions whose commit failed.
    async fn commit_segment(&self, put: PutSegment) {
        let PutSegment {
            object,
            pending_bytes,
            written,
            producers,
            owners,
            mut failed,
            waiters,
            ..
        } = put;
        let mut committed = Vec::new();
        if !written.is_empty() {
            let appended_at_ms = self.clock.now_ms();
            let appends: Vec<PartitionAppend> = written
                .iter()
                .map(|(key, _, location)| {
                    let changes = producers.get(key);
                    PartitionAppend {
                        topic: key.0.clone(),
                        partition: key.1,
                        owner: owners[key].clone(),
                        producers: changes.map(|c| c.producers.clone()).unwrap_or_default(),
                        expired_producers: changes.map(|c| c.expired.clone()).unwrap_or_default(),
                        aborted: changes.map(|c| c.aborted.clone()).unwrap_or_default(),
                        last_stable_offset: changes.and_then(|c| c.last_stable_offset),
                        entry: strata_metastore::IndexEntry {
                            base_offset: location.base_offset,
                            last_offset: location.last_offset,
                            object: object.clone(),
                            byte_start: location.byte_start,
                            byte_len: location.byte_len,
                            max_timestamp_ms: location.max_timestamp_ms,
                            appended_at_ms,
                            topic_id: location.topic_id.clone(),
                        },
                    }
                })
                .collect();
            let timer = self.metrics.metastore_commit_latency.start_timer();
            let mut commit = self.metastore.commit_flush(&appends).await;
            timer.observe_duration();
            if commit.is_ok() && crate::failpoint::hit("commit-reply-lost") {
                commit = Err(strata_metastore::Error::Unavailable(
                    "failpoint commit-reply-lost: the commit's reply was lost".to_string(),
                ));
            }
            match commit {
                Ok(report) => {
                    self.metrics
                        .metastore_commits
                        .inc_by(report.transactions as u64);
                    self.metrics.metastore_bytes.inc_by(report.bytes);
                    let rejected: HashMap<usize, Rejection> = report.rejected.into_iter().collect();
                    for (i, append) in appends.into_iter().enumerate() {
                        let key = (append.topic, append.partition);
                        match rejected.get(&i) {
                            Some(rejection) => {
                                let error = rejection_error(&key, rejection);
                                tracing::warn!(
                                    topic = %key.0, partition = key.1, %object, error = %error,
                                    "flush commit fenced: its records are not acknowledged"
                                );
                                failed.insert(key, error);
                            }
                            None => committed.push((key, append.entry)),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%object, error = %e, "flush commit failed; outcome unknown");
                    for append in appends {
                        failed.insert(
                            (append.topic, append.partition),
                            Error::Unavailable(format!(
                                "metastore commit failed, outcome unknown: {e}"
                            )),
                        );
                    }
                }
            }
        }
        if !committed.is_empty() {
            let records: usize = written
                .iter()
                .filter(|(key, ..)| !failed.contains_key(key))
                .map(|(_, records, _)| records)
                .sum();
            self.metrics.flushes.inc();
            self.metrics.partition_blocks.inc_by(committed.len() as u64);
            self.metrics.records_committed.inc_by(records as u64);
        }
        let mut stable: HashMap<PartitionKey, i64> = HashMap::new();
        {
            // A retry of a batch committed now is answered with its offsets from here on,
            // and the open transactions are as committed.
            let mut state = self.writer.state.lock().expect("writer lock");
            for (key, entry) in &committed {
                if let Some(ownership) = state.owned.get_mut(key)
                    && ownership.owner == owners[key]
                {
                    ownership.committed_to = ownership.committed_to.max(entry.last_offset + 1);
                    let committed_to = ownership.committed_to;
                    ownership
                        .pending_markers
                        .retain(|_, offset| *offset >= committed_to);
                    for (id, producer) in producers.get(key).map_or(&[][..], |c| &c.producers) {
                        match producer.txn_first_offset {
                            Some(first) => ownership.open_transactions.insert(*id, first),
                            None => ownership.open_transactions.remove(id),
                        };
                    }
                    stable.insert(key.clone(), ownership.last_stable_offset());
                }
            }
        }
        for (key, entry) in committed {
            self.metrics
                .high_watermark
                .with_label_values(&[key.0.as_str(), &key.1.to_string()])
                .set(entry.last_offset + 1);
            let high_watermark = entry.last_offset + 1;
            let log = self.partition_log(&key);
            log.on_commit(entry);
            // Only while still held: a new ownership sets its own.
            if let Some(last_stable_offset) = stable.get(&key) {
                let aborted = producers.get(&key).map_or(&[][..], |c| &c.aborted);
                log.add_stable(*last_stable_offset, aborted, high_watermark);
            }
        }
        {
            let mut state = self.writer.state.lock().expect("writer lock");
            state.flushing_bytes = state.flushing_bytes.saturating_sub(pending_bytes);
            if !failed.is_empty() {
                let keys: Vec<PartitionKey> = failed.keys().cloned().collect();
                drop_partitions(&mut state, &keys, Some(&owners), |_| {
                    Error::Unavailable("an earlier write of this partition failed; retry".into())
                });
            }
            self.metrics
                .pending_bytes
                .set((state.flushing_bytes + state.open.bytes) as i64);
        }
        for waiter in waiters {
            let error = waiter.partitions.iter().find_map(|k| failed.get(k));
            let _ = waiter.done.send(match error {
                None => Ok(()),
                Some(e) => Err(clone_error(e)),
            });
        }
    }

    /// PUTs a segment object, retrying a few times. The name is this incarnation's alone,
    /// so an "already exists" on a retry means an earlier attempt landed.
    #[instrument(name = "agent.put_object", skip(self, bytes), fields(bytes = bytes.content_length()))]
    async fn put_object(
        &self,
        object: &str,
        bytes: strata_storage::PutPayload,
    ) -> strata_storage::Result<()> {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            match self.store.put_create_only(object, bytes.clone()).await {
                Ok(()) => return Ok(()),
                Err(strata_storage::Error::AlreadyExists(_)) if attempt > 1 => return Ok(()),
                Err(e) if attempt >= 4 => return Err(e),
                Err(e) => {
                    tracing::warn!(object, attempt, error = %e, "segment PUT failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

/// Sets, in each block of a segment being sealed whose partition has (or had) open
/// transactions, the last stable offset after it: the newest segment holds every
/// partition's latest appends, so the owner's producer states are the states after it.
fn seal_stable_offsets(state: &mut WriterState, segment: &mut OpenSegment) {
    for (key, block) in segment.blocks.iter_mut() {
        let Some(ownership) = state.owned.get_mut(key) else {
            continue;
        };
        let oldest_open = ownership
            .producers
            .values()
            .filter_map(|p| p.txn_first_offset)
            .min();
        if oldest_open.is_none() && !ownership.stable_stored {
            continue;
        }
        let end = block
            .runs
            .iter()
            .filter_map(Run::end)
            .max()
            .unwrap_or(ownership.next_offset);
        block.last_stable_offset = Some(oldest_open.unwrap_or(end).min(end));
        ownership.stable_stored = oldest_open.is_some();
    }
}

/// Forgets ownership of `keys` and drops their records from the open segment; the waiters
/// of those records get `error(key)` for the first of their partitions dropped.
///
/// With `owners`, a partition is dropped only while this agent still holds it under the
/// listed ownership: if it was taken again meanwhile (a new epoch, offsets re-read from
/// the metastore), the new ownership and its records stay.
fn drop_partitions(
    state: &mut WriterState,
    keys: &[PartitionKey],
    owners: Option<&HashMap<PartitionKey, PartitionOwner>>,
    error: impl Fn(&PartitionKey) -> Error,
) {
    let mut dropped: HashSet<&PartitionKey> = HashSet::new();
    for key in keys {
        let still_held = match (state.owned.get(key), owners.and_then(|o| o.get(key))) {
            (Some(current), Some(failed)) => current.owner == *failed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !still_held {
            continue;
        }
        state.owned.remove(key);
        dropped.insert(key);
        if let Some(block) = state.open.blocks.remove(key) {
            state.open.bytes = state.open.bytes.saturating_sub(block.bytes());
        }
    }
    let waiters = std::mem::take(&mut state.open.waiters);
    for waiter in waiters {
        if let Some(key) = waiter.partitions.iter().find(|k| dropped.contains(k)) {
            let _ = waiter.done.send(Err(error(key)));
        } else {
            state.open.waiters.push(waiter);
        }
    }
    if state.open.blocks.is_empty() {
        state.open.opened_at = None;
    }
}

fn rejection_error(key: &PartitionKey, rejection: &Rejection) -> Error {
    let reason = match rejection {
        Rejection::Fenced {
            current: Some(owner),
        } => format!(
            "agent '{}' took it over (epoch {})",
            owner.agent_id, owner.epoch
        ),
        Rejection::Fenced { current: None } => "the partition was deleted".to_string(),
        Rejection::OffsetMismatch { high_watermark } => {
            format!("another writer moved its high watermark to {high_watermark}")
        }
        Rejection::TooLarge { operations, limit } => format!(
            "its flush needs {operations} metastore operations, over the {limit} one \
             transaction holds; retry"
        ),
    };
    Error::NotOwner {
        topic: key.0.clone(),
        partition: key.1,
        reason,
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::NotOwner {
            topic,
            partition,
            reason,
        } => Error::NotOwner {
            topic: topic.clone(),
            partition: *partition,
            reason: reason.clone(),
        },
        Error::TopicNotFound(t) => Error::TopicNotFound(t.clone()),
        other => Error::Unavailable(other.to_string()),
    }
}
