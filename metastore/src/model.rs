//! The values the metastore holds, as the rest of Strata sees them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A topic's definition. Immutable once created (until deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// The topic's name.
    pub name: String,
    /// This incarnation of the topic (a UUID, as Kafka's KIP-516): a topic deleted and
    /// created again under the same name has a new id, and nothing resolved against the
    /// old one is ever applied to the new one. Empty for topics created before ids.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic_id: String,
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Topic configuration as Kafka names it (`max.message.bytes`, ...), validated by the
    /// agent before it is stored.
    pub config: BTreeMap<String, String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// Who owns a partition, and under which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOwner {
    /// Bumped by every take-over; commits carry it and are refused once it moved on.
    pub epoch: u64,
    /// The owning agent.
    pub agent_id: String,
    /// The topic incarnation the partition was taken in (empty for coordinator slots and
    /// topics created before ids): a commit compares the whole owner record, so a writer
    /// of a deleted incarnation can never commit to a new one, whatever the epochs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic_id: String,
}

/// One partition's committed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The current owner, if any agent ever took the partition.
    pub owner: Option<PartitionOwner>,
    /// The first offset still readable (advanced by retention).
    pub log_start_offset: i64,
    /// One past the last committed offset: the offset the next record gets.
    pub high_watermark: i64,
    /// The first offset of the oldest open transaction, or the high watermark when none
    /// is open.
    pub last_stable_offset: i64,
}

/// Where a run of one partition's offsets is stored: a byte range of a segment object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// First offset of the run.
    pub base_offset: i64,
    /// Last offset of the run (inclusive).
    pub last_offset: i64,
    /// Object name, relative to the store's prefix.
    pub object: String,
    /// Offset of the partition's block in the object.
    pub byte_start: u64,
    /// Length of the block in bytes.
    pub byte_len: u64,
    /// Largest record timestamp in the run (ms), for time-based retention.
    pub max_timestamp_ms: i64,
    /// When the run was committed (ms, the writer's clock); 0 for entries written before
    /// this was recorded. A rewrite keeps the latest of the runs it replaces.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub appended_at_ms: i64,
    /// The incarnation of the topic the run was written for (its topic id, as the
    /// segment's footer names it); empty for entries written before topics had ids. A
    /// rewrite keeps it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic_id: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl IndexEntry {
    /// The time retention, the compaction lag and merges go by: the newest record's
    /// timestamp, but never later than when the run was appended. So a record dated in
    /// the future (a topic with a permissive `message.timestamp.after.max.ms` accepted
    /// it) ages like the records appended with it and cannot hold its run forever.
    pub fn time_ms(&self) -> i64 {
        if self.appended_at_ms > 0 {
            self.max_timestamp_ms.min(self.appended_at_ms)
        } else {
            self.max_timestamp_ms
        }
    }

    /// Whether the run holds no record at all: every offset of it was removed by log
    /// compaction. Such an entry names no object (`byte_len` 0); it keeps the index
    /// contiguous, so readers can tell "compacted away" from "missing".
    pub fn is_empty(&self) -> bool {
        self.byte_len == 0
    }
}

/// How far log compaction has cleaned a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanState {
    /// Offsets below this were compacted: at most one record per key remains there.
    pub cleaned_to: i64,
    /// Timestamp (ms) of the oldest tombstone kept in the cleaned part, if any: once it is
    /// older than `delete.retention.ms`, the partition is compacted again to drop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_tombstone_ms: Option<i64>,
}

/// How far a partition's records are archived as Parquet (topics with
/// `archive.enabled=true`), and the file being written.
///
/// A file's offset range is recorded here (`pending`) before the file is written, and
/// whoever works on the partition next writes exactly that range again before deciding
/// another: so every archive file in the store is a committed one or the pending one,
/// and a compactor killed (or fenced) mid-write leaves no stray file that overlaps another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveState {
    /// Records below this offset are in committed archive files; the next file starts here.
    pub archived_to: i64,
    /// The first offset the archive holds (the log start when archiving began).
    pub start_offset: i64,
    /// The file being written, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<ArchiveRange>,
    /// Committed files.
    pub files: u64,
    /// Records in committed files.
    pub records: u64,
    /// Bytes of committed files.
    pub bytes: u64,
    /// When the last file was committed, ms since the Unix epoch; 0 = never.
    pub archived_at_ms: i64,
}

/// The offsets one archive file covers, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRange {
    /// First offset.
    pub first: i64,
    /// Last offset.
    pub last: i64,
}

/// Most recent batches of one producer a partition's owner remembers, to answer a retry
/// with the batch's original offsets (Kafka's number).
pub const PRODUCER_BATCHES_KEPT: usize = 5;

/// One batch an idempotent producer wrote to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBatch {
    /// Sequence number of its first record.
    pub first_sequence: i32,
    /// Sequence number of its last record.
    pub last_sequence: i32,
    /// Offset of its first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
}

/// An idempotent producer's state in one partition: written with the flush commit that
/// holds its batches, so a partition's next owner reads it with the high watermark it
/// continues from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    /// The producer's epoch: batches of an older one are refused (fenced).
    pub epoch: i16,
    /// Its last batches, oldest first, at most [`PRODUCER_BATCHES_KEPT`].
    pub batches: Vec<ProducerBatch>,
    /// When it last wrote (ms, the owner's clock): the state expires
    /// `producer_id_expiration_ms` after.
    pub last_write_ms: i64,
    /// The first offset of its open transaction in the partition, if one is open: the
    /// partition's last stable offset is the smallest of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_first_offset: Option<i64>,
}

impl ProducerState {
    /// The sequence number of its last record written, if any.
    pub fn last_sequence(&self) -> Option<i32> {
        self.batches.last().map(|b| b.last_sequence)
    }
}

/// The offsets of an aborted transaction's records in one partition (Kafka's aborted
/// transaction index): records of `producer_id` in `first_offset..last_offset` (the
/// abort marker's offset) are never returned to `read_committed` readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedRange {
    /// The producer.
    pub producer_id: i64,
    /// Its transaction's first offset in the partition.
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
}

impl AbortedRange {
    /// Whether a transactional batch of `producer_id` starting at `offset` is one of the
    /// aborted transaction's.
    pub fn covers(&self, producer_id: i64, offset: i64) -> bool {
        self.producer_id == producer_id && self.first_offset <= offset && offset < self.last_offset
    }
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransactionStatus {
    /// No transaction is open.
    #[default]
    Empty,
    /// Open: partitions are being added and written.
    Ongoing,
    /// Decided to commit; markers are being written.
    PrepareCommit,
    /// Decided to abort; markers are being written.
    PrepareAbort,
    /// Committed: every marker written.
    CompleteCommit,
    /// Aborted: every marker written.
    CompleteAbort,
}

impl TransactionStatus {
    /// Kafka's name of the state (as `kafka-transactions.sh` shows it).
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }
}

/// The partitions of one topic in a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionTopic {
    /// The incarnation written to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic_id: String,
    /// Partition numbers.
    pub partitions: BTreeSet<u32>,
}

/// A transactional producer's state, kept by its transaction coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecord {
    /// The transactional id.
    pub transactional_id: String,
    /// The producer id it holds.
    pub producer_id: i64,
    /// Its epoch: bumped by every `init_transactions` and by the coordinator when it
    /// aborts a transaction that timed out, fencing older producers.
    pub epoch: i16,
    /// Where the current (or last) transaction is.
    pub status: TransactionStatus,
    /// `transaction.timeout.ms`.
    pub timeout_ms: u64,
    /// When the open transaction started (ms); 0 if none.
    pub started_ms: i64,
    /// When the record last changed (ms).
    pub updated_ms: i64,
    /// The open transaction's partitions, by topic.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partitions: BTreeMap<String, TransactionTopic>,
    /// Set when the coordinator aborted the last transaction because it was open longer
    /// than `timeout_ms` (its producer is fenced).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Group offsets committed with it, by group: `(topic, partition, offset)`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offsets: BTreeMap<String, Vec<(String, u32, CommittedOffset)>>,
}

impl TransactionRecord {
    /// Every partition of the open transaction.
    pub fn partition_list(&self) -> Vec<(String, String, u32)> {
        self.partitions
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .iter()
                    .map(move |p| (topic.clone(), t.topic_id.clone(), *p))
            })
            .collect()
    }
}

/// One partition's part of a flush: append `entry` under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAppend {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The ownership the writer holds: the commit is refused unless it is still current.
    pub owner: PartitionOwner,
    /// The new run; its `base_offset` must equal the current high watermark.
    pub entry: IndexEntry,
    /// The state of each idempotent producer with a batch in the run, by producer id, as
    /// of the run's end: stored with the run, atomically.
    pub producers: Vec<(i64, ProducerState)>,
    /// Producer ids whose state expired: deleted with the run.
    pub expired_producers: Vec<i64>,
    /// Transactions aborted by markers in the run: stored with it.
    pub aborted: Vec<AbortedRange>,
    /// The last stable offset after the run, when the partition has (or had) open
    /// transactions: stored with it (one equal to the new high watermark clears it).
    pub last_stable_offset: Option<i64>,
}

/// Why one partition's append was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Another owner took the partition: the writer is fenced.
    Fenced {
        /// The owner now on record, if any.
        current: Option<PartitionOwner>,
    },
    /// The append does not start at the high watermark.
    OffsetMismatch {
        /// The committed high watermark.
        high_watermark: i64,
    },
    /// The append needs more operations than one metastore transaction may hold.
    TooLarge {
        /// Operations it needs.
        operations: usize,
        /// The most one transaction holds.
        limit: usize,
    },
}

/// What [`crate::Metastore::commit_flush`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Metastore transactions that committed.
    pub transactions: u32,
    /// Bytes of keys and values those transactions wrote.
    pub bytes: u64,
    /// Appends refused, by their index in the request. All others committed.
    pub rejected: Vec<(usize, Rejection)>,
}

/// What [`crate::Metastore::acquire_partitions`] did.
#[derive(Debug, Default)]
pub struct TakeOverReport {
    /// Metastore transactions that took partitions (those of a conflict included).
    pub transactions: u32,
    /// Each partition's outcome, in the order asked: the state taken over, or why not.
    pub taken: Vec<crate::Result<PartitionState>>,
}

/// An agent as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Unique id of this agent process.
    pub agent_id: String,
    /// host:port of its gRPC server.
    pub address: String,
    /// Availability zone it runs in, if configured.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// host:port of its Kafka listener; empty if it has none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kafka_address: String,
    /// Its Kafka node id: unique among live agents, fixed for the incarnation's life (its
    /// incarnation number).
    #[serde(default)]
    pub node_id: i32,
}

/// A running compactor's totals since it started, as it publishes them after each pass
/// (under its lease: the record goes when the compactor does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactorRecord {
    /// Its id, as its claims name it.
    pub compactor_id: String,
    /// When it started, ms since the Unix epoch.
    pub started_ms: i64,
    /// Passes ended.
    pub passes: u64,
    /// When the last pass ended, ms since the Unix epoch.
    pub last_pass_ended_ms: i64,
    /// How long the last pass took, ms.
    pub last_pass_duration_ms: u64,
    /// Partition jobs done.
    pub jobs_done: u64,
    /// Jobs that failed.
    pub jobs_failed: u64,
    /// Index entries retention dropped.
    pub expired_entries: u64,
    /// Index entries merges replaced.
    pub merged_entries: u64,
    /// Records log compaction removed.
    pub compacted_records: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Orphaned objects deleted.
    pub orphans_deleted: u64,
    /// Archive files written.
    pub archived_files: u64,
    /// Records archived.
    pub archived_records: u64,
    /// The last failures, newest last: (ms since the Unix epoch, message). At most
    /// [`CompactorRecord::MAX_ERRORS`], each at most [`CompactorRecord::MAX_ERROR_LEN`]
    /// bytes.
    #[serde(default)]
    pub last_errors: Vec<(i64, String)>,
}

impl CompactorRecord {
    /// Failures a record keeps.
    pub const MAX_ERRORS: usize = 10;
    /// Longest failure message kept, bytes.
    pub const MAX_ERROR_LEN: usize = 500;

    /// Keeps `message` (cut to [`Self::MAX_ERROR_LEN`]) as the newest failure.
    pub fn push_error(&mut self, at_ms: i64, message: &str) {
        let mut end = message.len().min(Self::MAX_ERROR_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        if self.last_errors.len() == Self::MAX_ERRORS {
            self.last_errors.remove(0);
        }
        self.last_errors.push((at_ms, message[..end].to_string()));
    }
}

/// Which agent serves each partition, as the controller decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Bumped by every change the controller stores.
    pub generation: u64,
    /// The controller that stored it (`agent_id#agent_epoch`).
    pub controller: String,
    /// For each topic, the agent id of each partition, by partition number; `None` while
    /// no agent is live.
    pub topics: BTreeMap<String, Vec<Option<String>>>,
    /// The agent coordinating each group coordinator slot (a group's slot is
    /// `murmur2(group id) % slots`); `None` while no agent is live.
    #[serde(default)]
    pub coordinators: Vec<Option<String>>,
}

impl Assignment {
    /// The agent coordinating `slot`.
    pub fn coordinator_of(&self, slot: u32) -> Option<&str> {
        self.coordinators
            .get(slot as usize)
            .and_then(|agent| agent.as_deref())
    }

    /// Every coordinator slot assigned to `agent_id`.
    pub fn coordinator_slots_of<'a>(&'a self, agent_id: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.coordinators
            .iter()
            .enumerate()
            .filter(move |(_, a)| a.as_deref() == Some(agent_id))
            .map(|(slot, _)| slot as u32)
    }

    /// The agent a partition is assigned to.
    pub fn agent_of(&self, topic: &str, partition: u32) -> Option<&str> {
        self.topics
            .get(topic)
            .and_then(|agents| agents.get(partition as usize))
            .and_then(|agent| agent.as_deref())
    }

    /// Every partition assigned to `agent_id`.
    pub fn partitions_of<'a>(
        &'a self,
        agent_id: &'a str,
    ) -> impl Iterator<Item = (&'a str, u32)> + 'a {
        self.topics.iter().flat_map(move |(topic, agents)| {
            agents
                .iter()
                .enumerate()
                .filter(move |(_, a)| a.as_deref() == Some(agent_id))
                .map(move |(p, _)| (topic.as_str(), p as u32))
        })
    }
}

/// A topic and a partition number.
pub type TopicPartition = (String, u32);

/// An agent's hold on a group coordinator slot: the groups of the slot are written only
/// while `owner` is still the slot's owner on record (taken by
/// [`crate::Metastore::acquire_coordinator`], epoch + 1 each time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinatorship {
    /// The slot.
    pub slot: u32,
    /// The owner record the agent wrote when it took the slot.
    pub owner: PartitionOwner,
}

/// A consumer group as its coordinator stores it: written on every change of membership
/// or assignment, so that another coordinator can take over from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group id.
    pub group_id: String,
    /// Bumped whenever the members, their subscriptions or the subscribed topics'
    /// partition counts change: a new target assignment is due.
    pub epoch: u64,
    /// The group epoch the members' targets were computed for.
    pub assignment_epoch: u64,
    /// The assignor the targets were computed with (`uniform` or `range`).
    pub assignor: String,
    /// Partition count of each subscribed topic when the targets were computed.
    pub topic_partitions: BTreeMap<String, u32>,
    /// Members by member id.
    pub members: BTreeMap<String, MemberRecord>,
    /// The group's state under Kafka's classic protocol (JoinGroup / SyncGroup, the
    /// assignment computed by a member); absent while the group has no classic member.
    /// A group has members of one protocol at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classic: Option<ClassicGroupRecord>,
}

/// A consumer group under Kafka's classic protocol: the generation its members last
/// joined, and what they were told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicGroupRecord {
    /// The protocol type every member joined with (`consumer`, `connect`, ...).
    pub protocol_type: String,
    /// The generation: bumped each time a rebalance completes.
    pub generation: i32,
    /// The protocol (assignor) chosen for the generation.
    pub protocol_name: String,
    /// The member that computes the generation's assignment.
    pub leader: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
    pub state: String,
    /// Members by member id.
    pub members: BTreeMap<String, ClassicMemberRecord>,
}

/// A member of a classic group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMemberRecord {
    /// The member id the coordinator handed out.
    pub member_id: String,
    /// `group.instance.id` of a static member; empty for a dynamic one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    /// The client's id and address, for describing the group.
    pub client_id: String,
    pub client_host: String,
    /// Removed when no heartbeat comes for this long.
    pub session_timeout_ms: u64,
    /// How long a rebalance waits for the member to join again.
    pub rebalance_timeout_ms: u64,
    /// The protocols (assignors) the member supports, in its order of preference, each
    /// with its metadata (its subscription), opaque to the coordinator.
    pub protocols: Vec<ClassicProtocol>,
    /// The assignment the leader gave it in the current generation, opaque.
    #[serde(with = "base64_bytes")]
    pub assignment: Vec<u8>,
    /// Topics of its subscription, when the protocol type is `consumer` (for describing
    /// the group and its lag).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Partitions of its assignment, when the protocol type is `consumer`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub assigned: BTreeSet<TopicPartition>,
}

/// One protocol a classic member supports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicProtocol {
    /// Its name (the assignor's).
    pub name: String,
    /// Its metadata, opaque.
    #[serde(with = "base64_bytes")]
    pub metadata: Vec<u8>,
}

/// Opaque bytes in JSON as base64 (a JSON array of numbers would take four times the
/// space of the group's state limit).
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A member of a consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member id the coordinator handed out.
    pub member_id: String,
    /// `group.instance.id` of a static member; empty for a dynamic one.
    pub instance_id: String,
    /// Bumped whenever the member's assignment changes; commits and heartbeats carry it.
    pub epoch: u64,
    /// The epoch before the last change: still accepted, as a response may be in flight.
    pub previous_epoch: u64,
    /// Topics subscribed to by name.
    pub topics: Vec<String>,
    /// Topics subscribed to by regular expression (empty: none).
    pub topic_regex: String,
    /// Removed when no heartbeat comes for this long.
    pub session_timeout_ms: u64,
    /// Removed when a revoked partition is not given up within this long.
    pub rebalance_timeout_ms: u64,
    /// Partitions the member may own.
    pub assigned: BTreeSet<TopicPartition>,
    /// Partitions revoked from the member that it has not yet reported given up. No other
    /// member gets them until it does (or is removed).
    pub revoking: BTreeSet<TopicPartition>,
    /// The partitions the assignor wants the member to own.
    pub target: BTreeSet<TopicPartition>,
    /// A static member that left for now: it keeps its partitions until its session times
    /// out or its instance joins again.
    pub left: bool,
}

/// A committed consumer offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: i64,
    /// What the committer attached.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// When it was committed, ms since the Unix epoch.
    pub committed_at_ms: i64,
}

/// Bounds every stored value is checked against before a process acts on it, so that no
/// stored number (written by an older version, by hand, or corrupted) can make an agent,
/// controller or compactor allocate without a bound. The agent refuses requests beyond
/// the same limits before it stores anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLimits {
    /// Most partitions of one topic.
    pub max_partitions_per_topic: u32,
    /// Most partitions of all topics together.
    pub max_partitions: u64,
    /// Most topics.
    pub max_topics: u32,
    /// Most ACLs.
    pub max_acls: u32,
}

impl Default for StoredLimits {
    fn default() -> Self {
        Self {
            max_partitions_per_topic: 10_000,
            max_partitions: 100_000,
            max_topics: 10_000,
            max_acls: 10_000,
        }
    }
}

/// The kind of resource an ACL is about (Kafka's resource types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// A topic, by name.
    Topic,
    /// A consumer group, by id.
    Group,
    /// The cluster itself (its one name is [`CLUSTER_RESOURCE_NAME`]).
    Cluster,
    /// A transactional id.
    TransactionalId,
}

/// The one name of the cluster resource, as Kafka names it.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";

/// How an ACL's resource name matches resources (Kafka's pattern types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    /// The resource of exactly this name; the name `*` matches every resource of the type.
    Literal,
    /// Every resource whose name starts with this one.
    Prefixed,
}

/// What an ACL allows or denies (Kafka's operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclOperation {
    /// Every operation.
    All,
    /// Read records, join a group, commit offsets.
    Read,
    /// Write records.
    Write,
    /// Create topics.
    Create,
    /// Delete topics, records, groups.
    Delete,
    /// Change a topic (partitions), a group's offsets, the ACLs (on the cluster).
    Alter,
    /// See that a resource exists, its partitions, offsets, members.
    Describe,
    /// Read configuration.
    DescribeConfigs,
    /// Change configuration.
    AlterConfigs,
    /// Produce idempotently (on the cluster).
    IdempotentWrite,
    /// What agents do for each other (transaction markers); super users only by default.
    ClusterAction,
}

/// Whether an ACL allows or denies; a deny wins over any allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclPermission {
    /// Allows the operation.
    Allow,
    /// Denies it, whatever allows it.
    Deny,
}

/// One access control entry on one resource pattern (Kafka's ACL binding).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// How `resource_name` matches.
    pub pattern_type: PatternType,
    /// The resource's name, a prefix of names, or `*`.
    pub resource_name: String,
    /// Whose access: `User:<name>`, or `User:*` for everyone.
    pub principal: String,
    /// From which client address: an IP address, or `*` for any.
    pub host: String,
    /// What is allowed or denied.
    pub operation: AclOperation,
    /// Allowed or denied.
    pub permission: AclPermission,
}
