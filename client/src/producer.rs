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
//! is sent again after a refresh of the metadata, with exponential backoff, until
//! `delivery_timeout` has passed since it was first sent (Kafka's `delivery.timeout.ms`).
//! A retried batch may land after batches sent behind it, and, if the first attempt's
//! outcome was unknown, twice: the guarantee is at least once, as with Kafka's producer
//! without idempotence.
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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::{Connection, Transport};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::router::{Router, is_retriable};
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
    /// Batches of one partition in flight at once. The produce session keeps them in
    /// order; if one fails, later ones may still land (as with Kafka's
    /// `max.in.flight.requests.per.connection` without idempotence).
    pub max_in_flight_per_partition: usize,
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
    /// Milliseconds since the Unix epoch; 0 = the agent's time of receipt.
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
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
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
    done: oneshot::Sender<Result<RecordPosition>>,
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
}

impl Producer {
    /// A producer over an open connection to any agent of the cluster; it learns the
    /// others from that agent's metadata and reaches them the same way.
    pub fn new(connection: Connection, config: ProducerConfig) -> Self {
        Self {
            admin: AdminClient::new(connection.transport()),
            router: Arc::new(Router::new(connection)),
            config: Arc::new(config),
            lanes: Arc::default(),
            partitioning: Arc::default(),
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
        let (done, receiver) = oneshot::channel();
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
                tokio::spawn(run_lane(
                    self.router.clone(),
                    self.config.clone(),
                    self.partitioning.clone(),
                    topic.to_string(),
                    partition,
                    rx,
                ));
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

/// One partition's lane: batch, send on the session, resolve, until every producer clone
/// is gone. Up to `max_in_flight_per_partition` batches are in flight; the session keeps
/// them in order.
async fn run_lane(
    router: Arc<Router>,
    config: Arc<ProducerConfig>,
    partitioning: Arc<Mutex<Partitioning>>,
    topic: String,
    partition: u32,
    mut queue: mpsc::Receiver<Queued>,
) {
    let acks = match config.acks {
        Acks::All => pb::Acks::All,
        Acks::None => pb::Acks::None,
    };
    let max_in_flight = config.max_in_flight_per_partition.max(1);
    let mut in_flight = FuturesOrdered::new();
    let mut carry: Option<Queued> = None;
    let mut open = true;
    loop {
        if !open || in_flight.len() >= max_in_flight {
            match in_flight.next().await {
                Some((answer, waiters)) => settle(answer, waiters),
                None => return,
            }
            continue;
        }
        let first = match carry.take() {
            Some(q) => q,
            None if in_flight.is_empty() => match queue.recv().await {
                Some(q) => q,
                None => return,
            },
            None => tokio::select! {
                next = queue.recv() => match next {
                    Some(q) => q,
                    None => {
                        open = false;
                        continue;
                    }
                },
                Some((answer, waiters)) = in_flight.next() => {
                    settle(answer, waiters);
                    continue;
                }
            },
        };
        let mut bytes = first.record.size();
        let topic_id = first.topic_id.clone();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
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
            if bytes + size > config.batch_max_bytes || q.topic_id != topic_id {
                carry = Some(q);
                break;
            }
            bytes += size;
            batch.push(q);
        }
        let (records, waiters): (Vec<pb::Record>, Vec<_>) = batch
            .into_iter()
            .map(|q| {
                let r = q.record;
                (
                    pb::Record {
                        key: r.key,
                        value: r.value,
                        timestamp_ms: r.timestamp_ms,
                        headers: r
                            .headers
                            .into_iter()
                            .map(|(key, value)| pb::Header { key, value })
                            .collect(),
                    },
                    q.done,
                )
            })
            .unzip();
        let request = pb::ProduceRequest {
            topic: topic.clone(),
            topic_id: topic_id.clone(),
            partition: Some(partition as i32),
            records,
            acks: acks as i32,
        };
        // Sent now, so that the session keeps the lane's order; retries are sent later.
        let first = router.session_for(&topic, partition).send(request.clone());
        let (router, config, topic) = (router.clone(), config.clone(), topic.clone());
        let partitioning = partitioning.clone();
        in_flight.push_back(async move {
            let answer = deliver(&router, &config, &topic, partition, request, first).await;
            if answer.as_ref().is_err_and(Error::is_topic_changed) {
                partitioning
                    .lock()
                    .expect("partitioning lock")
                    .forget(&topic, &topic_id);
            }
            (answer, waiters)
        });
    }
}

/// Waits for a batch's answer, sending it again (after a metadata refresh and a backoff)
/// while it fails with a retriable error and the delivery timeout has not passed.
async fn deliver(
    router: &Router,
    config: &ProducerConfig,
    topic: &str,
    partition: u32,
    request: pb::ProduceRequest,
    first: oneshot::Receiver<Result<pb::ProduceResponse>>,
) -> Result<pb::ProduceResponse> {
    let deadline = tokio::time::Instant::now() + config.delivery_timeout;
    let mut backoff = Duration::from_millis(50);
    let mut attempt = first;
    loop {
        // A session dropped without answering (its agent went away) is worth a retry.
        let answer = attempt.await.unwrap_or_else(|_| {
            Err(Error::Status(tonic::Status::unavailable(
                "produce session closed",
            )))
        });
        match answer {
            // Sent again, it would be refused again: the caller partitions anew.
            Err(error) if error.is_topic_changed() => return Err(error),
            Err(error)
                if is_retriable(&error) && tokio::time::Instant::now() + backoff < deadline =>
            {
                tracing::debug!(topic, partition, %error, "produce failed; refreshing metadata and retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.retry_backoff_max);
                let _ = router.refresh().await;
                attempt = router.session_for(topic, partition).send(request.clone());
            }
            answer => return answer,
        }
    }
}

/// Resolves a batch's deliveries with its answer.
fn settle(
    answer: Result<pb::ProduceResponse>,
    waiters: Vec<oneshot::Sender<Result<RecordPosition>>>,
) {
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
                let _ = done.send(result);
            }
        }
        Err(error) => {
            for done in waiters {
                let _ = done.send(Err(error.clone()));
            }
        }
    }
}
