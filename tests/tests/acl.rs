//! ACLs on three agents (real etcd and s3s-fs) with tokens of principals and
//! `--authorizer acl`:
//!
//! - a matrix over the gRPC API (through the CLI): for each operation, a principal without
//!   the ACL is refused (PERMISSION_DENIED) and nothing changes (topics, their offsets and
//!   configs, groups, ACLs compared before and after); granted the ACL, another principal
//!   is served;
//! - prefixed ACLs over Kafka (confluent-kafka, SASL/PLAIN): a principal allowed to write
//!   `orders-` writes `orders-eu` but not `payments`, and Metadata lists it no topic it may
//!   not describe; reads, commits, topic creation and deletion refused with Kafka's codes;
//!   ACLs created, listed and deleted through Kafka's AdminClient;
//! - a DENY overrides an ALLOW; removing it takes effect on every agent within the bound
//!   the test prints; denials are counted in `strata_acl_denied_total`.
//!
//! Needs the Python clients (scripts/install-test-deps.sh).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use strata_tests::{AgentProcess, http_get, report, strata_bin};

/// The principals and their tokens.
const TOKENS: [(&str, &str); 4] = [
    ("admin", "admin-token-0123456789abcdef"),
    ("billing", "billing-token-0123456789abcdef"),
    ("analytics", "analytics-token-0123456789abcdef"),
    ("nobody", "nobody-token-0123456789abcdef"),
];

/// The consumer group of the matrix.
const GROUP: &str = "matrix-group";

/// One operation of the gRPC matrix: the ACL that allows it, and the request.
struct Row {
    what: &'static str,
    acl: &'static [&'static str],
    request: &'static [&'static str],
    stdin: &'static [u8],
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
/// the group's offsets, the ACLs.
fn state(server: &str, group: &str) -> String {
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
            } else if cols.len() == 5 {
                state.push_str(&cols[..3].join("\t"));
            }
            state.push('\n');
        }
    }
    let groups = strata_as(server, "admin", &["group", "describe", group], b"");
    state.push_str(&String::from_utf8_lossy(&groups.stdout));
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

    // gRPC: (what, the ACL billing is given, the request). Analytics, without the ACL,
    // is refused first, and nothing changes; then billing is served.
    let matrix = [
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
    ];
    let mut refusals = 0;
    for Row {
        what,
        acl,
        request,
        stdin,
    } in &matrix
    {
        let before = state(server, GROUP);
        let refused = strata_as(server, "analytics", request, stdin);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("may not"),
            "{what}: analytics was not refused: {stderr}"
        );
        assert_eq!(
            before,
            state(server, GROUP),
            "{what}: a refused request changed something"
        );
        refusals += 1;
        let mut add = vec!["acl", "add", "--principal", "billing"];
        add.extend_from_slice(acl);
        ok_as(server, "admin", &add);
        eventually_ok(server, "billing", request, stdin);
    }
    report(&format!(
        "acl gRPC matrix: {refusals} operations each refused to a principal without the ACL \
         (nothing changed: topics, offsets, configs, group, ACLs) and served to one with it"
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
    let before = state(server, GROUP);
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
    // Nobody reads, commits, creates, deletes or manages ACLs without an ACL.
    assert_eq!(
        result(&kafka_as(&bootstrap, "nobody", "consume", &["orders-eu"])),
        "TOPIC_AUTHORIZATION_FAILED"
    );
    assert_eq!(
        result(&kafka_as(
            &bootstrap,
            "nobody",
            "commit",
            &["orders-eu", "nobody-group"]
        )),
        "GROUP_AUTHORIZATION_FAILED"
    );
    assert_eq!(
        result(&kafka_as(&bootstrap, "nobody", "create", &["nobody-topic"])),
        "TOPIC_AUTHORIZATION_FAILED"
    );
    assert_eq!(
        result(&kafka_as(&bootstrap, "billing", "delete", &["payments"])),
        "TOPIC_AUTHORIZATION_FAILED"
    );
    assert_eq!(
        result(&kafka_as(
            &bootstrap,
            "nobody",
            "acl-add",
            &["User:nobody", "payments", "READ"]
        )),
        "CLUSTER_AUTHORIZATION_FAILED"
    );
    assert_eq!(
        before,
        state(server, GROUP),
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
         (TOPIC_AUTHORIZATION_FAILED); Metadata listed it only topics it may describe; reads, \
         commits, creates, deletes and ACL changes refused with Kafka's codes, nothing changed; \
         an ACL created through Kafka's AdminClient shows in strata acl list and applies",
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
