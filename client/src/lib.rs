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

/// Why [`parse_time_ms`] refused a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is neither RFC 3339 from 1970 on (2026-12-03T10:00:00Z) nor ms")]
pub struct TimeError;

/// A time as users write it — RFC 3339 or milliseconds since the Unix epoch — in ms, for
/// [`ResetTo::Timestamp`] and [`StartOffset::Timestamp`].
pub fn parse_time_ms(text: &str) -> std::result::Result<i64, TimeError> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    // humantime parses no time before 1970.
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| TimeError)?;
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| TimeError)
}

/// The largest gRPC message the SDK sends or accepts.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_ms() {
        assert_eq!(parse_time_ms("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time_ms(" 1970-01-01T00:00:01Z "), Ok(1000));
        assert_eq!(parse_time_ms("yesterday"), Err(TimeError));
        assert_eq!(parse_time_ms("1969-12-31T23:59:59Z"), Err(TimeError));
    }
}
