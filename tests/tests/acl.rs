//! ACLs on three agents (real etcd and s3s-fs) with tokens of principals and
//! `--authorizer acl`:
//!
//! - a matrix over the gRPC API (through the CLI): for each operation, a principal without
//!   the ACL is refused (PERMISSION_DENIED) and nothing changes (topics, their offsets and
//!   configs, groups, ACLs compared before and after); granted the ACL, another principal
//!   is served;
//! - a matrix over the Kafka API (kcat, confluent-kafka and Kafka's Java client): for each
//!   API, a principal without the row's ACL gets Kafka's error code (and one without any
//!   ACL a refusal) and nothing changes; given the ACL, it is served;
//! - prefixed ACLs over Kafka (confluent-kafka, SASL/PLAIN): a principal allowed to write
//!   `orders-` writes `orders-eu` but not `payments`, and Metadata lists it no topic it may
//!   not describe; ACLs created and listed through Kafka's AdminClient are strata's;
//! - a DENY overrides an ALLOW; removing it takes effect on every agent within the bound
//!   the test prints; denials are counted in `strata_acl_denied_total`.
//!
//! Needs kcat, the Python clients and the Java programs (scripts/install-test-deps.sh,
//! scripts/build-test-clients.sh).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use strata_tests::{AgentProcess, http_get, report, strata_bin};

/// The principals and their tokens.
const TOKENS: [(&str, &str); 5] = [
    ("admin", "admin-token-0123456789abcdef"),
    ("ops", "ops-token-0123456789abcdef"),
    ("billing", "billing-token-0123456789abcdef"),
    ("analytics", "analytics-token-0123456789abcdef"),
    ("nobody", "nobody-token-0123456789abcdef"),
];

/// The consumer group of the gRPC matrix.
const GROUP: &str = "matrix-group";

/// The transactional id of the gRPC matrix.
const TXN: &str = "matrix-txn";

/// The consumer group of the Kafka matrix.
const KAFKA_GROUP: &str = "kmatrix-group";

/// One operation of the gRPC matrix: the ACL that allows it, and the request.
struct Row {
    what: &'static str,
    acl: &'static [&'static str],
    request: &'static [&'static str],
    stdin: &'static [u8],
}

/// The Kafka clients of the Kafka matrix.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// kcat (librdkafka), SASL/PLAIN.
    Kcat,
    /// confluent-kafka (`kafka_clients.py acl-probe`), SASL/PLAIN.
    Confluent,
    /// Kafka's Java client (`Clients acl-probe`), SASL/OAUTHBEARER with the token.
    Java,
}

/// One operation of the Kafka matrix: the ACLs that allow it, the request, the answer
/// before they are added and after.
struct KafkaRow {
    what: &'static str,
    client: Client,
    action: &'static str,
    args: &'static [&'static str],
    acls: &'static [&'static [&'static str]],
    refused: &'static str,
    allowed: &'static str,
}

fn token(who: &str) -> &'static str {
    TOKENS.iter().find(|(p, _)| *p == who).unwrap().1
}

/// `strata --server SERVER --token (who's) ARGS`.
fn strata_as(server: &str, who: &str, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(strata_bin())
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_TOKEN")
        .args(["--server", server, "--token", token(who)])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok_as(server: &str, who: &str, args: &[&str]) -> String {
    let out = strata_as(server, who, args, b"");
    assert!(
        out.status.success(),
        "strata {args:?} as {who} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What a refused request must leave as it was: topics, their offsets and configs,
/// the groups' members and offsets, the transactional ids, the ACLs.
fn state(server: &str, groups: &[&str]) -> String {
    let mut state = ok_as(server, "admin", &["topic", "list"]);
    for topic in state.clone().lines().filter_map(|l| l.split('\t').next()) {
        if topic.is_empty() || topic == "TOPIC" || topic.starts_with("topic") {
            continue;
        }
        let described = ok_as(server, "admin", &["topic", "describe", topic]);
        // Configs and per-partition log start and high watermark (not owners: partitions
        // may move between agents).
        for line in described.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            if line.contains('=') {
                state.push_str(line);
            } else if cols.len() >= 5 && cols[0].parse::<u32>().is_ok() {
                state.push_str(&cols[..3].join("\t"));
            }
            state.push('\n');
        }
    }
    for group in groups {
        let described = strata_as(server, "admin", &["group", "describe", group], b"");
        state.push_str(&String::from_utf8_lossy(&described.stdout));
    }
    state.push_str(&ok_as(server, "admin", &["transactions", "list"]));
    state.push_str(&ok_as(server, "admin", &["acl", "list"]));
    state
}

/// Runs `args` as `who` until it succeeds (an ACL just added reaches every agent within a
/// watch notification); returns how long that took.
fn eventually_ok(server: &str, who: &str, args: &[&str], stdin: &[u8]) -> Duration {
    let started = Instant::now();
    loop {
        let out = strata_as(server, who, args, stdin);
        if out.status.success() {
            return started.elapsed();
        }
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            started.elapsed() < Duration::from_secs(30) && stderr.contains("may not"),
            "strata {args:?} as {who} never succeeded: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A confluent-kafka probe (`kafka_clients.py acl-probe`) as `who`.
fn kafka_as(bootstrap: &str, who: &str, action: &str, args: &[&str]) -> serde_json::Value {
    let env = strata_tests::TestEnv::from_env();
    let out = Command::new(&env.python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kafka_clients.py"))
        .args(["acl-probe", bootstrap, who, token(who), action])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "acl-probe {action} {args:?} as {who} failed"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `action` as `who` through `client`: "ok" or Kafka's error name.
fn probe(client: Client, bootstrap: &str, who: &str, action: &str, args: &[&str]) -> String {
    match client {
        Client::Confluent => result(&kafka_as(bootstrap, who, action, args)).to_string(),
        Client::Java => {
            let mut java_args = vec!["acl-probe", bootstrap, token(who), action];
            java_args.extend_from_slice(args);
            strata_tests::kafka::java_ok(&java_args).trim().to_string()
        }
        Client::Kcat => kcat_probe(bootstrap, who, action, args[0]),
    }
}

/// kcat as `who`: `metadata`, `produce` or `consume` one record of partition 0 of
/// `topic`. "ok", or the Kafka error librdkafka names (`Broker: Topic authorization
/// failed` is TOPIC_AUTHORIZATION_FAILED).
fn kcat_probe(bootstrap: &str, who: &str, action: &str, topic: &str) -> String {
    use std::io::Write;
    let user = format!("sasl.username={who}");
    let password = format!("sasl.password={}", token(who));
    let mut args = vec![
        "60",
        "kcat",
        "-b",
        bootstrap,
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanism=PLAIN",
        "-X",
        &user,
        "-X",
        &password,
        "-t",
        topic,
    ];
    args.extend_from_slice(match action {
        "metadata" => &["-L"][..],
        "produce" => &["-P", "-p", "0"],
        "consume" => &["-C", "-p", "0", "-o", "beginning", "-c", "1", "-e"],
        _ => panic!("no kcat probe {action}"),
    });
    let mut child = Command::new("timeout")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-kcat\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match text.split("Broker: ").nth(1) {
        Some(error) => error
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_uppercase()
            .replace(' ', "_"),
        None if out.status.success() && !(action == "consume" && out.stdout.is_empty()) => {
            "ok".to_string()
        }
        None => panic!("kcat {action} {topic} as {who}: {text}"),
    }
}

fn result(value: &serde_json::Value) -> &str {
    value["result"].as_str().unwrap()
}

fn denied_total(agent: &AgentProcess) -> f64 {
    http_get(&agent.metrics_url())
        .lines()
        .filter(|l| l.starts_with("strata_acl_denied_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn acls_allow_what_they_name_and_refused_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        TOKENS
            .iter()
            .map(|(p, t)| format!("{p}:{t}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let agents = AgentProcess::start_cluster(
        3,
        "acl",
        &[
            "--auth-tokens-file",
            tokens.to_str().unwrap(),
            "--authorizer",
            "acl",
            "--super-users",
            "admin",
        ],
    );
    let server = agents[0].server();
    let server = server.as_str();
    let bootstrap = agents
        .iter()
        .map(AgentProcess::kafka_bootstrap)
        .collect::<Vec<_>>()
        .join(",");

    // The admin (a super user) sets up: a topic with records, a group with offsets.
    ok_as(server, "admin", &["topic", "create", "matrix", "-p", "3"]);
    for partition in ["0", "1", "2"] {
        let lines: String = (0..10)
            .map(|i| format!("record-{partition}-{i}\n"))
            .collect();
        let args = ["produce", "matrix", "--partition", partition];
        let out = strata_as(server, "admin", &args, lines.as_bytes());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ok_as(
        server,
        "admin",
        &[
            "consume",
            "matrix",
            "--group",
            GROUP,
            "--from-beginning",
            "--max-messages",
            "30",
        ],
    );

    ok_as(
        server,
        "admin",
        &["topic", "create", "matrix-side", "-p", "1"],
    );
    assert_eq!(
        probe(
            Client::Java,
            &bootstrap,
            "admin",
            "transactional",
            &["matrix", TXN]
        ),
        "ok"
    );

    // gRPC: (what, the ACL billing is given, the request). Analytics, without the ACL,
    // is refused first, and nothing changes; then billing is served.
    let matrix = [
        Row {
            what: "describe a topic",
            acl: &["--topic", "matrix", "--operation", "describe"],
            request: &["topic", "describe", "matrix"],
            stdin: b"",
        },
        Row {
            what: "list a topic's offsets",
            acl: &["--topic", "matrix-side", "--operation", "describe"],
            request: &["topic", "offsets", "matrix-side"],
            stdin: b"",
        },
        Row {
            what: "describe a group",
            acl: &["--group", GROUP, "--operation", "describe"],
            request: &["group", "describe", GROUP],
            stdin: b"",
        },
        Row {
            what: "describe a transaction",
            acl: &["--transactional-id", TXN, "--operation", "describe"],
            request: &["transactions", "describe", TXN],
            stdin: b"",
        },
        Row {
            what: "abort a transaction",
            acl: &["--transactional-id", TXN, "--operation", "write"],
            request: &["transactions", "abort", TXN],
            stdin: b"",
        },
        Row {
            what: "list ACLs",
            acl: &["--cluster", "--operation", "describe"],
            request: &["acl", "list"],
            stdin: b"",
        },
        // DESCRIBE on the cluster, given by the row above.
        Row {
            what: "read an agent's stats",
            acl: &[],
            request: &["stats"],
            stdin: b"",
        },
        Row {
            what: "create a topic",
            acl: &["--topic", "matrix-new", "--operation", "create"],
            request: &["topic", "create", "matrix-new", "-p", "1"],
            stdin: b"",
        },
        Row {
            what: "produce",
            acl: &["--topic", "matrix", "--operation", "write"],
            request: &["produce", "matrix"],
            stdin: b"one\ntwo\n",
        },
        Row {
            what: "consume",
            acl: &["--topic", "matrix", "--operation", "read"],
            request: &[
                "consume",
                "matrix",
                "--from-beginning",
                "--max-messages",
                "1",
            ],
            stdin: b"",
        },
        Row {
            what: "alter a topic's config",
            acl: &["--topic", "matrix", "--operation", "alter-configs"],
            request: &["topic", "alter", "matrix", "--set", "retention.ms=3600000"],
            stdin: b"",
        },
        Row {
            what: "add partitions",
            acl: &["--topic", "matrix", "--operation", "alter"],
            request: &["topic", "add-partitions", "matrix", "--to", "4"],
            stdin: b"",
        },
        Row {
            what: "delete records",
            acl: &["--topic", "matrix", "--operation", "delete"],
            request: &[
                "topic",
                "delete-records",
                "matrix",
                "-p",
                "0",
                "--before",
                "1",
            ],
            stdin: b"",
        },
        Row {
            what: "consume in a group",
            acl: &["--group", GROUP, "--operation", "read"],
            request: &[
                "consume",
                "matrix",
                "--group",
                GROUP,
                "--max-messages",
                "1",
                "--from-beginning",
            ],
            stdin: b"",
        },
        Row {
            what: "reset a group's offsets",
            acl: &["--group", GROUP, "--operation", "read"],
            request: &[
                "group",
                "reset-offsets",
                GROUP,
                "--topic",
                "matrix",
                "--to-earliest",
            ],
            stdin: b"",
        },
        Row {
            what: "delete a group",
            acl: &["--group", GROUP, "--operation", "delete"],
            request: &["group", "delete", GROUP],
            stdin: b"",
        },
        Row {
            what: "delete a topic",
            acl: &["--topic", "matrix-new", "--operation", "delete"],
            request: &["topic", "delete", "matrix-new"],
            stdin: b"",
        },
        Row {
            what: "add an ACL",
            acl: &["--cluster", "--operation", "alter"],
            request: &[
                "acl",
                "add",
                "--principal",
                "analytics",
                "--topic",
                "matrix",
                "--operation",
                "describe",
            ],
            stdin: b"",
        },
        // ALTER on the cluster, given by the row above.
        Row {
            what: "remove an ACL",
            acl: &[],
            request: &[
                "acl",
                "remove",
                "--principal",
                "analytics",
                "--topic",
                "matrix",
            ],
            stdin: b"",
        },
    ];
    let mut refusals = 0;
    for Row {
        what,
        acl,
        request,
        stdin,
    } in &matrix
    {
        let before = state(server, &[GROUP]);
        let refused = strata_as(server, "analytics", request, stdin);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("may not"),
            "{what}: analytics was not refused: {stderr}"
        );
        assert_eq!(
            before,
            state(server, &[GROUP]),
            "{what}: a refused request changed something"
        );
        refusals += 1;
        if !acl.is_empty() {
            let mut add = vec!["acl", "add", "--principal", "billing"];
            add.extend_from_slice(acl);
            ok_as(server, "admin", &add);
        }
        eventually_ok(server, "billing", request, stdin);
    }
    report(&format!(
        "acl gRPC matrix: {refusals} operations each refused to a principal without the ACL \
         (nothing changed: topics, offsets, configs, groups, transactional ids, ACLs) and \
         served to one with it"
    ));

    // Kafka: each row's request as ops, refused with Kafka's code and nothing changed;
    // as nobody (no ACL at all), refused too; then ops is given the row's ACLs and served.
    // The rows add up: ops keeps what earlier rows gave it.
    ok_as(server, "admin", &["topic", "create", "kmatrix", "-p", "1"]);
    ok_as(
        server,
        "admin",
        &["topic", "create", "kmatrix-offsets", "-p", "1"],
    );
    for topic in ["kmatrix", "kmatrix-offsets"] {
        let out = strata_as(server, "admin", &["produce", topic], b"a\nb\nc\n");
        assert!(out.status.success());
    }
    let kafka_matrix = [
        KafkaRow {
            what: "Metadata of a topic",
            client: Client::Kcat,
            action: "metadata",
            args: &["kmatrix"],
            acls: &[&["--topic", "kmatrix", "--operation", "describe"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "ListOffsets",
            client: Client::Java,
            action: "list-offsets",
            args: &["kmatrix-offsets"],
            acls: &[&["--topic", "kmatrix-offsets", "--operation", "describe"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        // An idempotent producer's id needs IDEMPOTENT_WRITE on the cluster (or WRITE on
        // some topic); with it, the Produce that follows still needs WRITE (next row).
        KafkaRow {
            what: "InitProducerId (idempotent)",
            client: Client::Java,
            action: "idempotent",
            args: &["kmatrix"],
            acls: &[&["--cluster", "--operation", "idempotent-write"]],
            refused: "CLUSTER_AUTHORIZATION_FAILED",
            allowed: "TOPIC_AUTHORIZATION_FAILED",
        },
        KafkaRow {
            what: "Produce",
            client: Client::Kcat,
            action: "produce",
            args: &["kmatrix"],
            acls: &[&["--topic", "kmatrix", "--operation", "write"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "Fetch",
            client: Client::Kcat,
            action: "consume",
            args: &["kmatrix"],
            acls: &[&["--topic", "kmatrix", "--operation", "read"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "transactional Produce (InitProducerId, AddPartitionsToTxn, EndTxn)",
            client: Client::Java,
            action: "transactional",
            args: &["kmatrix", "kmatrix-txn"],
            acls: &[&["--transactional-id", "kmatrix-txn", "--operation", "write"]],
            refused: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "DescribeConfigs",
            client: Client::Java,
            action: "describe-configs",
            args: &["kmatrix"],
            acls: &[&["--topic", "kmatrix", "--operation", "describe-configs"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "IncrementalAlterConfigs",
            client: Client::Java,
            action: "alter-configs",
            args: &["kmatrix"],
            acls: &[&["--topic", "kmatrix", "--operation", "alter-configs"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "CreatePartitions",
            client: Client::Java,
            action: "create-partitions",
            args: &["kmatrix", "2"],
            acls: &[&["--topic", "kmatrix", "--operation", "alter"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "DeleteRecords",
            client: Client::Java,
            action: "delete-records",
            args: &["kmatrix"],
            acls: &[&["--topic", "kmatrix", "--operation", "delete"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "CreateTopics",
            client: Client::Confluent,
            action: "create",
            args: &["kmatrix-new"],
            acls: &[&["--topic", "kmatrix-new", "--operation", "create"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "DeleteTopics",
            client: Client::Confluent,
            action: "delete",
            args: &["kmatrix-new"],
            acls: &[&["--topic", "kmatrix-new", "--operation", "delete"]],
            refused: "TOPIC_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "DescribeGroups",
            client: Client::Java,
            action: "group-describe",
            args: &[KAFKA_GROUP],
            acls: &[&["--group", KAFKA_GROUP, "--operation", "describe"]],
            refused: "GROUP_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "OffsetCommit",
            client: Client::Confluent,
            action: "commit",
            args: &["kmatrix", KAFKA_GROUP],
            acls: &[&["--group", KAFKA_GROUP, "--operation", "read"]],
            refused: "GROUP_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "DeleteGroups",
            client: Client::Java,
            action: "group-delete",
            args: &[KAFKA_GROUP],
            acls: &[&["--group", KAFKA_GROUP, "--operation", "delete"]],
            refused: "GROUP_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        // librdkafka (2.16) drops DescribeAcls's error code and answers an empty list, so
        // the Java client asks.
        KafkaRow {
            what: "DescribeAcls",
            client: Client::Java,
            action: "acl-list",
            args: &[],
            acls: &[&["--cluster", "--operation", "describe"]],
            refused: "CLUSTER_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
        KafkaRow {
            what: "CreateAcls",
            client: Client::Confluent,
            action: "acl-add",
            args: &["User:nobody", "kmatrix-none", "READ"],
            acls: &[&["--cluster", "--operation", "alter"]],
            refused: "CLUSTER_AUTHORIZATION_FAILED",
            allowed: "ok",
        },
    ];
    let groups = [GROUP, KAFKA_GROUP];
    let mut rows = Vec::new();
    for row in &kafka_matrix {
        let KafkaRow {
            what,
            client,
            action,
            args,
            ..
        } = *row;
        let before = state(server, &groups);
        assert_eq!(
            probe(client, &bootstrap, "ops", action, args),
            row.refused,
            "{what} ({client:?}) as ops before its ACL"
        );
        let refused = probe(client, &bootstrap, "nobody", action, args);
        assert!(
            refused.ends_with("_AUTHORIZATION_FAILED"),
            "{what} ({client:?}) as nobody: {refused}"
        );
        assert_eq!(
            before,
            state(server, &groups),
            "{what}: a refused Kafka request changed something"
        );
        for acl in row.acls {
            let mut add = vec!["acl", "add", "--principal", "ops"];
            add.extend_from_slice(acl);
            ok_as(server, "admin", &add);
        }
        let started = Instant::now();
        loop {
            let answer = probe(client, &bootstrap, "ops", action, args);
            if answer == row.allowed {
                break;
            }
            assert!(
                answer == row.refused && started.elapsed() < Duration::from_secs(30),
                "{what} ({client:?}) as ops with its ACL: {answer}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        rows.push(format!("{what} ({client:?}) {}", row.refused));
    }
    report(&format!(
        "acl Kafka matrix: {} operations each refused with Kafka's code to a principal \
         without the ACL and to one without any, nothing changed (topics, offsets, high \
         watermarks, configs, groups, ACLs), and served once the ACL was added: {}",
        rows.len(),
        rows.join("; ")
    ));

    // Prefixed ACLs, over Kafka.
    for topic in ["orders-eu", "orders-us", "payments"] {
        ok_as(server, "admin", &["topic", "create", topic, "-p", "1"]);
    }
    ok_as(
        server,
        "admin",
        &[
            "acl",
            "add",
            "--principal",
            "billing",
            "--topic",
            "orders-",
            "--prefixed",
            "--operation",
            "write",
        ],
    );
    let started = Instant::now();
    while result(&kafka_as(&bootstrap, "billing", "produce", &["orders-eu"])) != "ok" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "billing never wrote orders-eu"
        );
    }
    let before = state(server, &[GROUP]);
    assert_eq!(
        result(&kafka_as(&bootstrap, "billing", "produce", &["payments"])),
        "TOPIC_AUTHORIZATION_FAILED"
    );
    let listed = kafka_as(&bootstrap, "billing", "metadata", &[]);
    let listed: Vec<&str> = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"orders-eu") && listed.contains(&"orders-us"),
        "{listed:?}"
    );
    assert!(
        !listed.contains(&"payments"),
        "billing sees payments: {listed:?}"
    );
    for topic in &listed {
        assert!(
            topic.starts_with("orders-") || topic.starts_with("matrix"),
            "billing sees {topic}"
        );
    }
    let grpc_listed = ok_as(server, "billing", &["topic", "list"]);
    assert!(!grpc_listed.contains("payments"), "{grpc_listed}");
    assert_eq!(
        before,
        state(server, &[GROUP]),
        "a refused Kafka request changed something"
    );
    // ACLs through Kafka's AdminClient, as the admin: they are strata's.
    assert_eq!(
        result(&kafka_as(
            &bootstrap,
            "admin",
            "acl-add",
            &["User:analytics", "orders-eu", "READ"]
        )),
        "ok"
    );
    let acls = kafka_as(&bootstrap, "admin", "acl-list", &[]);
    assert!(
        acls["acls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "User:analytics ALLOW READ TOPIC LITERAL orders-eu"),
        "{acls}"
    );
    let cli_acls = ok_as(server, "admin", &["acl", "list", "--topic", "orders-eu"]);
    assert!(
        cli_acls.contains("User:analytics\tALLOW\tREAD\tTOPIC\tLITERAL\torders-eu"),
        "{cli_acls}"
    );
    let started = Instant::now();
    while result(&kafka_as(
        &bootstrap,
        "analytics",
        "consume",
        &["orders-eu"],
    )) != "ok"
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "analytics never read orders-eu"
        );
    }
    report(
        "acl prefixed over Kafka: billing (WRITE orders- prefixed) wrote orders-eu, not payments \
         (TOPIC_AUTHORIZATION_FAILED, nothing changed); Metadata listed it only topics it may \
         describe; an ACL created through Kafka's AdminClient shows in strata acl list and applies",
    );

    // A DENY wins over the ALLOW; removing it applies on every agent.
    ok_as(
        server,
        "admin",
        &[
            "acl",
            "add",
            "--principal",
            "*",
            "--topic",
            "orders-eu",
            "--operation",
            "read",
            "--deny",
        ],
    );
    let read = [
        "consume",
        "orders-eu",
        "--from-beginning",
        "--max-messages",
        "1",
    ];
    for agent in &agents {
        let started = Instant::now();
        loop {
            let out = strata_as(&agent.server(), "analytics", &read, b"");
            if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("DENY") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the DENY never applied"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(
        result(&kafka_as(
            &bootstrap,
            "analytics",
            "consume",
            &["orders-eu"]
        )),
        "TOPIC_AUTHORIZATION_FAILED"
    );
    let removed = Instant::now();
    ok_as(
        server,
        "admin",
        &[
            "acl",
            "remove",
            "--principal",
            "*",
            "--topic",
            "orders-eu",
            "--deny",
        ],
    );
    let mut slowest = Duration::ZERO;
    for agent in &agents {
        eventually_ok(&agent.server(), "analytics", &read, b"");
        slowest = slowest.max(removed.elapsed());
    }
    let denials: f64 = agents.iter().map(denied_total).sum();
    assert!(denials > 0.0, "no denial counted");
    report(&format!(
        "acl deny: a DENY of READ for User:* refused analytics (allowed READ) on all 3 agents; \
         removed, it stopped applying on every agent within {} ms; strata_acl_denied_total \
         {denials} over the agents",
        slowest.as_millis()
    ));
}
