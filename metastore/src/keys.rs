//! The metastore's key schema: every key Strata writes, in one place.
//!
//! All keys live under a cluster root (default `/strata/<cluster>`):
//!
//! | key | value | changes |
//! |---|---|---|
//! | `{root}/topics/{topic}` | [`TopicMeta`](crate::TopicMeta), JSON | created, deleted |
//! | `{root}/partitions/{topic}/{p}/owner` | [`PartitionOwner`](crate::PartitionOwner), JSON: epoch, agent, topic id | on every take-over (epoch + 1) |
//! | `{root}/partitions/{topic}/{p}/hwm` | high watermark, decimal; absent = 0 | every committed flush |
//! | `{root}/partitions/{topic}/{p}/lso` | last stable offset, decimal; absent = the high watermark (no open transaction) | by flushes of partitions with transactions |
//! | `{root}/partitions/{topic}/{p}/start` | log start offset, decimal; absent = 0 | retention |
//! | `{root}/partitions/{topic}/{p}/index/{base:020}` | [`IndexEntry`](crate::IndexEntry), JSON | added by flushes; replaced by merges and log compaction, dropped by retention (compactor) |
//! | `{root}/partitions/{topic}/{p}/producers/{pid:020}` | [`ProducerState`](crate::ProducerState), JSON: epoch, last 5 batches (sequences, offsets), last write | with the flush commit holding the producer's batches; deleted once expired |
//! | `{root}/partitions/{topic}/{p}/aborted/{first:020}` | [`AbortedRange`](crate::AbortedRange), JSON: producer, first offset, abort marker offset | with the flush commit holding the abort marker |
//! | `{root}/partitions/{topic}/{p}/cleaned` | [`CleanState`](crate::CleanState), JSON | by log compaction |
//! | `{root}/partitions/{topic}/{p}/archived` | [`ArchiveState`](crate::ArchiveState), JSON | by the compactor, before and after each archive file |
//! | `{root}/compactors/{id}` | [`CompactorRecord`](crate::CompactorRecord), JSON | by each compactor after each pass (under its lease) |
//! | `{root}/compaction/{job}` | the compactor working on a job: `{topic}/{p}` or `orphan-gc` | job start and end (under the compactor's lease on etcd) |
//! | `{root}/agents/{agent_id}` | [`AgentRecord`](crate::AgentRecord), JSON | agent start (under a lease on etcd) |
//! | `{root}/coordinators/{slot}` | [`PartitionOwner`](crate::PartitionOwner) of a group coordinator slot, JSON | on every take-over (epoch + 1) |
//! | `{root}/groups/{group}` | [`GroupRecord`](crate::GroupRecord), JSON | by the group's coordinator, on membership and assignment changes |
//! | `{root}/transactions/{transactional id}` | [`TransactionRecord`](crate::TransactionRecord), JSON: producer id, epoch, state, partitions, offsets | by the transaction's coordinator (under its coordinator slot), at each step of a transaction |
//! | `{root}/offsets/{topic}/{group}/{p}` | [`CommittedOffset`](crate::CommittedOffset), JSON | offset commits; deleted with the topic or the group |
//! | `{root}/counters/agent-epoch` | last agent incarnation number, decimal | agent start |
//! | `{root}/counters/producer-id` | the next producer id not handed out, decimal; absent = 0 | when an agent takes a block of producer ids |
//! | `{root}/cluster/object-store` | the object store the cluster's segments live in | never (set by the first agent) |
//! | `{root}/cluster/controller` | the controller, `agent_id#agent_epoch` | election (under the controller's lease on etcd) |
//! | `{root}/cluster/assignment` | [`Assignment`](crate::Assignment), JSON | by the controller, when agents or topics change |
//!
//! Topic names and group ids cannot contain `/`, so `partitions/{topic}/` never prefixes another topic's
//! keys. Index keys are zero-padded so that key order is offset order.

/// Builds the keys of one cluster root.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// Keys under `root` (no trailing slash).
    pub fn new(root: impl Into<String>) -> Self {
        let root = root.into().trim_end_matches('/').to_string();
        Self { root }
    }

    /// The root itself.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Prefix of all topic definitions.
    pub fn topics_prefix(&self) -> String {
        format!("{}/topics/", self.root)
    }

    /// A topic's definition.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}/topics/{topic}", self.root)
    }

    /// Prefix of every key of every partition of `topic`.
    pub fn topic_partitions_prefix(&self, topic: &str) -> String {
        format!("{}/partitions/{topic}/", self.root)
    }

    fn partition(&self, topic: &str, partition: u32) -> String {
        format!("{}/partitions/{topic}/{partition}", self.root)
    }

    /// A partition's owner record.
    pub fn owner(&self, topic: &str, partition: u32) -> String {
        format!("{}/owner", self.partition(topic, partition))
    }

    /// A partition's high watermark.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> String {
        format!("{}/hwm", self.partition(topic, partition))
    }

    /// A partition's last stable offset (absent: its high watermark).
    pub fn last_stable(&self, topic: &str, partition: u32) -> String {
        format!("{}/lso", self.partition(topic, partition))
    }

    /// A partition's log start offset.
    pub fn log_start(&self, topic: &str, partition: u32) -> String {
        format!("{}/start", self.partition(topic, partition))
    }

    /// Prefix of a partition's index entries.
    pub fn index_prefix(&self, topic: &str, partition: u32) -> String {
        format!("{}/index/", self.partition(topic, partition))
    }

    /// The index entry whose run starts at `base_offset`.
    pub fn index_entry(&self, topic: &str, partition: u32, base_offset: i64) -> String {
        format!("{}{base_offset:020}", self.index_prefix(topic, partition))
    }

    /// Prefix of a partition's producer states.
    pub fn producers_prefix(&self, topic: &str, partition: u32) -> String {
        format!("{}/producers/", self.partition(topic, partition))
    }

    /// An idempotent producer's state in a partition.
    pub fn producer_state(&self, topic: &str, partition: u32, producer_id: i64) -> String {
        format!(
            "{}{producer_id:020}",
            self.producers_prefix(topic, partition)
        )
    }

    /// Prefix of a partition's aborted transactions.
    pub fn aborted_prefix(&self, topic: &str, partition: u32) -> String {
        format!("{}/aborted/", self.partition(topic, partition))
    }

    /// An aborted transaction's range in a partition, by its first offset.
    pub fn aborted_range(&self, topic: &str, partition: u32, first_offset: i64) -> String {
        format!(
            "{}{first_offset:020}",
            self.aborted_prefix(topic, partition)
        )
    }

    /// Prefix of every transaction record.
    pub fn transactions_prefix(&self) -> String {
        format!("{}/transactions/", self.root)
    }

    /// A transactional id's record.
    pub fn transaction(&self, transactional_id: &str) -> String {
        format!("{}/transactions/{transactional_id}", self.root)
    }

    /// The producer id counter.
    pub fn producer_id_counter(&self) -> String {
        format!("{}/counters/producer-id", self.root)
    }

    /// How far log compaction has cleaned a partition.
    pub fn clean_state(&self, topic: &str, partition: u32) -> String {
        format!("{}/cleaned", self.partition(topic, partition))
    }

    /// How far a partition is archived as Parquet.
    pub fn archive_state(&self, topic: &str, partition: u32) -> String {
        format!("{}/archived", self.partition(topic, partition))
    }

    /// A running compactor's published totals ([`crate::CompactorRecord`]).
    pub fn compactor(&self, compactor_id: &str) -> String {
        format!("{}/compactors/{compactor_id}", self.root)
    }

    /// Prefix of every running compactor's record.
    pub fn compactors_prefix(&self) -> String {
        format!("{}/compactors/", self.root)
    }

    /// The claim of the compactor working on `job` (see [`crate::compaction_job`]).
    pub fn compaction_claim(&self, job: &str) -> String {
        format!("{}/compaction/{job}", self.root)
    }

    /// Prefix of every compaction claim.
    pub fn compaction_claims_prefix(&self) -> String {
        format!("{}/compaction/", self.root)
    }

    /// Prefix of agent registrations.
    pub fn agents_prefix(&self) -> String {
        format!("{}/agents/", self.root)
    }

    /// One agent's registration.
    pub fn agent(&self, agent_id: &str) -> String {
        format!("{}/agents/{agent_id}", self.root)
    }

    /// The object store this cluster's segments live in.
    pub fn cluster_object_store(&self) -> String {
        format!("{}/cluster/object-store", self.root)
    }

    /// The elected controller.
    pub fn controller(&self) -> String {
        format!("{}/cluster/controller", self.root)
    }

    /// The controller's partition assignment.
    pub fn assignment(&self) -> String {
        format!("{}/cluster/assignment", self.root)
    }

    /// The owner record of a group coordinator slot.
    pub fn coordinator(&self, slot: u32) -> String {
        format!("{}/coordinators/{slot}", self.root)
    }

    /// Prefix of every group record.
    pub fn groups_prefix(&self) -> String {
        format!("{}/groups/", self.root)
    }

    /// A group's record.
    pub fn group(&self, group: &str) -> String {
        format!("{}/groups/{group}", self.root)
    }

    /// Prefix of every group's committed offsets for `topic`.
    pub fn topic_offsets_prefix(&self, topic: &str) -> String {
        format!("{}/offsets/{topic}/", self.root)
    }

    /// Prefix of one group's committed offsets for `topic`.
    pub fn group_offsets_prefix(&self, topic: &str, group: &str) -> String {
        format!("{}/offsets/{topic}/{group}/", self.root)
    }

    /// A group's committed offset of one partition.
    pub fn committed_offset(&self, topic: &str, group: &str, partition: u32) -> String {
        format!("{}{partition}", self.group_offsets_prefix(topic, group))
    }

    /// Prefix of every ACL.
    pub fn acls_prefix(&self) -> String {
        format!("{}/acls/", self.root)
    }

    /// An ACL's key: its encoded binding (base64url of its JSON), so that one binding is
    /// stored once however often it is created.
    pub fn acl(&self, encoded_binding: &str) -> String {
        format!("{}{encoded_binding}", self.acls_prefix())
    }

    /// The agent incarnation counter.
    pub fn agent_epoch_counter(&self) -> String {
        format!("{}/counters/agent-epoch", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn index_keys_sort_by_offset() {
        let keys = Keys::new("/strata/c1/");
        let a = keys.index_entry("t", 3, 9);
        let b = keys.index_entry("t", 3, 10);
        let c = keys.index_entry("t", 3, 1_000_000);
        assert!(a < b && b < c);
        assert_eq!(a, "/strata/c1/partitions/t/3/index/00000000000000000009");
        assert!(a.starts_with(&keys.index_prefix("t", 3)));
        assert!(a.starts_with(&keys.topic_partitions_prefix("t")));
        assert!(!a.starts_with(&keys.topic_partitions_prefix("t.x")));
    }
}
