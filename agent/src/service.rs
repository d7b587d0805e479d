//! The gRPC services of `strata.v1`, server reflection and health, and the one place where
//! agent errors become gRPC status codes ([`status`]).
//!
//! Every service but health sits behind the [`Authenticate`] interceptor; with TLS the
//! listener serves only TLS (see [`crate::security`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use strata_metastore::{CommittedOffset, TopicMeta, TransactionRecord, TransactionStatus};
use strata_proto::health::health_server::HealthServer;
use strata_proto::v1 as pb;
use strata_proto::v1::acls_server::AclsServer;
use strata_proto::v1::admin_server::{Admin, AdminServer};
use strata_proto::v1::cluster_server::{Cluster, ClusterServer};
use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::groups_server::{Groups, GroupsServer};
use strata_proto::v1::log_client::LogClient;
use strata_proto::v1::log_server::{Log, LogServer};
use strata_proto::v1::transactions_client::TransactionsClient;
use strata_proto::v1::transactions_server::{Transactions, TransactionsServer};
use strata_storage::{ProducerFields, Record};
use tokio::net::TcpListener;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::agent::{Appended, NewRecord, PartitionDescription};
use crate::auth::security::{Authenticate, OnBehalfOf, Security, caller_of};
use crate::auth::{Caller, Resource};
use crate::health::AgentHealth;
use crate::transaction::{InitOutcome, TransactionalProducer};
use crate::{Agent, Error, FetchSpec, Isolation, ProducerBatch};

/// How long a failed agent keeps answering (NOT_SERVING health, UNAVAILABLE writes)
/// before it stops serving and exits.
const FAILED_EXIT_DELAY: Duration = Duration::from_secs(2);

/// Largest gRPC message accepted or sent: room for a few max-size records.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// HTTP/2 frames a client may send: larger than h2's 16 KiB default, so that a produce
/// request of megabytes is read in a few frames rather than hundreds.
const HTTP2_MAX_FRAME_BYTES: u32 = 1 << 20;
/// HTTP/2 flow-control windows (per stream and per connection): what a client may send
/// before the agent has read it, so a producer is not held to a round trip per MiB.
const HTTP2_WINDOW_BYTES: u32 = 8 << 20;
/// `max_bytes` of a fetch that does not set it.
const DEFAULT_FETCH_MAX_BYTES: usize = 1 << 20;
/// Longest long-poll a fetch may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Longest status message sent: a status travels in HTTP/2 trailers, which clients
/// bound; a longer message (say, one quoting a huge argument) is cut.
const MAX_STATUS_MESSAGE: usize = 4096;

/// Maps an agent error to the gRPC status clients see.
pub fn status(error: Error) -> Status {
    let message = error.message_within(MAX_STATUS_MESSAGE);
    match error {
        Error::NotAuthorized(_) => Status::permission_denied(message),
        Error::TopicNotFound(_) | Error::PartitionNotFound { .. } => Status::not_found(message),
        Error::TopicExists(_) => Status::already_exists(message),
        Error::TopicChanged { topic, .. } => {
            let mut metadata = MetadataMap::new();
            if let Ok(value) = topic.parse() {
                metadata.insert(strata_proto::TOPIC_CHANGED, value);
            }
            Status::with_metadata(tonic::Code::Aborted, message, metadata)
        }
        Error::InvalidArgument(_) | Error::RecordTooLarge(_) | Error::InvalidTimestamp(_) => {
            Status::invalid_argument(message)
        }
        Error::OffsetOutOfRange {
            log_start_offset,
            high_watermark,
            ..
        } => {
            let mut metadata = MetadataMap::new();
            metadata.insert(
                "strata-log-start-offset",
                log_start_offset.to_string().parse().expect("ascii digits"),
            );
            metadata.insert(
                "strata-high-watermark",
                high_watermark.to_string().parse().expect("ascii digits"),
            );
            Status::with_metadata(tonic::Code::OutOfRange, message, metadata)
        }
        Error::NotOwner { .. } | Error::FailedPrecondition(_) => {
            Status::failed_precondition(message)
        }
        Error::GroupNotFound(_) => Status::not_found(message),
        Error::NotCoordinator { .. } => group_error(message, "not-coordinator"),
        Error::UnknownMember { .. } => group_error(message, "unknown-member"),
        Error::FencedMember { .. } => group_error(message, "fenced-member"),
        Error::NotAssigned { .. } => group_error(message, "not-assigned"),
        Error::GroupNotEmpty { .. } => group_error(message, "group-not-empty"),
        Error::IllegalGeneration { .. } => group_error(message, "illegal-generation"),
        Error::RebalanceInProgress(_) => group_error(message, "rebalance-in-progress"),
        Error::FencedInstance { .. } => group_error(message, "fenced-instance"),
        Error::InconsistentProtocol { .. } => group_error(message, "inconsistent-protocol"),
        Error::OutOfOrderSequence { .. } => producer_error(message, "out-of-order-sequence"),
        Error::ProducerFenced { .. } => producer_error(message, "producer-fenced"),
        Error::NotInTransaction { .. }
        | Error::UnknownTransactionalId(_)
        | Error::TransactionTimedOut { .. } => transaction_error(message, "not-in-transaction"),
        Error::ConcurrentTransactions(_) => {
            let mut metadata = MetadataMap::new();
            metadata.insert(
                TRANSACTION_ERROR,
                "concurrent-transactions".parse().expect("ascii"),
            );
            Status::with_metadata(tonic::Code::Unavailable, message, metadata)
        }
        Error::Overloaded(_) => Status::resource_exhausted(message),
        Error::DataLoss(_) => Status::data_loss(message),
        Error::Unavailable(_) | Error::ObjectGone(_) => Status::unavailable(message),
    }
}

/// Trailer that says which group precondition failed.
pub const GROUP_ERROR: &str = "strata-group-error";

fn group_error(message: String, kind: &'static str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(GROUP_ERROR, kind.parse().expect("ascii"));
    Status::with_metadata(tonic::Code::FailedPrecondition, message, metadata)
}

use strata_proto::TRANSACTION_ERROR;

fn transaction_error(message: String, kind: &'static str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(TRANSACTION_ERROR, kind.parse().expect("ascii"));
    Status::with_metadata(tonic::Code::FailedPrecondition, message, metadata)
}

fn producer_error(message: String, kind: &'static str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(strata_proto::PRODUCER_ERROR, kind.parse().expect("ascii"));
    Status::with_metadata(tonic::Code::FailedPrecondition, message, metadata)
}

/// Serves the agent on `listener` until `shutdown` completes: the Admin, Log, Cluster and
/// Groups services and server reflection, authenticated as `security` says, and the
/// standard health service.
pub async fn serve(
    agent: Agent,
    listener: TcpListener,
    security: &Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    // A failed agent reports NOT_SERVING at once (the health service follows its failure
    // state), and stops serving (the process then exits non-zero) after
    // FAILED_EXIT_DELAY, so that health checks see why.
    let mut failed = agent.failed();
    let failing = async move {
        if failed.wait_for(Option::is_some).await.is_ok() {
            tokio::time::sleep(FAILED_EXIT_DELAY).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    // Streams and long-polls end when shutdown begins, so that the server can drain.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let health = HealthServer::new(AgentHealth::new(agent.failed(), stopping.clone()));
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = failing => {}
        }
        let _ = stop.send(true);
    };
    let authenticate = Authenticate::new(
        security.tokens.clone(),
        agent.config().authorization.super_users.clone(),
        agent.metrics().auth_refused.clone(),
    );
    let service = AgentService {
        agent,
        stopping,
        peers: Arc::default(),
        peer_tls: security.tls.as_ref().map(|tls| tls.peer_config()),
        own_authorization: security
            .tokens
            .as_ref()
            .and_then(|t| t.agent_authorization()),
    };
    service
        .agent
        .set_transaction_router(Arc::new(service.clone()));
    tokio::spawn(service.clone().run_transaction_sweeper());
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(service.agent.config().limits.max_streams_per_connection)
        .max_frame_size(Some(HTTP2_MAX_FRAME_BYTES))
        .initial_stream_window_size(Some(HTTP2_WINDOW_BYTES))
        .initial_connection_window_size(Some(HTTP2_WINDOW_BYTES));
    if let Some(tls) = &security.tls {
        server = server.tls_config(tls.server_config())?;
    }
    server
        .add_service(health)
        .add_service(InterceptedService::new(reflection, authenticate.clone()))
        .add_service(InterceptedService::new(
            AdminServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            LogServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            GroupsServer::new(service.clone()),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            TransactionsServer::new(service.clone()),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            AclsServer::new(crate::auth::grpc::AclService::new(service.agent)),
            authenticate,
        ))
        // TCP_NODELAY on every accepted connection (tonic sets it only on listeners it
        // binds itself): without it a small answer (an acknowledgement, a tail fetch's
        // records) waits for the client's delayed ACK, 40 ms on Linux.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// The gRPC face of an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentService {
    agent: Agent,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Channels to other agents, by address, for forwarded produce requests.
    peers: Arc<Mutex<HashMap<String, Channel>>>,
    /// TLS to other agents, when this agent serves TLS.
    peer_tls: Option<ClientTlsConfig>,
    /// What this agent presents to other agents for its own calls (markers).
    own_authorization: Option<AsciiMetadataValue>,
}

/// Marks a request forwarded by another agent; it is never forwarded again.
const FORWARDED: &str = "strata-forwarded";

/// `message` as a request forwarded on behalf of `caller`; `own` is what this agent
/// presents for itself.
fn forwarded<T>(message: T, caller: &OnBehalfOf, own: Option<&AsciiMetadataValue>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, "1".parse().expect("ascii"));
    caller.apply(request.metadata_mut(), own);
    request
}

/// `message` as this agent's own call to another agent (a super user there).
fn agent_call<T>(message: T, own: Option<&AsciiMetadataValue>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, "1".parse().expect("ascii"));
    if let Some(own) = own {
        request
            .metadata_mut()
            .insert(crate::auth::security::AUTHORIZATION, own.clone());
    }
    request
}

fn topic_info(meta: &TopicMeta) -> pb::TopicInfo {
    pb::TopicInfo {
        name: meta.name.clone(),
        topic_id: meta.topic_id.clone(),
        overridden: crate::topic::overridden(&meta.config),
        partitions: meta.partitions as i32,
        config: meta.config.clone().into_iter().collect(),
        created_at_ms: meta.created_at_ms,
    }
}

fn partition_info(p: &PartitionDescription) -> pb::PartitionInfo {
    let owner = p.state.owner.as_ref();
    pb::PartitionInfo {
        partition: p.partition as i32,
        log_start_offset: p.state.log_start_offset,
        high_watermark: p.state.high_watermark,
        last_stable_offset: p.state.last_stable_offset,
        owner_agent_id: p
            .assigned_agent
            .clone()
            .or_else(|| owner.map(|o| o.agent_id.clone()))
            .unwrap_or_default(),
        owner_epoch: owner.map_or(0, |o| o.epoch),
        stored_bytes: None,
    }
}

fn stored_record(r: Record) -> pb::StoredRecord {
    pb::StoredRecord {
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|(key, value)| pb::Header { key, value })
            .collect(),
    }
}

/// A fetch's `max_bytes`: the default when unset, capped at `limit` (Kafka's broker caps
/// `fetch.max.bytes` the same way rather than refusing it).
fn fetch_max_bytes(max_bytes: i32, limit: usize) -> usize {
    if max_bytes <= 0 {
        DEFAULT_FETCH_MAX_BYTES.min(limit)
    } else {
        (max_bytes as usize).min(limit)
    }
}

/// Responses of a produce session ready to be sent but not yet read by the client.
const SESSION_RESPONSES: usize = 64;

/// A produce session's answer to request `sequence`.
fn session_response(
    sequence: u64,
    result: Result<pb::ProduceResponse, Status>,
) -> pb::ProduceSessionResponse {
    match result {
        Ok(response) => pb::ProduceSessionResponse {
            sequence,
            response: Some(response),
            ..Default::default()
        },
        Err(status) => pb::ProduceSessionResponse {
            sequence,
            error_code: status.code() as i32,
            error_message: status.message().to_string(),
            error_trailers: status
                .metadata()
                .iter()
                .filter_map(|entry| match entry {
                    tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                        Some((key.to_string(), value.to_str().ok()?.to_string()))
                    }
                    tonic::metadata::KeyAndValueRef::Binary(..) => None,
                })
                .collect(),
            ..Default::default()
        },
    }
}

/// The answer to an appended request, once it is committed.
async fn committed_response(appended: Appended) -> Result<pb::ProduceResponse, Status> {
    let topic_id = appended.topic_id.clone();
    let duplicate = appended.duplicate;
    let positions = appended.committed().await.map_err(status)?;
    Ok(pb::ProduceResponse {
        topic_id,
        duplicate,
        positions: positions
            .into_iter()
            .map(|(partition, offset)| pb::RecordPosition {
                partition: partition as i32,
                offset,
            })
            .collect(),
    })
}

impl AgentService {
    /// Validates a produce request and assigns its records' offsets.
    async fn append(&self, r: pb::ProduceRequest) -> Result<Appended, Status> {
        self.append_records(r).await.map_err(status)
    }

    /// A request whose records come as one encoded batch (`record_batch`): checked and
    /// stored as sent ([`Agent::append_client_batch`]), one position per record.
    async fn append_record_batch(
        &self,
        r: pb::ProduceRequest,
        wait: bool,
    ) -> Result<Appended, Error> {
        let refuse = |reason: String| Err(Error::InvalidArgument(reason));
        if !r.records.is_empty() {
            return refuse(
                "a produce request carries `records` or `record_batch`, not both".to_string(),
            );
        }
        let Some(partition) = r.partition else {
            return refuse("a request with a `record_batch` names its partition".to_string());
        };
        let batch = match self.agent.decode_client_batch(r.record_batch).await {
            Ok(batch) => batch,
            Err(e) if e.too_large => return Err(Error::RecordTooLarge(e.reason)),
            Err(e) => return refuse(format!("the record batch is refused: {}", e.reason)),
        };
        let transactional_id = match r.producer {
            Some(p) => {
                let agrees = batch.producer.is_some_and(|fields| {
                    fields.producer_id == p.producer_id
                        && i32::from(fields.producer_epoch) == p.producer_epoch
                        && fields.base_sequence == p.base_sequence
                });
                if !agrees {
                    return refuse(format!(
                        "`producer` (id {}, epoch {}, base sequence {}) does not agree with                          the record batch's header ({:?})",
                        p.producer_id, p.producer_epoch, p.base_sequence, batch.producer
                    ));
                }
                (!p.transactional_id.is_empty()).then_some(p.transactional_id)
            }
            None => None,
        };
        let count = batch.records.len() as i64;
        let mut appended = self
            .agent
            .append_client_batch(
                &r.topic,
                &r.topic_id,
                partition,
                batch,
                transactional_id.as_deref(),
                wait,
            )
            .await?;
        appended.spread_positions(count);
        self.agent.metrics().produce_requests.inc();
        Ok(appended)
    }

    /// [`AgentService::append`], with the agent's error.
    async fn append_records(&self, r: pb::ProduceRequest) -> Result<Appended, Error> {
        let wait = r.acks() != pb::Acks::None;
        if !r.record_batch.is_empty() {
            return self.append_record_batch(r, wait).await;
        }
        let records: Vec<NewRecord> = r
            .records
            .into_iter()
            .map(|record| NewRecord {
                key: record.key,
                value: record.value,
                timestamp_ms: record.timestamp_ms,
                headers: record
                    .headers
                    .into_iter()
                    .map(|h| (h.key, h.value))
                    .collect(),
            })
            .collect();
        let producer = r
            .producer
            .map(|p| {
                let producer_epoch = i16::try_from(p.producer_epoch).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "producer epoch {} is out of range (0 to {})",
                        p.producer_epoch,
                        i16::MAX
                    ))
                })?;
                Ok::<_, Error>((
                    ProducerFields {
                        producer_id: p.producer_id,
                        producer_epoch,
                        base_sequence: p.base_sequence,
                    },
                    (!p.transactional_id.is_empty()).then_some(p.transactional_id),
                ))
            })
            .transpose()?;
        let batch = producer.map(|(fields, transactional_id)| ProducerBatch {
            fields,
            transactional_id,
        });
        let appended = self
            .agent
            .append(&r.topic, &r.topic_id, r.partition, batch, records, wait)
            .await?;
        self.agent.metrics().produce_requests.inc();
        Ok(appended)
    }

    /// A channel to another agent, cached by address.
    fn peer(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.peers.lock().expect("peers lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let invalid = |e: tonic::transport::Error| {
            Status::unavailable(format!("agent address '{address}' is invalid: {e}"))
        };
        let scheme = if self.peer_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(invalid)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .initial_stream_window_size(HTTP2_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_WINDOW_BYTES);
        if let Some(tls) = &self.peer_tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(invalid)?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Sends a produce request this agent cannot serve to the agent that owns its
    /// partition, with the caller's `authorization`, marked so that it is not forwarded
    /// again.
    async fn forward(
        &self,
        address: &str,
        request: pb::ProduceRequest,
        caller: &OnBehalfOf,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let channel = self.peer(address)?;
        self.agent.metrics().produce_forwarded.inc();
        LogClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .produce(forwarded(request, caller, self.own_authorization.as_ref()))
            .await
    }

    /// Refuses `request` (PERMISSION_DENIED; nothing was done) unless its caller may call
    /// `api` on each of `resources`; returns the caller.
    fn authorize<'a, T>(
        &self,
        request: &Request<T>,
        api: &str,
        resources: impl IntoIterator<Item = Resource<'a>>,
    ) -> Result<Caller, Status> {
        let caller = caller_of(request);
        for resource in resources {
            self.agent
                .authorize(&caller, api, resource)
                .map_err(status)?;
        }
        Ok(caller)
    }

    /// Runs a group operation here, or — if this agent does not coordinate the group and
    /// the request was not forwarded already — once on the coordinator.
    async fn coordinated<Req, Resp, Fut>(
        &self,
        request: Request<Req>,
        group_id: impl Fn(&Req) -> String,
        local: impl AsyncFnOnce(Req) -> crate::Result<Resp>,
        remote: impl FnOnce(Channel, Request<Req>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let was_forwarded = request.metadata().contains_key(FORWARDED);
        let caller = OnBehalfOf::caller(&request);
        let request = request.into_inner();
        let group = group_id(&request);
        match local(request.clone()).await {
            Ok(response) => Ok(Response::new(response)),
            Err(Error::NotCoordinator { .. })
                if !was_forwarded && let Some(address) = self.agent.coordinator_address(&group) =>
            {
                let request = forwarded(request, &caller, self.own_authorization.as_ref());
                remote(self.peer(&address)?, request).await
            }
            Err(e) => Err(status(e)),
        }
    }

    /// Answers a fetch (`r.max_wait_ms` aside: `max_wait` is the long-poll, already
    /// bounded).
    async fn fetch_response(
        &self,
        r: &pb::FetchRequest,
        max_wait: Duration,
    ) -> Result<pb::FetchResponse, Status> {
        let metrics = self.agent.metrics();
        let timer = metrics.fetch_latency.start_timer();
        let mut stopping = self.stopping.clone();
        let fetch = self.agent.fetch(
            &r.topic,
            &r.topic_id,
            r.partition,
            FetchSpec {
                offset: r.offset,
                max_bytes: fetch_max_bytes(r.max_bytes, self.agent.config().limits.max_fetch_bytes),
                max_wait,
                isolation: match r.isolation_level() {
                    pb::IsolationLevel::ReadUncommitted => Isolation::ReadUncommitted,
                    pb::IsolationLevel::ReadCommitted => Isolation::ReadCommitted,
                },
            },
        );
        let result = tokio::select! {
            result = fetch => result.map_err(status)?,
            _ = stopping.wait_for(|stop| *stop) => {
                return Err(Status::unavailable("agent is shutting down; retry on another agent"));
            }
        };
        metrics.fetch_requests.inc();
        metrics.fetch_records.inc_by(result.records.len() as u64);
        let bytes: usize = result.records.iter().map(Record::payload_size).sum();
        metrics.fetch_bytes.inc_by(bytes as u64);
        metrics
            .fetch_zone_bytes
            .with_label_values(&["grpc", self.agent.client_zone(&r.zone)])
            .inc_by(bytes as u64);
        timer.observe_duration();
        Ok(pb::FetchResponse {
            topic: r.topic.clone(),
            partition: r.partition,
            records: result.records.into_iter().map(stored_record).collect(),
            high_watermark: result.committed.high_watermark,
            log_start_offset: result.committed.log_start_offset,
            next_offset: result.next_offset,
            topic_id: result.topic_id,
            last_stable_offset: result.committed.last_stable_offset,
        })
    }
}

#[tonic::async_trait]
impl Admin for AgentService {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        // CREATE on the cluster, or else on the topic.
        let api = "Admin.CreateTopic";
        if self
            .authorize(&request, api, [Resource::cluster()])
            .is_err()
        {
            self.authorize(&request, api, [Resource::topic(&request.get_ref().name)])?;
        }
        let r = request.into_inner();
        let config = r.config.into_iter().collect();
        let meta = self
            .agent
            .create_topic(&r.name, r.partitions, &config)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(topic_info(&meta)),
        }))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let caller = caller_of(&request);
        let topics = self.agent.list_topics().await.map_err(status)?;
        let authorizer = self.agent.authorizer();
        Ok(Response::new(pb::ListTopicsResponse {
            topics: topics
                .iter()
                .filter(|t| {
                    authorizer.permits(&caller, "Admin.ListTopics", Resource::topic(&t.name))
                })
                .map(topic_info)
                .collect(),
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.authorize(
            &request,
            "Admin.DescribeTopic",
            [Resource::topic(&request.get_ref().name)],
        )?;
        let r = request.into_inner();
        let (meta, partitions) = self.agent.describe_topic(&r.name).await.map_err(status)?;
        let mut partitions: Vec<pb::PartitionInfo> =
            partitions.iter().map(partition_info).collect();
        if r.include_stored_bytes {
            let bytes = self.agent.stored_bytes(&meta).await.map_err(status)?;
            for (p, bytes) in partitions.iter_mut().zip(bytes) {
                p.stored_bytes = Some(bytes);
            }
        }
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(topic_info(&meta)),
            partitions,
        }))
    }

    async fn describe_archive(
        &self,
        request: Request<pb::DescribeArchiveRequest>,
    ) -> Result<Response<pb::DescribeArchiveResponse>, Status> {
        self.authorize(
            &request,
            "Admin.DescribeArchive",
            [Resource::topic(&request.get_ref().topic)],
        )?;
        let topic = request.into_inner().topic;
        let archive = self.agent.describe_archive(&topic).await.map_err(status)?;
        let partitions = archive
            .partitions
            .iter()
            .map(|(p, a)| pb::PartitionArchive {
                partition: p.partition as i32,
                start_offset: a.start_offset,
                archived_to: a.archived_to,
                log_start_offset: p.state.log_start_offset,
                high_watermark: p.state.high_watermark,
                files: a.files,
                records: a.records,
                bytes: a.bytes,
                archived_at_ms: a.archived_at_ms,
                pending_file: a
                    .pending
                    .map(|r| {
                        strata_storage::archive::file_name(&topic, p.partition, r.first, r.last)
                    })
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::DescribeArchiveResponse {
            topic,
            enabled: archive.enabled,
            location: archive.location,
            partitions,
        }))
    }

    async fn add_partitions(
        &self,
        request: Request<pb::AddPartitionsRequest>,
    ) -> Result<Response<pb::AddPartitionsResponse>, Status> {
        self.authorize(
            &request,
            "Admin.AddPartitions",
            [Resource::topic(&request.get_ref().name)],
        )?;
        let r = request.into_inner();
        let meta = self
            .agent
            .add_partitions(&r.name, r.to)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AddPartitionsResponse {
            topic: Some(topic_info(&meta)),
        }))
    }

    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        self.authorize(
            &request,
            "Admin.AlterTopicConfig",
            [Resource::topic(&request.get_ref().name)],
        )?;
        let r = request.into_inner();
        let set = r.set.into_iter().collect();
        let meta = self
            .agent
            .alter_topic_config(&r.name, &set, &r.delete)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AlterTopicConfigResponse {
            topic: Some(topic_info(&meta)),
        }))
    }

    async fn delete_records(
        &self,
        request: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        self.authorize(
            &request,
            "Admin.DeleteRecords",
            [Resource::topic(&request.get_ref().topic)],
        )?;
        let r = request.into_inner();
        let log_start_offset = self
            .agent
            .delete_records(&r.topic, r.partition, r.before_offset)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteRecordsResponse {
            log_start_offset,
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.authorize(
            &request,
            "Admin.DeleteTopic",
            [Resource::topic(&request.get_ref().name)],
        )?;
        let name = request.into_inner().name;
        self.agent.delete_topic(&name).await.map_err(status)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Log for AgentService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        self.authorize(
            &request,
            "Log.Produce",
            [Resource::topic(&request.get_ref().topic)],
        )?;
        let timer = self.agent.metrics().produce_latency.start_timer();
        let forwarded = request.metadata().contains_key(FORWARDED);
        let caller = OnBehalfOf::caller(&request);
        let request = request.into_inner();
        let appended = match self.append_records(request.clone()).await {
            Ok(appended) => appended,
            // Not this agent's partition: forward once to its owner.
            Err(Error::NotOwner {
                topic,
                partition,
                reason,
            }) if !forwarded => {
                return match self.agent.owner_address_now(&topic, partition).await {
                    Some(owner) => self.forward(&owner, request, &caller).await,
                    None => Err(status(Error::NotOwner {
                        topic,
                        partition,
                        reason,
                    })),
                };
            }
            Err(e) => return Err(status(e)),
        };
        let response = committed_response(appended).await?;
        timer.observe_duration();
        Ok(Response::new(response))
    }

    type ProduceSessionStream =
        Pin<Box<dyn Stream<Item = Result<pb::ProduceSessionResponse, Status>> + Send>>;

    async fn produce_session(
        &self,
        request: Request<Streaming<pb::ProduceSessionRequest>>,
    ) -> Result<Response<Self::ProduceSessionStream>, Status> {
        let caller = caller_of(&request);
        let mut inbound = request.into_inner();
        let max_inflight = self.agent.config().limits.max_session_inflight;
        let (tx, rx) = tokio::sync::mpsc::channel(SESSION_RESPONSES);
        let service = self.clone();
        tokio::spawn(async move {
            // Appends happen here, one request after the other: that is the session's
            // ordering guarantee. Commits are awaited concurrently, at most
            // `max_session_inflight` of them; while that many wait, or while the client
            // does not read its responses, the stream is not read (HTTP/2 flow control
            // then holds the client back). The session ends when the client closes it
            // (once every request is answered) or the agent starts shutting down.
            let mut stopping = service.stopping.clone();
            let stop = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            tokio::pin!(stop);
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut reading = true;
            while reading || !inflight.is_empty() {
                tokio::select! {
                    message = inbound.message(), if reading && inflight.len() < max_inflight => {
                        let Ok(Some(message)) = message else {
                            reading = false;
                            continue;
                        };
                        let sequence = message.sequence;
                        let timer = service.agent.metrics().produce_latency.start_timer();
                        let appended = match message.request {
                            Some(request) => match service.agent.authorize(
                                &caller,
                                "Log.ProduceSession",
                                Resource::topic(&request.topic),
                            ) {
                                Ok(()) => service.append(request).await,
                                Err(e) => Err(status(e)),
                            },
                            None => Err(Status::invalid_argument(
                                "a session request needs a request",
                            )),
                        };
                        inflight.push(async move {
                            let result = match appended {
                                Ok(appended) => committed_response(appended).await,
                                Err(status) => Err(status),
                            };
                            timer.observe_duration();
                            session_response(sequence, result)
                        });
                    }
                    Some(response) = inflight.next(), if !inflight.is_empty() => {
                        if tx.send(Ok(response)).await.is_err() {
                            break;
                        }
                    }
                    () = &mut stop => break,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        self.authorize(
            &request,
            "Log.Fetch",
            [Resource::topic(&request.get_ref().topic)],
        )?;
        let r = request.into_inner();
        let max_wait = Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let response = self.fetch_response(&r, max_wait).await?;
        Ok(Response::new(response))
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        // IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (as Kafka since 2.8).
        let caller = caller_of(&request);
        if !self.agent.authorizer().permits_on_any(
            &caller,
            strata_metastore::AclOperation::Write,
            strata_metastore::ResourceType::Topic,
        ) {
            self.authorize(&request, "Log.InitProducerId", [Resource::cluster()])?;
        }
        let producer_id = self.agent.init_producer_id().await.map_err(status)?;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        use crate::reader::OffsetSpec;
        use pb::list_offsets_request::Spec;
        self.authorize(
            &request,
            "Log.ListOffsets",
            [Resource::topic(&request.get_ref().topic)],
        )?;
        let r = request.into_inner();
        let spec = match r.spec {
            Some(Spec::Earliest(_)) => OffsetSpec::Earliest,
            Some(Spec::Latest(_)) => OffsetSpec::Latest,
            Some(Spec::TimestampMs(t)) => OffsetSpec::Timestamp(t),
            Some(Spec::MaxTimestamp(_)) => OffsetSpec::MaxTimestamp,
            None => {
                return Err(Status::invalid_argument(
                    "say which offset: earliest, latest, timestamp_ms or max_timestamp",
                ));
            }
        };
        let offsets = self
            .agent
            .list_offsets(&r.topic, &r.partitions, spec)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(partition, offset, timestamp_ms)| pb::PartitionOffsetAt {
                    partition: partition as i32,
                    offset,
                    timestamp_ms,
                })
                .collect(),
        }))
    }

    type SubscribeStream = FetchStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.authorize(
            &request,
            "Log.Subscribe",
            [Resource::topic(&request.get_ref().topic)],
        )?;
        let r = request.into_inner();
        // Check the request once up front so that a bad one fails the call itself.
        let mut fetch = pb::FetchRequest {
            isolation_level: r.isolation_level,
            topic: r.topic,
            topic_id: r.topic_id,
            partition: r.partition,
            offset: r.offset,
            max_bytes: r.max_bytes,
            max_wait_ms: 0,
            zone: String::new(),
        };
        let first = self.fetch_response(&fetch, Duration::ZERO).await?;
        let service = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut next = first.next_offset;
            if !first.records.is_empty() && tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                fetch.offset = next;
                let response = service.fetch_response(&fetch, MAX_WAIT).await;
                let stop = response.is_err();
                if let Ok(response) = &response {
                    next = response.next_offset;
                    if response.records.is_empty() {
                        if tx.is_closed() {
                            return;
                        }
                        continue;
                    }
                }
                if tx.send(response).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[tonic::async_trait]
impl Cluster for AgentService {
    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        // Topics named must be described; of all topics, the others are left out.
        let caller = self.authorize(
            &request,
            "Cluster.Metadata",
            request.get_ref().topics.iter().map(|t| Resource::topic(t)),
        )?;
        let request = request.into_inner();
        let mut metadata = self
            .agent
            .metadata(&request.topics, request.named_only)
            .await
            .map_err(status)?;
        let authorizer = self.agent.authorizer();
        metadata.topics.retain(|(meta, _)| {
            authorizer.permits(&caller, "Cluster.Metadata", Resource::topic(&meta.name))
        });
        Ok(Response::new(pb::MetadataResponse {
            agents: metadata
                .agents
                .into_iter()
                .map(|a| pb::AgentInfo {
                    agent_id: a.agent_id,
                    address: a.address,
                    zone: a.zone,
                })
                .collect(),
            controller_agent_id: metadata.controller.unwrap_or_default(),
            unreadable: metadata
                .unreadable
                .into_iter()
                .map(|(key, reason)| pb::UnreadableRecord { key, reason })
                .collect(),
            topics: metadata
                .topics
                .iter()
                .map(|(meta, partitions)| pb::TopicMetadata {
                    name: meta.name.clone(),
                    topic_id: meta.topic_id.clone(),
                    partitions: partitions.iter().map(partition_info).collect(),
                })
                .collect(),
        }))
    }

    async fn agent_stats(
        &self,
        request: Request<pb::AgentStatsRequest>,
    ) -> Result<Response<pb::AgentStatsResponse>, Status> {
        self.authorize(&request, "Cluster.AgentStats", [Resource::cluster()])?;
        let m = self.agent.metrics();
        let cache = |result: &str| m.cache_lookups.with_label_values(&[result]).get();
        Ok(Response::new(pb::AgentStatsResponse {
            agent_id: self.agent.config().agent_id.clone(),
            segment_puts: m.segment_puts.get(),
            object_gets: m.object_gets.get(),
            metastore_commits: m.metastore_commits.get(),
            flushes: m.flushes.get(),
            partition_blocks: m.partition_blocks.get(),
            records_committed: m.records_committed.get(),
            segment_bytes: m.segment_bytes.get(),
            cache_hits: cache("memory") + cache("disk"),
            cache_misses: cache("miss"),
            object_get_bytes: m.object_get_bytes.get(),
            metastore_bytes: m.metastore_bytes.get(),
            produce_bytes: m.produce_bytes.get(),
            fetch_bytes: m.fetch_bytes.get(),
        }))
    }

    async fn describe_compactors(
        &self,
        request: Request<pb::DescribeCompactorsRequest>,
    ) -> Result<Response<pb::DescribeCompactorsResponse>, Status> {
        self.authorize(
            &request,
            "Cluster.DescribeCompactors",
            [Resource::cluster()],
        )?;
        let (compactors, jobs) = self.agent.describe_compactors().await.map_err(status)?;
        Ok(Response::new(pb::DescribeCompactorsResponse {
            compactors: compactors
                .into_iter()
                .map(|c| pb::CompactorInfo {
                    compactor_id: c.compactor_id,
                    started_ms: c.started_ms,
                    passes: c.passes,
                    last_pass_ended_ms: c.last_pass_ended_ms,
                    last_pass_duration_ms: c.last_pass_duration_ms,
                    jobs_done: c.jobs_done,
                    jobs_failed: c.jobs_failed,
                    expired_entries: c.expired_entries,
                    merged_entries: c.merged_entries,
                    compacted_records: c.compacted_records,
                    objects_written: c.objects_written,
                    orphans_deleted: c.orphans_deleted,
                    archived_files: c.archived_files,
                    archived_records: c.archived_records,
                    last_errors: c
                        .last_errors
                        .into_iter()
                        .map(|(at_ms, message)| pb::CompactorError { at_ms, message })
                        .collect(),
                })
                .collect(),
            jobs: jobs
                .into_iter()
                .map(|(job, compactor_id)| pb::CompactionJob { job, compactor_id })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl Groups for AgentService {
    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        self.authorize(
            &request,
            "Groups.FindCoordinator",
            [Resource::group(&request.get_ref().group_id)],
        )?;
        let group_id = request.into_inner().group_id;
        let coordinator = self.agent.find_coordinator(&group_id).map_err(status)?;
        Ok(Response::new(coordinator))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.get_ref();
        self.authorize(&request, "Groups.Heartbeat", [Resource::group(&r.group_id)])?;
        self.authorize(
            &request,
            "Groups.Heartbeat",
            r.topics.iter().map(|t| Resource::topic(t)),
        )?;
        self.coordinated(
            request,
            |r| r.group_id.clone(),
            async |r| self.agent.group_heartbeat(r).await,
            |channel, r| async move { GroupsClient::new(channel).heartbeat(r).await },
        )
        .await
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let r = request.get_ref();
        self.authorize(
            &request,
            "Groups.CommitOffsets",
            [Resource::group(&r.group_id)],
        )?;
        self.authorize(
            &request,
            "Groups.CommitOffsets",
            r.offsets.iter().map(|o| Resource::topic(&o.topic)),
        )?;
        self.coordinated(
            request,
            |r| r.group_id.clone(),
            async |r| {
                self.agent.commit_offsets(r).await?;
                Ok(pb::CommitOffsetsResponse {})
            },
            |channel, r| async move { GroupsClient::new(channel).commit_offsets(r).await },
        )
        .await
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        let r = request.get_ref();
        self.authorize(
            &request,
            "Groups.FetchOffsets",
            [Resource::group(&r.group_id)],
        )?;
        // Topics named must be described; of all topics, the others are left out.
        let caller = self.authorize(
            &request,
            "Groups.FetchOffsets",
            r.topics.iter().map(|t| Resource::topic(t)),
        )?;
        let mut offsets = self
            .agent
            .fetch_offsets(request.into_inner())
            .await
            .map_err(status)?;
        let authorizer = self.agent.authorizer();
        offsets.offsets.retain(|o| {
            authorizer.permits(&caller, "Groups.FetchOffsets", Resource::topic(&o.topic))
        });
        Ok(Response::new(offsets))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let caller = caller_of(&request);
        let mut groups = self.agent.list_groups().await.map_err(status)?;
        let authorizer = self.agent.authorizer();
        groups.groups.retain(|g| {
            authorizer.permits(&caller, "Groups.ListGroups", Resource::group(&g.group_id))
        });
        Ok(Response::new(groups))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        self.authorize(
            &request,
            "Groups.DescribeGroup",
            [Resource::group(&request.get_ref().group_id)],
        )?;
        let group_id = request.into_inner().group_id;
        let described = self.agent.describe_group(&group_id).await.map_err(status)?;
        Ok(Response::new(described))
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        let r = request.get_ref();
        self.authorize(
            &request,
            "Groups.ResetOffsets",
            [Resource::group(&r.group_id)],
        )?;
        self.authorize(&request, "Groups.ResetOffsets", [Resource::topic(&r.topic)])?;
        self.coordinated(
            request,
            |r| r.group_id.clone(),
            async |r| self.agent.reset_offsets(r).await,
            |channel, r| async move { GroupsClient::new(channel).reset_offsets(r).await },
        )
        .await
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.authorize(
            &request,
            "Groups.DeleteGroup",
            [Resource::group(&request.get_ref().group_id)],
        )?;
        self.coordinated(
            request,
            |r| r.group_id.clone(),
            async |r| {
                self.agent.delete_group(&r.group_id).await?;
                Ok(pb::DeleteGroupResponse {})
            },
            |channel, r| async move { GroupsClient::new(channel).delete_group(r).await },
        )
        .await
    }
}

/// The agent's `GET /metrics` (Prometheus text format), to serve on its HTTP port.
pub fn metrics_router(agent: Agent) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let agent = agent.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    agent.metrics().render(),
                )
            }
        }),
    )
}

/// How often the coordinator looks for transactions to finish or to time out.
const TRANSACTION_SWEEP: Duration = Duration::from_secs(1);
/// How long the coordinator keeps trying to write one marker before it leaves the
/// transaction to the next sweep.
const MARKER_PATIENCE: Duration = Duration::from_secs(30);

fn transactional_producer(
    producer: Option<pb::TransactionalProducer>,
) -> crate::Result<TransactionalProducer> {
    let p = producer.ok_or_else(|| {
        Error::InvalidArgument("the request names no transactional producer".to_string())
    })?;
    Ok(TransactionalProducer {
        epoch: i16::try_from(p.producer_epoch).map_err(|_| {
            Error::InvalidArgument(format!(
                "producer epoch {} is out of range (0 to {})",
                p.producer_epoch,
                i16::MAX
            ))
        })?,
        transactional_id: p.transactional_id,
        producer_id: p.producer_id,
    })
}

fn transactional_id_of(producer: &Option<pb::TransactionalProducer>) -> String {
    producer
        .as_ref()
        .map(|p| p.transactional_id.clone())
        .unwrap_or_default()
}

fn transaction_info(record: &TransactionRecord, coordinator: String) -> pb::TransactionInfo {
    pb::TransactionInfo {
        transactional_id: record.transactional_id.clone(),
        producer_id: record.producer_id,
        producer_epoch: i32::from(record.epoch),
        state: record.status.name().to_string(),
        timeout_ms: record.timeout_ms as i64,
        started_ms: record.started_ms,
        partitions: record
            .partitions
            .iter()
            .map(|(topic, t)| pb::TopicPartitions {
                topic: topic.clone(),
                partitions: t.partitions.iter().map(|p| *p as i32).collect(),
            })
            .collect(),
        coordinator,
    }
}

#[tonic::async_trait]
impl crate::transaction::TransactionRouter for AgentService {
    async fn finish(&self, record: TransactionRecord) -> crate::Result<()> {
        self.finish_transaction(record).await
    }

    async fn add_offsets(
        &self,
        producer: TransactionalProducer,
        group_id: String,
        offsets: Vec<(String, u32, CommittedOffset)>,
    ) -> crate::Result<()> {
        let request = pb::AddOffsetsToTransactionRequest {
            producer: Some(pb::TransactionalProducer {
                transactional_id: producer.transactional_id.clone(),
                producer_id: producer.producer_id,
                producer_epoch: i32::from(producer.epoch),
            }),
            group_id,
            offsets: offsets
                .into_iter()
                .map(|(topic, partition, o)| pb::PartitionOffset {
                    topic,
                    partition: partition as i32,
                    offset: o.offset,
                    metadata: o.metadata,
                })
                .collect(),
        };
        let id = producer.transactional_id.clone();
        let answer = match self.agent.coordinator_address(&id) {
            // Another agent coordinates it: asked as this agent (with its own token, as
            // for markers).
            Some(address) => {
                TransactionsClient::new(
                    self.peer(&address)
                        .map_err(|status| Error::Unavailable(status.message().to_string()))?,
                )
                .add_offsets_to_transaction(agent_call(request, self.own_authorization.as_ref()))
                .await
            }
            None => Transactions::add_offsets_to_transaction(self, Request::new(request)).await,
        };
        answer
            .map(|_| ())
            .map_err(|status| error_of(&status, &producer))
    }
}

/// The agent error a transaction call to another agent came back with, as far as its
/// status says (the Kafka listener maps it to a Kafka code).
fn error_of(status: &Status, producer: &TransactionalProducer) -> Error {
    let message = status.message().to_string();
    let trailer = |key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match (
        trailer(strata_proto::PRODUCER_ERROR).as_deref(),
        trailer(TRANSACTION_ERROR).as_deref(),
    ) {
        (Some("producer-fenced"), _) => Error::ProducerFenced {
            producer_id: producer.producer_id,
            epoch: producer.epoch,
            current: producer.epoch.saturating_add(1),
        },
        (_, Some("not-in-transaction")) => Error::NotInTransaction {
            transactional_id: producer.transactional_id.clone(),
            reason: message,
        },
        (_, Some("concurrent-transactions")) => {
            Error::ConcurrentTransactions(producer.transactional_id.clone())
        }
        _ => match status.code() {
            tonic::Code::InvalidArgument => Error::InvalidArgument(message),
            tonic::Code::NotFound => Error::TopicNotFound(message),
            tonic::Code::ResourceExhausted => Error::Overloaded(message),
            tonic::Code::DataLoss => Error::DataLoss(message),
            // Refused by the other agent's authentication: not worth retrying.
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                Error::FailedPrecondition(message)
            }
            _ => Error::Unavailable(message),
        },
    }
}

impl AgentService {
    /// Writes the markers of a prepared transaction in each of its partitions (at their
    /// owners, concurrently), then records it complete.
    async fn finish_transaction(&self, record: TransactionRecord) -> crate::Result<()> {
        let commit = record.status == TransactionStatus::PrepareCommit;
        let writes = record
            .partition_list()
            .into_iter()
            .map(|(topic, topic_id, partition)| {
                let service = self.clone();
                let (producer_id, epoch) = (record.producer_id, record.epoch);
                async move {
                    service
                        .write_marker_at_owner(
                            &topic,
                            &topic_id,
                            partition,
                            producer_id,
                            epoch,
                            commit,
                        )
                        .await
                }
            });
        for written in futures::future::join_all(writes).await {
            written?;
        }
        self.agent.complete_transaction(&record).await
    }

    /// Writes one marker at the partition's owner (this agent or another), until it is
    /// written or [`MARKER_PATIENCE`] passed. A partition whose topic is gone needs none.
    async fn write_marker_at_owner(
        &self,
        topic: &str,
        topic_id: &str,
        partition: u32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> crate::Result<()> {
        let deadline = tokio::time::Instant::now() + MARKER_PATIENCE;
        let mut backoff = Duration::from_millis(50);
        loop {
            let written = match self.agent.owner_address(topic, partition) {
                Some(address) => {
                    let request = pb::WriteMarkerRequest {
                        topic: topic.to_string(),
                        topic_id: topic_id.to_string(),
                        partition: partition as i32,
                        producer_id,
                        producer_epoch: i32::from(epoch),
                        commit,
                    };
                    match self.peer(&address) {
                        Ok(channel) => TransactionsClient::new(channel)
                            .write_marker(agent_call(request, self.own_authorization.as_ref()))
                            .await
                            .map(|_| ())
                            .or_else(|status| match status.code() {
                                tonic::Code::NotFound | tonic::Code::Aborted => Ok(()),
                                _ => Err(Error::Unavailable(status.message().to_string())),
                            }),
                        Err(status) => Err(Error::Unavailable(status.message().to_string())),
                    }
                }
                None => match self
                    .agent
                    .write_marker(
                        topic,
                        topic_id,
                        partition as i32,
                        producer_id,
                        epoch,
                        commit,
                    )
                    .await
                {
                    Err(Error::TopicNotFound(_) | Error::TopicChanged { .. }) => Ok(()),
                    other => other,
                },
            };
            match written {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::debug!(topic, partition, error = %e, "marker not written yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Finishes the prepared transactions of the slots this agent coordinates (a slot
    /// taken over, a coordinator that died mid-commit) and aborts those open longer than
    /// their timeout, until the agent stops.
    async fn run_transaction_sweeper(self) {
        let mut stopping = self.stopping.clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep(TRANSACTION_SWEEP) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            let due = match self.agent.transactions_due().await {
                Ok(due) => due,
                Err(e) => {
                    tracing::debug!(error = %e, "could not list transactions");
                    continue;
                }
            };
            for (record, timed_out) in due {
                let id = record.transactional_id.clone();
                let prepared = if timed_out {
                    self.agent.abort_open_transaction(&id, true).await
                } else {
                    Ok(Some(record))
                };
                let finished = match prepared {
                    Ok(Some(prepared)) => self.finish_transaction(prepared).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = finished {
                    tracing::warn!(transactional_id = %id, error = %e, "could not finish a transaction; retrying at the next sweep");
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Transactions for AgentService {
    async fn init_transactions(
        &self,
        request: Request<pb::InitTransactionsRequest>,
    ) -> Result<Response<pb::InitTransactionsResponse>, Status> {
        self.authorize(
            &request,
            "Transactions.InitTransactions",
            [Resource::transactional_id(
                &request.get_ref().transactional_id,
            )],
        )?;
        self.coordinated(
            request,
            |r| r.transactional_id.clone(),
            async |r| {
                // An open or prepared transaction of the id is finished first.
                for _ in 0..4 {
                    match self
                        .agent
                        .init_transactions(&r.transactional_id, r.transaction_timeout_ms)
                        .await?
                    {
                        InitOutcome::Ready(producer_id, epoch) => {
                            return Ok(pb::InitTransactionsResponse {
                                producer_id,
                                producer_epoch: i32::from(epoch),
                            });
                        }
                        InitOutcome::Finish(record) => self.finish_transaction(record).await?,
                    }
                }
                Err(Error::ConcurrentTransactions(r.transactional_id.clone()))
            },
            |channel, r| async move { TransactionsClient::new(channel).init_transactions(r).await },
        )
        .await
    }

    async fn add_partitions_to_transaction(
        &self,
        request: Request<pb::AddPartitionsToTransactionRequest>,
    ) -> Result<Response<pb::AddPartitionsToTransactionResponse>, Status> {
        let r = request.get_ref();
        let id = transactional_id_of(&r.producer);
        let api = "Transactions.AddPartitionsToTransaction";
        self.authorize(&request, api, [Resource::transactional_id(&id)])?;
        self.authorize(
            &request,
            api,
            r.partitions.iter().map(|t| Resource::topic(&t.topic)),
        )?;
        self.coordinated(
            request,
            |r| transactional_id_of(&r.producer),
            async |r| {
                let producer = transactional_producer(r.producer)?;
                let partitions: Vec<(String, Vec<i32>)> = r
                    .partitions
                    .into_iter()
                    .map(|t| (t.topic, t.partitions))
                    .collect();
                self.agent
                    .add_partitions_to_transaction(&producer, &partitions)
                    .await?;
                Ok(pb::AddPartitionsToTransactionResponse {})
            },
            |channel, r| async move {
                TransactionsClient::new(channel)
                    .add_partitions_to_transaction(r)
                    .await
            },
        )
        .await
    }

    async fn add_offsets_to_transaction(
        &self,
        request: Request<pb::AddOffsetsToTransactionRequest>,
    ) -> Result<Response<pb::AddOffsetsToTransactionResponse>, Status> {
        let r = request.get_ref();
        let id = transactional_id_of(&r.producer);
        let api = "Transactions.AddOffsetsToTransaction";
        self.authorize(&request, api, [Resource::transactional_id(&id)])?;
        self.authorize(&request, api, [Resource::group(&r.group_id)])?;
        self.coordinated(
            request,
            |r| transactional_id_of(&r.producer),
            async |r| {
                let producer = transactional_producer(r.producer)?;
                let now = self.agent.clock_ms();
                let offsets = r
                    .offsets
                    .into_iter()
                    .map(|o| {
                        let partition = u32::try_from(o.partition).map_err(|_| {
                            Error::InvalidArgument(format!("partition {} is negative", o.partition))
                        })?;
                        Ok((
                            o.topic,
                            partition,
                            CommittedOffset {
                                offset: o.offset,
                                metadata: o.metadata,
                                committed_at_ms: now,
                            },
                        ))
                    })
                    .collect::<crate::Result<Vec<_>>>()?;
                self.agent
                    .add_offsets_to_transaction(&producer, &r.group_id, &offsets)
                    .await?;
                Ok(pb::AddOffsetsToTransactionResponse {})
            },
            |channel, r| async move {
                TransactionsClient::new(channel)
                    .add_offsets_to_transaction(r)
                    .await
            },
        )
        .await
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        let id = transactional_id_of(&request.get_ref().producer);
        self.authorize(
            &request,
            "Transactions.EndTransaction",
            [Resource::transactional_id(&id)],
        )?;
        self.coordinated(
            request,
            |r| transactional_id_of(&r.producer),
            async |r| {
                let producer = transactional_producer(r.producer)?;
                if let Some(prepared) = self.agent.end_transaction(&producer, r.commit).await? {
                    if crate::failpoint::hit("txn-decided-exit") {
                        // A coordinator dying between the decision and the markers.
                        tracing::error!("failpoint txn-decided-exit: exiting after a decision");
                        std::process::abort();
                    }
                    self.finish_transaction(prepared).await?;
                }
                Ok(pb::EndTransactionResponse {})
            },
            |channel, r| async move { TransactionsClient::new(channel).end_transaction(r).await },
        )
        .await
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let caller = caller_of(&request);
        let records = self.agent.list_transactions().await.map_err(status)?;
        let authorizer = self.agent.authorizer();
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: records
                .iter()
                .filter(|r| {
                    authorizer.permits(
                        &caller,
                        "Transactions.ListTransactions",
                        Resource::transactional_id(&r.transactional_id),
                    )
                })
                .map(|r| {
                    let coordinator = self
                        .agent
                        .find_coordinator(&r.transactional_id)
                        .map(|c| c.agent_id)
                        .unwrap_or_default();
                    transaction_info(r, coordinator)
                })
                .collect(),
        }))
    }

    async fn describe_transaction(
        &self,
        request: Request<pb::DescribeTransactionRequest>,
    ) -> Result<Response<pb::DescribeTransactionResponse>, Status> {
        self.authorize(
            &request,
            "Transactions.DescribeTransaction",
            [Resource::transactional_id(
                &request.get_ref().transactional_id,
            )],
        )?;
        let id = request.into_inner().transactional_id;
        let record = self.agent.describe_transaction(&id).await.map_err(status)?;
        let coordinator = self
            .agent
            .find_coordinator(&id)
            .map(|c| c.agent_id)
            .unwrap_or_default();
        Ok(Response::new(pb::DescribeTransactionResponse {
            transaction: Some(transaction_info(&record, coordinator)),
        }))
    }

    async fn abort_transaction(
        &self,
        request: Request<pb::AbortTransactionRequest>,
    ) -> Result<Response<pb::AbortTransactionResponse>, Status> {
        self.authorize(
            &request,
            "Transactions.AbortTransaction",
            [Resource::transactional_id(
                &request.get_ref().transactional_id,
            )],
        )?;
        self.coordinated(
            request,
            |r| r.transactional_id.clone(),
            async |r| {
                if let Some(prepared) = self
                    .agent
                    .abort_open_transaction(&r.transactional_id, false)
                    .await?
                {
                    self.finish_transaction(prepared).await?;
                }
                Ok(pb::AbortTransactionResponse {})
            },
            |channel, r| async move { TransactionsClient::new(channel).abort_transaction(r).await },
        )
        .await
    }

    async fn write_marker(
        &self,
        request: Request<pb::WriteMarkerRequest>,
    ) -> Result<Response<pb::WriteMarkerResponse>, Status> {
        self.authorize(&request, "Transactions.WriteMarker", [Resource::cluster()])?;
        let r = request.into_inner();
        let epoch = i16::try_from(r.producer_epoch).map_err(|_| {
            Status::invalid_argument(format!(
                "producer epoch {} is out of range",
                r.producer_epoch
            ))
        })?;
        self.agent
            .write_marker(
                &r.topic,
                &r.topic_id,
                r.partition,
                r.producer_id,
                epoch,
                r.commit,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::WriteMarkerResponse {}))
    }
}
