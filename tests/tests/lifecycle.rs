//! Topic incarnations: every topic has an id (a UUID, as Kafka's KIP-516), and a topic
//! deleted and created again is a different topic. A write resolved against the old
//! incarnation — an agent's cached definition, an ownership taken before the delete, a
//! request naming the old id — is refused, never applied to the new one (three agents,
//! real etcd + s3s-fs).

use std::time::{Duration, Instant};

use strata_client::proto;
use strata_client::proto::admin_client::AdminClient;
use strata_client::proto::log_client::LogClient;
use strata_client::{Consumer, ConsumerConfig, StartOffset};
use strata_tests::compactor::create_topic;
use strata_tests::{AgentProcess, cli, cli_ok, one_record, report};
use tonic::Code;

async fn topic_id(server: &str, topic: &str) -> String {
    let channel = strata_client::connect(server).await.unwrap();
    AdminClient::new(channel.transport())
        .describe_topic(proto::DescribeTopicRequest {
            name: topic.to_string(),
            ..Default::default()
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
    // An SDK consumer reads partition 1 of the old incarnation to its end (offset 1).
    let mut reader = Consumer::connect(c, ConsumerConfig::default())
        .await
        .unwrap();
    reader
        .assign("t", &[1], StartOffset::Earliest)
        .await
        .unwrap();
    let mut old = Vec::new();
    while old.is_empty() {
        old.extend(reader.poll(Duration::from_millis(200)).await.unwrap());
    }
    assert_eq!(old[0].value.as_deref(), Some(&b"old-1"[..]));
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
    // The consumer, refused with the old id, moves to the new incarnation at its log
    // start: it reads all three new records, not the new incarnation from old offset 1.
    let mut new = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while new.len() < 3 {
        new.extend(reader.poll(Duration::from_millis(200)).await.unwrap());
        assert!(Instant::now() < deadline, "the consumer read {new:?}");
    }
    let read: Vec<(i64, String)> = new
        .iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned(),
            )
        })
        .collect();
    let mut values: Vec<&str> = read.iter().map(|(_, v)| v.as_str()).collect();
    values.sort_unstable();
    assert_eq!(values, ["new-0", "new-1", "new-2"], "{read:?}");
    assert_eq!(read.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [0, 1, 2]);

    // A late request naming the old incarnation costs the current one nothing: no agent
    // gives up (and takes again, under a new epoch) the partitions it owns.
    let epochs = async || -> Vec<(String, u64)> {
        strata_client::Admin::connect(a)
            .await
            .unwrap()
            .describe_topic("t")
            .await
            .unwrap()
            .partitions
            .into_iter()
            .map(|p| (p.owner_agent_id, p.owner_epoch))
            .collect()
    };
    let before = epochs().await;
    for server in &servers {
        let channel = strata_client::connect(server).await.unwrap();
        let mut log = LogClient::new(channel.transport());
        for p in 0..2 {
            let _ = log.produce(produce("t", &old_id, p, "late")).await;
        }
    }
    // (A partition given up would be taken again within a control tick, 200 ms.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        epochs().await,
        before,
        "an old-incarnation request moved a partition"
    );

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
            isolation_level: 0,
            topic: "t".into(),
            topic_id: old_id.clone(),
            partition: 1,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
            zone: String::new(),
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
            named_only: false,
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
            isolation_level: 0,
            topic: "d".into(),
            topic_id: String::new(),
            partition: 0,
            offset: 10,
            max_bytes: 0,
            max_wait_ms: 0,
            zone: String::new(),
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

/// Item 4's acceptance: a topic grown from 6 to 12 partitions under load, read by a
/// group of three member processes. Keyed records move to `murmur2(key) % 12` (and each
/// producer, once it uses the new count, never goes back), the members get the new
/// partitions, no partition is owned by two members at once, and every acknowledged
/// record is in the log and read by the group.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_grown_under_load_places_keys_anew_and_its_group_reads_everything() {
    use std::collections::{BTreeSet, HashMap, HashSet};
    use strata_client::ProducerConfig;
    use strata_proto::partition_for_key;
    use strata_tests::groups::{Member, overlaps};
    use strata_tests::history::{Load, SendKind, check, key_of};

    let agents = AgentProcess::start_cluster(3, "grow", &[]);
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    create_topic(&servers[0], "g", 6, &[]).await;
    let config = ProducerConfig {
        metadata_max_age: Duration::from_millis(500),
        ..ProducerConfig::default()
    };
    let load = Load::start_with(&servers, "g", &[SendKind::Keyed; 3], config).await;
    let members: Vec<Member> = servers
        .iter()
        .map(|server| Member::start(server, "g", "growers", &[]))
        .collect();
    let owned =
        |members: &[Member]| -> BTreeSet<u32> { members.iter().flat_map(Member::owned).collect() };
    let deadline = Instant::now() + Duration::from_secs(60);
    while owned(&members).len() < 6 || load.history().acked() < 2_000 {
        assert!(
            Instant::now() < deadline,
            "the group never took the 6 partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Never fewer partitions; 12 through another agent while the load runs.
    let shrink = cli(
        &servers[0],
        &["topic", "add-partitions", "g", "--to", "4"],
        b"",
    );
    assert!(!shrink.status.success());
    assert!(String::from_utf8_lossy(&shrink.stderr).contains("6"));
    cli_ok(
        &servers[1],
        &["topic", "add-partitions", "g", "--to", "12"],
        b"",
    );
    let grown = Instant::now();
    propagation(&servers, "g", Some(12)).await;
    while owned(&members).len() < 12 {
        assert!(
            grown.elapsed() < Duration::from_secs(60),
            "the group owns only {:?}",
            owned(&members)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members_took = grown.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let history = load.stop().await;

    // Nothing acknowledged lost, in the log.
    let found = check(&history, &servers[2], "g").await;
    assert_eq!((found.lost, found.out_of_order), (0, 0), "{found}");
    // Keys: at the old or the new count, and a producer that used the new count for a
    // key that moved never went back to the old one.
    let acked = history.acked_records();
    let mut by_producer: HashMap<&str, Vec<(u64, u32, bool)>> = HashMap::new();
    for (value, position) in &acked {
        let key = key_of(value).unwrap();
        let (old, new) = (
            partition_for_key(key.as_bytes(), 6),
            partition_for_key(key.as_bytes(), 12),
        );
        assert!(
            position.partition == old || position.partition == new,
            "{value} with {key} at {}",
            position.partition
        );
        if old != new {
            let (producer, seq) = value.rsplit_once('-').unwrap();
            by_producer.entry(producer).or_default().push((
                seq.parse().unwrap(),
                position.partition,
                position.partition == new,
            ));
        }
    }
    for (producer, mut sends) in by_producer {
        sends.sort();
        let first_new = sends.iter().position(|s| s.2).expect("a key moved");
        assert!(
            sends[first_new..].iter().all(|s| s.2),
            "producer {producer} went back to the old partition count"
        );
    }
    let new_partitions: BTreeSet<u32> = acked
        .values()
        .map(|p| p.partition)
        .filter(|p| *p >= 6)
        .collect();
    assert_eq!(
        new_partitions.len(),
        6,
        "keyed records reached {new_partitions:?}"
    );

    // The group: exclusive ownership, and every acknowledged record read.
    let refs: Vec<&Member> = members.iter().collect();
    let violations = overlaps(&refs);
    assert!(violations.is_empty(), "{violations:#?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let unread = loop {
        let read: HashSet<String> = members
            .iter()
            .flat_map(|m| m.consumed().into_iter().map(|c| c.value))
            .collect();
        let unread = acked.keys().filter(|v| !read.contains(*v)).count();
        if unread == 0 || Instant::now() > deadline {
            break unread;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    report(&format!(
        "ADD PARTITIONS: 6 -> 12 under load with a 3-member group: {found} \
         members_owned_all_12_after_ms={} unread_by_group={unread} overlaps=0",
        members_took.as_millis()
    ));
    assert_eq!(unread, 0);
}

/// The acceptance race: producers of every kind (explicit partitions, keyed, keyless)
/// through all three agents, and a compactor merging, while the topic is deleted and
/// created again, smaller and larger, 20 times. Before each deletion the load pauses (every send answered) and the
/// incarnation is read whole; the deletion starts as the load resumes, so sends race it.
/// Every acknowledgement names its incarnation, and the history checker compares each
/// with the snapshot of that incarnation.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_and_creating_a_topic_under_load_loses_and_mixes_nothing() {
    use strata_client::ProducerConfig;
    use strata_tests::history::{Load, SendKind, Snapshot, compare};

    const TOPIC: &str = "race";
    let kind = strata_tests::AgentKind::new_cluster("race");
    let agents: Vec<AgentProcess> = (0..3)
        .map(|_| AgentProcess::start(kind.clone(), &[]))
        .collect();
    let servers: Vec<String> = agents.iter().map(AgentProcess::server).collect();
    // A compactor merging as fast as it can, on incarnations as they come and go.
    let _compactor = strata_tests::compactor::CompactorProcess::start(
        &kind,
        &["--interval", "300ms", "--merge-min-age", "0s"],
    );
    create_topic(&servers[0], TOPIC, 4, &[]).await;
    let kinds = [
        SendKind::Explicit,
        SendKind::Keyed,
        SendKind::Keyless,
        SendKind::Keyed,
        SendKind::Keyless,
        SendKind::Explicit,
    ];
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(10),
        metadata_max_age: Duration::from_secs(1),
        ..ProducerConfig::default()
    };
    let load = Load::start_with(&servers, TOPIC, &kinds, config).await;
    let sizes = [6, 2, 8, 3, 5, 1, 7, 4, 6, 2, 8, 3, 5, 1, 7, 4, 6, 2, 8, 3];
    // STRATA_RACE_ROUNDS=N runs only the first N rounds (debugging).
    let rounds = std::env::var("STRATA_RACE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(sizes.len());
    let sizes = &sizes[..rounds];
    let mut snapshots = Vec::new();
    let mut stale_served = 0;
    let mut took_effect = Duration::ZERO;
    for (round, partitions) in sizes.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(600)).await;
        load.pause().await;
        let snapshot = Snapshot::read(&servers[round % 3], TOPIC).await;
        let old_id = snapshot.topic_id.clone();
        snapshots.push(snapshot);
        load.resume();
        cli_ok(&servers[round % 3], &["topic", "delete", TOPIC], b"");
        took_effect = took_effect.max(propagation(&servers, TOPIC, None).await);
        // Deleted everywhere: no agent serves the old incarnation, by id or by name.
        for server in &servers {
            let channel = strata_client::connect(server).await.unwrap();
            let mut log = LogClient::new(channel.transport());
            for topic_id in [old_id.clone(), String::new()] {
                let fetch = proto::FetchRequest {
                    isolation_level: 0,
                    topic: TOPIC.into(),
                    topic_id,
                    partition: 0,
                    offset: 0,
                    max_bytes: 0,
                    max_wait_ms: 0,
                    zone: String::new(),
                };
                if log.fetch(fetch).await.is_ok() {
                    stale_served += 1;
                    eprintln!("round {round}: {server} served the deleted incarnation {old_id}");
                }
            }
        }
        create_topic(&servers[(round + 1) % 3], TOPIC, *partitions, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    load.pause().await;
    snapshots.push(Snapshot::read(&servers[0], TOPIC).await);
    let history = load.stop().await;
    let found = compare(&history, &snapshots);
    for (reason, count) in history.failure_reasons(8) {
        eprintln!("failed sends: {count} × {reason}");
    }
    let written: usize = snapshots.iter().filter(|s| s.stored > 0).count();
    report(&format!(
        "TOPIC RACE: {rounds} deletions and re-creations under load, 3 agents: {found} \
         stale_served={stale_served} incarnations_written={written} \
         deletion_took_effect_everywhere_within_ms={}",
        took_effect.as_millis()
    ));
    assert_eq!(found.lost, 0, "{found}");
    assert_eq!(found.in_other_incarnation, 0, "{found}");
    assert_eq!(found.out_of_order, 0, "{found}");
    assert_eq!(stale_served, 0);
    assert_eq!(found.incarnations, rounds + 1);
    assert!(
        written > rounds * 9 / 10,
        "the load wrote to only {written} of {} incarnations",
        rounds + 1
    );
    assert!(found.acked > 10_000, "{found}");
}

/// etcd's count of KV requests answered (Range, Txn, Put, DeleteRange), from its
/// `/metrics`.
fn etcd_kv_requests(endpoint: &str) -> u64 {
    strata_tests::http_get(&format!("http://{endpoint}/metrics"))
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("etcdserverpb.KV"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until the cluster is quiet (fewer than `quiet` etcd requests in half a second):
/// partitions taken, assignment stored.
async fn settle(endpoint: &str, quiet: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let before = etcd_kv_requests(endpoint);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if etcd_kv_requests(endpoint) - before < quiet {
            return;
        }
        assert!(Instant::now() < deadline, "the cluster never settled");
    }
}

/// etcd requests per `Metadata` call through `server`: requests during `calls` calls,
/// less what the cluster asks in as long without them.
async fn metadata_cost(endpoint: &str, server: &str, calls: u32) -> (f64, usize, u64, u64) {
    let channel = strata_client::connect(server).await.unwrap();
    let mut cluster = proto::cluster_client::ClusterClient::new(channel.transport())
        .max_decoding_message_size(64 << 20);
    let started = Instant::now();
    let before = etcd_kv_requests(endpoint);
    let mut partitions = 0;
    for _ in 0..calls {
        let metadata = cluster
            .metadata(proto::MetadataRequest::default())
            .await
            .unwrap()
            .into_inner();
        partitions = metadata.topics.iter().map(|t| t.partitions.len()).sum();
    }
    let during = etcd_kv_requests(endpoint) - before;
    let took = started.elapsed();
    let before = etcd_kv_requests(endpoint);
    tokio::time::sleep(took).await;
    let idle = etcd_kv_requests(endpoint) - before;
    (
        (during as f64 - idle as f64).max(0.0) / f64::from(calls),
        partitions,
        during,
        idle,
    )
}

/// Item 7's acceptance: `Metadata` answers from the state the agent follows, so its etcd
/// requests per call do not grow with the partition count (it was three reads per
/// partition): two, the live agents and the controller, read fresh so that no client
/// routes to an agent that just left. The cluster has its own etcd, so that only its
/// requests are counted.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_costs_no_etcd_request_per_partition() {
    use strata_tests::AgentKind;
    use strata_tests::etcd::EtcdProcess;

    let etcd = EtcdProcess::start();
    let AgentKind::Agent {
        mut env,
        cluster,
        bucket,
    } = AgentKind::new_cluster("metascale")
    else {
        unreachable!()
    };
    env.etcd = etcd.endpoint();
    let agent = AgentProcess::start(
        AgentKind::Agent {
            env,
            cluster,
            bucket,
        },
        &[],
    );
    let server = agent.server();
    let endpoint = etcd.endpoint();
    create_topic(&server, "small", 100, &[]).await;
    settle(&endpoint, 20).await;
    let (small, small_partitions, small_during, small_idle) =
        metadata_cost(&endpoint, &server, 50).await;
    cli_ok(
        &server,
        &["topic", "add-partitions", "small", "--to", "10000"],
        b"",
    );
    settle(&endpoint, 20).await;
    let (large, large_partitions, large_during, large_idle) =
        metadata_cost(&endpoint, &server, 50).await;
    assert_eq!((small_partitions, large_partitions), (100, 10_000));
    report(&format!(
        "METADATA: etcd requests per Metadata call: {small:.2} with 100 partitions, \
         {large:.2} with 10,000 partitions (50 calls each; etcd requests during the calls \
         {small_during} and {large_during}, in as long idle {small_idle} and {large_idle})"
    ));
    // DescribeTopic gives offsets: three keys per partition, read in transactions of
    // etcd's --max-txn-ops (128) reads.
    let admin = strata_client::Admin::connect(&server).await.unwrap();
    let before = etcd_kv_requests(&endpoint);
    let described = admin.describe_topic("small").await.unwrap();
    let describe = etcd_kv_requests(&endpoint) - before;
    assert_eq!(described.partitions.len(), 10_000);
    report(&format!(
        "DESCRIBE: etcd requests for one DescribeTopic of 10,000 partitions: {describe} \
         (30,000 keys in transactions of 128 reads, and the background of its duration)"
    ));
    assert!(
        describe < 1_000,
        "{describe} etcd requests for one DescribeTopic"
    );
    assert!(large < 3.0, "{large} etcd requests per Metadata call");
    assert!(small < 3.0, "{small} etcd requests per Metadata call");
    assert!(
        (large - small).abs() < 1.5,
        "Metadata costs more etcd requests with more partitions: {small} -> {large}"
    );
}

/// Item 3: `compression.type` altered on a running topic: the next flush uses it. The
/// codec is read from the stored batches themselves (RecordBatch v2 attributes, bits
/// 0-2: 0 none, 3 lz4, 4 zstd).
#[tokio::test(flavor = "multi_thread")]
async fn an_altered_compression_type_applies_to_the_next_flush() {
    use strata_client::{Producer, ProducerConfig, ProducerRecord};
    use strata_tests::compactor::{index, object_path, setup};

    let setup = setup("compression", &["--linger-ms", "0"]).await;
    let server = setup.agent.server();
    create_topic(&server, "z", 1, &[]).await;
    let producer = Producer::connect(&server, ProducerConfig::default())
        .await
        .unwrap();
    let send = async |value: &str| {
        let mut record = ProducerRecord::value(value.repeat(500));
        record.partition = Some(0);
        producer.send_and_wait("z", record).await.unwrap();
    };
    send("plain ").await;
    cli_ok(
        &server,
        &["topic", "alter", "z", "--set", "compression.type=zstd"],
        b"",
    );
    send("squeezed ").await;
    cli_ok(
        &server,
        &["topic", "alter", "z", "--set", "compression.type=lz4"],
        b"",
    );
    send("quick ").await;
    let codecs: Vec<u8> = index(&setup.metastore, "z", 0)
        .await
        .iter()
        .map(|entry| {
            let object =
                std::fs::read(object_path(&setup.env, &setup.bucket, &entry.object)).unwrap();
            let batch = &object[entry.byte_start as usize..];
            // base offset 8, length 4, leader epoch 4, magic 1, crc 4: attributes at 21.
            assert_eq!(batch[16], 2, "RecordBatch v2");
            batch[22] & 0x07
        })
        .collect();
    assert_eq!(codecs, [0, 4, 3], "none, then zstd, then lz4");
    assert_eq!(read_all(&server, "z").len(), 3);
}
