//! Helpers of the Kafka listener's tests: the outside clients (kcat, and the Python
//! driver `tests/python/kafka_clients.py` over confluent-kafka and kafka-python), what
//! they and `strata consume --json` read as comparable rows, and raw frames.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{TestEnv, cli_ok};

/// One record as read: (partition, offset) -> key, value, headers.
pub type Rows = BTreeMap<(u32, i64), Row>;

/// A record's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Key, as text.
    pub key: Option<String>,
    /// Value, as text.
    pub value: Option<String>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
}

fn text(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// Every record of `topic` as `strata consume --from-beginning --json` prints it.
pub fn strata_rows(server: &str, topic: &str) -> Rows {
    let out = cli_ok(
        server,
        &["consume", topic, "--from-beginning", "--json"],
        b"",
    );
    out.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
            let headers = v["headers"]
                .as_array()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            (
                                text(&h["key"]).unwrap(),
                                text(&h["value"]).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                (
                    v["partition"].as_u64().unwrap() as u32,
                    v["offset"].as_i64().unwrap(),
                ),
                Row {
                    key: text(&v["key"]),
                    value: text(&v["value"]),
                    headers,
                },
            )
        })
        .collect()
}

/// The rows the Python driver wrote (one JSON object a line).
pub fn driver_rows(path: &Path) -> Rows {
    std::fs::read_to_string(path)
        .expect("the driver's output")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let headers = v["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (text(&h[0]).unwrap(), text(&h[1]).unwrap()))
                .collect();
            (
                (
                    v["partition"].as_u64().unwrap() as u32,
                    v["offset"].as_i64().unwrap(),
                ),
                Row {
                    key: text(&v["key"]),
                    value: text(&v["value"]),
                    headers,
                },
            )
        })
        .collect()
}

/// Runs the Python driver (`tests/python/kafka_clients.py ARGS`); panics with its output
/// unless it succeeds; returns its standard output.
pub fn driver(args: &[&str]) -> String {
    let env = TestEnv::from_env();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kafka_clients.py");
    let output = Command::new(&env.python)
        .arg(script)
        .args(args)
        .output()
        .expect("run the Python Kafka driver");
    assert!(
        output.status.success(),
        "kafka_clients.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs kcat with `args`, `stdin` as its input; panics with its output unless it
/// succeeds; returns its standard output.
pub fn kcat(args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed by scripts/install-test-deps.sh");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        output.status.success(),
        "kcat {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every record of `topic` as `kcat -C -J` reads it from the beginning.
pub fn kcat_rows(bootstrap: &str, topic: &str, extra: &[&str]) -> Rows {
    let mut args = vec!["-b", bootstrap, "-C", "-t", topic, "-e", "-J", "-q"];
    args.extend_from_slice(extra);
    kcat(&args, b"")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("kcat -J: JSON");
            let flat: Vec<String> = v["headers"]
                .as_array()
                .map(|h| h.iter().map(|x| text(x).unwrap_or_default()).collect())
                .unwrap_or_default();
            (
                (
                    v["partition"].as_u64().unwrap() as u32,
                    v["offset"].as_i64().unwrap(),
                ),
                Row {
                    key: text(&v["key"]),
                    value: text(&v["payload"]),
                    headers: flat
                        .chunks(2)
                        .map(|kv| (kv[0].clone(), kv[1].clone()))
                        .collect(),
                },
            )
        })
        .collect()
}

/// Sends `bytes` on a new connection to `address`, then closes its sending side, and
/// returns what comes back before the agent closes it (or `timeout` passes): whether it
/// closed it.
pub fn raw_exchange(address: &str, bytes: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(address).expect("connect to the Kafka listener");
    stream.set_read_timeout(Some(timeout)).unwrap();
    let _ = stream.write_all(bytes);
    // Nothing more comes: a frame cut short ends here.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false);
            }
            Err(_) => return (out, true),
        }
    }
}

/// A request frame: length, header (API key, version, correlation id, client id as a
/// v1 header), body.
pub fn frame(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut inner = Vec::new();
    inner.extend_from_slice(&api_key.to_be_bytes());
    inner.extend_from_slice(&version.to_be_bytes());
    inner.extend_from_slice(&correlation_id.to_be_bytes());
    inner.extend_from_slice(&4i16.to_be_bytes());
    inner.extend_from_slice(b"test");
    inner.extend_from_slice(body);
    let mut out = (inner.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&inner);
    out
}

/// An ApiVersions v0 request (an empty body), answered by any working listener.
pub fn api_versions_v0(correlation_id: i32) -> Vec<u8> {
    frame(18, 0, correlation_id, &[])
}

/// Sends one request on a new connection and reads one response frame (length, then
/// that many bytes); `None` if the agent closed the connection instead.
pub fn request(address: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(address).expect("connect to the Kafka listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).ok()?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut reply = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut reply).ok()?;
    Some(reply)
}

/// Whether the listener at `address` answers ApiVersions v0 (with the correlation id and
/// error code 0).
pub fn answers_api_versions(address: &str) -> bool {
    request(address, &api_versions_v0(77))
        .is_some_and(|reply| reply[..4] == 77i32.to_be_bytes() && reply[4..6] == [0, 0])
}

/// Runs Kafka's Java client test program (`tests/java`, built by
/// `scripts/build-test-clients.sh`): `java strata.Clients ARGS`. Returns its exit status
/// and standard output; its standard error goes to the test's.
pub fn java(args: &[&str]) -> (bool, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("java/target");
    assert!(
        dir.join("classes/strata/Clients.class").exists(),
        "{} lacks the Java test programs: run scripts/build-test-clients.sh (scripts/test.sh does)",
        dir.display()
    );
    let classpath = format!(
        "{}:{}/*",
        dir.join("classes").display(),
        dir.join("lib").display()
    );
    let output = Command::new("java")
        .args([
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=error",
            "-cp",
            &classpath,
        ])
        .arg("strata.Clients")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run java");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

/// [`java`], panicking unless it succeeds.
pub fn java_ok(args: &[&str]) -> String {
    let (ok, out) = java(args);
    assert!(ok, "java strata.Clients {args:?} failed:\n{out}");
    out
}

/// Runs the KafkaJS program (`tests/node/kafkajs_client.js ARGS`, its packages installed by
/// `scripts/build-test-clients.sh`); panics with its output unless it succeeds; returns
/// its standard output.
pub fn kafkajs(args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/kafkajs").exists(),
        "{} lacks KafkaJS: run scripts/build-test-clients.sh (scripts/test.sh does)",
        dir.display()
    );
    let output = Command::new("node")
        .arg(dir.join("kafkajs_client.js"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "kafkajs_client.js {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}
