//! The README's quickstart as a test, on both deployments: `strata dev` on the embedded
//! defaults, and `strata agent` with etcd + s3s-fs. 100,000 keyed lines go in through
//! `strata produce`; `strata consume --from-beginning` must return every one, each
//! partition in dense offset order, every key in the partition Kafka's default partitioner
//! picks; after SIGKILL and restart everything is still there and new records continue at
//! the next offset.

use std::collections::{BTreeMap, HashMap};

use strata_tests::{AgentKind, AgentProcess, TestEnv, cli_ok, unique_name};

const PARTITIONS: u32 = 8;

fn lines(prefix: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("{prefix}-key-{i}:value-{i}\n"))
        .collect()
}

/// Reads the topic with `strata consume --json` and checks every partition's offsets are
/// dense from 0 and every key is in its murmur2 partition. Returns key -> (partition,
/// offset, value).
fn consume_all(server: &str, topic: &str) -> HashMap<String, (u32, i64, String)> {
    let out = cli_ok(
        server,
        &["consume", topic, "--from-beginning", "--json"],
        b"",
    );
    let mut by_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    let mut records = HashMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        let partition = v["partition"].as_u64().unwrap() as u32;
        let offset = v["offset"].as_i64().unwrap();
        let key = v["key"].as_str().expect("keyed record").to_string();
        let value = v["value"].as_str().unwrap().to_string();
        assert_eq!(v["topic"], topic);
        assert!(v["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        assert_eq!(
            partition,
            strata_proto::partition_for_key(key.as_bytes(), PARTITIONS),
            "key {key} is not in the partition Kafka's default partitioner picks"
        );
        by_partition.entry(partition).or_default().push(offset);
        assert!(
            records
                .insert(key.clone(), (partition, offset, value))
                .is_none(),
            "{key} twice"
        );
    }
    for (partition, offsets) in by_partition {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition} is not dense and in order"
        );
    }
    records
}

fn scenario(mut agent: AgentProcess, records: usize) {
    let server = agent.server();
    cli_ok(
        &server,
        &["topic", "create", "demo", "--partitions", "8"],
        b"",
    );
    let produced = cli_ok(
        &server,
        &["produce", "demo", "--key-separator", ":"],
        lines("a", 0..records).as_bytes(),
    );
    assert!(produced.is_empty(), "produce prints its summary on stderr");

    let before = consume_all(&server, "demo");
    assert_eq!(before.len(), records);
    for i in 0..records {
        let (_, _, value) = &before[&format!("a-key-{i}")];
        assert_eq!(value, &format!("value-{i}"));
    }

    // SIGKILL right after produce returned: every acknowledged record must survive.
    agent.restart();
    let after = consume_all(&server, "demo");
    assert_eq!(after, before, "records changed across SIGKILL + restart");

    // New records continue at the next offset of each partition.
    let mut next: HashMap<u32, i64> = HashMap::new();
    for (partition, offset, _) in before.values() {
        let n = next.entry(*partition).or_default();
        *n = (*n).max(offset + 1);
    }
    cli_ok(
        &server,
        &["produce", "demo", "--key-separator", ":"],
        lines("b", 0..100).as_bytes(),
    );
    let last = consume_all(&server, "demo");
    assert_eq!(last.len(), records + 100);
    let mut new_by_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for i in 0..100 {
        let (partition, offset, _) = last[&format!("b-key-{i}")];
        new_by_partition.entry(partition).or_default().push(offset);
    }
    for (partition, mut offsets) in new_by_partition {
        offsets.sort();
        assert_eq!(
            offsets[0],
            next.get(&partition).copied().unwrap_or(0),
            "partition {partition} did not continue at its next offset"
        );
    }
}

#[test]
fn dev_quickstart_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(
        AgentKind::Dev {
            data_dir: dir.path().join("strata-data"),
        },
        &[],
    );
    scenario(agent, 100_000);
}

#[test]
fn etcd_and_s3_quickstart_survives_sigkill() {
    let agent = AgentProcess::start(
        AgentKind::Agent {
            env: TestEnv::from_env(),
            cluster: unique_name("quickstart"),
            bucket: unique_name("quickstart"),
        },
        &[],
    );
    scenario(agent, 100_000);
}
