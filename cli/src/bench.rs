//! `strata bench`: throughput, latency, and the requests they cost, against any agent.
//!
//! Latencies go into HdrHistograms (microsecond precision) and are reported as p50, p90,
//! p99, p99.9 and max in milliseconds. Costs come from the agent's own counters (the
//! `AgentStats` RPC) read before and after the run, so they count exactly the PUTs, GETs
//! and metastore transactions the run caused (if nothing else used the agent meanwhile).
//! With `--json` the last line is one JSON object for scripts (`scripts/bench.sh`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, RngCore};
use serde::Serialize;
use strata_client::proto::AgentStatsResponse;
use strata_client::proto::log_client::LogClient;
use strata_client::{Acks, Admin, Delivery, Producer, ProducerConfig, ProducerRecord, proto};
use strata_storage::{ObjectStoreConfig, SegmentStore};
use tokio::sync::{Semaphore, mpsc};

use crate::args::{
    AcksArg, BenchCommand, BenchConsumeArgs, BenchE2eArgs, BenchLength, BenchObjectStoreArgs,
    BenchOutput, BenchProduceArgs, KeyDistribution,
};
use crate::target::Target;

const DEFAULT_SECONDS: f64 = 10.0;

pub async fn run(server: &Target, command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Produce(args) => {
            let output = args.output.clone();
            let report = produce(server, args).await?;
            print(&output, &report)
        }
        BenchCommand::Consume(args) => {
            let output = args.output.clone();
            let report = consume(server, args).await?;
            print(&output, &report)
        }
        BenchCommand::E2e(args) => {
            let output = args.produce.output.clone();
            let report = e2e(server, args).await?;
            print(&output, &report)
        }
        BenchCommand::ObjectStore(args) => {
            let output = args.output.clone();
            let report = object_store(args).await?;
            print(&output, &report)
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, Default, Clone, Copy)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// What one benchmark measured.
#[derive(Debug, Serialize, Default)]
struct Report {
    benchmark: String,
    records: u64,
    bytes: u64,
    seconds: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    /// Produce: send to ack. Consume: fetch round trip. E2e: send to receipt.
    latency_ms: Latency,
    /// E2e only: send to ack of the same records.
    #[serde(skip_serializing_if = "Option::is_none")]
    produce_latency_ms: Option<Latency>,
    /// Transactional produce only: commit_transaction's latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_latency_ms: Option<Latency>,
    /// Transactional produce only: transactions committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    transactions: Option<u64>,
    failed: u64,
    puts: u64,
    gets: u64,
    commits: u64,
    metastore_bytes: u64,
    put_bytes: u64,
    get_bytes: u64,
    cache_hits: u64,
    puts_per_sec: f64,
    gets_per_sec: f64,
    commits_per_sec: f64,
    puts_per_gb: f64,
    gets_per_gb: f64,
    commits_per_gb: f64,
    metastore_bytes_per_gb: f64,
    /// Produce and e2e: seconds from creating the topic until every partition was taken,
    /// before the measured run.
    #[serde(skip_serializing_if = "Option::is_none")]
    startup_seconds: Option<f64>,
    /// Object-store baseline only.
    #[serde(skip_serializing_if = "Option::is_none")]
    get_mb_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    get_latency_ms: Option<Latency>,
}

const MB: f64 = 1_000_000.0;
const GB: f64 = 1_000_000_000.0;

impl Report {
    fn new(benchmark: &str, records: u64, bytes: u64, seconds: f64) -> Self {
        Self {
            benchmark: benchmark.to_string(),
            records,
            bytes,
            seconds,
            records_per_sec: records as f64 / seconds,
            mb_per_sec: bytes as f64 / MB / seconds,
            ..Default::default()
        }
    }

    /// Fills the costs from the agent's counters before and after the run.
    fn with_costs(mut self, before: &AgentStatsResponse, after: &AgentStatsResponse) -> Self {
        self.puts = after.segment_puts - before.segment_puts;
        self.gets = after.object_gets - before.object_gets;
        self.commits = after.metastore_commits - before.metastore_commits;
        self.metastore_bytes = after.metastore_bytes - before.metastore_bytes;
        self.put_bytes = after.segment_bytes - before.segment_bytes;
        self.get_bytes = after.object_get_bytes - before.object_get_bytes;
        self.cache_hits = after.cache_hits - before.cache_hits;
        self.fill_rates();
        self
    }

    fn fill_rates(&mut self) {
        let gb = (self.bytes as f64 / GB).max(f64::MIN_POSITIVE);
        self.puts_per_sec = self.puts as f64 / self.seconds;
        self.gets_per_sec = self.gets as f64 / self.seconds;
        self.commits_per_sec = self.commits as f64 / self.seconds;
        self.puts_per_gb = self.puts as f64 / gb;
        self.gets_per_gb = self.gets as f64 / gb;
        self.commits_per_gb = self.commits as f64 / gb;
        self.metastore_bytes_per_gb = self.metastore_bytes as f64 / gb;
    }
}

fn print(output: &BenchOutput, r: &Report) -> Result<()> {
    let l = &r.latency_ms;
    println!(
        "{}: {:.0} records/s, {:.2} MB/s ({} records, {} bytes, {:.1} s, {} failed)",
        r.benchmark, r.records_per_sec, r.mb_per_sec, r.records, r.bytes, r.seconds, r.failed
    );
    println!(
        "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    if let Some(p) = &r.produce_latency_ms {
        println!(
            "  produce latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            p.p50, p.p90, p.p99, p.p999, p.max
        );
    }
    if let (Some(c), Some(n)) = (&r.commit_latency_ms, r.transactions) {
        println!(
            "  {n} transactions, commit latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            c.p50, c.p90, c.p99, c.max
        );
    }
    if let (Some(mbs), Some(g)) = (r.get_mb_per_sec, &r.get_latency_ms) {
        println!(
            "  GET: {mbs:.2} MB/s, latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            g.p50, g.p90, g.p99, g.max
        );
    }
    println!(
        "  object store: {} PUTs ({:.1}/s, {:.0}/GB), {} GETs ({:.1}/s, {:.0}/GB), {} cache hits",
        r.puts, r.puts_per_sec, r.puts_per_gb, r.gets, r.gets_per_sec, r.gets_per_gb, r.cache_hits
    );
    println!(
        "  metastore: {} transactions ({:.1}/s, {:.0}/GB), {} bytes ({:.0}/GB)",
        r.commits, r.commits_per_sec, r.commits_per_gb, r.metastore_bytes, r.metastore_bytes_per_gb
    );
    if output.json {
        println!("{}", serde_json::to_string(r)?);
    }
    Ok(())
}

fn progress(output: &BenchOutput, length: &BenchLength) -> ProgressBar {
    if output.quiet || output.json {
        return ProgressBar::hidden();
    }
    let bar = match length.records {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} records ({per_sec})")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The run's budget: a number of records or a deadline, shared by every task.
#[derive(Debug)]
struct Budget {
    remaining: Option<AtomicU64>,
    deadline: Instant,
    stopped: AtomicBool,
}

impl Budget {
    fn new(length: &BenchLength) -> Arc<Self> {
        let seconds = length.duration.unwrap_or(if length.records.is_some() {
            3600.0
        } else {
            DEFAULT_SECONDS
        });
        Arc::new(Self {
            remaining: length.records.map(AtomicU64::new),
            deadline: Instant::now() + Duration::from_secs_f64(seconds),
            stopped: AtomicBool::new(false),
        })
    }

    /// Takes one record from the budget; false once it is spent or the time is up.
    fn take(&self) -> bool {
        if self.stopped.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return false;
        }
        match &self.remaining {
            None => true,
            Some(n) => n
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// Creates the topic unless it exists, then waits (up to a minute) until an agent has taken
/// every one of its partitions, so that a run measures the topic being served and not its
/// start (a record sent to a partition nobody took yet waits for the take-over). Returns
/// how long that took: the run's start-up.
async fn ensure_topic(admin: &Admin, topic: &str, partitions: i32) -> Result<Duration> {
    let start = Instant::now();
    match admin.create_topic(topic, partitions, HashMap::new()).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(strata_client::Code::AlreadyExists) => {}
        Err(e) => return Err(e).with_context(|| format!("creating topic {topic}")),
    }
    let deadline = start + Duration::from_secs(60);
    loop {
        let described = admin
            .describe_topic(topic)
            .await
            .with_context(|| format!("describing topic {topic}"))?;
        let untaken = described
            .partitions
            .iter()
            .filter(|p| p.owner_epoch == 0)
            .count();
        if untaken == 0 {
            return Ok(start.elapsed());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{untaken} partitions of {topic} are still not taken after a minute");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the producer tasks measured.
struct Produced {
    records: u64,
    bytes: u64,
    failed: u64,
    latency: Histogram<u64>,
    /// Transactional producers: commit latency.
    commits: Histogram<u64>,
}

/// Runs `args.producers` producers until the budget is spent; each waits for its last
/// acknowledgements. With `stamp_values` each value starts with its send time (µs since
/// the epoch) for e2e latency; otherwise all values share one buffer (no copy per record).
async fn run_producers(
    server: &Target,
    args: &BenchProduceArgs,
    stamp_values: bool,
    budget: Arc<Budget>,
    bar: ProgressBar,
) -> Result<Produced> {
    let mut tasks = Vec::new();
    let acked = Arc::new(AtomicU64::new(0));
    let per_task_rate = args.rate as f64 / args.producers as f64;
    let commit_interval = Duration::from_millis(args.commit_interval_ms.max(1));
    for task in 0..args.producers {
        let transactional_id = args
            .transactional_id
            .as_ref()
            .map(|prefix| format!("{prefix}-{task}"));
        let transactional = transactional_id.is_some();
        let producer = Producer::open(
            server.connect().await?,
            ProducerConfig {
                acks: match args.acks {
                    AcksArg::All => Acks::All,
                    AcksArg::None => Acks::None,
                },
                enable_idempotence: !args.no_idempotence,
                transactional_id,
                ..Default::default()
            },
        )
        .await;
        if transactional {
            producer.init_transactions().await?;
            producer.begin_transaction().await?;
        }
        let (topic, size, keys) = (args.topic.clone(), args.record_size.max(8), args.keys);
        let in_flight_bytes = args.in_flight_bytes.max(size);
        let (budget, acked, bar) = (budget.clone(), acked.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            // A separate task awaits deliveries, so their latency is taken when they land.
            let (tx, mut rx) = mpsc::unbounded_channel::<(Delivery, Instant, usize)>();
            // One permit per byte in flight.
            let permits = Arc::new(Semaphore::new(in_flight_bytes));
            let collector = {
                let (acked, bar, permits) = (acked.clone(), bar.clone(), permits.clone());
                tokio::spawn(async move {
                    let mut pending = FuturesUnordered::new();
                    let mut latency = new_histogram();
                    let (mut records, mut bytes, mut failed) = (0u64, 0u64, 0u64);
                    let mut open = true;
                    loop {
                        tokio::select! {
                            next = rx.recv(), if open => match next {
                                Some((delivery, sent, size)) => pending.push(async move {
                                    (delivery.await, sent.elapsed(), size)
                                }),
                                None => open = false,
                            },
                            Some((result, took, size)) = pending.next() => {
                                permits.add_permits(size);
                                match result {
                                    Ok(_) => {
                                        records += 1;
                                        bytes += size as u64;
                                        let _ = latency.record(took.as_micros().max(1) as u64);
                                        let total = acked.fetch_add(1, Ordering::Relaxed) + 1;
                                        if total % 1024 == 0 {
                                            bar.set_position(total);
                                        }
                                    }
                                    Err(_) => failed += 1,
                                }
                            },
                            else => break,
                        }
                    }
                    Produced {
                        records,
                        bytes,
                        failed,
                        latency,
                        commits: new_histogram(),
                    }
                })
            };
            let mut base = vec![0u8; size];
            rand::rng().fill_bytes(&mut base);
            let base = Bytes::from(base);
            let start = Instant::now();
            let mut sent = 0u64;
            let mut send_failures = 0u64;
            let mut commits = new_histogram();
            let mut began = Instant::now();
            while budget.take() {
                if transactional && began.elapsed() >= commit_interval {
                    let at = Instant::now();
                    if producer.commit_transaction().await.is_ok() {
                        let _ = commits.record(at.elapsed().as_micros().max(1) as u64);
                    } else {
                        let _ = producer.abort_transaction().await;
                    }
                    let _ = producer.begin_transaction().await;
                    began = Instant::now();
                }
                if per_task_rate > 0.0 {
                    let due = start + Duration::from_secs_f64(sent as f64 / per_task_rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                permits
                    .acquire_many(size as u32)
                    .await
                    .expect("never closed")
                    .forget();
                let value = if stamp_values {
                    let mut value = base.to_vec();
                    value[..8].copy_from_slice(&now_micros().to_be_bytes());
                    Bytes::from(value)
                } else {
                    base.clone()
                };
                let key = match keys {
                    KeyDistribution::None => None,
                    KeyDistribution::Random => Some(Bytes::from(format!(
                        "key-{}",
                        rand::rng().random_range(0..10_000)
                    ))),
                };
                let record = ProducerRecord {
                    key,
                    value: Some(value),
                    ..Default::default()
                };
                let at = Instant::now();
                match producer.send(&topic, record).await {
                    Ok(delivery) => {
                        let _ = tx.send((delivery, at, size));
                    }
                    Err(_) => {
                        send_failures += 1;
                        permits.add_permits(size);
                    }
                }
                sent += 1;
            }
            if transactional {
                let at = Instant::now();
                if producer.commit_transaction().await.is_ok() {
                    let _ = commits.record(at.elapsed().as_micros().max(1) as u64);
                }
            }
            drop(tx);
            let mut produced = collector.await.expect("collector task");
            produced.failed += send_failures;
            produced.commits = commits;
            produced
        }));
    }
    let mut total = Produced {
        records: 0,
        bytes: 0,
        failed: 0,
        latency: new_histogram(),
        commits: new_histogram(),
    };
    for task in tasks {
        let p = task.await?;
        total.records += p.records;
        total.bytes += p.bytes;
        total.failed += p.failed;
        total.latency.add(&p.latency).expect("same bounds");
        total.commits.add(&p.commits).expect("same bounds");
    }
    bar.finish_and_clear();
    Ok(total)
}

async fn produce(server: &Target, args: BenchProduceArgs) -> Result<Report> {
    let admin = server.admin().await?;
    let startup = ensure_topic(&admin, &args.topic, args.partitions).await?;
    let before = admin.agent_stats().await?;
    let budget = Budget::new(&args.length);
    let bar = progress(&args.output, &args.length);
    let start = Instant::now();
    let produced = run_producers(server, &args, false, budget, bar).await?;
    let seconds = start.elapsed().as_secs_f64();
    let after = admin.agent_stats().await?;
    let mut report = Report::new("produce", produced.records, produced.bytes, seconds)
        .with_costs(&before, &after);
    report.startup_seconds = Some(startup.as_secs_f64());
    report.failed = produced.failed;
    report.latency_ms = latency(&produced.latency);
    if args.transactional_id.is_some() {
        report.commit_latency_ms = Some(latency(&produced.commits));
        report.transactions = Some(produced.commits.len());
    }
    Ok(report)
}

/// What the consumer tasks measured.
#[derive(Default)]
struct Consumed {
    records: u64,
    bytes: u64,
    fetch_latency: Option<Histogram<u64>>,
    e2e_latency: Option<Histogram<u64>>,
}

/// Reads every partition of `topic` with one long-polling fetch loop per partition, from
/// the log start (catch-up: up to the high watermark seen at the start) or from the tail
/// (until `stop`).
async fn run_consumers(
    server: &Target,
    topic: &str,
    tail: bool,
    max_bytes: i32,
    budget: Arc<Budget>,
    bar: ProgressBar,
) -> Result<Consumed> {
    let channel = server.connect().await?;
    let described = Admin::new(channel.clone()).describe_topic(topic).await?;
    let read = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in described.partitions {
        let mut log = LogClient::new(channel.transport()).max_decoding_message_size(64 << 20);
        let (topic, budget, bar, read) =
            (topic.to_string(), budget.clone(), bar.clone(), read.clone());
        let (mut offset, end) = if tail {
            (p.high_watermark, i64::MAX)
        } else {
            (p.log_start_offset, p.high_watermark)
        };
        tasks.push(tokio::spawn(async move {
            let mut c = Consumed {
                fetch_latency: Some(new_histogram()),
                e2e_latency: Some(new_histogram()),
                ..Default::default()
            };
            while offset < end && !budget.stopped.load(Ordering::Relaxed) {
                if Instant::now() >= budget.deadline {
                    break;
                }
                let request = proto::FetchRequest {
                    isolation_level: 0,
                    topic_id: String::new(),
                    topic: topic.clone(),
                    partition: p.partition,
                    offset,
                    max_bytes,
                    max_wait_ms: if tail { 200 } else { 0 },
                    zone: String::new(),
                };
                let started = Instant::now();
                let response = log.fetch(request).await?.into_inner();
                let received = now_micros();
                if !response.records.is_empty() {
                    let h = c.fetch_latency.as_mut().expect("set");
                    let _ = h.record(started.elapsed().as_micros().max(1) as u64);
                }
                for r in &response.records {
                    if r.offset >= end {
                        break;
                    }
                    let value = r.value.as_deref().unwrap_or_default();
                    c.records += 1;
                    c.bytes += value.len() as u64;
                    if tail && value.len() >= 8 {
                        let sent = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
                        let h = c.e2e_latency.as_mut().expect("set");
                        let _ = h.record(received.saturating_sub(sent).max(1));
                    }
                    if !budget.take() {
                        budget.stopped.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                let total = read.fetch_add(response.records.len() as u64, Ordering::Relaxed);
                bar.set_position(total);
                offset = response.next_offset;
            }
            anyhow::Ok(c)
        }));
    }
    let mut total = Consumed {
        fetch_latency: Some(new_histogram()),
        e2e_latency: Some(new_histogram()),
        ..Default::default()
    };
    for task in tasks {
        let c = task.await??;
        total.records += c.records;
        total.bytes += c.bytes;
        for (sum, part) in [
            (&mut total.fetch_latency, c.fetch_latency),
            (&mut total.e2e_latency, c.e2e_latency),
        ] {
            if let (Some(sum), Some(part)) = (sum.as_mut(), part) {
                sum.add(&part).expect("same bounds");
            }
        }
    }
    bar.finish_and_clear();
    Ok(total)
}

async fn consume(server: &Target, args: BenchConsumeArgs) -> Result<Report> {
    let admin = server.admin().await?;
    let before = admin.agent_stats().await?;
    let budget = Budget::new(&args.length);
    let bar = progress(&args.output, &args.length);
    let start = Instant::now();
    let consumed =
        run_consumers(server, &args.topic, args.tail, args.max_bytes, budget, bar).await?;
    let seconds = start.elapsed().as_secs_f64();
    let after = admin.agent_stats().await?;
    let name = if args.tail {
        "consume-tail"
    } else {
        "consume-catch-up"
    };
    let mut report =
        Report::new(name, consumed.records, consumed.bytes, seconds).with_costs(&before, &after);
    let h = if args.tail {
        consumed.e2e_latency
    } else {
        consumed.fetch_latency
    };
    report.latency_ms = latency(&h.expect("set"));
    Ok(report)
}

async fn e2e(server: &Target, args: BenchE2eArgs) -> Result<Report> {
    let produce_args = args.produce;
    let admin = server.admin().await?;
    let startup = ensure_topic(&admin, &produce_args.topic, produce_args.partitions).await?;
    let before = admin.agent_stats().await?;
    // The consumers run until told to stop (after the producers), at most an hour.
    let consumer_budget = Arc::new(Budget {
        remaining: None,
        deadline: Instant::now() + Duration::from_secs(3600),
        stopped: AtomicBool::new(false),
    });
    let consumers = {
        let (server, topic, budget) = (
            server.clone(),
            produce_args.topic.clone(),
            consumer_budget.clone(),
        );
        tokio::spawn(async move {
            run_consumers(
                &server,
                &topic,
                true,
                4 << 20,
                budget,
                ProgressBar::hidden(),
            )
            .await
        })
    };
    // Let every consumer reach the tail before producing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let producer_budget = Budget::new(&produce_args.length);
    let bar = progress(&produce_args.output, &produce_args.length);
    let start = Instant::now();
    let produced = run_producers(server, &produce_args, true, producer_budget, bar).await?;
    let seconds = start.elapsed().as_secs_f64();
    // Wait until the consumers saw what was acknowledged, then stop them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = admin.agent_stats().await?;
        if stats.fetch_bytes - before.fetch_bytes >= produced.bytes || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer_budget.stopped.store(true, Ordering::Relaxed);
    let consumed = consumers.await??;
    let after = admin.agent_stats().await?;
    let mut report =
        Report::new("e2e", consumed.records, consumed.bytes, seconds).with_costs(&before, &after);
    report.startup_seconds = Some(startup.as_secs_f64());
    report.failed = produced.failed;
    report.latency_ms = latency(&consumed.e2e_latency.expect("set"));
    report.produce_latency_ms = Some(latency(&produced.latency));
    Ok(report)
}

async fn object_store(args: BenchObjectStoreArgs) -> Result<Report> {
    let store = SegmentStore::open(&ObjectStoreConfig {
        url: args.object_store.clone(),
        endpoint: args.s3_endpoint.clone(),
        access_key_id: args.s3_access_key.clone(),
        secret_access_key: args.s3_secret_key.clone(),
        allow_http: args.s3_allow_http,
        create_bucket: args.create_bucket,
        ..Default::default()
    })
    .await?;
    let run = format!("bench/{}", now_micros());
    let mut payload = vec![0u8; args.object_size];
    rand::rng().fill_bytes(&mut payload);
    let payload = Bytes::from(payload);
    let duration = Duration::from_secs_f64(args.duration);

    // PUT phase: `concurrency` writers, create-only PUTs as the agent does.
    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..args.put_concurrency {
        let (store, payload, run) = (store.clone(), payload.clone(), run.clone());
        writers.push(tokio::spawn(async move {
            let mut h = new_histogram();
            let mut names = Vec::new();
            while start.elapsed() < duration {
                let name = format!("{run}/{w}-{}.obj", names.len());
                let t = Instant::now();
                store.put_create_only(&name, payload.clone()).await?;
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                names.push(name);
            }
            anyhow::Ok((h, names))
        }));
    }
    let mut put_latency = new_histogram();
    let mut objects = Vec::new();
    for w in writers {
        let (h, names) = w.await??;
        put_latency.add(&h).expect("same bounds");
        objects.extend(names);
    }
    let put_seconds = start.elapsed().as_secs_f64();
    let puts = objects.len() as u64;
    let put_bytes = puts * args.object_size as u64;

    // GET phase: ranged GETs of `get_size` bytes at random places of the PUT objects.
    let objects = Arc::new(objects);
    let get_size = args.get_size.min(args.object_size) as u64;
    let start = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..args.get_concurrency {
        let (store, objects) = (store.clone(), objects.clone());
        let object_size = args.object_size as u64;
        readers.push(tokio::spawn(async move {
            let mut h = new_histogram();
            let mut gets = 0u64;
            while start.elapsed() < duration {
                let (i, at) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..objects.len()),
                        rng.random_range(0..=object_size - get_size),
                    )
                };
                let t = Instant::now();
                store.get_range(&objects[i], at..at + get_size).await?;
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                gets += 1;
            }
            anyhow::Ok((h, gets))
        }));
    }
    let mut get_latency = new_histogram();
    let mut gets = 0;
    for r in readers {
        let (h, n) = r.await??;
        get_latency.add(&h).expect("same bounds");
        gets += n;
    }
    let get_seconds = start.elapsed().as_secs_f64();
    let get_bytes = gets * get_size;

    let mut report = Report::new("object-store", 0, put_bytes, put_seconds);
    report.puts = puts;
    report.gets = gets;
    report.put_bytes = put_bytes;
    report.get_bytes = get_bytes;
    report.fill_rates();
    report.gets_per_sec = gets as f64 / get_seconds;
    report.latency_ms = latency(&put_latency);
    report.get_mb_per_sec = Some(get_bytes as f64 / MB / get_seconds);
    report.get_latency_ms = Some(latency(&get_latency));
    Ok(report)
}
