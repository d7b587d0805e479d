//! Consumer-group members as `strata consume --group` processes, and what the group tests
//! read from them: the records each printed (`partition offset timestamp value` lines) and its
//! rebalance events (`rebalance KIND UNIX_MS topic:p,...` on standard error), from which
//! each member's ownership intervals of each partition follow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{strata_bin, unique_name};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A rebalance event a member printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// assigned | revoked | released | lost
    pub kind: String,
    pub at_ms: i64,
    pub partitions: Vec<u32>,
}

/// A record a member printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: u32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub value: String,
}

/// One group member process; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    /// When the process stopped (killed or terminated), ms since the epoch.
    pub stopped_at_ms: Option<i64>,
}

impl Member {
    /// Starts `strata consume TOPIC --group GROUP` against `server`, reading from the log
    /// start where nothing is committed, committing after each batch is printed.
    pub fn start(server: &str, topic: &str, group: &str, extra: &[&str]) -> Self {
        let name = unique_name("member");
        let dir = std::env::temp_dir();
        let (out, err) = (
            dir.join(format!("{name}.out")),
            dir.join(format!("{name}.err")),
        );
        let child = Command::new(strata_bin())
            .args(["--server", server, "consume", topic, "--group", group])
            .args([
                "--from-beginning",
                "--print-rebalances",
                "--format",
                "%p %o %T %v",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn strata consume");
        Self {
            name,
            child: Some(child),
            out,
            err,
            stopped_at_ms: None,
        }
    }

    /// SIGKILL: no commit, no leave.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
            self.stopped_at_ms = Some(now_ms());
        }
    }

    /// SIGTERM: commits and leaves the group; waits for the exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "{} exited with {status}:\n{}",
                self.name,
                self.stderr()
            );
            self.stopped_at_ms = Some(now_ms());
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Its standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The records it printed (whole lines only).
    pub fn consumed(&self) -> Vec<Consumed> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        complete
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(4, ' ');
                Some(Consumed {
                    partition: fields.next()?.parse().ok()?,
                    offset: fields.next()?.parse().ok()?,
                    timestamp_ms: fields.next()?.parse().ok()?,
                    value: fields.next()?.to_string(),
                })
            })
            .collect()
    }

    /// Its rebalance events, in order.
    pub fn events(&self) -> Vec<Event> {
        self.stderr()
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("rebalance ")?;
                let mut fields = rest.split(' ');
                let kind = fields.next()?.to_string();
                let at_ms = fields.next()?.parse().ok()?;
                let partitions = fields
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|tp| tp.rsplit_once(':')?.1.parse().ok())
                    .collect();
                Some(Event {
                    kind,
                    at_ms,
                    partitions,
                })
            })
            .collect()
    }

    /// The partitions it owns now, by its events.
    pub fn owned(&self) -> BTreeSet<u32> {
        let mut owned = BTreeSet::new();
        for event in self.events() {
            match event.kind.as_str() {
                "assigned" => owned.extend(event.partitions),
                "released" | "lost" => {
                    for p in event.partitions {
                        owned.remove(&p);
                    }
                }
                _ => {}
            }
        }
        owned
    }

    /// Per partition, the intervals `[from, to)` (ms) it owned it: from `assigned` to
    /// `released`/`lost`, or to when it stopped (or `now`).
    pub fn intervals(&self, now: i64) -> BTreeMap<u32, Vec<(i64, i64)>> {
        let mut open: BTreeMap<u32, i64> = BTreeMap::new();
        let mut intervals: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
        for event in self.events() {
            for p in event.partitions {
                match event.kind.as_str() {
                    "assigned" => {
                        open.insert(p, event.at_ms);
                    }
                    "released" | "lost" => {
                        if let Some(from) = open.remove(&p) {
                            intervals.entry(p).or_default().push((from, event.at_ms));
                        }
                    }
                    _ => {}
                }
            }
        }
        let end = self.stopped_at_ms.unwrap_or(now);
        for (p, from) in open {
            intervals.entry(p).or_default().push((from, end));
        }
        intervals
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}

/// Checks that no two members ever owned a partition at once; returns the violations as
/// text (empty when there are none).
pub fn overlaps(members: &[&Member]) -> Vec<String> {
    let now = now_ms();
    let mut by_partition: BTreeMap<u32, Vec<(i64, i64, &str)>> = BTreeMap::new();
    for member in members {
        for (p, intervals) in member.intervals(now) {
            for (from, to) in intervals {
                by_partition
                    .entry(p)
                    .or_default()
                    .push((from, to, &member.name));
            }
        }
    }
    let mut violations = Vec::new();
    for (p, mut intervals) in by_partition {
        intervals.sort();
        // The interval reaching furthest so far, and whose it is.
        let mut reach: Option<(i64, &str)> = None;
        for (from, to, who) in intervals {
            if let Some((until, owner)) = reach
                && owner != who
                && from < until
            {
                violations.push(format!(
                    "partition {p}: {who} took it at {from} while {owner} owned it until {until}"
                ));
            }
            if reach.is_none_or(|(until, _)| to > until) {
                reach = Some((to, who));
            }
        }
    }
    violations
}
