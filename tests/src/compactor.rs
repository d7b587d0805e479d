//! `strata compactor` processes, and what a test reads of their work: the jobs each ran
//! (from its log) and the partitions' index in etcd.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_metastore::{IndexEntry, Metastore};

use crate::{AgentKind, TestEnv, unique_name};

/// A running `strata compactor`; SIGKILLed when dropped.
#[derive(Debug)]
pub struct CompactorProcess {
    child: Option<Child>,
    log: PathBuf,
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
        let child = env
            .compactor_command(cluster, &format!("s3://{bucket}/segments-test"))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn strata compactor");
        let process = Self {
            child: Some(child),
            log,
        };
        process.wait_for_log("compactor started", Duration::from_secs(30));
        process
    }

    /// The compactor's log so far.
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
