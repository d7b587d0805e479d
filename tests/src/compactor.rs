//! `strata compactor` processes, and what a test reads of their work: the jobs each ran
//! (from its log) and the partitions' index in etcd.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use strata_client::{Admin, Consumer, ConsumerConfig, ConsumerRecord, StartOffset};
use strata_metastore::{IndexEntry, Metastore};

use crate::{AgentKind, AgentProcess, TestEnv, unique_name};

/// A running `strata compactor`; SIGKILLed when dropped.
#[derive(Debug)]
pub struct CompactorProcess {
    child: Option<Child>,
    log: PathBuf,
    /// Its HTTP port (`/metrics`, `/health`).
    metrics_port: u16,
}

impl CompactorProcess {
    /// Starts a compactor for the cluster and bucket of `kind` (an [`AgentKind::Agent`])
    /// and waits until it has started.
    pub fn start(kind: &AgentKind, extra_args: &[&str]) -> Self {
        let AgentKind::Agent {
            env,
            cluster,
            bucket,
        } = kind
        else {
            panic!("a compactor process needs etcd and S3: use AgentKind::Agent");
        };
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("strata-compactor")));
        let file = std::fs::File::create(&log).expect("create compactor log");
        let metrics_port = crate::free_port();
        let child = env
            .compactor_command(cluster, &format!("s3://{bucket}/segments-test"))
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn strata compactor");
        let process = Self {
            child: Some(child),
            log,
            metrics_port,
        };
        process.wait_for_log("compactor started", Duration::from_secs(30));
        process
    }

    /// The compactor's log so far.
    /// The URL of its HTTP `path` (`/metrics`, `/health`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics_port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`; panics (with the log) after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the compactor did not log '{needle}' within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: the process dies at once, wherever it is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the compactor");
            child.wait().expect("reap the compactor");
        }
    }

    /// The jobs this compactor ran, from its log: `(job, started_ms, finished_ms)`; a job
    /// still running (or cut short) ends at `i64::MAX`.
    pub fn jobs(&self) -> Vec<(String, i64, i64)> {
        let field = |line: &str, name: &str| -> Option<String> {
            let at = line.find(&format!(" {name}="))? + name.len() + 2;
            let rest = &line[at..];
            let value = rest.split_whitespace().next()?;
            Some(value.trim_matches('"').to_string())
        };
        let mut jobs: Vec<(String, i64, i64)> = Vec::new();
        for line in self.log_text().lines() {
            let (Some(job), Some(at)) = (field(line, "job"), field(line, "at_ms")) else {
                continue;
            };
            let at: i64 = at.parse().expect("at_ms is a number");
            if line.contains("job started") {
                jobs.push((job, at, i64::MAX));
            } else if line.contains("job finished")
                && let Some(open) = jobs
                    .iter_mut()
                    .rev()
                    .find(|(j, _, end)| *j == job && *end == i64::MAX)
            {
                open.2 = at;
            }
        }
        jobs
    }
}

impl Drop for CompactorProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The test cluster's metastore, read directly (etcd) to check the compactor's work.
pub async fn metastore(env: &TestEnv, cluster: &str) -> Arc<dyn Metastore> {
    strata_metastore::open(&format!("etcd://{}", env.etcd), cluster)
        .await
        .expect("open the test etcd")
}

/// A partition's index entries.
pub async fn index(metastore: &Arc<dyn Metastore>, topic: &str, partition: u32) -> Vec<IndexEntry> {
    metastore
        .index_entries(topic, partition, 0, 0)
        .await
        .expect("read the index")
}

/// Where an object of the test bucket lives on the S3 server's disk.
pub fn object_path(env: &TestEnv, bucket: &str, object: &str) -> PathBuf {
    env.s3_dir.join(bucket).join("segments-test").join(object)
}

/// Bytes of every segment object in the bucket (on the S3 server's disk).
pub fn stored_bytes(env: &TestEnv, bucket: &str) -> u64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
    }
    walk(
        &env.s3_dir
            .join(bucket)
            .join("segments-test")
            .join("segments"),
    )
}

/// One agent, and the cluster's metastore read directly.
#[derive(Debug)]
pub struct Setup {
    pub kind: AgentKind,
    pub agent: AgentProcess,
    pub metastore: Arc<dyn Metastore>,
    pub env: TestEnv,
    pub bucket: String,
}

pub async fn setup(name: &str, agent_args: &[&str]) -> Setup {
    let env = TestEnv::from_env();
    let cluster = unique_name(name);
    let bucket = unique_name(name);
    let kind = AgentKind::Agent {
        env: env.clone(),
        cluster: cluster.clone(),
        bucket: bucket.clone(),
    };
    let agent = AgentProcess::start(kind.clone(), agent_args);
    let metastore = metastore(&env, &cluster).await;
    Setup {
        kind,
        agent,
        metastore,
        env,
        bucket,
    }
}

pub async fn create_topic(server: &str, topic: &str, partitions: i32, config: &[(&str, &str)]) {
    let config: HashMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Admin::connect(server)
        .await
        .unwrap()
        .create_topic(topic, partitions, config)
        .await
        .unwrap();
}

/// Every record of `topic` from each partition's log start up to its high watermark.
pub async fn read_all(server: &str, topic: &str) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::connect(server, ConsumerConfig::default())
        .await
        .unwrap();
    consumer
        .assign(topic, &[], StartOffset::Earliest)
        .await
        .unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        records.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
        let done = consumer
            .high_watermarks()
            .iter()
            .all(|(t, p, hwm)| consumer.position(t, *p).is_some_and(|pos| pos >= *hwm));
        if done {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "could not read {topic} to its end"
        );
    }
}

/// Waits until `condition` holds (checked every 200 ms); panics with `what` after 120 s.
pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut condition: F) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every index entry of the partition names an object that exists (or none, if empty),
/// and the entries cover the log from its start to the high watermark without a hole.
pub async fn check_index(setup: &Setup, topic: &str, partition: u32) -> usize {
    let state = setup
        .metastore
        .partition_state(topic, partition)
        .await
        .unwrap();
    let entries = index(&setup.metastore, topic, partition).await;
    let mut next = state.log_start_offset;
    for entry in &entries {
        assert_eq!(
            entry.base_offset, next,
            "hole or overlap in the index at {entry:?}"
        );
        next = entry.last_offset + 1;
        if !entry.is_empty() {
            let path = object_path(&setup.env, &setup.bucket, &entry.object);
            assert!(
                path.exists(),
                "index entry {entry:?} names a missing object"
            );
        }
    }
    assert_eq!(
        next, state.high_watermark,
        "the index does not reach the high watermark"
    );
    entries.len()
}
