//! The whole-system test harness: runs the real `strata` binary as processes against the
//! real etcd and S3 server that `scripts/test.sh` started (see `scripts/test-env.sh`).
//!
//! Each test gets its own etcd cluster root and its own bucket, so tests run in parallel
//! on one etcd and one S3 server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod compactor;
pub mod etcd;
pub mod groups;
pub mod history;
pub mod kafka;
pub mod pki;

/// Where the test etcd and S3 server are.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// etcd client endpoint, host:port.
    pub etcd: String,
    /// S3 endpoint URL.
    pub s3_endpoint: String,
    /// S3 access key.
    pub s3_access_key: String,
    /// S3 secret key.
    pub s3_secret_key: String,
    /// The directory the S3 server serves; bucket = subdirectory.
    pub s3_dir: PathBuf,
    /// A Python with pyarrow and duckdb.
    pub python: PathBuf,
}

impl TestEnv {
    /// Reads the environment `scripts/test.sh` sets; panics with a clear message if unset.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests through scripts/test.sh, which starts etcd and s3s-fs")
            })
        };
        Self {
            etcd: var("STRATA_TEST_ETCD"),
            s3_endpoint: var("STRATA_TEST_S3_ENDPOINT"),
            s3_access_key: var("STRATA_TEST_S3_ACCESS_KEY"),
            s3_secret_key: var("STRATA_TEST_S3_SECRET_KEY"),
            s3_dir: PathBuf::from(var("STRATA_TEST_S3_DIR")),
            python: PathBuf::from(var("STRATA_TEST_PYTHON")),
        }
    }
}

impl TestEnv {
    /// `strata agent` against this etcd and S3 server, for `cluster`, with segments in
    /// `object_store` (`s3://bucket/prefix`); callers add listen addresses and the rest.
    pub fn agent_command(&self, cluster: &str, object_store: &str) -> Command {
        self.server_command("agent", cluster, object_store)
    }

    /// `strata compactor` against this etcd and S3 server, as [`TestEnv::agent_command`].
    pub fn compactor_command(&self, cluster: &str, object_store: &str) -> Command {
        self.server_command("compactor", cluster, object_store)
    }

    fn server_command(&self, role: &str, cluster: &str, object_store: &str) -> Command {
        let mut command = Command::new(strata_bin());
        command
            .arg(role)
            .args(["--metastore", &format!("etcd://{}", self.etcd)])
            .args(["--object-store", object_store])
            .args(["--cluster", cluster])
            .args(["--s3-endpoint", &self.s3_endpoint])
            .args(["--s3-access-key", &self.s3_access_key])
            .args(["--s3-secret-key", &self.s3_secret_key])
            .arg("--s3-allow-http")
            .env_remove("STRATA_SERVER");
        command
    }
}

/// Prints a line of figures, and appends it to the file `STRATA_TEST_REPORT` names (set
/// by `scripts/test.sh`, which prints the file after the run: passing tests' output is
/// otherwise captured).
pub fn report(line: &str) {
    println!("{line}");
    if let Ok(path) = std::env::var("STRATA_TEST_REPORT")
        && let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

/// A name unique to this test run, for clusters and buckets (lowercase, S3-safe).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `strata` binary of this build: `STRATA_BIN`, or `target/<profile>/strata` next to
/// the test executable's `deps/` directory.
pub fn strata_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("STRATA_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("strata");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --bin strata), as scripts/test.sh does",
        bin.display()
    );
    bin
}

/// A free loopback port for a server the test starts (bound and released; the server
/// binds it right after). It is below Linux's ephemeral range (32768 and up), so the
/// outgoing connections of the test's clients (Kafka clients open many) never take it
/// between the check and the bind; and this process never hands it out twice.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize
        ^ (std::process::id() as usize).rotate_left(7);
    for i in 0..10_000usize {
        let port = (20_000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 12_000)) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// How to start an agent process.
#[derive(Debug, Clone)]
pub enum AgentKind {
    /// `strata dev --data-dir DIR`.
    Dev {
        /// Data directory.
        data_dir: PathBuf,
    },
    /// `strata agent` against the test etcd and S3 server.
    Agent {
        /// Test environment.
        env: TestEnv,
        /// Metastore cluster name (key root).
        cluster: String,
        /// Bucket name.
        bucket: String,
    },
}

impl AgentKind {
    /// `strata agent` of a new cluster (its own etcd root and bucket, named after
    /// `prefix`) on the test etcd and S3 server.
    pub fn new_cluster(prefix: &str) -> Self {
        Self::Agent {
            env: TestEnv::from_env(),
            cluster: unique_name(prefix),
            bucket: unique_name(prefix),
        }
    }
}

/// A running `strata dev` or `strata agent`; SIGKILLed when dropped.
#[derive(Debug)]
pub struct AgentProcess {
    kind: AgentKind,
    port: u16,
    metrics_port: u16,
    kafka_port: u16,
    extra_args: Vec<String>,
    /// Environment variables set for the process (test hooks: `STRATA_FAILPOINT`).
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `count` agents of a new cluster (its own etcd root and bucket, named after
    /// `prefix`) on the test etcd and S3 server, each with `extra_args`.
    pub fn start_cluster(count: usize, prefix: &str, extra_args: &[&str]) -> Vec<Self> {
        let kind = AgentKind::new_cluster(prefix);
        (0..count)
            .map(|_| Self::start(kind.clone(), extra_args))
            .collect()
    }

    /// Starts an agent on a free port and waits until it answers.
    pub fn start(kind: AgentKind, extra_args: &[&str]) -> Self {
        Self::start_with_env(kind, extra_args, &[])
    }

    /// [`AgentProcess::start`] with environment variables (kept for restarts until
    /// [`AgentProcess::set_env`] changes them).
    pub fn start_with_env(kind: AgentKind, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("strata-agent")));
        let mut process = Self {
            kind,
            port: free_port(),
            metrics_port: free_port(),
            kafka_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log,
        };
        process.spawn();
        process
    }

    /// The environment of the next start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The agent's address, `http://127.0.0.1:port`.
    pub fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The agent's Kafka listener, `127.0.0.1:port`: a Kafka client's
    /// `bootstrap.servers`.
    pub fn kafka_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// The agent's HTTP port (`/metrics`, the console), as `scheme://127.0.0.1:port`
    /// (`https` when the agent serves TLS).
    pub fn http_base(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.metrics_port)
    }

    /// The agent's metrics URL, `http://127.0.0.1:port/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    fn spawn(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut command = match &self.kind {
            AgentKind::Dev { data_dir } => {
                let mut command = Command::new(strata_bin());
                command
                    .env_remove("STRATA_SERVER")
                    .arg("dev")
                    .arg("--data-dir")
                    .arg(data_dir)
                    .arg("--listen")
                    .arg(&listen);
                command
            }
            AgentKind::Agent {
                env,
                cluster,
                bucket,
            } => {
                let mut command =
                    env.agent_command(cluster, &format!("s3://{bucket}/segments-test"));
                command.args(["--listen", &listen]).arg("--create-bucket");
                // `agent-PORT`, unless the test names the agent itself.
                if !self.extra_args.iter().any(|a| a == "--agent-id") {
                    command.args(["--agent-id", &format!("agent-{}", self.port)]);
                }
                command
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open agent log");
        command
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .args(
                (!self.extra_args.iter().any(|a| a == "--kafka-listen"))
                    .then(|| ["--kafka-listen".to_string(), self.kafka_bootstrap()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let logged_before = self.log_text().len();
        self.child = Some(command.spawn().expect("spawn strata"));
        self.wait_ready(logged_before);
    }

    /// Waits until this run of the agent (its log past `logged_before`) says it serves.
    fn wait_ready(&mut self, logged_before: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The listener is bound before the agent has registered and taken its
            // roles; it serves (and says so in its log) only once it has.
            if self.log_text()[logged_before..].contains("serving gRPC") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "agent exited during start-up ({status}):\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "agent did not start serving within 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the process dies at once, without flushing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the agent");
            child.wait().expect("reap the agent");
        }
    }

    /// SIGTERM, then waits for the graceful exit (flush, deregister).
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM failed");
            let exit = child.wait().expect("reap the agent");
            assert!(
                exit.success(),
                "agent exited with {exit} after SIGTERM:\n{}",
                self.log_text()
            );
        }
    }

    /// SIGSTOP: the process freezes (its lease stops being renewed) until [`Self::resume`].
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, signal: &str) {
        let child = self.child.as_ref().expect("the agent is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// How it was started (its cluster and bucket, for a compactor of the same cluster).
    pub fn kind(&self) -> &AgentKind {
        &self.kind
    }

    /// The agent id it runs with (`agent-<port>` for `strata agent`, `dev` for `strata dev`).
    pub fn agent_id(&self) -> String {
        match self.kind {
            AgentKind::Dev { .. } => "dev".to_string(),
            AgentKind::Agent { .. } => format!("agent-{}", self.port),
        }
    }

    /// Starts the agent again with the same configuration and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

/// Starts a process after [`AgentProcess::terminate`] or [`AgentProcess::kill`].
impl AgentProcess {
    /// Starts the stopped agent again with the same configuration, id and port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the agent is still running");
        self.spawn();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        // STRATA_KEEP_LOGS=1 keeps agents' logs (their paths are printed) for debugging;
        // a failing test keeps them too.
        if std::env::var_os("STRATA_KEEP_LOGS").is_some() || std::thread::panicking() {
            eprintln!("agent log kept: {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The body of a plain-HTTP GET (the agent's `/metrics`); panics unless it is a 200.
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// A produce request (acks=ALL) of one record with `value` to `topic`/`partition`, for
/// whatever incarnation of the topic is current.
pub fn one_record(
    topic: &str,
    partition: i32,
    value: &str,
) -> strata_client::proto::ProduceRequest {
    use strata_client::proto;
    proto::ProduceRequest {
        topic: topic.to_string(),
        topic_id: String::new(),
        partition: Some(partition),
        records: vec![proto::Record {
            value: Some(value.to_string().into()),
            ..Default::default()
        }],
        acks: proto::Acks::All as i32,
        ..Default::default()
    }
}

/// Runs `strata ARGS` against `server` with `stdin`; returns its output.
pub fn cli(server: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(strata_bin())
        .args(args)
        .env("STRATA_SERVER", server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("run strata");
    writer.join().unwrap();
    output
}

/// Runs `strata ARGS` and panics, with its stderr, unless it succeeds; returns stdout.
pub fn cli_ok(server: &str, args: &[&str], stdin: &[u8]) -> String {
    let output = cli(server, args, stdin);
    assert!(
        output.status.success(),
        "strata {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}
