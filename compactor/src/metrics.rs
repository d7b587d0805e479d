//! The compactor's metrics, served in Prometheus text format by `strata compactor` on its
//! HTTP port (`/metrics`, beside `/health`). Each is counted in exactly one place: jobs
//! where a step ends, bytes where an object is read or written, claims where they are
//! taken and released.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

/// The kinds of job a pass runs, as the `kind` label names them.
pub const JOB_KINDS: &[&str] = &["retention", "merge", "compaction", "archive", "gc"];

/// Every metric of one compactor.
#[derive(Debug)]
pub struct CompactorMetrics {
    registry: Registry,
    /// Jobs that changed something (`done`) or failed (`failed`), by kind.
    pub jobs: IntCounterVec,
    /// Passes over every partition completed.
    pub passes: IntCounter,
    /// Duration of a pass.
    pub pass_duration: Histogram,
    /// Bytes of objects read (blocks of merges, compactions and archive files).
    pub bytes_read: IntCounter,
    /// Bytes of objects written (merged and compacted objects, archive files).
    pub bytes_written: IntCounter,
    /// Objects written.
    pub objects_written: IntCounter,
    /// Orphaned objects deleted.
    pub objects_deleted: IntCounter,
    /// Records of each archived topic not yet in its archive, as of the last pass that
    /// archived it (kept while its jobs fail; removed with the topic or its archive).
    pub archive_lag: IntGaugeVec,
    /// Partition claims held now.
    pub claims_held: IntGauge,
    /// When a job last failed (Unix seconds; 0: never).
    pub last_error_time: IntGauge,
    /// When the last pass ended (Unix seconds; 0: none yet).
    pub last_pass_time: IntGauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Default for CompactorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CompactorMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        let counter = |name: &str, help: &str| {
            register(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        let gauge =
            |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        let jobs = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "strata_compactor_jobs_total",
                    "Compaction jobs that changed something (done) or failed, by kind",
                ),
                &["kind", "outcome"],
            )
            .expect("valid metric"),
        );
        for kind in JOB_KINDS {
            for outcome in ["done", "failed"] {
                jobs.with_label_values(&[kind, outcome]);
            }
        }
        let pass_duration = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "strata_compactor_pass_duration_seconds",
                    "Duration of a pass over every partition",
                )
                .buckets(exponential_buckets(0.01, 2.0, 16).expect("buckets")),
            )
            .expect("valid metric"),
        );
        let archive_lag = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "strata_compactor_archive_lag_records",
                    "Records of each archived topic not yet in its Parquet archive",
                ),
                &["topic"],
            )
            .expect("valid metric"),
        );
        Self {
            jobs,
            passes: counter("strata_compactor_passes_total", "Passes completed"),
            pass_duration,
            bytes_read: counter(
                "strata_compactor_read_bytes_total",
                "Bytes of objects the compactor read",
            ),
            bytes_written: counter(
                "strata_compactor_written_bytes_total",
                "Bytes of objects the compactor wrote",
            ),
            objects_written: counter(
                "strata_compactor_objects_written_total",
                "Objects the compactor wrote",
            ),
            objects_deleted: counter(
                "strata_compactor_objects_deleted_total",
                "Orphaned objects the compactor deleted",
            ),
            archive_lag,
            claims_held: gauge(
                "strata_compactor_claims_held",
                "Partition claims the compactor holds now",
            ),
            last_error_time: gauge(
                "strata_compactor_last_error_timestamp_seconds",
                "When a compaction job last failed (Unix seconds; 0 = never)",
            ),
            last_pass_time: gauge(
                "strata_compactor_last_pass_timestamp_seconds",
                "When the last pass ended (Unix seconds; 0 = none yet)",
            ),
            registry: r,
        }
    }

    /// Counts a job of `kind` that changed something.
    pub(crate) fn done(&self, kind: &str) {
        self.jobs.with_label_values(&[kind, "done"]).inc();
    }

    /// Counts a job of `kind` that failed, and when.
    pub(crate) fn failed(&self, kind: &str) {
        self.jobs.with_label_values(&[kind, "failed"]).inc();
        self.last_error_time.set(unix_seconds());
    }

    /// Every metric in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("utf-8 metrics")
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
