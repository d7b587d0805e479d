//! Records and their stored encoding: one Kafka RecordBatch v2 per partition block.
//!
//! Encoding and decoding are `kafka-protocol`'s, so stored bytes are exactly what a Kafka
//! broker would store and serve. The decoder checks the batch CRC32C; a mismatch is
//! [`Error::Corrupt`](crate::Error::Corrupt), never records.
//!
//! Headers are kept in order; Kafka allows a header key to repeat, but the encoder's header
//! map keeps one value per key (the last).

use std::ops::RangeInclusive;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
    Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};

use crate::{Error, Result};

/// One record, with its offset once it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset in its partition.
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// `None` = no key.
    pub key: Option<Bytes>,
    /// `None` = tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
}

impl Record {
    /// Bytes of key, value and headers: what `max.message.bytes` and fetch `max_bytes` count.
    pub fn payload_size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// Batch compression, per topic (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// LZ4 frames.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Parses Kafka's `compression.type` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" | "uncompressed" => Some(Self::None),
            "lz4" => Some(Self::Lz4),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    fn kafka(self) -> kafka_protocol::records::Compression {
        match self {
            Self::None => kafka_protocol::records::Compression::None,
            Self::Lz4 => kafka_protocol::records::Compression::Lz4,
            Self::Zstd => kafka_protocol::records::Compression::Zstd,
        }
    }
}

/// Encodes `records` (with consecutive offsets) as one RecordBatch v2.
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes> {
    let first_offset = records.first().map_or(0, |r| r.offset);
    let kafka: Vec<KafkaRecord> = records
        .iter()
        .map(|r| KafkaRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: r.offset,
            // The encoder starts a new batch wherever `offset - sequence` changes; keeping it
            // constant (base sequence -1, as for a non-idempotent producer) makes one batch.
            sequence: NO_SEQUENCE.wrapping_add((r.offset - first_offset) as i32),
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), Some(v.clone())))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &kafka,
        &RecordEncodeOptions {
            version: 2,
            compression: compression.kafka(),
        },
    )
    .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes every batch in `block`, checking each CRC, and that the offsets are increasing
/// and within `expected` (the batch header's base offset is outside Kafka's CRC, so this
/// catches its corruption). `object` and `start` only name the bytes in errors.
pub fn decode_block(
    block: Bytes,
    object: &str,
    start: u64,
    expected: RangeInclusive<i64>,
) -> Result<Vec<Record>> {
    let end = start + block.len() as u64;
    let corrupt = |reason: String| Error::Corrupt {
        object: object.to_string(),
        start,
        end,
        reason,
    };
    let mut buf = block;
    // The decoder panics on some malformed input instead of failing; treat that as corrupt.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        RecordBatchDecoder::decode_all(&mut buf)
    }))
    .map_err(|_| corrupt("malformed record batch".to_string()))?
    .map_err(|e| corrupt(e.to_string()))?;
    let mut records: Vec<Record> = Vec::new();
    for set in decoded {
        for r in set.records {
            let in_order = records.last().is_none_or(|prev| prev.offset < r.offset);
            if !in_order || !expected.contains(&r.offset) {
                return Err(corrupt(format!(
                    "offset {} outside the expected {}..={} or out of order",
                    r.offset,
                    expected.start(),
                    expected.end()
                )));
            }
            records.push(Record {
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.unwrap_or_default()))
                    .collect(),
            });
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample(n: i64) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                offset: 100 + i,
                timestamp_ms: 1_700_000_000_000 + i,
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 5 != 4).then(|| Bytes::from(format!("value-{i}").repeat(10))),
                headers: vec![("h".to_string(), Bytes::from_static(b"v"))],
            })
            .collect()
    }

    #[test]
    fn round_trips_with_every_compression() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let records = sample(50);
            let block = encode_batch(&records, compression).unwrap();
            let header_base = i64::from_be_bytes(block[..8].try_into().unwrap());
            let batch_len = i32::from_be_bytes(block[8..12].try_into().unwrap()) as usize;
            assert_eq!(
                (header_base, batch_len + 12),
                (100, block.len()),
                "one batch"
            );
            assert_eq!(
                decode_block(block, "o", 0, 100..=149).unwrap(),
                records,
                "{compression:?}"
            );
        }
    }

    #[test]
    fn offsets_with_gaps_round_trip_in_one_batch() {
        // What log compaction writes: the records it keeps, at their original offsets.
        let records: Vec<Record> = sample(50)
            .into_iter()
            .filter(|r| r.offset % 7 == 0 || r.offset == 149)
            .collect();
        let block = encode_batch(&records, Compression::Zstd).unwrap();
        let batch_len = i32::from_be_bytes(block[8..12].try_into().unwrap()) as usize;
        assert_eq!(batch_len + 12, block.len(), "one batch");
        assert_eq!(decode_block(block, "o", 0, 100..=149).unwrap(), records);
    }

    #[test]
    fn a_flipped_byte_is_corrupt_not_records() {
        let block = encode_batch(&sample(10), Compression::None).unwrap();
        // Base offset (outside Kafka's CRC), CRC, record bytes, last byte.
        for at in [7, 20, block.len() / 2, block.len() - 1] {
            let mut bad = block.to_vec();
            bad[at] ^= 0x55;
            let err = decode_block(Bytes::from(bad), "seg", 7, 100..=109).unwrap_err();
            assert!(
                matches!(err, Error::Corrupt { ref object, start: 7, .. } if object == "seg"),
                "{err}"
            );
        }
    }
}
