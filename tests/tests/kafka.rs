//! The Kafka listener with real Kafka clients (kcat, confluent-kafka, kafka-python), on 3
//! agents with etcd + s3s-fs and on `strata dev`:
//!
//! - each client creates a topic (kcat, which has no admin API: `strata topic create`),
//!   produces 100,000 keyed records with headers in every codec it has, and reads them
//!   back by partition assignment from the beginning: every acknowledged record is there
//!   once, in its partition's order and its key's murmur2 partition, headers intact; and
//!   `strata consume --json` reads exactly the same records;
//! - records produced through gRPC (`strata produce`) read the same through kcat;
//! - confluent-kafka's AdminClient: configs, partitions, offsets, records, cluster, each
//!   checked against `strata topic describe`;
//! - a sweep of malformed frames closes each one's connection and leaves the agent
//!   serving.

use std::time::Duration;

use strata_tests::kafka::{
    answers_api_versions, driver, driver_rows, frame, kcat, kcat_rows, raw_exchange, request,
    strata_rows,
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
    let summary = driver(&[
        "roundtrip",
        client,
        bootstrap,
        &topic,
        &PARTITIONS.to_string(),
        &RECORDS.to_string(),
        out.path().to_str().unwrap(),
    ]);
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
    kcat_roundtrip(&bootstrap, &server);
    grpc_to_kcat(&bootstrap, &server);
    admin(&bootstrap, &server, agents.len());
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
