//! The Kafka listener with real Kafka clients (kcat, confluent-kafka, kafka-python, KafkaJS
//! and Kafka's own Java client), on 3 agents with etcd + s3s-fs and on `strata dev`:
//!
//! - each client creates a topic (kcat, which has no admin API: `strata topic create`),
//!   produces 100,000 keyed records with headers in every codec it has, and reads them
//!   back by partition assignment from the beginning: every acknowledged record is there
//!   once, in its partition's order and its key's murmur2 partition, headers intact; and
//!   `strata consume --json` reads exactly the same records;
//! - KafkaJS (whose consumer needs consumer groups) produces the same way; every record is
//!   read by `strata consume --json` at its acknowledged offset;
//! - records produced through gRPC (`strata produce`) read the same through kcat;
//! - confluent-kafka's and Java's AdminClient: configs, partitions, offsets, records,
//!   cluster, each checked against what strata shows;
//! - the Java producer with its defaults (idempotent, acks=all) through a SIGKILL of a
//!   partition owner: every acknowledged record present exactly once;
//! - SASL over TLS (PLAIN with kcat and the Java client, OAUTHBEARER with Java): the right
//!   token works, a wrong or missing one is refused and changes nothing; before
//!   authenticating only ApiVersions and SASL are served;
//! - a sweep of malformed frames closes each one's connection and leaves the agent
//!   serving.

use std::time::Duration;

use strata_tests::kafka::{
    answers_api_versions, driver, driver_rows, frame, java, java_ok, kafkajs, kcat, kcat_rows,
    raw_exchange, request, strata_rows,
};
use strata_tests::{AgentKind, AgentProcess, cli_ok, report, unique_name};

const RECORDS: usize = 100_000;
const PARTITIONS: u32 = 8;
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Creates a topic through a client's admin API, round-trips the records, and checks
/// `strata consume --json` reads what the client read.
fn python_roundtrip(client: &str, bootstrap: &str, server: &str) {
    let topic = format!("{client}-records");
    let out = tempfile::NamedTempFile::new().unwrap();
    let args = [
        bootstrap,
        &topic,
        &PARTITIONS.to_string(),
        &RECORDS.to_string(),
        out.path().to_str().unwrap(),
    ];
    let summary = if client == "java" {
        java_ok(&[&["roundtrip"], &args[..]].concat())
    } else {
        driver(&[&["roundtrip", client], &args[..]].concat())
    };
    let theirs = driver_rows(out.path());
    assert_eq!(theirs.len(), RECORDS, "{client}: {summary}");
    let ours = strata_rows(server, &topic);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{client}: strata consume reads another count"
    );
    for (position, row) in &theirs {
        assert_eq!(
            ours.get(position),
            Some(row),
            "{client}: strata consume reads {position:?} differently"
        );
    }
    report(&format!(
        "kafka {client}: {} records in {} codecs acknowledged and read back, identical \
         through strata consume --json ({})",
        theirs.len(),
        CODECS.len(),
        summary.trim()
    ));
}

/// kcat: 100,000 keyed lines (a fifth in each codec) with headers, read back with
/// `kcat -C -J`; the same through `strata consume --json`.
fn kcat_roundtrip(bootstrap: &str, server: &str) {
    let topic = "kcat-records";
    cli_ok(
        server,
        &["topic", "create", topic, "-p", &PARTITIONS.to_string()],
        b"",
    );
    let per_codec = RECORDS / CODECS.len();
    for (n, codec) in CODECS.iter().enumerate() {
        let lines: String = (n * per_codec..(n + 1) * per_codec)
            .map(|i| format!("key-{i}:value-{i}-{codec}\n"))
            .collect();
        let header = format!("codec={codec}");
        kcat(
            &[
                "-b",
                bootstrap,
                "-P",
                "-t",
                topic,
                "-K:",
                "-H",
                &header,
                "-H",
                "source=kcat",
                "-z",
                codec,
                "-X",
                "partitioner=murmur2_random",
                "-X",
                "enable.idempotence=true",
            ],
            lines.as_bytes(),
        );
    }
    let theirs = kcat_rows(bootstrap, topic, &[]);
    assert_eq!(theirs.len(), RECORDS);
    let mut keys = std::collections::HashSet::new();
    let mut last = std::collections::HashMap::new();
    for ((partition, offset), row) in &theirs {
        let key = row.key.clone().expect("keyed");
        let i: usize = key.trim_start_matches("key-").parse().unwrap();
        let codec = CODECS[i / per_codec];
        assert!(keys.insert(key.clone()), "{key} twice");
        assert_eq!(
            *partition,
            strata_proto::partition_for_key(key.as_bytes(), PARTITIONS),
            "{key} is not in its murmur2 partition"
        );
        assert!(
            last.insert(*partition, *offset)
                .is_none_or(|before| before < *offset),
            "partition {partition} out of order"
        );
        assert_eq!(row.value.as_deref(), Some(&*format!("value-{i}-{codec}")));
        assert_eq!(
            row.headers,
            vec![
                ("codec".to_string(), codec.to_string()),
                ("source".to_string(), "kcat".to_string())
            ]
        );
    }
    assert_eq!(
        strata_rows(server, topic),
        theirs,
        "strata consume reads kcat's records differently"
    );
    report(&format!(
        "kafka kcat: {RECORDS} records in {} codecs produced and read back, identical through \
         strata consume --json",
        CODECS.len()
    ));
}

/// KafkaJS: its admin client creates the topic, an idempotent producer sends 100,000 keyed
/// records with headers in each codec it has (none, gzip, snappy, lz4); every one is
/// read by `strata consume --json` at its acknowledged partition and offset, with its
/// value and headers, in its key's murmur2 partition; and a KafkaJS consumer reading from
/// the beginning (through a consumer group: KafkaJS has no `assign()`) gets every one of
/// them once, in order within each partition, identical to what `strata consume` reads.
fn kafkajs_roundtrip(bootstrap: &str, server: &str) {
    let topic = "kafkajs-records";
    let consumed = tempfile::NamedTempFile::new().unwrap();
    let out = kafkajs(&[
        bootstrap,
        topic,
        &PARTITIONS.to_string(),
        &RECORDS.to_string(),
        consumed.path().to_str().unwrap(),
    ]);
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let codecs: Vec<&str> = out["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let acked = out["acknowledged"].as_object().unwrap();
    let per_codec = RECORDS / codecs.len();
    assert_eq!(acked.len(), per_codec * codecs.len());
    let ours = strata_rows(server, topic);
    assert_eq!(ours.len(), acked.len(), "strata reads another count");
    for (key, position) in acked {
        let position = (
            position[0].as_u64().unwrap() as u32,
            position[1].as_i64().unwrap(),
        );
        let row = ours
            .get(&position)
            .unwrap_or_else(|| panic!("{key}: nothing at its acknowledged {position:?}"));
        let i: usize = key.trim_start_matches("key-").parse().unwrap();
        let codec = codecs[i / per_codec];
        assert_eq!(row.key.as_deref(), Some(key.as_str()));
        assert_eq!(
            row.value.as_deref(),
            Some(&*format!("value-{i}-{codec}-").repeat(1 + i % 7))
        );
        assert_eq!(
            row.headers,
            vec![
                ("n".to_string(), i.to_string()),
                ("codec".to_string(), codec.to_string())
            ]
        );
        assert_eq!(
            position.0,
            strata_proto::partition_for_key(key.as_bytes(), PARTITIONS),
            "{key} is not in its murmur2 partition"
        );
    }
    // What KafkaJS's consumer read: every stored record once, in partition order.
    let mut last: std::collections::BTreeMap<u32, i64> = Default::default();
    let mut read = std::collections::BTreeSet::new();
    for line in std::fs::read_to_string(consumed.path()).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let position = (v[0].as_u64().unwrap() as u32, v[1].as_i64().unwrap());
        let row = ours
            .get(&position)
            .unwrap_or_else(|| panic!("KafkaJS read {position:?}, which strata does not hold"));
        assert_eq!(row.key.as_deref(), v[2].as_str(), "key at {position:?}");
        assert_eq!(row.value.as_deref(), v[3].as_str(), "value at {position:?}");
        let headers: Vec<(String, String)> = v[4]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
            .collect();
        assert_eq!(row.headers, headers, "headers at {position:?}");
        if let Some(previous) = last.insert(position.0, position.1) {
            assert!(
                position.1 > previous,
                "KafkaJS read partition {} out of order: {} after {previous}",
                position.0,
                position.1
            );
        }
        assert!(read.insert(position), "KafkaJS read {position:?} twice");
    }
    assert_eq!(
        read.len(),
        ours.len(),
        "KafkaJS's consumer read another count"
    );
    report(&format!(
        "kafka kafkajs: {} records in {} codecs ({}) acknowledged, each read by strata \
         consume --json at its acknowledged offset with its value and headers; KafkaJS's \
         consumer (group, from the beginning) read all {} once, in partition order",
        acked.len(),
        codecs.len(),
        codecs.join(", "),
        read.len()
    ));
}

/// Records produced through gRPC read the same through kcat.
fn grpc_to_kcat(bootstrap: &str, server: &str) {
    let topic = "from-grpc";
    cli_ok(server, &["topic", "create", topic, "-p", "3"], b"");
    let lines: String = (0..1000)
        .map(|i| format!("g-{i}:grpc-value-{i}\n"))
        .collect();
    cli_ok(
        server,
        &["produce", topic, "--key-separator", ":", "-H", "via=grpc"],
        lines.as_bytes(),
    );
    let ours = strata_rows(server, topic);
    assert_eq!(ours.len(), 1000);
    assert_eq!(kcat_rows(bootstrap, topic, &[]), ours);
}

/// confluent-kafka's AdminClient, each result checked against `strata topic describe`.
fn admin(bootstrap: &str, server: &str, agents: usize) {
    let topic = "admin-checked";
    let seen: serde_json::Value =
        serde_json::from_str(driver(&["admin", bootstrap, topic]).trim()).unwrap();
    // Created with retention.ms set: its source is the topic (1), the rest defaults (5).
    assert_eq!(
        seen["configs"]["retention.ms"],
        serde_json::json!(["3600000", 1])
    );
    assert_eq!(
        seen["configs"]["cleanup.policy"],
        serde_json::json!(["delete", 5])
    );
    assert_eq!(seen["configs"].as_object().unwrap().len(), 11);
    // Altered: max.message.bytes set, retention.ms back to its default.
    assert_eq!(
        seen["altered"]["max.message.bytes"],
        serde_json::json!(["2000000", 1])
    );
    assert_eq!(
        seen["altered"]["retention.ms"],
        serde_json::json!(["604800000", 5])
    );
    assert_eq!(seen["partitions"], 4);
    // 10 records 1 s apart from base; the first at or after base + 4.5 s is offset 5.
    assert_eq!(
        seen["offsets"],
        serde_json::json!({"earliest": 0, "latest": 10, "timestamp": 5, "max_timestamp": 9})
    );
    assert_eq!(seen["low_watermark"], 3);
    assert_eq!(seen["earliest_after_delete"], 3);
    // Every live agent is a node.
    let nodes = seen["cluster"]["nodes"].as_array().unwrap().len();
    assert_eq!(nodes, agents, "{seen}");
    assert!(seen["cluster"]["controller"].is_number(), "{seen}");
    assert!(!seen["cluster"]["cluster_id"].as_str().unwrap().is_empty());
    report(&format!(
        "kafka admin (confluent-kafka): create, describe/alter configs, create partitions, \
         list offsets, delete records, describe cluster ({nodes} nodes), delete: all as \
         strata shows them"
    ));
    // Deleted at the end: strata no longer knows it.
    let described = strata_tests::cli(server, &["topic", "describe", topic], b"");
    assert!(!described.status.success());
}

/// Java's AdminClient; the topic id it sees is the one strata shows.
fn java_admin(bootstrap: &str, server: &str, agents: usize) {
    let topic = "java-admin";
    let seen: serde_json::Value =
        serde_json::from_str(java_ok(&["admin", bootstrap, topic]).trim()).unwrap();
    assert_eq!(
        seen["configs"]["retention.ms"],
        serde_json::json!(["3600000", "DYNAMIC_TOPIC_CONFIG"])
    );
    assert_eq!(
        seen["configs"]["max.message.bytes"],
        serde_json::json!(["1048576", "DEFAULT_CONFIG"])
    );
    assert_eq!(
        seen["altered"]["max.message.bytes"],
        serde_json::json!(["2000000", "DYNAMIC_TOPIC_CONFIG"])
    );
    assert_eq!(
        seen["altered"]["retention.ms"],
        serde_json::json!(["604800000", "DEFAULT_CONFIG"])
    );
    assert_eq!(seen["partitions"], 4);
    assert_eq!(
        seen["offsets"],
        serde_json::json!({"earliest": 0, "latest": 10, "timestamp": 5, "max_timestamp": 9})
    );
    assert_eq!(seen["earliest_after_delete"], 3);
    assert_eq!(seen["nodes"], agents);
    assert_eq!(seen["deleted_topic_listed"], false);
    report(&format!(
        "kafka admin (Java AdminClient): create, describe/alter configs, create partitions, \
         list offsets, delete records, describe cluster ({agents} nodes), delete: all as \
         strata shows them"
    ));
    // The id Java shows (base64) is the topic's id as strata shows it (a UUID).
    let java_id = java_ok(&["topic-id", bootstrap, "java-records"]);
    let java_id = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        java_id.trim(),
    )
    .unwrap();
    let described = cli_ok(server, &["topic", "describe", "java-records"], b"");
    let uuid: String = described
        .lines()
        .find_map(|l| l.trim().strip_prefix("id "))
        .unwrap()
        .replace('-', "");
    let hex: String = java_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, uuid, "{described}");
}

/// The admin checks against `strata topic describe` while the topic exists.
fn admin_matches_describe(bootstrap: &str, server: &str) {
    let topic = "admin-described";
    let seen: serde_json::Value =
        serde_json::from_str(driver(&["describe", bootstrap, topic]).trim()).unwrap();
    let described = cli_ok(server, &["topic", "describe", topic], b"");
    assert!(
        described.starts_with(&format!("topic {topic}: {} partitions", seen["partitions"])),
        "{described}"
    );
    for (key, value) in seen["configs"].as_object().unwrap() {
        let (value, source) = (value[0].as_str().unwrap(), value[1].as_i64().unwrap());
        let line = format!("  {key}={value}\t");
        let shown = described
            .lines()
            .find(|l| l.starts_with(&line[..line.len() - 1]))
            .unwrap_or_else(|| panic!("{key} not shown as {value}:\n{described}"));
        assert_eq!(
            shown.ends_with("(default)"),
            source == 5,
            "{key}: source {source} but strata shows {shown}"
        );
    }
    // Offsets: the partition's log start and high watermark as strata shows them.
    let row = described
        .lines()
        .find(|l| l.starts_with("0\t"))
        .expect("partition 0's row");
    let columns: Vec<&str> = row.split('\t').collect();
    assert_eq!(columns[1], seen["earliest"].to_string(), "{described}");
    assert_eq!(columns[2], seen["latest"].to_string(), "{described}");
}

#[test]
fn kafka_clients_on_three_agents() {
    let agents = AgentProcess::start_cluster(3, "kafka", &[]);
    let bootstrap = agents
        .iter()
        .map(AgentProcess::kafka_bootstrap)
        .collect::<Vec<_>>()
        .join(",");
    let server = agents[0].server();
    python_roundtrip("confluent", &bootstrap, &server);
    python_roundtrip("kafka-python", &bootstrap, &server);
    python_roundtrip("java", &bootstrap, &server);
    kcat_roundtrip(&bootstrap, &server);
    kafkajs_roundtrip(&bootstrap, &server);
    grpc_to_kcat(&bootstrap, &server);
    admin(&bootstrap, &server, agents.len());
    java_admin(&bootstrap, &server, agents.len());
    admin_matches_describe(&bootstrap, &server);
    // Every agent is a broker of the Kafka cluster.
    let metadata = kcat(&["-b", &bootstrap, "-L", "-J"], b"");
    let metadata: serde_json::Value = serde_json::from_str(metadata.trim()).unwrap();
    assert_eq!(
        metadata["brokers"].as_array().unwrap().len(),
        3,
        "{metadata}"
    );
}

#[test]
fn kafka_clients_on_dev() {
    let data = tempfile::tempdir().unwrap();
    let dev = AgentProcess::start(
        AgentKind::Dev {
            data_dir: data.path().to_path_buf(),
        },
        &[],
    );
    let bootstrap = dev.kafka_bootstrap();
    python_roundtrip("confluent", &bootstrap, &dev.server());
    kcat_roundtrip(&bootstrap, &dev.server());
    grpc_to_kcat(&bootstrap, &dev.server());
    // The listener's metrics: requests by API, connections.
    let metrics = strata_tests::http_get(&dev.metrics_url());
    for metric in [
        "strata_kafka_requests_total{api=\"produce\"}",
        "strata_kafka_requests_total{api=\"fetch\"}",
        "strata_kafka_requests_total{api=\"metadata\"}",
        "strata_kafka_request_seconds_bucket{api=\"produce\"",
        "strata_kafka_connections_accepted_total",
    ] {
        assert!(metrics.contains(metric), "{metric} missing:\n{metrics}");
    }
}

#[test]
fn malformed_frames_close_their_connection_and_nothing_else() {
    let data = tempfile::tempdir().unwrap();
    let mut dev = AgentProcess::start(
        AgentKind::Dev {
            data_dir: data.path().to_path_buf(),
        },
        &["--kafka-max-request-bytes", "1048576"],
    );
    let address = dev.kafka_bootstrap();
    let topic = unique_name("frames");
    cli_ok(&dev.server(), &["topic", "create", &topic], b"");
    // A connection that stays open and keeps working through the sweep.
    let bystander = std::net::TcpStream::connect(&address).unwrap();
    let with_length = |length: i32, rest: &[u8]| {
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.extend_from_slice(rest);
        bytes
    };
    // Metadata v4 whose topics array claims 2^31-1 entries in 4 bytes.
    let mut bomb = Vec::new();
    bomb.extend_from_slice(&i32::MAX.to_be_bytes());
    bomb.push(1);
    let sweep: Vec<(&str, Vec<u8>)> = vec![
        ("a 2 GiB length prefix", with_length(i32::MAX, b"")),
        ("a negative length", with_length(-5, b"")),
        ("a length shorter than a header", with_length(3, b"abc")),
        (
            "a length over --kafka-max-request-bytes",
            with_length(2 << 20, &[0; 64]),
        ),
        ("an unknown API key", frame(9999, 0, 1, &[])),
        ("an API not implemented (JoinGroup)", frame(11, 5, 1, &[])),
        ("an unsupported version", frame(0, 99, 1, &[])),
        (
            "a truncated body",
            with_length(100, &[0, 3, 0, 4, 0, 0, 0, 1]),
        ),
        ("a body that does not decode", frame(3, 4, 1, &[0xff; 3])),
        ("an array length bomb", frame(3, 4, 1, &bomb)),
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in &sweep {
        let (reply, closed) = raw_exchange(&address, bytes, Duration::from_secs(5));
        assert!(closed, "{what}: the connection was not closed");
        assert!(reply.is_empty(), "{what}: answered {reply:?}");
        assert!(
            answers_api_versions(&address),
            "{what}: the listener stopped answering"
        );
    }
    // A newer ApiVersions than implemented is answered (v0, UNSUPPORTED_VERSION = 35) so
    // the client can fall back.
    let reply = request(&address, &frame(18, 99, 5, &[])).expect("an answer");
    assert_eq!(reply[..4], 5i32.to_be_bytes());
    assert_eq!(reply[4..6], 35i16.to_be_bytes());
    // The bystander connection still works, and the agent still takes records.
    let mut bystander_stream = bystander;
    std::io::Write::write_all(
        &mut bystander_stream,
        &strata_tests::kafka::api_versions_v0(9),
    )
    .unwrap();
    let mut length = [0u8; 4];
    std::io::Read::read_exact(&mut bystander_stream, &mut length).unwrap();
    kcat(&["-b", &address, "-P", "-t", &topic], b"still serving\n");
    let rows = kcat_rows(&address, &topic, &[]);
    assert_eq!(rows.len(), 1);
    // A Produce whose zstd batch decompresses far past the request limits is refused
    // (MESSAGE_TOO_LARGE, 10) before it is inflated; the connection stays open.
    let bomb = produce_v3(&topic, 0, &zstd_bomb());
    let reply = request(&address, &bomb).expect("an answer to the produce");
    assert_eq!(produce_v3_error(&reply), 10, "{reply:?}");
    assert!(dev.is_running(), "the agent exited");
    let log = dev.log_text();
    let closed = log.matches("kafka connection closed").count();
    assert!(
        closed >= sweep.len(),
        "{closed} close lines for {} frames:\n{log}",
        sweep.len()
    );
    report(&format!(
        "kafka malformed frames: {} kinds, each closed its connection with one log line; the \
         agent kept serving",
        sweep.len()
    ));
}

/// The agent id owning each partition of `topic`, from `strata topic describe`.
fn owners(server: &str, topic: &str) -> Vec<String> {
    cli_ok(server, &["topic", "describe", topic], b"")
        .lines()
        .skip_while(|l| !l.starts_with("partition\t"))
        .skip(1)
        .map(|l| l.split('\t').nth(3).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn java_producer_through_a_sigkill_of_an_owner_loses_and_duplicates_nothing() {
    let mut agents = AgentProcess::start_cluster(3, "kafka-kill", &["--lease-ttl-secs", "3"]);
    let bootstrap = agents
        .iter()
        .map(AgentProcess::kafka_bootstrap)
        .collect::<Vec<_>>()
        .join(",");
    let server = agents[1].server();
    let topic = "java-kill";
    cli_ok(&server, &["topic", "create", topic, "-p", "6"], b"");
    let out = tempfile::NamedTempFile::new().unwrap();
    let records = 60_000;
    let producer = {
        let (bootstrap, path) = (bootstrap.clone(), out.path().to_str().unwrap().to_string());
        std::thread::spawn(move || {
            // About 12 s at 5,000 a second: the kill lands in the middle.
            java_ok(&[
                "produce",
                &bootstrap,
                topic,
                &records.to_string(),
                "5000",
                &path,
            ])
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    let owner = owners(&server, topic)[0].clone();
    let victim = agents
        .iter()
        .position(|a| a.agent_id() == owner)
        .unwrap_or_else(|| panic!("no agent is {owner}"));
    agents[victim].kill();
    std::thread::sleep(Duration::from_secs(4));
    agents[victim].start_again();
    let summary = producer.join().unwrap();
    let acked: std::collections::HashMap<String, (u32, i64)> = std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let key = parts.next().unwrap().to_string();
            let partition = parts.next().unwrap().parse().unwrap();
            let offset = parts.next().unwrap().parse().unwrap();
            (key, (partition, offset))
        })
        .collect();
    let server = agents[(victim + 1) % 3].server();
    let rows = strata_rows(&server, topic);
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in rows.values() {
        *seen.entry(row.key.clone().unwrap()).or_default() += 1;
    }
    let lost = acked.keys().filter(|k| !seen.contains_key(*k)).count();
    let duplicated: usize = seen.values().map(|n| n - 1).sum();
    let misplaced = acked
        .iter()
        .filter(|(k, position)| {
            rows.get(position)
                .is_none_or(|row| row.key.as_deref() != Some(k.as_str()))
        })
        .count();
    report(&format!(
        "kafka java producer (defaults: idempotent, acks=all) through a SIGKILL of {owner}: \
         {} acknowledged of {records}; lost {lost}, duplicated {duplicated}, not at their \
         acknowledged offset {misplaced} ({})",
        acked.len(),
        summary.trim()
    ));
    assert!(acked.len() > records / 2, "too few acknowledged: {summary}");
    assert_eq!(lost, 0, "acknowledged records lost");
    assert_eq!(duplicated, 0, "records written twice");
    assert_eq!(misplaced, 0, "records not where they were acknowledged");
}

#[test]
fn sasl_over_tls_takes_the_right_token_and_refuses_the_rest() {
    const TOKEN: &str = "kafka-test-token-0123456789";
    let pki = strata_tests::pki::Pki::generate();
    let tokens = pki.path("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let (cert, ca) = (pki.agent(), pki.ca());
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let agent = AgentProcess::start(
        AgentKind::new_cluster("kafka-sasl"),
        &[
            "--tls-cert",
            &path(&cert.cert),
            "--tls-key",
            &path(&cert.key),
            "--tls-ca",
            &path(&ca),
            "--auth-tokens-file",
            &path(&tokens),
        ],
    );
    let bootstrap = agent.kafka_bootstrap();
    let kcat_with = |password: &str| {
        vec![
            "-X".to_string(),
            "security.protocol=SASL_SSL".to_string(),
            "-X".to_string(),
            "sasl.mechanisms=PLAIN".to_string(),
            "-X".to_string(),
            "sasl.username=tester".to_string(),
            "-X".to_string(),
            format!("sasl.password={password}"),
            "-X".to_string(),
            format!("ssl.ca.location={}", path(&ca)),
        ]
    };
    // kcat with the token: produce and read back.
    let good = kcat_with(TOKEN);
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let server = agent.server().replace("http://", "https://");
    let admin = |args: &[&str]| {
        let mut all = vec!["--tls-ca", ca.to_str().unwrap(), "--token", TOKEN];
        all.extend_from_slice(args);
        cli_ok(&server, &all, b"")
    };
    admin(&["topic", "create", "sasl"]);
    kcat(
        &[&["-b", &bootstrap, "-P", "-t", "sasl"], &good[..]].concat(),
        b"with the token\n",
    );
    let rows = kcat_rows(&bootstrap, "sasl", &good);
    assert_eq!(rows.len(), 1);
    // kcat with a wrong token: refused (kcat exits non-zero), nothing written.
    let bad = kcat_with("not-the-token-not-the-token");
    let modes: [&[&str]; 2] = [
        &["-L", "-m", "5"],
        &["-P", "-t", "sasl", "-X", "message.timeout.ms=5000"],
    ];
    for mode in modes {
        let mut child = std::process::Command::new("kcat")
            .args(["-b", &bootstrap])
            .args(mode)
            .args(&bad)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"refused\n").unwrap();
        drop(child.stdin.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() || stderr.contains("failed"),
            "kcat {mode:?} with a wrong token succeeded: {stderr}"
        );
    }
    // The Java client: the token works; a wrong one and none are refused.
    let props = pki.path("java-good.properties");
    let java_props = |password: Option<&str>| match password {
        Some(password) => format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"tester\" password=\"{password}\";\nssl.truststore.type=PEM\nssl.truststore.location={}\n",
            path(&ca)
        ),
        None => format!(
            "security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={}\n",
            path(&ca)
        ),
    };
    std::fs::write(&props, java_props(Some(TOKEN))).unwrap();
    let ok = java_ok(&["try", &bootstrap, "java-good", props.to_str().unwrap()]);
    assert_eq!(ok.trim(), "ok");
    let wrong = pki.path("java-wrong.properties");
    std::fs::write(&wrong, java_props(Some("not-the-token-not-the-token"))).unwrap();
    let refused = java_ok(&["try", &bootstrap, "java-wrong", wrong.to_str().unwrap()]);
    assert!(refused.contains("SaslAuthentication"), "{refused}");
    // SASL/OAUTHBEARER: the bearer token itself.
    let oauth = |token: &str| {
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\nsasl.login.callback.handler.class=strata.TokenLoginCallbackHandler\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required token=\"{token}\";\nssl.truststore.type=PEM\nssl.truststore.location={}\n",
            path(&ca)
        )
    };
    let oauth_good = pki.path("java-oauth.properties");
    std::fs::write(&oauth_good, oauth(TOKEN)).unwrap();
    let ok = java_ok(&[
        "try",
        &bootstrap,
        "java-oauth",
        oauth_good.to_str().unwrap(),
    ]);
    assert_eq!(ok.trim(), "ok");
    let oauth_wrong = pki.path("java-oauth-wrong.properties");
    std::fs::write(&oauth_wrong, oauth("not-the-token-not-the-token")).unwrap();
    let refused = java_ok(&[
        "try",
        &bootstrap,
        "java-oauth-wrong",
        oauth_wrong.to_str().unwrap(),
    ]);
    assert!(refused.contains("SaslAuthentication"), "{refused}");
    let none = pki.path("java-none.properties");
    std::fs::write(&none, java_props(None)).unwrap();
    let (_, refused_none) = java(&["try", &bootstrap, "java-none", none.to_str().unwrap()]);
    assert_ne!(refused_none.trim(), "ok");
    // Nothing changed: neither refused client's topic exists, and "sasl" holds one record.
    let topics = admin(&["topic", "list"]);
    assert!(
        topics.contains("java-good") && topics.contains("java-oauth"),
        "{topics}"
    );
    assert!(
        !topics.contains("java-wrong")
            && !topics.contains("java-none")
            && !topics.contains("java-oauth-wrong"),
        "{topics}"
    );
    assert_eq!(strata_rows_with(&server, &ca, TOKEN, "sasl"), 1);
    report(
        "kafka SASL over TLS: kcat (PLAIN) and Java (PLAIN, OAUTHBEARER) with the token \
         served; a wrong token (kcat, Java PLAIN and OAUTHBEARER) and no SASL (Java) refused, \
         nothing changed",
    );
}

/// How many records `strata consume` reads from `topic` over TLS with a token.
fn strata_rows_with(server: &str, ca: &std::path::Path, token: &str, topic: &str) -> usize {
    cli_ok(
        server,
        &[
            "--tls-ca",
            ca.to_str().unwrap(),
            "--token",
            token,
            "consume",
            topic,
            "--from-beginning",
        ],
        b"",
    )
    .lines()
    .count()
}

/// A Produce v3 frame of one batch for `topic`/`partition`, acks=all.
fn produce_v3(topic: &str, partition: i32, batch: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks=all
    body.extend_from_slice(&30_000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    frame(0, 3, 11, &body)
}

/// The first partition's error code of a Produce v3 answer (correlation id, topics,
/// name, partitions, index, error code).
fn produce_v3_error(reply: &[u8]) -> i16 {
    let name_len = i16::from_be_bytes([reply[8], reply[9]]) as usize;
    let at = 10 + name_len + 4 + 4;
    i16::from_be_bytes([reply[at], reply[at + 1]])
}

/// A zstd batch of one record whose value is 200 MiB of zeros: a few KB sent.
fn zstd_bomb() -> Vec<u8> {
    let record = strata_storage::Record {
        offset: 0,
        timestamp_ms: 0,
        key: None,
        value: Some(bytes::Bytes::from(vec![0u8; 200 << 20])),
        headers: Vec::new(),
    };
    let batch =
        strata_storage::record::encode_batch(&[record], strata_storage::Compression::Zstd).unwrap();
    assert!(batch.len() < 1 << 20, "{} bytes", batch.len());
    batch.to_vec()
}

#[test]
fn before_authenticating_only_sasl_is_served() {
    let data = tempfile::tempdir().unwrap();
    let dev = AgentProcess::start(
        AgentKind::Dev {
            data_dir: data.path().to_path_buf(),
        },
        &["--auth-tokens", "kafka-test-token-0123456789"],
    );
    let address = dev.kafka_bootstrap();
    // ApiVersions is answered.
    assert!(answers_api_versions(&address));
    // Metadata (v4, all topics) before SASL: closed, unanswered.
    let (reply, closed) = raw_exchange(
        &address,
        &frame(3, 4, 1, &[0xff, 0xff, 0xff, 0xff, 1]),
        Duration::from_secs(5),
    );
    assert!(closed && reply.is_empty(), "{reply:?}");
    // A frame over 512 KiB before SASL: closed before its body is read.
    let mut big = (1i32 << 20).to_be_bytes().to_vec();
    big.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 1]);
    let (reply, closed) = raw_exchange(&address, &big, Duration::from_secs(5));
    assert!(closed && reply.is_empty(), "{reply:?}");
    // SaslHandshake (v1, PLAIN) is answered: error code 0.
    let mut mechanism = (5i16).to_be_bytes().to_vec();
    mechanism.extend_from_slice(b"PLAIN");
    let reply = request(&address, &frame(17, 1, 3, &mechanism)).expect("a handshake answer");
    assert_eq!(reply[4..6], [0, 0], "{reply:?}");
    let log = dev.log_text();
    assert!(log.contains("before authenticating"), "{log}");
}
