//! The fault tests' load and their one history checker.
//!
//! [`Load`] runs producers (acks=ALL, SDK retries on) that give every record a unique id
//! (its value) and write down what happened to each send: acknowledged at a (topic
//! incarnation, partition, offset), or failed. A [`Snapshot`] reads one incarnation of a
//! topic end to end; [`compare`] checks the history against the snapshots of every
//! incarnation the load wrote to:
//! - **lost**: acknowledged records not found at exactly their acknowledged position in
//!   the incarnation they were acknowledged for (must be 0); so is one for an incarnation
//!   no snapshot read. One past the end of the snapshot of its incarnation (acknowledged
//!   after it was read) is checked by position alone: a partition the incarnation has, no
//!   two records at one position;
//! - **in another incarnation**: records visible in an incarnation other than the one
//!   they were acknowledged for, or in two incarnations (must be 0);
//! - **duplicated**: records visible at two or more offsets (a retry of a send whose
//!   first outcome was unknown);
//! - **out of order**: offsets that are not dense and increasing from the log start;
//! - **reordered**: records stored in a partition after a record their producer sent
//!   later (a retry that landed behind batches sent after it; a duplicate counts too);
//! - **unacknowledged visible**: records visible that were never acknowledged (their
//!   send failed or was cut off; allowed, only reported).
//!
//! It also measures unavailability: per partition, the longest time between two
//! consecutive acknowledgements.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Sends whose outcome is not known yet.
    in_flight: AtomicUsize,
    /// No new send starts while set.
    paused: AtomicBool,
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
            in_flight: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
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

    /// The most common reasons sends failed, with their counts (most common first).
    pub fn failure_reasons(&self, top: usize) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for reason in self.state.lock().unwrap().failed.values() {
            // Digits vary (ids, offsets, ports): count the shape of the message.
            let shape: String = reason
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .take(160)
                .collect();
            *counts.entry(shape).or_default() += 1;
        }
        let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts.truncate(top);
        counts
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

/// What a producer of a [`Load`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// Keyed records (61 keys): `murmur2(key) % partitions`.
    Keyed,
    /// Keyless records: the SDK's sticky partitioner.
    Keyless,
    /// Records with an explicit partition, cycling through partitions 0 to 7 (those the
    /// topic does not have fail).
    Explicit,
}

impl SendKind {
    /// The key and partition of record `seq`.
    fn place(self, seq: u64) -> (Option<String>, Option<u32>) {
        match self {
            Self::Keyed => (Some(format!("key-{}", seq % 61)), None),
            Self::Keyless => (None, None),
            Self::Explicit => (None, Some((seq % 8) as u32)),
        }
    }
}

/// The key of record `value` of a [`Load`] whose producers send keyed records.
pub fn key_of(value: &str) -> Option<String> {
    let seq: u64 = value.rsplit_once('-')?.1.parse().ok()?;
    Some(format!("key-{}", seq % 61))
}

impl Load {
    /// Starts `producers` producers of keyed records on `topic`, producer `i` bootstrapped
    /// at `servers[i % servers.len()]`, each keeping up to 256 sends in flight.
    pub async fn start(servers: &[String], topic: &str, producers: usize) -> Self {
        let kinds = vec![SendKind::Keyed; producers];
        Self::start_with(servers, topic, &kinds, ProducerConfig::default()).await
    }

    /// Starts one producer per entry of `kinds`, producer `i` bootstrapped at
    /// `servers[i % servers.len()]` with `config`, each keeping up to 256 sends in flight.
    pub async fn start_with(
        servers: &[String],
        topic: &str,
        kinds: &[SendKind],
        config: ProducerConfig,
    ) -> Self {
        let history = Arc::new(History::new());
        let (stop, stopping) = watch::channel(false);
        let mut handles = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let producer = Producer::connect(&servers[i % servers.len()], config.clone())
                .await
                .expect("connect a producer");
            handles.push(tokio::spawn(produce(
                producer,
                i,
                *kind,
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

    /// Stops starting sends and waits until every send made has its outcome.
    pub async fn pause(&self) {
        self.history.paused.store(true, Ordering::SeqCst);
        while self.history.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts sending again after [`Self::pause`].
    pub fn resume(&self) {
        self.history.paused.store(false, Ordering::SeqCst);
    }

    /// Stops sending, waits for every send's outcome, and returns the history.
    pub async fn stop(self) -> Arc<History> {
        self.resume();
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
    kind: SendKind,
    topic: String,
    history: Arc<History>,
    stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut seq = 0u64;
    while !*stop.borrow() {
        let slot = slots.clone().acquire_owned().await.unwrap();
        // Counted before the pause is looked at, so that `Load::pause` cannot miss it.
        history.in_flight.fetch_add(1, Ordering::SeqCst);
        if history.paused.load(Ordering::SeqCst) {
            history.in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(slot);
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let value = format!("p{id}-{seq}");
        let (key, partition) = kind.place(seq);
        let record = ProducerRecord {
            key: key.map(Into::into),
            partition,
            ..ProducerRecord::value(value.clone())
        };
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
                    history.in_flight.fetch_sub(1, Ordering::SeqCst);
                    drop(slot);
                });
            }
            Err(e) => {
                history.record(value, Err(e.to_string()));
                history.in_flight.fetch_sub(1, Ordering::SeqCst);
                // The topic is gone for now (deleted): do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Every send answered: all slots back.
    let _ = slots.acquire_many(IN_FLIGHT as u32).await.unwrap();
}

/// One incarnation of a topic, read end to end.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The incarnation read.
    pub topic_id: String,
    /// Its partition count.
    pub partitions: u32,
    /// Per partition, the offset after the last one read (its high watermark then).
    pub ends: BTreeMap<u32, i64>,
    /// Where each record (by value) was found: (partition, offset).
    pub positions: HashMap<String, Vec<(u32, i64)>>,
    /// Records read.
    pub stored: usize,
    /// Offsets read that were not dense and increasing.
    pub out_of_order: usize,
    /// Records stored after a record their producer sent later, in the same partition.
    pub reordered: usize,
}

impl Snapshot {
    /// Reads every partition of the current incarnation of `topic` through `server`, up to
    /// the high watermarks at the start. The topic must not be deleted meanwhile.
    pub async fn read(server: &str, topic: &str) -> Self {
        let admin = strata_client::Admin::connect(server)
            .await
            .expect("connect the checker");
        let described = admin
            .describe_topic(topic)
            .await
            .expect("describe the topic");
        let info = described.topic.expect("a topic");
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
        // Per partition and producer, the last send number read.
        let mut last_sent: HashMap<(u32, String), u64> = HashMap::new();
        let mut snapshot = Self {
            topic_id: info.topic_id.clone(),
            partitions: info.partitions as u32,
            ends: ends.clone(),
            ..Self::default()
        };
        while ends
            .iter()
            .any(|(p, end)| consumer.position(topic, *p).unwrap() < *end)
        {
            for r in consumer.poll(Duration::ZERO).await.expect("read back") {
                if r.offset >= ends[&r.partition] {
                    continue;
                }
                let expected = next.get_mut(&r.partition).unwrap();
                if r.offset != *expected {
                    snapshot.out_of_order += 1;
                }
                *expected = r.offset + 1;
                snapshot.stored += 1;
                let id = String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned();
                if let Some((producer, seq)) = id.rsplit_once('-')
                    && let Ok(seq) = seq.parse::<u64>()
                {
                    let last = last_sent.entry((r.partition, producer.to_string()));
                    match last {
                        std::collections::hash_map::Entry::Occupied(mut last) => {
                            if seq <= *last.get() {
                                snapshot.reordered += 1;
                            }
                            *last.get_mut() = seq.max(*last.get());
                        }
                        std::collections::hash_map::Entry::Vacant(last) => {
                            last.insert(seq);
                        }
                    }
                }
                snapshot
                    .positions
                    .entry(id)
                    .or_default()
                    .push((r.partition, r.offset));
            }
        }
        let after = admin
            .describe_topic(topic)
            .await
            .expect("describe the topic");
        assert_eq!(
            after.topic.expect("a topic").topic_id,
            info.topic_id,
            "{topic} changed while it was read"
        );
        snapshot
    }
}

/// What [`compare`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sends made.
    pub sent: u64,
    /// Sends acknowledged.
    pub acked: usize,
    /// Sends that failed.
    pub failed: usize,
    /// Incarnations read.
    pub incarnations: usize,
    /// Records read back.
    pub stored: usize,
    /// Acknowledged records not at their acknowledged position in their incarnation (or
    /// acknowledged at a position that cannot hold them).
    pub lost: usize,
    /// Records visible in an incarnation they were not acknowledged for, or in two.
    pub in_other_incarnation: usize,
    /// Acknowledgements past the end of their incarnation's snapshot (checked by
    /// position only).
    pub acked_after_read: usize,
    /// Records visible at more than one offset.
    pub duplicated: usize,
    /// Offsets not dense and increasing.
    pub out_of_order: usize,
    /// Records stored after a record their producer sent later, in one partition.
    pub reordered: usize,
    /// Records visible that were never acknowledged.
    pub unacknowledged_visible: usize,
    /// Longest time a partition went without an acknowledgement, seconds.
    pub longest_ack_gap_secs: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} acknowledged={} failed={} incarnations={} stored={} lost={} \
             in_other_incarnation={} acknowledged_after_read={} duplicated={} \
             out_of_order={} reordered={} unacknowledged_visible={} longest_ack_gap_s={:.1}",
            self.sent,
            self.acked,
            self.failed,
            self.incarnations,
            self.stored,
            self.lost,
            self.in_other_incarnation,
            self.acked_after_read,
            self.duplicated,
            self.out_of_order,
            self.reordered,
            self.unacknowledged_visible,
            self.longest_ack_gap_secs
        )
    }
}

/// Reads every partition of `topic` end to end through `server` and compares it with
/// `history` (one incarnation).
pub async fn check(history: &History, server: &str, topic: &str) -> Report {
    compare(history, &[Snapshot::read(server, topic).await])
}

/// Compares `history` with `snapshots`, one per incarnation the load wrote to.
pub fn compare(history: &History, snapshots: &[Snapshot]) -> Report {
    let by_id: HashMap<&str, &Snapshot> =
        snapshots.iter().map(|s| (s.topic_id.as_str(), s)).collect();
    let mut report = Report {
        incarnations: snapshots.len(),
        stored: snapshots.iter().map(|s| s.stored).sum(),
        out_of_order: snapshots.iter().map(|s| s.out_of_order).sum(),
        reordered: snapshots.iter().map(|s| s.reordered).sum(),
        duplicated: snapshots
            .iter()
            .map(|s| s.positions.values().filter(|p| p.len() > 1).count())
            .sum(),
        ..Report::default()
    };
    let state = history.state.lock().unwrap();
    report.sent = state.sent;
    report.acked = state.acked.len();
    report.failed = state.failed.len();
    let mut taken: HashMap<(&str, u32, i64), &str> = HashMap::new();
    for (id, position) in &state.acked {
        let at = (
            position.topic_id.as_str(),
            position.partition,
            position.offset,
        );
        let found = match by_id.get(position.topic_id.as_str()) {
            Some(snapshot) if position.partition >= snapshot.partitions => false,
            Some(snapshot) if position.offset < snapshot.ends[&position.partition] => snapshot
                .positions
                .get(id)
                .is_some_and(|found| found.contains(&(position.partition, position.offset))),
            // Acknowledged after the read (or never read): its position must be its own.
            _ => {
                report.acked_after_read += 1;
                by_id.contains_key(position.topic_id.as_str()) && taken.insert(at, id).is_none()
            }
        };
        if !found {
            report.lost += 1;
            eprintln!(
                "LOST: {id} acknowledged at {position:?}, found at {:?}",
                snapshots
                    .iter()
                    .filter_map(|s| Some((&s.topic_id, s.positions.get(id)?)))
                    .collect::<Vec<_>>()
            );
        }
        for other in snapshots.iter().filter(|s| s.topic_id != position.topic_id) {
            if other.positions.contains_key(id) {
                report.in_other_incarnation += 1;
                eprintln!(
                    "OTHER INCARNATION: {id} acknowledged for {position:?}, visible in {}",
                    other.topic_id
                );
            }
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for snapshot in snapshots {
        for id in snapshot.positions.keys() {
            *seen.entry(id).or_default() += 1;
        }
    }
    for (id, count) in seen {
        if !state.acked.contains_key(id) {
            report.unacknowledged_visible += 1;
            if count > 1 {
                report.in_other_incarnation += 1;
                eprintln!("OTHER INCARNATION: {id} (not acknowledged) visible in {count}");
            }
        }
    }
    drop(state);
    report.longest_ack_gap_secs = history.longest_ack_gap_secs();
    report
}
