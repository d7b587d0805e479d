//! The agent's metrics, served in Prometheus text format on its HTTP port (`/metrics`),
//! and read by the `AgentStats` RPC. Each metric is counted in exactly one place of the
//! write or read path.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

/// Every metric of one agent.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Produce requests answered.
    pub produce_requests: IntCounter,
    /// Records accepted by produce requests.
    pub produce_records: IntCounter,
    /// Retries of idempotent producers' batches answered with the offsets the batch got
    /// before (nothing written twice).
    pub produce_duplicates: IntCounter,
    /// Bytes (key + value + headers) accepted by produce requests.
    pub produce_bytes: IntCounter,
    /// Produce request latency, receipt to answer (acks=ALL: to commit).
    pub produce_latency: Histogram,
    /// Fetch requests answered.
    pub fetch_requests: IntCounter,
    /// Records returned by fetches.
    pub fetch_records: IntCounter,
    /// Bytes (key + value + headers) returned by fetches.
    pub fetch_bytes: IntCounter,
    /// Record bytes fetched, by listener (`grpc`, `kafka`) and by where the client is
    /// against this agent's zone (`same_zone`, `other_zone`, `no_zone`: the client did
    /// not say): what zone-aware reads save shows here.
    pub fetch_zone_bytes: IntCounterVec,
    /// Fetch latency, receipt to answer, long-poll waits included.
    pub fetch_latency: Histogram,
    /// Flushes whose commit succeeded for at least one partition.
    pub flushes: IntCounter,
    /// Size of flushed segments.
    pub flush_bytes: Histogram,
    /// Partitions per flushed segment.
    pub flush_partitions: Histogram,
    /// Time between the starts of consecutive flushes.
    pub flush_interval: Histogram,
    /// Segment PUTs that succeeded.
    pub segment_puts: IntCounter,
    /// Bytes of segments PUT.
    pub segment_bytes: IntCounter,
    /// Segment PUT latency (retries included).
    pub put_latency: Histogram,
    /// Ranged GETs of the read path (cache misses).
    pub object_gets: IntCounter,
    /// Bytes read by ranged GETs.
    pub object_get_bytes: IntCounter,
    /// Ranged GET latency.
    pub get_latency: Histogram,
    /// Block cache lookups by where they were answered: memory, disk, miss.
    pub cache_lookups: IntCounterVec,
    /// Metastore transactions that committed flushes.
    pub metastore_commits: IntCounter,
    /// Bytes of keys and values written by those transactions.
    pub metastore_bytes: IntCounter,
    /// Latency of one flush's metastore commit (all its transactions).
    pub metastore_commit_latency: Histogram,
    /// Partition blocks in committed flushes.
    pub partition_blocks: IntCounter,
    /// Records in committed flushes.
    pub records_committed: IntCounter,
    /// Bytes waiting to be flushed (open + flushing segments).
    pub pending_bytes: IntGauge,
    /// High watermark of each partition this agent owns.
    pub high_watermark: IntGaugeVec,
    /// Produce requests forwarded to the partition's owner.
    pub produce_forwarded: IntCounter,
    /// Requests refused for a missing or wrong bearer token.
    pub auth_refused: IntCounter,
    /// Requests the ACLs refused, by operation and resource type.
    pub acl_denied: IntCounterVec,
    /// Partitions this agent took (epoch bumps).
    pub partitions_taken: IntCounter,
    /// Metastore transactions that took partitions (one per partition a request takes;
    /// one per up to ~127 when the agent takes what it was assigned).
    pub take_transactions: IntCounter,
    /// Partitions this agent gave up (reassigned, fenced, or its lease lost).
    pub partitions_given_up: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The registry `/metrics` serves: other parts of the agent (the Kafka listener)
    /// register theirs here too.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates and registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        let seconds = exponential_buckets(0.000_5, 2.0, 16).expect("buckets");
        let bytes = exponential_buckets(1024.0, 2.0, 16).expect("buckets");
        let counts = exponential_buckets(1.0, 2.0, 12).expect("buckets");
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "strata_cache_lookups_total",
                "Block cache lookups by tier that answered (memory, disk) or miss",
            ),
            &["result"],
        )
        .expect("valid metric");
        r.register(Box::new(cache_lookups.clone()))
            .expect("unique metric");
        let high_watermark = IntGaugeVec::new(
            Opts::new(
                "strata_partition_high_watermark",
                "High watermark of each partition this agent owns",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        r.register(Box::new(high_watermark.clone()))
            .expect("unique metric");
        let pending_bytes =
            IntGauge::new("strata_pending_bytes", "Bytes waiting to be flushed").expect("valid");
        r.register(Box::new(pending_bytes.clone()))
            .expect("unique metric");
        Self {
            produce_requests: counter(&r, "strata_produce_requests_total", "Produce requests"),
            produce_forwarded: counter(
                &r,
                "strata_produce_forwarded_total",
                "Produce requests forwarded to the partition's owner",
            ),
            auth_refused: counter(
                &r,
                "strata_auth_refused_total",
                "Requests refused with UNAUTHENTICATED (missing or wrong bearer token)",
            ),
            acl_denied: {
                let c = IntCounterVec::new(
                    prometheus::Opts::new(
                        "strata_acl_denied_total",
                        "Requests the ACLs refused, by operation and resource type",
                    ),
                    &["operation", "resource_type"],
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            partitions_taken: counter(
                &r,
                "strata_partitions_taken_total",
                "Partitions taken over (epoch bumps)",
            ),
            take_transactions: counter(
                &r,
                "strata_partition_take_transactions_total",
                "Metastore transactions that took partitions (many partitions each when the agent takes what it was assigned)",
            ),
            partitions_given_up: counter(
                &r,
                "strata_partitions_given_up_total",
                "Partitions given up (reassigned, fenced, or lease lost)",
            ),
            produce_records: counter(&r, "strata_produce_records_total", "Records produced"),
            produce_duplicates: counter(
                &r,
                "strata_produce_duplicate_batches_total",
                "Retried idempotent batches answered with their original offsets",
            ),
            produce_bytes: counter(
                &r,
                "strata_produce_bytes_total",
                "Bytes in (key+value+headers)",
            ),
            produce_latency: histogram(
                &r,
                "strata_produce_latency_seconds",
                "Produce latency",
                seconds.clone(),
            ),
            fetch_requests: counter(&r, "strata_fetch_requests_total", "Fetch requests"),
            fetch_records: counter(&r, "strata_fetch_records_total", "Records fetched"),
            fetch_bytes: counter(
                &r,
                "strata_fetch_bytes_total",
                "Bytes out (key+value+headers)",
            ),
            fetch_zone_bytes: {
                let c = IntCounterVec::new(
                    prometheus::Opts::new(
                        "strata_fetch_zone_bytes_total",
                        "Record bytes fetched, by listener and by the client's zone against \
                         this agent's (same_zone, other_zone, no_zone)",
                    ),
                    &["api", "client_zone"],
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            fetch_latency: histogram(
                &r,
                "strata_fetch_latency_seconds",
                "Fetch latency, long-poll included",
                seconds.clone(),
            ),
            flushes: counter(&r, "strata_flushes_total", "Committed flushes"),
            flush_bytes: histogram(
                &r,
                "strata_flush_bytes",
                "Segment size per flush",
                bytes.clone(),
            ),
            flush_partitions: histogram(
                &r,
                "strata_flush_partitions",
                "Partitions per flush",
                counts,
            ),
            flush_interval: histogram(
                &r,
                "strata_flush_interval_seconds",
                "Time between flush starts",
                seconds.clone(),
            ),
            segment_puts: counter(&r, "strata_object_store_puts_total", "Segment PUTs"),
            segment_bytes: counter(
                &r,
                "strata_object_store_put_bytes_total",
                "Bytes of segments PUT",
            ),
            put_latency: histogram(
                &r,
                "strata_object_store_put_latency_seconds",
                "Segment PUT latency",
                seconds.clone(),
            ),
            object_gets: counter(
                &r,
                "strata_object_store_gets_total",
                "Ranged GETs (cache misses)",
            ),
            object_get_bytes: counter(
                &r,
                "strata_object_store_get_bytes_total",
                "Bytes read by GETs",
            ),
            get_latency: histogram(
                &r,
                "strata_object_store_get_latency_seconds",
                "Ranged GET latency",
                seconds.clone(),
            ),
            cache_lookups,
            metastore_commits: counter(
                &r,
                "strata_metastore_transactions_total",
                "Metastore transactions committing flushes",
            ),
            metastore_bytes: counter(
                &r,
                "strata_metastore_bytes_total",
                "Bytes written by those transactions",
            ),
            metastore_commit_latency: histogram(
                &r,
                "strata_metastore_commit_latency_seconds",
                "Metastore commit latency per flush",
                seconds,
            ),
            partition_blocks: counter(
                &r,
                "strata_partition_blocks_total",
                "Partition blocks in committed flushes",
            ),
            records_committed: counter(
                &r,
                "strata_records_committed_total",
                "Records in committed flushes",
            ),
            pending_bytes,
            high_watermark,
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}
