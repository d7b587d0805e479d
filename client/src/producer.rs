//! The producer: per-partition lanes that batch records and keep their order.
//!
//! Each partition a producer writes to has one lane: a task that takes the records queued
//! for it, sends them as one request (at most `batch_max_bytes`) on the producer's
//! `ProduceSession` stream, and resolves every record's [`Delivery`] with the answer. The
//! agent appends a session's requests in the order they were sent, so a lane keeps up to
//! `max_in_flight_per_partition` requests in flight without reordering its records;
//! partitions proceed in parallel.
//!
//! Routing and retries: each batch goes to the agent that owns its partition (see
//! [`crate::router`]). A batch that fails with an error that may pass — the owner moved
//! (FAILED_PRECONDITION), an agent died or is stopping (UNAVAILABLE), or is overloaded —
//! is sent again, with the batches sent behind it, in order, after a refresh of the
//! metadata, with exponential backoff, until `delivery_timeout` has passed since it was
//! first sent (Kafka's `delivery.timeout.ms`).
//!
//! Idempotence (on by default, as in Kafka's clients since 3.0): the producer takes a
//! producer id from the cluster and numbers each partition's records; every batch carries
//! the id, epoch and its first sequence number, and keeps them when sent again. The
//! partition's owner writes a batch once, answers a retry with the offsets the batch got,
//! and refuses a batch that does not follow the last one — so retries neither duplicate
//! nor reorder records, even when an attempt's outcome was unknown (an agent died or lost
//! etcd mid-commit). At most [`MAX_IN_FLIGHT_IDEMPOTENT`] batches per partition are in
//! flight, as the owner remembers that many. Without idempotence (or with acks none) the
//! guarantee is at least once: a batch whose first attempt's outcome was unknown may be
//! written twice.
//!
//! Partitioning, as Kafka's default partitioner: an explicit partition wins; a keyed
//! record goes to `murmur2(key) % partitions`; keyless records stick to one partition
//! until `sticky_batch_records` of them were sent there, then move to the next.
//!
//! Topic incarnations: a record is partitioned against the topic as described at one
//! moment — its id and partition count — and its batch names that id, so that the agent
//! refuses it (ABORTED with the `strata-topic-changed` trailer) if the topic was deleted
//! and created again since, instead of writing it into the new incarnation at a partition
//! chosen for the old one. Such a batch is not retried: its records fail with that
//! retriable error, the producer forgets the topic's description, and a record sent again
//! is partitioned against the current incarnation. Every acknowledgement names the
//! incarnation it was written to ([`RecordPosition::topic_id`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::{Connection, Transport};
use bytes::Bytes;
use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::log_client::LogClient;
use strata_record::{BatchKind, Compression, ProducerFields, Record};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::router::{Router, is_retriable};
use crate::transaction::Transaction;
use crate::{Error, Result};

/// When the agent answers a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Once the records are accepted (offsets assigned, not yet durable).
    None,
    /// Once the records are in the object store and committed (default).
    #[default]
    All,
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Acknowledgement level.
    pub acks: Acks,
    /// Largest request, bytes of keys, values and headers.
    pub batch_max_bytes: usize,
    /// Records queued per partition before `send` waits (backpressure).
    pub queue_records: usize,
    /// Keyless records sent to one partition before moving to the next.
    pub sticky_batch_records: usize,
    /// How long a lane waits for more records before sending a small batch.
    pub linger: Duration,
    /// Batches of one partition in flight at once (Kafka's
    /// `max.in.flight.requests.per.connection`); at most 5 with idempotence. The produce
    /// session keeps them in order, and a failed one is sent again with those behind it.
    pub max_in_flight_per_partition: usize,
    /// Whether the producer is idempotent (Kafka's `enable.idempotence`, on by default):
    /// each batch is written once however often it is sent. Needs acks all; ignored with
    /// acks none.
    pub enable_idempotence: bool,
    /// Makes the producer transactional (Kafka's `transactional.id`; implies idempotence):
    /// [`Producer::init_transactions`] first, then its records are sent only inside
    /// [`Producer::begin_transaction`] … [`Producer::commit_transaction`] (or abort).
    pub transactional_id: Option<String>,
    /// How long a transaction may stay open before the coordinator aborts it (Kafka's
    /// `transaction.timeout.ms`).
    pub transaction_timeout: Duration,
    /// How long a batch is retried (on retriable errors) before its records fail.
    pub delivery_timeout: Duration,
    /// Longest wait between two attempts of a batch (the first wait is 50 ms, doubling).
    pub retry_backoff_max: Duration,
    /// How long a topic's partition count is used before it is read again (Kafka's
    /// `metadata.max.age.ms`): a topic that grew gets keyed records at
    /// `murmur2(key) % new count` this long after at the latest.
    pub metadata_max_age: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            batch_max_bytes: 1 << 20,
            queue_records: 100_000,
            sticky_batch_records: 1_000,
            linger: Duration::from_millis(2),
            max_in_flight_per_partition: 5,
            enable_idempotence: true,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(60),
            retry_backoff_max: Duration::from_secs(1),
            metadata_max_age: Duration::from_secs(300),
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Key; `None` = no key.
    pub key: Option<Bytes>,
    /// Value; `None` = tombstone.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Bytes)>,
    /// Explicit partition.
    pub partition: Option<u32>,
    /// Milliseconds since the Unix epoch; 0 = this machine's time when the record joins a
    /// batch (Kafka's CreateTime).
    pub timestamp_ms: i64,
}

impl ProducerRecord {
    /// A record with just a value.
    pub fn value(value: impl Into<Bytes>) -> Self {
        Self {
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn size(&self) -> usize {
        strata_record::payload_size(self.key.as_ref(), self.value.as_ref(), &self.headers)
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordPosition {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: i64,
    /// The incarnation of the topic it was written to (its topic id).
    pub topic_id: String,
}

/// Most batches of one partition in flight for an idempotent producer: the owner
/// answers a retry from the last 5 batches of each producer it remembers (Kafka's bound).
pub const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// The first wait before a batch is sent again; it doubles up to `retry_backoff_max`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// An idempotent producer's id and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
}

/// Where an idempotent producer's identity comes from: one producer id, shared by its
/// lanes, taken from any agent on first use and replaced when a lane's numbering broke.
#[derive(Debug, Default)]
struct Identities {
    current: tokio::sync::Mutex<Option<Identity>>,
}

impl Identities {
    /// Sets the identity (a transactional producer's, from InitTransactions).
    async fn set(&self, identity: Identity) {
        *self.current.lock().await = Some(identity);
    }

    /// The producer's identity: the current one unless it is `stale`, else a new one
    /// (asked of each agent known in turn, with backoff, until `deadline`).
    async fn get(
        &self,
        stale: Option<Identity>,
        router: &Router,
        deadline: Instant,
    ) -> Result<Identity> {
        let mut current = self.current.lock().await;
        if let Some(identity) = *current
            && Some(identity) != stale
        {
            return Ok(identity);
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut last_error = Error::Closed;
            for channel in router.candidates() {
                match LogClient::new(channel)
                    .init_producer_id(pb::InitProducerIdRequest {})
                    .await
                {
                    Ok(response) => {
                        let response = response.into_inner();
                        let identity = Identity {
                            producer_id: response.producer_id,
                            epoch: i16::try_from(response.producer_epoch).unwrap_or(0),
                        };
                        *current = Some(identity);
                        return Ok(identity);
                    }
                    Err(status) => last_error = Error::Status(status),
                }
            }
            if !is_retriable(&last_error) || Instant::now() + backoff >= deadline {
                return Err(last_error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            let _ = router.refresh().await;
        }
    }
}

/// Resolves once the record is acknowledged, with where it was written.
#[derive(Debug)]
pub struct Delivery {
    receiver: oneshot::Receiver<Result<RecordPosition>>,
}

impl Future for Delivery {
    type Output = Result<RecordPosition>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

struct Queued {
    record: ProducerRecord,
    /// The incarnation the record was partitioned against.
    topic_id: String,
    done: Completion,
}

/// Resolves one record's [`Delivery`]; in a transaction, also counts it out of the
/// transaction's sends in flight (and notes a failure, which fails the commit).
struct Completion {
    sender: Option<oneshot::Sender<Result<RecordPosition>>>,
    transaction: Option<Arc<Pending>>,
}

impl Completion {
    fn send(mut self, result: Result<RecordPosition>) {
        if let (Some(pending), Err(error)) = (&self.transaction, &result) {
            pending
                .failed
                .lock()
                .expect("pending lock")
                .get_or_insert_with(|| error.clone());
        }
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(result);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(pending) = &self.transaction {
            if self.sender.is_some() {
                // Dropped unanswered (the producer closed): the record was not sent.
                pending
                    .failed
                    .lock()
                    .expect("pending lock")
                    .get_or_insert(Error::Closed);
            }
            let mut count = pending.count.lock().expect("pending lock");
            *count -= 1;
            if *count == 0 {
                pending.settled.notify_waiters();
            }
        }
    }
}

/// The sends of the open transaction not resolved yet, and the first that failed.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    count: Mutex<usize>,
    settled: tokio::sync::Notify,
    pub(crate) failed: Mutex<Option<Error>>,
}

impl Pending {
    pub(crate) fn add(self: &Arc<Self>) -> Arc<Self> {
        *self.count.lock().expect("pending lock") += 1;
        self.clone()
    }

    /// Waits until every send counted was resolved.
    pub(crate) async fn settle(&self) {
        loop {
            let settled = self.settled.notified();
            if *self.count.lock().expect("pending lock") == 0 {
                return;
            }
            settled.await;
        }
    }
}

/// The queue of each (topic, partition) lane.
type Lanes = HashMap<(String, u32), mpsc::Sender<Queued>>;

/// A topic as last described: the incarnation records are partitioned against.
#[derive(Debug, Clone)]
struct TopicRoute {
    topic_id: String,
    partitions: u32,
    read_at: Instant,
}

#[derive(Debug, Default)]
struct Partitioning {
    /// Each topic used, as last described.
    topics: HashMap<String, TopicRoute>,
    sticky: HashMap<String, (u32, usize)>,
}

impl Partitioning {
    /// Forgets `topic`'s description if it is still of incarnation `topic_id`.
    fn forget(&mut self, topic: &str, topic_id: &str) {
        if self
            .topics
            .get(topic)
            .is_some_and(|route| route.topic_id == topic_id)
        {
            self.topics.remove(topic);
        }
    }
}

/// Sends records to the agents that own their partitions. Cheap to clone; clones share
/// lanes.
#[derive(Debug, Clone)]
pub struct Producer {
    router: Arc<Router>,
    admin: AdminClient<Transport>,
    config: Arc<ProducerConfig>,
    lanes: Arc<Mutex<Lanes>>,
    partitioning: Arc<Mutex<Partitioning>>,
    /// Set when the producer is idempotent.
    identities: Option<Arc<Identities>>,
    /// Set when the producer is transactional.
    transaction: Option<Arc<Transaction>>,
}

impl Producer {
    /// A producer over an open connection to any agent of the cluster; it learns the
    /// others from that agent's metadata and reaches them the same way.
    pub fn new(connection: Connection, config: ProducerConfig) -> Self {
        let transactional = config.transactional_id.is_some();
        let idempotent = transactional || (config.enable_idempotence && config.acks == Acks::All);
        Self {
            identities: idempotent.then(Arc::default),
            transaction: config
                .transactional_id
                .clone()
                .map(|id| Arc::new(Transaction::new(id))),
            admin: AdminClient::new(connection.transport()),
            router: Arc::new(Router::new(connection)),
            config: Arc::new(config),
            lanes: Arc::default(),
            partitioning: Arc::default(),
        }
    }

    pub(crate) fn transaction_state(&self) -> Option<&Arc<Transaction>> {
        self.transaction.as_ref()
    }

    pub(crate) fn config(&self) -> &ProducerConfig {
        &self.config
    }

    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Sets the identity every lane numbers its batches under from now on.
    pub(crate) async fn set_identity(&self, identity: Identity) {
        if let Some(identities) = &self.identities {
            identities.set(identity).await;
        }
    }

    /// Connects to `server` (plaintext, no token) and returns a producer with `config`.
    pub async fn connect(server: &str, config: ProducerConfig) -> Result<Self> {
        Ok(Self::open(crate::connect(server).await?, config).await)
    }

    /// A producer over `connection` that has read the cluster's metadata, so that its
    /// first records go straight to their partitions' owners.
    pub async fn open(connection: Connection, config: ProducerConfig) -> Self {
        let producer = Self::new(connection, config);
        // Routing starts from the bootstrap agent if the metadata cannot be read now.
        let _ = producer.router.refresh().await;
        producer
    }

    /// `topic` as described less than `metadata_max_age` ago, or described now.
    async fn route(&self, topic: &str) -> Result<TopicRoute> {
        if let Some(route) = self
            .partitioning
            .lock()
            .expect("partitioning lock")
            .topics
            .get(topic)
            .filter(|route| route.read_at.elapsed() < self.config.metadata_max_age)
        {
            return Ok(route.clone());
        }
        let described = self
            .admin
            .clone()
            .describe_topic(pb::DescribeTopicRequest {
                name: topic.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .topic
            .unwrap_or_default();
        // Its owners are read with the next refresh (now, if the topic is new).
        let _ = self.router.follow(topic).await;
        let route = TopicRoute {
            topic_id: described.topic_id,
            partitions: described.partitions.max(1) as u32,
            read_at: Instant::now(),
        };
        self.partitioning
            .lock()
            .expect("partitioning lock")
            .topics
            .insert(topic.to_string(), route.clone());
        Ok(route)
    }

    /// The record's partition, and the incarnation it was chosen against.
    async fn choose_partition(
        &self,
        topic: &str,
        record: &ProducerRecord,
    ) -> Result<(u32, String)> {
        let route = self.route(topic).await?;
        let count = route.partitions;
        if let Some(p) = record.partition {
            return Ok((p, route.topic_id));
        }
        if let Some(key) = &record.key {
            return Ok((strata_proto::partition_for_key(key, count), route.topic_id));
        }
        let mut partitioning = self.partitioning.lock().expect("partitioning lock");
        let sticky_batch = self.config.sticky_batch_records;
        let entry = partitioning
            .sticky
            .entry(topic.to_string())
            .or_insert((rand_partition(count), 0));
        if entry.1 >= sticky_batch || entry.0 >= count {
            *entry = ((entry.0 + 1) % count, 0);
        }
        entry.1 += 1;
        Ok((entry.0, route.topic_id))
    }

    /// Queues a record; waits only if its partition's queue is full. The returned
    /// [`Delivery`] resolves once the record is acknowledged.
    pub async fn send(&self, topic: &str, record: ProducerRecord) -> Result<Delivery> {
        let (partition, topic_id) = self.choose_partition(topic, &record).await?;
        let lane = self.lane(topic, partition);
        let (sender, receiver) = oneshot::channel();
        let transaction = match &self.transaction {
            Some(transaction) => Some(
                transaction
                    .enlist(self, topic, partition, &topic_id)
                    .await?,
            ),
            None => None,
        };
        let done = Completion {
            sender: Some(sender),
            transaction,
        };
        lane.send(Queued {
            record,
            topic_id,
            done,
        })
        .await
        .map_err(|_| Error::Closed)?;
        Ok(Delivery { receiver })
    }

    /// Sends a record and waits for its acknowledgement.
    pub async fn send_and_wait(
        &self,
        topic: &str,
        record: ProducerRecord,
    ) -> Result<RecordPosition> {
        self.send(topic, record).await?.await
    }

    fn lane(&self, topic: &str, partition: u32) -> mpsc::Sender<Queued> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        lanes
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.config.queue_records);
                let lane = Lane {
                    router: self.router.clone(),
                    config: self.config.clone(),
                    partitioning: self.partitioning.clone(),
                    identities: self.identities.clone(),
                    transactional_id: self.config.transactional_id.clone(),
                    topic: topic.to_string(),
                    partition,
                    numbering: None,
                    flights: VecDeque::new(),
                    backoff: FIRST_BACKOFF,
                };
                tokio::spawn(run_lane(lane, rx));
                tx
            })
            .clone()
    }
}

fn rand_partition(count: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos % count
}

/// A batch sent and not yet resolved.
struct Flight {
    /// Its records encoded in `record_batch`, with the producer fields.
    request: pb::ProduceRequest,
    /// Its records, to encode it again under a new producer id.
    records: Vec<Record>,
    waiters: Vec<Completion>,
    answer: oneshot::Receiver<Result<pb::ProduceResponse>>,
    /// When its records fail if it is still not acknowledged.
    deadline: Instant,
}

/// The numbering of an idempotent lane's batches: identity, topic incarnation, and the
/// sequence of the next record.
#[derive(Debug, Clone)]
struct Numbering {
    identity: Identity,
    topic_id: String,
    next: i32,
    /// A batch of this numbering was acknowledged: the partition knows the producer, so
    /// it checks the sequence of every batch (until then it takes any: one batch is in
    /// flight at a time).
    acked: bool,
}

/// One partition's lane.
struct Lane {
    router: Arc<Router>,
    config: Arc<ProducerConfig>,
    partitioning: Arc<Mutex<Partitioning>>,
    /// Set when the producer is idempotent.
    identities: Option<Arc<Identities>>,
    /// Set when the producer is transactional: its batches name it, and a refusal of
    /// one (fenced, out of order) fails it instead of taking a new producer id.
    transactional_id: Option<String>,
    topic: String,
    partition: u32,
    numbering: Option<Numbering>,
    /// In sending order.
    flights: VecDeque<Flight>,
    backoff: Duration,
}

enum Event {
    Answer(Result<pb::ProduceResponse>),
    Record(Option<Queued>),
}

/// One partition's lane: batch, send on the session, resolve in order, until every
/// producer clone is gone. Up to `max_in_flight_per_partition` batches are in flight; the
/// session keeps them in order.
///
/// Answers are taken in sending order. When the oldest batch fails with an error that may
/// pass, the lane collects the answers of the batches behind it (those that succeeded are
/// resolved), waits, refreshes the metadata and sends every unresolved batch again, in
/// order. An idempotent producer's batches keep their sequence numbers when sent again,
/// so the owner writes each once; a batch refused as out of order or fenced when nothing
/// older is unresolved (an older batch failed for good, so the sequence has a hole) was
/// certainly not written: the lane takes a new producer id and numbers the unresolved
/// batches again from 0.
async fn run_lane(mut lane: Lane, mut queue: mpsc::Receiver<Queued>) {
    let mut carry: Option<Queued> = None;
    let mut open = true;
    loop {
        let room = lane.flights.len() < lane.max_in_flight();
        if room && let Some(first) = carry.take() {
            lane.send_batch(first, &mut queue, &mut carry).await;
            continue;
        }
        let event = match lane.flights.front_mut() {
            None if !open => return,
            None => Event::Record(queue.recv().await),
            Some(front) => tokio::select! {
                answer = &mut front.answer => Event::Answer(answer.unwrap_or_else(|_| {
                    Err(Error::Status(tonic::Status::unavailable("produce session closed")))
                })),
                next = queue.recv(), if open && room => Event::Record(next),
            },
        };
        match event {
            Event::Record(Some(first)) => lane.send_batch(first, &mut queue, &mut carry).await,
            Event::Record(None) => open = false,
            Event::Answer(answer) => lane.on_answer(answer).await,
        }
    }
}

impl Lane {
    fn max_in_flight(&self) -> usize {
        let max = self.config.max_in_flight_per_partition.max(1);
        if self.identities.is_none() {
            return max;
        }
        if !self.numbering.as_ref().is_some_and(|n| n.acked) {
            // A partition that does not know the producer takes any sequence: a second
            // batch could land before a refused first one.
            return 1;
        }
        // The owner answers a retry from the last 5 batches it remembers.
        max.min(MAX_IN_FLIGHT_IDEMPOTENT)
    }

    /// Takes the records queued behind `first` (up to the batch size, within the linger
    /// time, of one incarnation) and sends them as one batch.
    async fn send_batch(
        &mut self,
        first: Queued,
        queue: &mut mpsc::Receiver<Queued>,
        carry: &mut Option<Queued>,
    ) {
        let mut bytes = first.record.size();
        let topic_id = first.topic_id.clone();
        let mut batch = vec![first];
        let deadline = Instant::now() + self.config.linger;
        loop {
            let next = match queue.try_recv() {
                Ok(q) => Some(q),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // A timeout ends the batch, like a closed queue.
                    tokio::time::timeout_at(deadline, queue.recv())
                        .await
                        .unwrap_or_default()
                }
            };
            let Some(q) = next else { break };
            let size = q.record.size();
            // A batch names one incarnation.
            if bytes + size > self.config.batch_max_bytes || q.topic_id != topic_id {
                *carry = Some(q);
                break;
            }
            bytes += size;
            batch.push(q);
        }
        let now_ms = unix_time_ms();
        let (records, waiters): (Vec<Record>, Vec<_>) = batch
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let r = q.record;
                (
                    Record {
                        offset: i as i64,
                        timestamp_ms: if r.timestamp_ms == 0 {
                            now_ms
                        } else {
                            r.timestamp_ms
                        },
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    },
                    q.done,
                )
            })
            .unzip();
        let acks = match self.config.acks {
            Acks::All => pb::Acks::All,
            Acks::None => pb::Acks::None,
        };
        let mut request = pb::ProduceRequest {
            topic: self.topic.clone(),
            topic_id,
            partition: Some(self.partition as i32),
            records: Vec::new(),
            acks: acks as i32,
            producer: None,
            record_batch: Bytes::new(),
        };
        let deadline = Instant::now() + self.config.delivery_timeout;
        if let Some(identities) = self.identities.clone() {
            // While batches are in flight, the lane keeps their producer id (another
            // lane may have taken a new one): its numbering must not mix two.
            let kept = self
                .numbering
                .as_ref()
                .filter(|_| !self.flights.is_empty())
                .map(|n| n.identity);
            let identity = match kept {
                Some(identity) => Ok(identity),
                None => identities.get(None, &self.router, deadline).await,
            };
            match identity {
                Ok(identity) => self.number(&mut request, &records, identity),
                Err(error) => {
                    for done in waiters {
                        done.send(Err(error.clone()));
                    }
                    return;
                }
            }
        }
        if let Err(error) = encode_batch(&mut request, &records) {
            for done in waiters {
                done.send(Err(error.clone()));
            }
            return;
        }
        // Sent now, so that the session keeps the lane's order.
        let answer = self.send(&request);
        self.flights.push_back(Flight {
            request,
            records,
            waiters,
            answer,
            deadline,
        });
    }

    fn send(&self, request: &pb::ProduceRequest) -> oneshot::Receiver<Result<pb::ProduceResponse>> {
        self.router
            .session_for(&self.topic, self.partition)
            .send(request.clone())
    }

    /// Gives `request` (of `records`, encoded afterwards) the next sequence numbers of
    /// `identity` in its topic incarnation.
    fn number(&mut self, request: &mut pb::ProduceRequest, records: &[Record], identity: Identity) {
        let numbering = match self.numbering.take() {
            Some(n) if n.identity == identity && n.topic_id == request.topic_id => n,
            _ => Numbering {
                identity,
                topic_id: request.topic_id.clone(),
                next: 0,
                acked: false,
            },
        };
        request.producer = Some(pb::ProducerBatch {
            producer_id: identity.producer_id,
            producer_epoch: i32::from(identity.epoch),
            base_sequence: numbering.next,
            transactional_id: self.transactional_id.clone().unwrap_or_default(),
        });
        self.numbering = Some(Numbering {
            next: strata_proto::sequence_after(numbering.next, records.len() as i32),
            ..numbering
        });
    }

    /// Handles the answer of the oldest batch in flight.
    async fn on_answer(&mut self, answer: Result<pb::ProduceResponse>) {
        let front = self.flights.pop_front().expect("an answer is the front's");
        let before_deadline = Instant::now() + self.backoff < front.deadline;
        match answer {
            Ok(response) => {
                self.backoff = FIRST_BACKOFF;
                if let Some(numbering) = &mut self.numbering {
                    numbering.acked = true;
                }
                settle(Ok(response), front.waiters);
            }
            // Sent again, it would be refused again: the records are partitioned anew.
            Err(error) if error.is_topic_changed() => {
                self.forget_topic(&front.request.topic_id);
                settle(Err(error), front.waiters);
            }
            Err(error)
                if self.identities.is_some()
                    && self.transactional_id.is_none()
                    && error.producer_error().is_some()
                    && before_deadline =>
            {
                tracing::debug!(topic = %self.topic, partition = self.partition, %error,
                    "idempotent batch refused with nothing older unresolved; renumbering");
                self.flights.push_front(front);
                self.send_again(true).await;
            }
            Err(error) if is_retriable(&error) && before_deadline => {
                tracing::debug!(topic = %self.topic, partition = self.partition, %error,
                    "produce failed; refreshing metadata and sending again");
                self.flights.push_front(front);
                self.send_again(false).await;
            }
            Err(error) => settle(Err(error), front.waiters),
        }
    }

    fn forget_topic(&self, topic_id: &str) {
        self.partitioning
            .lock()
            .expect("partitioning lock")
            .forget(&self.topic, topic_id);
    }

    /// Collects the answers of the batches behind the oldest (resolving those that
    /// succeeded), waits, refreshes the metadata and sends every unresolved batch again in
    /// order; with `renumber`, under a new producer id, numbered from 0.
    async fn send_again(&mut self, renumber: bool) {
        let mut unresolved: VecDeque<Flight> = VecDeque::with_capacity(self.flights.len());
        unresolved.extend(self.flights.pop_front());
        while let Some(mut flight) = self.flights.pop_front() {
            let answer = (&mut flight.answer).await.unwrap_or_else(|_| {
                Err(Error::Status(tonic::Status::unavailable(
                    "produce session closed",
                )))
            });
            match answer {
                Ok(response) => settle(Ok(response), flight.waiters),
                Err(error) if error.is_topic_changed() => {
                    self.forget_topic(&flight.request.topic_id);
                    settle(Err(error), flight.waiters);
                }
                Err(_) => unresolved.push_back(flight),
            }
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(self.config.retry_backoff_max);
        let _ = self.router.refresh().await;
        if renumber && let Some(identities) = self.identities.clone() {
            let stale = self.numbering.as_ref().map(|n| n.identity);
            let deadline = unresolved.front().map_or_else(Instant::now, |f| f.deadline);
            match identities.get(stale, &self.router, deadline).await {
                Ok(identity) => {
                    self.numbering = None;
                    for flight in &mut unresolved {
                        self.number(&mut flight.request, &flight.records, identity);
                        if let Err(error) = encode_batch(&mut flight.request, &flight.records) {
                            // Not reached: the batch was encoded before, with other numbers.
                            tracing::error!(%error, "a batch could not be encoded again");
                        }
                    }
                }
                Err(error) => {
                    for flight in unresolved {
                        settle(Err(error.clone()), flight.waiters);
                    }
                    return;
                }
            }
        }
        for mut flight in unresolved {
            flight.answer = self.send(&flight.request);
            self.flights.push_back(flight);
        }
    }
}

/// Encodes `records` into `request.record_batch` as one RecordBatch v2 (uncompressed:
/// the agent compresses for a topic with a `compression.type`), with the producer fields
/// `request.producer` names: the agent checks the batch's CRC and stores it as sent.
fn encode_batch(request: &mut pb::ProduceRequest, records: &[Record]) -> Result<()> {
    let (producer, kind) = match &request.producer {
        Some(p) => (
            Some(ProducerFields {
                producer_id: p.producer_id,
                producer_epoch: p.producer_epoch as i16,
                base_sequence: p.base_sequence,
            }),
            if p.transactional_id.is_empty() {
                BatchKind::Data
            } else {
                BatchKind::Transactional
            },
        ),
        None => (None, BatchKind::Data),
    };
    request.record_batch =
        strata_record::encode_producer_batch(records, Compression::None, producer, kind)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(())
}

/// Milliseconds since the Unix epoch by this machine's clock: a record's timestamp when
/// its sender gave none (Kafka's CreateTime).
fn unix_time_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Resolves a batch's deliveries with its answer.
fn settle(answer: Result<pb::ProduceResponse>, waiters: Vec<Completion>) {
    match answer {
        Ok(response) => {
            let mut positions = response.positions.into_iter();
            for done in waiters {
                let result = positions
                    .next()
                    .map(|p| RecordPosition {
                        partition: p.partition as u32,
                        offset: p.offset,
                        topic_id: response.topic_id.clone(),
                    })
                    .ok_or(Error::Closed);
                done.send(result);
            }
        }
        Err(error) => {
            for done in waiters {
                done.send(Err(error.clone()));
            }
        }
    }
}
