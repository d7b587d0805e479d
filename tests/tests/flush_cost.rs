//! A flush of records for 8 partitions costs one PUT and one metastore commit, not eight
//! (etcd + s3s-fs, counters from the AgentStats RPC).

use std::collections::BTreeMap;

use strata_client::{Admin, proto};
use strata_tests::{AgentKind, AgentProcess, TestEnv, unique_name};

#[tokio::test(flavor = "multi_thread")]
async fn one_put_and_one_commit_per_flush_of_eight_partitions() {
    let agent = AgentProcess::start(
        AgentKind::Agent {
            env: TestEnv::from_env(),
            cluster: unique_name("flushcost"),
            bucket: unique_name("flushcost"),
        },
        // A long linger so that all records of the request are in one flush.
        &["--linger-ms", "200"],
    );
    let channel = strata_client::connect(&agent.server()).await.unwrap();
    let admin = Admin::new(channel.clone());
    admin
        .create_topic("costs", 8, Default::default())
        .await
        .unwrap();

    // One record for every partition, keyed so the server partitions them.
    let mut keys: BTreeMap<u32, String> = BTreeMap::new();
    for i in 0.. {
        let key = format!("k{i}");
        keys.entry(strata_proto::partition_for_key(key.as_bytes(), 8))
            .or_insert(key);
        if keys.len() == 8 {
            break;
        }
    }
    let records: Vec<proto::Record> = keys
        .values()
        .map(|k| proto::Record {
            key: Some(k.clone().into_bytes().into()),
            value: Some(b"v".to_vec().into()),
            ..Default::default()
        })
        .collect();

    let before = admin.agent_stats().await.unwrap();
    let response = proto::log_client::LogClient::new(channel.transport())
        .produce(proto::ProduceRequest {
            topic_id: String::new(),
            topic: "costs".into(),
            partition: None,
            records,
            acks: proto::Acks::All as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after = admin.agent_stats().await.unwrap();

    let mut partitions: Vec<i32> = response.positions.iter().map(|p| p.partition).collect();
    partitions.sort();
    assert_eq!(partitions, (0..8).collect::<Vec<_>>());
    assert_eq!(after.flushes - before.flushes, 1);
    assert_eq!(
        after.segment_puts - before.segment_puts,
        1,
        "one PUT for 8 partitions"
    );
    assert_eq!(
        after.metastore_commits - before.metastore_commits,
        1,
        "one commit for 8 partitions"
    );
    assert_eq!(after.partition_blocks - before.partition_blocks, 8);
    assert_eq!(after.records_committed - before.records_committed, 8);
}
