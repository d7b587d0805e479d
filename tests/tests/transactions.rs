//! Transactions on three agents (real etcd + s3s-fs, `strata agent` processes), through
//! the SDK's transactional producer and `read_committed` consumers:
//! - a `read_committed` reader stops at an open transaction's last stable offset and
//!   moves once it commits; aborted records never reach it and always reach
//!   `read_uncommitted`; markers are never data;
//! - zombie fencing: of two producers with one transactional id, the older one's sends
//!   and commit fail fenced and nothing it wrote becomes visible;
//! - atomicity: transactions over 12 partitions of 2 topics while coordinators die
//!   between the commit decision and the markers (failpoint `txn-decided-exit`): every
//!   transaction's records are visible to `read_committed` all or none, each once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use strata_client::{
    Consumer, ConsumerConfig, Error, Isolation, Producer, ProducerConfig, ProducerRecord,
    StartOffset,
};
use strata_tests::compactor::create_topic;
use strata_tests::{AgentProcess, report};

fn transactional(id: &str) -> ProducerConfig {
    ProducerConfig {
        transactional_id: Some(id.to_string()),
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    }
}

fn record(partition: u32, value: String) -> ProducerRecord {
    ProducerRecord {
        partition: Some(partition),
        ..ProducerRecord::value(value)
    }
}

/// Every value `topic` holds for `isolation`, read through `server` from the log start
/// up to the end (the last stable offset for read_committed), per partition in order.
async fn read_all(server: &str, topic: &str, isolation: Isolation) -> Vec<String> {
    let mut consumer = Consumer::connect(
        server,
        ConsumerConfig {
            isolation,
            ..ConsumerConfig::default()
        },
    )
    .await
    .unwrap();
    consumer
        .assign(topic, &[], StartOffset::Earliest)
        .await
        .unwrap();
    let mut values = Vec::new();
    // Polls until a few in a row bring nothing.
    let mut quiet = 0;
    while quiet < 3 {
        let records = consumer.poll(Duration::from_millis(300)).await.unwrap();
        if records.is_empty() {
            quiet += 1;
        }
        values.extend(
            records
                .into_iter()
                .map(|r| String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap()),
        );
    }
    values
}

fn is_fenced(error: &Error) -> bool {
    error.producer_error() == Some("producer-fenced")
        || matches!(error, Error::Status(s) if s.message().contains("fenced"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_committed_stops_at_the_last_stable_offset_and_skips_aborted_records() {
    let agents = AgentProcess::start_cluster(3, "txn-lso", &["--lease-ttl-secs", "4"]);
    let server = agents[0].server();
    create_topic(&server, "lso", 3, &[]).await;
    let producer = Producer::connect(&server, transactional("lso-writer"))
        .await
        .unwrap();
    producer.init_transactions().await.unwrap();
    // Records outside any transaction, for contrast.
    let plain = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap();
    plain
        .send_and_wait("lso", record(0, "plain-0".into()))
        .await
        .unwrap();

    producer.begin_transaction().await.unwrap();
    for i in 0..9u32 {
        producer
            .send_and_wait("lso", record(i % 3, format!("committed-{i}")))
            .await
            .unwrap();
    }
    // Written after the open transaction's first record: visible to read_uncommitted
    // at once, to read_committed only once the transaction ends.
    plain
        .send_and_wait("lso", record(0, "plain-1".into()))
        .await
        .unwrap();
    let open_committed = read_all(&server, "lso", Isolation::ReadCommitted).await;
    assert_eq!(
        open_committed,
        vec!["plain-0"],
        "stopped at the open transaction"
    );
    let open_uncommitted = read_all(&server, "lso", Isolation::ReadUncommitted).await;
    assert_eq!(open_uncommitted.len(), 11, "{open_uncommitted:?}");
    let admin = strata_client::Admin::connect(&server).await.unwrap();
    let described = admin.describe_topic("lso").await.unwrap();
    let p0 = &described.partitions[0];
    assert_eq!(p0.last_stable_offset, 1, "{p0:?}");
    assert!(p0.high_watermark > p0.last_stable_offset);
    producer.commit_transaction().await.unwrap();

    producer.begin_transaction().await.unwrap();
    for i in 0..6u32 {
        producer
            .send_and_wait("lso", record(i % 3, format!("aborted-{i}")))
            .await
            .unwrap();
    }
    producer.abort_transaction().await.unwrap();

    let committed = read_all(&server, "lso", Isolation::ReadCommitted).await;
    let uncommitted = read_all(&server, "lso", Isolation::ReadUncommitted).await;
    report(&format!(
        "TRANSACTIONS lso: read_committed {} records, read_uncommitted {} (2 plain, 9 \
         committed, 6 aborted; 6 markers never returned)",
        committed.len(),
        uncommitted.len()
    ));
    let mut expected: Vec<String> = (0..9).map(|i| format!("committed-{i}")).collect();
    expected.extend(["plain-0".to_string(), "plain-1".to_string()]);
    expected.sort();
    let mut seen = committed.clone();
    seen.sort();
    assert_eq!(
        seen, expected,
        "read_committed: committed and plain records, once"
    );
    assert_eq!(
        uncommitted.len(),
        17,
        "every data record, no marker: {uncommitted:?}"
    );
    assert_eq!(
        uncommitted
            .iter()
            .filter(|v| v.starts_with("aborted"))
            .count(),
        6
    );
    let described = admin.describe_topic("lso").await.unwrap();
    for p in &described.partitions {
        assert_eq!(
            p.last_stable_offset, p.high_watermark,
            "no transaction open: {p:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_producer_of_a_transactional_id_is_fenced() {
    let agents = AgentProcess::start_cluster(3, "txn-zombie", &["--lease-ttl-secs", "4"]);
    let (a, b) = (agents[0].server(), agents[1].server());
    create_topic(&a, "fenced", 2, &[]).await;
    let zombie = Producer::connect(&a, transactional("app")).await.unwrap();
    zombie.init_transactions().await.unwrap();
    zombie.begin_transaction().await.unwrap();
    for i in 0..5 {
        zombie
            .send_and_wait("fenced", record(i % 2, format!("zombie-before-{i}")))
            .await
            .unwrap();
    }
    // The newer producer takes the id: the zombie's open transaction is aborted.
    let newer = Producer::connect(&b, transactional("app")).await.unwrap();
    newer.init_transactions().await.unwrap();
    let after = zombie
        .send_and_wait("fenced", record(0, "zombie-after".into()))
        .await;
    let commit = zombie.commit_transaction().await;
    assert!(
        after.as_ref().is_err_and(is_fenced) || commit.as_ref().is_err_and(is_fenced),
        "the zombie was not fenced: send {after:?}, commit {commit:?}"
    );
    assert!(commit.is_err(), "the zombie's commit succeeded");
    newer.begin_transaction().await.unwrap();
    for i in 0..3 {
        newer
            .send_and_wait("fenced", record(i % 2, format!("newer-{i}")))
            .await
            .unwrap();
    }
    newer.commit_transaction().await.unwrap();
    let mut visible = read_all(&a, "fenced", Isolation::ReadCommitted).await;
    visible.sort();
    report(&format!(
        "TRANSACTIONS zombie: send after fencing {}, commit {}; read_committed {visible:?}",
        after.map_or_else(|e| e.to_string(), |_| "ok".into()),
        commit.map_or_else(|e| e.to_string(), |_| "ok".into()),
    ));
    assert_eq!(visible, vec!["newer-0", "newer-1", "newer-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_is_all_or_nothing_when_its_coordinator_dies_mid_commit() {
    // Each agent aborts at its 2nd commit decision (after storing it, before any
    // marker); the test restarts it, as a supervisor would.
    let mut agents = AgentProcess::start_cluster(3, "txn-atomic", &["--lease-ttl-secs", "4"]);
    for agent in agents.iter_mut() {
        agent.set_env(&[("STRATA_FAILPOINT", "txn-decided-exit:2")]);
        tokio::task::block_in_place(|| agent.restart());
    }
    let server = agents[0].server();
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    create_topic(&server, "atomic-a", 6, &[]).await;
    create_topic(&server, "atomic-b", 6, &[]).await;
    const TRANSACTIONS: usize = 8;
    let mut outcomes: BTreeMap<usize, Result<(), String>> = BTreeMap::new();
    let mut crashes = 0;
    let producer = Producer::connect(&servers[1], transactional("atomic"))
        .await
        .unwrap();
    producer.init_transactions().await.unwrap();
    for t in 0..TRANSACTIONS {
        producer.begin_transaction().await.unwrap();
        let mut deliveries = Vec::new();
        for p in 0..12u32 {
            let topic = if p < 6 { "atomic-a" } else { "atomic-b" };
            for copy in 0..2 {
                let value = format!("t{t}-p{p}-{copy}");
                deliveries.push(producer.send(topic, record(p % 6, value)).await.unwrap());
            }
        }
        for delivery in deliveries {
            delivery.await.unwrap();
        }
        let outcome = producer.commit_transaction().await;
        outcomes.insert(t, outcome.map_err(|e| e.to_string()));
        for agent in agents.iter_mut() {
            if !agent.is_running() {
                crashes += 1;
                tokio::task::block_in_place(|| agent.restart());
            }
        }
    }
    assert!(crashes > 0, "no coordinator died mid-commit");
    // Give the coordinators a sweep to finish what a dead one left prepared.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut visible: HashMap<String, usize> = HashMap::new();
    for topic in ["atomic-a", "atomic-b"] {
        for value in read_all(&servers[2], topic, Isolation::ReadCommitted).await {
            *visible.entry(value).or_default() += 1;
        }
    }
    let mut per_transaction: BTreeMap<usize, usize> = BTreeMap::new();
    for (value, count) in &visible {
        assert_eq!(*count, 1, "{value} visible {count} times");
        let t: usize = value[1..value.find('-').unwrap()].parse().unwrap();
        *per_transaction.entry(t).or_default() += 1;
    }
    report(&format!(
        "TRANSACTIONS atomicity: {TRANSACTIONS} transactions of 24 records over 12 partitions \
         of 2 topics, {crashes} coordinator deaths between decision and markers; visible \
         per transaction {per_transaction:?}; commit outcomes {outcomes:?}"
    ));
    for t in 0..TRANSACTIONS {
        let count = per_transaction.get(&t).copied().unwrap_or(0);
        assert!(
            count == 0 || count == 24,
            "transaction {t}: {count} of its 24 records visible"
        );
        if outcomes[&t].is_ok() {
            assert_eq!(count, 24, "transaction {t} committed but is not visible");
        }
    }
}

/// `transaction.timeout.ms` aborts an abandoned transaction (its records never become
/// visible, the read_committed reader moves past it) and its producer's late commit fails
/// saying why; `strata transactions describe/abort` show and abort a hanging one; `strata
/// produce --transactional-id` commits every N lines and `strata consume --isolation
/// read-committed` reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_transactions_time_out_and_hanging_ones_can_be_aborted() {
    let agents = AgentProcess::start_cluster(3, "txn-timeout", &["--lease-ttl-secs", "4"]);
    let server = agents[0].server();
    create_topic(&server, "late", 1, &[]).await;
    let abandoned = Producer::connect(
        &server,
        ProducerConfig {
            transaction_timeout: Duration::from_secs(2),
            ..transactional("abandoned")
        },
    )
    .await
    .unwrap();
    abandoned.init_transactions().await.unwrap();
    abandoned.begin_transaction().await.unwrap();
    abandoned
        .send_and_wait("late", record(0, "never-visible".into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = abandoned.commit_transaction().await.unwrap_err();
    assert!(
        late.to_string().contains("transaction.timeout.ms"),
        "{late}"
    );

    // A hanging transaction, aborted by an operator.
    let hanging = Producer::connect(&server, transactional("hanging"))
        .await
        .unwrap();
    hanging.init_transactions().await.unwrap();
    hanging.begin_transaction().await.unwrap();
    hanging
        .send_and_wait("late", record(0, "hung".into()))
        .await
        .unwrap();
    let described = strata_tests::cli_ok(&server, &["transactions", "describe", "hanging"], b"");
    assert!(described.contains("state: Ongoing"), "{described}");
    assert!(described.contains("partition: late/0"), "{described}");
    strata_tests::cli_ok(&server, &["transactions", "abort", "hanging"], b"");
    assert!(hanging.commit_transaction().await.is_err());

    let lines: String = (0..10).map(|i| format!("line-{i}\n")).collect();
    let produced = strata_tests::cli(
        &server,
        &[
            "produce",
            "late",
            "--transactional-id",
            "cli",
            "--transaction-records",
            "3",
        ],
        lines.as_bytes(),
    );
    assert!(produced.status.success(), "{produced:?}");
    let stderr = String::from_utf8_lossy(&produced.stderr);
    assert!(stderr.contains("in 4 committed transactions"), "{stderr}");
    let committed = strata_tests::cli_ok(
        &server,
        &[
            "consume",
            "late",
            "--from-beginning",
            "--isolation",
            "read-committed",
        ],
        b"",
    );
    assert_eq!(committed, lines, "only the CLI's committed lines");
    let uncommitted = strata_tests::cli_ok(&server, &["consume", "late", "--from-beginning"], b"");
    assert_eq!(
        uncommitted,
        format!("never-visible\nhung\n{lines}"),
        "read-uncommitted sees the aborted records, never the markers"
    );
    let listed = strata_tests::cli_ok(&server, &["transactions", "list"], b"");
    report(&format!("TRANSACTIONS list:\n{listed}"));
    for (id, state) in [
        ("abandoned", "CompleteAbort"),
        ("hanging", "CompleteAbort"),
        ("cli", "CompleteCommit"),
    ] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{id}\t{state}\t"))),
            "{id} {state}: {listed}"
        );
    }
}

/// The consume-transform-produce program (`tests/src/bin/transform.rs`, its own process):
/// reads `in` in a group and writes `out` in transactions holding its offsets. Killed
/// (SIGKILL) itself, with the transaction coordinator's agent and with an owner of `out`
/// killed too, at moments spread over its run, it is started again each time (as a
/// supervisor would); at the end `out` read with read_committed holds every input record
/// exactly once, and the group has nothing left to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consume_transform_produce_writes_every_record_exactly_once_through_kills() {
    const RECORDS: usize = 100_000;
    let mut agents = AgentProcess::start_cluster(3, "txn-ctp", &["--lease-ttl-secs", "4"]);
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    create_topic(&servers[0], "in", 6, &[]).await;
    create_topic(&servers[0], "out", 6, &[]).await;
    let input = Producer::connect(&servers[0], ProducerConfig::default())
        .await
        .unwrap();
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let record = ProducerRecord::keyed(format!("k{}", i % 1_000), format!("v{i}"));
        deliveries.push(input.send("in", record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let log = tempfile::NamedTempFile::new().unwrap();
    let start_program = |server: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strata-transform"))
            .args([server, "ctp", "in", "out", "ctp-writer"])
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap()
    };
    let mut program = start_program(&servers[1]);
    let mut groups = strata_client::proto::groups_client::GroupsClient::new(
        strata_client::connect(&servers[1])
            .await
            .unwrap()
            .transport(),
    );
    let admin = strata_client::Admin::connect(&servers[1]).await.unwrap();
    let done = async |groups: &mut strata_client::proto::groups_client::GroupsClient<_>| {
        let Ok(offsets) = groups
            .fetch_offsets(strata_client::proto::FetchOffsetsRequest {
                group_id: "ctp".into(),
                topics: vec!["in".into()],
            })
            .await
        else {
            return 0;
        };
        offsets
            .into_inner()
            .offsets
            .iter()
            .map(|o| o.offset.max(0) as usize)
            .sum::<usize>()
    };
    let mut faults = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    for step in 0..6 {
        // At moments 2 to 4 s apart, varying from run to run.
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        tokio::time::sleep(Duration::from_millis(2_000 + u64::from(jitter % 2_000))).await;
        let progress = done(&mut groups).await;
        match step % 3 {
            0 => {
                program.kill().unwrap();
                program.wait().unwrap();
                program = start_program(&servers[(step + 1) % 3]);
                faults.push(format!("program at {progress}"));
            }
            1 => {
                let found = groups
                    .find_coordinator(strata_client::proto::FindCoordinatorRequest {
                        group_id: "ctp-writer".into(),
                    })
                    .await;
                if let Ok(found) = found {
                    let id = found.into_inner().agent_id;
                    if let Some(agent) = agents.iter_mut().find(|a| a.agent_id() == id) {
                        tokio::task::block_in_place(|| agent.restart());
                        faults.push(format!("coordinator {id} at {progress}"));
                    }
                }
            }
            _ => {
                let described = admin.describe_topic("out").await.unwrap();
                let owner = described.partitions[step % 6].owner_agent_id.clone();
                if let Some(agent) = agents.iter_mut().find(|a| a.agent_id() == owner) {
                    tokio::task::block_in_place(|| agent.restart());
                    faults.push(format!("owner {owner} of out/{} at {progress}", step % 6));
                }
            }
        }
    }
    // Then let it finish, restarting it if it gave up on an error.
    loop {
        let progress = done(&mut groups).await;
        if progress >= RECORDS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {progress} of {RECORDS}; program log:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        if program.try_wait().unwrap().is_some() {
            program = start_program(&servers[0]);
            faults.push(format!(
                "program exited on its own at {progress}, restarted"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    program.kill().unwrap();
    let _ = program.wait();
    // The group's offsets, committed by the transactions, leave nothing to read.
    let described = groups
        .describe_group(strata_client::proto::DescribeGroupRequest {
            group_id: "ctp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    for p in described.partitions.iter().filter(|p| p.topic == "in") {
        assert_eq!((p.lag, p.lag_committed), (0, 0), "{p:?}");
        assert_eq!(p.last_stable_offset, p.log_end_offset, "{p:?}");
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for value in read_all(&servers[2], "out", Isolation::ReadCommitted).await {
        *counts.entry(value).or_default() += 1;
    }
    let duplicated = counts.values().filter(|c| **c > 1).count();
    let missing = (0..RECORDS)
        .filter(|i| !counts.contains_key(&format!("v{i}")))
        .count();
    let uncommitted = read_all(&servers[2], "out", Isolation::ReadUncommitted)
        .await
        .len();
    report(&format!(
        "TRANSACTIONS consume-transform-produce: {RECORDS} input records; out read_committed \
         {} distinct, {duplicated} duplicated, {missing} missing; read_uncommitted {uncommitted} \
         (aborted attempts included); faults: {}",
        counts.len(),
        faults.join(", ")
    ));
    assert_eq!(
        (duplicated, missing),
        (0, 0),
        "every input record exactly once"
    );
    assert_eq!(counts.len(), RECORDS);
}
