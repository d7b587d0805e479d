//! Kafka consumer groups against three agents (real etcd and s3s-fs), with real clients:
//! three members under load, one SIGKILLed, checked from the members' own records and
//! assignment callbacks; committed offsets resumed after a restart; `strata group
//! describe` against Java's AdminClient. Java consumers on the classic protocol
//! (cooperative-sticky), confluent-kafka consumers on the KIP-848 protocol
//! (`group.protocol=consumer`), kafka-python and KafkaJS consumers (classic, eager); and one
//! group shared by gRPC SDK members (`strata consume --group`) and confluent-kafka KIP-848
//! members. One cluster for all.
//!
//! Needs Java, KafkaJS and the test programs (scripts/build-test-clients.sh) and the
//! Python clients (scripts/install-test-deps.sh).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_tests::kafka::java_ok;
use strata_tests::{AgentProcess, cli_ok, report};

const PARTITIONS: u32 = 12;

/// A group member (`strata.Clients group`, `kafka_clients.py group`), writing what it
/// does to `out`.
struct Member {
    child: Child,
    out: PathBuf,
    /// When it was SIGKILLed (ms since the epoch), if it was.
    killed_at: Option<u128>,
}

fn java_classpath() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("java/target");
    format!(
        "{}:{}/*",
        dir.join("classes").display(),
        dir.join("lib").display()
    )
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Which client a member is.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// Kafka's Java client, classic protocol, cooperative-sticky.
    Java,
    /// confluent-kafka (librdkafka), `group.protocol=consumer` (KIP-848).
    ConfluentConsumerProtocol,
    /// kafka-python, classic protocol, its default (eager) assignors.
    KafkaPython,
    /// KafkaJS, classic protocol, its round-robin assignor (eager).
    KafkaJs,
}

impl Client {
    fn command(self, bootstrap: &str, topic: &str, group: &str, out: &Path) -> Command {
        let out = out.to_str().unwrap();
        match self {
            Self::Java => {
                let mut command = Command::new("java");
                command.args([
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=error",
                    "-cp",
                    &java_classpath(),
                    "strata.Clients",
                    "group",
                    bootstrap,
                    topic,
                    group,
                    out,
                ]);
                command
            }
            Self::ConfluentConsumerProtocol | Self::KafkaPython => {
                let env = strata_tests::TestEnv::from_env();
                let mut command = Command::new(&env.python);
                command
                    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kafka_clients.py"))
                    .arg("group");
                if let Self::KafkaPython = self {
                    command.args(["kafka-python", bootstrap, topic, group, out]);
                } else {
                    command.args(["confluent", bootstrap, topic, group, out, "consumer"]);
                }
                command
            }
            Self::KafkaJs => {
                let mut command = Command::new("node");
                command
                    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("node/kafkajs_client.js"))
                    .args(["group", bootstrap, topic, group, out]);
                command
            }
        }
    }
}

impl Drop for Member {
    /// A member still running when the test ends (it failed) is killed: it would keep the
    /// test command's output open.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Member {
    fn start(client: Client, bootstrap: &str, topic: &str, group: &str, out: PathBuf) -> Self {
        let child = client
            .command(bootstrap, topic, group, &out)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run the {client:?} member: {e}"));
        Self {
            child,
            out,
            killed_at: None,
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.killed_at = Some(now_ms());
    }

    /// SIGTERM: the member commits, leaves the group and exits.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success() || status.code() == Some(143),
            "a member did not stop cleanly: {status}"
        );
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `(partition, offset, key)` of every record it got, in order.
    fn records(&self) -> Vec<(u32, i64, String)> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("R "))
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                (
                    parts.next().unwrap().parse().unwrap(),
                    parts.next().unwrap().parse().unwrap(),
                    parts.next().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Each partition's ownership intervals `[from, to)` in ms, from its callbacks; one
    /// still open ends when the member was killed or stopped (`end`).
    fn ownership(&self, end: u128) -> Vec<(u32, u128, u128)> {
        let mut open: HashMap<u32, u128> = HashMap::new();
        let mut intervals = Vec::new();
        for line in self.lines() {
            let mut parts = line.split(' ');
            let kind = parts.next().unwrap();
            if !matches!(kind, "A" | "V" | "L") {
                continue;
            }
            let at: u128 = parts.next().unwrap().parse().unwrap();
            for p in parts
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let p: u32 = p.parse().unwrap();
                if kind == "A" {
                    open.insert(p, at);
                } else if let Some(from) = open.remove(&p) {
                    intervals.push((p, from, at));
                }
            }
        }
        let end = self.killed_at.unwrap_or(end);
        intervals.extend(open.into_iter().map(|(p, from)| (p, from, end)));
        intervals
    }
}

/// `(partition, offset)` of each acknowledged key, from `strata.Clients produce`'s output.
fn acknowledged(path: &Path) -> HashMap<String, (u32, i64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let key = parts.next().unwrap().to_string();
            (
                key,
                (
                    parts.next().unwrap().parse().unwrap(),
                    parts.next().unwrap().parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// Committed offset of each partition of `topic`, from `strata group describe`.
fn strata_committed(server: &str, group: &str, topic: &str) -> BTreeMap<u32, i64> {
    let out = cli_ok(server, &["group", "describe", group], b"");
    out.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.len() == 8 && cols[0] == topic && cols[2] != "-")
                .then(|| (cols[1].parse().unwrap(), cols[2].parse().unwrap()))
        })
        .collect()
}

/// Members and their partitions of `topic`, and each partition's lag, from `strata group
/// describe`.
fn strata_view(
    server: &str,
    group: &str,
    topic: &str,
) -> (BTreeMap<String, Vec<u32>>, BTreeMap<u32, i64>) {
    let out = cli_ok(server, &["group", "describe", group], b"");
    let mut members = BTreeMap::new();
    let mut lag = BTreeMap::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() == 5 && cols[0] != "MEMBER" {
            let mut partitions: Vec<u32> = cols[3]
                .split(',')
                .filter_map(|tp| tp.strip_prefix(&format!("{topic}:")))
                .map(|p| p.parse().unwrap())
                .collect();
            partitions.sort_unstable();
            members.insert(cols[0].to_string(), partitions);
        } else if cols.len() == 8 && cols[0] == topic {
            lag.insert(cols[1].parse().unwrap(), cols[4].parse().unwrap());
        }
    }
    (members, lag)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Three `client` members of a new group on a new 12-partition topic while `records`
/// are produced at `rate` a second; one member is SIGKILLed; then the checks of the
/// module's doc.
fn group_under_load(
    client: Client,
    name: &str,
    records: usize,
    rate: usize,
    bootstrap: &str,
    server: &str,
) {
    let bootstrap = bootstrap.to_string();
    let server = server.to_string();
    let topic: &'static str = Box::leak(format!("{name}-topic").into_boxed_str());
    let group = &format!("{name}-group");
    cli_ok(
        &server,
        &["topic", "create", topic, "-p", &PARTITIONS.to_string()],
        b"",
    );
    let dir = tempfile::tempdir().unwrap();
    let acked_path = dir.path().join("acked");
    let producer = {
        let (bootstrap, path) = (bootstrap.clone(), acked_path.to_str().unwrap().to_string());
        std::thread::spawn(move || {
            // The members start, and one dies, under load.
            java_ok(&[
                "produce",
                &bootstrap,
                topic,
                &records.to_string(),
                &rate.to_string(),
                &path,
            ])
        })
    };
    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            Member::start(
                client,
                &bootstrap,
                topic,
                group,
                dir.path().join(format!("m{i}")),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    members[0].kill();
    let summary = producer.join().unwrap();
    let acked = acknowledged(&acked_path);
    assert_eq!(acked.len(), records, "every record acknowledged: {summary}");
    // Every acknowledged record is consumed by some member, at its offset.
    let started = Instant::now();
    loop {
        let seen: BTreeSet<(u32, i64)> = members
            .iter()
            .flat_map(|m| m.records())
            .map(|(p, o, _)| (p, o))
            .collect();
        let missing: BTreeMap<u32, usize> = acked
            .values()
            .filter(|position| !seen.contains(position))
            .fold(BTreeMap::new(), |mut m, (p, _)| {
                *m.entry(*p).or_default() += 1;
                m
            });
        if missing.is_empty() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let callbacks: Vec<Vec<String>> = members
                .iter()
                .map(|m| {
                    m.lines()
                        .into_iter()
                        .filter(|l| !l.starts_with("R "))
                        .collect()
                })
                .collect();
            panic!(
                "records not consumed, by partition: {missing:?}; members' callbacks: \
                 {callbacks:?}; group: {}",
                cli_ok(&server, &["group", "describe", group], b"")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut consumed: HashMap<(u32, i64), String> = HashMap::new();
    let mut deliveries = 0;
    for member in &members {
        for (p, o, key) in member.records() {
            deliveries += 1;
            if let Some(previous) = consumed.insert((p, o), key.clone()) {
                assert_eq!(previous, key, "{p}/{o} read with two keys");
            }
        }
    }
    for (key, position) in &acked {
        assert_eq!(
            consumed.get(position),
            Some(key),
            "{key} not consumed at its acknowledged {position:?}"
        );
    }
    // AdminClient and `strata group describe` agree, while the two members are stable.
    wait_until(
        "the committed offsets reach the end",
        Duration::from_secs(60),
        || {
            let committed = strata_committed(&server, group, topic);
            let (_, lag) = strata_view(&server, group, topic);
            committed.len() == PARTITIONS as usize && lag.values().all(|l| *l == 0)
        },
    );
    let theirs: serde_json::Value =
        serde_json::from_str(java_ok(&["group-describe", &bootstrap, group, topic]).trim())
            .unwrap();
    let (ours_members, ours_lag) = strata_view(&server, group, topic);
    let their_members: BTreeMap<String, Vec<u32>> = theirs["members"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, ps)| {
            (
                id.clone(),
                ps.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap() as u32)
                    .collect(),
            )
        })
        .collect();
    assert_eq!(their_members, ours_members, "members and assignment differ");
    assert_eq!(their_members.len(), 2, "the two live members");
    let their_offsets: BTreeMap<u32, i64> = theirs["offsets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, o)| (p.parse().unwrap(), o.as_i64().unwrap()))
        .collect();
    assert_eq!(their_offsets, strata_committed(&server, group, topic));
    let their_lag: BTreeMap<u32, i64> = theirs["lag"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, l)| (p.parse().unwrap(), l.as_i64().unwrap()))
        .collect();
    assert_eq!(their_lag, ours_lag, "lag differs");
    // Stop the others: they commit and leave.
    for member in members.iter_mut().skip(1) {
        member.stop();
    }
    let stopped = now_ms();
    // No partition had two owners at any moment.
    let mut intervals: Vec<(usize, u32, u128, u128)> = Vec::new();
    for (i, member) in members.iter().enumerate() {
        intervals.extend(
            member
                .ownership(stopped)
                .into_iter()
                .map(|(p, from, to)| (i, p, from, to)),
        );
    }
    let mut overlaps = Vec::new();
    for (n, a) in intervals.iter().enumerate() {
        for b in &intervals[n + 1..] {
            if a.0 != b.0 && a.1 == b.1 && a.2 < b.3 && b.2 < a.3 {
                overlaps.push(format!(
                    "partition {}: member {} [{}, {}) and member {} [{}, {})",
                    a.1, a.0, a.2, a.3, b.0, b.2, b.3
                ));
            }
        }
    }
    assert!(
        overlaps.is_empty(),
        "partitions with two owners: {overlaps:?}"
    );
    // A restarted member resumes from the committed offsets: it reads exactly what was
    // produced after.
    let committed = strata_committed(&server, group, topic);
    let more_path = dir.path().join("more");
    java_ok(&[
        "produce",
        &bootstrap,
        topic,
        "1200",
        "100000",
        more_path.to_str().unwrap(),
    ]);
    let more = acknowledged(&more_path);
    assert_eq!(
        more.len(),
        1200,
        "the 1,200 more records were not all acknowledged; the topic: {}",
        cli_ok(&server, &["topic", "describe", topic], b"")
    );
    let mut again = Member::start(client, &bootstrap, topic, group, dir.path().join("again"));
    wait_until(
        "the restarted member reads the new records",
        Duration::from_secs(90),
        || again.records().len() >= more.len(),
    );
    std::thread::sleep(Duration::from_secs(2));
    again.stop();
    let reread = again.records();
    let reread_positions: BTreeSet<(u32, i64)> = reread.iter().map(|(p, o, _)| (*p, *o)).collect();
    let new_positions: BTreeSet<(u32, i64)> = more.values().copied().collect();
    assert_eq!(
        reread_positions, new_positions,
        "the restarted member read something other than the new records"
    );
    for (p, first) in &committed {
        if let Some((_, o, _)) = reread.iter().find(|(q, _, _)| q == p) {
            assert_eq!(
                o, first,
                "partition {p} resumed elsewhere than its committed offset"
            );
        }
    }
    report(&format!(
        "kafka groups, {name}: 3 members, one SIGKILLed under load; {} acknowledged, all consumed ({} deliveries, {} distinct); {} ownership \
         intervals, none overlapping; AdminClient and strata group describe agree on 2 \
         members, their assignment, offsets and lag; a restarted member read exactly the {} \
         records produced after, from the committed offsets",
        acked.len(),
        deliveries,
        consumed.len(),
        intervals.len(),
        more.len()
    ));
}

#[test]
fn groups_of_kafka_clients_through_a_member_sigkill_consume_everything_with_one_owner_at_a_time() {
    let agents = AgentProcess::start_cluster(3, "kafka-groups", &[]);
    let bootstrap = agents
        .iter()
        .map(AgentProcess::kafka_bootstrap)
        .collect::<Vec<_>>()
        .join(",");
    let server = agents[0].server();
    group_under_load(
        Client::Java,
        "java-classic-cooperative-sticky",
        40_000,
        4_000,
        &bootstrap,
        &server,
    );
    group_under_load(
        Client::ConfluentConsumerProtocol,
        "confluent-kip848",
        40_000,
        4_000,
        &bootstrap,
        &server,
    );
    group_under_load(
        Client::KafkaPython,
        "kafka-python-classic-eager",
        10_000,
        2_000,
        &bootstrap,
        &server,
    );
    group_under_load(
        Client::KafkaJs,
        "kafkajs-classic-eager",
        10_000,
        2_000,
        &bootstrap,
        &server,
    );
    sdk_and_kip848_members_in_one_group(&bootstrap, &server);
}

/// Two gRPC SDK members (`strata consume --group`) and two confluent-kafka KIP-848 members
/// in one group on a 12-partition topic under load; one of each SIGKILLed. Every
/// acknowledged record is consumed, no partition has two owners at once (the SDK members'
/// rebalance events and the Kafka members' callbacks on one time line), both kinds of
/// member own partitions, and `strata group describe` shows the two live members.
fn sdk_and_kip848_members_in_one_group(bootstrap: &str, server: &str) {
    use strata_tests::groups::Member as SdkMember;
    let topic = "mixed-sdk-kip848-topic";
    let group = "mixed-sdk-kip848-group";
    let records = 20_000;
    cli_ok(
        server,
        &["topic", "create", topic, "-p", &PARTITIONS.to_string()],
        b"",
    );
    let dir = tempfile::tempdir().unwrap();
    let acked_path = dir.path().join("acked");
    let producer = {
        let (bootstrap, path) = (
            bootstrap.to_string(),
            acked_path.to_str().unwrap().to_string(),
        );
        std::thread::spawn(move || {
            java_ok(&[
                "produce",
                &bootstrap,
                topic,
                &records.to_string(),
                "2000",
                &path,
            ])
        })
    };
    let mut sdk: Vec<SdkMember> = (0..2)
        .map(|_| SdkMember::start(server, topic, group, &[]))
        .collect();
    let mut kafka: Vec<Member> = (0..2)
        .map(|i| {
            Member::start(
                Client::ConfluentConsumerProtocol,
                bootstrap,
                topic,
                group,
                dir.path().join(format!("k{i}")),
            )
        })
        .collect();
    wait_until(
        "both kinds of member own partitions",
        Duration::from_secs(60),
        || {
            sdk.iter().any(|m| !m.owned().is_empty())
                && kafka.iter().any(|m| !m.ownership(now_ms()).is_empty())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    sdk[0].kill();
    std::thread::sleep(Duration::from_secs(2));
    kafka[0].kill();
    let summary = producer.join().unwrap();
    let acked = acknowledged(&acked_path);
    assert_eq!(acked.len(), records, "every record acknowledged: {summary}");
    let consumed = || -> BTreeSet<(u32, i64)> {
        sdk.iter()
            .flat_map(|m| m.consumed())
            .map(|c| (c.partition, c.offset))
            .chain(
                kafka
                    .iter()
                    .flat_map(|m| m.records())
                    .map(|(p, o, _)| (p, o)),
            )
            .collect()
    };
    let started = Instant::now();
    loop {
        let seen = consumed();
        let missing = acked.values().filter(|p| !seen.contains(p)).count();
        if missing == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{missing} acknowledged records not consumed; group: {}",
            cli_ok(server, &["group", "describe", group], b"")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (members, _) = strata_view(server, group, topic);
    assert_eq!(members.len(), 2, "the two live members: {members:?}");
    let owned: usize = members.values().map(Vec::len).sum();
    assert_eq!(
        owned, PARTITIONS as usize,
        "every partition owned: {members:?}"
    );
    let split: Vec<usize> = members.values().map(Vec::len).collect();
    sdk[1].terminate();
    kafka[1].stop();
    let end = now_ms();
    // One time line: (who, partition, from, to).
    let mut intervals: Vec<(String, u32, u128, u128)> = Vec::new();
    for m in &sdk {
        for (p, spans) in m.intervals(end as i64) {
            intervals.extend(
                spans
                    .into_iter()
                    .map(|(from, to)| (m.name.clone(), p, from as u128, to as u128)),
            );
        }
    }
    for (i, m) in kafka.iter().enumerate() {
        intervals.extend(
            m.ownership(end)
                .into_iter()
                .map(|(p, from, to)| (format!("kafka-{i}"), p, from, to)),
        );
    }
    let mut overlaps = Vec::new();
    for (n, a) in intervals.iter().enumerate() {
        for b in &intervals[n + 1..] {
            if a.0 != b.0 && a.1 == b.1 && a.2 < b.3 && b.2 < a.3 {
                overlaps.push(format!("partition {}: {a:?} and {b:?}", a.1));
            }
        }
    }
    assert!(
        overlaps.is_empty(),
        "partitions with two owners: {overlaps:?}"
    );
    let kinds_owning: BTreeSet<bool> = intervals
        .iter()
        .map(|(who, ..)| who.starts_with("kafka-"))
        .collect();
    assert_eq!(kinds_owning.len(), 2, "both kinds owned partitions");
    report(&format!(
        "kafka groups, one group of 2 gRPC SDK and 2 KIP-848 (confluent-kafka) members, one of \
         each SIGKILLed under load: {} acknowledged, all consumed; {} ownership intervals on \
         one time line, none overlapping; the two live members owned {split:?} of the \
         {PARTITIONS} partitions (strata group describe)",
        acked.len(),
        intervals.len(),
    ));
}
