//! Bad input gets a clear gRPC status and leaves every log intact; none of it stops the
//! agent (etcd + s3s-fs).

use std::time::Duration;

use bytes::Bytes;

use strata_client::proto::admin_client::AdminClient;
use strata_client::proto::log_client::LogClient;
use strata_client::{Admin, Producer, ProducerConfig, ProducerRecord, Transport, proto};
use strata_storage::record::{Compression, Record, encode_batch};
use strata_tests::{AgentKind, AgentProcess, TestEnv, unique_name};
use tonic::Code;

fn start_agent(prefix: &str) -> (AgentProcess, TestEnv, String) {
    let env = TestEnv::from_env();
    let bucket = unique_name(prefix);
    let agent = AgentProcess::start(
        AgentKind::Agent {
            env: env.clone(),
            cluster: unique_name(prefix),
            bucket: bucket.clone(),
        },
        &[],
    );
    (agent, env, bucket)
}

fn create(name: &str, partitions: i32, config: &[(&str, &str)]) -> proto::CreateTopicRequest {
    proto::CreateTopicRequest {
        name: name.to_string(),
        partitions,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn fetch(topic: &str, partition: i32, offset: i64) -> proto::FetchRequest {
    proto::FetchRequest {
        isolation_level: 0,
        topic_id: String::new(),
        topic: topic.to_string(),
        partition,
        offset,
        max_bytes: 0,
        max_wait_ms: 0,
        zone: String::new(),
    }
}

fn produce(topic: &str, partition: Option<i32>, values: Vec<Vec<u8>>) -> proto::ProduceRequest {
    proto::ProduceRequest {
        topic: topic.to_string(),
        topic_id: String::new(),
        partition,
        records: values
            .into_iter()
            .map(|v| proto::Record {
                value: Some(v.into()),
                ..Default::default()
            })
            .collect(),
        acks: proto::Acks::All as i32,
        ..Default::default()
    }
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}

struct Clients {
    admin: AdminClient<Transport>,
    log: LogClient<Transport>,
}

async fn clients(server: &str) -> Clients {
    let channel = strata_client::connect(server).await.unwrap();
    Clients {
        admin: AdminClient::new(channel.transport()),
        log: LogClient::new(channel.transport()).max_encoding_message_size(64 << 20),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_statuses() {
    let (mut agent, _, _) = start_agent("badinput");
    let Clients { mut admin, mut log } = clients(&agent.server()).await;
    admin.create_topic(create("good", 8, &[])).await.unwrap();
    log.produce(produce("good", Some(2), vec![b"a".to_vec(), b"b".to_vec()]))
        .await
        .unwrap();

    // Unknown topic.
    let missing = proto::DescribeTopicRequest {
        name: "missing".into(),
        ..Default::default()
    };
    assert_status(
        admin.describe_topic(missing).await,
        Code::NotFound,
        "missing",
    );
    let missing = proto::DeleteTopicRequest {
        name: "missing".into(),
    };
    assert_status(admin.delete_topic(missing).await, Code::NotFound, "missing");
    assert_status(
        log.produce(produce("missing", None, vec![b"x".to_vec()]))
            .await,
        Code::NotFound,
        "missing",
    );
    assert_status(
        log.fetch(fetch("missing", 0, 0)).await,
        Code::NotFound,
        "missing",
    );

    // Invalid names and partition counts.
    for name in ["", "a/b", "with space", ".", "..", &"x".repeat(250)] {
        assert_status(
            admin.create_topic(create(name, 1, &[])).await,
            Code::InvalidArgument,
            "[a-zA-Z0-9._-]",
        );
    }
    for partitions in [0, -3] {
        assert_status(
            admin.create_topic(create("t", partitions, &[])).await,
            Code::InvalidArgument,
            "at least 1 partition",
        );
    }
    assert_status(
        admin
            .create_topic(create("t", 1, &[("retention.hours", "1")]))
            .await,
        Code::InvalidArgument,
        "unknown topic config 'retention.hours'",
    );

    // Topic that exists.
    assert_status(
        admin.create_topic(create("good", 3, &[])).await,
        Code::AlreadyExists,
        "good",
    );

    // Partition out of range.
    for partition in [8, -1] {
        assert_status(
            log.produce(produce("good", Some(partition), vec![b"x".to_vec()]))
                .await,
            Code::InvalidArgument,
            "partitions 0 to 7",
        );
        assert_status(
            log.fetch(fetch("good", partition, 0)).await,
            Code::InvalidArgument,
            "partitions 0 to 7",
        );
    }

    // Fetch below the log start or above the high watermark: OUT_OF_RANGE with both bounds.
    for offset in [-1, 3] {
        let status = log.fetch(fetch("good", 2, offset)).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(
            status
                .message()
                .contains("0 (log start) to 2 (high watermark)"),
            "{}",
            status.message()
        );
        let bound = |name: &str| {
            status
                .metadata()
                .get(name)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(bound("strata-log-start-offset"), "0");
        assert_eq!(bound("strata-high-watermark"), "2");
    }
    // At the high watermark a fetch is valid and empty.
    let at_end = log.fetch(fetch("good", 2, 2)).await.unwrap().into_inner();
    assert!(at_end.records.is_empty());
    assert_eq!((at_end.high_watermark, at_end.next_offset), (2, 2));

    // Records sent as one encoded batch (`record_batch`, what the SDK sends): a batch
    // that does not check out is INVALID_ARGUMENT and writes nothing.
    let records: Vec<Record> = [b"c", b"d"]
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            offset: i as i64,
            timestamp_ms: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from_static(*v)),
            headers: Vec::new(),
        })
        .collect();
    let batch = encode_batch(&records, Compression::None).unwrap();
    let encoded = |partition: Option<i32>, batch: Bytes| proto::ProduceRequest {
        topic: "good".to_string(),
        partition,
        record_batch: batch,
        acks: proto::Acks::All as i32,
        ..Default::default()
    };
    let mut flipped = batch.to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    let mut two = batch.to_vec();
    two.extend_from_slice(&batch);
    let refused = [
        (encoded(Some(3), flipped.into()), "CRC does not match"),
        (
            encoded(Some(3), batch.slice(..30)),
            "too few for a record batch",
        ),
        (encoded(Some(3), two.into()), "exactly one record batch"),
        (encoded(None, batch.clone()), "names its partition"),
        (
            proto::ProduceRequest {
                records: produce("good", Some(3), vec![b"x".to_vec()]).records,
                ..encoded(Some(3), batch.clone())
            },
            "not both",
        ),
        (
            proto::ProduceRequest {
                producer: Some(proto::ProducerBatch {
                    producer_id: 7,
                    ..Default::default()
                }),
                ..encoded(Some(3), batch.clone())
            },
            "does not agree",
        ),
    ];
    for (request, needle) in refused {
        assert_status(log.produce(request).await, Code::InvalidArgument, needle);
    }
    let written = log
        .produce(encoded(Some(3), batch.clone()))
        .await
        .unwrap()
        .into_inner();
    let offsets: Vec<(i32, i64)> = written
        .positions
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect();
    assert_eq!(offsets, vec![(3, 0), (3, 1)], "one position per record");
    let read = log.fetch(fetch("good", 3, 0)).await.unwrap().into_inner();
    let values: Vec<(&[u8], i64)> = read
        .records
        .iter()
        .map(|r| (r.value.as_deref().unwrap(), r.timestamp_ms))
        .collect();
    assert_eq!(
        values,
        vec![
            (b"c".as_slice(), 1_700_000_000_000),
            (b"d".as_slice(), 1_700_000_000_000)
        ],
        "only the batch that checked out was written, as sent"
    );

    // The log is intact and the agent still serves.
    let read = log.fetch(fetch("good", 2, 0)).await.unwrap().into_inner();
    let values: Vec<&[u8]> = read
        .records
        .iter()
        .map(|r| r.value.as_deref().unwrap())
        .collect();
    assert_eq!(values, vec![b"a".as_slice(), b"b".as_slice()]);
    assert!(agent.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_record_is_refused_and_other_producers_still_land() {
    let (mut agent, _, _) = start_agent("oversize");
    let server = agent.server();
    let Clients { mut admin, mut log } = clients(&server).await;
    admin
        .create_topic(create("small", 2, &[("max.message.bytes", "1000")]))
        .await
        .unwrap();
    admin.create_topic(create("default", 1, &[])).await.unwrap();

    // Another producer keeps writing to the same topic meanwhile.
    let producer = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap();
    let background = tokio::spawn(async move {
        let mut deliveries = Vec::new();
        for i in 0..500 {
            let record = ProducerRecord {
                partition: Some(i % 2),
                ..ProducerRecord::value(format!("ok-{i}"))
            };
            deliveries.push(producer.send("small", record).await.unwrap());
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut positions = Vec::new();
        for d in deliveries {
            positions.push(
                d.await
                    .expect("the other producer's records are acknowledged"),
            );
        }
        positions
    });
    for _ in 0..5 {
        assert_status(
            log.produce(produce(
                "small",
                Some(0),
                vec![b"fine".to_vec(), vec![b'x'; 1001]],
            ))
            .await,
            Code::InvalidArgument,
            "max.message.bytes of 1000",
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The default limit is 1 MiB.
    assert_status(
        log.produce(produce("default", None, vec![vec![b'x'; (1 << 20) + 1]]))
            .await,
        Code::InvalidArgument,
        "max.message.bytes of 1048576",
    );
    log.produce(produce("default", None, vec![vec![b'x'; 1 << 20]]))
        .await
        .unwrap();

    let positions = background.await.unwrap();
    assert_eq!(positions.len(), 500);
    // Every record of the other producer is readable; none of the refused ones is.
    let mut found = 0;
    for partition in 0..2 {
        let mut offset = 0;
        loop {
            let r = log
                .fetch(fetch("small", partition, offset))
                .await
                .unwrap()
                .into_inner();
            for record in &r.records {
                let value = String::from_utf8(record.value.clone().unwrap().to_vec()).unwrap();
                assert!(
                    value.starts_with("ok-"),
                    "refused record {value} was stored"
                );
                found += 1;
            }
            if r.next_offset >= r.high_watermark {
                break;
            }
            offset = r.next_offset;
        }
    }
    assert_eq!(found, 500);
    assert!(agent.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_segment_is_data_loss_not_records() {
    let (mut agent, env, bucket) = start_agent("corrupt");
    let server = agent.server();
    let Clients { mut admin, mut log } = clients(&server).await;
    admin.create_topic(create("fragile", 1, &[])).await.unwrap();
    admin.create_topic(create("sturdy", 1, &[])).await.unwrap();
    let values: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("value-{i}").repeat(20).into_bytes())
        .collect();
    log.produce(produce("fragile", Some(0), values.clone()))
        .await
        .unwrap();
    log.produce(produce("sturdy", Some(0), values.clone()))
        .await
        .unwrap();

    // Find fragile's block through the index (describe -> the object), flip one byte of
    // it on the S3 server's disk, and restart the agent so no cache holds the good bytes.
    agent.kill();
    let segments = env
        .s3_dir
        .join(&bucket)
        .join("segments-test")
        .join("segments");
    let mut files: Vec<std::path::PathBuf> = walk(&segments);
    files.sort();
    assert_eq!(
        files.len(),
        2,
        "two produce requests, two flushes: {files:?}"
    );
    let fragile_object = &files[0];
    let mut bytes = std::fs::read(fragile_object).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(fragile_object, &bytes).unwrap();
    agent.restart();
    let Clients { mut admin, mut log } = clients(&server).await;

    let status = log.fetch(fetch("fragile", 0, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(
        status.message().contains("segments/"),
        "names the object: {}",
        status.message()
    );
    assert!(
        status.message().contains("bytes 0.."),
        "names the range: {}",
        status.message()
    );

    // Other logs are intact and the agent still serves.
    let sturdy = log.fetch(fetch("sturdy", 0, 0)).await.unwrap().into_inner();
    assert_eq!(sturdy.records.len(), 20);
    admin
        .list_topics(proto::ListTopicsRequest {})
        .await
        .unwrap();
    assert!(agent.is_running());
    let admin_sdk = Admin::connect(&server).await.unwrap();
    assert_eq!(
        admin_sdk
            .describe_topic("fragile")
            .await
            .unwrap()
            .partitions[0]
            .high_watermark,
        20
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "seg") {
            files.push(path);
        }
    }
    files
}
