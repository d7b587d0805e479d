//! The Strata agent: a stateless broker.
//!
//! It accepts records over gRPC, assigns their offsets (it is the only writer of the
//! partitions it owns), batches records of many partitions into one segment per flush,
//! PUTs the segment create-only, commits every partition's new high watermark and index
//! entry in one metastore transaction fenced by the partition epochs, and only then acks.
//! It serves reads of any partition from the index, through the block cache.
//!
//! - [`topic`]: topic names and configuration, validated once;
//! - [`limits`]: the bound on every size a client controls;
//! - [`writer`]: the write path (ownership, offsets, the open segment, the flusher);
//! - [`reader`]: the read path (committed offsets, index cache, block reads, long-poll);
//! - [`service`]: the gRPC services and the one place errors become status codes;
//! - [`auth`]: TLS, bearer tokens and principals, ACLs, the access table and the
//!   authorizer every API checks before it acts;
//! - `follow`: the loop that keeps a cache in step with a metastore watch;
//! - [`health`]: the standard gRPC health service, following the agent's failure state;
//! - `cluster`: membership (the registration lease), the controller role, following the
//!   controller's assignment; `controller`: the assignment it computes (partitions and
//!   group coordinator slots);
//! - `coordinator`: the group coordinator slots this agent holds and the `Groups`
//!   operations; `group`: one group's membership state machine (the consumer protocol:
//!   KIP-848 and the SDK); `classic`: the same for Kafka's classic protocol (JoinGroup,
//!   SyncGroup); `assignor`: the uniform and range assignors.
//!
//! Invariant: a record is acknowledged (acks=ALL) only after its segment is in the object
//! store and its partition's commit succeeded under the epoch it was written with.

mod agent;
mod assignor;
pub mod auth;
mod classic;
pub use strata_storage::clock;
mod cluster;
mod controller;
mod coordinator;
mod error;
mod failpoint;
mod follow;
mod group;
pub mod health;
pub mod limits;
pub mod metrics;
mod producer;
mod reader;
pub mod service;
pub mod topic;
pub mod transaction;
#[cfg(test)]
mod write_path_tests;
mod writer;

pub use agent::{
    Agent, AgentConfig, Appended, ArchiveDescription, ClusterMetadata, FetchSpec, NewRecord,
    PartitionDescription, ProducerBatch,
};
pub use classic::{ClassicJoin, ClassicJoined, ClassicSync, ClassicSynced, JoinedGeneration};
pub use coordinator::Unchanged;
pub use error::{Error, Result};
pub use limits::Limits;
pub use metrics::Metrics;
pub use reader::{BatchFetch, FetchedBatch};
pub use reader::{Isolation, OffsetSpec};
pub use strata_metastore::{ClassicGroupRecord, ClassicMemberRecord, ClassicProtocol, GroupRecord};
pub use writer::EncodedBatch;
