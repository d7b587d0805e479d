//! Kafka transactions against three agents (real etcd and s3s-fs), with Kafka's own Java
//! client and confluent-kafka: a transactional producer alternating commit and abort,
//! read by read_committed consumers of both clients (only committed records, none
//! aborted); and consume-transform-produce with `sendOffsetsToTransaction` through a
//! SIGKILL of the agent coordinating the transactional id: every input record in the
//! output exactly once.
//!
//! Needs Java and the test programs (scripts/build-test-clients.sh) and confluent-kafka
//! (scripts/install-test-deps.sh).

use std::collections::HashMap;
use std::time::Duration;

use strata_tests::kafka::{driver, java_ok};
use strata_tests::{AgentProcess, cli_ok, report};

fn keys(path: &std::path::Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        *counts.entry(line.to_string()).or_default() += 1;
    }
    counts
}

/// The agent id coordinating `transactional_id`, from `strata transactions list`.
fn coordinator_of(server: &str, transactional_id: &str) -> Option<String> {
    cli_ok(server, &["transactions", "list"], b"")
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&transactional_id))
        .and_then(|cols| cols.last().map(|c| c.to_string()))
}

#[test]
fn kafka_transactions_commit_abort_and_exactly_once_through_a_coordinator_sigkill() {
    let mut agents = AgentProcess::start_cluster(3, "kafka-txn", &["--lease-ttl-secs", "3"]);
    let bootstrap = agents
        .iter()
        .map(AgentProcess::kafka_bootstrap)
        .collect::<Vec<_>>()
        .join(",");
    let server = agents[0].server();
    let dir = tempfile::tempdir().unwrap();

    // A producer alternating commit and abort; read_committed readers see only commits.
    let topic = "txn-alternating";
    cli_ok(&server, &["topic", "create", topic, "-p", "6"], b"");
    let (transactions, per) = (20, 500);
    let summary = java_ok(&[
        "txn-produce",
        &bootstrap,
        topic,
        "alternating",
        &transactions.to_string(),
        &per.to_string(),
    ]);
    let expected_committed: Vec<String> = (0..transactions)
        .filter(|t| t % 2 == 0)
        .flat_map(|t| (0..per).map(move |i| format!("t{t}-{i}")))
        .collect();
    for reader in ["java", "confluent"] {
        let out = dir.path().join(format!("{reader}-read"));
        if reader == "java" {
            java_ok(&["read-committed", &bootstrap, topic, out.to_str().unwrap()]);
        } else {
            driver(&["read-committed", &bootstrap, topic, out.to_str().unwrap()]);
        }
        let read = keys(&out);
        for key in &expected_committed {
            assert_eq!(
                read.get(key),
                Some(&1),
                "{reader}: committed {key} not read exactly once"
            );
        }
        let extra: Vec<&String> = read
            .keys()
            .filter(|k| {
                let t: usize = k[1..k.find('-').unwrap()].parse().unwrap();
                t % 2 == 1
            })
            .collect();
        assert!(
            extra.is_empty(),
            "{reader}: read {} records of aborted transactions, e.g. {:?}",
            extra.len(),
            extra.first()
        );
        assert_eq!(
            read.len(),
            expected_committed.len(),
            "{reader}: other records"
        );
    }
    // Everything, aborted records too, is stored: read_uncommitted sees it.
    let all = cli_ok(&server, &["consume", topic, "--from-beginning"], b"")
        .lines()
        .count();
    assert_eq!(
        all,
        transactions * per,
        "read_uncommitted sees every record"
    );
    report(&format!(
        "kafka transactions: a Java producer committed {} and aborted {} transactions of {per} \
         ({}); Java and confluent-kafka read_committed readers each read the {} committed \
         records once and none of the aborted",
        transactions / 2,
        transactions / 2,
        summary.trim(),
        expected_committed.len()
    ));

    // Consume-transform-produce through a SIGKILL of the transaction coordinator's agent.
    let (input, output) = ("txn-input", "txn-output");
    cli_ok(&server, &["topic", "create", input, "-p", "6"], b"");
    cli_ok(&server, &["topic", "create", output, "-p", "6"], b"");
    let records = 30_000;
    let acked = dir.path().join("input-acked");
    // The input arrives over about 10 s, so the transformer is busy when the kill lands.
    let producer = {
        let (bootstrap, acked) = (bootstrap.clone(), acked.clone());
        std::thread::spawn(move || {
            java_ok(&[
                "produce",
                &bootstrap,
                input,
                &records.to_string(),
                "3000",
                acked.to_str().unwrap(),
            ])
        })
    };
    let transformer = {
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || {
            java_ok(&[
                "transform",
                &bootstrap,
                input,
                output,
                "transform-group",
                "transformer",
                &records.to_string(),
                "5000",
            ])
        })
    };
    // Kill the coordinator once the transformer has taken its transactional id.
    let mut victim = None;
    for _ in 0..120 {
        if let Some(agent_id) = coordinator_of(&server, "transformer") {
            victim = agents.iter().position(|a| a.agent_id() == agent_id);
            if victim.is_some() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let victim = victim.expect("the transformer took its transactional id");
    std::thread::sleep(Duration::from_secs(2));
    let killed = agents[victim].agent_id().to_string();
    agents[victim].kill();
    std::thread::sleep(Duration::from_secs(5));
    agents[victim].start_again();
    let produced = producer.join().unwrap();
    assert!(
        produced.contains("\"failed\":0"),
        "input not all sent: {produced}"
    );
    let summary = transformer.join().unwrap();
    let server = agents[(victim + 1) % 3].server();
    let out = dir.path().join("output-read");
    java_ok(&["read-committed", &bootstrap, output, out.to_str().unwrap()]);
    let read = keys(&out);
    let input_keys: Vec<String> = std::fs::read_to_string(&acked)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(input_keys.len(), records);
    let missing = input_keys.iter().filter(|k| !read.contains_key(*k)).count();
    let duplicated: usize = read.values().map(|n| n - 1).sum();
    let foreign = read.len() - (input_keys.len() - missing);
    let stored = cli_ok(&server, &["consume", output, "--from-beginning"], b"")
        .lines()
        .count();
    report(&format!(
        "kafka consume-transform-produce (Java, sendOffsetsToTransaction) through a SIGKILL \
         of the coordinator's agent {killed}: {records} input records, output read_committed: \
         missing {missing}, duplicated {duplicated}, foreign {foreign}; {stored} output \
         records stored (aborted attempts included); {}",
        summary.trim()
    ));
    assert_eq!(missing, 0, "input records missing from the output");
    assert_eq!(duplicated, 0, "input records in the output twice");
    assert_eq!(foreign, 0, "output records that are no input's");
}
