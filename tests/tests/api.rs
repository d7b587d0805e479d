//! The gRPC API beyond produce and fetch, on `strata agent` with etcd + s3s-fs: health and
//! reflection, Metadata, Subscribe following the tail, compression and record fields
//! round-tripping, and the CLI's consume options.

use std::time::Duration;

use bytes::Bytes;
use strata_client::proto::log_client::LogClient;
use strata_client::{
    Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartOffset, proto,
};
use strata_tests::{AgentKind, AgentProcess, TestEnv, cli, cli_ok, unique_name};

fn start_agent(prefix: &str) -> AgentProcess {
    AgentProcess::start(
        AgentKind::Agent {
            env: TestEnv::from_env(),
            cluster: unique_name(prefix),
            bucket: unique_name(prefix),
        },
        &[],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reflection_and_metadata() {
    let agent = start_agent("api-meta");
    let channel = strata_client::connect(&agent.server()).await.unwrap();

    use tonic_health::pb::health_check_response::ServingStatus;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.transport());
    for service in ["", "strata.v1.Log", "strata.v1.Admin", "strata.v1.Cluster"] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service}");
    }

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel.transport())
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("reflection did not list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["strata.v1.Admin", "strata.v1.Log", "strata.v1.Cluster"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let admin = Admin::new(channel.clone());
    admin
        .create_topic("meta", 3, Default::default())
        .await
        .unwrap();
    let producer = Producer::new(channel, ProducerConfig::default());
    let position = producer
        .send_and_wait(
            "meta",
            ProducerRecord {
                partition: Some(1),
                ..ProducerRecord::value("x")
            },
        )
        .await
        .unwrap();
    assert_eq!((position.partition, position.offset), (1, 0));
    let metadata = admin.metadata(vec!["meta".into()]).await.unwrap();
    let me = format!("agent-{}", agent.server().rsplit(':').next().unwrap());
    assert!(
        metadata
            .agents
            .iter()
            .any(|a| a.agent_id == me && agent.server().ends_with(&a.address)),
        "{:?}",
        metadata.agents
    );
    let partitions = &metadata.topics[0].partitions;
    assert_eq!(partitions.len(), 3);
    assert_eq!(partitions[1].owner_agent_id, me);
    // Offsets and epochs are DescribeTopic's.
    assert_eq!(partitions[1].high_watermark, -1);
    let described = admin.describe_topic("meta").await.unwrap();
    assert_eq!(described.partitions[1].high_watermark, 1);
    assert!(described.partitions[1].owner_epoch >= 1);

    // Prometheus metrics on the HTTP port.
    let mut consumer = Consumer::connect(&agent.server(), ConsumerConfig::default())
        .await
        .unwrap();
    consumer
        .assign("meta", &[1], StartOffset::Earliest)
        .await
        .unwrap();
    assert_eq!(
        consumer.poll(Duration::from_secs(1)).await.unwrap().len(),
        1
    );
    let metrics = strata_tests::http_get(&agent.metrics_url());
    for expected in [
        "strata_produce_requests_total 1",
        "strata_produce_records_total 1",
        "strata_produce_latency_seconds_bucket",
        "strata_fetch_requests_total 1",
        "strata_fetch_latency_seconds_bucket",
        "strata_fetch_bytes_total 1",
        "strata_flushes_total 1",
        "strata_flush_bytes_bucket",
        "strata_flush_interval_seconds_bucket",
        "strata_object_store_puts_total 1",
        "strata_object_store_put_latency_seconds_bucket",
        "strata_object_store_gets_total 0",
        "strata_object_store_get_latency_seconds_bucket",
        "strata_cache_lookups_total{result=\"memory\"} 1",
        "strata_metastore_transactions_total 1",
        "strata_metastore_commit_latency_seconds_bucket",
        "strata_partition_high_watermark{partition=\"1\",topic=\"meta\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "/metrics lacks {expected:?}:\n{metrics}"
        );
    }
}

/// A plain HTTP/1.0 GET; returns the body.
#[tokio::test(flavor = "multi_thread")]
async fn subscribe_follows_the_tail() {
    let agent = start_agent("api-subscribe");
    let channel = strata_client::connect(&agent.server()).await.unwrap();
    Admin::new(channel.clone())
        .create_topic("tail", 1, Default::default())
        .await
        .unwrap();
    let producer = Producer::new(channel.clone(), ProducerConfig::default());
    for i in 0..3 {
        producer
            .send_and_wait("tail", ProducerRecord::value(format!("old-{i}")))
            .await
            .unwrap();
    }
    let mut stream = LogClient::new(channel.transport())
        .subscribe(proto::SubscribeRequest {
            isolation_level: 0,
            topic_id: String::new(),
            topic: "tail".into(),
            partition: 0,
            offset: 1,
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..2 {
            producer
                .send_and_wait("tail", ProducerRecord::value(format!("new-{i}")))
                .await
                .unwrap();
        }
    });
    while seen.len() < 4 {
        let batch = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("subscribe delivers new records")
            .unwrap()
            .unwrap();
        for r in batch.records {
            seen.push((
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    writer.await.unwrap();
    let expected: Vec<(i64, String)> = vec![
        (1, "old-1".into()),
        (2, "old-2".into()),
        (3, "new-0".into()),
        (4, "new-1".into()),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_round_trip_with_every_compression() {
    let agent = start_agent("api-compression");
    let channel = strata_client::connect(&agent.server()).await.unwrap();
    let admin = Admin::new(channel.clone());
    let producer = Producer::new(channel.clone(), ProducerConfig::default());
    for codec in ["none", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        admin
            .create_topic(
                &topic,
                1,
                [("compression.type".to_string(), codec.to_string())].into(),
            )
            .await
            .unwrap();
        let records = vec![
            ProducerRecord {
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from("v".repeat(1000))),
                headers: vec![
                    ("trace".into(), Bytes::from_static(b"abc")),
                    ("n".into(), Bytes::new()),
                ],
                partition: None,
                timestamp_ms: 1_700_000_000_123,
            },
            // A tombstone: key without value.
            ProducerRecord {
                key: Some(Bytes::from_static(b"k1")),
                ..Default::default()
            },
            // Neither key nor value.
            ProducerRecord::default(),
        ];
        let mut deliveries = Vec::new();
        for r in records.clone() {
            deliveries.push(producer.send(&topic, r).await.unwrap());
        }
        for d in deliveries {
            d.await.unwrap();
        }
        let mut consumer = Consumer::new(channel.clone(), ConsumerConfig::default());
        consumer
            .assign(&topic, &[], StartOffset::Earliest)
            .await
            .unwrap();
        let read = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(read.len(), 3, "{codec}");
        for (i, (sent, got)) in records.iter().zip(&read).enumerate() {
            assert_eq!(got.offset, i as i64);
            assert_eq!(
                (&got.key, &got.value, &got.headers),
                (&sent.key, &sent.value, &sent.headers),
                "{codec}"
            );
        }
        assert_eq!(read[0].timestamp_ms, 1_700_000_000_123);
        assert!(
            read[1].timestamp_ms > 1_700_000_000_123,
            "timestamp 0 means the agent's now"
        );
    }
}

#[test]
fn consume_options_of_the_cli() {
    let agent = start_agent("api-cli");
    let server = agent.server();
    cli_ok(
        &server,
        &[
            "topic",
            "create",
            "cli",
            "--partitions",
            "2",
            "--config",
            "compression.type=lz4",
        ],
        b"",
    );
    let listed = cli_ok(&server, &["topic", "list"], b"");
    assert!(listed.contains("cli\t2 partitions"), "{listed}");
    cli_ok(
        &server,
        &[
            "produce",
            "cli",
            "--partition",
            "1",
            "--header",
            "app=test",
            "--key-separator",
            "=",
        ],
        "a=1\nb=2\nc=\u{e9}\n".as_bytes(),
    );
    let formatted = cli_ok(
        &server,
        &[
            "consume",
            "cli",
            "--from-beginning",
            "--format",
            "%t|%p|%o|%k|%v|%h",
        ],
        b"",
    );
    assert_eq!(
        formatted,
        "cli|1|0|a|1|app=test\ncli|1|1|b|2|app=test\ncli|1|2|c|\u{e9}|app=test\n"
    );

    let json = cli_ok(
        &server,
        &[
            "consume",
            "cli",
            "--partition",
            "1",
            "--offset",
            "2",
            "--json",
            "--base64",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["offset"], 2);
    assert_eq!(v["key"], "Yw==");
    assert_eq!(v["value"], "w6k=");
    assert_eq!(v["headers"][0]["key"], "app");
    assert_eq!(v["headers"][0]["value"], "dGVzdA==");

    let limited = cli_ok(
        &server,
        &["consume", "cli", "--from-beginning", "--max-messages", "2"],
        b"",
    );
    assert_eq!(limited, "1\n2\n");

    // --follow waits for new records; --max-messages ends it.
    let follower = {
        let server = server.clone();
        std::thread::spawn(move || {
            cli_ok(
                &server,
                &[
                    "consume",
                    "cli",
                    "--partition",
                    "0",
                    "--follow",
                    "--max-messages",
                    "2",
                ],
                b"",
            )
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    cli_ok(&server, &["produce", "cli", "--partition", "0"], b"x\ny\n");
    assert_eq!(follower.join().unwrap(), "x\ny\n");

    // A failing command says why and exits non-zero.
    let missing = cli(&server, &["produce", "missing"], b"x\n");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[test]
fn agent_refuses_to_start_on_a_missing_bucket_with_a_clear_error() {
    let env = TestEnv::from_env();
    let port = strata_tests::free_port().to_string();
    let output = env
        .agent_command(
            &unique_name("absent"),
            &format!("s3://{}/x", unique_name("absent")),
        )
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not reachable") && stderr.contains("--create-bucket"),
        "{stderr}"
    );

    let output = std::process::Command::new(strata_tests::strata_bin())
        .args([
            "agent",
            "--metastore",
            "etcd://127.0.0.1:1",
            "--object-store",
            "memory://",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("etcd connect"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_batches_keep_send_order_within_a_partition() {
    let agent = start_agent("api-order");
    let channel = strata_client::connect(&agent.server()).await.unwrap();
    Admin::new(channel.clone())
        .create_topic("order", 2, Default::default())
        .await
        .unwrap();
    // Tiny batches and many in flight: hundreds of requests per partition overlap.
    let producer = Producer::new(
        channel.clone(),
        ProducerConfig {
            batch_max_bytes: 200,
            max_in_flight_per_partition: 8,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..5_000u32 {
        let record = ProducerRecord {
            partition: Some(i % 2),
            ..ProducerRecord::value(format!("{i:05}"))
        };
        deliveries.push(producer.send("order", record).await.unwrap());
    }
    let mut acked = Vec::new();
    for d in deliveries {
        acked.push(d.await.unwrap());
    }
    for partition in 0..2u32 {
        let mut consumer = Consumer::new(channel.clone(), ConsumerConfig::default());
        consumer
            .assign("order", &[partition], StartOffset::Earliest)
            .await
            .unwrap();
        let mut values = Vec::new();
        while values.len() < 2_500 {
            for r in consumer.poll(Duration::from_secs(5)).await.unwrap() {
                values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        let expected: Vec<String> = (0..5_000u32)
            .filter(|i| i % 2 == partition)
            .map(|i| format!("{i:05}"))
            .collect();
        assert_eq!(
            values, expected,
            "partition {partition} is not in send order"
        );
    }
    // Acknowledged offsets are the send order too.
    for (i, position) in acked.iter().enumerate() {
        assert_eq!(
            (position.partition, position.offset),
            ((i % 2) as u32, (i / 2) as i64)
        );
    }
}
