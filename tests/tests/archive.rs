//! The Parquet archive, written by `strata compactor` (its own process) against real
//! etcd and s3s-fs, read back by outside readers: pyarrow and DuckDB (from PyPI, installed
//! by `scripts/install-test-deps.sh`), compared row by row with what `strata consume`
//! returns.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;
use strata_client::{Admin, Code, Producer, ProducerConfig, ProducerRecord};
use strata_metastore::ArchiveRange;
use strata_tests::compactor::{
    CompactorProcess, Setup, check_index, create_topic, object_path, setup, wait_until,
};
use strata_tests::{cli_ok, report};

/// One record as every reader is made to show it: `(partition, offset, timestamp ms,
/// key, value, headers)`, bytes in base64.
type Row = (
    u32,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Vec<(String, String)>,
);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The record `i` of the test topic: keyed or not, a tombstone now and then, binary
/// values, headers on some.
fn test_record(i: usize) -> ProducerRecord {
    let key = (!i.is_multiple_of(7)).then(|| Bytes::from(format!("key-{}", i % 500)));
    let value = (!i.is_multiple_of(11)).then(|| {
        let mut v = format!("value-{i}-").into_bytes();
        v.extend_from_slice(&[0, 0xff, (i % 256) as u8]);
        Bytes::from(v)
    });
    let headers = if i.is_multiple_of(3) {
        // A key may repeat: every reader keeps all three, in order.
        vec![
            ("source".to_string(), Bytes::from_static(b"archive-test")),
            ("k".to_string(), Bytes::from_static(b"a")),
            ("seq".to_string(), Bytes::from(i.to_string())),
            ("k".to_string(), Bytes::from_static(b"b")),
            ("k".to_string(), Bytes::from_static(b"c")),
        ]
    } else {
        Vec::new()
    };
    ProducerRecord {
        key,
        value,
        headers,
        partition: None,
        timestamp_ms: 0,
    }
}

/// Produces `count` test records starting at record `from`; returns once all are acked.
async fn produce(server: &str, topic: &str, from: usize, count: usize) {
    let producer = Producer::connect(server, ProducerConfig::default())
        .await
        .unwrap();
    let mut deliveries = Vec::with_capacity(count);
    for i in from..from + count {
        deliveries.push(producer.send(topic, test_record(i)).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
}

/// Waits until every partition of `topic` is archived up to its high watermark.
async fn wait_until_archived(
    server: &str,
    topic: &str,
) -> strata_client::proto::DescribeArchiveResponse {
    let admin = Admin::connect(server).await.unwrap();
    let mut archive = None;
    wait_until("the archive reached the high watermarks", async || {
        let described = admin.describe_archive(topic).await.unwrap();
        let done = described
            .partitions
            .iter()
            .all(|p| p.archived_to == p.high_watermark && p.pending_file.is_empty());
        archive = Some(described);
        done
    })
    .await;
    archive.unwrap()
}

/// A row from JSON fields (base64 strings or null; headers a list of `{key, value}` or
/// `[key, value]`, values in base64).
fn row(
    partition: &Value,
    offset: &Value,
    timestamp: &Value,
    key: &Value,
    value: &Value,
    headers: &Value,
) -> Row {
    let text = |v: &Value| v.as_str().map(str::to_string);
    (
        partition.as_u64().unwrap() as u32,
        offset.as_i64().unwrap(),
        timestamp.as_i64().unwrap(),
        text(key),
        text(value),
        headers
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let (k, v) = match h {
                    Value::Array(pair) => (&pair[0], &pair[1]),
                    object => (&object["key"], &object["value"]),
                };
                (
                    k.as_str().unwrap().to_string(),
                    v.as_str().unwrap().to_string(),
                )
            })
            .collect(),
    )
}

/// What `strata consume --from-beginning` returns, as rows.
fn consumed_rows(server: &str, topic: &str) -> Vec<Row> {
    let out = cli_ok(
        server,
        &["consume", topic, "--from-beginning", "--json", "--base64"],
        b"",
    );
    let mut rows: Vec<Row> = out
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            row(
                &v["partition"],
                &v["offset"],
                &v["timestamp"],
                &v["key"],
                &v["value"],
                &v["headers"],
            )
        })
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    rows
}

/// What pyarrow and DuckDB read from a topic's archive folder, and the files' metadata.
struct ArchiveRead {
    pyarrow: Vec<Row>,
    duckdb: Vec<Row>,
    files: Vec<Value>,
}

fn read_archive(setup: &Setup, topic: &str) -> ArchiveRead {
    let dir = archive_dir(setup, topic);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_archive.py");
    let output = Command::new(&setup.env.python)
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("run the archive reader (python)");
    assert!(
        output.status.success(),
        "read_archive.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = |reader: &str| -> Vec<Row> {
        read[reader]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| row(&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]))
            .collect()
    };
    ArchiveRead {
        pyarrow: rows("pyarrow"),
        duckdb: rows("duckdb"),
        files: read["files"].as_array().unwrap().clone(),
    }
}

fn archive_dir(setup: &Setup, topic: &str) -> PathBuf {
    object_path(&setup.env, &setup.bucket, &format!("archive/topic={topic}"))
}

/// The offset ranges of a partition's archive files, from their names, in order.
fn file_ranges(setup: &Setup, topic: &str, partition: u32) -> Vec<ArchiveRange> {
    let dir = archive_dir(setup, topic).join(format!("partition={partition}"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.iter().map(|name| file_range(name)).collect()
}

/// The offsets an archive file's name (`[…/]<first>-<last>.parquet`) says it holds.
fn file_range(name: &str) -> ArchiveRange {
    let file = name.rsplit_once('/').map_or(name, |(_, file)| file);
    let (first, last) = file
        .strip_suffix(".parquet")
        .and_then(|n| n.split_once('-'))
        .unwrap_or_else(|| panic!("unexpected archive file {name}"));
    ArchiveRange {
        first: first.parse().unwrap(),
        last: last.parse().unwrap(),
    }
}

/// A partition's archive files follow each other from `start` to `end` (exclusive),
/// with no gap and no overlap.
fn assert_contiguous(ranges: &[ArchiveRange], start: i64, end: i64) {
    let mut next = start;
    for range in ranges {
        assert_eq!(
            range.first, next,
            "gap or overlap in the archive: {ranges:?}"
        );
        next = range.last + 1;
    }
    assert_eq!(next, end, "the archive does not reach {end}: {ranges:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pyarrow_and_duckdb_read_what_consume_returns() {
    let setup = setup("archive-read", &[]).await;
    let server = setup.agent.server();
    let topic = "archived";
    let partitions = 3u32;
    create_topic(
        &server,
        topic,
        partitions as i32,
        &[("archive.enabled", "true")],
    )
    .await;
    let count = 30_000;
    produce(&server, topic, 0, count / 2).await;
    // Small files and row groups, so a partition spans several of each.
    let _compactor = CompactorProcess::start(
        &setup.kind,
        &[
            "--interval",
            "500ms",
            "--archive-interval",
            "1s",
            "--archive-file-bytes",
            "60000",
            "--archive-row-group-bytes",
            "8000",
        ],
    );
    // More records while the compactor archives.
    produce(&server, topic, count / 2, count / 2).await;
    let archive = wait_until_archived(&server, topic).await;
    let archived: u64 = archive.partitions.iter().map(|p| p.records).sum();
    assert_eq!(archived, count as u64);

    let status = cli_ok(&server, &["archive", "status", topic], b"");
    assert!(status.contains(&format!(" {count} records")), "{status}");
    assert!(status.contains("0 offsets not archived yet"), "{status}");
    assert!(
        status.contains(&format!("archive/topic={topic}/")),
        "{status}"
    );

    let consumed = consumed_rows(&server, topic);
    assert_eq!(consumed.len(), count);
    let read = read_archive(&setup, topic);
    assert_eq!(read.pyarrow.len(), count, "pyarrow row count");
    assert_eq!(read.duckdb.len(), count, "DuckDB row count");
    assert!(
        read.pyarrow == consumed,
        "pyarrow read other rows than consume returned"
    );
    assert!(
        read.duckdb == consumed,
        "DuckDB read other rows than consume returned"
    );

    // The files: contiguous per partition, zstd, statistics and sort order as promised.
    let mut row_groups = 0;
    for p in &archive.partitions {
        let ranges = file_ranges(&setup, topic, p.partition as u32);
        assert!(ranges.len() > 1, "partition {} fits one file", p.partition);
        assert_contiguous(&ranges, 0, p.high_watermark);
    }
    for file in &read.files {
        let name = file["name"].as_str().unwrap();
        let range = file_range(name);
        assert_eq!(file["offset_min"].as_i64(), Some(range.first), "{file}");
        assert_eq!(file["offset_max"].as_i64(), Some(range.last), "{file}");
        assert_eq!(file["codecs"], serde_json::json!(["ZSTD"]), "{file}");
        assert_eq!(file["timestamp_stats"], Value::Bool(true), "{file}");
        assert_eq!(
            file["sorting_columns"],
            serde_json::json!(["offset"]),
            "{file}"
        );
        row_groups += file["row_groups"].as_u64().unwrap();
    }
    assert!(
        row_groups > read.files.len() as u64,
        "files hold several row groups"
    );
    let parquet_bytes: u64 = archive.partitions.iter().map(|p| p.bytes).sum();
    report(&format!(
        "ARCHIVE read: {count} records in {} Parquet files ({row_groups} row groups, {parquet_bytes} bytes); pyarrow and DuckDB rows == strata consume",
        read.files.len()
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_survives_retention_and_a_compactor_killed_mid_file() {
    let setup = setup("archive-retention", &[]).await;
    let server = setup.agent.server();
    let topic = "archived-short";
    create_topic(
        &server,
        topic,
        1,
        &[("archive.enabled", "true"), ("retention.ms", "2000")],
    )
    .await;
    produce(&server, topic, 0, 1_000).await;
    let admin = Admin::connect(&server).await.unwrap();

    // A compactor stopped dead between writing a file and committing it, then killed.
    let mut stuck = CompactorProcess::start(
        &setup.kind,
        &[
            "--interval",
            "500ms",
            "--archive-interval",
            "1s",
            "--failpoint",
            "archive-put",
        ],
    );
    stuck.wait_for_log("failpoint reached", std::time::Duration::from_secs(60));
    let described = admin.describe_archive(topic).await.unwrap();
    let pending = described.partitions[0].pending_file.clone();
    assert!(!pending.is_empty(), "a file is pending: {described:?}");
    assert_eq!(described.partitions[0].archived_to, 0);
    // The records are past retention.ms, but not archived: retention keeps them.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let state = setup.metastore.partition_state(topic, 0).await.unwrap();
    assert_eq!(
        state.log_start_offset, 0,
        "retention dropped unarchived records"
    );
    stuck.kill();

    // More records, then a healthy compactor: it finishes the pending file (same name),
    // archives the rest, and only then lets retention drop them.
    produce(&server, topic, 1_000, 1_000).await;
    let _compactor = CompactorProcess::start(
        &setup.kind,
        &["--interval", "500ms", "--archive-interval", "1s"],
    );
    wait_until_archived(&server, topic).await;
    wait_until("retention dropped the archived records", async || {
        let state = setup.metastore.partition_state(topic, 0).await.unwrap();
        state.log_start_offset == state.high_watermark
    })
    .await;
    check_index(&setup, topic, 0).await;
    let ranges = file_ranges(&setup, topic, 0);
    assert_contiguous(&ranges, 0, 2_000);
    assert!(
        pending.ends_with(&format!(
            "{:020}-{:020}.parquet",
            ranges[0].first, ranges[0].last
        )),
        "the pending file {pending} was finished as it was decided: {ranges:?}"
    );

    // Every record ever acknowledged is in the archive, once, with its contents.
    let read = read_archive(&setup, topic);
    let offsets: Vec<i64> = read.pyarrow.iter().map(|r| r.1).collect();
    assert_eq!(
        offsets,
        (0..2_000).collect::<Vec<i64>>(),
        "each offset once"
    );
    assert!(read.duckdb == read.pyarrow, "DuckDB and pyarrow disagree");
    for (i, row) in read.pyarrow.iter().enumerate() {
        let expected = test_record(i);
        assert_eq!(row.3, expected.key.as_deref().map(b64), "key of offset {i}");
        assert_eq!(
            row.4,
            expected.value.as_deref().map(b64),
            "value of offset {i}"
        );
        let headers: Vec<(String, String)> = expected
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), b64(v)))
            .collect();
        assert_eq!(row.5, headers, "headers of offset {i}");
    }
    // The log itself holds none of them any more.
    assert!(consumed_rows(&server, topic).is_empty());

    // The archive outlives its topic: a new topic of that name cannot archive over it.
    let config = |archive: &str| {
        [("archive.enabled".to_string(), archive.to_string())]
            .into_iter()
            .collect()
    };
    let exists = admin
        .create_topic(topic, 1, config("true"))
        .await
        .unwrap_err();
    assert_eq!(exists.code(), Some(Code::AlreadyExists), "{exists}");
    admin.delete_topic(topic).await.unwrap();
    let refused = admin
        .create_topic(topic, 1, config("true"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::FailedPrecondition), "{refused}");
    assert!(
        refused
            .to_string()
            .contains(&format!("archive/topic={topic}/")),
        "{refused}"
    );
    admin.create_topic(topic, 1, config("false")).await.unwrap();
    report(&format!(
        "ARCHIVE retention + kill -9 at archive-put: 2000 records archived in {} files, each offset once; log start 0 -> 2000 only after archiving",
        ranges.len()
    ));
}
