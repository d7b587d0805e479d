//! Strata's public gRPC API, `strata.v1`, generated from `proto/strata/v1/strata.proto`.
//!
//! Besides the generated code this crate holds the pieces of the wire contract clients and
//! agents must agree on: which partition a key belongs to ([`partition_for_key`], as Kafka
//! clients put it), and how partition sets are written in the groups API
//! ([`topic_partition_lists`], [`topic_partition_pairs`]).

pub mod codec;

/// Generated messages and services of `strata.v1`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("strata.v1");

    /// The encoded file descriptor set of `strata.v1` and `grpc.health.v1`, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));
}

impl v1::PartitionArchive {
    /// Offsets of the log not archived yet: from where the archive (or, if retention
    /// moved past it, the log) starts to the high watermark. `strata archive status` and
    /// the console both show this figure.
    pub fn behind(&self) -> i64 {
        (self.high_watermark - self.archived_to.max(self.log_start_offset)).max(0)
    }
}

/// Partition lists as `strata group describe` prints them: `topic:p,topic:p`, or `-` for
/// none.
pub fn topic_partitions_text(lists: &[v1::TopicPartitions]) -> String {
    let parts: Vec<String> = lists
        .iter()
        .flat_map(|l| l.partitions.iter().map(move |p| format!("{}:{p}", l.topic)))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

impl v1::MetadataResponse {
    /// Partitions each agent serves (by agent id), and how many no agent serves: what
    /// `strata cluster status` and the console's Overview show.
    pub fn partitions_per_agent(&self) -> (std::collections::BTreeMap<&str, usize>, usize) {
        let mut served: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut unassigned = 0;
        for p in self.topics.iter().flat_map(|t| &t.partitions) {
            if p.owner_agent_id.is_empty() {
                unassigned += 1;
            } else {
                *served.entry(p.owner_agent_id.as_str()).or_default() += 1;
            }
        }
        (served, unassigned)
    }
}

impl v1::TopicInfo {
    /// Where a config value comes from: `topic` (set on the topic) or `default`.
    pub fn config_source(&self, key: &str) -> &'static str {
        if self.overridden.iter().any(|k| k == key) {
            "topic"
        } else {
            "default"
        }
    }
}

impl v1::DescribeTopicResponse {
    /// Records in the log now: each partition's high watermark minus its log start,
    /// summed (a compacted topic holds fewer).
    pub fn records(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| (p.high_watermark - p.log_start_offset).max(0))
            .sum()
    }

    /// Bytes the topic holds in the object store (its partitions' `stored_bytes`
    /// summed), when they were asked for.
    pub fn stored_bytes(&self) -> Option<u64> {
        self.partitions.iter().map(|p| p.stored_bytes).sum()
    }
}

/// The standard gRPC health protocol, `grpc.health.v1`, generated with Strata's codec.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// `(topic, partition)` pairs, in order, as the `TopicPartitions` lists of the groups
/// API: consecutive pairs of one topic share a list.
pub fn topic_partition_lists<'a>(
    pairs: impl IntoIterator<Item = &'a (String, u32)>,
) -> Vec<v1::TopicPartitions> {
    let mut lists: Vec<v1::TopicPartitions> = Vec::new();
    for (topic, partition) in pairs {
        match lists.last_mut() {
            Some(last) if &last.topic == topic => last.partitions.push(*partition as i32),
            _ => lists.push(v1::TopicPartitions {
                topic: topic.clone(),
                partitions: vec![*partition as i32],
            }),
        }
    }
    lists
}

/// The `(topic, partition)` pairs of `TopicPartitions` lists (negative partitions
/// skipped).
pub fn topic_partition_pairs(
    lists: &[v1::TopicPartitions],
) -> impl Iterator<Item = (String, u32)> + '_ {
    lists.iter().flat_map(|l| {
        l.partitions
            .iter()
            .filter(|p| **p >= 0)
            .map(|p| (l.topic.clone(), *p as u32))
    })
}

/// Trailer of an ABORTED status refusing a request that named an incarnation of a topic
/// that is no longer current (or resolved a partition it no longer has); its value is the
/// topic's name.
pub const TOPIC_CHANGED: &str = "strata-topic-changed";

/// Trailer of a FAILED_PRECONDITION status refusing an idempotent producer's batch:
/// `out-of-order-sequence` or `producer-fenced`. Nothing of the batch was written.
pub const PRODUCER_ERROR: &str = "strata-producer-error";

/// Trailer of a FAILED_PRECONDITION (or, for `concurrent-transactions`, UNAVAILABLE)
/// status refusing a transactional request: `not-in-transaction` or
/// `concurrent-transactions`.
pub const TRANSACTION_ERROR: &str = "strata-transaction-error";

/// The sequence number `records` after `sequence`, wrapping after `i32::MAX` to 0, as
/// Kafka numbers an idempotent producer's records (producer and partition owner agree on
/// it).
pub fn sequence_after(sequence: i32, records: i32) -> i32 {
    if sequence > i32::MAX - records {
        records - (i32::MAX - sequence) - 1
    } else {
        sequence + records
    }
}

/// The partition Kafka's default partitioner gives `key` among `partitions`:
/// `(murmur2(key) & 0x7fffffff) % partitions`, with Kafka's seed.
///
/// # Panics
/// If `partitions` is zero.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED);
    (hash & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::partition_for_key;

    #[test]
    fn murmur2_matches_kafka_test_vectors() {
        // The cases of Kafka's own UtilsTest.testMurmur2 (Java ints).
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32, expected);
        }
    }

    #[test]
    fn topic_partition_lists_round_trip() {
        use super::{topic_partition_lists, topic_partition_pairs};
        let pairs = vec![
            ("a".to_string(), 0),
            ("a".to_string(), 3),
            ("b".to_string(), 1),
        ];
        let lists = topic_partition_lists(&pairs);
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[0].partitions, vec![0, 3]);
        assert_eq!(topic_partition_pairs(&lists).collect::<Vec<_>>(), pairs);
    }

    #[test]
    fn partition_is_positive_hash_modulo_count() {
        // toPositive(-973932308) = 1173551340; 1173551340 % 8 = 4.
        assert_eq!(partition_for_key(b"21", 8), 1_173_551_340 % 8);
        assert_eq!(partition_for_key(b"abc", 3), 479_470_107 % 3);
        for partitions in 1..50 {
            assert!(partition_for_key(b"any key", partitions) < partitions);
        }
    }
}
