//! Consumer groups: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete,
//! and KIP-848's ConsumerGroupHeartbeat and ConsumerGroupDescribe —
//! onto the agent's one group coordinator (same placement, etcd state and fencing as the
//! gRPC `Groups` service; committed offsets are one set whichever API wrote them).
//!
//! The classic protocol's assignment is computed by a member and opaque to the
//! coordinator; for the `consumer` protocol type its subscription's topics and the
//! assignment's partitions are decoded here, only so that `strata group describe` shows
//! members, assignment and lag as it does for the other protocol.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
use kafka_protocol::messages::consumer_group_describe_response::ConsumerGroupDescribeResponse;
use kafka_protocol::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as ConsumerAssignment, ConsumerGroupHeartbeatResponse,
    TopicPartitions as ConsumerTopicPartitions,
};
use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_request::OffsetDeleteRequest;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{BrokerId, GroupId, ResponseKind, TopicName};
use kafka_protocol::protocol::Decodable;
use strata_agent::{
    ClassicGroupRecord, ClassicJoin, ClassicJoined, ClassicProtocol, ClassicSync, Error,
    GroupRecord, Unchanged,
};
use strata_proto::v1 as pb;

use strata_agent::auth::Resource;

use super::metadata::{brokers, topic_uuid};
use super::{Context, Outcome, str_bytes};
use crate::error::{Context as ErrorContext, message};
use crate::server::Pending;

/// The key types of FindCoordinator.
const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

/// The newest version of the consumer protocol's subscription and assignment decoded
/// here; newer ones only add fields at the end.
const CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// A consumer subscription's topics (empty for another protocol type, or bytes that do
/// not decode: they stay opaque).
fn subscription_topics(protocol_type: &str, metadata: &Bytes) -> Vec<String> {
    if protocol_type != "consumer" {
        return Vec::new();
    }
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, CONSUMER_PROTOCOL_VERSION);
    let mut topics: Vec<String> = ConsumerProtocolSubscription::decode(&mut buf, version)
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default();
    topics.sort();
    topics.dedup();
    topics
}

/// A consumer assignment's partitions (empty for another protocol type, or bytes that do
/// not decode).
fn assigned_partitions(protocol_type: &str, assignment: &Bytes) -> BTreeSet<(String, u32)> {
    if protocol_type != "consumer" {
        return BTreeSet::new();
    }
    let mut buf = assignment.clone();
    if buf.remaining() < 2 {
        return BTreeSet::new();
    }
    let version = buf.get_i16().clamp(0, CONSUMER_PROTOCOL_VERSION);
    ConsumerProtocolAssignment::decode(&mut buf, version)
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .flat_map(|tp| {
                    let topic = tp.topic.to_string();
                    tp.partitions
                        .into_iter()
                        .filter_map(move |p| u32::try_from(p).ok().map(|p| (topic.clone(), p)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A spawned wait that is aborted when its answer is no longer wanted (the connection
/// closed and its pending answers were dropped), so a client cannot leave waits behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

/// Kafka's bounds of a classic member's session timeout (`group.min.session.timeout.ms`
/// and `group.max.session.timeout.ms` defaults).
const MIN_SESSION_TIMEOUT_MS: i32 = 6_000;
const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

fn group_code(cx: &Context<'_>, error: &Error) -> i16 {
    cx.agent_error(error, ErrorContext::Group)
}

/// FindCoordinator: the agent holding the key's coordinator slot (groups and
/// transactional ids are placed alike).
pub(crate) async fn find_coordinator(
    cx: &Context<'_>,
    request: FindCoordinatorRequest,
) -> ResponseKind {
    let v = cx.version;
    let keys: Vec<String> = if v >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let agents = match cx.shared.agent.metadata(&[], true).await {
        Ok(cluster) => brokers(&cluster.agents),
        Err(e) => {
            tracing::warn!(error = %e, "kafka find_coordinator: cannot read the cluster");
            Default::default()
        }
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let mut c = Coordinator::default();
        c.key = str_bytes(&key);
        c.node_id = BrokerId(-1);
        if request.key_type != GROUP_KEY && request.key_type != TRANSACTION_KEY {
            c.error_code = cx.error(ResponseError::InvalidRequest);
            c.error_message = Some(str_bytes(format!(
                "key type {} is not served: use 0 (group) or 1 (transaction)",
                request.key_type
            )));
        } else if let Err(refusal) = cx.authorize(if request.key_type == GROUP_KEY {
            Resource::group(&key)
        } else {
            Resource::transactional_id(&key)
        }) {
            c.error_code = cx.error(refusal.error);
            c.error_message = Some(str_bytes(refusal.message));
        } else {
            match cx.shared.agent.coordinator_agent(&key) {
                Ok(agent) => match agents.get(&agent.agent_id) {
                    Some(broker) => {
                        c.node_id = BrokerId(broker.node_id);
                        c.host = str_bytes(&broker.host);
                        c.port = broker.port;
                    }
                    None => {
                        c.error_code = cx.error(ResponseError::CoordinatorNotAvailable);
                        c.error_message = Some(str_bytes(format!(
                            "the coordinator of '{key}', agent '{}', has no Kafka listener",
                            agent.agent_id
                        )));
                    }
                },
                Err(e) => {
                    c.error_code = group_code(cx, &e);
                    c.error_message = Some(str_bytes(message(&e)));
                }
            }
        }
        coordinators.push(c);
    }
    let mut response = FindCoordinatorResponse::default();
    if v >= 4 {
        response.coordinators = coordinators;
    } else {
        let c = coordinators.pop().expect("one key");
        response.error_code = c.error_code;
        if v >= 1 {
            response.error_message = c.error_message;
        }
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    ResponseKind::FindCoordinator(response)
}

fn optional(s: &Option<kafka_protocol::protocol::StrBytes>) -> String {
    s.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

/// JoinGroup: answered when the rebalance completes (the wait runs in its own task, so
/// the member is registered at once).
pub(crate) fn join_group(cx: &Context<'_>, request: JoinGroupRequest) -> Outcome {
    let v = cx.version;
    if let Err(refusal) = cx.authorize(Resource::group(&request.group_id)) {
        let mut response = JoinGroupResponse::default();
        response.generation_id = -1;
        response.error_code = cx.error(refusal.error);
        if v < 7 {
            response.protocol_name = Some(str_bytes(""));
        }
        return Outcome::Reply(Pending::Ready(Box::new(ResponseKind::JoinGroup(response))));
    }
    let protocol_type = request.protocol_type.to_string();
    let topics = request
        .protocols
        .first()
        .map(|p| subscription_topics(&protocol_type, &p.metadata))
        .unwrap_or_default();
    let join = ClassicJoin {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: optional(&request.group_instance_id),
        client_id: cx.client_id.to_string(),
        client_host: cx.peer.ip().to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| ClassicProtocol {
                name: p.name.to_string(),
                metadata: p.metadata.to_vec(),
            })
            .collect(),
        protocol_type,
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        require_member_id: v >= 4,
        topics,
    };
    if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&join.session_timeout_ms) {
        let mut response = JoinGroupResponse::default();
        response.generation_id = -1;
        response.error_code = cx.error(ResponseError::InvalidSessionTimeout);
        tracing::debug!(
            session_timeout_ms = join.session_timeout_ms,
            "kafka join_group refused: session timeout out of {MIN_SESSION_TIMEOUT_MS}..={MAX_SESSION_TIMEOUT_MS} ms"
        );
        return Outcome::Reply(Pending::Ready(Box::new(ResponseKind::JoinGroup(response))));
    }
    let agent = cx.shared.agent.clone();
    // Registered at once (its own task); answered when the rebalance completes.
    let answer = AbortOnDrop(tokio::spawn(async move { agent.classic_join(join).await }));
    let (shared, api) = (cx.shared.clone(), cx.api);
    let (client_id, peer, caller) = (cx.client_id.to_string(), cx.peer, cx.caller.clone());
    Outcome::Reply(Pending::Later(Box::pin(async move {
        let cx = Context {
            shared: &shared,
            version: v,
            api,
            client_id: &client_id,
            peer,
            caller,
        };
        let mut response = JoinGroupResponse::default();
        response.generation_id = -1;
        let result = answer
            .join()
            .await
            .unwrap_or_else(|e| Err(Error::Unavailable(format!("the join was cut short: {e}"))));
        match result {
            Ok(ClassicJoined::MemberIdRequired(member_id)) => {
                response.error_code = cx.error(ResponseError::MemberIdRequired);
                response.member_id = str_bytes(member_id);
            }
            Ok(ClassicJoined::Joined(joined)) => {
                response.generation_id = joined.generation;
                if v >= 7 {
                    response.protocol_type = Some(str_bytes(joined.protocol_type));
                }
                response.protocol_name = Some(str_bytes(joined.protocol_name));
                response.leader = str_bytes(joined.leader);
                response.member_id = str_bytes(joined.member_id);
                response.members = joined
                    .members
                    .into_iter()
                    .map(|(member_id, instance_id, metadata)| {
                        let mut m = JoinGroupResponseMember::default();
                        m.member_id = str_bytes(member_id);
                        if v >= 5 && !instance_id.is_empty() {
                            m.group_instance_id = Some(str_bytes(instance_id));
                        }
                        m.metadata = Bytes::from(metadata);
                        m
                    })
                    .collect();
            }
            Err(e) => {
                tracing::debug!(error = %e, "kafka join_group refused");
                response.error_code = group_code(&cx, &e);
                if v < 7 {
                    response.protocol_name = Some(str_bytes(""));
                }
            }
        }
        ResponseKind::JoinGroup(response)
    })))
}

/// SyncGroup: the leader's assignment in, each member's part out.
pub(crate) fn sync_group(cx: &Context<'_>, request: SyncGroupRequest) -> Outcome {
    let v = cx.version;
    if let Err(refusal) = cx.authorize(Resource::group(&request.group_id)) {
        let mut response = SyncGroupResponse::default();
        response.error_code = cx.error(refusal.error);
        return Outcome::Reply(Pending::Ready(Box::new(ResponseKind::SyncGroup(response))));
    }
    let group_id = request.group_id.to_string();
    let agent = cx.shared.agent.clone();
    let sync_type = request.protocol_type.as_ref().map(|s| s.to_string());
    let answer = AbortOnDrop(tokio::spawn(async move {
        // The protocol type decides whether assignments are decoded: the member's own
        // claim, else the group's stored one.
        let protocol_type = match &sync_type {
            Some(t) => t.clone(),
            None => agent
                .group_record(&group_id)
                .await
                .ok()
                .flatten()
                .and_then(|g| g.classic.map(|c| c.protocol_type))
                .unwrap_or_default(),
        };
        let sync = ClassicSync {
            group_id,
            member_id: request.member_id.to_string(),
            instance_id: optional(&request.group_instance_id),
            generation: request.generation_id,
            protocol_type: sync_type,
            protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
            assignments: request
                .assignments
                .into_iter()
                .map(|a| {
                    let partitions = assigned_partitions(&protocol_type, &a.assignment);
                    (a.member_id.to_string(), a.assignment.to_vec(), partitions)
                })
                .collect(),
        };
        agent.classic_sync(sync).await
    }));
    let (shared, api) = (cx.shared.clone(), cx.api);
    let (client_id, peer, caller) = (cx.client_id.to_string(), cx.peer, cx.caller.clone());
    Outcome::Reply(Pending::Later(Box::pin(async move {
        let cx = Context {
            shared: &shared,
            version: v,
            api,
            client_id: &client_id,
            peer,
            caller,
        };
        let mut response = SyncGroupResponse::default();
        let result = answer
            .join()
            .await
            .unwrap_or_else(|e| Err(Error::Unavailable(format!("the sync was cut short: {e}"))));
        match result {
            Ok(synced) => {
                if v >= 5 {
                    response.protocol_type = Some(str_bytes(synced.protocol_type));
                    response.protocol_name = Some(str_bytes(synced.protocol_name));
                }
                response.assignment = Bytes::from(synced.assignment);
            }
            Err(e) => {
                tracing::debug!(error = %e, "kafka sync_group refused");
                response.error_code = group_code(&cx, &e);
            }
        }
        ResponseKind::SyncGroup(response)
    })))
}

/// Heartbeat of a classic member.
pub(crate) async fn heartbeat(cx: &Context<'_>, request: HeartbeatRequest) -> ResponseKind {
    let mut response = HeartbeatResponse::default();
    if let Err(refusal) = cx.authorize(Resource::group(&request.group_id)) {
        response.error_code = cx.error(refusal.error);
        return ResponseKind::Heartbeat(response);
    }
    if let Err(e) = cx
        .shared
        .agent
        .classic_heartbeat(
            &request.group_id,
            &request.member_id,
            &optional(&request.group_instance_id),
            request.generation_id,
        )
        .await
    {
        response.error_code = group_code(cx, &e);
    }
    ResponseKind::Heartbeat(response)
}

/// LeaveGroup: one member (v0–2) or several (v3 and later).
pub(crate) async fn leave_group(cx: &Context<'_>, request: LeaveGroupRequest) -> ResponseKind {
    let v = cx.version;
    let members: Vec<(String, String)> = if v >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), optional(&m.group_instance_id)))
            .collect()
    } else {
        vec![(request.member_id.to_string(), String::new())]
    };
    let mut response = LeaveGroupResponse::default();
    if let Err(refusal) = cx.authorize(Resource::group(&request.group_id)) {
        response.error_code = cx.error(refusal.error);
        return ResponseKind::LeaveGroup(response);
    }
    match cx
        .shared
        .agent
        .classic_leave(&request.group_id, &members)
        .await
    {
        Ok(results) => {
            if v >= 3 {
                response.members = members
                    .into_iter()
                    .zip(results)
                    .map(|((member_id, instance_id), result)| {
                        let mut m = MemberResponse::default();
                        m.member_id = str_bytes(member_id);
                        m.group_instance_id =
                            (!instance_id.is_empty()).then(|| str_bytes(instance_id));
                        if let Err(e) = result {
                            m.error_code = group_code(cx, &e);
                        }
                        m
                    })
                    .collect();
            } else if let Some(Err(e)) = results.into_iter().next() {
                response.error_code = group_code(cx, &e);
            }
        }
        Err(e) => response.error_code = group_code(cx, &e),
    }
    ResponseKind::LeaveGroup(response)
}

/// OffsetCommit: one commit of the agent's, fenced by the member's generation (classic)
/// or epoch (consumer protocol); without a member, only while the group has none.
pub(crate) async fn offset_commit(cx: &Context<'_>, request: OffsetCommitRequest) -> ResponseKind {
    // READ on the group, else nothing is committed; READ on each topic, else its
    // partitions are not.
    let group_refused = cx
        .authorize(Resource::group(&request.group_id))
        .err()
        .map(|r| cx.error(r.error));
    let topic_refused: Vec<Option<i16>> = request
        .topics
        .iter()
        .map(|t| {
            group_refused.or_else(|| {
                cx.authorize(Resource::topic(&t.name))
                    .err()
                    .map(|r| cx.error(r.error))
            })
        })
        .collect();
    let offsets: Vec<pb::PartitionOffset> = request
        .topics
        .iter()
        .zip(&topic_refused)
        .filter(|(_, refused)| refused.is_none())
        .flat_map(|(t, _)| {
            t.partitions.iter().map(move |p| pb::PartitionOffset {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                metadata: optional(&p.committed_metadata),
            })
        })
        .collect();
    let member_id = request.member_id.to_string();
    let standalone = member_id.is_empty();
    let instance_id = optional(&request.group_instance_id);
    let result = if group_refused.is_some() {
        Ok(())
    } else {
        cx.shared
            .agent
            .member_commit(
                pb::CommitOffsetsRequest {
                    group_id: request.group_id.to_string(),
                    member_epoch: if member_id.is_empty() {
                        -1
                    } else {
                        request.generation_id_or_member_epoch as i64
                    },
                    member_id,
                    offsets,
                },
                &instance_id,
            )
            .await
    };
    let code = match &result {
        Ok(()) => 0,
        // A commit without a member (a consumer using assign()) to a group with members:
        // Kafka's answer, which its clients understand.
        Err(e @ Error::GroupNotEmpty { .. }) if standalone => {
            tracing::debug!(error = %e, "kafka offset_commit refused");
            cx.error(ResponseError::UnknownMemberId)
        }
        Err(e) => {
            tracing::debug!(error = %e, "kafka offset_commit refused");
            group_code(cx, e)
        }
    };
    let mut response = OffsetCommitResponse::default();
    response.topics = request
        .topics
        .into_iter()
        .zip(topic_refused)
        .map(|(t, refused)| {
            let mut topic = OffsetCommitResponseTopic::default();
            topic.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut partition = OffsetCommitResponsePartition::default();
                    partition.partition_index = p.partition_index;
                    partition.error_code = refused.unwrap_or(code);
                    partition
                })
                .collect();
            topic.name = t.name;
            topic
        })
        .collect();
    ResponseKind::OffsetCommit(response)
}

/// One group's committed offsets as OffsetFetch answers them: of the partitions asked for
/// (-1 where none is committed), or of every partition with one.
/// A group's partitions are `(partition, offset, metadata, error code)`: topics asked for
/// that the caller may not describe are answered TOPIC_AUTHORIZATION_FAILED; of all
/// topics, they are left out.
async fn group_offsets(
    cx: &Context<'_>,
    group_id: &str,
    wanted: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Result<Vec<(TopicName, Vec<(i32, i64, String, i16)>)>, i16> {
    if let Err(refusal) = cx.authorize(Resource::group(group_id)) {
        return Err(cx.error(refusal.error));
    }
    let topics: Vec<String> = wanted
        .as_ref()
        .map(|w| w.iter().map(|(t, _)| t.to_string()).collect())
        .unwrap_or_default();
    if wanted.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    let committed = cx
        .shared
        .agent
        .fetch_offsets(pb::FetchOffsetsRequest {
            group_id: group_id.to_string(),
            topics,
        })
        .await
        .map_err(|e| group_code(cx, &e))?;
    let mut by_partition: BTreeMap<(String, i32), (i64, String)> = BTreeMap::new();
    for o in committed.offsets {
        by_partition.insert((o.topic, o.partition), (o.offset, o.metadata));
    }
    Ok(match wanted {
        Some(wanted) => wanted
            .into_iter()
            .map(|(topic, partitions)| {
                let name = topic.to_string();
                let refused = cx
                    .authorize(Resource::topic(&name))
                    .err()
                    .map(|r| cx.error(r.error));
                let answers = partitions
                    .into_iter()
                    .map(|p| match (refused, by_partition.get(&(name.clone(), p))) {
                        (Some(code), _) => (p, -1, String::new(), code),
                        (None, Some((offset, metadata))) => (p, *offset, metadata.clone(), 0),
                        (None, None) => (p, -1, String::new(), 0),
                    })
                    .collect();
                (topic, answers)
            })
            .collect(),
        None => {
            let mut topics: BTreeMap<String, Vec<(i32, i64, String, i16)>> = BTreeMap::new();
            for ((topic, p), (offset, metadata)) in by_partition {
                if cx.permits(Resource::topic(&topic)) {
                    topics
                        .entry(topic)
                        .or_default()
                        .push((p, offset, metadata, 0));
                }
            }
            topics
                .into_iter()
                .map(|(t, ps)| (TopicName(str_bytes(t)), ps))
                .collect()
        }
    })
}

/// OffsetFetch: one group (v1–7) or several (v8 and later).
pub(crate) async fn offset_fetch(cx: &Context<'_>, request: OffsetFetchRequest) -> ResponseKind {
    let v = cx.version;
    let mut response = OffsetFetchResponse::default();
    if v >= 8 {
        for group in request.groups {
            let wanted = group.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let mut answer = OffsetFetchResponseGroup::default();
            match group_offsets(cx, &group.group_id, wanted).await {
                Ok(topics) => {
                    answer.topics = topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            let mut topic = OffsetFetchResponseTopics::default();
                            topic.name = name;
                            topic.partitions = partitions
                                .into_iter()
                                .map(|(p, offset, metadata, code)| {
                                    let mut partition = OffsetFetchResponsePartitions::default();
                                    partition.partition_index = p;
                                    partition.error_code = code;
                                    partition.committed_offset = offset;
                                    partition.committed_leader_epoch = -1;
                                    partition.metadata = Some(str_bytes(metadata));
                                    partition
                                })
                                .collect();
                            topic
                        })
                        .collect();
                }
                Err(code) => answer.error_code = code,
            }
            answer.group_id = group.group_id;
            response.groups.push(answer);
        }
        return ResponseKind::OffsetFetch(response);
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    match group_offsets(cx, &request.group_id, wanted).await {
        Ok(topics) => {
            response.topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    let mut topic = OffsetFetchResponseTopic::default();
                    topic.name = name;
                    topic.partitions = partitions
                        .into_iter()
                        .map(|(p, offset, metadata, code)| {
                            let mut partition = OffsetFetchResponsePartition::default();
                            partition.partition_index = p;
                            partition.error_code = code;
                            partition.committed_offset = offset;
                            if v >= 5 {
                                partition.committed_leader_epoch = -1;
                            }
                            partition.metadata = Some(str_bytes(metadata));
                            partition
                        })
                        .collect();
                    topic
                })
                .collect();
        }
        Err(code) => {
            if v >= 2 {
                response.error_code = code;
            }
        }
    }
    ResponseKind::OffsetFetch(response)
}

/// A group's state as Kafka names it, and its type (`classic` or `consumer`).
fn kafka_state(record: &GroupRecord) -> (&'static str, &'static str) {
    if let Some(classic) = classic_of(record) {
        let state = match classic.state.as_str() {
            "Stable" => "Stable",
            "CompletingRebalance" => "CompletingRebalance",
            _ => "PreparingRebalance",
        };
        return (state, "classic");
    }
    if record.members.is_empty() {
        return (
            "Empty",
            if record.classic.is_some() {
                "classic"
            } else {
                "consumer"
            },
        );
    }
    let stable = record.assignment_epoch == record.epoch
        && record
            .members
            .values()
            .all(|m| m.revoking.is_empty() && m.assigned == m.target);
    (if stable { "Stable" } else { "Reconciling" }, "consumer")
}

fn classic_of(record: &GroupRecord) -> Option<&ClassicGroupRecord> {
    record.classic.as_ref().filter(|c| !c.members.is_empty())
}

/// ListGroups, with the state (v4) and type (v5) filters.
pub(crate) async fn list_groups(cx: &Context<'_>, request: ListGroupsRequest) -> ResponseKind {
    let mut response = ListGroupsResponse::default();
    let records = match cx.shared.agent.group_records().await {
        Ok(records) => records,
        Err(e) => {
            response.error_code = group_code(cx, &e);
            return ResponseKind::ListGroups(response);
        }
    };
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    for record in records {
        // Each broker lists the groups it coordinates (clients ask every broker), of
        // those the caller may describe.
        if !cx.shared.agent.coordinates(&record.group_id)
            || !cx.permits(Resource::group(&record.group_id))
        {
            continue;
        }
        let (state, kind) = kafka_state(&record);
        if !states.is_empty() && !states.contains(&state.to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.contains(&kind.to_string()) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(str_bytes(&record.group_id));
        g.protocol_type = str_bytes(
            record
                .classic
                .as_ref()
                .map_or("consumer", |c| c.protocol_type.as_str()),
        );
        if cx.version >= 4 {
            g.group_state = str_bytes(state);
        }
        if cx.version >= 5 {
            g.group_type = str_bytes(kind);
        }
        response.groups.push(g);
    }
    ResponseKind::ListGroups(response)
}

/// DescribeGroups: classic groups as they are; consumer-protocol groups with their
/// assignments in the consumer protocol's encoding.
pub(crate) async fn describe_groups(
    cx: &Context<'_>,
    request: DescribeGroupsRequest,
) -> ResponseKind {
    let mut response = DescribeGroupsResponse::default();
    for group_id in request.groups {
        let mut described = DescribedGroup::default();
        if let Err(refusal) = cx.authorize(Resource::group(&group_id)) {
            described.error_code = cx.error(refusal.error);
            if cx.version >= 6 {
                described.error_message = Some(str_bytes(refusal.message));
            }
            described.group_id = group_id;
            response.groups.push(described);
            continue;
        }
        match cx.shared.agent.group_record(&group_id).await {
            Ok(None) => {
                described.group_state = str_bytes("Dead");
            }
            Ok(Some(record)) => {
                let (state, _) = kafka_state(&record);
                described.group_state = str_bytes(state);
                if let Some(classic) = classic_of(&record) {
                    described.protocol_type = str_bytes(&classic.protocol_type);
                    described.protocol_data = str_bytes(&classic.protocol_name);
                    described.members = classic
                        .members
                        .values()
                        .map(|m| {
                            let mut member = DescribedGroupMember::default();
                            member.member_id = str_bytes(&m.member_id);
                            if cx.version >= 4 && !m.instance_id.is_empty() {
                                member.group_instance_id = Some(str_bytes(&m.instance_id));
                            }
                            member.client_id = str_bytes(&m.client_id);
                            member.client_host = str_bytes(&m.client_host);
                            member.member_metadata = m
                                .protocols
                                .iter()
                                .find(|p| p.name == classic.protocol_name)
                                .map(|p| Bytes::from(p.metadata.clone()))
                                .unwrap_or_default();
                            member.member_assignment = Bytes::from(m.assignment.clone());
                            member
                        })
                        .collect();
                } else if let Some(classic) = &record.classic {
                    // A classic group without members.
                    described.protocol_type = str_bytes(&classic.protocol_type);
                } else {
                    described.protocol_type = str_bytes("consumer");
                    described.protocol_data = str_bytes(&record.assignor);
                    described.members = record
                        .members
                        .values()
                        .map(|m| {
                            let mut member = DescribedGroupMember::default();
                            member.member_id = str_bytes(&m.member_id);
                            if cx.version >= 4 && !m.instance_id.is_empty() {
                                member.group_instance_id = Some(str_bytes(&m.instance_id));
                            }
                            member.member_assignment = encode_assignment(&m.assigned);
                            member
                        })
                        .collect();
                }
            }
            Err(e) => {
                described.error_code = group_code(cx, &e);
                if cx.version >= 6 {
                    described.error_message = Some(str_bytes(message(&e)));
                }
            }
        }
        if cx.version >= 3 {
            described.authorized_operations = i32::MIN;
        }
        described.group_id = group_id;
        response.groups.push(described);
    }
    ResponseKind::DescribeGroups(response)
}

/// Partitions in the consumer protocol's assignment encoding (version 0).
fn encode_assignment(partitions: &BTreeSet<(String, u32)>) -> Bytes {
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, p) in partitions {
        by_topic.entry(topic).or_default().push(*p as i32);
    }
    let mut assignment = ConsumerProtocolAssignment::default();
    assignment.assigned_partitions = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            let mut tp = TopicPartition::default();
            tp.topic = TopicName(str_bytes(topic));
            tp.partitions = partitions;
            tp
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&0i16.to_be_bytes());
    match assignment.encode(&mut buf, 0) {
        Ok(()) => buf.freeze(),
        Err(_) => Bytes::new(),
    }
}

/// DeleteGroups: each group and its offsets, only while it has no members.
pub(crate) async fn delete_groups(cx: &Context<'_>, request: DeleteGroupsRequest) -> ResponseKind {
    let mut response = DeleteGroupsResponse::default();
    for group_id in request.groups_names {
        let mut result = DeletableGroupResult::default();
        if let Err(refusal) = cx.authorize(Resource::group(&group_id)) {
            result.error_code = cx.error(refusal.error);
        } else if let Err(e) = cx.shared.agent.delete_group(&group_id).await {
            result.error_code = group_code(cx, &e);
        }
        result.group_id = group_id;
        response.results.push(result);
    }
    ResponseKind::DeleteGroups(response)
}

/// OffsetDelete: a group's committed offsets of topics its members do not subscribe to.
pub(crate) async fn offset_delete(cx: &Context<'_>, request: OffsetDeleteRequest) -> ResponseKind {
    let mut response = OffsetDeleteResponse::default();
    if let Err(refusal) = cx.authorize(Resource::group(&request.group_id)) {
        response.error_code = cx.error(refusal.error);
        return ResponseKind::OffsetDelete(response);
    }
    // READ on each topic, else its offsets stay.
    let topic_refused = cx.refused_topics(request.topics.iter().map(|t| t.name.as_str()));
    let partitions: Vec<(String, u32)> = request
        .topics
        .iter()
        .filter(|t| !topic_refused.contains_key(t.name.as_str()))
        .flat_map(|t| {
            t.partitions.iter().filter_map(move |p| {
                u32::try_from(p.partition_index)
                    .ok()
                    .map(|p| (t.name.to_string(), p))
            })
        })
        .collect();
    let kept: BTreeSet<(String, u32)> = match cx
        .shared
        .agent
        .delete_offsets(&request.group_id, &partitions)
        .await
    {
        Ok(kept) => kept.into_iter().collect(),
        Err(e) => {
            response.error_code = group_code(cx, &e);
            BTreeSet::new()
        }
    };
    response.topics = request
        .topics
        .into_iter()
        .map(|t| {
            let mut topic = OffsetDeleteResponseTopic::default();
            let name = t.name.to_string();
            topic.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut partition = OffsetDeleteResponsePartition::default();
                    partition.partition_index = p.partition_index;
                    if let Some(code) = topic_refused.get(&name) {
                        partition.error_code = *code;
                    } else if u32::try_from(p.partition_index)
                        .is_ok_and(|i| kept.contains(&(name.clone(), i)))
                    {
                        partition.error_code = cx.error(ResponseError::GroupSubscribedToTopic);
                    }
                    partition
                })
                .collect();
            topic.name = t.name;
            topic
        })
        .collect();
    ResponseKind::OffsetDelete(response)
}

/// Topic names by id and ids by name, from the agent's watched catalog.
struct TopicIds {
    by_id: BTreeMap<uuid::Uuid, String>,
    by_name: BTreeMap<String, uuid::Uuid>,
}

async fn topic_ids(cx: &Context<'_>) -> Result<TopicIds, Error> {
    let topics = cx.shared.agent.catalog().await?;
    let mut ids = TopicIds {
        by_id: BTreeMap::new(),
        by_name: BTreeMap::new(),
    };
    for t in topics {
        let id = topic_uuid(&t.topic_id);
        ids.by_id.insert(id, t.name.clone());
        ids.by_name.insert(t.name, id);
    }
    Ok(ids)
}

/// ConsumerGroupHeartbeat (KIP-848): onto the coordinator's server-side assignment, the
/// one the gRPC SDK's members use (they may share a group). A null field means
/// unchanged since the member's last heartbeat.
pub(crate) async fn consumer_group_heartbeat(
    cx: &Context<'_>,
    request: ConsumerGroupHeartbeatRequest,
) -> ResponseKind {
    let mut response = ConsumerGroupHeartbeatResponse::default();
    // READ on the group; DESCRIBE on each topic subscribed by name.
    let refused = cx
        .authorize(Resource::group(&request.group_id))
        .err()
        .or_else(|| {
            request
                .subscribed_topic_names
                .iter()
                .flatten()
                .find_map(|t| cx.authorize(Resource::topic(t)).err())
        });
    if let Some(refusal) = refused {
        response.error_code = cx.error(refusal.error);
        response.error_message = Some(str_bytes(refusal.message));
        return ResponseKind::ConsumerGroupHeartbeat(response);
    }
    let ids = match topic_ids(cx).await {
        Ok(ids) => ids,
        Err(e) => {
            response.error_code = group_code(cx, &e);
            response.error_message = Some(str_bytes(message(&e)));
            return ResponseKind::ConsumerGroupHeartbeat(response);
        }
    };
    let unchanged = Unchanged {
        topics: request.subscribed_topic_names.is_none(),
        topic_regex: request.subscribed_topic_regex.is_none(),
        assignor: request.server_assignor.is_none(),
        owned: request.topic_partitions.is_none(),
        rebalance_timeout: request.rebalance_timeout_ms < 0,
    };
    // Partitions of topics this agent does not know (deleted) are left out.
    let owned: Vec<pb::TopicPartitions> = request
        .topic_partitions
        .unwrap_or_default()
        .into_iter()
        .filter_map(|tp| {
            ids.by_id.get(&tp.topic_id).map(|name| pb::TopicPartitions {
                topic: name.clone(),
                partitions: tp.partitions,
            })
        })
        .collect();
    let heartbeat = pb::HeartbeatRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch as i64,
        instance_id: optional(&request.instance_id),
        topics: request
            .subscribed_topic_names
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.to_string())
            .collect(),
        topic_regex: optional(&request.subscribed_topic_regex),
        assignor: optional(&request.server_assignor),
        session_timeout_ms: 0,
        rebalance_timeout_ms: request.rebalance_timeout_ms.max(0),
        owned,
    };
    match cx.shared.agent.member_heartbeat(heartbeat, unchanged).await {
        Ok(answer) => {
            response.member_id = Some(str_bytes(answer.member_id));
            response.member_epoch = answer.member_epoch as i32;
            response.heartbeat_interval_ms = answer.heartbeat_interval_ms;
            if answer.member_epoch > 0 {
                let mut assignment = ConsumerAssignment::default();
                assignment.topic_partitions = answer
                    .assignment
                    .into_iter()
                    .filter_map(|tp| {
                        ids.by_name.get(&tp.topic).map(|id| {
                            let mut t = ConsumerTopicPartitions::default();
                            t.topic_id = *id;
                            t.partitions = tp.partitions;
                            t
                        })
                    })
                    .collect();
                response.assignment = Some(assignment);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "kafka consumer_group_heartbeat refused");
            response.error_code = group_code(cx, &e);
            response.error_message = Some(str_bytes(message(&e)));
        }
    }
    ResponseKind::ConsumerGroupHeartbeat(response)
}

/// ConsumerGroupDescribe (KIP-848): groups of the consumer protocol. A classic group is
/// GROUP_ID_NOT_FOUND here, as in Kafka, so the AdminClient asks DescribeGroups.
pub(crate) async fn consumer_group_describe(
    cx: &Context<'_>,
    request: ConsumerGroupDescribeRequest,
) -> ResponseKind {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup, Member, TopicPartitions,
    };
    let mut response = ConsumerGroupDescribeResponse::default();
    let ids = topic_ids(cx).await;
    for group_id in request.group_ids {
        let mut described = DescribedGroup::default();
        described.authorized_operations = i32::MIN;
        if let Err(refusal) = cx.authorize(Resource::group(&group_id)) {
            described.error_code = cx.error(refusal.error);
            described.error_message = Some(str_bytes(refusal.message));
            described.group_id = group_id;
            response.groups.push(described);
            continue;
        }
        let stored = cx.shared.agent.group_record(&group_id).await;
        let record = match (&ids, &stored) {
            (Err(e), _) | (_, Err(e)) => {
                described.error_code = group_code(cx, e);
                described.error_message = Some(str_bytes(message(e)));
                None
            }
            (_, Ok(None)) => {
                described.error_code = cx.error(ResponseError::GroupIdNotFound);
                described.error_message =
                    Some(str_bytes(format!("group '{}' does not exist", &*group_id)));
                None
            }
            (_, Ok(Some(record))) if classic_of(record).is_some() => {
                described.error_code = cx.error(ResponseError::GroupIdNotFound);
                described.error_message = Some(str_bytes(format!(
                    "group '{}' is a classic group: describe it with DescribeGroups",
                    &*group_id
                )));
                None
            }
            (_, Ok(Some(record))) => Some(record),
        };
        if let (Some(record), Ok(ids)) = (record, &ids) {
            let assignment = |partitions: &BTreeSet<(String, u32)>| {
                let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (topic, p) in partitions {
                    by_topic.entry(topic).or_default().push(*p as i32);
                }
                let mut a = Assignment::default();
                a.topic_partitions = by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut tp = TopicPartitions::default();
                        tp.topic_id = ids.by_name.get(topic).copied().unwrap_or_default();
                        tp.topic_name = TopicName(str_bytes(topic));
                        tp.partitions = partitions;
                        tp
                    })
                    .collect();
                a
            };
            let (state, _) = kafka_state(record);
            described.group_state = str_bytes(state);
            described.group_epoch = record.epoch as i32;
            described.assignment_epoch = record.assignment_epoch as i32;
            described.assignor_name = str_bytes(&record.assignor);
            described.members = record
                .members
                .values()
                .map(|m| {
                    let mut member = Member::default();
                    member.member_id = str_bytes(&m.member_id);
                    member.instance_id =
                        (!m.instance_id.is_empty()).then(|| str_bytes(&m.instance_id));
                    member.member_epoch = m.epoch as i32;
                    member.subscribed_topic_names =
                        m.topics.iter().map(|t| TopicName(str_bytes(t))).collect();
                    member.subscribed_topic_regex =
                        (!m.topic_regex.is_empty()).then(|| str_bytes(&m.topic_regex));
                    let owned: BTreeSet<(String, u32)> =
                        m.assigned.union(&m.revoking).cloned().collect();
                    member.assignment = assignment(&owned);
                    member.target_assignment = assignment(&m.target);
                    if cx.version >= 1 {
                        // 1: a member of the consumer protocol (0 would be classic).
                        member.member_type = 1;
                    }
                    member
                })
                .collect();
        }
        described.group_id = group_id;
        response.groups.push(described);
    }
    ResponseKind::ConsumerGroupDescribe(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn a_consumer_assignment_round_trips_and_other_bytes_stay_opaque() {
        let partitions: BTreeSet<(String, u32)> = [
            ("a".to_string(), 0),
            ("a".to_string(), 3),
            ("b".to_string(), 1),
        ]
        .into();
        let bytes = encode_assignment(&partitions);
        assert_eq!(assigned_partitions("consumer", &bytes), partitions);
        assert!(assigned_partitions("connect", &bytes).is_empty());
        assert!(assigned_partitions("consumer", &Bytes::from_static(b"\x00")).is_empty());
    }

    #[test]
    fn a_subscription_of_a_newer_version_is_read_as_the_newest_known() {
        let mut subscription = ConsumerProtocolSubscription::default();
        subscription.topics = vec![str_bytes("b"), str_bytes("a")];
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&3i16.to_be_bytes());
        subscription.encode(&mut buf, 3).unwrap();
        let bytes = buf.freeze();
        assert_eq!(subscription_topics("consumer", &bytes), vec!["a", "b"]);
        let mut newer = bytes.to_vec();
        newer[1] = 9;
        assert_eq!(
            subscription_topics("consumer", &Bytes::from(newer)),
            vec!["a", "b"]
        );
    }
}
