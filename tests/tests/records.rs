//! Records are kept exactly as sent: repeated header keys in order through produce, fetch,
//! `strata consume --json`, merges and log compaction (the Parquet archive: archive.rs);
//! timestamps checked against the topic's `message.timestamp.*` settings; a far-future
//! record on a permissive topic does not stall retention (real etcd + s3s-fs).

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use strata_client::proto::log_client::LogClient;
use strata_client::{Producer, ProducerConfig, ProducerRecord, proto};
use strata_tests::cli_ok;
use strata_tests::compactor::{CompactorProcess, create_topic, index, read_all, setup, wait_until};
use tonic::Code;

/// `k=a`, `k=b`, `k=c`, with another header between.
fn repeated_headers() -> Vec<(String, Bytes)> {
    [("k", "a"), ("other", "x"), ("k", "b"), ("k", "c")]
        .iter()
        .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
        .collect()
}

/// The headers of every record `strata consume --json` prints, in order.
fn cli_headers(server: &str, topic: &str) -> Vec<Vec<(String, String)>> {
    cli_ok(
        server,
        &["consume", topic, "--from-beginning", "--json"],
        b"",
    )
    .lines()
    .map(|line| {
        let v: Value = serde_json::from_str(line).unwrap();
        v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["key"].as_str().unwrap().to_string(),
                    h["value"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    })
    .collect()
}

fn as_text(headers: &[(String, Bytes)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_header_keys_survive_every_path() {
    let setup = setup("headers", &["--linger-ms", "0"]).await;
    let server = setup.agent.server();
    create_topic(&server, "plain", 1, &[]).await;
    create_topic(
        &server,
        "keyed",
        1,
        &[("cleanup.policy", "compact"), ("compression.type", "zstd")],
    )
    .await;
    let producer = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap();
    // One record per flush: several index entries for the compactor to merge.
    for i in 0..6usize {
        let mut record = ProducerRecord::value(format!("v{i}"));
        if i.is_multiple_of(2) {
            record.headers = repeated_headers();
        }
        producer.send_and_wait("plain", record).await.unwrap();
        let mut keyed = ProducerRecord::keyed(format!("key-{}", i % 2), format!("v{i}"));
        keyed.headers = repeated_headers();
        producer.send_and_wait("keyed", keyed).await.unwrap();
    }
    let expected = |i: usize| {
        if i.is_multiple_of(2) {
            as_text(&repeated_headers())
        } else {
            Vec::new()
        }
    };
    let check_plain = async |when: &str| {
        let records = read_all(&server, "plain").await;
        assert_eq!(records.len(), 6, "{when}");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(as_text(&r.headers), expected(i), "SDK, record {i}, {when}");
        }
        let printed = cli_headers(&server, "plain");
        assert_eq!(printed.len(), 6, "{when}");
        for (i, headers) in printed.iter().enumerate() {
            assert_eq!(headers, &expected(i), "consume --json, record {i}, {when}");
        }
    };
    check_plain("as produced").await;
    assert!(index(&setup.metastore, "plain", 0).await.len() >= 6);

    let compactor = CompactorProcess::start(
        &setup.kind,
        &["--interval", "300ms", "--merge-min-age", "0s"],
    );
    wait_until("the compactor merged 'plain' into one entry", async || {
        index(&setup.metastore, "plain", 0).await.len() == 1
    })
    .await;
    check_plain("after a merge").await;
    wait_until("log compaction kept one record per key", async || {
        read_all(&server, "keyed").await.len() == 2
    })
    .await;
    for r in read_all(&server, "keyed").await {
        assert_eq!(
            as_text(&r.headers),
            as_text(&repeated_headers()),
            "after compaction"
        );
    }
    for headers in cli_headers(&server, "keyed") {
        assert_eq!(headers, as_text(&repeated_headers()), "after compaction");
    }
    drop(compactor);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn timestamped(topic: &str, timestamp_ms: i64) -> proto::ProduceRequest {
    proto::ProduceRequest {
        topic: topic.to_string(),
        topic_id: String::new(),
        partition: Some(0),
        records: vec![proto::Record {
            value: Some(Bytes::from_static(b"v")),
            timestamp_ms,
            ..Default::default()
        }],
        acks: proto::Acks::All as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamps_follow_the_topic_settings_and_never_stall_retention() {
    let setup = setup("timestamps", &[]).await;
    let server = setup.agent.server();
    let channel = strata_client::connect(&server).await.unwrap();
    let mut log = LogClient::new(channel.transport());
    let ten_years = 10 * 365 * 86_400_000_i64;

    // CreateTime (the default): ten years ahead is refused, naming the setting.
    create_topic(&server, "create-time", 1, &[]).await;
    let status = log
        .produce(timestamped("create-time", now_ms() + ten_years))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("message.timestamp.after.max.ms"),
        "{status:?}"
    );
    let sent = now_ms() - 60_000;
    log.produce(timestamped("create-time", sent)).await.unwrap();
    let records = read_all(&server, "create-time").await;
    assert_eq!(records.len(), 1, "only the valid record was written");
    assert_eq!(records[0].timestamp_ms, sent);

    // LogAppendTime: any timestamp is accepted and replaced by the agent's.
    create_topic(
        &server,
        "append-time",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let before = now_ms();
    for ts in [1, now_ms() + ten_years] {
        log.produce(timestamped("append-time", ts)).await.unwrap();
    }
    let after = now_ms();
    for r in read_all(&server, "append-time").await {
        assert!(
            (before..=after).contains(&r.timestamp_ms),
            "{} not the agent's time ({before}..={after})",
            r.timestamp_ms
        );
    }

    // A permissive topic accepts a far-future record; retention still drops it (it ages
    // from when it was appended), so it cannot hold the log forever.
    create_topic(
        &server,
        "permissive",
        1,
        &[
            ("message.timestamp.after.max.ms", "9223372036854775807"),
            ("retention.ms", "1000"),
        ],
    )
    .await;
    log.produce(timestamped("permissive", now_ms() + ten_years))
        .await
        .unwrap();
    log.produce(timestamped("permissive", 0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let compactor = CompactorProcess::start(&setup.kind, &["--interval", "300ms"]);
    wait_until("retention dropped the far-future record", async || {
        setup
            .metastore
            .partition_state("permissive", 0)
            .await
            .unwrap()
            .log_start_offset
            == 2
    })
    .await;
    drop(compactor);
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_by_time_equal_a_brute_force_scan() {
    use strata_client::proto::list_offsets_request::Spec;
    use strata_client::{Admin, Producer, ProducerConfig, ProducerRecord};

    let setup = setup("bytime", &[]).await;
    let server = setup.agent.server();
    create_topic(&server, "times", 2, &[]).await;
    // 100,000 records with random timestamps over 50 s (many ties, gaps) a day ago.
    let base = now_ms() - 86_400_000;
    let producer = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap();
    let mut deliveries = Vec::with_capacity(100_000);
    let mut timestamps = Vec::with_capacity(100_000);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..100_000u32 {
        // xorshift: reproducible pseudo-random timestamps.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let timestamp = base + (state % 50_000) as i64;
        let mut record = ProducerRecord::value(format!("{i}"));
        record.partition = Some(i % 2);
        record.timestamp_ms = timestamp;
        deliveries.push(producer.send("times", record).await.unwrap());
        timestamps.push(timestamp);
    }
    // Per partition, (offset, timestamp) in offset order.
    let mut logs: [Vec<(i64, i64)>; 2] = [Vec::new(), Vec::new()];
    for (delivery, timestamp) in deliveries.into_iter().zip(timestamps) {
        let position = delivery.await.unwrap();
        logs[position.partition as usize].push((position.offset, timestamp));
    }
    for log in &mut logs {
        log.sort_unstable();
    }
    let brute = |partition: usize, at: i64| -> i64 {
        logs[partition]
            .iter()
            .find(|(_, t)| *t >= at)
            .map_or(-1, |(o, _)| *o)
    };
    let admin = Admin::connect(&server).await.unwrap();
    let mut probes = vec![
        base - 1_000,
        base,
        base + 49_999,
        base + 50_000,
        base + 1_000_000,
    ];
    probes.extend((0..200).map(|i| base + i * 250 + (i % 7)));
    for at in &probes {
        let answers = admin
            .list_offsets("times", Vec::new(), Spec::TimestampMs(*at))
            .await
            .unwrap();
        for answer in answers {
            let p = answer.partition as usize;
            assert_eq!(answer.offset, brute(p, *at), "partition {p} at {at}");
        }
    }
    // A partition the topic does not have: NOT_FOUND, naming the ones it has.
    let missing = admin
        .list_offsets("times", vec![99], Spec::Latest(true))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
    assert!(missing.to_string().contains("partitions 0 to"), "{missing}");
    for answer in admin
        .list_offsets("times", Vec::new(), Spec::MaxTimestamp(true))
        .await
        .unwrap()
    {
        let log = &logs[answer.partition as usize];
        let max = log.iter().map(|(_, t)| *t).max().unwrap();
        let first = log.iter().find(|(_, t)| *t == max).unwrap().0;
        assert_eq!((answer.offset, answer.timestamp_ms), (first, max));
    }
    // strata consume --from-timestamp starts where the brute force says.
    let at = base + 25_000;
    let out = cli_ok(
        &server,
        &[
            "consume",
            "times",
            "--partition",
            "1",
            "--from-timestamp",
            &at.to_string(),
            "--max-messages",
            "1",
            "--format",
            "%o",
        ],
        b"",
    );
    assert_eq!(out.trim(), brute(1, at).to_string());
    let offsets = cli_ok(
        &server,
        &["topic", "offsets", "times", "--at", &at.to_string()],
        b"",
    );
    let row: Vec<&str> = offsets.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!(row[3], brute(0, at).to_string(), "{offsets}");
}
