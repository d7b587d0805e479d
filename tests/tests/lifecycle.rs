//! Topic incarnations: every topic has an id (a UUID, as Kafka's KIP-516), and a topic
//! deleted and created again is a different topic. A write resolved against the old
//! incarnation — an agent's cached definition, an ownership taken before the delete, a
//! request naming the old id — is refused, never applied to the new one (three agents,
//! real etcd + s3s-fs).

use std::time::{Duration, Instant};

use strata_client::proto;
use strata_client::proto::admin_client::AdminClient;
use strata_client::proto::log_client::LogClient;
use strata_tests::compactor::create_topic;
use strata_tests::{AgentProcess, cli, cli_ok, one_record, report};
use tonic::Code;

async fn topic_id(server: &str, topic: &str) -> String {
    let channel = strata_client::connect(server).await.unwrap();
    AdminClient::new(channel.transport())
        .describe_topic(proto::DescribeTopicRequest {
            name: topic.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap()
        .topic_id
}

/// Every `partition value` line `strata consume` prints through `server`, sorted.
fn read_all(server: &str, topic: &str) -> Vec<String> {
    let out = cli_ok(
        server,
        &["consume", topic, "--from-beginning", "--format", "%p %v"],
        b"",
    );
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// [`one_record`] for incarnation `topic_id` of the topic.
fn produce(topic: &str, topic_id: &str, partition: i32, value: &str) -> proto::ProduceRequest {
    proto::ProduceRequest {
        topic_id: topic_id.to_string(),
        ..one_record(topic, partition, value)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_topic_never_takes_a_write_meant_for_the_old_one() {
    let agents = AgentProcess::start_cluster(3, "incarnation", &[]);
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);

    // Topic t, 6 partitions, written and read through C (which caches it and serves
    // some of its partitions).
    create_topic(a, "t", 6, &[]).await;
    for p in 0..6 {
        let value = format!("old-{p}\n");
        cli_ok(
            c,
            &["produce", "t", "--partition", &p.to_string()],
            value.as_bytes(),
        );
    }
    assert_eq!(read_all(c, "t").len(), 6);
    let old_id = topic_id(c, "t").await;
    assert_eq!(old_id.len(), 36, "a UUID: {old_id}");

    // Deleted through A, created again with 2 partitions through B: a new incarnation.
    cli_ok(a, &["topic", "delete", "t"], b"");
    create_topic(b, "t", 2, &[]).await;
    let new_id = topic_id(b, "t").await;
    assert_ne!(new_id, old_id);

    // What C once acknowledged into nowhere: partition 5 of the old incarnation.
    let stale = cli(c, &["produce", "t", "--partition", "5"], b"lost?\n");
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(!stale.status.success(), "acknowledged into nowhere");
    assert!(stderr.contains("partition 5"), "{stderr}");

    // Through every agent, writes go to the new incarnation, and only its records are
    // read.
    for (i, server) in servers.iter().enumerate() {
        let value = format!("new-{i}\n");
        cli_ok(
            server,
            &["produce", "t", "--partition", "1"],
            value.as_bytes(),
        );
    }
    for server in &servers {
        assert_eq!(
            read_all(server, "t"),
            ["1 new-0", "1 new-1", "1 new-2"],
            "through {server}"
        );
    }

    // A request naming the old incarnation is refused, retriably, on every agent;
    // naming the new one, it is written and the answer names it.
    for server in &servers {
        let channel = strata_client::connect(server).await.unwrap();
        let mut log = LogClient::new(channel.transport());
        let refused = log
            .produce(produce("t", &old_id, 0, "stale"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
        assert!(refused.message().contains("changed"), "{refused:?}");
        let fetch = proto::FetchRequest {
            topic: "t".into(),
            topic_id: old_id.clone(),
            partition: 1,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
        };
        assert_eq!(log.fetch(fetch).await.unwrap_err().code(), Code::Aborted);
        let written = log
            .produce(produce("t", &new_id, 0, "current"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(written.topic_id, new_id);
    }
    assert_eq!(
        read_all(a, "t").len(),
        6,
        "3 on partition 1, 3 on partition 0"
    );
}

/// The topic `Metadata` of `server` shows: its id and partition count, or `None` if the
/// agent answers that there is no such topic.
async fn seen(server: &str, topic: &str) -> Option<(String, usize)> {
    let channel = strata_client::connect(server).await.unwrap();
    let answer = strata_client::proto::cluster_client::ClusterClient::new(channel.transport())
        .metadata(proto::MetadataRequest {
            topics: vec![topic.to_string()],
        })
        .await;
    match answer {
        Ok(response) => {
            let t = response.into_inner().topics.remove(0);
            Some((t.topic_id, t.partitions.len()))
        }
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => panic!("{status:?}"),
    }
}

/// How long until every one of `servers` shows `want` for `topic`.
async fn propagation(servers: &[String], topic: &str, want: Option<usize>) -> Duration {
    let started = Instant::now();
    for server in servers {
        loop {
            let shown = seen(server, topic).await;
            if shown.as_ref().map(|(_, n)| *n) == want {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{server} still shows {shown:?} for {topic}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_agent_sees_a_topic_change_at_once() {
    let agents = AgentProcess::start_cluster(3, "propagation", &[]);
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    create_topic(&servers[0], "p", 3, &[]).await;
    // Every agent caches the topic.
    for server in &servers {
        assert_eq!(seen(server, "p").await.map(|(_, n)| n), Some(3));
    }
    // Deleted through the first agent: the others stop showing it.
    cli_ok(&servers[0], &["topic", "delete", "p"], b"");
    let deleted = propagation(&servers[1..], "p", None).await;
    // Created again, larger: every agent shows the new incarnation.
    create_topic(&servers[0], "p", 5, &[]).await;
    let created = propagation(&servers[1..], "p", Some(5)).await;
    let id = topic_id(&servers[0], "p").await;
    for server in &servers {
        assert_eq!(seen(server, "p").await.unwrap().0, id);
    }
    report(&format!(
        "TOPIC CHANGES: a delete reached both other agents {} ms after it was acknowledged; a \
         re-creation {} ms",
        deleted.as_millis(),
        created.as_millis()
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_records_are_out_of_range_and_the_compactor_removes_them() {
    use strata_client::{Producer, ProducerConfig, ProducerRecord};
    use strata_tests::compactor::{
        CompactorProcess, index, read_all as read_records, setup, wait_until,
    };

    let setup = setup("delrecords", &["--linger-ms", "0"]).await;
    let server = setup.agent.server();
    create_topic(&server, "d", 1, &[]).await;
    // One record per flush: 50 index entries.
    let producer = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..50 {
        let mut record = ProducerRecord::value(format!("r{i}"));
        record.partition = Some(0);
        producer.send_and_wait("d", record).await.unwrap();
    }

    let delete_below = |before: &str| {
        cli(
            &server,
            &[
                "topic",
                "delete-records",
                "d",
                "-p",
                "0",
                "--before",
                before,
            ],
            b"",
        )
    };
    let out = delete_below("30");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "d/0: log start 30"
    );
    // Past the high watermark: OUT_OF_RANGE with the bounds; nothing moves.
    let beyond = delete_below("51");
    let stderr = String::from_utf8_lossy(&beyond.stderr);
    assert!(
        !beyond.status.success() && stderr.contains("30 (log start) to 50 (high watermark)"),
        "{stderr}"
    );
    // A reader below the start gets OUT_OF_RANGE naming it; the SDK resumes at the start.
    let channel = strata_client::connect(&server).await.unwrap();
    let status = LogClient::new(channel.transport())
        .fetch(proto::FetchRequest {
            topic: "d".into(),
            topic_id: String::new(),
            partition: 0,
            offset: 10,
            max_bytes: 0,
            max_wait_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("30 (log start)"), "{status:?}");
    let offsets: Vec<i64> = read_records(&server, "d")
        .await
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, (30..50).collect::<Vec<i64>>());

    // The compactor removes the entries wholly below the start.
    let compactor = CompactorProcess::start(&setup.kind, &["--interval", "300ms"]);
    wait_until("the compactor dropped the deleted entries", async || {
        index(&setup.metastore, "d", 0).await[0].base_offset == 30
    })
    .await;
    drop(compactor);
    assert_eq!(read_records(&server, "d").await.len(), 20);
    // -1: everything.
    let out = delete_below("-1");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "d/0: log start 50"
    );
    assert!(read_records(&server, "d").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_altered_config_applies_on_every_agent_and_in_the_compactor() {
    use strata_tests::compactor::{CompactorProcess, wait_until};

    let agents = AgentProcess::start_cluster(3, "alter", &[]);
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    create_topic(&servers[0], "alt", 1, &[]).await;
    let record = |size: usize| produce("alt", "", 0, &"x".repeat(size));
    // Every agent caches the topic (and accepts 100-byte records).
    for server in &servers {
        let channel = strata_client::connect(server).await.unwrap();
        LogClient::new(channel.transport())
            .produce(record(100))
            .await
            .unwrap();
    }

    // Bad alterations change nothing.
    for args in [
        ["--set", "retention.hours=1"],
        ["--set", "max.message.bytes=0"],
        ["--delete", "nope"],
    ] {
        let bad = cli(
            &servers[1],
            &["topic", "alter", "alt", args[0], args[1]],
            b"",
        );
        assert!(!bad.status.success());
    }
    let described = cli_ok(&servers[2], &["topic", "describe", "alt"], b"");
    assert!(
        described.contains("max.message.bytes=1048576\t(default)"),
        "{described}"
    );

    // max.message.bytes lowered through one agent: every agent refuses at once.
    cli_ok(
        &servers[0],
        &["topic", "alter", "alt", "--set", "max.message.bytes=50"],
        b"",
    );
    let altered = Instant::now();
    for server in &servers {
        let channel = strata_client::connect(server).await.unwrap();
        let mut log = LogClient::new(channel.transport());
        loop {
            match log.produce(record(100)).await {
                Err(status) if status.code() == Code::InvalidArgument => {
                    assert!(status.message().contains("max.message.bytes"), "{status:?}");
                    break;
                }
                other => assert!(
                    altered.elapsed() < Duration::from_secs(30),
                    "{server} still accepts: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let propagated = altered.elapsed();
    let described = cli_ok(&servers[2], &["topic", "describe", "alt"], b"");
    assert!(
        described.contains("max.message.bytes=50\t(topic)"),
        "{described}"
    );

    // retention.ms shortened: the compactor's next pass drops the old records.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cli_ok(
        &servers[1],
        &["topic", "alter", "alt", "--set", "retention.ms=1000"],
        b"",
    );
    let compactor = CompactorProcess::start(agents[0].kind(), &["--interval", "300ms"]);
    wait_until("retention dropped the old records", async || {
        read_all(&servers[0], "alt").is_empty()
    })
    .await;
    drop(compactor);
    // Deleting the key brings the default back.
    cli_ok(
        &servers[2],
        &["topic", "alter", "alt", "--delete", "max.message.bytes"],
        b"",
    );
    let described = cli_ok(&servers[0], &["topic", "describe", "alt"], b"");
    assert!(
        described.contains("max.message.bytes=1048576\t(default)"),
        "{described}"
    );
    report(&format!(
        "TOPIC CHANGES: max.message.bytes lowered through one agent was applied by all three \
         {} ms after it was acknowledged",
        propagated.as_millis()
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grown_topic_takes_keyed_records_at_the_new_count_and_groups_read_it() {
    use strata_client::{
        Consumer, ConsumerConfig, GroupConfig, Producer, ProducerConfig, ProducerRecord,
    };

    let agents = AgentProcess::start_cluster(3, "grow", &[]);
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    create_topic(&servers[0], "g", 6, &[]).await;
    let producer = Producer::connect(
        &servers[1],
        ProducerConfig {
            metadata_max_age: Duration::from_millis(200),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let send_keyed = async |round: &str| -> Vec<(u32, u32)> {
        let mut placed = Vec::new();
        for k in 0..120u32 {
            let record = ProducerRecord::keyed(format!("key-{k}"), round.to_string());
            let position = producer.send_and_wait("g", record).await.unwrap();
            placed.push((k, position.partition));
        }
        placed
    };
    for (k, partition) in send_keyed("before").await {
        assert_eq!(
            partition,
            strata_proto::partition_for_key(format!("key-{k}").as_bytes(), 6)
        );
    }
    // A member of a group reads the topic.
    let mut member = Consumer::connect(&servers[2], ConsumerConfig::default())
        .await
        .unwrap();
    member
        .subscribe(&["g"], GroupConfig::new("growers"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while member.assignment().len() < 6 {
        member.poll(Duration::from_millis(200)).await.unwrap();
        assert!(
            Instant::now() < deadline,
            "the member got {:?}",
            member.assignment()
        );
    }

    // Never fewer partitions; 12 through another agent.
    let shrink = cli(
        &servers[0],
        &["topic", "add-partitions", "g", "--to", "4"],
        b"",
    );
    assert!(!shrink.status.success());
    cli_ok(
        &servers[0],
        &["topic", "add-partitions", "g", "--to", "12"],
        b"",
    );
    propagation(&servers, "g", Some(12)).await;

    // Keyed records now go to murmur2(key) % 12, and the member gets all 12 partitions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let placed = send_keyed("after").await;
    for (k, partition) in &placed {
        assert_eq!(
            *partition,
            strata_proto::partition_for_key(format!("key-{k}").as_bytes(), 12)
        );
    }
    assert!(
        placed.iter().any(|(_, p)| *p >= 6),
        "a key moved to a new partition"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while member.assignment().len() < 12 {
        member.poll(Duration::from_millis(200)).await.unwrap();
        assert!(
            Instant::now() < deadline,
            "the member got {:?}",
            member.assignment()
        );
    }
    // Every record of both rounds is there.
    assert_eq!(read_all(&servers[0], "g").len(), 240);
}
