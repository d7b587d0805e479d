//! The compactor: retention, log compaction, segment merges, the Parquet archive, orphan
//! GC and etcd history compaction, as a service separate from the agents
//! (`strata compactor`; `strata dev` runs one in-process).
//!
//! One or many compactors share the work through claims in the metastore
//! ([`Metastore::claim_compaction`], under a lease on etcd): a job on a partition runs
//! only while its compactor holds the partition's claim, so two compactors never work on
//! one partition at once, and a compactor that dies frees its claims when its lease ends.
//!
//! Invariants:
//! - every job writes new objects first, then swaps index entries in transactions that
//!   compare every entry they remove ([`Metastore::replace_index_entries`],
//!   [`Metastore::truncate_log`]); a job cut short at any point leaves the index whole:
//!   each transaction replaces a run of entries by entries covering the same offsets, or
//!   drops a prefix and moves the log start;
//! - the claim is checked before every swap; a compactor whose claim lapsed stops;
//! - objects are deleted only by orphan GC, once no index entry names them, they are older
//!   than `orphan_min_age` and they were seen unreferenced for `gc_grace`: a reader that
//!   still holds an old entry keeps working through the grace period, and an object whose
//!   commit is still in flight is never taken for an orphan;
//! - records keep their offsets: a merge copies batches unchanged, a compaction re-encodes
//!   the records it keeps with their original offsets and timestamps.

pub mod archive;
mod error;
mod gc;
mod job;
pub mod metrics;
pub mod plan;
pub mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::seq::SliceRandom;
use strata_metastore::{CompactorRecord, Liveness, Metastore};
use strata_storage::SegmentStore;
use strata_storage::clock::Clock;
use tokio::sync::watch;
use tracing::Instrument;

pub use error::{Error, Result};
pub use gc::Orphan;
pub use metrics::CompactorMetrics;

/// How a compactor works.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// This compactor's id, as its claims name it.
    pub compactor_id: String,
    /// Time between passes over every partition.
    pub interval: Duration,
    /// Lifetime of a claim that is no longer renewed (etcd lease TTL).
    pub claim_ttl: Duration,
    /// Target size of a merged object (one partition's blocks).
    pub segment_target_bytes: u64,
    /// Target size of one merged block: one index entry, the unit a reader fetches.
    pub block_target_bytes: u64,
    /// A run of small entries smaller than half a block is merged only once its newest
    /// record is this old.
    pub merge_min_age: Duration,
    /// Objects younger than this are never orphans: their flush commit may be in flight.
    pub orphan_min_age: Duration,
    /// An unreferenced object is deleted only after it was seen unreferenced this long,
    /// so readers holding its old index entries keep working.
    pub gc_grace: Duration,
    /// How often etcd's history is compacted (to the revision seen one interval before).
    pub history_interval: Duration,
    /// The archive of a topic with `archive.enabled=true` trails its log by at most about
    /// this long (plus one pass).
    pub archive_interval: Duration,
    /// Target size of one archive file, in stored (log) bytes.
    pub archive_file_bytes: u64,
    /// Target size of one Parquet row group (encoded bytes): what a query engine reads
    /// and skips as one.
    pub archive_row_group_bytes: u64,
    /// Test hook: the point (`merge-put`, `merge-swap`, `compact-put`, `compact-swap`,
    /// `archive-put`) at which the compactor stops dead, so a test can kill it there.
    pub failpoint: Option<String>,
}

impl CompactorConfig {
    /// The defaults, for compactor `compactor_id`.
    pub fn new(compactor_id: impl Into<String>) -> Self {
        Self {
            compactor_id: compactor_id.into(),
            interval: Duration::from_secs(30),
            claim_ttl: Duration::from_secs(10),
            segment_target_bytes: 64 << 20,
            block_target_bytes: 4 << 20,
            merge_min_age: Duration::from_secs(60),
            orphan_min_age: Duration::from_secs(3600),
            gc_grace: Duration::from_secs(300),
            history_interval: Duration::from_secs(600),
            archive_interval: Duration::from_secs(60),
            archive_file_bytes: 128 << 20,
            archive_row_group_bytes: 32 << 20,
            failpoint: None,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Partitions worked on.
    pub partitions: u64,
    /// Partitions skipped because another compactor held them.
    pub busy: u64,
    /// Index entries retention dropped.
    pub expired_entries: u64,
    /// Index entries merges replaced.
    pub merged_entries: u64,
    /// Index entries log compaction replaced.
    pub compacted_entries: u64,
    /// Records log compaction removed.
    pub compacted_records: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Orphaned objects deleted.
    pub orphans_deleted: u64,
    /// Archive files written.
    pub archived_files: u64,
    /// Records archived.
    pub archived_records: u64,
    /// Jobs that failed (logged; retried next pass).
    pub failures: u64,
    /// Records of each archived topic not yet archived (summed over its partitions).
    pub archive_lag: std::collections::BTreeMap<String, i64>,
    /// The topics listed with `archive.enabled=true`.
    pub archived_topics: std::collections::BTreeSet<String>,
    /// Why jobs failed (at most [`CompactorRecord::MAX_ERRORS`] kept).
    pub errors: Vec<String>,
}

impl PassReport {
    /// Counts a failed job and keeps why.
    fn failed(&mut self, why: String) {
        self.failures += 1;
        if self.errors.len() < CompactorRecord::MAX_ERRORS {
            self.errors.push(why);
        }
    }

    fn did_something(&self) -> bool {
        self.expired_entries
            + self.merged_entries
            + self.compacted_entries
            + self.objects_written
            + self.orphans_deleted
            + self.archived_files
            + self.failures
            > 0
    }

    fn add(&mut self, other: &PassReport) {
        self.partitions += other.partitions;
        self.busy += other.busy;
        self.expired_entries += other.expired_entries;
        self.merged_entries += other.merged_entries;
        self.compacted_entries += other.compacted_entries;
        self.compacted_records += other.compacted_records;
        self.objects_written += other.objects_written;
        self.orphans_deleted += other.orphans_deleted;
        self.archived_files += other.archived_files;
        self.archived_records += other.archived_records;
        self.failures += other.failures;
        for (topic, lag) in &other.archive_lag {
            *self.archive_lag.entry(topic.clone()).or_default() += lag;
        }
        self.archived_topics
            .extend(other.archived_topics.iter().cloned());
    }
}

/// State shared by the compactor's jobs.
#[derive(Debug)]
pub(crate) struct Inner {
    config: CompactorConfig,
    metastore: Arc<dyn Metastore>,
    store: SegmentStore,
    clock: Arc<dyn Clock>,
    /// Incarnation number (from the metastore's counter agents use too): object names
    /// carry it, so they never collide with an agent's or another compactor's.
    incarnation: u64,
    sequence: AtomicU64,
    /// Unreferenced objects, by name, with when this compactor first saw them so.
    unreferenced: std::sync::Mutex<HashMap<String, i64>>,
    /// The metastore revision read at the last history compaction, and when.
    history_mark: std::sync::Mutex<Option<(i64, tokio::time::Instant)>>,
    metrics: CompactorMetrics,
    /// What `/health` judges by.
    progress: std::sync::Mutex<Progress>,
    /// The topics whose archive lag is exported.
    lagging: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Totals since start, published after each pass.
    status: std::sync::Mutex<CompactorRecord>,
    /// Keeps the published totals alive.
    published: std::sync::Mutex<Option<Box<dyn Liveness>>>,
}

/// When the compactor last moved on.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// When the last pass ended.
    pass_ended: Option<tokio::time::Instant>,
    /// When a job or a pass last ended (or the compactor started).
    last_step: tokio::time::Instant,
}

/// What `/health` answers: whether the compactor's passes run, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Passes start and end on schedule.
    pub serving: bool,
    /// What the compactor is doing, or why it is not serving.
    pub detail: String,
}

/// A running compactor.
#[derive(Debug)]
pub struct Compactor {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Compactor {
    /// Starts a compactor: a pass over every partition now and every `interval`.
    pub async fn start(
        config: CompactorConfig,
        metastore: Arc<dyn Metastore>,
        store: SegmentStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let compactor = Self::new(config, metastore, store, clock).await?;
        let inner = compactor.inner.clone();
        let mut stopped = compactor.stop.subscribe();
        let task = tokio::spawn(async move {
            loop {
                // A pass that panics (a bug, or stored state no check foresaw) is logged
                // and the next pass runs: the compactor never stops silently.
                let pass = tokio::spawn({
                    let inner = inner.clone();
                    async move { inner.run_pass().await }
                });
                if let Err(e) = pass.await {
                    tracing::error!(error = %e, "compaction pass failed; the next pass runs on schedule");
                    // Its claims went with it (jobs hold one at a time, within a pass).
                    inner.metrics.claims_held.set(0);
                }
                tokio::select! {
                    _ = tokio::time::sleep(inner.config.interval) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        });
        *compactor.task.lock().expect("task lock") = Some(task);
        Ok(compactor)
    }

    /// A compactor that runs passes only when asked ([`Compactor::run_pass`]).
    pub async fn new(
        config: CompactorConfig,
        metastore: Arc<dyn Metastore>,
        store: SegmentStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let incarnation = metastore.next_agent_epoch().await?;
        let config_id = config.compactor_id.clone();
        let started_ms = clock.now_ms();
        tracing::info!(
            compactor = %config.compactor_id,
            incarnation,
            interval = ?config.interval,
            "compactor started"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                metastore,
                store,
                clock,
                incarnation,
                sequence: AtomicU64::new(0),
                unreferenced: std::sync::Mutex::new(HashMap::new()),
                history_mark: std::sync::Mutex::new(None),
                metrics: CompactorMetrics::new(),
                progress: std::sync::Mutex::new(Progress {
                    pass_ended: None,
                    last_step: tokio::time::Instant::now(),
                }),
                lagging: std::sync::Mutex::default(),
                status: std::sync::Mutex::new(CompactorRecord {
                    compactor_id: config_id,
                    started_ms,
                    ..Default::default()
                }),
                published: std::sync::Mutex::new(None),
            }),
            stop: watch::Sender::new(false),
            task: std::sync::Mutex::new(None),
        })
    }

    /// One pass over every partition, then orphan GC and history compaction.
    pub async fn run_pass(&self) -> PassReport {
        self.inner.run_pass().await
    }

    /// The objects orphan GC would delete now, without deleting them (grace period
    /// aside: it is counted from when a running compactor first sees them).
    pub async fn orphans(&self) -> Result<Vec<Orphan>> {
        self.inner.orphans().await
    }

    /// Its metrics.
    pub fn metrics(&self) -> &CompactorMetrics {
        &self.inner.metrics
    }

    /// Serving while the compactor moves on: not serving once neither a job nor a pass
    /// has ended for three intervals (at least ten minutes) — a job stuck on the metastore
    /// or the object store, or a loop that stopped. A long pass that keeps finishing jobs
    /// is serving.
    pub fn health(&self) -> Health {
        let progress = *self.inner.progress.lock().expect("progress lock");
        let allowed = (self.inner.config.interval * 3).max(Duration::from_secs(600));
        let since = progress.last_step.elapsed();
        let last_pass = match progress.pass_ended {
            Some(at) => format!("last pass ended {}s ago", at.elapsed().as_secs()),
            None => "first pass running".to_string(),
        };
        if since > allowed {
            Health {
                serving: false,
                detail: format!(
                    "no job or pass has ended for {}s (allowed {}s); {last_pass}",
                    since.as_secs(),
                    allowed.as_secs(),
                ),
            }
        } else {
            Health {
                serving: true,
                detail: last_pass,
            }
        }
    }

    /// Stops after the job in progress (its claim is released).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        // Its published totals go with it, not a lease TTL later.
        let published = self.inner.published.lock().expect("published lock").take();
        if let Some(published) = published
            && let Err(e) = published.release().await
        {
            tracing::warn!(error = %e, "cannot withdraw the compactor's totals; they expire with their lease");
        }
    }
}

impl Inner {
    async fn run_pass(&self) -> PassReport {
        let started = tokio::time::Instant::now();
        let report = self.pass().await;
        let metrics = &self.metrics;
        metrics.passes.inc();
        metrics
            .pass_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.last_pass_time.set(metrics::unix_seconds());
        // A topic's lag as of this pass; kept from an earlier pass where its jobs failed
        // (so the lag alert stays on while archiving fails); gone with the topic or its
        // archive.
        {
            let mut lagging = self.lagging.lock().expect("lagging lock");
            for (topic, lag) in &report.archive_lag {
                metrics
                    .archive_lag
                    .with_label_values(&[topic.as_str()])
                    .set(*lag);
                lagging.insert(topic.clone());
            }
            lagging.retain(|topic| {
                let archived = report.archived_topics.contains(topic);
                if !archived {
                    let _ = metrics.archive_lag.remove_label_values(&[topic.as_str()]);
                }
                archived
            });
        }
        let now = tokio::time::Instant::now();
        *self.progress.lock().expect("progress lock") = Progress {
            pass_ended: Some(now),
            last_step: now,
        };
        self.publish(&report, started.elapsed()).await;
        report
    }

    /// Adds a pass to the totals and publishes them (`strata compactors`, the console).
    /// A failure to publish is logged: it never fails the pass.
    async fn publish(&self, report: &PassReport, took: Duration) {
        let record = {
            let mut status = self.status.lock().expect("status lock");
            let now_ms = self.clock.now_ms();
            status.passes += 1;
            status.last_pass_ended_ms = now_ms;
            status.last_pass_duration_ms = took.as_millis() as u64;
            status.jobs_done += report.partitions;
            status.jobs_failed += report.failures;
            status.expired_entries += report.expired_entries;
            status.merged_entries += report.merged_entries;
            status.compacted_records += report.compacted_records;
            status.objects_written += report.objects_written;
            status.orphans_deleted += report.orphans_deleted;
            status.archived_files += report.archived_files;
            status.archived_records += report.archived_records;
            for why in &report.errors {
                status.push_error(now_ms, why);
            }
            status.clone()
        };
        match self
            .metastore
            .publish_compactor(&record, self.config.claim_ttl)
            .await
        {
            // The new lease keeps the record; the old one is let go (dropping it stops
            // its renewals).
            Ok(lease) => *self.published.lock().expect("published lock") = Some(lease),
            Err(e) => tracing::warn!(error = %e, "cannot publish the compactor's totals"),
        }
    }

    async fn pass(&self) -> PassReport {
        let mut report = PassReport::default();
        let span = tracing::info_span!("compactor.pass", compactor = %self.config.compactor_id);
        async {
            let topics = match self.metastore.list_topics().await {
                Ok(topics) => topics,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list topics; retrying next pass");
                    self.metrics.failed("retention");
                    report.failed(format!("listing topics: {e}"));
                    return;
                }
            };
            let mut partitions: Vec<(Arc<strata_metastore::TopicMeta>, u32)> = Vec::new();
            for topic in topics {
                if policy::TopicPolicy::from_config(&topic.config).archive {
                    report.archived_topics.insert(topic.name.clone());
                }
                let topic = Arc::new(topic);
                partitions.extend((0..topic.partitions).map(|p| (topic.clone(), p)));
            }
            // Several compactors start at different places, so they rarely meet.
            partitions.shuffle(&mut rand::rng());
            for (topic, partition) in partitions {
                match self.partition_job(&topic, partition).await {
                    Ok(done) => report.add(&done),
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition, error = %e, "compaction job failed; retrying next pass");
                        report.failed(format!("{}/{partition}: {e}", topic.name));
                    }
                }
            }
            match self.collect_garbage().await {
                Ok(deleted) => {
                    report.orphans_deleted += deleted;
                    self.metrics.objects_deleted.inc_by(deleted);
                    if deleted > 0 {
                        self.metrics.done("gc");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "orphan GC failed; retrying next pass");
                    self.metrics.failed("gc");
                    report.failed(format!("orphan GC: {e}"));
                }
            }
            if let Err(e) = self.compact_history().await {
                tracing::warn!(error = %e, "metastore history compaction failed");
            }
        }
        .instrument(span)
        .await;
        if report.did_something() {
            tracing::info!(?report, "compaction pass done");
        }
        report
    }

    /// Claims `job`: `None` if another compactor holds it.
    async fn claim_job(&self, job: &str) -> Result<Option<Box<dyn Liveness>>> {
        let claim = self
            .metastore
            .claim_compaction(job, &self.config.compactor_id, self.config.claim_ttl)
            .await?;
        if claim.is_some() {
            self.metrics.claims_held.inc();
            tracing::info!(job, at_ms = self.clock.now_ms(), "job started");
        }
        Ok(claim)
    }

    /// Ends `job`: releases its claim.
    async fn finish_job(&self, job: &str, claim: Box<dyn Liveness>, ok: bool) {
        self.metrics.claims_held.dec();
        self.progress.lock().expect("progress lock").last_step = tokio::time::Instant::now();
        tracing::info!(job, at_ms = self.clock.now_ms(), ok, "job finished");
        if let Err(e) = claim.release().await {
            tracing::warn!(job, error = %e, "cannot release the claim; it expires with its lease");
        }
    }

    /// The name of the next object this compactor writes.
    fn next_object_name(&self) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        strata_storage::segment::object_name(self.incarnation, sequence)
    }

    /// Test hook: stops dead at `point` if the configuration names it.
    async fn failpoint(&self, point: &str) {
        if self.config.failpoint.as_deref() == Some(point) {
            tracing::warn!(point, "failpoint reached; stopping here until killed");
            std::future::pending::<()>().await;
        }
    }

    /// Compacts the metastore's history up to the revision read one interval ago.
    async fn compact_history(&self) -> Result<()> {
        let now = tokio::time::Instant::now();
        let due = {
            let mark = self.history_mark.lock().expect("history lock");
            match *mark {
                Some((_, at)) => now.duration_since(at) >= self.config.history_interval,
                None => true,
            }
        };
        if !due {
            return Ok(());
        }
        let revision = self.metastore.history_revision().await?;
        let previous = self
            .history_mark
            .lock()
            .expect("history lock")
            .replace((revision, now));
        if let Some((old, _)) = previous {
            self.metastore.compact_history(old).await?;
            tracing::info!(revision = old, "metastore history compacted");
        }
        Ok(())
    }
}
