//! Strata's Kafka listener: Kafka clients produce, consume and administer Strata unchanged.
//!
//! Every agent listens for Kafka's wire protocol beside gRPC. This crate is the protocol
//! only — framing, TLS, SASL, decoding and encoding with the `kafka-protocol` crate, API
//! dispatch, and Kafka's error codes — over the same agent operations the gRPC services
//! call ([`strata_agent::Agent`]): one data path; nothing about storage, ownership or
//! fencing is written here.
//!
//! - [`server`]: the listener, one task per connection, frames and their bounds;
//! - [`api`]: each API, mapped onto the agent's operations, and the versions advertised;
//! - [`error`]: the one place agent errors become Kafka error codes;
//! - [`sasl`]: SASL/PLAIN and SASL/OAUTHBEARER carrying the agent's bearer tokens;
//! - [`metrics`]: requests, errors and latency per API, and connections.
//!
//! Invariants:
//! - a frame is at most [`KafkaConfig::max_request_bytes`], and the frames being served
//!   at once hold at most [`KafkaConfig::max_inflight_bytes`]: nothing a client sends
//!   makes the agent allocate without a bound. A frame that cannot be read (a bad
//!   length, an unknown API or version, a body that does not decode) closes its
//!   connection with one log line and touches nothing else;
//! - a connection answers its requests in the order it sent them; a produce request's
//!   batches are appended in that order too, and only their commits are awaited
//!   concurrently (as a Kafka producer with several requests in flight expects);
//! - with tokens configured, a connection that has not authenticated may only call
//!   ApiVersions and the SASL APIs: anything else closes it, having changed nothing;
//! - batches are stored as the client sent them and served as stored.

pub mod api;
pub mod error;
pub mod metrics;
pub mod sasl;
pub mod server;

pub use server::{KafkaConfig, serve};
