//! ApiVersions, Metadata and DescribeCluster: the cluster as Kafka clients see it.
//!
//! Every live agent with a Kafka listener is a broker, its node id its incarnation number
//! (unique among live agents, fixed for the agent's life). A partition's leader is the
//! agent the controller assigned it to, its leader epoch the partition's ownership epoch
//! (bumped by every take-over), its replicas and in-sync replicas that one agent
//! (replication is the object store's). The cluster id is the cluster's name.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, ResponseKind, TopicName};
use strata_metastore::AgentRecord;

use strata_agent::auth::Resource;

use super::{Context, VERSIONS, str_bytes};
use crate::error::Context as ErrorContext;

/// The ApiVersions answer: every API and version range implemented.
pub(crate) fn api_versions(_version: i16) -> ResponseKind {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = advertised();
    ResponseKind::ApiVersions(response)
}

/// An ApiVersions answer carrying an error (and the versions, so the client can pick).
pub(crate) fn api_versions_error(error: ResponseError) -> ResponseKind {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error.code();
    response.api_keys = advertised();
    ResponseKind::ApiVersions(response)
}

fn advertised() -> Vec<ApiVersion> {
    VERSIONS
        .iter()
        .map(|(key, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = *key as i16;
            version.min_version = *min;
            version.max_version = *max;
            version
        })
        .collect()
}

/// A live agent as a Kafka broker: node id, host, port, rack.
pub(crate) struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// The live agents that have a Kafka listener, by agent id.
pub(crate) fn brokers(agents: &[AgentRecord]) -> HashMap<String, Broker> {
    agents
        .iter()
        .filter_map(|agent| {
            let (host, port) = agent.kafka_address.rsplit_once(':')?;
            let port = port.parse().ok()?;
            let broker = Broker {
                node_id: agent.node_id,
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
                rack: (!agent.zone.is_empty()).then(|| agent.zone.clone()),
            };
            Some((agent.agent_id.clone(), broker))
        })
        .collect()
}

/// The controller's node id; -1 while there is none (or it has no Kafka listener).
fn controller(
    cluster: &strata_agent::ClusterMetadata,
    brokers: &HashMap<String, Broker>,
) -> BrokerId {
    BrokerId(
        cluster
            .controller
            .as_ref()
            .and_then(|c| brokers.get(c))
            .map_or(-1, |b| b.node_id),
    )
}

/// A topic id as Kafka writes it; the nil id when it is not a UUID (topics stored
/// before topics had ids).
pub(crate) fn topic_uuid(topic_id: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(topic_id).unwrap_or(uuid::Uuid::nil())
}

/// Metadata: brokers, controller, cluster id, and the topics asked for (all when the
/// request says so).
pub(crate) async fn metadata(cx: &Context<'_>, request: MetadataRequest) -> ResponseKind {
    let v = cx.version;
    let agent = &cx.shared.agent;
    let mut response = MetadataResponse::default();
    // v0: an empty list is every topic; later: null is every topic, empty is none.
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && v == 0 => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let cluster = match agent.metadata(&[], true).await {
        Ok(cluster) => cluster,
        Err(e) => {
            tracing::warn!(error = %e, "kafka metadata: cannot read the cluster");
            // No brokers: the client retries.
            return ResponseKind::Metadata(response);
        }
    };
    let brokers = brokers(&cluster.agents);
    let mut replica_ids: Vec<i32> = brokers.values().map(|b| b.node_id).collect();
    replica_ids.sort_unstable();
    for broker in brokers.values() {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(broker.node_id);
        b.host = str_bytes(&broker.host);
        b.port = broker.port;
        if v >= 1 {
            b.rack = broker.rack.as_deref().map(str_bytes);
        }
        response.brokers.push(b);
    }
    response.brokers.sort_by_key(|b| b.node_id);
    if v >= 2 {
        response.cluster_id = Some(str_bytes(&agent.config().cluster));
    }
    if v >= 1 {
        response.controller_id = controller(&cluster, &brokers);
    }
    // Topics asked for by name that the caller may not describe are answered
    // TOPIC_AUTHORIZATION_FAILED; of all topics, they are left out.
    let listing_all = wanted.is_none();
    let names: Vec<(Option<String>, uuid::Uuid)> = match wanted {
        Some(mut wanted) => {
            // Each name once; no more than the cluster can hold.
            let mut seen = std::collections::HashSet::new();
            wanted.retain(|w| seen.insert(w.clone()));
            wanted.truncate(agent.config().limits.max_topics as usize);
            wanted
        }
        None => match agent.list_topics().await {
            Ok(topics) => topics
                .into_iter()
                .map(|t| (Some(t.name), uuid::Uuid::nil()))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "kafka metadata: cannot list topics");
                return ResponseKind::Metadata(response);
            }
        },
    };
    // Topics asked for by id (v12) are found among all topics, listed once.
    let by_id = if names.iter().any(|(name, _)| name.is_none()) {
        agent.list_topics().await.unwrap_or_default()
    } else {
        Vec::new()
    };
    for (name, id) in names {
        let mut topic = MetadataResponseTopic::default();
        let name = match name {
            Some(name) => name,
            None => match by_id
                .iter()
                .find(|t| !id.is_nil() && topic_uuid(&t.topic_id) == id)
                .map(|t| t.name.clone())
            {
                Some(name) => name,
                None => {
                    topic.error_code = cx.error(ResponseError::UnknownTopicId);
                    topic.topic_id = id;
                    response.topics.push(topic);
                    continue;
                }
            },
        };
        topic.name = Some(TopicName(str_bytes(&name)));
        if let Err(refusal) = cx.authorize(Resource::topic(&name)) {
            if !listing_all {
                topic.error_code = cx.error(refusal.error);
                response.topics.push(topic);
            }
            continue;
        }
        match agent.describe_topic(&name).await {
            Ok((meta, partitions)) => {
                if v >= 10 {
                    topic.topic_id = topic_uuid(&meta.topic_id);
                }
                for p in partitions {
                    let mut partition = MetadataResponsePartition::default();
                    partition.partition_index = p.partition as i32;
                    let leader = p.assigned_agent.as_ref().and_then(|a| brokers.get(a));
                    match leader {
                        Some(leader) => {
                            partition.leader_id = BrokerId(leader.node_id);
                            // Every agent reads every partition (KIP-392's preferred read
                            // replicas are any agent of the client's zone): the leader
                            // first, then the others, all in sync.
                            partition.replica_nodes = std::iter::once(leader.node_id)
                                .chain(
                                    replica_ids
                                        .iter()
                                        .copied()
                                        .filter(|id| *id != leader.node_id),
                                )
                                .map(BrokerId)
                                .collect();
                            partition.isr_nodes = partition.replica_nodes.clone();
                        }
                        None => {
                            partition.error_code = cx.error(ResponseError::LeaderNotAvailable);
                            partition.leader_id = BrokerId(-1);
                        }
                    }
                    if v >= 7 {
                        partition.leader_epoch = p
                            .state
                            .owner
                            .as_ref()
                            .map_or(-1, |o| (o.epoch % i32::MAX as u64) as i32);
                    }
                    topic.partitions.push(partition);
                }
            }
            Err(e) => {
                topic.error_code = cx.agent_error(&e, ErrorContext::Other);
            }
        }
        response.topics.push(topic);
    }
    ResponseKind::Metadata(response)
}

/// DescribeCluster: the brokers, the controller, the cluster id.
pub(crate) async fn describe_cluster(
    cx: &Context<'_>,
    request: DescribeClusterRequest,
) -> ResponseKind {
    let mut response = DescribeClusterResponse::default();
    if cx.version >= 1 {
        response.endpoint_type = request.endpoint_type;
        if request.endpoint_type != 1 {
            response.error_code = cx.error(ResponseError::UnsupportedEndpointType);
            response.error_message = Some(str_bytes(
                "Strata agents are brokers only: ask for endpoint type 1 (brokers)",
            ));
            return ResponseKind::DescribeCluster(response);
        }
    }
    let agent = &cx.shared.agent;
    if let Err(refusal) = cx.authorize(Resource::cluster()) {
        response.error_code = cx.error(refusal.error);
        response.error_message = Some(str_bytes(refusal.message));
        return ResponseKind::DescribeCluster(response);
    }
    response.cluster_id = str_bytes(&agent.config().cluster);
    match agent.metadata(&[], true).await {
        Ok(cluster) => {
            let brokers = brokers(&cluster.agents);
            response.controller_id = controller(&cluster, &brokers);
            for broker in brokers.values() {
                let mut b = DescribeClusterBroker::default();
                b.broker_id = BrokerId(broker.node_id);
                b.host = str_bytes(&broker.host);
                b.port = broker.port;
                b.rack = broker.rack.as_deref().map(str_bytes);
                response.brokers.push(b);
            }
            response.brokers.sort_by_key(|b| b.broker_id);
        }
        Err(e) => {
            response.error_code = cx.agent_error(&e, ErrorContext::Other);
            response.error_message = Some(str_bytes(crate::error::message(&e)));
        }
    }
    ResponseKind::DescribeCluster(response)
}
