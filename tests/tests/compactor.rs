//! The compactor as its own process, against real etcd + s3s-fs and a real agent:
//! retention, log compaction, merges, kill -9 mid-job, two compactors at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_client::{
    Code, Consumer, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord,
    StartOffset,
};
use strata_tests::compactor::{
    CompactorProcess, check_index, create_topic, index, object_path, read_all, setup, stored_bytes,
    wait_until,
};
use strata_tests::report;

/// A compactor that passes every 500 ms, merges at once, and whose claims outlive it by
/// 2 s (the kill test starts two in a row).
const FAST: [&str; 6] = [
    "--interval",
    "500ms",
    "--merge-min-age",
    "0s",
    "--claim-ttl",
    "2s",
];

/// Every `(offset, value)` of a one-partition topic of plain values.
async fn read_values(server: &str, topic: &str) -> Vec<(i64, String)> {
    read_all(server, topic)
        .await
        .iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned(),
            )
        })
        .collect()
}

/// Sends `count` records one at a time, each acknowledged before the next: with a zero
/// linger, each is its own flush (its own index entry).
async fn produce_one_by_one(server: &str, topic: &str, count: usize) -> Vec<(i64, String)> {
    let producer = Producer::connect(server, ProducerConfig::default())
        .await
        .unwrap();
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let value = format!("record-{i}");
        let mut record = ProducerRecord::value(value.clone());
        record.partition = Some(0);
        let position = producer.send_and_wait(topic, record).await.unwrap();
        sent.push((position.offset, value));
    }
    sent
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_old_segments_and_moves_the_log_start() {
    let setup = setup("retention", &[]).await;
    let server = setup.agent.server();
    let topic = "short-lived";
    create_topic(&server, topic, 1, &[("retention.ms", "4000")]).await;
    let old = produce_one_by_one(&server, topic, 20).await;
    let old_entries = index(&setup.metastore, topic, 0).await;
    // A consumer from the beginning, positioned before retention runs.
    let mut early = Consumer::connect(&server, ConsumerConfig::default())
        .await
        .unwrap();
    early
        .assign(topic, &[0], StartOffset::Offset(0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let new = produce_one_by_one(&server, topic, 20).await;
    let new_start = new[0].0;
    let _compactor = CompactorProcess::start(
        &setup.kind,
        &[
            "--interval",
            "500ms",
            "--orphan-min-age",
            "3s",
            "--gc-grace",
            "0s",
        ],
    );
    wait_until("the log start moved", async || {
        setup
            .metastore
            .partition_state(topic, 0)
            .await
            .unwrap()
            .log_start_offset
            > 0
    })
    .await;
    let state = setup.metastore.partition_state(topic, 0).await.unwrap();
    // Exactly the old records went: none newer than retention.ms.
    assert_eq!(state.log_start_offset, new_start);
    check_index(&setup, topic, 0).await;
    wait_until("the old segments left the store", async || {
        old_entries
            .iter()
            .all(|e| !object_path(&setup.env, &setup.bucket, &e.object).exists())
    })
    .await;
    // A fetch below the log start says where it is now.
    let status = strata_client::proto::log_client::LogClient::connect(server.clone())
        .await
        .unwrap()
        .fetch(strata_client::proto::FetchRequest {
            isolation_level: 0,
            topic_id: String::new(),
            topic: topic.to_string(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            zone: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("{new_start} (log start)")),
        "{status:?}"
    );
    // The consumer positioned at 0 resumes from the new start and reads every new record.
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while read.len() < new.len() {
        read.extend(early.poll(Duration::from_millis(200)).await.unwrap());
        assert!(
            Instant::now() < deadline,
            "the early consumer did not resume"
        );
    }
    let got: Vec<(i64, String)> = read
        .iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned(),
            )
        })
        .collect();
    assert_eq!(got, new);
    report(&format!(
        "COMPACTOR retention: {} old records in {} entries dropped, log start 0 -> {new_start}, {} newer records kept",
        old.len(),
        old_entries.len(),
        new.len()
    ));
}

/// The value last written for each key, and its offset; `None` for a tombstone.
type Latest = BTreeMap<String, (i64, Option<String>)>;

/// The newest record of each key among `records` (in offset order).
fn newest_by_key(records: &[ConsumerRecord]) -> Latest {
    records
        .iter()
        .map(|r| {
            let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
            let value = r
                .value
                .as_ref()
                .map(|v| String::from_utf8(v.to_vec()).unwrap());
            (key, (r.offset, value))
        })
        .collect()
}

/// Produces `records` updates over `keys` keys (values carry the round), then tombstones
/// for the first `deleted` keys; returns the newest write of every key.
async fn produce_updates(
    server: &str,
    topic: &str,
    records: usize,
    keys: usize,
    deleted: usize,
) -> (Latest, usize) {
    let producer = Producer::connect(server, ProducerConfig::default())
        .await
        .unwrap();
    let mut latest = Latest::new();
    let mut pending = Vec::new();
    let send = async |key: String, value: Option<String>| {
        let record = ProducerRecord {
            key: Some(Bytes::from(key.clone())),
            value: value.clone().map(Bytes::from),
            ..ProducerRecord::value("")
        };
        let delivery = producer.send(topic, record).await.unwrap();
        (key, value, delivery)
    };
    for i in 0..records {
        let key = format!("key-{:04}", i % keys);
        let value = format!("{key}-round-{}-{}", i / keys, "x".repeat(64));
        pending.push(send(key, Some(value)).await);
    }
    for k in 0..deleted {
        pending.push(send(format!("key-{k:04}"), None).await);
    }
    let total = pending.len();
    for (key, value, delivery) in pending {
        let position = delivery.await.unwrap();
        let newer = latest.get(&key).is_none_or(|(o, _)| *o < position.offset);
        if newer {
            latest.insert(key, (position.offset, value));
        }
    }
    (latest, total)
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_the_newest_record_of_every_key() {
    let setup = setup("compaction", &[]).await;
    let server = setup.agent.server();
    let topic = "table";
    create_topic(
        &server,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "3000"),
        ],
    )
    .await;
    // Keyless records are refused on a compacted topic.
    let keyless = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap()
        .send_and_wait(topic, ProducerRecord::value("no key"))
        .await
        .unwrap_err();
    assert!(keyless.to_string().contains("has no key"), "{keyless}");

    let (latest, produced) = produce_updates(&server, topic, 100_000, 1_000, 100).await;
    let bytes_before = stored_bytes(&setup.env, &setup.bucket);
    let hwm = setup
        .metastore
        .partition_state(topic, 0)
        .await
        .unwrap()
        .high_watermark;
    assert_eq!(hwm as usize, produced);
    let _compactor = CompactorProcess::start(
        &setup.kind,
        &[
            "--interval",
            "500ms",
            "--orphan-min-age",
            "2s",
            "--gc-grace",
            "0s",
            "--merge-min-age",
            "0s",
        ],
    );
    // First the log is compacted with its tombstones kept ...
    wait_until("the partition is compacted", async || {
        setup
            .metastore
            .clean_state(topic, 0)
            .await
            .unwrap()
            .cleaned_to
            == hwm
    })
    .await;
    check_index(&setup, topic, 0).await;
    // ... then, past delete.retention.ms, the tombstones go too.
    wait_until("the tombstones are dropped", async || {
        setup
            .metastore
            .clean_state(topic, 0)
            .await
            .unwrap()
            .oldest_tombstone_ms
            .is_none()
    })
    .await;
    check_index(&setup, topic, 0).await;
    // Agents re-read a partition's index within 10 s of a compactor's change to it.
    let mut records = Vec::new();
    let mut read: Latest = Latest::new();
    wait_until("readers see the compacted log", async || {
        records = read_all(&server, topic).await;
        read = newest_by_key(&records);
        read.len() == records.len() && read.values().all(|(_, v)| v.is_some())
    })
    .await;
    let live: Latest = latest
        .iter()
        .filter(|(_, (_, v))| v.is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(live.len(), 900);
    assert_eq!(
        read, live,
        "after compaction: the newest value of every live key, at its offset"
    );
    wait_until("the replaced segments left the store", async || {
        stored_bytes(&setup.env, &setup.bucket) < bytes_before / 10
    })
    .await;
    let bytes_after = stored_bytes(&setup.env, &setup.bucket);
    report(&format!(
        "COMPACTOR compaction: {produced} records over 1000 keys (100 deleted) -> {} records; store {bytes_before} -> {bytes_after} bytes; index entries {}",
        records.len(),
        index(&setup.metastore, topic, 0).await.len()
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_flushes_merge_into_a_few_entries() {
    let setup = setup("merge", &["--linger-ms", "0"]).await;
    let server = setup.agent.server();
    let topic = "many-flushes";
    create_topic(&server, topic, 1, &[]).await;
    let started = Instant::now();
    let sent = produce_one_by_one(&server, topic, 10_000).await;
    let before = index(&setup.metastore, topic, 0).await.len();
    let produce_secs = started.elapsed().as_secs_f64();
    let compactor = CompactorProcess::start(
        &setup.kind,
        &[
            "--interval",
            "500ms",
            "--merge-min-age",
            "0s",
            "--orphan-min-age",
            "2s",
            "--gc-grace",
            "0s",
        ],
    );
    let merging = Instant::now();
    while index(&setup.metastore, topic, 0).await.len() > 10 {
        assert!(
            merging.elapsed() < Duration::from_secs(180),
            "the index was not merged in 180 s:\n{}",
            compactor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let merge_secs = merging.elapsed().as_secs_f64();
    let after = check_index(&setup, topic, 0).await;
    let got = read_values(&server, topic).await;
    assert_eq!(got, sent, "every record, once, in order, after the merge");
    assert!(
        before >= 9_000,
        "the records were not flushed one by one: {before} entries"
    );
    report(&format!(
        "COMPACTOR merge: {} flushes ({before} index entries, produced in {produce_secs:.0} s) -> {after} index entries after merging ({merge_secs:.0} s, debug build)",
        sent.len()
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compactor_killed_mid_job_loses_and_duplicates_nothing() {
    let setup = setup("kill-compactor", &["--linger-ms", "0"]).await;
    let server = setup.agent.server();
    for failpoint in ["merge-put", "merge-swap", "compact-put", "compact-swap"] {
        // Fresh topics each time, so the compactor has work to be killed in.
        let (log, table) = (format!("log-{failpoint}"), format!("table-{failpoint}"));
        create_topic(&server, &log, 1, &[]).await;
        create_topic(&server, &table, 1, &[("cleanup.policy", "compact")]).await;
        let sent = produce_one_by_one(&server, &log, 300).await;
        let (latest, _) = produce_updates(&server, &table, 2_000, 50, 0).await;
        let mut compactor = CompactorProcess::start(
            &setup.kind,
            &[&FAST[..], &["--failpoint", failpoint]].concat(),
        );
        compactor.wait_for_log("failpoint reached", Duration::from_secs(60));
        compactor.kill();
        // Nothing lost, nothing duplicated, no entry naming a missing object — right
        // after the kill, and after another compactor finishes the work.
        for round in ["killed", "restarted"] {
            check_index(&setup, &log, 0).await;
            check_index(&setup, &table, 0).await;
            let got = read_values(&server, &log).await;
            assert_eq!(got, sent, "log after a kill at {failpoint} ({round})");
            // A key may still appear more than once before compaction; the newest wins.
            let read = newest_by_key(&read_all(&server, &table).await);
            assert_eq!(read, latest, "table after a kill at {failpoint} ({round})");
            if round == "killed" {
                // The claim of the killed compactor expires with its lease; then another
                // compactor finishes the work.
                let again = CompactorProcess::start(&setup.kind, &FAST);
                again.wait_for_log("compaction pass done", Duration::from_secs(60));
                drop(again);
            }
        }
        report(&format!(
            "COMPACTOR kill -9 at {failpoint}: 0 lost, 0 duplicated, every index entry names an existing object"
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_compactors_never_work_on_one_partition() {
    let setup = setup("two-compactors", &["--linger-ms", "0"]).await;
    let server = setup.agent.server();
    let topic = "shared";
    create_topic(&server, topic, 8, &[]).await;
    let producer = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap();
    let args = ["--interval", "100ms", "--merge-min-age", "0s"];
    let first = CompactorProcess::start(&setup.kind, &args);
    let second = CompactorProcess::start(&setup.kind, &args);
    let until = Instant::now() + Duration::from_secs(8);
    let mut i = 0u64;
    while Instant::now() < until {
        let mut record = ProducerRecord::value(format!("v{i}"));
        record.partition = Some((i % 8) as u32);
        producer.send_and_wait(topic, record).await.unwrap();
        i += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a, b) = (first.jobs(), second.jobs());
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both compactors ran jobs: {} and {}",
        a.len(),
        b.len()
    );
    let mut shared = 0;
    for (job, start, end) in &a {
        for (other, other_start, other_end) in &b {
            if job == other {
                shared += 1;
                assert!(
                    end <= other_start || other_end <= start,
                    "both compactors worked on {job} at once: {start}..{end} and {other_start}..{other_end}"
                );
            }
        }
    }
    assert!(shared > 0, "the compactors never took turns on a partition");
    report(&format!(
        "COMPACTOR two compactors: {} and {} jobs over {i} produced records, {shared} pairs of jobs on the same partition, none overlapping",
        a.len(),
        b.len()
    ));
}

/// The value of the sample `series` (name and labels, exactly as exported) in a scrape.
fn sample(scrape: &str, series: &str) -> f64 {
    try_sample(scrape, series).unwrap_or_else(|| panic!("{series} not in the scrape:\n{scrape}"))
}

/// [`sample`], `None` if the series is not exported (yet).
fn try_sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Item 8's acceptance: the compactor's `/metrics` is scraped while it works, and its
/// counters move with that work: passes, merge and archive jobs, bytes read and written,
/// objects written, the archive lag of an archived topic falling to zero; `/health` says
/// SERVING.
#[tokio::test(flavor = "multi_thread")]
async fn the_compactors_metrics_move_with_its_work() {
    use strata_tests::http_get;

    let setup = setup("compactor-metrics", &["--linger-ms", "0"]).await;
    let server = setup.agent.server();
    create_topic(&server, "m", 1, &[]).await;
    create_topic(&server, "archived", 1, &[("archive.enabled", "true")]).await;
    produce_one_by_one(&server, "m", 200).await;
    produce_one_by_one(&server, "archived", 50).await;
    let mut args = FAST.to_vec();
    args.extend(["--archive-interval", "0s"]);
    let compactor = CompactorProcess::start(&setup.kind, &args);
    let before = http_get(&compactor.url("/metrics"));
    // Jobs run one at a time: at most one claim held.
    assert!(sample(&before, "strata_compactor_claims_held") <= 1.0);
    wait_until("the compactor merged and archived", async || {
        let scrape = http_get(&compactor.url("/metrics"));
        sample(
            &scrape,
            "strata_compactor_jobs_total{kind=\"merge\",outcome=\"done\"}",
        ) >= 1.0
            && sample(
                &scrape,
                "strata_compactor_jobs_total{kind=\"archive\",outcome=\"done\"}",
            ) >= 1.0
            && try_sample(
                &scrape,
                "strata_compactor_archive_lag_records{topic=\"archived\"}",
            ) == Some(0.0)
    })
    .await;
    let after = http_get(&compactor.url("/metrics"));
    for counter in [
        "strata_compactor_passes_total",
        "strata_compactor_read_bytes_total",
        "strata_compactor_written_bytes_total",
        "strata_compactor_objects_written_total",
        "strata_compactor_pass_duration_seconds_count",
    ] {
        assert!(
            sample(&after, counter) > 0.0,
            "{counter} did not move:\n{after}"
        );
    }
    assert_eq!(
        sample(
            &after,
            "strata_compactor_jobs_total{kind=\"merge\",outcome=\"failed\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(&after, "strata_compactor_last_error_timestamp_seconds"),
        0.0
    );
    assert!(sample(&after, "strata_compactor_last_pass_timestamp_seconds") > 0.0);
    let health = http_get(&compactor.url("/health"));
    assert!(health.starts_with("SERVING"), "{health}");

    // Index entries and segment footers name the incarnation they were written for, and
    // merges keep it.
    let topic_id = strata_client::Admin::connect(&server)
        .await
        .unwrap()
        .describe_topic("m")
        .await
        .unwrap()
        .topic
        .unwrap()
        .topic_id;
    let entries = index(&setup.metastore, "m", 0).await;
    assert!(entries.len() < 200, "merged: {} entries", entries.len());
    for entry in &entries {
        assert_eq!(entry.topic_id, topic_id, "{entry:?}");
        let object = std::fs::read(object_path(&setup.env, &setup.bucket, &entry.object)).unwrap();
        let footer = strata_storage::segment::read_footer(&entry.object, &object).unwrap();
        assert!(
            footer
                .blocks
                .iter()
                .all(|b| b.topic == "m" && b.topic_id == topic_id),
            "{footer:?}"
        );
    }
    report(&format!(
        "COMPACTOR metrics: passes={} merge_jobs={} archive_jobs={} read_bytes={} \
         written_bytes={} objects_written={} archive_lag=0; /health: {}",
        sample(&after, "strata_compactor_passes_total"),
        sample(
            &after,
            "strata_compactor_jobs_total{kind=\"merge\",outcome=\"done\"}"
        ),
        sample(
            &after,
            "strata_compactor_jobs_total{kind=\"archive\",outcome=\"done\"}"
        ),
        sample(&after, "strata_compactor_read_bytes_total"),
        sample(&after, "strata_compactor_written_bytes_total"),
        sample(&after, "strata_compactor_objects_written_total"),
        health.trim()
    ));
}

/// Transactions and the compactor: the archive holds committed records only and never
/// reaches the last stable offset (an open transaction's first offset); log compaction
/// works below it too, leaves out aborted records and markers, and an aborted record never
/// shadows a committed one of its key.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_and_the_archive_leave_out_aborted_records_and_markers() {
    use strata_client::Isolation;
    let setup = setup("txn-compact", &[]).await;
    let server = setup.agent.server();
    let topic = "ledger";
    create_topic(
        &server,
        topic,
        1,
        &[("cleanup.policy", "compact"), ("archive.enabled", "true")],
    )
    .await;
    let producer = Producer::connect(
        &server,
        ProducerConfig {
            transactional_id: Some("ledger-writer".into()),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    producer.init_transactions().await.unwrap();
    let transaction = async |keys: std::ops::Range<u32>, prefix: &str, commit: bool| {
        producer.begin_transaction().await.unwrap();
        for k in keys {
            producer
                .send_and_wait(
                    topic,
                    ProducerRecord::keyed(format!("k{k}"), format!("{prefix}-{k}")),
                )
                .await
                .unwrap();
        }
        if commit {
            producer.commit_transaction().await.unwrap();
        } else {
            producer.abort_transaction().await.unwrap();
        }
    };
    transaction(0..10, "first", true).await;
    transaction(0..10, "aborted", false).await;
    transaction(0..5, "second", true).await;
    // Left open while the compactor works: its first offset is the last stable offset.
    producer.begin_transaction().await.unwrap();
    for k in 5..10 {
        producer
            .send_and_wait(
                topic,
                ProducerRecord::keyed(format!("k{k}"), format!("open-{k}")),
            )
            .await
            .unwrap();
    }
    let state = setup.metastore.partition_state(topic, 0).await.unwrap();
    // 10 + 1 marker + 10 + 1 marker + 5 + 1 marker, then the open transaction.
    assert_eq!(state.last_stable_offset, 28, "{state:?}");
    assert_eq!(state.high_watermark, 33, "{state:?}");
    let _compactor = CompactorProcess::start(
        &setup.kind,
        &[
            "--interval",
            "500ms",
            "--archive-interval",
            "1s",
            "--merge-min-age",
            "0s",
        ],
    );
    wait_until(
        "archived and compacted up to the last stable offset",
        async || {
            let archive = setup.metastore.archive_state(topic, 0).await.unwrap();
            let clean = setup.metastore.clean_state(topic, 0).await.unwrap();
            archive.archived_to == 28 && clean.cleaned_to == 28
        },
    )
    .await;
    let archive = setup.metastore.archive_state(topic, 0).await.unwrap();
    assert_eq!(archive.records, 15, "committed records only: {archive:?}");
    check_index(&setup, topic, 0).await;
    // Readers re-read the index within 10 s of the compactor's change.
    let mut values = Vec::new();
    wait_until("readers see the compacted log", async || {
        values = read_all(&server, topic)
            .await
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect();
        !values.iter().any(|v| v.starts_with("aborted"))
    })
    .await;
    let mut expected: Vec<String> = (0..5)
        .map(|k| format!("second-{k}"))
        .chain((5..10).map(|k| format!("first-{k}")))
        .chain((5..10).map(|k| format!("open-{k}")))
        .collect();
    expected.sort();
    values.sort();
    assert_eq!(
        values, expected,
        "compacted: newest committed per key, then the open tail"
    );
    // The open transaction is still invisible to read_committed, and once it commits it
    // is visible.
    let read_committed = async || {
        let mut consumer = strata_client::Consumer::connect(
            &server,
            strata_client::ConsumerConfig {
                isolation: Isolation::ReadCommitted,
                ..strata_client::ConsumerConfig::default()
            },
        )
        .await
        .unwrap();
        consumer
            .assign(topic, &[], strata_client::StartOffset::Earliest)
            .await
            .unwrap();
        let mut seen = 0;
        for _ in 0..5 {
            seen += consumer
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .len();
        }
        seen
    };
    assert_eq!(read_committed().await, 10);
    producer.commit_transaction().await.unwrap();
    assert_eq!(read_committed().await, 15);
}
