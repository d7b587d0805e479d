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
//! - deleting a topic deletes every group's committed offsets for it.

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
pub use kv::Liveness;
pub use metastore::{KvMetastore, Metastore, open};
pub use model::{
    AgentRecord, Assignment, CommitReport, CommittedOffset, Coordinatorship, GroupRecord,
    IndexEntry, MemberRecord, PartitionAppend, PartitionOwner, PartitionState, Rejection,
    TopicMeta, TopicPartition,
};
