//! Limits on every size a client controls, checked before anything is stored or
//! allocated. Each is an agent setting (flag, `STRATA_…` variable, TOML key: the names in
//! [`Limits::SETTINGS`]) with a documented default; a request over one is refused with
//! INVALID_ARGUMENT (RESOURCE_EXHAUSTED for the cluster's capacity: topics, partitions,
//! group members) and a message naming the limit and its setting.
//!
//! Fixed by Kafka's rules rather than settings: topic names, group ids and
//! `group.instance.id`s are 1 to 249 characters of `[a-zA-Z0-9._-]`
//! ([`crate::topic::validate_key_part`]); member ids are at most [`MAX_MEMBER_ID_BYTES`].

use strata_metastore::StoredLimits;

use crate::{Error, Result};

/// Largest partition assignment the controller may store: it is one etcd value, and etcd
/// refuses requests over `--max-request-bytes` (1.5 MiB by default); the rest is room for
/// the transaction around it. A topic creation or growth that would pass it is refused.
pub const MAX_ASSIGNMENT_BYTES: usize = 1 << 20;

/// Longest member id accepted (the coordinator hands out 32 hex characters).
pub const MAX_MEMBER_ID_BYTES: usize = 249;

/// The agent's limits. See the README's configuration table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Partitions of one topic.
    pub max_partitions_per_topic: u32,
    /// Partitions of all topics together.
    pub max_partitions: u64,
    /// Topics in the cluster.
    pub max_topics: u32,
    /// Bytes of keys, values and headers in one produce request.
    pub max_request_bytes: usize,
    /// Records in one produce request.
    pub max_request_records: usize,
    /// Most bytes one fetch (or one Subscribe message) returns: a larger `max_bytes` is
    /// capped to it, as Kafka's broker caps `fetch.max.bytes`.
    pub max_fetch_bytes: usize,
    /// Headers of one record.
    pub max_headers_per_record: usize,
    /// Bytes of one header key.
    pub max_header_key_bytes: usize,
    /// Bytes of a group member's subscription: its topic names and regex together.
    pub max_subscription_bytes: usize,
    /// Members of one group (Kafka's `group.max.size`).
    pub group_max_size: usize,
    /// Bytes of a committed offset's metadata (Kafka's `offset.metadata.max.bytes`).
    pub offset_metadata_max_bytes: usize,
    /// Bytes of one group's stored state: it must fit one etcd value (1.5 MiB by
    /// default) with room to spare.
    pub max_group_state_bytes: usize,
    /// Requests of one ProduceSession stream being appended or awaiting their commit;
    /// the stream is not read further until one completes (back-pressure).
    pub max_session_inflight: usize,
    /// Concurrent streams (calls) on one client connection, Subscribe streams included;
    /// more wait for one to end (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_connection: u32,
    /// Idempotent producers one partition remembers (each is a metastore key); a new one
    /// past it is refused (RESOURCE_EXHAUSTED) until one expires.
    pub max_producers_per_partition: usize,
    /// How long a partition remembers an idempotent producer that stopped writing to it
    /// (Kafka's `producer.id.expiration.ms`); a retry after that may be written twice.
    pub producer_id_expiration_ms: u64,
    /// Transactional ids in the cluster (each is a metastore record); a new one past it is
    /// refused (RESOURCE_EXHAUSTED).
    pub max_transactional_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let stored = StoredLimits::default();
        Self {
            max_partitions_per_topic: stored.max_partitions_per_topic,
            max_partitions: stored.max_partitions,
            max_topics: stored.max_topics,
            max_request_bytes: 32 << 20,
            max_request_records: 100_000,
            max_fetch_bytes: 50 << 20,
            max_headers_per_record: 1_000,
            max_header_key_bytes: 1_024,
            max_subscription_bytes: 64 << 10,
            group_max_size: 1_000,
            offset_metadata_max_bytes: 4_096,
            max_group_state_bytes: 1 << 20,
            max_session_inflight: 1_024,
            max_streams_per_connection: 1_024,
            max_producers_per_partition: 1_000,
            producer_id_expiration_ms: 86_400_000,
            max_transactional_ids: 10_000,
        }
    }
}

impl Limits {
    /// Each limit's setting: the TOML key (the flag is `--` and the key with dashes, the
    /// environment variable `STRATA_` and the key in capitals).
    pub const SETTINGS: &[&str] = &[
        "max_partitions_per_topic",
        "max_partitions",
        "max_topics",
        "max_request_bytes",
        "max_request_records",
        "max_fetch_bytes",
        "max_headers_per_record",
        "max_header_key_bytes",
        "max_subscription_bytes",
        "group_max_size",
        "offset_metadata_max_bytes",
        "max_group_state_bytes",
        "max_session_inflight",
        "max_streams_per_connection",
        "max_producers_per_partition",
        "producer_id_expiration_ms",
        "max_transactional_ids",
    ];

    /// The part of the limits every stored value is checked against (agents and
    /// compactors must agree on it).
    pub fn stored(&self) -> StoredLimits {
        StoredLimits {
            max_partitions_per_topic: self.max_partitions_per_topic,
            max_partitions: self.max_partitions,
            max_topics: self.max_topics,
            ..StoredLimits::default()
        }
    }

    /// Checks the limits themselves: each positive, and what the agent's gRPC messages
    /// can carry.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            (
                "max_partitions_per_topic",
                self.max_partitions_per_topic as u64,
            ),
            ("max_partitions", self.max_partitions),
            ("max_topics", self.max_topics as u64),
            ("max_request_bytes", self.max_request_bytes as u64),
            ("max_request_records", self.max_request_records as u64),
            ("max_fetch_bytes", self.max_fetch_bytes as u64),
            ("max_header_key_bytes", self.max_header_key_bytes as u64),
            ("max_subscription_bytes", self.max_subscription_bytes as u64),
            ("group_max_size", self.group_max_size as u64),
            ("max_group_state_bytes", self.max_group_state_bytes as u64),
            ("max_session_inflight", self.max_session_inflight as u64),
            (
                "max_streams_per_connection",
                self.max_streams_per_connection as u64,
            ),
            (
                "max_producers_per_partition",
                self.max_producers_per_partition as u64,
            ),
            ("producer_id_expiration_ms", self.producer_id_expiration_ms),
            ("max_transactional_ids", self.max_transactional_ids as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        // Room in the largest gRPC message for the response's own framing.
        let most = crate::service::MAX_MESSAGE_BYTES - (8 << 20);
        for (name, value) in [
            ("max_request_bytes", self.max_request_bytes),
            ("max_fetch_bytes", self.max_fetch_bytes),
        ] {
            if value > most {
                return Err(format!(
                    "{name} ({value}) must be at most {most} (the largest gRPC message less \
                     8 MiB)"
                ));
            }
        }
        Ok(())
    }
}

/// The refusal of a request over `limit` (a setting name), saying how to raise it.
pub(crate) fn over(what: String, limit: &str) -> Error {
    Error::InvalidArgument(format!("{what} ({}{})", limit, how_to_set(limit)))
}

/// The refusal of a request the cluster has no room for, as [`over`].
pub(crate) fn full(what: String, limit: &str) -> Error {
    Error::Overloaded(format!("{what} ({}{})", limit, how_to_set(limit)))
}

fn how_to_set(limit: &str) -> String {
    format!(
        "; the agents' --{} / STRATA_{}",
        limit.replace('_', "-"),
        limit.to_uppercase()
    )
}

/// `value` for an error message: at most 64 characters, with its length when cut, so a
/// multi-megabyte argument never becomes a multi-megabyte error.
pub(crate) fn shown(value: &str) -> String {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return value.to_string();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &value[..end], value.len())
}

/// Checks a member id's length.
pub(crate) fn check_member_id(member_id: &str) -> Result<()> {
    if member_id.len() > MAX_MEMBER_ID_BYTES {
        return Err(Error::InvalidArgument(format!(
            "member id '{}' is longer than {MAX_MEMBER_ID_BYTES} bytes: use the id the \
             coordinator handed out",
            shown(member_id)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_messages_name_the_setting() {
        Limits::default().validate().unwrap();
        let e = over("x is too big".into(), "max_request_bytes").to_string();
        assert!(e.contains("--max-request-bytes"), "{e}");
        assert!(e.contains("STRATA_MAX_REQUEST_BYTES"), "{e}");
        let long = "é".repeat(100);
        assert!(shown(&long).ends_with("(200 bytes)"));
        let bad = Limits {
            max_fetch_bytes: 1 << 30,
            ..Limits::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_fetch_bytes"));
    }
}
