//! Strata's metastore: where segments live, who owns each partition, and how far each
//! partition's log is committed.
//!
//! The [`Metastore`] trait is what agents and the compactor use. It has one implementation,
//! [`KvMetastore`], written once over a minimal transactional key-value interface
//! ([`kv::KvBackend`]) with two backends: [`EtcdKv`] (production) and [`EmbeddedKv`] (one
//! process, persisted to a local file: `strata dev` and unit tests). Every key is defined
//! in [`keys`]; nothing else builds key strings.
//!
//! Invariants the metastore keeps:
//! - a partition's owner epoch only grows; [`Metastore::acquire_partition`] bumps it;
//! - a flush commit for a partition succeeds only if its epoch is the current owner epoch
//!   and its first offset is the current high watermark, so offsets stay dense and a
//!   fenced (zombie) owner can never commit;
//! - the high watermark and the index entry of a partition change in one transaction;
//! - at most one controller key exists, held under its holder's lease; only the holder
//!   can store an assignment;
//! - a coordinator slot's owner epoch only grows ([`Metastore::acquire_coordinator`]); a
//!   group's record and committed offsets are written only under the current owner of
//!   its slot, so a coordinator that lost its slot can never write them again;
//! - deleting a topic deletes every group's committed offsets for it;
//! - a partition's index entries always cover `[log start, high watermark)` contiguously,
//!   each entry starting where the previous one ends: a merge or a compaction replaces a
//!   run of entries by entries covering exactly the same offsets, and retention removes a
//!   prefix of them while advancing the log start to where the rest begins, each in one
//!   transaction that compares every entry it removes.

pub mod embedded;
mod error;
pub mod etcd;
pub mod keys;
pub mod kv;
mod metastore;
mod model;

pub use embedded::EmbeddedKv;
pub use error::{Error, Result};
pub use etcd::EtcdKv;
pub use kv::{ChangeWatch, Liveness};
pub use metastore::{KvMetastore, Metastore, open, open_with};

/// The compactor job of one partition, as [`Metastore::claim_compaction`] names it.
pub fn compaction_job(topic: &str, partition: u32) -> String {
    format!("{topic}/{partition}")
}

/// The compactor job that deletes orphaned objects.
pub const ORPHAN_GC_JOB: &str = "orphan-gc";
pub use model::{
    AbortedRange, AclBinding, AclOperation, AclPermission, AgentRecord, ArchiveRange, ArchiveState,
    Assignment, CLUSTER_RESOURCE_NAME, ClassicGroupRecord, ClassicMemberRecord, ClassicProtocol,
    CleanState, CommitReport, CommittedOffset, CompactorRecord, Coordinatorship, GroupRecord,
    IndexEntry, MemberRecord, PRODUCER_BATCHES_KEPT, PartitionAppend, PartitionOwner,
    PartitionState, PatternType, ProducerBatch, ProducerState, Rejection, ResourceType,
    StoredLimits, TakeOverReport, TopicMeta, TopicPartition, TransactionRecord, TransactionStatus,
    TransactionTopic,
};
