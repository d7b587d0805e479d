//! Kafka Streams and Kafka Connect (Apache Kafka's own, from Maven Central) against
//! three agents (real etcd and s3s-fs): a word count with
//! `processing.guarantee=exactly_once_v2` over 100,000 lines with an agent SIGKILLed
//! midway, its final counts against a direct count of the input; Connect standalone
//! moving a file through a topic with the FileStream source and sink connectors,
//! restarted midway, the sink file against the source file.
//!
//! Needs Java and the test programs (scripts/build-test-clients.sh: tests/java for
//! Streams, tests/connect for Connect's jars).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_tests::{AgentProcess, cli_ok, free_port, report};

fn classpath(dir: &str, with_classes: bool) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join("target");
    assert!(
        dir.join("lib").exists(),
        "{} lacks its jars: run scripts/build-test-clients.sh (scripts/test.sh does)",
        dir.display()
    );
    if with_classes {
        format!(
            "{}:{}/*",
            dir.join("classes").display(),
            dir.join("lib").display()
        )
    } else {
        format!("{}/*", dir.join("lib").display())
    }
}

/// A Java program that is killed if the test ends while it runs (a failure): it would
/// keep the test command's output open.
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn java(classpath: &str, args: &[&str], log: &Path) -> Program {
    let child = Command::new("java")
        .args([
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            classpath,
        ])
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(log).unwrap(),
        ))
        .spawn()
        .expect("run java");
    Program(child)
}

/// SIGTERM, then wait: the program closes cleanly.
fn stop(program: &mut Program) {
    Command::new("kill")
        .args(["-TERM", &program.0.id().to_string()])
        .status()
        .unwrap();
    program.0.wait().unwrap();
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

const WORDS: [&str; 12] = [
    "object",
    "storage",
    "stateless",
    "agents",
    "segments",
    "etcd",
    "kafka",
    "streams",
    "connect",
    "exactly",
    "once",
    "strata",
];

fn word_count(agents: &mut [AgentProcess], bootstrap: &str, dir: &Path) {
    let server = agents[0].server();
    cli_ok(&server, &["topic", "create", "wc-input", "-p", "6"], b"");
    cli_ok(&server, &["topic", "create", "wc-output", "-p", "6"], b"");
    // 100,000 lines of 1 to 8 words, and their direct count.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = String::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..100_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = 1 + (state % 8) as usize;
        let words: Vec<&str> = (0..n)
            .map(|i| WORDS[((state >> (i * 4)) % WORDS.len() as u64) as usize])
            .collect();
        for w in &words {
            *expected.entry(w.to_string()).or_default() += 1;
        }
        lines.push_str(&words.join(" "));
        lines.push('\n');
    }
    cli_ok(&server, &["produce", "wc-input"], lines.as_bytes());
    let log = dir.join("streams.log");
    let state_dir = dir.join("streams-state");
    let mut streams = java(
        &classpath("java", true),
        &[
            "strata.WordCount",
            "run",
            bootstrap,
            "wc-input",
            "wc-output",
            "wordcount",
            state_dir.to_str().unwrap(),
        ],
        &log,
    );
    // SIGKILL an agent while the counts are being computed, and bring it back.
    std::thread::sleep(Duration::from_secs(10));
    let victim = 2;
    let killed = agents[victim].agent_id();
    agents[victim].kill();
    std::thread::sleep(Duration::from_secs(5));
    agents[victim].start_again();
    let counts = dir.join("counts");
    let started = Instant::now();
    let read = loop {
        let status = Command::new("java")
            .args([
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=error",
                "-cp",
                &classpath("java", true),
                "strata.WordCount",
                "counts",
                bootstrap,
                "wc-output",
                counts.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "reading the counts failed");
        let read: BTreeMap<String, u64> = std::fs::read_to_string(&counts)
            .unwrap()
            .lines()
            .map(|l| {
                let (w, n) = l.split_once(' ').unwrap();
                (w.to_string(), n.parse().unwrap())
            })
            .collect();
        if read == expected || started.elapsed() > Duration::from_secs(240) {
            break read;
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    stop(&mut streams);
    assert_eq!(
        read,
        expected,
        "the final counts differ from a direct count; streams log:\n{}",
        log_tail(&log)
    );
    report(&format!(
        "kafka streams word count (exactly_once_v2) over 100,000 lines ({} words) with agent \
         {killed} SIGKILLed midway: the final counts of all {} words equal a direct count",
        expected.values().sum::<u64>(),
        expected.len()
    ));
}

fn connect_file_roundtrip(server: &str, bootstrap: &str, dir: &Path) {
    // One partition: the sink writes in the order the source read.
    cli_ok(
        server,
        &["topic", "create", "connect-lines", "-p", "1"],
        b"",
    );
    let source: PathBuf = dir.join("source.txt");
    let sink: PathBuf = dir.join("sink.txt");
    let write_lines = |from: usize, to: usize| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&source)
            .unwrap();
        for i in from..to {
            writeln!(f, "line {i}: {}", "x".repeat(i % 50)).unwrap();
        }
    };
    write_lines(0, 10_000);
    let worker = dir.join("worker.properties");
    std::fs::write(
        &worker,
        format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             offset.storage.file.filename={}\n\
             offset.flush.interval.ms=1000\n\
             listeners=http://127.0.0.1:{}\n",
            dir.join("connect.offsets").display(),
            free_port()
        ),
    )
    .unwrap();
    let source_config = dir.join("source.properties");
    std::fs::write(
        &source_config,
        format!(
            "name=file-source\nconnector.class=org.apache.kafka.connect.file.FileStreamSourceConnector\n\
             tasks.max=1\nfile={}\ntopic=connect-lines\n",
            source.display()
        ),
    )
    .unwrap();
    let sink_config = dir.join("sink.properties");
    std::fs::write(
        &sink_config,
        format!(
            "name=file-sink\nconnector.class=org.apache.kafka.connect.file.FileStreamSinkConnector\n\
             tasks.max=1\nfile={}\ntopics=connect-lines\n",
            sink.display()
        ),
    )
    .unwrap();
    let start = |log: &Path| {
        java(
            &classpath("connect", false),
            &[
                "org.apache.kafka.connect.cli.ConnectStandalone",
                worker.to_str().unwrap(),
                source_config.to_str().unwrap(),
                sink_config.to_str().unwrap(),
            ],
            log,
        )
    };
    let sink_lines = || {
        std::fs::read_to_string(&sink)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let first_log = dir.join("connect-1.log");
    let mut connect = start(&first_log);
    wait_until(
        "the sink has the first 10,000 lines",
        Duration::from_secs(120),
        || sink_lines() >= 10_000,
    );
    stop(&mut connect);
    // More lines while Connect is down; a new Connect resumes from the stored offsets
    // (the source's file, the sink's consumer group).
    write_lines(10_000, 20_000);
    let second_log = dir.join("connect-2.log");
    let mut connect = start(&second_log);
    wait_until(
        "the sink has all 20,000 lines",
        Duration::from_secs(120),
        || sink_lines() >= 20_000,
    );
    // A moment for anything extra (a duplicate) to arrive.
    std::thread::sleep(Duration::from_secs(3));
    stop(&mut connect);
    let (source_text, sink_text) = (
        std::fs::read_to_string(&source).unwrap(),
        std::fs::read_to_string(&sink).unwrap(),
    );
    assert!(
        source_text == sink_text,
        "the sink file differs from the source file ({} vs {} lines); connect log:\n{}",
        source_text.lines().count(),
        sink_text.lines().count(),
        log_tail(&second_log)
    );
    report(
        "kafka connect standalone: FileStreamSource -> topic -> FileStreamSink, 20,000 lines \
         with Connect restarted after 10,000: the sink file equals the source file",
    );
}

#[test]
fn kafka_streams_word_count_and_kafka_connect_file_roundtrip() {
    let mut agents = AgentProcess::start_cluster(3, "kafka-streams", &["--lease-ttl-secs", "3"]);
    let bootstrap = agents
        .iter()
        .map(AgentProcess::kafka_bootstrap)
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().unwrap();
    word_count(&mut agents, &bootstrap, dir.path());
    let server = agents[0].server();
    connect_file_roundtrip(&server, &bootstrap, dir.path());
}
