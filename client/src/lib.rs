//! The Strata Rust SDK.
//!
//! - [`Producer`]: batches records per partition, partitions keyed records with Kafka's
//!   murmur2 partitioner and keyless ones stickily, and resolves each send with the
//!   record's partition and offset;
//! - [`Consumer`]: assign partitions, seek, poll; or subscribe as a member of a consumer
//!   group ([`GroupConfig`]) with auto or manual commits;
//! - [`Admin`]: topics, metadata and agent counters.
//!
//! It speaks only the public gRPC API (`strata-proto`).

mod admin;
mod connect;
mod consumer;
mod error;
mod group;
mod producer;
mod router;
mod session;
mod transaction;

pub use admin::{Admin, ResetTo};
pub use connect::{Connection, Connector, Credentials, Transport};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, Isolation, StartOffset};
pub use error::{Error, Result};
pub use group::{GroupConfig, OffsetReset, RebalanceEvent, RebalanceKind, TopicPartition};
pub use producer::{Acks, Delivery, Producer, ProducerConfig, ProducerRecord, RecordPosition};
pub use strata_proto::v1 as proto;
pub use tonic::Code;

/// The address clients use when none is given: the local `strata dev` agent.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// Connects to an agent (`host:port`, `http://host:port`, or `https://host:port` for TLS
/// with the system's roots) without a token. [`Connector`] sets a CA, a client
/// certificate and a bearer token.
pub async fn connect(server: &str) -> Result<Connection> {
    Connector::new().connect(server).await
}

/// The largest gRPC message the SDK sends or accepts.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;
