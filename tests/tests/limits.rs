//! Every size a client controls has a limit, refused before anything is stored with a
//! status naming the limit and its setting; stored state over the limits (written straight
//! into etcd) is skipped, listed by `strata cluster status`, and never stops the agents,
//! the controller or the compactor (real etcd + s3s-fs).

use std::collections::HashMap;
use std::time::Duration;

use strata_client::proto::admin_client::AdminClient;
use strata_client::proto::groups_client::GroupsClient;
use strata_client::proto::log_client::LogClient;
use strata_client::{Transport, proto};
use strata_tests::compactor::{CompactorProcess, create_topic};
use strata_tests::{AgentKind, AgentProcess, TestEnv, cli, cli_ok};
use tonic::Code;

fn create(name: &str, partitions: i32) -> proto::CreateTopicRequest {
    proto::CreateTopicRequest {
        name: name.to_string(),
        partitions,
        config: HashMap::new(),
    }
}

fn record(value: &[u8], headers: &[(&str, &[u8])]) -> proto::Record {
    proto::Record {
        key: None,
        value: Some(value.to_vec().into()),
        timestamp_ms: 0,
        headers: headers
            .iter()
            .map(|(k, v)| proto::Header {
                key: k.to_string(),
                value: v.to_vec().into(),
            })
            .collect(),
    }
}

fn produce(topic: &str, records: Vec<proto::Record>) -> proto::ProduceRequest {
    proto::ProduceRequest {
        topic_id: String::new(),
        topic: topic.to_string(),
        partition: Some(0),
        records,
        acks: proto::Acks::All as i32,
        ..Default::default()
    }
}

/// The call fails with `code`, and its message names `setting` and how to change it.
fn assert_limit<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, setting: &str) {
    let status = result.expect_err("over a limit: the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    let flag = format!("--{}", setting.replace('_', "-"));
    for needle in [setting, flag.as_str()] {
        assert!(
            status.message().contains(needle),
            "message {:?} should name {needle}",
            status.message()
        );
    }
}

struct Clients {
    admin: AdminClient<Transport>,
    log: LogClient<Transport>,
    groups: GroupsClient<Transport>,
}

async fn clients(server: &str) -> Clients {
    let channel = strata_client::connect(server).await.unwrap();
    Clients {
        admin: AdminClient::new(channel.transport()),
        log: LogClient::new(channel.transport()).max_encoding_message_size(64 << 20),
        groups: GroupsClient::new(channel.transport()),
    }
}

fn heartbeat(group: &str, topics: &[&str]) -> proto::HeartbeatRequest {
    proto::HeartbeatRequest {
        group_id: group.to_string(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_limit_is_refused_naming_its_setting_and_nothing_is_stored() {
    let mut agent = AgentProcess::start(
        AgentKind::new_cluster("limits"),
        &[
            "--max-partitions-per-topic",
            "50",
            "--max-partitions",
            "60",
            "--max-topics",
            "4",
            "--max-request-records",
            "100",
            "--max-request-bytes",
            "10000",
            "--max-headers-per-record",
            "3",
            "--max-header-key-bytes",
            "10",
            "--max-fetch-bytes",
            "5000",
            "--max-subscription-bytes",
            "100",
            "--group-max-size",
            "2",
            "--max-group-state-bytes",
            "900",
        ],
    );
    let Clients {
        mut admin,
        mut log,
        mut groups,
    } = clients(&agent.server()).await;

    // Partitions per topic, per cluster, topics per cluster.
    assert_limit(
        admin.create_topic(create("huge", i32::MAX)).await,
        Code::InvalidArgument,
        "max_partitions_per_topic",
    );
    assert_limit(
        admin.create_topic(create("huge", 51)).await,
        Code::InvalidArgument,
        "max_partitions_per_topic",
    );
    for (name, partitions) in [("big", 50), ("t1", 1), ("t2", 1)] {
        admin.create_topic(create(name, partitions)).await.unwrap();
    }
    assert_limit(
        admin.create_topic(create("t3", 9)).await,
        Code::ResourceExhausted,
        "max_partitions",
    );
    admin.create_topic(create("t3", 1)).await.unwrap();
    assert_limit(
        admin.create_topic(create("t4", 1)).await,
        Code::ResourceExhausted,
        "max_topics",
    );

    // Produce: records per request, bytes per request, headers per record, header keys.
    let many = (0..101).map(|_| record(b"x", &[])).collect();
    assert_limit(
        log.produce(produce("t1", many)).await,
        Code::InvalidArgument,
        "max_request_records",
    );
    let heavy = (0..11).map(|_| record(&[7u8; 1000], &[])).collect();
    assert_limit(
        log.produce(produce("t1", heavy)).await,
        Code::InvalidArgument,
        "max_request_bytes",
    );
    let headers: [(&str, &[u8]); 4] = [("a", b""), ("a", b""), ("b", b""), ("c", b"")];
    assert_limit(
        log.produce(produce("t1", vec![record(b"x", &headers)]))
            .await,
        Code::InvalidArgument,
        "max_headers_per_record",
    );
    assert_limit(
        log.produce(produce(
            "t1",
            vec![record(b"x", &[("k".repeat(11).as_str(), b"v")])],
        ))
        .await,
        Code::InvalidArgument,
        "max_header_key_bytes",
    );
    let described = admin
        .describe_topic(proto::DescribeTopicRequest {
            name: "t1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described.partitions[0].high_watermark, 0,
        "nothing refused was stored"
    );

    // Fetch max_bytes is capped, not refused: 2^31-1 returns about max_fetch_bytes.
    for _ in 0..2 {
        let batch = (0..9).map(|_| record(&[1u8; 1000], &[])).collect();
        log.produce(produce("t1", batch)).await.unwrap();
    }
    let fetched = log
        .fetch(proto::FetchRequest {
            isolation_level: 0,
            topic_id: String::new(),
            topic: "t1".into(),
            partition: 0,
            offset: 0,
            max_bytes: i32::MAX,
            max_wait_ms: 0,
            zone: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let bytes: usize = fetched
        .records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    assert!(
        !fetched.records.is_empty() && bytes <= 5000,
        "{} records, {bytes} bytes for max_bytes 2^31-1 capped at 5000",
        fetched.records.len()
    );

    // Groups: subscription size, member and instance ids, members per group, group state,
    // offset metadata.
    let long_topics: Vec<String> = (0..20).map(|i| format!("topic-{i:04}")).collect();
    let long_topics: Vec<&str> = long_topics.iter().map(String::as_str).collect();
    assert_limit(
        groups.heartbeat(heartbeat("g", &long_topics)).await,
        Code::InvalidArgument,
        "max_subscription_bytes",
    );
    let mut bad_member = heartbeat("g", &["t1"]);
    bad_member.member_id = "m".repeat(300);
    bad_member.member_epoch = 1;
    let status = groups.heartbeat(bad_member).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut bad_instance = heartbeat("g", &["t1"]);
    bad_instance.instance_id = "no spaces".into();
    let status = groups.heartbeat(bad_instance).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    for _ in 0..2 {
        groups.heartbeat(heartbeat("g", &["t1"])).await.unwrap();
    }
    assert_limit(
        groups.heartbeat(heartbeat("g", &["t1"])).await,
        Code::ResourceExhausted,
        "group_max_size",
    );
    // One member of 50 partitions: its assignment does not fit 900 bytes of state (two
    // members of one partition take about 700).
    assert_limit(
        groups.heartbeat(heartbeat("wide", &["big"])).await,
        Code::ResourceExhausted,
        "max_group_state_bytes",
    );
    let commit = |metadata: usize| proto::CommitOffsetsRequest {
        group_id: "standalone".into(),
        offsets: vec![proto::PartitionOffset {
            topic: "t1".into(),
            partition: 0,
            offset: 1,
            metadata: "m".repeat(metadata),
        }],
        ..Default::default()
    };
    assert_limit(
        groups.commit_offsets(commit(4097)).await,
        Code::InvalidArgument,
        "offset_metadata_max_bytes",
    );
    groups.commit_offsets(commit(4096)).await.unwrap();
    // Refused groups were never stored; a leave of an unknown group stores nothing.
    let mut leave = heartbeat("never-joined", &[]);
    leave.member_id = "nobody".into();
    leave.member_epoch = -1;
    groups.heartbeat(leave).await.unwrap();
    let listed: Vec<String> = groups
        .list_groups(proto::ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .groups
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(
        listed,
        ["g", "standalone"],
        "only the groups that were valid"
    );

    // The agent is up, and after a restart serves every topic it had.
    assert!(agent.is_running());
    agent.restart();
    let Clients { mut admin, .. } = clients(&agent.server()).await;
    let topics: Vec<String> = admin
        .list_topics(proto::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(topics, ["big", "t1", "t2", "t3"]);
}

/// `etcdctl put` against the test etcd.
fn etcd_put(env: &TestEnv, key: &str, value: &str) {
    let status = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &env.etcd, "put", key, value])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run etcdctl");
    assert!(status.success(), "etcdctl put {key} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_stored_topic_never_takes_the_cluster_down() {
    let kind = AgentKind::new_cluster("absurd");
    let AgentKind::Agent { env, cluster, .. } = kind.clone() else {
        unreachable!("new_cluster is an agent cluster")
    };
    let mut agents: Vec<AgentProcess> = (0..3)
        .map(|_| AgentProcess::start(kind.clone(), &[]))
        .collect();
    let server = agents[0].server();
    let Clients {
        mut admin, mut log, ..
    } = clients(&server).await;

    // Refused, naming the limit; nothing stored.
    assert_limit(
        admin.create_topic(create("huge", i32::MAX)).await,
        Code::InvalidArgument,
        "max_partitions_per_topic",
    );
    admin.create_topic(create("orders", 6)).await.unwrap();
    for p in 0..6 {
        let mut request = produce(
            "orders",
            vec![record(format!("before-{p}").as_bytes(), &[])],
        );
        request.partition = Some(p);
        log.produce(request).await.unwrap();
    }

    // Written straight into etcd: what once took a cluster down for good.
    let topic_key = |name: &str| format!("/strata/{cluster}/topics/{name}");
    etcd_put(
        &env,
        &topic_key("absurd"),
        r#"{"name":"absurd","partitions":4294967295,"config":{},"created_at_ms":0}"#,
    );
    etcd_put(&env, &topic_key("garbage"), "{not json");

    // Every agent restarted (the controller with them), and a compactor pass.
    for agent in &mut agents {
        agent.restart();
    }
    let compactor = CompactorProcess::start(&kind, &["--interval", "500ms"]);
    compactor.wait_for_log("stored record skipped", Duration::from_secs(30));
    for agent in &mut agents {
        assert!(agent.is_running(), "{}", agent.log_text());
    }

    // Every other topic is served, through every agent.
    for agent in &agents {
        let out = cli_ok(
            &agent.server(),
            &["consume", "orders", "--from-beginning", "--format", "%v"],
            b"",
        );
        let mut values: Vec<&str> = out.lines().collect();
        values.sort_unstable();
        let expected: Vec<String> = (0..6).map(|p| format!("before-{p}")).collect();
        assert_eq!(values, expected);
    }
    cli_ok(
        &server,
        &["produce", "orders", "--partition", "3"],
        b"after-restart\n",
    );

    // The bad records are listed, with why; reading one by name says what to do.
    let status = cli_ok(&server, &["cluster", "status"], b"");
    assert!(
        status.contains(&format!("unreadable\t{}", topic_key("absurd")))
            && status.contains("max_partitions_per_topic"),
        "{status}"
    );
    assert!(
        status.contains(&format!("unreadable\t{}", topic_key("garbage"))),
        "{status}"
    );
    let described = cli(&server, &["topic", "describe", "absurd"], b"");
    let stderr = String::from_utf8_lossy(&described.stderr);
    assert!(
        !described.status.success() && stderr.contains("4294967295"),
        "{stderr}"
    );
    // Logged once per process run (the controller lists topics every 200 ms), not once
    // per listing.
    let mut logged = 0;
    for agent in &agents {
        let count = agent.log_text().matches("stored record skipped").count();
        assert!(count <= 8, "logged {count} times:\n{}", agent.log_text());
        logged += count;
    }
    assert!(logged >= 2, "the controller logged both records");

    // Deleting the bad topics clears them.
    cli_ok(&server, &["topic", "delete", "absurd"], b"");
    cli_ok(&server, &["topic", "delete", "garbage"], b"");
    let status = cli_ok(&server, &["cluster", "status"], b"");
    assert!(!status.contains("unreadable"), "{status}");
    drop(compactor);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_per_connection_are_bounded() {
    let agent = AgentProcess::start(
        AgentKind::new_cluster("streams"),
        &["--max-streams-per-connection", "2"],
    );
    let server = agent.server();
    create_topic(&server, "tail", 1, &[]).await;
    let subscribe = proto::SubscribeRequest {
        isolation_level: 0,
        topic_id: String::new(),
        topic: "tail".into(),
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    // Two Subscribe streams that follow the tail take the connection's two streams.
    let Clients {
        mut admin, mut log, ..
    } = clients(&server).await;
    let first = log.subscribe(subscribe.clone()).await.unwrap();
    let second = log.subscribe(subscribe).await.unwrap();
    // A third call on the same connection waits for one of them to end...
    let third = tokio::spawn(async move {
        admin
            .list_topics(proto::ListTopicsRequest {})
            .await
            .map(|r| r.into_inner().topics.len())
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!third.is_finished(), "a third stream was opened");
    // ...while another connection is served at once.
    let Clients {
        admin: mut other, ..
    } = clients(&server).await;
    other
        .list_topics(proto::ListTopicsRequest {})
        .await
        .unwrap();
    drop(first);
    let topics = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the third call runs once a stream ends")
        .unwrap()
        .unwrap();
    assert_eq!(topics, 1);
    drop(second);
}

/// The controller's assignment is one etcd value: a topic creation or growth that would
/// take it past 1 MiB is refused, saying why, before etcd would refuse the controller's
/// write. With 240-character agent ids that is about 4,300 partitions.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_that_would_overflow_the_assignment_value_are_refused() {
    let long_id = "a".repeat(240);
    let agents = AgentProcess::start_cluster(1, "assignment-size", &["--agent-id", &long_id]);
    let server = agents[0].server();
    let mut admin = clients(&server).await.admin;
    let refused = admin.create_topic(create("wide", 5_000)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("assignment")
            && refused.message().contains("--max-request-bytes"),
        "{refused:?}"
    );
    // Nothing stored; a smaller topic fits, and growing it past the value is refused too.
    assert_eq!(
        admin
            .describe_topic(proto::DescribeTopicRequest {
                name: "wide".into(),
                ..Default::default()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    create_topic(&server, "wide", 100, &[]).await;
    let grow = cli(
        &server,
        &["topic", "add-partitions", "wide", "--to", "5000"],
        b"",
    );
    assert!(!grow.status.success());
    assert!(
        String::from_utf8_lossy(&grow.stderr).contains("assignment"),
        "{}",
        String::from_utf8_lossy(&grow.stderr)
    );
    cli_ok(
        &server,
        &["topic", "add-partitions", "wide", "--to", "200"],
        b"",
    );
}

fn idempotent(
    topic: &str,
    producer_id: i64,
    epoch: i32,
    sequence: i32,
    value: &[u8],
) -> proto::ProduceRequest {
    proto::ProduceRequest {
        producer: Some(proto::ProducerBatch {
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
            transactional_id: String::new(),
        }),
        ..produce(topic, vec![record(value, &[])])
    }
}

/// Idempotent producers per partition are bounded: past `max_producers_per_partition` a
/// new one is refused naming the setting, and nothing of its batch is stored; once a
/// state is older than `producer_id_expiration_ms` it makes room. Sequence gaps and stale
/// epochs get their own statuses and trailers, and store nothing.
#[tokio::test(flavor = "multi_thread")]
async fn idempotent_producers_are_bounded_and_checked() {
    let agent = AgentProcess::start(
        AgentKind::new_cluster("producers"),
        &[
            "--max-producers-per-partition",
            "2",
            "--producer-id-expiration-ms",
            "3000",
        ],
    );
    let server = agent.server();
    create_topic(&server, "idem", 1, &[]).await;
    let Clients { mut log, .. } = clients(&server).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = log
            .init_producer_id(proto::InitProducerIdRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(id.producer_epoch, 0);
        ids.push(id.producer_id);
    }
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    for id in &ids[..2] {
        let written = log
            .produce(idempotent("idem", *id, 0, 0, b"x"))
            .await
            .unwrap();
        assert!(!written.into_inner().duplicate);
    }
    assert_limit(
        log.produce(idempotent("idem", ids[2], 0, 0, b"third"))
            .await,
        Code::ResourceExhausted,
        "max_producers_per_partition",
    );

    // A gap, and an older epoch: refused with their trailers, nothing stored.
    let trailer = |status: &tonic::Status| {
        status
            .metadata()
            .get("strata-producer-error")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let gap = log
        .produce(idempotent("idem", ids[0], 0, 5, b"gap"))
        .await
        .unwrap_err();
    assert_eq!(gap.code(), Code::FailedPrecondition, "{gap:?}");
    assert_eq!(trailer(&gap).as_deref(), Some("out-of-order-sequence"));
    assert!(gap.message().contains("the next sequence is 1"), "{gap:?}");
    log.produce(idempotent("idem", ids[0], 1, 0, b"epoch 1"))
        .await
        .unwrap();
    let stale = log
        .produce(idempotent("idem", ids[0], 0, 1, b"stale"))
        .await
        .unwrap_err();
    assert_eq!(
        trailer(&stale).as_deref(),
        Some("producer-fenced"),
        "{stale:?}"
    );
    let retry = log
        .produce(idempotent("idem", ids[0], 1, 0, b"epoch 1"))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.duplicate, "a retry is answered with its offsets");
    assert_eq!(retry.positions[0].offset, 2);
    let bad = log
        .produce(idempotent("idem", ids[0], 70_000, 0, b"bad"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    // Once the first two states expire, the third producer has room.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    log.produce(idempotent("idem", ids[2], 0, 0, b"third"))
        .await
        .unwrap();
    let values = cli_ok(&server, &["consume", "idem", "--from-beginning"], b"");
    assert_eq!(values, "x\nx\nepoch 1\nthird\n");
}

/// Transactional bad input over plain gRPC: a transactional batch to a partition not added
/// to the transaction, and an end of a transaction by a producer that two racing
/// `InitTransactions` fenced, each refused with its own status and trailer, nothing
/// written; transactional ids are bounded by `max_transactional_ids`.
#[tokio::test(flavor = "multi_thread")]
async fn transactional_requests_are_checked_and_bounded() {
    use strata_client::proto::transactions_client::TransactionsClient;
    let agent = AgentProcess::start(
        AgentKind::new_cluster("txn-limits"),
        &["--max-transactional-ids", "2"],
    );
    let server = agent.server();
    create_topic(&server, "txn", 2, &[]).await;
    let channel = strata_client::connect(&server).await.unwrap();
    let mut transactions = TransactionsClient::new(channel.transport());
    let Clients { mut log, .. } = clients(&server).await;
    let init = |id: &str| proto::InitTransactionsRequest {
        transactional_id: id.to_string(),
        transaction_timeout_ms: 0,
    };
    let first = transactions
        .init_transactions(init("t1"))
        .await
        .unwrap()
        .into_inner();
    let producer = proto::TransactionalProducer {
        transactional_id: "t1".into(),
        producer_id: first.producer_id,
        producer_epoch: first.producer_epoch,
    };
    transactions
        .add_partitions_to_transaction(proto::AddPartitionsToTransactionRequest {
            producer: Some(producer.clone()),
            partitions: vec![proto::TopicPartitions {
                topic: "txn".into(),
                partitions: vec![0],
            }],
        })
        .await
        .unwrap();
    // Partition 1 was not added.
    let mut batch = idempotent("txn", first.producer_id, first.producer_epoch, 0, b"stray");
    batch.partition = Some(1);
    batch.producer.as_mut().unwrap().transactional_id = "t1".into();
    let stray = log.produce(batch).await.unwrap_err();
    assert_eq!(stray.code(), Code::FailedPrecondition, "{stray:?}");
    assert_eq!(
        stray
            .metadata()
            .get("strata-transaction-error")
            .and_then(|v| v.to_str().ok()),
        Some("not-in-transaction")
    );
    assert!(
        stray.message().contains("AddPartitionsToTransaction"),
        "{stray:?}"
    );

    // Two InitTransactions of one id at once: both answer, with different epochs; the
    // producer of the older one is fenced.
    let (mut one, mut other) = (transactions.clone(), transactions.clone());
    let (a, b) = tokio::join!(
        one.init_transactions(init("t2")),
        other.init_transactions(init("t2")),
    );
    let (a, b) = (a.unwrap().into_inner(), b.unwrap().into_inner());
    assert_ne!(a.producer_epoch, b.producer_epoch);
    let older = if a.producer_epoch < b.producer_epoch {
        a
    } else {
        b
    };
    let end = transactions
        .end_transaction(proto::EndTransactionRequest {
            producer: Some(proto::TransactionalProducer {
                transactional_id: "t2".into(),
                producer_id: older.producer_id,
                producer_epoch: older.producer_epoch,
            }),
            commit: true,
        })
        .await
        .unwrap_err();
    assert!(end.message().contains("fenced"), "{end:?}");

    // A third transactional id is over the limit.
    assert_limit(
        transactions.init_transactions(init("t3")).await,
        Code::ResourceExhausted,
        "max_transactional_ids",
    );
    let values = cli_ok(&server, &["consume", "txn", "--from-beginning"], b"");
    assert_eq!(values, "", "nothing of the refused requests was written");
}
