//! The fault tests' load and their one history checker.
//!
//! [`Load`] runs producers (acks=ALL, SDK retries on) that give every record a unique id
//! (its value) and write down what happened to each send: acknowledged at a (partition,
//! offset), or failed. [`check`] then reads every partition end to end and compares:
//! - **lost**: acknowledged records not found at exactly their acknowledged position
//!   (must be 0);
//! - **duplicated**: records visible at two or more offsets (a retry of a send whose
//!   first outcome was unknown);
//! - **out of order**: offsets that are not dense and increasing from the log start;
//! - **unacknowledged visible**: records visible that were never acknowledged (their
//!   send failed or was cut off; allowed, only reported).
//!
//! It also measures unavailability: per partition, the longest time between two
//! consecutive acknowledgements.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_client::{
    Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, RecordPosition, StartOffset,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Sends in flight per producer.
const IN_FLIGHT: usize = 256;

/// What happened to every send of a [`Load`].
#[derive(Debug)]
pub struct History {
    started: Instant,
    state: Mutex<HistoryState>,
}

#[derive(Debug, Default)]
struct HistoryState {
    sent: u64,
    acked: HashMap<String, RecordPosition>,
    failed: HashMap<String, String>,
    /// (time since start, partition) of every acknowledgement.
    ack_times: Vec<(Duration, u32)>,
}

impl History {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::default(),
        }
    }

    /// Records acknowledged so far.
    pub fn acked(&self) -> usize {
        self.state.lock().unwrap().acked.len()
    }

    /// Sends that failed so far.
    pub fn failed(&self) -> usize {
        self.state.lock().unwrap().failed.len()
    }

    /// Acknowledgements per partition received after `since` (a time from [`Self::now`]).
    pub fn acked_per_partition_since(&self, since: Duration) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for (at, p) in &self.state.lock().unwrap().ack_times {
            if *at >= since {
                *counts.entry(*p).or_default() += 1;
            }
        }
        counts
    }

    /// Every acknowledged record: its id (the value) and position.
    pub fn acked_records(&self) -> HashMap<String, RecordPosition> {
        self.state.lock().unwrap().acked.clone()
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The longest time any partition went without an acknowledgement, seconds.
    pub fn longest_ack_gap_secs(&self) -> f64 {
        let state = self.state.lock().unwrap();
        let mut by_partition: BTreeMap<u32, Vec<Duration>> = BTreeMap::new();
        for (at, p) in &state.ack_times {
            by_partition.entry(*p).or_default().push(*at);
        }
        by_partition
            .values_mut()
            .map(|times| {
                times.sort();
                times
                    .windows(2)
                    .map(|w| (w[1] - w[0]).as_secs_f64())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    }

    /// Records a send made outside the [`Load`] (a raw gRPC request in a test).
    pub fn record(&self, id: String, outcome: Result<RecordPosition, String>) {
        let mut state = self.state.lock().unwrap();
        state.sent += 1;
        match outcome {
            Ok(position) => {
                let at = self.started.elapsed();
                state.ack_times.push((at, position.partition));
                state.acked.insert(id, position);
            }
            Err(error) => {
                state.failed.insert(id, error);
            }
        }
    }
}

/// Producers running against a cluster until stopped.
#[derive(Debug)]
pub struct Load {
    history: Arc<History>,
    stop: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `producers` producers on `topic`, producer `i` bootstrapped at
    /// `servers[i % servers.len()]`, each keeping up to 256 sends in flight.
    pub async fn start(servers: &[String], topic: &str, producers: usize) -> Self {
        let history = Arc::new(History::new());
        let (stop, stopping) = watch::channel(false);
        let mut handles = Vec::new();
        for i in 0..producers {
            let producer =
                Producer::connect(&servers[i % servers.len()], ProducerConfig::default())
                    .await
                    .expect("connect a producer");
            handles.push(tokio::spawn(produce(
                producer,
                i,
                topic.to_string(),
                history.clone(),
                stopping.clone(),
            )));
        }
        Self {
            history,
            stop,
            producers: handles,
        }
    }

    /// The history so far.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Stops sending, waits for every send's outcome, and returns the history.
    pub async fn stop(self) -> Arc<History> {
        let _ = self.stop.send(true);
        for producer in self.producers {
            producer.await.expect("producer task");
        }
        self.history
    }
}

async fn produce(
    producer: Producer,
    id: usize,
    topic: String,
    history: Arc<History>,
    stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut seq = 0u64;
    while !*stop.borrow() {
        let slot = slots.clone().acquire_owned().await.unwrap();
        let value = format!("p{id}-{seq}");
        let record = ProducerRecord::keyed(format!("key-{}", seq % 61), value.clone());
        seq += 1;
        if seq.is_multiple_of(20) {
            // About 4,000 records a second at most: load, not a benchmark.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match producer.send(&topic, record).await {
            Ok(delivery) => {
                let history = history.clone();
                tokio::spawn(async move {
                    let outcome = delivery.await.map_err(|e| e.to_string());
                    history.record(value, outcome);
                    drop(slot);
                });
            }
            Err(e) => history.record(value, Err(e.to_string())),
        }
    }
    // Every send answered: all slots back.
    let _ = slots.acquire_many(IN_FLIGHT as u32).await.unwrap();
}

/// What [`check`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sends made.
    pub sent: u64,
    /// Sends acknowledged.
    pub acked: usize,
    /// Sends that failed.
    pub failed: usize,
    /// Records read back.
    pub stored: usize,
    /// Acknowledged records not at their acknowledged position.
    pub lost: usize,
    /// Records visible at more than one offset.
    pub duplicated: usize,
    /// Offsets not dense and increasing.
    pub out_of_order: usize,
    /// Records visible that were never acknowledged.
    pub unacknowledged_visible: usize,
    /// Longest time a partition went without an acknowledgement, seconds.
    pub longest_ack_gap_secs: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} acknowledged={} failed={} stored={} lost={} duplicated={} \
             out_of_order={} unacknowledged_visible={} longest_ack_gap_s={:.1}",
            self.sent,
            self.acked,
            self.failed,
            self.stored,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.unacknowledged_visible,
            self.longest_ack_gap_secs
        )
    }
}

/// Reads every partition of `topic` end to end through `server` and compares it with
/// `history`.
pub async fn check(history: &History, server: &str, topic: &str) -> Report {
    let mut consumer = Consumer::connect(server, ConsumerConfig::default())
        .await
        .expect("connect the checker");
    consumer
        .assign(topic, &[], StartOffset::Earliest)
        .await
        .expect("assign every partition");
    let ends: BTreeMap<u32, i64> = consumer
        .high_watermarks()
        .into_iter()
        .map(|(_, p, hwm)| (p, hwm))
        .collect();
    let mut next: BTreeMap<u32, i64> = ends
        .keys()
        .map(|p| (*p, consumer.position(topic, *p).unwrap()))
        .collect();
    let mut positions: HashMap<String, Vec<RecordPosition>> = HashMap::new();
    let mut report = Report::default();
    while ends
        .iter()
        .any(|(p, end)| consumer.position(topic, *p).unwrap() < *end)
    {
        for r in consumer.poll(Duration::ZERO).await.expect("read back") {
            let expected = next.get_mut(&r.partition).unwrap();
            if r.offset != *expected {
                report.out_of_order += 1;
            }
            *expected = r.offset + 1;
            report.stored += 1;
            let id = String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned();
            positions.entry(id).or_default().push(RecordPosition {
                partition: r.partition,
                offset: r.offset,
            });
        }
    }
    let state = history.state.lock().unwrap();
    report.sent = state.sent;
    report.acked = state.acked.len();
    report.failed = state.failed.len();
    for (id, position) in &state.acked {
        if !positions
            .get(id)
            .is_some_and(|found| found.contains(position))
        {
            report.lost += 1;
            eprintln!(
                "LOST: {id} acknowledged at {position:?}, found at {:?}",
                positions.get(id)
            );
        }
    }
    report.duplicated = positions.values().filter(|p| p.len() > 1).count();
    report.unacknowledged_visible = positions
        .keys()
        .filter(|id| !state.acked.contains_key(*id))
        .count();
    drop(state);
    report.longest_ack_gap_secs = history.longest_ack_gap_secs();
    report
}
