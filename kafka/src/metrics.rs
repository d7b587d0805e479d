//! The Kafka listener's metrics, registered in the agent's registry (served at
//! `/metrics` with the others): requests, errors by code and latency per API, and
//! connections.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    exponential_buckets,
};

/// Every metric of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    /// Requests answered, by API.
    pub requests: IntCounterVec,
    /// Errors returned, by API and Kafka error name (per partition or topic where the
    /// response has one per partition or topic).
    pub errors: IntCounterVec,
    /// Latency per API, receipt to answer.
    pub latency: HistogramVec,
    /// Connections open now.
    pub connections: IntGauge,
    /// Connections accepted.
    pub connections_accepted: IntCounter,
    /// Connections closed for a frame that could not be read, or refused before
    /// authenticating.
    pub connections_refused: IntCounterVec,
}

impl KafkaMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "strata_kafka_requests_total",
                "Kafka requests answered, by API",
            ),
            &["api"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "strata_kafka_errors_total",
                "Kafka error codes returned, by API and error",
            ),
            &["api", "error"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "strata_kafka_request_seconds",
                "Kafka request latency, receipt to answer, by API",
            )
            .buckets(exponential_buckets(0.000_5, 2.0, 16).expect("buckets")),
            &["api"],
        )
        .expect("valid metric");
        let connections =
            IntGauge::new("strata_kafka_connections", "Kafka connections open").expect("valid");
        let connections_accepted = IntCounter::new(
            "strata_kafka_connections_accepted_total",
            "Kafka connections accepted",
        )
        .expect("valid");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "strata_kafka_connections_closed_total",
                "Kafka connections closed by the agent, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(latency.clone()),
            Box::new(connections.clone()),
            Box::new(connections_accepted.clone()),
            Box::new(connections_refused.clone()),
        ] {
            registry.register(metric).expect("unique metric");
        }
        Self {
            requests,
            errors,
            latency,
            connections,
            connections_accepted,
            connections_refused,
        }
    }

    /// The latency histogram of one API.
    pub fn latency(&self, api: &str) -> Histogram {
        self.latency.with_label_values(&[api])
    }
}
