//! The agent itself: its configuration, shared state, and the operations the gRPC
//! services call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_metastore::{AgentRecord, ArchiveState, Metastore, PartitionState, TopicMeta};
use strata_storage::{
    BatchKind, BlockCache, ClientBatch, Compression, ProducerFields, Record, SegmentStore,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::cluster::ClusterView;
use crate::coordinator::Coordinator;
use crate::limits::{Limits, full, over};
use crate::metrics::Metrics;
use crate::reader::{FetchResult, Isolation, PartitionLog};
use crate::topic::{self, TopicSettings};
use crate::writer::{EncodedBatch, PartitionRecords, Payload, Writer};
use crate::{Error, Result};

/// Index entries one read of [`Agent::stored_bytes`] takes.
const STORED_BYTES_PAGE: usize = 1000;
/// Partitions [`Agent::stored_bytes`] reads at once.
const STORED_BYTES_PARALLEL: usize = 16;

/// A partition: topic name and partition number.
pub(crate) type PartitionKey = (String, u32);

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Unique id of this agent.
    pub agent_id: String,
    /// host:port clients reach this agent on.
    pub advertised_address: String,
    /// Availability zone, as registered (empty if not set).
    pub zone: String,
    /// The cluster's name: Kafka's cluster id.
    pub cluster: String,
    /// host:port Kafka clients reach this agent's Kafka listener on; empty if it has
    /// none.
    pub kafka_advertised_address: String,
    /// Flush the open segment when it holds this many bytes.
    pub segment_max_bytes: usize,
    /// Flush the open segment at the latest this long after its first record.
    pub linger: Duration,
    /// Refuse produce requests (RESOURCE_EXHAUSTED) while this many bytes wait to be
    /// flushed.
    pub max_pending_bytes: usize,
    /// Segments being PUT at once; their commits still happen one at a time, in order.
    pub max_inflight_flushes: usize,
    /// TTL of the agent's registration lease: how long after it dies (or loses etcd) the
    /// agent stops being listed as live.
    pub lease_ttl: Duration,
    /// Bounds on what clients send.
    pub limits: Limits,
    /// Whether ACLs are checked, and who may do everything.
    pub authorization: crate::auth::AuthorizationConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            agent_id: "agent-1".to_string(),
            advertised_address: "127.0.0.1:7070".to_string(),
            zone: String::new(),
            cluster: "default".to_string(),
            kafka_advertised_address: String::new(),
            segment_max_bytes: 4 << 20,
            linger: Duration::from_millis(50),
            max_pending_bytes: 64 << 20,
            max_inflight_flushes: 4,
            lease_ttl: Duration::from_secs(10),
            limits: Limits::default(),
            authorization: crate::auth::AuthorizationConfig::default(),
        }
    }
}

/// A topic as the agent caches it.
#[derive(Debug)]
pub(crate) struct TopicHandle {
    pub meta: TopicMeta,
    pub settings: TopicSettings,
}

/// A running agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Inner>,
    tasks: Arc<tokio::sync::Mutex<Option<Tasks>>>,
}

/// The agent's background tasks, and how to stop them.
#[derive(Debug)]
struct Tasks {
    flusher: JoinHandle<()>,
    control: JoinHandle<()>,
    /// Times out group members; stops (dropping the coordinator slots) with the control
    /// loop.
    sweeper: JoinHandle<()>,
    /// Follows topic changes; stops with the control loop.
    topics: JoinHandle<()>,
    /// Follows the ACLs (when they are checked); stops with the control loop.
    acls: Option<JoinHandle<()>>,
    stop_control: watch::Sender<bool>,
    membership: JoinHandle<()>,
    stop_membership: watch::Sender<bool>,
}

/// The agent's shared state.
#[derive(Debug)]
pub(crate) struct Inner {
    pub config: AgentConfig,
    pub metastore: Arc<dyn Metastore>,
    pub store: SegmentStore,
    pub cache: BlockCache,
    pub clock: Arc<dyn Clock>,
    /// This incarnation's number; segment names carry it.
    pub agent_epoch: u64,
    pub metrics: Metrics,
    /// The cached ACLs and the check every API makes.
    pub authorizer: Arc<crate::auth::Authorizer>,
    topics: Mutex<HashMap<String, Arc<TopicHandle>>>,
    /// Every stored topic, as of the last topic-watch notification (and this agent's own
    /// changes since): what `Metadata` and `DescribeTopic` answer from. `None` until the
    /// first read. A name it lacks is read from the metastore.
    catalog: std::sync::RwLock<Option<HashMap<String, TopicMeta>>>,
    /// Bumped by every definition this agent puts in the catalog itself (its own creates
    /// and changes): a topic list read before one must not overwrite it.
    catalog_generation: AtomicU64,
    partitions: Mutex<HashMap<PartitionKey, Arc<PartitionLog>>>,
    pub writer: Writer,
    pub cluster: ClusterView,
    pub coordinator: Coordinator,
    sticky_partition: AtomicU32,
    /// Producer ids taken from the metastore and not yet handed out.
    producer_ids: tokio::sync::Mutex<std::ops::Range<i64>>,
    /// One lock per transactional id this agent coordinates.
    pub(crate) transaction_locks: crate::transaction::TransactionLocks,
    /// What finishes transactions and reaches their coordinators (the gRPC service).
    pub(crate) transaction_router:
        std::sync::OnceLock<Arc<dyn crate::transaction::TransactionRouter>>,
    /// Set when a background part of the agent failed (panicked): the agent stops
    /// writing, reports NOT_SERVING and exits, so that a supervisor restarts it.
    failure: watch::Sender<Option<String>>,
}

/// Producer ids an agent takes from the metastore at a time.
pub const PRODUCER_ID_BLOCK: u64 = 1_000;

/// Client batches at least this big are decoded on a blocking thread.
const DECODE_INLINE_MAX: usize = 64 << 10;

/// The producer fields of an idempotent (or transactional) producer's batch.
#[derive(Debug, Clone)]
pub struct ProducerBatch {
    /// Producer id, epoch, base sequence.
    pub fields: ProducerFields,
    /// Set for a batch of a transactional producer's open transaction.
    pub transactional_id: Option<String>,
}

/// What one fetch asks for.
#[derive(Debug, Clone, Copy)]
pub struct FetchSpec {
    /// The first offset wanted.
    pub offset: i64,
    /// Most bytes of records to return (at least one record when there is one).
    pub max_bytes: usize,
    /// How long to wait at the end of what is readable.
    pub max_wait: Duration,
    /// What of transactions is readable.
    pub isolation: Isolation,
}

/// A record as a producer hands it over.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Key, if any.
    pub key: Option<bytes::Bytes>,
    /// Value; `None` = tombstone.
    pub value: Option<bytes::Bytes>,
    /// Milliseconds since the Unix epoch; 0 = now.
    pub timestamp_ms: i64,
    /// Headers.
    pub headers: Vec<(String, bytes::Bytes)>,
}

/// Records whose offsets are assigned; [`Appended::committed`] waits for their commit.
#[derive(Debug)]
pub struct Appended {
    /// The incarnation of the topic they were appended to.
    pub topic_id: String,
    /// The request was a retry of an idempotent producer's batch already written:
    /// nothing was appended, and the positions are the ones it got then.
    pub duplicate: bool,
    /// The time given to the records of a `LogAppendTime` topic's client batch; -1
    /// otherwise.
    pub log_append_time_ms: i64,
    positions: Vec<(u32, i64)>,
    commit: Option<tokio::sync::oneshot::Receiver<Result<()>>>,
}

impl Appended {
    /// The positions of all `count` records of a batch appended as one
    /// ([`Agent::append_client_batch`] answers with its base offset alone).
    pub fn spread_positions(&mut self, count: i64) {
        if let Some(&(partition, base)) = self.positions.first() {
            self.positions = (0..count).map(|i| (partition, base + i)).collect();
        }
    }

    /// Each record's (partition, offset), once committed (immediately for acks=NONE).
    pub async fn committed(self) -> Result<Vec<(u32, i64)>> {
        if let Some(commit) = self.commit {
            commit
                .await
                .map_err(|_| Error::Unavailable("agent stopped before the commit".into()))??;
        }
        Ok(self.positions)
    }
}

/// One partition's description.
#[derive(Debug, Clone)]
pub struct PartitionDescription {
    /// Partition number.
    pub partition: u32,
    /// Committed state.
    pub state: PartitionState,
    /// The agent the controller assigned it to: the one to send its records to.
    pub assigned_agent: Option<String>,
}

/// A topic's Parquet archive, as `DescribeArchive` shows it.
#[derive(Debug, Clone)]
pub struct ArchiveDescription {
    /// The topic's `archive.enabled`.
    pub enabled: bool,
    /// The archive's folder and the store it is in.
    pub location: String,
    /// Per partition: its committed state and how far it is archived.
    pub partitions: Vec<(PartitionDescription, ArchiveState)>,
}

/// The cluster as `Metadata` describes it.
#[derive(Debug, Clone)]
pub struct ClusterMetadata {
    /// Registered (live) agents.
    pub agents: Vec<AgentRecord>,
    /// The controller's agent id, if one is elected.
    pub controller: Option<String>,
    /// The topics asked for, with their partitions.
    pub topics: Vec<(TopicMeta, Vec<PartitionDescription>)>,
    /// Stored records the metastore skipped (unreadable, or over the limits): key, reason.
    pub unreadable: Vec<(String, String)>,
}

impl Inner {
    /// This incarnation's Kafka node id: its incarnation number, which no other live
    /// agent has and which it keeps for its life.
    pub(crate) fn node_id(&self) -> i32 {
        (self.agent_epoch % i32::MAX as u64) as i32
    }

    /// A background part failed: stop accepting writes and fail every produce waiting on
    /// this agent (never an ack), and say so once. The process is expected to exit.
    pub(crate) fn fail(&self, part: &str, reason: &str) {
        let failure = format!("{part} failed: {reason}");
        let first = self.failure.send_if_modified(|current| {
            current.is_none() && {
                *current = Some(failure.clone());
                true
            }
        });
        if first {
            tracing::error!(
                part,
                reason,
                "agent part failed; refusing writes, reporting NOT_SERVING, exiting"
            );
            self.close_writer();
            self.disown_all(&format!("this agent failed ({failure}) and is restarting"));
        }
    }

    /// Runs `task` as the agent's part `part`: a panic fails the agent (see
    /// [`Inner::fail`]) instead of leaving it serving without that part.
    pub(crate) fn spawn_part(
        self: &Arc<Self>,
        part: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let handle = tokio::spawn(task);
        let inner = self.clone();
        tokio::spawn(async move {
            if let Err(e) = handle.await
                && e.is_panic()
            {
                inner.fail(part, &panic_message(e));
            }
        })
    }

    /// A topic's definition, read from the metastore.
    pub(crate) async fn load_topic(&self, name: &str) -> Result<TopicMeta> {
        topic::validate_name(name)?;
        self.metastore
            .get_topic(name)
            .await?
            .ok_or_else(|| Error::TopicNotFound(name.to_string()))
    }

    /// A topic's definition from the watched catalog, or read from the metastore if the
    /// catalog lacks it.
    pub(crate) async fn catalog_topic(&self, name: &str) -> Result<TopicMeta> {
        let known = self
            .catalog
            .read()
            .expect("catalog lock")
            .as_ref()
            .and_then(|c| c.get(name).cloned());
        match known {
            Some(meta) => Ok(meta),
            None => self.load_topic(name).await,
        }
    }

    /// Refuses a change that would add `partitions` partitions (and `overhead` bytes) to
    /// the controller's assignment beyond [`crate::limits::MAX_ASSIGNMENT_BYTES`]: each
    /// partition takes about the longest agent id plus 3 bytes of it.
    pub(crate) fn check_assignment_room(&self, overhead: usize, partitions: u64) -> Result<()> {
        let assignment = self.cluster.assignment();
        let now = serde_json::to_vec(assignment.as_ref()).map_or(0, |v| v.len());
        let longest_id = self
            .cluster
            .agents()
            .iter()
            .map(|a| a.agent_id.len())
            .max()
            .unwrap_or(0)
            .max(self.config.agent_id.len());
        let after = now as u64 + overhead as u64 + partitions * (longest_id as u64 + 3);
        let most = crate::limits::MAX_ASSIGNMENT_BYTES as u64;
        if after > most {
            return Err(Error::Overloaded(format!(
                "{partitions} more partitions would make the cluster's partition assignment \
                 about {after} bytes, over its {most}-byte limit (one etcd value; etcd \
                 refuses requests over --max-request-bytes, 1.5 MiB by default): use fewer \
                 partitions, or shorter agent ids"
            )));
        }
        Ok(())
    }

    /// Every topic, from the watched catalog (read from the metastore until it is loaded).
    pub(crate) async fn catalog_topics(&self) -> Result<Vec<TopicMeta>> {
        let known = self
            .catalog
            .read()
            .expect("catalog lock")
            .as_ref()
            .map(|c| c.values().cloned().collect::<Vec<_>>());
        let mut topics = match known {
            Some(topics) => topics,
            None => self.metastore.list_topics().await?,
        };
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// A topic, from the cache or the metastore.
    pub(crate) async fn topic(&self, name: &str) -> Result<Arc<TopicHandle>> {
        if let Some(handle) = self.topics.lock().expect("topics lock").get(name) {
            return Ok(handle.clone());
        }
        let meta = self.load_topic(name).await?;
        let handle = Arc::new(TopicHandle {
            settings: TopicSettings::from_config(&meta.config),
            meta,
        });
        self.topics
            .lock()
            .expect("topics lock")
            .insert(name.to_string(), handle.clone());
        Ok(handle)
    }

    /// Follows topic changes until `stop`: on every notification of the metastore's topic
    /// watch (creations, deletions, changes, and a lost watch), the cached topics are
    /// brought in line with the stored ones. So no agent acts on a deleted topic or an
    /// old definition for longer than a watch notification takes.
    pub(crate) async fn run_topic_follower(self: Arc<Self>, stop: watch::Receiver<bool>) {
        crate::follow::follow_changes(
            "topics",
            stop,
            || self.metastore.watch_topics(),
            || self.sync_topics(),
        )
        .await;
    }

    /// Brings the cached topics in line with the stored ones: a deleted topic, or one
    /// created again (another id), is forgotten; a changed definition replaces the cached
    /// one.
    async fn sync_topics(&self) -> Result<()> {
        let stored: HashMap<String, TopicMeta> = loop {
            let generation = self.catalog_generation.load(Ordering::SeqCst);
            let stored = self
                .metastore
                .list_topics()
                .await?
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect();
            // Unless this agent changed a topic while the list was read (the list may
            // predate that change): then read it again, as it now includes the change.
            if self.catalog_generation.load(Ordering::SeqCst) == generation {
                break stored;
            }
        };
        let cached: Vec<Arc<TopicHandle>> = self
            .topics
            .lock()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        for handle in cached {
            let name = handle.meta.name.as_str();
            match stored.get(name) {
                Some(meta) if *meta == handle.meta => {}
                Some(meta) if meta.topic_id == handle.meta.topic_id => {
                    tracing::info!(topic = name, "topic changed; using its new definition");
                    self.use_definition(meta);
                }
                _ => {
                    tracing::info!(
                        topic = name,
                        "topic deleted (or created again); forgetting it"
                    );
                    self.forget_topic_state(name);
                }
            }
        }
        *self.catalog.write().expect("catalog lock") = Some(stored);
        self.cluster.wake();
        Ok(())
    }

    /// Caches `meta` as its topic's definition (a changed config of the same incarnation).
    pub(crate) fn use_definition(&self, meta: &TopicMeta) {
        let handle = Arc::new(TopicHandle {
            settings: TopicSettings::from_config(&meta.config),
            meta: meta.clone(),
        });
        self.topics
            .lock()
            .expect("topics lock")
            .insert(meta.name.clone(), handle);
        if let Some(catalog) = self.catalog.write().expect("catalog lock").as_mut() {
            catalog.insert(meta.name.clone(), meta.clone());
        }
        self.catalog_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Forgets all this agent holds of `topic`: its cached definition, its partitions'
    /// ownership (their unflushed records fail) and their cached logs.
    pub(crate) fn forget_topic_state(&self, topic: &str) {
        self.topics.lock().expect("topics lock").remove(topic);
        if let Some(catalog) = self.catalog.write().expect("catalog lock").as_mut() {
            catalog.remove(topic);
        }
        self.forget_topic(topic);
        self.partitions
            .lock()
            .expect("partitions lock")
            .retain(|k, _| k.0 != topic);
    }

    /// The topic is no longer incarnation `topic_id` (deleted and created again, or its
    /// partition count changed): forget the incarnation, if it is still the cached one,
    /// and return the retriable error that says so.
    pub(crate) fn topic_changed(&self, topic: &str, topic_id: &str, reason: String) -> Error {
        let cached = self
            .topics
            .lock()
            .expect("topics lock")
            .get(topic)
            .is_some_and(|h| h.meta.topic_id == topic_id);
        if cached {
            tracing::info!(topic, %reason, "topic changed; forgetting the incarnation this agent held");
            self.forget_topic_state(topic);
        }
        Error::TopicChanged {
            topic: topic.to_string(),
            reason,
        }
    }

    pub(crate) fn partition_log(&self, key: &PartitionKey) -> Arc<PartitionLog> {
        self.partitions
            .lock()
            .expect("partitions lock")
            .entry(key.clone())
            .or_insert_with(|| Arc::new(PartitionLog::new()))
            .clone()
    }
}

impl Agent {
    /// Starts an agent: takes an incarnation number, registers, runs one control step
    /// (so that a lone agent serves at once), and starts the flusher, the membership task
    /// and the control loop.
    pub async fn start(
        config: AgentConfig,
        metastore: Arc<dyn Metastore>,
        store: SegmentStore,
        cache: BlockCache,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let agent_epoch = metastore.next_agent_epoch().await?;
        let metrics = Metrics::new();
        let authorizer = Arc::new(crate::auth::Authorizer::new(
            config.authorization.clone(),
            metrics.acl_denied.clone(),
        ));
        if authorizer.enabled() {
            // Serve nothing but super users' requests until the ACLs are read.
            authorizer.reload(metastore.as_ref()).await?;
        }
        let inner = Arc::new(Inner {
            config,
            metastore,
            store,
            cache,
            clock,
            agent_epoch,
            metrics,
            authorizer,
            topics: Mutex::new(HashMap::new()),
            catalog: std::sync::RwLock::default(),
            catalog_generation: AtomicU64::new(0),
            partitions: Mutex::new(HashMap::new()),
            writer: Writer::default(),
            cluster: ClusterView::default(),
            coordinator: Coordinator::default(),
            sticky_partition: AtomicU32::new(rand::random()),
            producer_ids: tokio::sync::Mutex::new(0..0),
            transaction_locks: Default::default(),
            transaction_router: std::sync::OnceLock::new(),
            failure: watch::Sender::new(None),
        });
        let registration = inner
            .metastore
            .register_agent(&inner.agent_record(), inner.config.lease_ttl)
            .await?;
        tracing::info!(
            agent_id = %inner.config.agent_id, agent_epoch, store = %inner.store.description(),
            "agent started"
        );
        let mut role = None;
        if let Err(e) = inner.control_step(&mut role).await {
            tracing::warn!(error = %e, "first control step failed; the control loop retries");
        }
        let flusher = inner.spawn_part("flusher", inner.clone().run_flusher());
        let (stop_control, stopping) = watch::channel(false);
        let sweeper = inner.spawn_part(
            "group sweeper",
            inner.clone().run_group_sweeper(stopping.clone()),
        );
        let topics = inner.spawn_part(
            "topic follower",
            inner.clone().run_topic_follower(stopping.clone()),
        );
        let acls = inner.authorizer.enabled().then(|| {
            inner.spawn_part(
                "ACL follower",
                inner
                    .authorizer
                    .clone()
                    .follow(inner.metastore.clone(), stopping.clone()),
            )
        });
        let control = inner.spawn_part(
            "control loop",
            inner.clone().run_control_loop(role, stopping),
        );
        let (stop_membership, stopping) = watch::channel(false);
        let membership = inner.spawn_part(
            "membership (lease renewal)",
            inner.clone().run_membership(registration, stopping),
        );
        Ok(Self {
            inner,
            tasks: Arc::new(tokio::sync::Mutex::new(Some(Tasks {
                flusher,
                control,
                sweeper,
                topics,
                acls,
                stop_control,
                membership,
                stop_membership,
            }))),
        })
    }

    /// Hands off and stops: resigns the controller role and stops following the
    /// assignment, stops accepting writes, flushes and commits what is open, then
    /// deregisters so that the controller moves this agent's partitions at once. Idempotent.
    pub async fn shutdown(&self) {
        let Some(tasks) = self.tasks.lock().await.take() else {
            return;
        };
        let _ = tasks.stop_control.send(true);
        let _ = tasks.control.await;
        let _ = tasks.sweeper.await;
        let _ = tasks.topics.await;
        if let Some(acls) = tasks.acls {
            let _ = acls.await;
        }
        self.inner.close_writer();
        let _ = tasks.flusher.await;
        let _ = tasks.stop_membership.send(true);
        let _ = tasks.membership.await;
        self.inner.cache.close().await;
        tracing::info!("agent stopped: flushed, committed and deregistered");
    }

    /// Why the agent failed, once a background part of it has (see [`Inner::fail`]).
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.inner.failure.subscribe()
    }

    /// This agent's configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    /// This agent's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The authorizer every API checks before it acts.
    pub fn authorizer(&self) -> &crate::auth::Authorizer {
        &self.inner.authorizer
    }

    /// Checks that `caller` may call `api` on `resource` (see [`crate::auth::access`]).
    pub fn authorize(
        &self,
        caller: &crate::auth::Caller,
        api: &str,
        resource: crate::auth::Resource<'_>,
    ) -> Result<()> {
        self.inner
            .authorizer
            .check(caller, api, resource)
            .map_err(Error::NotAuthorized)
    }

    /// This agent's Kafka node id (see [`strata_metastore::AgentRecord::node_id`]).
    pub fn node_id(&self) -> i32 {
        self.inner.node_id()
    }

    /// A topic's definition, read from the metastore.
    async fn load_topic(&self, name: &str) -> Result<TopicMeta> {
        self.inner.load_topic(name).await
    }

    /// A topic, from the cache or the metastore.
    pub(crate) async fn topic(&self, name: &str) -> Result<Arc<TopicHandle>> {
        self.inner.topic(name).await
    }

    /// A topic as a request names it: by name, and by id if the request gives one (empty:
    /// whatever incarnation is current). A request for another incarnation than the
    /// current one is refused with the retriable [`Error::TopicChanged`].
    pub(crate) async fn resolve_topic(
        &self,
        name: &str,
        topic_id: &str,
    ) -> Result<Arc<TopicHandle>> {
        let deleted = |e: Error| match e {
            Error::TopicNotFound(_) if !topic_id.is_empty() => Error::TopicChanged {
                topic: name.to_string(),
                reason: "it was deleted".to_string(),
            },
            other => other,
        };
        let handle = self.topic(name).await.map_err(deleted)?;
        if topic_id.is_empty() || handle.meta.topic_id == topic_id {
            return Ok(handle);
        }
        // Another id than the cached one: the client's (an old incarnation) or this
        // agent's cache may be behind. Only the stored topic says which; the cached
        // incarnation's state is dropped only if the cache is the one behind, so a late
        // request of an old incarnation costs the current one nothing.
        let stored = self.load_topic(name).await.map_err(|e| {
            if matches!(e, Error::TopicNotFound(_)) {
                // Deleted: the cache is behind too.
                self.inner.forget_topic_state(name);
            }
            deleted(e)
        })?;
        let handle = if stored.topic_id == handle.meta.topic_id {
            handle
        } else {
            self.inner.forget_topic_state(name);
            self.topic(name).await.map_err(deleted)?
        };
        if handle.meta.topic_id == topic_id {
            return Ok(handle);
        }
        Err(Error::TopicChanged {
            topic: name.to_string(),
            reason: format!(
                "the request is for id {} but the topic is {}",
                crate::limits::shown(topic_id),
                handle.meta.topic_id
            ),
        })
    }

    pub(crate) fn check_partition(handle: &TopicHandle, partition: i32) -> Result<u32> {
        let count = handle.meta.partitions;
        u32::try_from(partition)
            .ok()
            .filter(|p| *p < count)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "partition {partition} does not exist: topic '{}' has partitions 0 to {}",
                    handle.meta.name,
                    count - 1
                ))
            })
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: &BTreeMap<String, String>,
    ) -> Result<TopicMeta> {
        topic::validate_name(name)?;
        let limits = &self.inner.config.limits;
        if partitions < 1 {
            return Err(Error::InvalidArgument(format!(
                "partition count {partitions} is invalid: a topic needs at least 1 partition"
            )));
        }
        let max = limits.max_partitions_per_topic;
        if partitions as u32 > max {
            return Err(over(
                format!(
                    "partition count {partitions} is over the limit of {max} partitions per topic"
                ),
                "max_partitions_per_topic",
            ));
        }
        let meta = TopicMeta {
            name: name.to_string(),
            topic_id: uuid::Uuid::new_v4().to_string(),
            partitions: partitions as u32,
            config: topic::resolve_config(config)?,
            created_at_ms: self.inner.clock.now_ms(),
        };
        // The cluster's capacity (two creates at once may both pass: the limits bound
        // memory, they are not exact quotas).
        let topics = self.inner.metastore.list_topics().await?;
        if topics.iter().any(|t| t.name == name) {
            return Err(Error::TopicExists(name.to_string()));
        }
        if topics.len() >= limits.max_topics as usize {
            return Err(full(
                format!("the cluster has {} topics, its limit", topics.len()),
                "max_topics",
            ));
        }
        let total: u64 = topics.iter().map(|t| u64::from(t.partitions)).sum();
        if total + partitions as u64 > limits.max_partitions {
            return Err(full(
                format!(
                    "the cluster has {total} partitions; {partitions} more would pass its \
                     limit of {}",
                    limits.max_partitions
                ),
                "max_partitions",
            ));
        }
        self.inner
            .check_assignment_room(name.len() + 8, u64::from(partitions as u32))?;
        let archive = strata_storage::archive::topic_prefix(name);
        if TopicSettings::from_config(&meta.config).archived
            && self.inner.store.has_any(&archive).await?
        {
            if self.inner.metastore.get_topic(name).await?.is_some() {
                return Err(Error::TopicExists(name.to_string()));
            }
            // Archive files outlive their topic; a new topic of the same name would write
            // over them and mix with them.
            return Err(Error::FailedPrecondition(format!(
                "cannot archive topic '{name}': {archive} in the object store holds the archive \
                 of an earlier topic of that name; move or delete it first, or use another name"
            )));
        }
        self.inner.metastore.create_topic(&meta).await?;
        self.inner.use_definition(&meta);
        tracing::info!(topic = name, partitions, "created topic");
        self.wait_for_assignment(name).await;
        Ok(meta)
    }

    /// Waits (a few control ticks at most) until the controller assigned the topic's
    /// partitions, so that producers find their owners at once. Not an error if it takes
    /// longer: unassigned partitions are taken by the agent that gets their records.
    async fn wait_for_assignment(&self, topic: &str) {
        let deadline = tokio::time::Instant::now() + 10 * crate::cluster::TICK;
        self.inner.cluster.wake();
        while !self.inner.cluster.assignment().topics.contains_key(topic)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(crate::cluster::TICK / 8).await;
        }
    }

    /// Where a client in `zone` is against this agent: `same_zone`, `other_zone`, or
    /// `no_zone` (it did not say). The label of `strata_fetch_zone_bytes_total`.
    pub fn client_zone(&self, zone: &str) -> &'static str {
        if zone.is_empty() {
            "no_zone"
        } else if zone == self.inner.config.zone {
            "same_zone"
        } else {
            "other_zone"
        }
    }

    /// The live agents, as this agent last saw them registered.
    pub fn live_agents(&self) -> Vec<strata_metastore::AgentRecord> {
        self.inner.cluster.agents().as_ref().clone()
    }

    /// Every topic, from the watched catalog (no metastore read once it is loaded).
    pub async fn catalog(&self) -> Result<Vec<TopicMeta>> {
        self.inner.catalog_topics().await
    }

    /// Every topic.
    pub async fn list_topics(&self) -> Result<Vec<TopicMeta>> {
        Ok(self.inner.metastore.list_topics().await?)
    }

    /// A topic and its partitions' committed state.
    pub async fn describe_topic(
        &self,
        name: &str,
    ) -> Result<(TopicMeta, Vec<PartitionDescription>)> {
        let meta = self.inner.catalog_topic(name).await?;
        let partitions = self.partition_states(&meta).await?;
        Ok((meta, partitions))
    }

    /// The compactors running now (their published totals) and the jobs claimed now
    /// (`(job, compactor)`), sorted.
    pub async fn describe_compactors(
        &self,
    ) -> Result<(
        Vec<strata_metastore::CompactorRecord>,
        Vec<(String, String)>,
    )> {
        let mut compactors = self.inner.metastore.compactors().await?;
        compactors.sort_by(|a, b| a.compactor_id.cmp(&b.compactor_id));
        let mut jobs = self.inner.metastore.compaction_claims().await?;
        jobs.sort();
        Ok((compactors, jobs))
    }

    /// Bytes each partition of `meta` holds in the object store: the lengths of its
    /// current incarnation's index entries (its blocks) summed, read in pages of
    /// [`STORED_BYTES_PAGE`] entries, [`STORED_BYTES_PARALLEL`] partitions at a time. One
    /// etcd range read per page: callers ask for it (`DescribeTopic` with
    /// `include_stored_bytes`), it is not part of every describe.
    pub async fn stored_bytes(&self, meta: &TopicMeta) -> Result<Vec<u64>> {
        use futures::{StreamExt as _, TryStreamExt as _};
        futures::stream::iter(0..meta.partitions)
            .map(|p| async move {
                let mut total = 0u64;
                let mut from = 0i64;
                loop {
                    let entries = self
                        .inner
                        .metastore
                        .index_entries(&meta.name, p, from, STORED_BYTES_PAGE)
                        .await?;
                    total += entries
                        .iter()
                        .filter(|e| e.topic_id.is_empty() || e.topic_id == meta.topic_id)
                        .map(|e| e.byte_len)
                        .sum::<u64>();
                    match entries.last() {
                        Some(last) if entries.len() == STORED_BYTES_PAGE => {
                            from = last.last_offset + 1;
                        }
                        _ => return Ok::<u64, Error>(total),
                    }
                }
            })
            .buffered(STORED_BYTES_PARALLEL)
            .try_collect()
            .await
    }

    /// How far a topic is archived as Parquet.
    pub async fn describe_archive(&self, name: &str) -> Result<ArchiveDescription> {
        let meta = self.load_topic(name).await?;
        let partitions = self.partition_states(&meta).await?;
        let archived = futures::future::try_join_all((0..meta.partitions).map(|p| {
            let metastore = self.inner.metastore.clone();
            let name = meta.name.clone();
            async move { metastore.archive_state(&name, p).await }
        }))
        .await?;
        Ok(ArchiveDescription {
            enabled: TopicSettings::from_config(&meta.config).archived,
            location: format!(
                "{} in {}",
                strata_storage::archive::topic_prefix(name),
                self.inner.store.description()
            ),
            partitions: partitions.into_iter().zip(archived).collect(),
        })
    }

    async fn partition_states(&self, meta: &TopicMeta) -> Result<Vec<PartitionDescription>> {
        let assignment = self.inner.cluster.assignment();
        let states = self
            .inner
            .metastore
            .partition_states(&meta.name, meta.partitions)
            .await?;
        Ok(states
            .into_iter()
            .enumerate()
            .map(|(p, state)| PartitionDescription {
                partition: p as u32,
                state,
                assigned_agent: assignment
                    .agent_of(&meta.name, p as u32)
                    .map(str::to_string),
            })
            .collect())
    }

    /// Kafka's ListOffsets: per partition of `partitions` (all if empty), the offset
    /// `spec` names and its record's timestamp; `(-1, -1)` where no record qualifies.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: crate::reader::OffsetSpec,
    ) -> Result<Vec<(u32, i64, i64)>> {
        let handle = self.topic(topic).await?;
        if partitions.len() > handle.meta.partitions as usize {
            return Err(Error::InvalidArgument(format!(
                "the request names {} partitions; topic '{topic}' has {}",
                partitions.len(),
                handle.meta.partitions
            )));
        }
        let partitions: Vec<u32> = if partitions.is_empty() {
            (0..handle.meta.partitions).collect()
        } else {
            partitions
                .iter()
                .map(|p| match Self::check_partition(&handle, *p) {
                    Err(_) if *p >= 0 => Err(Error::PartitionNotFound {
                        topic: topic.to_string(),
                        partition: *p,
                        last: handle.meta.partitions - 1,
                    }),
                    other => other,
                })
                .collect::<Result<_>>()?
        };
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let at = self
                .inner
                .offset_at(&(topic.to_string(), p), spec)
                .await?
                .unwrap_or((-1, -1));
            out.push((p, at.0, at.1));
        }
        Ok(out)
    }

    /// Grows a topic to `to` partitions (never shrinks), within the limits; the
    /// controller assigns the new ones at its next tick, woken now.
    pub async fn add_partitions(&self, name: &str, to: i32) -> Result<TopicMeta> {
        let limits = &self.inner.config.limits;
        loop {
            let current = self.load_topic(name).await?;
            let count = current.partitions as i64;
            if i64::from(to) <= count {
                return Err(Error::InvalidArgument(format!(
                    "topic '{name}' has {count} partitions; a topic only grows: ask for more \
                     than {count}"
                )));
            }
            let max = limits.max_partitions_per_topic;
            if to as u32 > max {
                return Err(over(
                    format!("{to} partitions is over the limit of {max} partitions per topic"),
                    "max_partitions_per_topic",
                ));
            }
            let total: u64 = self
                .inner
                .metastore
                .list_topics()
                .await?
                .iter()
                .map(|t| u64::from(t.partitions))
                .sum();
            let more = (i64::from(to) - count) as u64;
            if total + more > limits.max_partitions {
                return Err(full(
                    format!(
                        "the cluster has {total} partitions; {more} more would pass its limit \
                         of {}",
                        limits.max_partitions
                    ),
                    "max_partitions",
                ));
            }
            self.inner.check_assignment_room(0, more)?;
            let grown = TopicMeta {
                partitions: to as u32,
                ..current.clone()
            };
            if self.inner.metastore.alter_topic(&current, &grown).await? {
                tracing::info!(topic = name, from = count, to, "added partitions");
                self.inner.use_definition(&grown);
                self.inner.cluster.wake();
                return Ok(grown);
            }
            // Altered concurrently: read it again.
        }
    }

    /// Sets and deletes config keys of a topic (deleted keys go back to their defaults),
    /// validated as at creation; returns the new definition. This agent uses it at once,
    /// the others when their topic watch notifies them.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<TopicMeta> {
        if let Some(key) = delete.iter().find(|k| set.contains_key(*k)) {
            return Err(Error::InvalidArgument(format!(
                "config key '{}' is both set and deleted; do one",
                crate::limits::shown(key)
            )));
        }
        loop {
            let current = self.load_topic(name).await?;
            let mut given = current.config.clone();
            for key in delete {
                topic::check_config_key(key)?;
                given.remove(key);
            }
            given.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            let altered = TopicMeta {
                config: topic::resolve_config(&given)?,
                ..current.clone()
            };
            if altered == current {
                return Ok(current);
            }
            if self.inner.metastore.alter_topic(&current, &altered).await? {
                tracing::info!(topic = name, "altered topic config");
                self.inner.use_definition(&altered);
                return Ok(altered);
            }
            // Altered (or deleted) concurrently: read it again.
        }
    }

    /// Deletes a partition's records below `before` (-1: the high watermark) by moving
    /// its log start (Kafka's DeleteRecords); returns the log start afterwards.
    pub async fn delete_records(&self, topic: &str, partition: i32, before: i64) -> Result<i64> {
        let handle = self.topic(topic).await?;
        let partition = Self::check_partition(&handle, partition)?;
        let key = (topic.to_string(), partition);
        let state = self
            .inner
            .metastore
            .partition_state(topic, partition)
            .await?;
        let before = if before == -1 {
            state.high_watermark
        } else {
            before
        };
        if !(0..=state.high_watermark).contains(&before) {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset: before,
                log_start_offset: state.log_start_offset,
                high_watermark: state.high_watermark,
            });
        }
        let start = self
            .inner
            .metastore
            .advance_log_start(topic, partition, before)
            .await?;
        // Readers here see it at once; other agents within their log-start check.
        self.inner.partition_log(&key).move_log_start(start);
        tracing::info!(topic, partition, log_start = start, "deleted records");
        Ok(start)
    }

    /// The agent's clock, ms since the Unix epoch.
    pub fn clock_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// A new producer id for an idempotent producer (epoch 0), from a block of
    /// [`PRODUCER_ID_BLOCK`] taken from the metastore: one metastore transaction per
    /// block, not per producer.
    pub async fn init_producer_id(&self) -> Result<i64> {
        let mut ids = self.inner.producer_ids.lock().await;
        if ids.is_empty() {
            let first = self
                .inner
                .metastore
                .allocate_producer_ids(PRODUCER_ID_BLOCK)
                .await?;
            *ids = first..first.saturating_add(PRODUCER_ID_BLOCK as i64);
            tracing::info!(
                first,
                count = PRODUCER_ID_BLOCK,
                "took a block of producer ids"
            );
        }
        Ok(ids.next().expect("a block is not empty"))
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.inner.metastore.delete_topic(name).await?;
        self.inner.forget_topic_state(name);
        self.inner.cluster.wake();
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Appends records to a topic and returns each record's (partition, offset), in order.
    /// With `wait_for_commit` (acks=ALL) it returns only once they are committed.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: Vec<NewRecord>,
        wait_for_commit: bool,
    ) -> Result<Vec<(u32, i64)>> {
        self.append(topic, "", partition, None, records, wait_for_commit)
            .await?
            .committed()
            .await
    }

    /// The first half of [`Agent::produce`]: validates the records and assigns their
    /// offsets. Appends made one after another get increasing offsets in each partition,
    /// whatever order their commits are awaited in.
    #[tracing::instrument(name = "agent.produce", skip_all, fields(topic = %topic, records = records.len()))]
    pub async fn append(
        &self,
        topic: &str,
        topic_id: &str,
        partition: Option<i32>,
        batch: Option<ProducerBatch>,
        records: Vec<NewRecord>,
        wait_for_commit: bool,
    ) -> Result<Appended> {
        let (producer, transactional_id) = match batch {
            Some(batch) => (Some(batch.fields), batch.transactional_id),
            None => (None, None),
        };
        let limits = &self.inner.config.limits;
        if let Some(fields) = producer {
            crate::producer::check_fields(fields)?;
            if partition.is_none() {
                return Err(Error::InvalidArgument(
                    "a batch of an idempotent producer names its partition".to_string(),
                ));
            }
        }
        if records.len() > limits.max_request_records {
            return Err(over(
                format!(
                    "the request holds {} records, over the limit of {} per request",
                    records.len(),
                    limits.max_request_records
                ),
                "max_request_records",
            ));
        }
        let handle = self.resolve_topic(topic, topic_id).await?;
        let explicit = partition
            .map(|p| Self::check_partition(&handle, p))
            .transpose()?;
        if records.is_empty() {
            return Ok(Appended {
                topic_id: handle.meta.topic_id.clone(),
                duplicate: false,
                log_append_time_ms: -1,
                positions: Vec::new(),
                commit: None,
            });
        }
        let partitions = handle.meta.partitions;
        let sticky = self.inner.sticky_partition.fetch_add(1, Ordering::Relaxed) % partitions;
        let now = self.inner.clock.now_ms();
        // Group records by partition, remembering each one's place in the request.
        let mut groups: BTreeMap<u32, (Vec<Record>, Vec<usize>)> = BTreeMap::new();
        let mut request_bytes = 0;
        for (i, r) in records.into_iter().enumerate() {
            let record = Record {
                offset: -1,
                timestamp_ms: handle.settings.record_timestamp(i, r.timestamp_ms, now)?,
                key: r.key,
                value: r.value,
                headers: r.headers,
            };
            request_bytes += record.payload_size();
            if request_bytes > limits.max_request_bytes {
                return Err(over(
                    format!(
                        "the request holds more than {} bytes of keys, values and headers; \
                         send fewer records at a time",
                        limits.max_request_bytes
                    ),
                    "max_request_bytes",
                ));
            }
            self.check_record(&handle, i, &record)?;
            let p = match (explicit, &record.key) {
                (Some(p), _) => p,
                (None, Some(key)) => strata_proto::partition_for_key(key, partitions),
                (None, None) => sticky,
            };
            let group = groups.entry(p).or_default();
            group.0.push(record);
            group.1.push(i);
        }
        let total: usize = groups.values().map(|g| g.1.len()).sum();
        let metrics = &self.inner.metrics;
        metrics.produce_records.inc_by(total as u64);
        metrics.produce_bytes.inc_by(request_bytes as u64);
        let mut places = Vec::with_capacity(groups.len());
        let batches = groups
            .into_iter()
            .map(|(partition, (records, indexes))| {
                places.push((partition, indexes));
                PartitionRecords {
                    partition,
                    payload: Payload::Records(records),
                    compression: handle.settings.compression,
                    producer,
                    transactional_id: transactional_id.clone(),
                }
            })
            .collect();
        let outcome = self
            .inner
            .append(topic, &handle.meta.topic_id, batches, wait_for_commit)
            .await?;
        if outcome.duplicate {
            metrics.produce_duplicates.inc();
        }
        let mut positions = vec![(0u32, 0i64); total];
        for ((partition, indexes), first) in places.into_iter().zip(outcome.first_offsets) {
            for (j, i) in indexes.into_iter().enumerate() {
                positions[i] = (partition, first + j as i64);
            }
        }
        Ok(Appended {
            topic_id: handle.meta.topic_id.clone(),
            duplicate: outcome.duplicate,
            log_append_time_ms: -1,
            positions,
            commit: outcome.commit,
        })
    }

    /// Checks one record against the limits and the topic's configuration.
    fn check_record(&self, handle: &TopicHandle, i: usize, record: &Record) -> Result<()> {
        let limits = &self.inner.config.limits;
        if record.headers.len() > limits.max_headers_per_record {
            return Err(over(
                format!(
                    "record {i} has {} headers, over the limit of {}",
                    record.headers.len(),
                    limits.max_headers_per_record
                ),
                "max_headers_per_record",
            ));
        }
        if let Some((key, _)) = record
            .headers
            .iter()
            .find(|(k, _)| k.len() > limits.max_header_key_bytes)
        {
            return Err(over(
                format!(
                    "record {i} has a header key of {} bytes ('{}'), over the limit of {}",
                    key.len(),
                    crate::limits::shown(key),
                    limits.max_header_key_bytes
                ),
                "max_header_key_bytes",
            ));
        }
        let size = record.payload_size();
        let max = handle.settings.max_message_bytes;
        if size > max {
            return Err(Error::RecordTooLarge(format!(
                "record {i} is {size} bytes (key + value + headers), over the topic's \
                 max.message.bytes of {max}; nothing of this request was written"
            )));
        }
        if handle.settings.compacted && record.key.is_none() {
            return Err(Error::InvalidArgument(format!(
                "record {i} has no key, but topic '{}' is compacted (cleanup.policy={}): give \
                 every record a key; nothing of this request was written",
                handle.meta.name,
                handle
                    .meta
                    .config
                    .get("cleanup.policy")
                    .map_or("compact", |p| p)
            )));
        }
        Ok(())
    }

    /// Appends one record batch as a client sent it (a Kafka client, or the SDK) to a
    /// partition: checked like [`Agent::append`]'s records (limits, the topic's
    /// configuration, the producer's sequence), then stored as sent but for its base offset
    /// (and, on a `LogAppendTime` topic, its timestamp type and max timestamp). An
    /// uncompressed batch for a topic with a `compression.type` is compressed by the agent
    /// instead (as a Kafka broker does). Its one position is its base offset. A non-empty
    /// `topic_id` appends only to that incarnation of the topic.
    #[tracing::instrument(name = "agent.produce_batch", skip_all, fields(topic = %topic, partition))]
    pub async fn append_client_batch(
        &self,
        topic: &str,
        topic_id: &str,
        partition: i32,
        batch: ClientBatch,
        transactional_id: Option<&str>,
        wait_for_commit: bool,
    ) -> Result<Appended> {
        let limits = &self.inner.config.limits;
        let too_large = |e: Error| match e {
            Error::InvalidArgument(message) => Error::RecordTooLarge(message),
            other => other,
        };
        if batch.records.len() > limits.max_request_records {
            return Err(too_large(over(
                format!(
                    "the batch holds {} records, over the limit of {} per request",
                    batch.records.len(),
                    limits.max_request_records
                ),
                "max_request_records",
            )));
        }
        let payload_bytes: usize = batch.records.iter().map(Record::payload_size).sum();
        if payload_bytes.max(batch.bytes.len()) > limits.max_request_bytes {
            return Err(too_large(over(
                format!(
                    "the batch holds {payload_bytes} bytes of keys, values and headers ({} \
                     as sent), over the limit of {} per request",
                    batch.bytes.len(),
                    limits.max_request_bytes
                ),
                "max_request_bytes",
            )));
        }
        let handle = self.resolve_topic(topic, topic_id).await?;
        let partition = Self::check_partition(&handle, partition)?;
        let transactional = batch.kind == BatchKind::Transactional;
        let transactional_id = match (transactional, transactional_id) {
            (true, Some(id)) => Some(id.to_string()),
            (true, None) => {
                return Err(Error::InvalidArgument(
                    "a transactional batch needs the request's transactional id".to_string(),
                ));
            }
            (false, _) => None,
        };
        if transactional && batch.producer.is_none() {
            return Err(Error::InvalidArgument(
                "a transactional batch needs a producer id".to_string(),
            ));
        }
        if let Some(fields) = batch.producer {
            crate::producer::check_fields(fields)?;
        }
        let now = self.inner.clock.now_ms();
        for (i, record) in batch.records.iter().enumerate() {
            if !handle.settings.log_append_time {
                handle
                    .settings
                    .record_timestamp(i, record.timestamp_ms, now)?;
            }
            self.check_record(&handle, i, record)?;
        }
        let count = batch.records.len();
        let compression = handle.settings.compression;
        let payload = if batch.compression == Compression::None && compression != Compression::None
        {
            // The topic wants its batches compressed: the agent encodes them.
            let mut records = batch.records;
            for (i, record) in records.iter_mut().enumerate() {
                record.offset = -1;
                record.timestamp_ms =
                    handle
                        .settings
                        .record_timestamp(i, record.timestamp_ms, now)?;
            }
            Payload::Records(records)
        } else {
            let (bytes, max_timestamp_ms) = if handle.settings.log_append_time {
                (
                    strata_storage::record::with_log_append_time(&batch.bytes, now),
                    now,
                )
            } else {
                let max = batch.max_timestamp_ms();
                (batch.bytes, max)
            };
            Payload::Encoded(EncodedBatch {
                bytes,
                count: count as i64,
                max_timestamp_ms,
            })
        };
        let metrics = &self.inner.metrics;
        metrics.produce_records.inc_by(count as u64);
        metrics.produce_bytes.inc_by(payload_bytes as u64);
        let outcome = self
            .inner
            .append(
                topic,
                &handle.meta.topic_id,
                vec![PartitionRecords {
                    partition,
                    payload,
                    compression,
                    producer: batch.producer,
                    transactional_id,
                }],
                wait_for_commit,
            )
            .await?;
        if outcome.duplicate {
            metrics.produce_duplicates.inc();
        }
        Ok(Appended {
            topic_id: handle.meta.topic_id.clone(),
            duplicate: outcome.duplicate,
            log_append_time_ms: if handle.settings.log_append_time {
                now
            } else {
                -1
            },
            positions: vec![(partition, outcome.first_offsets[0])],
            commit: outcome.commit,
        })
    }

    /// Reads committed records of a partition from `offset`; at the high watermark waits
    /// up to `max_wait` for more.
    pub(crate) async fn fetch(
        &self,
        topic: &str,
        topic_id: &str,
        partition: i32,
        spec: FetchSpec,
    ) -> Result<FetchResult> {
        let (key, topic_id) = self.resolve_partition(topic, topic_id, partition).await?;
        self.inner.fetch(&key, &topic_id, spec).await
    }

    /// A request's partition: its key and the topic incarnation it reads.
    async fn resolve_partition(
        &self,
        topic: &str,
        topic_id: &str,
        partition: i32,
    ) -> Result<(PartitionKey, String)> {
        let handle = self.resolve_topic(topic, topic_id).await?;
        let partition = Self::check_partition(&handle, partition)?;
        Ok(((topic.to_string(), partition), handle.meta.topic_id.clone()))
    }

    /// Checks a batch as a client sent it (a Kafka client, or the SDK's `record_batch`)
    /// with [`strata_storage::record::decode_client_batch`] within
    /// [`Agent::client_batch_limits`]. Decompressing and decoding a large batch is CPU
    /// work: it runs off the async workers, so that it never holds up heartbeats and lease
    /// renewals.
    pub async fn decode_client_batch(
        &self,
        bytes: bytes::Bytes,
    ) -> std::result::Result<ClientBatch, strata_storage::BatchError> {
        let limits = self.client_batch_limits();
        if bytes.len() < DECODE_INLINE_MAX {
            return strata_storage::record::decode_client_batch(bytes, &limits);
        }
        tokio::task::spawn_blocking(move || {
            strata_storage::record::decode_client_batch(bytes, &limits)
        })
        .await
        .unwrap_or_else(|e| {
            Err(strata_storage::BatchError {
                corrupt: false,
                too_large: false,
                reason: format!("decoding failed: {e}"),
            })
        })
    }

    /// What a Kafka client's batch may hold, checked while it is decoded (before anything
    /// is allocated for it): the request limits, with room for the records' framing.
    pub fn client_batch_limits(&self) -> strata_storage::BatchLimits {
        let limits = &self.inner.config.limits;
        strata_storage::BatchLimits {
            max_records: limits.max_request_records,
            max_decompressed_bytes: limits
                .max_request_bytes
                .saturating_mul(2)
                .saturating_add(limits.max_request_records.saturating_mul(64)),
            max_headers_per_record: limits.max_headers_per_record,
        }
    }

    /// Reads committed batches of a partition as stored, from the one holding
    /// `spec.offset` (Kafka's Fetch); at what is readable waits up to `spec.max_wait` for
    /// more.
    pub async fn fetch_batches(
        &self,
        topic: &str,
        topic_id: &str,
        partition: i32,
        spec: FetchSpec,
    ) -> Result<crate::reader::BatchFetch> {
        let (key, topic_id) = self.resolve_partition(topic, topic_id, partition).await?;
        self.inner.fetch_batches(&key, &topic_id, spec).await
    }

    /// Registered agents, the controller, and the topics' partitions (all topics if
    /// `topics` is empty).
    pub async fn metadata(&self, topics: &[String], named_only: bool) -> Result<ClusterMetadata> {
        let metas = if topics.is_empty() && !named_only {
            self.inner.catalog_topics().await?
        } else {
            let max = self.inner.config.limits.max_topics as usize;
            if topics.len() > max {
                return Err(over(
                    format!("the request names {} topics, more than {max}", topics.len()),
                    "max_topics",
                ));
            }
            let mut metas = Vec::with_capacity(topics.len());
            for name in topics {
                match self.inner.catalog_topic(name).await {
                    Ok(meta) => metas.push(meta),
                    // A client routing records asks for what it used: a topic deleted
                    // since, or a name it tried, is left out, not an error.
                    Err(Error::TopicNotFound(_) | Error::InvalidArgument(_)) if named_only => {}
                    Err(e) => return Err(e),
                }
            }
            metas
        };
        // Owners from the assignment this agent follows; offsets are DescribeTopic's. The
        // live agents and the controller are read now (two reads, whatever the partition
        // count): a client must not route to an agent that just left.
        let (agents, controller) = tokio::try_join!(
            self.inner.metastore.list_agents(),
            self.inner.metastore.controller(),
        )?;
        let assignment = self.inner.cluster.assignment();
        let described = metas
            .into_iter()
            .map(|meta| {
                let partitions = (0..meta.partitions)
                    .map(|p| PartitionDescription {
                        partition: p,
                        state: PartitionState {
                            owner: None,
                            log_start_offset: -1,
                            high_watermark: -1,
                            last_stable_offset: -1,
                        },
                        assigned_agent: assignment.agent_of(&meta.name, p).map(str::to_string),
                    })
                    .collect();
                (meta, partitions)
            })
            .collect();
        Ok(ClusterMetadata {
            agents,
            controller: controller.map(|c| crate::cluster::controller_agent_id(&c).to_string()),
            topics: described,
            unreadable: self.inner.metastore.unreadable_records(),
        })
    }

    /// Whether this agent holds the controller role.
    pub fn is_controller(&self) -> bool {
        self.inner.cluster.is_controller()
    }

    /// The address of the live agent `topic`/`partition` is assigned to, unless it is this
    /// one.
    pub fn owner_address(&self, topic: &str, partition: u32) -> Option<String> {
        self.inner
            .cluster
            .owner_address(&(topic.to_string(), partition), &self.inner.config.agent_id)
    }

    /// [`Agent::owner_address`], from the stored assignment when this agent's view does
    /// not have the partition yet (a topic created moments ago).
    pub async fn owner_address_now(&self, topic: &str, partition: u32) -> Option<String> {
        if let Some(address) = self.owner_address(topic, partition) {
            return Some(address);
        }
        let stored = self.inner.metastore.assignment().await.ok()??;
        let owner = stored.agent_of(topic, partition)?;
        if owner == self.inner.config.agent_id {
            return None;
        }
        self.inner
            .cluster
            .agents()
            .iter()
            .find(|a| a.agent_id == owner)
            .map(|a| a.address.clone())
    }
}

/// What a panicked task said.
pub(crate) fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string()),
        Err(e) => e.to_string(),
    }
}
