//! Strata's storage layer: how records become bytes in an object store and back.
//!
//! - [`record`]: records and their encoding as Kafka RecordBatch v2 (the `strata-record`
//!   crate, re-exported: CRC32C checked on every decode, every Kafka compression codec);
//! - [`segment`]: the segment object — blocks of many partitions plus a footer;
//! - [`store`]: object stores by URL (`s3://`, `file://`, `memory://`) with create-only
//!   PUTs and ranged GETs, and the S3 start-up checks made with `aws-sdk-s3`;
//! - [`cache`]: the foyer hybrid (memory + disk) cache of partition blocks;
//! - [`archive`]: where the compactor's Parquet archive files live.
//!
//! Invariant: a segment object is written once, create-only, under a name no other writer
//! uses, and never changes afterwards; so a cached block never goes stale.

pub mod archive;
pub mod cache;
pub mod clock;
mod error;
pub mod segment;
pub mod store;

/// The record codec (`strata-record`).
pub use strata_record as record;

pub use cache::BlockCache;
pub use error::{Error, Result};
/// A PUT body of one or more buffers ([`SegmentBuilder::finish_payload`]).
pub use object_store::PutPayload;
pub use record::{
    BatchError, BatchKind, BatchLimits, ClientBatch, Compression, DecodedBatch, ProducerFields,
    Record,
};
pub use segment::{BatchRun, BlockLocation, SegmentBuilder};
pub use store::{ObjectStoreConfig, SegmentStore};
