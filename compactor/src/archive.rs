//! The Parquet archive of topics with `archive.enabled=true`.
//!
//! Each partition's records are written, in offset order, as Parquet files under
//! `archive/topic=<t>/partition=<p>/<first>-<last>.parquet` ([`strata_storage::archive`])
//! with the columns of [`schema`]: `partition`, `offset`, `timestamp`, `key`, `value`,
//! `headers` (a list of `{key, value}`). zstd compression; row groups of about
//! `archive_row_group_bytes` (the unit a query engine reads in parallel and skips by its
//! statistics); min/max statistics on `partition`, `offset` and `timestamp` per row group
//! and page; the files are sorted by `offset`, and say so in their metadata.
//!
//! How far a partition is archived lives in the metastore ([`ArchiveState`]). Invariants:
//! - a file's range is recorded as `pending` (compare-and-set) before the file is written,
//!   and a pending range is always finished, with the same range, before another is
//!   decided: so the only archive files are committed ones and the one pending file, and
//!   their ranges never overlap, whatever compactor died or was fenced where;
//! - a file holds exactly the records of its range, so writing it again (after a crash)
//!   gives the same rows under the same name;
//! - retention and log compaction touch only entries wholly below `archived_to`
//!   ([`crate::plan::archived_prefix`]): an archived topic keeps every record in Parquet.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray, TimestampMillisecondArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use strata_metastore::{ArchiveRange, ArchiveState, IndexEntry, Liveness};
use strata_storage::Record;
use tracing::instrument;

use crate::error::off_async;
use crate::job::{READ_AHEAD, duration_ms, ensure_held};
use crate::plan::{archive_due, next_archive_range};
use crate::{Inner, PassReport, Result};

/// Rows per Arrow batch handed to the Parquet writer: a row group ends at a batch
/// boundary once it is `archive_row_group_bytes` big.
const BATCH_ROWS: usize = 1024;

/// The archive files' schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", DataType::List(header_field()), false),
    ]))
}

/// One element of the `headers` list.
fn header_field() -> Arc<Field> {
    Arc::new(Field::new(
        "element",
        DataType::Struct(header_fields()),
        false,
    ))
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// Writes one archive file in memory.
pub struct ArchiveWriter {
    writer: ArrowWriter<Vec<u8>>,
    partition: i32,
    batch: Vec<Record>,
    rows: u64,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("partition", &self.partition)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ArchiveWriter {
    /// A writer for the file of `range` of one partition, with row groups of about
    /// `row_group_bytes` (encoded).
    pub fn new(
        topic: &str,
        partition: u32,
        range: ArchiveRange,
        row_group_bytes: u64,
    ) -> Result<Self> {
        let stats = |props: parquet::file::properties::WriterPropertiesBuilder, column: &str| {
            props.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::Page)
        };
        // Offsets and timestamps grow steadily: delta encoding beats a dictionary.
        let delta = |props: parquet::file::properties::WriterPropertiesBuilder, column: &str| {
            props
                .set_column_dictionary_enabled(ColumnPath::from(column), false)
                .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED)
        };
        let mut props = WriterProperties::builder()
            .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")))
            .set_compression(ParquetCompression::ZSTD(ZstdLevel::default()))
            .set_statistics_enabled(EnabledStatistics::None)
            .set_max_row_group_bytes(Some(row_group_bytes.max(1) as usize))
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 1,
                descending: false,
                nulls_first: false,
            }]))
            .set_key_value_metadata(Some(vec![
                KeyValue::new("strata.topic".into(), topic.to_string()),
                KeyValue::new("strata.partition".into(), partition.to_string()),
                KeyValue::new("strata.first_offset".into(), range.first.to_string()),
                KeyValue::new("strata.last_offset".into(), range.last.to_string()),
            ]));
        for column in ["partition", "offset", "timestamp"] {
            props = stats(props, column);
        }
        for column in ["offset", "timestamp"] {
            props = delta(props, column);
        }
        let writer = ArrowWriter::try_new(Vec::new(), schema(), Some(props.build()))?;
        Ok(Self {
            writer,
            partition: partition as i32,
            batch: Vec::with_capacity(BATCH_ROWS),
            rows: 0,
        })
    }

    /// Adds a record (in offset order).
    pub fn push(&mut self, record: Record) -> Result<()> {
        self.batch.push(record);
        self.rows += 1;
        if self.batch.len() >= BATCH_ROWS {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The file's bytes.
    pub fn finish(mut self) -> Result<Bytes> {
        self.write_batch()?;
        Ok(Bytes::from(self.writer.into_inner()?))
    }

    fn write_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.batch);
        let batch = to_batch(self.partition, &records)?;
        self.writer.write(&batch)?;
        Ok(())
    }
}

/// Records as one Arrow batch of the archive schema.
fn to_batch(partition: i32, records: &[Record]) -> Result<RecordBatch> {
    let header_keys: StringArray = records
        .iter()
        .flat_map(|r| r.headers.iter().map(|(k, _)| Some(k.as_str())))
        .collect();
    let header_values: BinaryArray = records
        .iter()
        .flat_map(|r| r.headers.iter().map(|(_, v)| Some(v.as_ref())))
        .collect();
    let headers = StructArray::try_new(
        header_fields(),
        vec![Arc::new(header_keys), Arc::new(header_values)],
        None,
    )?;
    let headers = ListArray::try_new(
        header_field(),
        OffsetBuffer::from_lengths(records.iter().map(|r| r.headers.len())),
        Arc::new(headers),
        None,
    )?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![partition; records.len()])),
        Arc::new(Int64Array::from_iter_values(
            records.iter().map(|r| r.offset),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(records.iter().map(|r| r.timestamp_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(
            records
                .iter()
                .map(|r| r.key.as_deref())
                .collect::<BinaryArray>(),
        ),
        Arc::new(
            records
                .iter()
                .map(|r| r.value.as_deref())
                .collect::<BinaryArray>(),
        ),
        Arc::new(headers),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

impl Inner {
    /// Archives a partition up to its high watermark when due, finishing a pending file
    /// first. Returns how far it is archived: retention and compaction stay below that.
    #[instrument(name = "compactor.archive", skip(self, entries, claim, report))]
    pub(crate) async fn archive(
        &self,
        topic: &str,
        partition: u32,
        entries: &[IndexEntry],
        claim: &dyn Liveness,
        report: &mut PassReport,
    ) -> Result<i64> {
        let mut state = self.metastore.archive_state(topic, partition).await?;
        if state.pending.is_some() {
            match self
                .write_archive_file(topic, partition, entries, &state, claim, report)
                .await?
            {
                Some(committed) => state = committed,
                None => return Ok(state.archived_to),
            }
        }
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(state.archived_to);
        };
        let mut from = state.archived_to;
        if from < first.base_offset {
            // Only when archiving began after records were already gone.
            tracing::warn!(
                topic,
                partition,
                archived_to = from,
                log_start = first.base_offset,
                "records below the log start were never archived; the archive starts at the log start"
            );
            from = first.base_offset;
        }
        let unarchived: u64 = entries
            .iter()
            .filter(|e| e.last_offset >= from)
            .map(|e| e.byte_len)
            .sum();
        let due = archive_due(
            unarchived,
            self.config.archive_file_bytes,
            state.archived_at_ms,
            self.clock.now_ms(),
            duration_ms(self.config.archive_interval),
            duration_ms(self.config.interval),
        );
        if from > last.last_offset || !due {
            return Ok(state.archived_to);
        }
        while let Some(range) = next_archive_range(entries, from, self.config.archive_file_bytes) {
            let decided = ArchiveState {
                archived_to: from,
                start_offset: if state.files == 0 {
                    from
                } else {
                    state.start_offset
                },
                pending: Some(range),
                ..state.clone()
            };
            ensure_held(claim, topic, partition)?;
            if !self
                .metastore
                .store_archive_state(topic, partition, &state, &decided)
                .await?
            {
                tracing::warn!(
                    topic,
                    partition,
                    "archive state changed under this job; stopping it"
                );
                return Ok(state.archived_to);
            }
            match self
                .write_archive_file(topic, partition, entries, &decided, claim, report)
                .await?
            {
                Some(committed) => state = committed,
                None => return Ok(decided.archived_to),
            }
            from = state.archived_to;
        }
        Ok(state.archived_to)
    }

    /// Writes the pending file of `state` and commits it: the new state, or `None` if the
    /// stored state changed meanwhile (the job stops).
    async fn write_archive_file(
        &self,
        topic: &str,
        partition: u32,
        entries: &[IndexEntry],
        state: &ArchiveState,
        claim: &dyn Liveness,
        report: &mut PassReport,
    ) -> Result<Option<ArchiveState>> {
        let range = state.pending.expect("a pending archive file");
        let name = strata_storage::archive::file_name(topic, partition, range.first, range.last);
        let mut writer =
            ArchiveWriter::new(topic, partition, range, self.config.archive_row_group_bytes)?;
        let sources: Vec<&IndexEntry> = entries
            .iter()
            .filter(|e| e.last_offset >= range.first && e.base_offset <= range.last)
            .collect();
        let reads: Vec<_> = sources
            .iter()
            .map(|e| self.read_records(topic, partition, e))
            .collect();
        let mut blocks = futures::stream::iter(reads).buffered(READ_AHEAD);
        while let Some(records) = blocks.next().await {
            let records: Vec<Record> = records?
                .into_iter()
                .filter(|r| (range.first..=range.last).contains(&r.offset))
                .collect();
            // Parquet encoding and zstd are CPU work: off the async workers.
            writer = off_async(move || {
                for record in records {
                    writer.push(record)?;
                }
                Ok(writer)
            })
            .await?;
        }
        drop(blocks);
        let rows = writer.rows();
        let bytes = off_async(move || writer.finish()).await?;
        let size = bytes.len() as u64;
        self.store.put(&name, bytes).await?;
        self.metrics.bytes_written.inc_by(size);
        self.metrics.objects_written.inc();
        self.failpoint("archive-put").await;
        let committed = ArchiveState {
            archived_to: range.last + 1,
            pending: None,
            files: state.files + 1,
            records: state.records + rows,
            bytes: state.bytes + size,
            archived_at_ms: self.clock.now_ms(),
            ..state.clone()
        };
        ensure_held(claim, topic, partition)?;
        if !self
            .metastore
            .store_archive_state(topic, partition, state, &committed)
            .await?
        {
            tracing::warn!(
                topic,
                partition,
                file = name,
                "archive state changed under this job; stopping it"
            );
            return Ok(None);
        }
        report.archived_files += 1;
        report.archived_records += rows;
        tracing::info!(
            topic,
            partition,
            file = name,
            rows,
            bytes = size,
            "archived"
        );
        Ok(Some(committed))
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    fn record(offset: i64, key: Option<&str>, value: Option<&str>, headers: usize) -> Record {
        Record {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: value.map(|v| Bytes::from(v.to_string())),
            headers: (0..headers)
                .map(|i| (format!("h{i}"), Bytes::from(format!("v{offset}-{i}"))))
                .collect(),
        }
    }

    #[test]
    fn records_round_trip_through_parquet_with_statistics() {
        let range = ArchiveRange {
            first: 10,
            last: 20_009,
        };
        // Tiny row groups, so the file has several.
        let mut writer = ArchiveWriter::new("orders", 3, range, 64 << 10).unwrap();
        for offset in 10..20_010 {
            let r = match offset % 3 {
                0 => record(offset, Some("k"), None, 0),
                1 => record(offset, None, Some("value"), 2),
                _ => record(offset, Some(&format!("key-{offset}")), Some("v"), 1),
            };
            writer.push(r).unwrap();
        }
        assert_eq!(writer.rows(), 20_000);
        let bytes = writer.finish().unwrap();

        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let meta = reader.metadata();
        assert!(meta.num_row_groups() > 1, "row groups are bounded");
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        assert!(
            kv.iter()
                .any(|k| k.key == "strata.topic" && k.value.as_deref() == Some("orders"))
        );
        let mut next = 10i64;
        for group in meta.row_groups() {
            let offset = group.column(1);
            assert_eq!(
                offset.compression(),
                parquet::basic::Compression::ZSTD(ZstdLevel::default())
            );
            let stats = offset.statistics().expect("offset statistics");
            let min = stats.min_bytes_opt().unwrap();
            assert_eq!(i64::from_le_bytes(min.try_into().unwrap()), next);
            next += group.num_rows();
            assert!(
                group.column(2).statistics().is_some(),
                "timestamp statistics"
            );
            assert!(group.column(3).statistics().is_none(), "no key statistics");
        }
        assert_eq!(next, 20_010);

        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 20_000);
        let first = &batches[0];
        let as_binary = |i: usize| {
            first
                .column(i)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .unwrap()
                .clone()
        };
        let (keys, values) = (as_binary(3), as_binary(4));
        // offset 10: 10 % 3 == 1: no key, a value, two headers.
        assert!(keys.is_null(0));
        assert_eq!(values.value(0), b"value");
        // offset 12: a tombstone.
        assert_eq!(keys.value(2), b"k");
        assert!(values.is_null(2));
        let headers = first
            .column(5)
            .as_any()
            .downcast_ref::<ListArray>()
            .unwrap();
        assert_eq!(headers.value_length(0), 2);
        assert_eq!(headers.value_length(2), 0);
        let header = headers.value(0);
        let header = header.as_any().downcast_ref::<StructArray>().unwrap();
        let header_values = header
            .column(1)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        assert_eq!(header_values.value(1), b"v10-1");
    }
}
