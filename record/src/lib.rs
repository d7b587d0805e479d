//! Records and their encoding: Kafka's RecordBatch v2, one batch per partition block (a
//! merged block is several batches back to back), and what the SDK and Kafka clients send.
//! A crate of its own so that the SDK encodes batches with the very codec the agent
//! checks and stores them with (`strata_storage::record` re-exports it).
//!
//! The bytes are exactly what a Kafka broker stores and serves (the interoperability
//! tests decode ours with `kafka-protocol` and theirs with ours). The codec is our own
//! because `kafka-protocol`'s record type keeps headers in a map, so a record with two
//! headers of one key would lose one; Kafka keeps every header, in order, and so do we.
//! It is also where every size read from stored bytes is bounded before it is used:
//!
//! - every batch's CRC32C (attributes to the end) is checked; a mismatch, a length past
//!   the block, a varint that does not end, or any other malformed field is
//!   [`Error::Corrupt`], never records and never a panic;
//! - decompression stops at [`MAX_BATCH_BYTES`]: a small compressed batch cannot make a
//!   reader allocate gigabytes;
//! - a record count is trusted only as far as the bytes that hold the records: nothing is
//!   allocated in proportion to a count that the data cannot back.
//!
//! Compression: every codec Kafka's clients write — none, gzip (`flate2`), snappy (`snap`;
//! Kafka's Java client frames it the xerial way, librdkafka and others do not: both are
//! read), lz4 (LZ4 frames, `lz4`) and zstd (`zstd`).
//!
//! A batch a Kafka client sends is checked by [`decode_client_batch`] and then stored as
//! sent: only its base offset (outside the CRC) is set, when its segment is built.

use std::io::Read;
use std::ops::RangeInclusive;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Stored bytes that failed their checksum or do not parse: never returned as records.
/// (The storage layer's segment footers use it too.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt data in '{object}' bytes {start}..{end}: {reason}")]
pub struct Corrupt {
    /// The object holding the bad bytes.
    pub object: String,
    /// First byte of the bad range.
    pub start: u64,
    /// One past the last byte of the bad range.
    pub end: u64,
    /// What is wrong.
    pub reason: String,
}

/// What the codec refuses to encode, or finds wrong in bytes it decodes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Stored bytes failed their checks.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// Records could not be encoded.
    #[error("cannot encode records: {0}")]
    Encode(String),
}

/// The codec's result.
pub type Result<T> = std::result::Result<T, Error>;

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
    /// Headers, in order; a key may repeat.
    pub headers: Vec<(String, Bytes)>,
}

impl Record {
    /// Bytes of key, value and headers: what `max.message.bytes` and fetch `max_bytes` count.
    pub fn payload_size(&self) -> usize {
        payload_size(self.key.as_ref(), self.value.as_ref(), &self.headers)
    }
}

/// Bytes of a record's key, value and headers (a record of the SDK's counts the same).
pub fn payload_size(
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: &[(String, Bytes)],
) -> usize {
    key.map_or(0, Bytes::len)
        + value.map_or(0, Bytes::len)
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Batch compression, per topic (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing, as Kafka's Java client writes it).
    Snappy,
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
            "gzip" => Some(Self::Gzip),
            "snappy" => Some(Self::Snappy),
            "lz4" => Some(Self::Lz4),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The codec of a batch's attributes (bits 0-2); an id Kafka does not define reads as
    /// none (decoding such a batch fails).
    fn from_attributes(attributes: i16) -> Self {
        match attributes & 0x07 {
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => Self::None,
        }
    }

    /// The codec id in a batch's attributes (bits 0-2).
    fn id(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

/// Most bytes one batch's records may take once decompressed. Larger than anything an
/// agent or compactor writes (a flush's block of one partition is bounded by the agent's
/// pending bytes); a batch claiming more is corrupt.
pub const MAX_BATCH_BYTES: usize = 256 << 20;

/// Bytes of a batch header: base offset to record count.
const BATCH_HEADER_LEN: usize = 61;
/// Where the CRC'd part starts (the attributes), from the batch start.
const CRC_START: usize = 21;
/// `producerId`, `producerEpoch`, `baseSequence` of a batch from a producer that is not
/// idempotent.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;
/// Smallest encoded record: length, attributes, timestamp delta, offset delta, key
/// length, value length, header count (one byte each).
const MIN_RECORD_LEN: usize = 7;
/// zstd level: Kafka's default (3).
const ZSTD_LEVEL: i32 = 3;

/// The producer fields of a RecordBatch header: who wrote the batch, under which epoch,
/// and the sequence number of its first record (Kafka's idempotent producer, KIP-98).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    /// The producer id.
    pub producer_id: i64,
    /// The producer's epoch.
    pub producer_epoch: i16,
    /// The sequence number of the batch's first record.
    pub base_sequence: i32,
}

/// What a batch holds: records of a plain or idempotent producer, records of a
/// transaction (attributes bit 4), or a transaction marker (bit 5: a control batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BatchKind {
    /// Data records, outside any transaction.
    #[default]
    Data,
    /// Data records of a transaction: readers with `read_committed` see them once the
    /// transaction committed.
    Transactional,
    /// One control record: a transaction's COMMIT or ABORT marker. Never returned as data.
    Control,
}

impl BatchKind {
    /// Its bits in a batch's attributes.
    fn attributes(self) -> i16 {
        match self {
            Self::Data => 0,
            Self::Transactional => 0x10,
            Self::Control => 0x30,
        }
    }

    fn from_attributes(attributes: i16) -> Self {
        if attributes & 0x20 != 0 {
            Self::Control
        } else if attributes & 0x10 != 0 {
            Self::Transactional
        } else {
            Self::Data
        }
    }
}

/// What a batch header says besides its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// The producer fields; `None` for a batch of a producer that is not idempotent.
    pub producer: Option<ProducerFields>,
    /// Data, transactional data, or a transaction marker.
    pub kind: BatchKind,
}

/// One batch of a block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    /// Its header.
    pub header: BatchHeader,
    /// Its records (one control record for a marker).
    pub records: Vec<Record>,
}

/// A transaction marker's control record (Kafka's EndTransactionMarker): key version 0
/// and type (0 abort, 1 commit), value version 0 and the coordinator's epoch.
pub fn control_record(
    offset: i64,
    timestamp_ms: i64,
    commit: bool,
    coordinator_epoch: i32,
) -> Record {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(i16::from(commit));
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(coordinator_epoch);
    Record {
        offset,
        timestamp_ms,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Vec::new(),
    }
}

/// Whether a control record is a COMMIT marker (`Some(true)`), an ABORT marker
/// (`Some(false)`), or no marker Strata knows.
pub fn marker_commits(record: &Record) -> Option<bool> {
    match record.key.as_deref() {
        Some([0, 0, 0, 1]) => Some(true),
        Some([0, 0, 0, 0]) => Some(false),
        _ => None,
    }
}

/// Encodes `records` (in offset order, gaps allowed) as one RecordBatch v2.
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes> {
    encode_producer_batch(records, compression, None, BatchKind::Data)
}

/// Encodes `records` (in offset order, gaps allowed) as one RecordBatch v2 of `kind` whose
/// header carries `producer`'s fields (`None`: no producer, -1 in each). A control batch
/// is never compressed (Kafka's rule).
pub fn encode_producer_batch(
    records: &[Record],
    compression: Compression,
    producer: Option<ProducerFields>,
    kind: BatchKind,
) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(encoded_batch_len(records));
    encode_producer_batch_into(&mut out, records, compression, producer, kind)?;
    Ok(out.freeze())
}

/// Bytes that `records` take as one uncompressed batch: what a buffer is sized with
/// before [`encode_producer_batch_into`] (a compressed batch is usually smaller).
pub fn encoded_batch_len(records: &[Record]) -> usize {
    let Some(first) = records.first() else {
        return BATCH_HEADER_LEN;
    };
    let base_offset = first.offset;
    let base_timestamp = first.timestamp_ms;
    BATCH_HEADER_LEN
        + records
            .iter()
            .map(|record| {
                let len = record_body_len(
                    record,
                    record.timestamp_ms.wrapping_sub(base_timestamp),
                    record.offset - base_offset,
                );
                varlong_len(len as i64) + len
            })
            .sum::<usize>()
}

/// Appends `records` (in offset order, gaps allowed) to `out` as one RecordBatch v2, as
/// [`encode_producer_batch`] encodes them: uncompressed records are written straight into
/// `out`, with no buffer between. On an error, `out` is as it was.
pub fn encode_producer_batch_into(
    out: &mut BytesMut,
    records: &[Record],
    compression: Compression,
    producer: Option<ProducerFields>,
    kind: BatchKind,
) -> Result<()> {
    let start = out.len();
    let encoded = put_batch(out, records, compression, producer, kind);
    if encoded.is_err() {
        out.truncate(start);
    }
    encoded
}

fn put_batch(
    out: &mut BytesMut,
    records: &[Record],
    compression: Compression,
    producer: Option<ProducerFields>,
    kind: BatchKind,
) -> Result<()> {
    let compression = if kind == BatchKind::Control {
        Compression::None
    } else {
        compression
    };
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(Error::Encode(
            "a batch needs at least one record".to_string(),
        ));
    };
    let base_offset = first.offset;
    let base_timestamp = first.timestamp_ms;
    let last_offset_delta = i32::try_from(last.offset - base_offset)
        .map_err(|_| Error::Encode("a batch spans more than 2^31 offsets".to_string()))?;
    let count = i32::try_from(records.len())
        .map_err(|_| Error::Encode("a batch holds more than 2^31 records".to_string()))?;
    let max_timestamp = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    let start = out.len();
    out.put_i64(base_offset);
    out.put_i32(0); // batch length, set below
    out.put_i32(-1); // partition leader epoch: none
    out.put_i8(2); // magic
    out.put_u32(0); // CRC, set below
    out.put_i16(compression.id() | kind.attributes());
    out.put_i32(last_offset_delta);
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    match producer {
        Some(p) => {
            out.put_i64(p.producer_id);
            out.put_i16(p.producer_epoch);
            out.put_i32(p.base_sequence);
        }
        None => {
            out.put_i64(NO_PRODUCER_ID);
            out.put_i16(NO_PRODUCER_EPOCH);
            out.put_i32(NO_SEQUENCE);
        }
    }
    out.put_i32(count);
    let put_records = |out: &mut BytesMut| -> Result<()> {
        for record in records {
            let offset_delta = record.offset - base_offset;
            if !(0..=i64::from(last_offset_delta)).contains(&offset_delta) {
                return Err(Error::Encode(format!(
                    "record offsets must increase: {} after base {base_offset}",
                    record.offset
                )));
            }
            encode_record(
                out,
                record,
                record.timestamp_ms.wrapping_sub(base_timestamp),
                offset_delta,
            )?;
        }
        Ok(())
    };
    if compression == Compression::None {
        put_records(out)?;
    } else {
        let mut body = BytesMut::with_capacity(encoded_batch_len(records) - BATCH_HEADER_LEN);
        put_records(&mut body)?;
        out.put_slice(&compress(body.freeze(), compression)?);
    }
    let batch_len = i32::try_from(out.len() - start - 12)
        .map_err(|_| Error::Encode("a batch of more than 2 GiB".to_string()))?;
    out[start + 8..start + 12].copy_from_slice(&batch_len.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Bytes of one record after its length varint.
fn record_body_len(record: &Record, timestamp_delta: i64, offset_delta: i64) -> usize {
    let nullable = |bytes: Option<&[u8]>| match bytes {
        None => 1,
        Some(bytes) => varlong_len(bytes.len() as i64) + bytes.len(),
    };
    1 + varlong_len(timestamp_delta)
        + varlong_len(offset_delta)
        + nullable(record.key.as_deref())
        + nullable(record.value.as_deref())
        + varlong_len(record.headers.len() as i64)
        + record
            .headers
            .iter()
            .map(|(key, value)| nullable(Some(key.as_bytes())) + nullable(Some(value)))
            .sum::<usize>()
}

/// Writes one record, its length first, straight into `out`.
fn encode_record(
    out: &mut BytesMut,
    record: &Record,
    timestamp_delta: i64,
    offset_delta: i64,
) -> Result<()> {
    let len = record_body_len(record, timestamp_delta, offset_delta);
    let len =
        i32::try_from(len).map_err(|_| Error::Encode("a record of more than 2 GiB".to_string()))?;
    put_varlong(out, i64::from(len));
    out.put_i8(0); // attributes: unused
    put_varlong(out, timestamp_delta);
    put_varlong(out, offset_delta);
    put_nullable_bytes(out, record.key.as_deref())?;
    put_nullable_bytes(out, record.value.as_deref())?;
    put_varlong(out, record.headers.len() as i64);
    for (key, value) in &record.headers {
        put_nullable_bytes(out, Some(key.as_bytes()))?;
        put_nullable_bytes(out, Some(value))?;
    }
    Ok(())
}

/// Bytes of `value` as a zigzag varint.
fn varlong_len(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    (64 - zigzag.leading_zeros() as usize).max(1).div_ceil(7)
}

fn put_nullable_bytes(out: &mut BytesMut, bytes: Option<&[u8]>) -> Result<()> {
    match bytes {
        None => put_varlong(out, -1),
        Some(bytes) => {
            let len = i32::try_from(bytes.len())
                .map_err(|_| Error::Encode("a field of more than 2 GiB".to_string()))?;
            put_varlong(out, i64::from(len));
            out.put_slice(bytes);
        }
    }
    Ok(())
}

/// A zigzag varint, as Kafka writes record fields (varint and varlong share the form).
fn put_varlong(out: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.put_u8(zigzag as u8);
}

fn compress(body: Bytes, compression: Compression) -> Result<Bytes> {
    let failed = |e: std::io::Error| Error::Encode(format!("{compression:?} compression: {e}"));
    match compression {
        Compression::None => Ok(body),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 2),
                flate2::Compression::default(),
            );
            std::io::Write::write_all(&mut encoder, &body).map_err(failed)?;
            encoder.finish().map(Bytes::from).map_err(failed)
        }
        Compression::Snappy => {
            // Kafka's Java client's framing: the xerial header, then chunks of a 4-byte
            // length and a raw snappy block.
            let mut out = BytesMut::with_capacity(body.len() / 2 + 32);
            out.put_slice(&XERIAL_HEADER);
            out.put_i32(1); // version
            out.put_i32(1); // compatible version
            for chunk in body.chunks(XERIAL_CHUNK) {
                let block = snap::raw::Encoder::new()
                    .compress_vec(chunk)
                    .map_err(|e| Error::Encode(format!("snappy compression: {e}")))?;
                out.put_i32(block.len() as i32);
                out.put_slice(&block);
            }
            Ok(out.freeze())
        }
        Compression::Zstd => zstd::bulk::compress(&body, ZSTD_LEVEL)
            .map(Bytes::from)
            .map_err(failed),
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .level(4)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::with_capacity(body.len() / 2))
                .map_err(failed)?;
            std::io::copy(&mut body.reader(), &mut encoder).map_err(failed)?;
            let (out, finished) = encoder.finish();
            finished.map_err(failed)?;
            Ok(Bytes::from(out))
        }
    }
}

/// How a decompression past its limit begins its error.
const OVER_DECOMPRESSED: &str = "batch decompresses to more than";

/// How a record count past its limit begins its error.
const OVER_RECORDS: &str = "the batch holds more records than";

/// Decompresses at most `max` bytes; more is an error, not an allocation.
fn decompress(body: Bytes, codec: i16, max: usize) -> std::result::Result<Bytes, String> {
    let mut out = Vec::new();
    let limit = max as u64 + 1;
    let read = match codec {
        0 => return Ok(body),
        3 => lz4::Decoder::new(body.reader())
            .and_then(|decoder| decoder.take(limit).read_to_end(&mut out)),
        4 => zstd::stream::read::Decoder::new(body.reader())
            .and_then(|decoder| decoder.take(limit).read_to_end(&mut out)),
        1 => flate2::read::MultiGzDecoder::new(body.reader())
            .take(limit)
            .read_to_end(&mut out),
        2 => return snappy_decompress(&body, max).map(Bytes::from),
        other => return Err(format!("unknown compression codec {other}")),
    };
    read.map_err(|e| format!("cannot decompress: {e}"))?;
    if out.len() > max {
        return Err(format!("{OVER_DECOMPRESSED} {max} bytes"));
    }
    Ok(Bytes::from(out))
}

/// The magic bytes that open a xerial-framed snappy stream.
const XERIAL_HEADER: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Uncompressed bytes per xerial chunk (the Java client's block size).
const XERIAL_CHUNK: usize = 32 << 10;

/// Snappy: xerial-framed (Kafka's Java client) or one raw block (librdkafka and others);
/// at most `max` bytes out, checked from each block's stated length before it is
/// decompressed.
fn snappy_decompress(body: &[u8], max: usize) -> std::result::Result<Vec<u8>, String> {
    let block = |bytes: &[u8], out: &mut Vec<u8>| -> std::result::Result<(), String> {
        let len = snap::raw::decompress_len(bytes).map_err(|e| format!("snappy: {e}"))?;
        if out.len() + len > max {
            return Err(format!("{OVER_DECOMPRESSED} {max} bytes"));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(bytes, &mut out[start..])
            .map_err(|e| format!("snappy: {e}"))?;
        Ok(())
    };
    let mut out = Vec::new();
    if !body.starts_with(&XERIAL_HEADER) {
        block(body, &mut out)?;
        return Ok(out);
    }
    // Header, version, compatible version; then chunks.
    let mut rest = body
        .get(16..)
        .ok_or("snappy: xerial header runs past the end")?;
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or("snappy: a chunk length runs past the end")?;
        let len = usize::try_from(len).map_err(|_| format!("snappy: chunk length {len}"))?;
        let chunk = rest
            .get(4..4 + len)
            .ok_or("snappy: a chunk runs past the end")?;
        block(chunk, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Reads fields of stored bytes; every read is checked against what is left.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &str) -> std::result::Result<(), String> {
        if self.buf.remaining() < n {
            return Err(format!("{what} runs past the end"));
        }
        Ok(())
    }

    fn varlong(&mut self, what: &str) -> std::result::Result<i64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            self.need(1, what)?;
            let byte = self.buf.get_u8();
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(format!("{what}: varint longer than 10 bytes"))
    }

    fn varint(&mut self, what: &str) -> std::result::Result<i32, String> {
        i32::try_from(self.varlong(what)?).map_err(|_| format!("{what} out of range"))
    }

    /// Bytes of a varint length (-1 = null).
    fn nullable_bytes(&mut self, what: &str) -> std::result::Result<Option<Bytes>, String> {
        match self.varint(what)? {
            -1 => Ok(None),
            len if len < 0 => Err(format!("{what} has length {len}")),
            len => {
                self.need(len as usize, what)?;
                Ok(Some(self.buf.split_to(len as usize)))
            }
        }
    }
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
    Ok(decode_block_batches(block, object, start, expected)?
        .into_iter()
        .flat_map(|batch| batch.records)
        .collect())
}

/// [`decode_block`], batch by batch with each batch's header: what a reader needs to
/// leave out transaction markers and aborted records.
pub fn decode_block_batches(
    block: Bytes,
    object: &str,
    start: u64,
    expected: RangeInclusive<i64>,
) -> Result<Vec<DecodedBatch>> {
    let end = start + block.len() as u64;
    let mut batches: Vec<DecodedBatch> = Vec::new();
    for_each_batch(block, object, start, |batch| {
        batches.push(decode_batch(batch)?);
        Ok(())
    })?;
    let mut previous: Option<i64> = None;
    for r in batches.iter().flat_map(|b| b.records.iter()) {
        let in_order = previous.is_none_or(|p| p < r.offset);
        previous = Some(r.offset);
        if !in_order || !expected.contains(&r.offset) {
            return Err(Error::Corrupt(Corrupt {
                object: object.to_string(),
                start,
                end,
                reason: format!(
                    "offset {} outside the expected {}..={} or out of order",
                    r.offset,
                    expected.start(),
                    expected.end()
                ),
            }));
        }
    }
    Ok(batches)
}

/// Calls `visit` with every whole batch of `block`, in order; a batch that runs past the
/// block, or an error of `visit`, is [`Error::Corrupt`] naming `object` and the block's
/// byte range from `start`.
fn for_each_batch(
    block: Bytes,
    object: &str,
    start: u64,
    mut visit: impl FnMut(Bytes) -> std::result::Result<(), String>,
) -> Result<()> {
    let end = start + block.len() as u64;
    let corrupt = |reason: String| {
        Error::Corrupt(Corrupt {
            object: object.to_string(),
            start,
            end,
            reason,
        })
    };
    let mut rest = block;
    while rest.has_remaining() {
        let batch = split_batch(&mut rest).map_err(&corrupt)?;
        visit(batch).map_err(&corrupt)?;
    }
    Ok(())
}

/// Why a batch a client sent is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// Its CRC does not match its bytes (Kafka's CORRUPT_MESSAGE).
    pub corrupt: bool,
    /// It holds more records, or decompresses to more bytes, than the limits allow
    /// (Kafka's MESSAGE_TOO_LARGE: a Java producer splits the batch). Otherwise, and not
    /// corrupt, it is malformed (INVALID_RECORD).
    pub too_large: bool,
    /// What is wrong.
    pub reason: String,
}

/// A batch as a Kafka client sent it, checked by [`decode_client_batch`].
#[derive(Debug, Clone)]
pub struct ClientBatch {
    /// The batch's bytes as sent: what is stored.
    pub bytes: Bytes,
    /// Its producer fields; `None` for a producer that is not idempotent.
    pub producer: Option<ProducerFields>,
    /// Data or transactional data (a client never sends a control batch).
    pub kind: BatchKind,
    /// How its records are compressed.
    pub compression: Compression,
    /// Its records, decoded to be checked (offsets counted from 0).
    pub records: Vec<Record>,
}

impl ClientBatch {
    /// This batch with its bytes copied out of the request they came in: the batch
    /// outlives its request (until its segment is flushed), and a slice would keep a whole
    /// request of many partitions' batches alive with it.
    pub fn detached(mut self) -> Self {
        self.bytes = Bytes::copy_from_slice(&self.bytes);
        self
    }

    /// Its largest record timestamp.
    pub fn max_timestamp_ms(&self) -> i64 {
        self.records
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .unwrap_or(-1)
    }
}

/// Checks one partition's records of a Kafka Produce request: exactly one RecordBatch v2
/// whose CRC matches, that decodes within `limits` into at least one record (its record
/// count and each record's header count are checked before anything is allocated for
/// them, and decompression stops at the limit),
/// whose offset deltas are 0, 1, 2, ... (Kafka's rule for what clients send), and that
/// is not a control batch.
pub fn decode_client_batch(
    bytes: Bytes,
    limits: &BatchLimits,
) -> std::result::Result<ClientBatch, BatchError> {
    let invalid = |reason: String| BatchError {
        corrupt: false,
        too_large: false,
        reason,
    };
    let mut rest = bytes.clone();
    if rest.remaining() < BATCH_HEADER_LEN {
        return Err(invalid(format!(
            "{} bytes are too few for a record batch (its header alone is {BATCH_HEADER_LEN})",
            rest.remaining()
        )));
    }
    let batch = split_batch(&mut rest).map_err(invalid)?;
    if rest.has_remaining() {
        return Err(invalid(
            "a partition's records must be exactly one record batch (v2); this one has more \
             bytes after the first"
                .to_string(),
        ));
    }
    if batch[16] as i8 != 2 {
        return Err(invalid(format!(
            "record batch magic {}: only v2 (Kafka 0.11 and later clients) is supported",
            batch[16] as i8
        )));
    }
    // The CRC is computed once, here: the header and records below are read unchecked.
    if !crc_matches(&batch) {
        return Err(BatchError {
            corrupt: true,
            too_large: false,
            reason: "the record batch's CRC does not match its bytes".to_string(),
        });
    }
    let raw = parse_header(&batch).map_err(invalid)?;
    let raw_attributes = raw.attributes;
    let decoded = decode_records(batch.clone(), raw, limits).map_err(|reason| BatchError {
        corrupt: false,
        too_large: reason.starts_with(OVER_DECOMPRESSED) || reason.starts_with(OVER_RECORDS),
        reason,
    })?;
    let header = decoded.header;
    if header.kind == BatchKind::Control {
        return Err(invalid(
            "a client may not send a control batch (transaction markers are the \
             coordinator's)"
                .to_string(),
        ));
    }
    if decoded.records.is_empty() {
        return Err(invalid("the record batch holds no records".to_string()));
    }
    let count = decoded.records.len() as i64;
    if header.last_offset - header.base_offset != count - 1 {
        return Err(invalid(format!(
            "the batch holds {count} records but its last offset delta is {}",
            header.last_offset - header.base_offset
        )));
    }
    let mut records = decoded.records;
    for (i, record) in records.iter_mut().enumerate() {
        if record.offset - header.base_offset != i as i64 {
            return Err(invalid(format!(
                "record {i} has offset delta {}; a client's batch numbers its records 0, 1, \
                 2, ...",
                record.offset - header.base_offset
            )));
        }
        record.offset = i as i64;
    }
    Ok(ClientBatch {
        // A slice of `bytes`: a caller whose request holds more than this batch copies it
        // ([`ClientBatch::detached`]).
        bytes: batch,
        producer: header.producer,
        kind: header.kind,
        compression: Compression::from_attributes(raw_attributes),
        records,
    })
}

/// A copy of a client's batch with `LogAppendTime` set: the timestamp-type attribute and
/// the batch's max timestamp (which readers then give every record) become `now_ms`,
/// and the CRC is computed again. The records are not touched.
pub fn with_log_append_time(batch: &[u8], now_ms: i64) -> Bytes {
    let mut out = BytesMut::from(batch);
    let attributes = i16::from_be_bytes(out[21..23].try_into().expect("2 bytes")) | 0x08;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    // base offset 8, length 4, leader epoch 4, magic 1, crc 4, attributes 2, last offset
    // delta 4, base timestamp 8: the max timestamp is at 35.
    out[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// Every batch of `block` with its header, each CRC checked, as slices of the block: what
/// a Kafka fetch returns unchanged. `object` and `start` only name the bytes in errors.
pub fn split_block(block: Bytes, object: &str, start: u64) -> Result<Vec<(BatchHeader, Bytes)>> {
    let mut batches = Vec::new();
    for_each_batch(block, object, start, |batch| {
        batches.push((read_header(&batch)?.header, batch));
        Ok(())
    })?;
    Ok(batches)
}

/// Blocks at least this big are decoded on a blocking thread by [`decode_block_off_async`].
const DECODE_INLINE_MAX: usize = 64 << 10;

/// [`decode_block`] for async callers: a large block (decompression, CRC) is decoded on a
/// blocking thread, so that it never holds up an async worker (heartbeats, lease renewals).
pub async fn decode_block_off_async(
    block: Bytes,
    object: &str,
    start: u64,
    expected: RangeInclusive<i64>,
) -> Result<Vec<Record>> {
    Ok(
        decode_block_batches_off_async(block, object, start, expected)
            .await?
            .into_iter()
            .flat_map(|batch| batch.records)
            .collect(),
    )
}

/// [`decode_block_batches`] for async callers, as [`decode_block_off_async`].
pub async fn decode_block_batches_off_async(
    block: Bytes,
    object: &str,
    start: u64,
    expected: RangeInclusive<i64>,
) -> Result<Vec<DecodedBatch>> {
    if block.len() < DECODE_INLINE_MAX {
        return decode_block_batches(block, object, start, expected);
    }
    let name = object.to_string();
    tokio::task::spawn_blocking(move || decode_block_batches(block, &name, start, expected))
        .await
        .map_err(|e| {
            Error::Corrupt(Corrupt {
                object: object.to_string(),
                start,
                end: start,
                reason: format!("decoding failed: {e}"),
            })
        })?
}

/// The header of every batch in `block`, in order, each batch's CRC checked (records are
/// not decoded). `object` and `start` only name the bytes in errors.
pub fn batch_headers(block: Bytes, object: &str, start: u64) -> Result<Vec<BatchHeader>> {
    let mut headers = Vec::new();
    for_each_batch(block, object, start, |batch| {
        headers.push(read_header(&batch)?.header);
        Ok(())
    })?;
    Ok(headers)
}

/// A batch's header, its CRC and magic checked.
struct RawHeader {
    header: BatchHeader,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
}

fn read_header(batch: &Bytes) -> std::result::Result<RawHeader, String> {
    let magic = batch[16] as i8;
    if magic != 2 {
        return Err(format!("record batch magic {magic}: only v2 is supported"));
    }
    if !crc_matches(batch) {
        return Err("batch checksum mismatch".to_string());
    }
    parse_header(batch)
}

/// Whether a batch's CRC32C (of everything from its attributes on) is the one it carries.
fn crc_matches(batch: &[u8]) -> bool {
    let crc = u32::from_be_bytes(batch[17..21].try_into().expect("4 bytes"));
    crc32c::crc32c(&batch[CRC_START..]) == crc
}

/// A v2 batch's header fields, its CRC not checked (the caller did).
fn parse_header(batch: &Bytes) -> std::result::Result<RawHeader, String> {
    let mut header = &batch[..BATCH_HEADER_LEN];
    let base_offset = header.get_i64();
    header.advance(4 + 4 + 1 + 4); // length, leader epoch, magic, crc
    let attributes = header.get_i16();
    let last_offset_delta = header.get_i32();
    let base_timestamp = header.get_i64();
    let max_timestamp = header.get_i64();
    let producer_id = header.get_i64();
    let producer_epoch = header.get_i16();
    let base_sequence = header.get_i32();
    let count = header.get_i32();
    if count < 0 || last_offset_delta < 0 {
        return Err(format!(
            "batch header is invalid: {count} records, last offset delta {last_offset_delta}"
        ));
    }
    Ok(RawHeader {
        header: BatchHeader {
            base_offset,
            last_offset: base_offset.saturating_add(i64::from(last_offset_delta)),
            producer: (producer_id >= 0).then_some(ProducerFields {
                producer_id,
                producer_epoch,
                base_sequence,
            }),
            kind: BatchKind::from_attributes(attributes),
        },
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        count,
    })
}

/// Splits the next whole batch off `rest`.
fn split_batch(rest: &mut Bytes) -> std::result::Result<Bytes, String> {
    if rest.remaining() < 12 {
        return Err("a batch header runs past the end of the block".to_string());
    }
    let length = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
    let total = usize::try_from(length)
        .ok()
        .filter(|len| *len >= BATCH_HEADER_LEN - 12)
        .map(|len| len + 12)
        .ok_or_else(|| format!("batch length {length} is invalid"))?;
    if total > rest.remaining() {
        return Err(format!(
            "batch of {total} bytes runs past the end of the block ({} left)",
            rest.remaining()
        ));
    }
    Ok(rest.split_to(total))
}

/// Decodes one whole batch (header and records).
fn decode_batch(batch: Bytes) -> std::result::Result<DecodedBatch, String> {
    decode_batch_within(batch, &BatchLimits::STORED)
}

/// Bounds on what one batch may hold, checked while it is decoded, before anything is
/// allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records.
    pub max_records: usize,
    /// Most bytes once decompressed.
    pub max_decompressed_bytes: usize,
    /// Most headers of one record.
    pub max_headers_per_record: usize,
}

impl BatchLimits {
    /// What a stored batch may hold: anything an agent or compactor writes.
    pub const STORED: Self = Self {
        max_records: usize::MAX,
        max_decompressed_bytes: MAX_BATCH_BYTES,
        max_headers_per_record: usize::MAX,
    };
}

/// Decodes one whole batch (header and records) within `limits`.
fn decode_batch_within(
    batch: Bytes,
    limits: &BatchLimits,
) -> std::result::Result<DecodedBatch, String> {
    let raw = read_header(&batch)?;
    decode_records(batch, raw, limits)
}

/// The records of `batch`, whose header `raw` was read (and CRC checked) by the caller.
fn decode_records(
    batch: Bytes,
    raw: RawHeader,
    limits: &BatchLimits,
) -> std::result::Result<DecodedBatch, String> {
    let RawHeader {
        header: batch_header,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        count,
    } = raw;
    let base_offset = batch_header.base_offset;
    let mut out: Vec<Record> = Vec::new();
    let log_append_time = attributes & 0x08 != 0;
    if count as usize > limits.max_records {
        return Err(format!(
            "{OVER_RECORDS} the limit of {}: {count}",
            limits.max_records
        ));
    }
    let body = decompress(
        batch.slice(BATCH_HEADER_LEN..),
        attributes & 0x07,
        limits.max_decompressed_bytes.min(MAX_BATCH_BYTES),
    )?;
    // A count the bytes cannot hold is corrupt; so it never sizes an allocation alone.
    if count as usize > body.len() / MIN_RECORD_LEN {
        return Err(format!(
            "batch claims {count} records in {} bytes",
            body.len()
        ));
    }
    out.reserve(count as usize);
    let mut reader = Reader { buf: body };
    for _ in 0..count {
        let len = reader.varint("record length")?;
        let len = usize::try_from(len).map_err(|_| format!("record length {len}"))?;
        reader.need(len, "record")?;
        let mut record = Reader {
            buf: reader.buf.split_to(len),
        };
        record.need(1, "record attributes")?;
        record.buf.advance(1);
        let timestamp_delta = record.varlong("timestamp delta")?;
        let offset_delta = record.varint("offset delta")?;
        if !(0..=last_offset_delta).contains(&offset_delta) {
            return Err(format!(
                "offset delta {offset_delta} outside the batch's 0..={last_offset_delta}"
            ));
        }
        let key = record.nullable_bytes("key")?;
        let value = record.nullable_bytes("value")?;
        let header_count = record.varint("header count")?;
        let header_count = usize::try_from(header_count)
            .ok()
            .filter(|n| *n <= record.buf.remaining() / 2)
            .ok_or_else(|| format!("header count {header_count} is invalid"))?;
        if header_count > limits.max_headers_per_record {
            return Err(format!(
                "a record has {header_count} headers, over the limit of {}",
                limits.max_headers_per_record
            ));
        }
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let key = record
                .nullable_bytes("header key")?
                .ok_or("a header key is null")?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| "a header key is not UTF-8")?;
            let value = record.nullable_bytes("header value")?.unwrap_or_default();
            headers.push((key, value));
        }
        if record.buf.has_remaining() {
            return Err(format!(
                "record has {} bytes past its last header",
                record.buf.remaining()
            ));
        }
        out.push(Record {
            offset: base_offset
                .checked_add(i64::from(offset_delta))
                .ok_or("offset overflows")?,
            timestamp_ms: if log_append_time {
                max_timestamp
            } else {
                base_timestamp.wrapping_add(timestamp_delta)
            },
            key,
            value,
            headers,
        });
    }
    if reader.buf.has_remaining() {
        return Err(format!(
            "batch has {} bytes past its last record",
            reader.buf.remaining()
        ));
    }
    Ok(DecodedBatch {
        header: batch_header,
        records: out,
    })
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
    fn sizes_a_batch_exactly_before_encoding_it() {
        for value in [0, 1, -1, 63, 64, -64, -65, 8191, 8192, i64::MAX, i64::MIN] {
            let mut out = BytesMut::new();
            put_varlong(&mut out, value);
            assert_eq!(varlong_len(value), out.len(), "{value}");
        }
        let mut records = sample(300);
        records[7].value = Some(Bytes::from(vec![7u8; 70_000]));
        records[9].headers.push(("a".repeat(200), Bytes::new()));
        let batch = encode_batch(&records, Compression::None).unwrap();
        assert_eq!(encoded_batch_len(&records), batch.len());
        assert_eq!(decode_block(batch, "o", 0, 100..=399).unwrap(), records);
    }

    #[test]
    fn a_failed_encoding_leaves_the_buffer_as_it_was() {
        let mut out = BytesMut::from(&b"before"[..]);
        let mut records = sample(3);
        records.swap(0, 2);
        let encoded = encode_producer_batch_into(
            &mut out,
            &records,
            Compression::None,
            None,
            BatchKind::Data,
        );
        assert!(encoded.is_err(), "offsets out of order");
        assert_eq!(&out[..], b"before");
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
    fn producer_fields_are_in_the_batch_header() {
        let first = sample(3);
        let second: Vec<Record> = sample(5).into_iter().skip(3).collect();
        let producer = ProducerFields {
            producer_id: 4_000_000_123,
            producer_epoch: 7,
            base_sequence: 41,
        };
        let mut block = BytesMut::new();
        block.extend_from_slice(&encode_batch(&first, Compression::None).unwrap());
        block.extend_from_slice(
            &encode_producer_batch(
                &second,
                Compression::Zstd,
                Some(producer),
                BatchKind::Transactional,
            )
            .unwrap(),
        );
        let marker = control_record(105, 1_700_000_000_005, true, 3);
        assert_eq!(marker_commits(&marker), Some(true));
        block.extend_from_slice(
            &encode_producer_batch(
                std::slice::from_ref(&marker),
                Compression::Zstd,
                Some(producer),
                BatchKind::Control,
            )
            .unwrap(),
        );
        let block = block.freeze();
        let headers = batch_headers(block.clone(), "o", 0).unwrap();
        assert_eq!(
            headers[..2],
            vec![
                BatchHeader {
                    base_offset: 100,
                    last_offset: 102,
                    producer: None,
                    kind: BatchKind::Data,
                },
                BatchHeader {
                    base_offset: 103,
                    last_offset: 104,
                    producer: Some(producer),
                    kind: BatchKind::Transactional,
                },
            ]
        );
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[2].kind, BatchKind::Control);
        let batches = decode_block_batches(block.clone(), "o", 0, 100..=105).unwrap();
        assert_eq!(batches[2].records, vec![marker.clone()]);
        assert_eq!(marker_commits(&control_record(0, 0, false, 0)), Some(false));
        let mut all = sample(5);
        all.push(marker);
        assert_eq!(decode_block(block, "o", 0, 100..=105).unwrap(), all);
    }

    #[test]
    fn repeated_header_keys_are_kept_in_order() {
        let mut records = sample(2);
        records[1].headers = ["a", "b", "c"]
            .iter()
            .map(|v| ("k".to_string(), Bytes::from(v.to_string())))
            .collect();
        records[1].headers.push(("other".to_string(), Bytes::new()));
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let block = encode_batch(&records, compression).unwrap();
            assert_eq!(decode_block(block, "o", 0, 100..=101).unwrap(), records);
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
                matches!(err, Error::Corrupt(Corrupt { ref object, start: 7, .. }) if object == "seg"),
                "{err}"
            );
        }
    }

    /// A batch with a valid CRC over `body` (uncompressed records, or compressed with
    /// `codec`) claiming `count` records.
    fn forged_batch(body: &[u8], codec: i16, count: i32) -> Bytes {
        let mut batch = BytesMut::new();
        batch.put_i64(0);
        batch.put_i32((BATCH_HEADER_LEN - 12 + body.len()) as i32);
        batch.put_i32(-1);
        batch.put_i8(2);
        batch.put_u32(0);
        batch.put_i16(codec);
        batch.put_i32(0);
        batch.put_i64(0);
        batch.put_i64(0);
        batch.put_i64(-1);
        batch.put_i16(-1);
        batch.put_i32(-1);
        batch.put_i32(count);
        batch.put_slice(body);
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch.freeze()
    }

    #[test]
    fn a_zip_bomb_is_refused_not_inflated() {
        // 512 MiB of zeros compress to well under a MiB.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..512 {
            std::io::Write::write_all(&mut encoder, &chunk).unwrap();
        }
        let compressed = encoder.finish().unwrap();
        assert!(compressed.len() < 1 << 20);
        let err = decode_block(forged_batch(&compressed, 4, 1), "o", 0, 0..=0).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn a_huge_record_count_allocates_nothing() {
        let err = decode_block(forged_batch(&[], 0, i32::MAX), "o", 0, 0..=0).unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
    }

    #[test]
    fn a_client_batch_is_checked_and_kept_as_sent() {
        let records = sample(7);
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = encode_batch(&records, compression).unwrap();
            let batch = decode_client_batch(bytes.clone(), &BatchLimits::STORED).unwrap();
            assert_eq!(batch.bytes, bytes, "{compression:?}: stored as sent");
            assert_eq!(batch.records.len(), 7);
            assert_eq!(batch.records[3].key, records[3].key);
            assert_eq!(batch.records[3].offset, 3, "offsets counted from 0");
            assert_eq!(batch.max_timestamp_ms(), 1_700_000_000_006);
        }
        let bytes = encode_batch(&records, Compression::None).unwrap();
        // A flipped byte in the records: CORRUPT_MESSAGE.
        let mut flipped = BytesMut::from(&bytes[..]);
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(
            decode_client_batch(flipped.freeze(), &BatchLimits::STORED)
                .unwrap_err()
                .corrupt
        );
        // Two batches, or a trailing byte: INVALID_RECORD.
        let mut two = BytesMut::from(&bytes[..]);
        two.extend_from_slice(&bytes);
        let error = decode_client_batch(two.freeze(), &BatchLimits::STORED).unwrap_err();
        assert!(
            !error.corrupt && error.reason.contains("exactly one"),
            "{error:?}"
        );
        assert!(
            !decode_client_batch(Bytes::from_static(b"short"), &BatchLimits::STORED)
                .unwrap_err()
                .corrupt
        );
        // A control batch is the coordinator's, never a client's.
        let marker = control_record(0, 1, true, 0);
        let control = encode_producer_batch(
            &[marker],
            Compression::None,
            Some(ProducerFields {
                producer_id: 1,
                producer_epoch: 0,
                base_sequence: -1,
            }),
            BatchKind::Control,
        )
        .unwrap();
        assert!(
            decode_client_batch(control, &BatchLimits::STORED)
                .unwrap_err()
                .reason
                .contains("control")
        );
        // Offsets with a gap: not what a client sends.
        let mut gap = sample(3);
        gap[2].offset += 1;
        let gapped = encode_batch(&gap, Compression::None).unwrap();
        assert!(decode_client_batch(gapped, &BatchLimits::STORED).is_err());
    }

    #[test]
    fn a_client_batch_is_refused_past_its_limits_before_it_is_decoded() {
        let limits = BatchLimits {
            max_records: 5,
            max_decompressed_bytes: 4096,
            max_headers_per_record: 1,
        };
        // Too many records: refused from the header, nothing decompressed.
        let many = encode_batch(&sample(6), Compression::Zstd).unwrap();
        let error = decode_client_batch(many, &limits).unwrap_err();
        assert!(
            error.reason.contains("more records than the limit of 5: 6") && error.too_large,
            "{error:?}"
        );
        // A record that decompresses past the limit.
        let mut big = sample(1);
        big[0].value = Some(Bytes::from(vec![b'x'; 10_000]));
        big[0].headers.clear();
        let error = decode_client_batch(encode_batch(&big, Compression::Gzip).unwrap(), &limits)
            .unwrap_err();
        assert!(
            error.reason.contains("more than 4096") && error.too_large,
            "{error:?}"
        );
        // Too many headers in one record.
        let mut headers = sample(1);
        headers[0]
            .headers
            .push(("h2".to_string(), Bytes::from_static(b"v")));
        let error =
            decode_client_batch(encode_batch(&headers, Compression::None).unwrap(), &limits)
                .unwrap_err();
        assert!(error.reason.contains("2 headers"), "{error:?}");
    }

    #[test]
    fn log_append_time_rewrites_only_the_header() {
        let records = sample(3);
        let bytes = encode_batch(&records, Compression::Lz4).unwrap();
        let stamped = with_log_append_time(&bytes, 1_800_000_000_000);
        assert_eq!(stamped.len(), bytes.len());
        assert_eq!(stamped[BATCH_HEADER_LEN..], bytes[BATCH_HEADER_LEN..]);
        let decoded = decode_client_batch(stamped, &BatchLimits::STORED).unwrap();
        assert!(
            decoded
                .records
                .iter()
                .all(|r| r.timestamp_ms == 1_800_000_000_000)
        );
    }

    /// Kafka's own bytes: `kafka-protocol` (what a Kafka client or broker writes) and our
    /// codec read each other's batches.
    #[test]
    fn interoperates_with_kafka_protocol() {
        use kafka_protocol::indexmap::IndexMap;
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{
            Compression as KafkaCompression, Record as KafkaRecord, RecordBatchDecoder,
            RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records = sample(20);
        let to_kafka = |r: &Record| KafkaRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: r.offset,
            sequence: -1i32.wrapping_add((r.offset - 100) as i32),
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), Some(v.clone())))
                .collect::<IndexMap<_, _>>(),
        };
        for (ours, theirs) in [
            (Compression::None, KafkaCompression::None),
            (Compression::Gzip, KafkaCompression::Gzip),
            (Compression::Snappy, KafkaCompression::Snappy),
            (Compression::Lz4, KafkaCompression::Lz4),
            (Compression::Zstd, KafkaCompression::Zstd),
        ] {
            let kafka: Vec<KafkaRecord> = records.iter().map(to_kafka).collect();
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &kafka,
                &RecordEncodeOptions {
                    version: 2,
                    compression: theirs,
                },
            )
            .unwrap();
            assert_eq!(
                decode_block(buf.freeze(), "o", 0, 100..=119).unwrap(),
                records,
                "{ours:?}"
            );
            let mut block = encode_batch(&records, ours).unwrap();
            let decoded = RecordBatchDecoder::decode_all(&mut block).unwrap();
            // (Its decoder derives per-record sequences of a batch without one its own
            // way; the batch's base sequence is -1 either way.)
            let without_sequence = |records: Vec<KafkaRecord>| -> Vec<KafkaRecord> {
                records
                    .into_iter()
                    .map(|r| KafkaRecord { sequence: 0, ..r })
                    .collect()
            };
            let decoded = decoded.into_iter().flat_map(|set| set.records).collect();
            assert_eq!(
                without_sequence(decoded),
                without_sequence(kafka),
                "{ours:?}"
            );
        }
    }
}
