//! The segment object: what one flush writes.
//!
//! ```text
//! [block 0][block 1]...[block n-1][footer][footer_len: u32 LE][crc32c(footer): u32 LE]["STRSEG01"]
//! ```
//! Each block holds one partition's records of the flush as one Kafka RecordBatch v2. The
//! footer is JSON ([`Footer`]) naming, for each block, its topic, partition, offsets and
//! byte range — the same facts the metastore's index entries carry, so a segment can be
//! re-indexed or checked without the metastore. Readers of the hot path never read the
//! footer: an index entry's byte range is one ranged GET.
//!
//! Object names are `segments/{agent_epoch:020}/{sequence:020}.seg`: the agent incarnation
//! number (unique per agent start, from the metastore) and a per-incarnation sequence, so
//! no two writers ever pick the same name; PUTs are create-only all the same.

use bytes::{Bytes, BytesMut};
use object_store::PutPayload;
use serde::{Deserialize, Serialize};

use crate::record::{
    BatchKind, Compression, ProducerFields, Record, encode_producer_batch_into, encoded_batch_len,
};

/// One batch of a block: records to encode, or a batch a Kafka client sent, stored as is.
#[derive(Debug, Clone, Copy)]
pub enum BatchRun<'a> {
    /// Records that become one batch, with the producer fields of its header.
    Records {
        /// The producer that wrote them, if it is idempotent.
        producer: Option<ProducerFields>,
        /// Data, transactional data, or a transaction marker.
        kind: BatchKind,
        /// The records, in offset order.
        records: &'a [Record],
    },
    /// A whole RecordBatch v2 as its client sent it (checked by
    /// [`decode_client_batch`](crate::record::decode_client_batch)); only its base offset
    /// is written, which is outside its CRC.
    Encoded {
        /// The batch's bytes.
        bytes: &'a [u8],
        /// The offset the owner gave its first record.
        base_offset: i64,
        /// Its record count.
        count: i64,
        /// Its largest record timestamp.
        max_timestamp_ms: i64,
    },
}

impl BatchRun<'_> {
    /// First and last offset, and largest timestamp; `None` for an empty run.
    fn span(&self) -> Option<(i64, i64, i64)> {
        match self {
            Self::Records { records, .. } => {
                let (first, last) = (records.first()?, records.last()?);
                let max = records.iter().map(|r| r.timestamp_ms).max()?;
                Some((first.offset, last.offset, max))
            }
            Self::Encoded {
                base_offset,
                count,
                max_timestamp_ms,
                ..
            } => (*count > 0).then_some((*base_offset, base_offset + count - 1, *max_timestamp_ms)),
        }
    }

    /// Bytes it takes in a block (uncompressed, for records to encode).
    fn encoded_len(&self) -> usize {
        match self {
            Self::Records { records, .. } => encoded_batch_len(records),
            Self::Encoded { bytes, .. } => bytes.len(),
        }
    }
}
use crate::{Error, Result};

/// The trailer's magic bytes (format version 1).
pub const MAGIC: &[u8; 8] = b"STRSEG01";
const TRAILER_LEN: usize = 16;

/// The object name of an incarnation's `sequence`-th segment.
pub fn object_name(agent_epoch: u64, sequence: u64) -> String {
    format!("segments/{agent_epoch:020}/{sequence:020}.seg")
}

/// Where one partition's block sits in a segment, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockLocation {
    /// Topic name.
    pub topic: String,
    /// The incarnation of the topic the block was written for (its topic id); empty in
    /// segments written before topics had ids.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic_id: String,
    /// Partition number.
    pub partition: u32,
    /// First offset in the block.
    pub base_offset: i64,
    /// Last offset in the block (inclusive).
    pub last_offset: i64,
    /// Byte offset of the block in the object.
    pub byte_start: u64,
    /// Length of the block.
    pub byte_len: u64,
    /// Largest record timestamp in the block.
    pub max_timestamp_ms: i64,
}

/// The segment footer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    /// Format version, 1.
    pub version: u32,
    /// The blocks, in byte order.
    pub blocks: Vec<BlockLocation>,
}

/// Assembles one segment from per-partition record runs.
///
/// Each block is encoded once, straight into a buffer of its own sized for it; the
/// segment is the list of those buffers (and the footer), PUT as one object without
/// copying them together, and each block's buffer is what the write-through cache keeps.
#[derive(Debug, Default)]
pub struct SegmentBuilder {
    parts: Vec<Bytes>,
    len: u64,
    blocks: Vec<BlockLocation>,
}

impl SegmentBuilder {
    /// An empty segment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one partition's records (non-empty, consecutive offsets) as a block of one
    /// batch and returns the block's bytes (for the write-through cache) and location.
    pub fn add_block(
        &mut self,
        topic: &str,
        topic_id: &str,
        partition: u32,
        records: &[Record],
        compression: Compression,
    ) -> Result<(Bytes, BlockLocation)> {
        self.add_batches(
            topic,
            topic_id,
            partition,
            &[BatchRun::Records {
                producer: None,
                kind: BatchKind::Data,
                records,
            }],
            compression,
        )
    }

    /// Adds one partition's runs of records (together non-empty, consecutive offsets) as a
    /// block: each run is one batch, with its producer fields. Returns the block's bytes
    /// (for the write-through cache) and location.
    pub fn add_batches(
        &mut self,
        topic: &str,
        topic_id: &str,
        partition: u32,
        runs: &[BatchRun<'_>],
        compression: Compression,
    ) -> Result<(Bytes, BlockLocation)> {
        let spans: Vec<(i64, i64, i64)> = runs.iter().filter_map(BatchRun::span).collect();
        let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
            return Err(Error::Encode(
                "a block needs at least one record".to_string(),
            ));
        };
        let (base_offset, last_offset) = (first.0, last.1);
        let max_timestamp_ms = spans.iter().map(|s| s.2).max().unwrap_or(0);
        let runs: Vec<&BatchRun<'_>> = runs.iter().filter(|run| run.span().is_some()).collect();
        let mut block = BytesMut::with_capacity(runs.iter().map(|run| run.encoded_len()).sum());
        for run in runs {
            match run {
                BatchRun::Records {
                    producer,
                    kind,
                    records,
                } => {
                    encode_producer_batch_into(&mut block, records, compression, *producer, *kind)?
                }
                BatchRun::Encoded {
                    bytes, base_offset, ..
                } => {
                    let at = block.len();
                    block.extend_from_slice(bytes);
                    block[at..at + 8].copy_from_slice(&base_offset.to_be_bytes());
                }
            }
        }
        let block = block.freeze();
        let location = BlockLocation {
            topic: topic.to_string(),
            topic_id: topic_id.to_string(),
            partition,
            base_offset,
            last_offset,
            byte_start: self.len,
            byte_len: block.len() as u64,
            max_timestamp_ms,
        };
        self.push(block.clone());
        self.blocks.push(location.clone());
        Ok((block, location))
    }

    /// Adds a block of already encoded batches (one partition's, offsets within
    /// `base_offset..=last_offset` of `block`), as a merge copies them, and returns its
    /// location: `block` as given, placed at the end of the segment (`byte_start` and
    /// `byte_len` are set here).
    pub fn add_encoded_block(&mut self, bytes: &[u8], block: BlockLocation) -> BlockLocation {
        let location = BlockLocation {
            byte_start: self.len,
            byte_len: bytes.len() as u64,
            ..block
        };
        self.push(Bytes::copy_from_slice(bytes));
        self.blocks.push(location.clone());
        location
    }

    fn push(&mut self, part: Bytes) {
        self.len += part.len() as u64;
        self.parts.push(part);
    }

    /// Bytes of blocks added so far.
    pub fn body_len(&self) -> u64 {
        self.len
    }

    /// Whether no block was added.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The finished object as one buffer: blocks, footer, trailer (copied together; a
    /// PUT takes [`SegmentBuilder::finish_payload`]).
    pub fn finish(self) -> Bytes {
        let payload = self.finish_payload();
        let mut object = BytesMut::with_capacity(payload.content_length());
        for part in payload.iter() {
            object.extend_from_slice(part);
        }
        object.freeze()
    }

    /// The finished object as a PUT body: the blocks' buffers as they are, then the
    /// footer and trailer.
    pub fn finish_payload(mut self) -> PutPayload {
        let footer = serde_json::to_vec(&Footer {
            version: 1,
            blocks: std::mem::take(&mut self.blocks),
        })
        .expect("footer serializes");
        let mut tail = BytesMut::with_capacity(footer.len() + TRAILER_LEN);
        tail.extend_from_slice(&footer);
        tail.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        tail.extend_from_slice(&crc32c::crc32c(&footer).to_le_bytes());
        tail.extend_from_slice(MAGIC);
        self.push(tail.freeze());
        self.parts.into_iter().collect()
    }
}

/// Reads the footer of a whole segment object.
pub fn read_footer(object_name: &str, object: &[u8]) -> Result<Footer> {
    let corrupt = |reason: &str| {
        Error::Corrupt(crate::record::Corrupt {
            object: object_name.to_string(),
            start: 0,
            end: object.len() as u64,
            reason: reason.to_string(),
        })
    };
    if object.len() < TRAILER_LEN || &object[object.len() - 8..] != MAGIC {
        return Err(corrupt("no segment trailer"));
    }
    let trailer = &object[object.len() - TRAILER_LEN..];
    let footer_len = u32::from_le_bytes(trailer[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes"));
    let footer_end = object.len() - TRAILER_LEN;
    let footer = footer_end
        .checked_sub(footer_len)
        .map(|start| &object[start..footer_end])
        .ok_or_else(|| corrupt("footer length past the start"))?;
    if crc32c::crc32c(footer) != crc {
        return Err(corrupt("footer checksum mismatch"));
    }
    serde_json::from_slice(footer).map_err(|e| corrupt(&format!("footer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::decode_block;

    fn records(base: i64, n: i64) -> Vec<Record> {
        (base..base + n)
            .map(|offset| Record {
                offset,
                timestamp_ms: 1_000 + offset,
                key: Some(Bytes::from(format!("k{offset}"))),
                value: Some(Bytes::from(format!("v{offset}"))),
                headers: vec![],
            })
            .collect()
    }

    #[test]
    fn a_client_batch_is_stored_as_sent_with_its_base_offset() {
        // A client numbers from 0; the owner gives it offsets 10..=12, after a run of
        // records 7..=9 in the same block.
        let sent = crate::record::encode_batch(&records(0, 3), Compression::Gzip).unwrap();
        let mut builder = SegmentBuilder::new();
        let (block, location) = builder
            .add_batches(
                "t",
                "",
                0,
                &[
                    BatchRun::Records {
                        producer: None,
                        kind: BatchKind::Data,
                        records: &records(7, 3),
                    },
                    BatchRun::Encoded {
                        bytes: &sent,
                        base_offset: 10,
                        count: 3,
                        max_timestamp_ms: 1_002,
                    },
                ],
                Compression::None,
            )
            .unwrap();
        assert_eq!((location.base_offset, location.last_offset), (7, 12));
        assert_eq!(location.max_timestamp_ms, 1_009);
        // Everything after the base offset is the client's bytes.
        let stored = &block[block.len() - sent.len()..];
        assert_eq!(stored[8..], sent[8..]);
        assert_eq!(stored[..8], 10i64.to_be_bytes());
        let decoded = decode_block(block, "o", 0, 7..=12).unwrap();
        let offsets: Vec<i64> = decoded.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [7, 8, 9, 10, 11, 12]);
        assert_eq!(decoded[3].key.as_deref(), Some(&b"k0"[..]));
    }

    #[test]
    fn blocks_are_addressable_by_their_byte_ranges() {
        let mut builder = SegmentBuilder::new();
        let (_, a) = builder
            .add_block("t", "", 0, &records(0, 3), Compression::None)
            .unwrap();
        let (_, b) = builder
            .add_block("t", "", 5, &records(40, 2), Compression::Zstd)
            .unwrap();
        let object = builder.finish();
        let footer = read_footer("o", &object).unwrap();
        assert_eq!(footer.blocks, vec![a.clone(), b.clone()]);
        assert_eq!(
            (b.base_offset, b.last_offset, b.max_timestamp_ms),
            (40, 41, 1_041)
        );
        for (loc, expected) in [(a, records(0, 3)), (b, records(40, 2))] {
            let range = loc.byte_start as usize..(loc.byte_start + loc.byte_len) as usize;
            let block = object.slice(range);
            assert_eq!(
                decode_block(
                    block,
                    "o",
                    loc.byte_start,
                    loc.base_offset..=loc.last_offset
                )
                .unwrap(),
                expected
            );
        }
    }

    #[test]
    fn the_footer_names_each_blocks_topic_id() {
        let mut builder = SegmentBuilder::new();
        builder
            .add_block("t", "5f0c-id", 2, &records(0, 2), Compression::None)
            .unwrap();
        builder.add_encoded_block(
            b"raw",
            BlockLocation {
                topic: "u".into(),
                topic_id: String::new(),
                partition: 0,
                base_offset: 5,
                last_offset: 5,
                byte_start: 0,
                byte_len: 0,
                max_timestamp_ms: 0,
            },
        );
        let object = builder.finish();
        let footer = read_footer("s", &object).unwrap();
        assert_eq!(footer.blocks[0].topic_id, "5f0c-id");
        // No id (written before topics had ids): the footer has no field for it.
        assert_eq!(footer.blocks[1].topic_id, "");
        assert_eq!(
            String::from_utf8_lossy(&object).matches("topic_id").count(),
            1
        );
    }

    #[test]
    fn layout_snapshot() {
        // The bytes of a one-record segment: RecordBatch v2, footer JSON, trailer. A change
        // here is a format change and needs a new MAGIC.
        let mut builder = SegmentBuilder::new();
        builder
            .add_block("t", "", 1, &records(7, 1), Compression::None)
            .unwrap();
        let object = builder.finish();
        let footer = br#"{"version":1,"blocks":[{"topic":"t","partition":1,"base_offset":7,"last_offset":7,"byte_start":0,"byte_len":72,"max_timestamp_ms":1007}]}"#;
        assert_eq!(object.len(), 72 + footer.len() + 16);
        // RecordBatch header: base offset 7, batch length 60 (61-byte header + 11-byte record - 12), leader
        // epoch -1, magic 2.
        assert_eq!(
            &object[..17],
            &[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 60, 255, 255, 255, 255, 2]
        );
        assert_eq!(&object[72..72 + footer.len()], footer);
        assert_eq!(&object[object.len() - 8..], MAGIC);
    }

    #[test]
    fn a_damaged_footer_is_reported() {
        let mut builder = SegmentBuilder::new();
        builder
            .add_block("t", "", 0, &records(0, 1), Compression::None)
            .unwrap();
        let mut object = builder.finish().to_vec();
        let n = object.len();
        object[n - 20] ^= 1;
        assert!(matches!(read_footer("o", &object), Err(Error::Corrupt(_))));
    }
}
