//! Produce, Fetch, ListOffsets, OffsetForLeaderEpoch and InitProducerId: records in and
//! out, as the client's batches.
//!
//! - Produce: each partition's records are one RecordBatch v2, checked
//!   ([`strata_storage::record::decode_client_batch`]: CRC, codec, record framing) and
//!   appended as sent through [`strata_agent::Agent::append_client_batch`], so the
//!   idempotent producer's sequence rules, the limits and the topic's configuration are the
//!   gRPC path's. acks=1 means acks=all here (replication is the object store's). The
//!   batches of one request are appended in order; the answer waits for their commits.
//! - Fetch: whole stored batches from the one holding the offset asked for, unchanged,
//!   with the aborted transactions a `read_committed` client needs to skip. Fetch sessions
//!   are declined (session id 0): every fetch is a full one.
//! - OffsetForLeaderEpoch: a committed record is never truncated, so every epoch up to the
//!   current one ends at the high watermark.

use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProducerId, ResponseKind, TopicName};
use strata_agent::{Appended, BatchFetch, FetchSpec, Isolation, OffsetSpec};

use strata_agent::auth::Resource;

use super::{Context, Outcome, str_bytes};
use crate::error::Context as ErrorContext;
use crate::server::Pending;

/// Longest a fetch waits for records (Kafka clients ask for 500 ms by default).
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Partitions a fetch reads at once.
const READ_CHUNK: usize = 8;

/// One partition's place in a produce answer: settled, or waiting for its commit.
enum Slot {
    Settled(PartitionProduceResponse),
    Waiting(i32, Appended),
}

fn produce_error(cx: &Context<'_>, index: i32, code: i16, message: String) -> Slot {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = code;
    p.base_offset = -1;
    tracing::debug!(partition = index, code, %message, "kafka produce refused");
    if cx.version >= 8 {
        p.error_message = Some(str_bytes(message));
    }
    Slot::Settled(p)
}

/// Produce: appends each partition's batch in request order, then answers once they are
/// committed (acks=0: not at all).
pub(crate) async fn produce(cx: &Context<'_>, request: ProduceRequest) -> Outcome {
    let agent = &cx.shared.agent;
    let acks = request.acks;
    let transactional_id = request.transactional_id.map(|t| t.0.to_string());
    // A transactional id the caller may not write refuses every partition.
    let id_refused = transactional_id
        .as_deref()
        .and_then(|id| cx.authorize(Resource::transactional_id(id)).err());
    let mut topics: Vec<(TopicName, Vec<Slot>)> = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let refused = id_refused
            .clone()
            .or_else(|| cx.authorize(Resource::topic(&name)).err());
        let mut slots = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let index = partition.index;
            if let Some(refusal) = &refused {
                slots.push(produce_error(
                    cx,
                    index,
                    cx.error(refusal.error),
                    refusal.message.clone(),
                ));
                continue;
            }
            if !matches!(acks, -1..=1) {
                slots.push(produce_error(
                    cx,
                    index,
                    cx.error(ResponseError::InvalidRequiredAcks),
                    format!("acks={acks} is not one of -1 (all), 0 and 1"),
                ));
                continue;
            }
            let records = partition.records.unwrap_or_default();
            let decoded = agent.decode_client_batch(records).await;
            let batch = match decoded {
                Ok(batch) => batch.detached(),
                Err(e) => {
                    let error = if e.corrupt {
                        ResponseError::CorruptMessage
                    } else if e.too_large {
                        ResponseError::MessageTooLarge
                    } else {
                        ResponseError::InvalidRecord
                    };
                    slots.push(produce_error(cx, index, cx.error(error), e.reason));
                    continue;
                }
            };
            let appended = agent
                .append_client_batch(
                    &name,
                    "",
                    index,
                    batch,
                    transactional_id.as_deref(),
                    acks != 0,
                )
                .await;
            slots.push(match appended {
                Ok(appended) => Slot::Waiting(index, appended),
                Err(e) => produce_error(
                    cx,
                    index,
                    cx.agent_error(&e, ErrorContext::Produce),
                    crate::error::message(&e),
                ),
            });
        }
        topics.push((topic.name, slots));
    }
    if acks == 0 {
        // Nothing is answered; a refused batch closes the connection instead, as Kafka
        // does, so that the producer finds out (and refreshes its metadata).
        let refused = topics
            .iter()
            .flat_map(|(_, slots)| slots)
            .find_map(|slot| match slot {
                Slot::Settled(p) if p.error_code != 0 => Some(p.error_code),
                _ => None,
            });
        return match refused {
            Some(code) => Outcome::Close(format!(
                "an acks=0 produce was refused (error {code}); closing so the producer notices"
            )),
            None => Outcome::NoReply,
        };
    }
    let shared = cx.shared.clone();
    let (version, api, peer, caller) = (cx.version, cx.api, cx.peer, cx.caller.clone());
    Outcome::Reply(Pending::Later(Box::pin(async move {
        let cx = Context {
            shared: &shared,
            version,
            api,
            client_id: "",
            peer,
            caller,
        };
        let mut response = ProduceResponse::default();
        for (name, slots) in topics {
            let mut topic = TopicProduceResponse::default();
            topic.name = name;
            for slot in slots {
                let partition = match slot {
                    Slot::Settled(p) => p,
                    Slot::Waiting(index, appended) => {
                        let log_append_time_ms = appended.log_append_time_ms;
                        match appended.committed().await {
                            Ok(positions) => {
                                let mut p = PartitionProduceResponse::default();
                                p.index = index;
                                p.base_offset = positions.first().map_or(-1, |(_, offset)| *offset);
                                p.log_append_time_ms = log_append_time_ms;
                                p
                            }
                            Err(e) => match produce_error(
                                &cx,
                                index,
                                cx.agent_error(&e, ErrorContext::Produce),
                                crate::error::message(&e),
                            ) {
                                Slot::Settled(p) => p,
                                Slot::Waiting(..) => unreachable!("an error is settled"),
                            },
                        }
                    }
                };
                topic.partition_responses.push(partition);
            }
            response.responses.push(topic);
        }
        ResponseKind::Produce(response)
    })))
}

/// One partition of a fetch.
struct Wanted {
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// Fetch: every partition asked for, at once; when none has records yet, waits (up to the
/// request's max wait) for the first that has, then reads them all again.
pub(crate) async fn fetch(cx: &Context<'_>, request: FetchRequest) -> ResponseKind {
    let v = cx.version;
    let agent = &cx.shared.agent;
    let mut response = FetchResponse::default();
    if v >= 7 && request.session_id != 0 {
        // This listener never creates a session, so it cannot know this one.
        response.error_code = cx.error(ResponseError::FetchSessionIdNotFound);
        return ResponseKind::Fetch(response);
    }
    let isolation = if request.isolation_level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    // KIP-392: a client that says which zone it is in (`client.rack`) and is not in this
    // agent's is pointed at an agent of its zone, for every partition (any agent serves
    // any partition's reads): it gets the partitions' bounds here, and no records.
    let rack = if v >= 11 {
        request.rack_id.as_str()
    } else {
        ""
    };
    let client_zone = agent.client_zone(rack);
    let mut in_rack: Vec<i32> = if client_zone == "other_zone" {
        super::metadata::brokers(&agent.live_agents())
            .values()
            .filter(|b| b.rack.as_deref() == Some(rack))
            .map(|b| b.node_id)
            .collect()
    } else {
        Vec::new()
    };
    in_rack.sort_unstable();
    let redirect = !in_rack.is_empty();
    let max_wait = if redirect {
        Duration::ZERO
    } else {
        Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT)
    };
    let response_max = request.max_bytes.max(1) as usize;
    let limits = &agent.config().limits;
    let response_max = response_max.min(limits.max_fetch_bytes);
    let names: Vec<String> = request
        .topics
        .iter()
        .map(|t| t.topic.0.to_string())
        .collect();
    let wanted: Vec<Wanted> = request
        .topics
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            t.partitions.iter().map(move |p| Wanted {
                topic: i,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: (p.partition_max_bytes.max(1) as usize).min(response_max),
            })
        })
        .collect();
    // A partition named twice is answered once; the request is refused beyond the
    // cluster's partition count; topics the caller may not read are not read.
    let mut seen = std::collections::HashSet::new();
    let topic_refused: Vec<Option<ResponseError>> = names
        .iter()
        .map(|name| cx.authorize(Resource::topic(name)).err().map(|r| r.error))
        .collect();
    let refused: Vec<Option<ResponseError>> = wanted
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let over = i >= limits.max_partitions as usize;
            topic_refused[w.topic].or((over || !seen.insert((w.topic, w.partition)))
                .then_some(ResponseError::InvalidRequest))
        })
        .collect();
    let read = |w: &Wanted, max_bytes: usize, wait: Duration| {
        let spec = FetchSpec {
            offset: w.offset,
            max_bytes,
            max_wait: wait,
            isolation,
        };
        agent.fetch_batches(&names[w.topic], "", w.partition, spec)
    };
    // Read in order, a few partitions at a time, each within what is left of the
    // answer's budget: a fetch reads about what it returns, never every partition's
    // maximum.
    let read_all = || async {
        let mut results = Vec::with_capacity(wanted.len());
        let mut remaining = response_max;
        for (chunk, refused) in wanted.chunks(READ_CHUNK).zip(refused.chunks(READ_CHUNK)) {
            let share = (remaining / chunk.len()).max(1);
            let reads = chunk.iter().zip(refused).map(|(w, refused)| async move {
                if refused.is_some() {
                    // Answered with its error: not read at all.
                    return Err(strata_agent::Error::InvalidArgument(String::new()));
                }
                // Out of budget (or pointed elsewhere): the bounds alone.
                let budget = if remaining == 0 || redirect {
                    0
                } else {
                    w.max_bytes.min(share)
                };
                read(w, budget, Duration::ZERO).await
            });
            for result in futures::future::join_all(reads).await {
                if let Ok(fetched) = &result {
                    let read: usize = fetched.batches.iter().map(|b| b.bytes.len()).sum();
                    remaining = remaining.saturating_sub(read);
                }
                results.push(result);
            }
        }
        results
    };
    let mut results = read_all().await;
    let found = |results: &[strata_agent::Result<BatchFetch>]| {
        results
            .iter()
            .any(|r| r.as_ref().map_or(true, |f| !f.batches.is_empty()))
    };
    if !found(&results) && !max_wait.is_zero() && !wanted.is_empty() {
        // Wait for the first partition with records (or the deadline), reading nothing
        // meanwhile, then read them all.
        let mut waiting: futures::stream::FuturesUnordered<_> = wanted
            .iter()
            .zip(&refused)
            .filter(|(_, refused)| refused.is_none())
            .map(|(w, _)| async move { (w.offset, read(w, 0, max_wait).await) })
            .collect();
        let deadline = tokio::time::sleep(max_wait);
        tokio::pin!(deadline);
        let readable = |f: &BatchFetch| match isolation {
            Isolation::ReadUncommitted => f.high_watermark,
            Isolation::ReadCommitted => f.last_stable_offset,
        };
        loop {
            tokio::select! {
                next = waiting.next() => match next {
                    Some((offset, Ok(f))) if readable(&f) <= offset => continue,
                    _ => break,
                },
                () = &mut deadline => break,
            }
        }
        drop(waiting);
        results = read_all().await;
        if !found(&results) {
            // New offsets that hold no batch a fetch returns (a compacted tail): wait out
            // the rest of max_wait rather than answer at once and be asked again at once.
            deadline.await;
        }
    }
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = t.topic.clone();
            topic.topic_id = t.topic_id;
            topic
        })
        .collect();
    let mut total = 0usize;
    for ((w, result), refused) in wanted.iter().zip(results).zip(refused) {
        let mut p = PartitionData::default();
        p.partition_index = w.partition;
        p.aborted_transactions = None;
        if let Some(error) = refused {
            p.error_code = cx.error(error);
            p.high_watermark = -1;
            topics[w.topic].partitions.push(p);
            continue;
        }
        match result {
            Ok(fetched) => {
                p.high_watermark = fetched.high_watermark;
                p.last_stable_offset = fetched.last_stable_offset;
                if v >= 5 {
                    p.log_start_offset = fetched.log_start_offset;
                }
                if redirect {
                    // Spread over the zone's agents, the same one for a partition.
                    let name = &names[w.topic];
                    let spread = name.bytes().map(u64::from).sum::<u64>() + w.partition as u64;
                    p.preferred_read_replica =
                        BrokerId(in_rack[(spread % in_rack.len() as u64) as usize]);
                }
                let mut records = BytesMut::new();
                for batch in &fetched.batches {
                    if total > 0 && total + batch.bytes.len() > response_max {
                        break;
                    }
                    total += batch.bytes.len();
                    records.extend_from_slice(&batch.bytes);
                }
                if isolation == Isolation::ReadCommitted {
                    p.aborted_transactions = Some(
                        fetched
                            .aborted
                            .iter()
                            .map(|(producer_id, first_offset)| {
                                let mut t = AbortedTransaction::default();
                                t.producer_id = ProducerId(*producer_id);
                                t.first_offset = *first_offset;
                                t
                            })
                            .collect(),
                    );
                }
                p.records = Some(records.freeze());
            }
            Err(e) => {
                p.error_code = cx.agent_error(&e, ErrorContext::Other);
                p.high_watermark = -1;
                if let strata_agent::Error::OffsetOutOfRange {
                    log_start_offset,
                    high_watermark,
                    ..
                } = e
                {
                    p.high_watermark = high_watermark;
                    if v >= 5 {
                        p.log_start_offset = log_start_offset;
                    }
                }
            }
        }
        topics[w.topic].partitions.push(p);
    }
    response.responses = topics;
    agent
        .metrics()
        .fetch_zone_bytes
        .with_label_values(&["kafka", client_zone])
        .inc_by(total as u64);
    ResponseKind::Fetch(response)
}

/// ListOffsets: earliest (-2), latest (-1: the last stable offset for `read_committed`),
/// max timestamp (-3), earliest local (-4, the same as earliest here), or the first
/// offset at or after a timestamp.
pub(crate) async fn list_offsets(cx: &Context<'_>, request: ListOffsetsRequest) -> ResponseKind {
    let agent = &cx.shared.agent;
    let mut response = ListOffsetsResponse::default();
    let committed = cx.version >= 2 && request.isolation_level == 1;
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic.name;
        let refused = cx.authorize(Resource::topic(&name)).err();
        for partition in topic.partitions {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = partition.partition_index;
            if let Some(refusal) = &refused {
                p.error_code = cx.error(refusal.error);
                p.offset = -1;
                out.partitions.push(p);
                continue;
            }
            let spec = match partition.timestamp {
                -2 | -4 => Some(OffsetSpec::Earliest),
                -1 => Some(OffsetSpec::Latest),
                -3 => Some(OffsetSpec::MaxTimestamp),
                t if t >= 0 => Some(OffsetSpec::Timestamp(t)),
                _ => None,
            };
            let found = match spec {
                None => Err(ResponseError::InvalidRequest.code()),
                Some(OffsetSpec::Latest) if committed => {
                    last_stable_offset(cx, &name, partition.partition_index).await
                }
                Some(spec) => agent
                    .list_offsets(&name, &[partition.partition_index], spec)
                    .await
                    .map(|found| {
                        found
                            .first()
                            .map_or((-1, -1), |(_, offset, ts)| (*offset, *ts))
                    })
                    .map_err(|e| cx.agent_error(&e, ErrorContext::Other)),
            };
            match found {
                Ok((offset, timestamp)) => {
                    p.offset = offset;
                    p.timestamp = timestamp;
                }
                Err(code) => {
                    p.error_code = code;
                    p.offset = -1;
                }
            }
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    ResponseKind::ListOffsets(response)
}

/// A partition's last stable offset (as `(offset, -1)`), as committed.
async fn last_stable_offset(
    cx: &Context<'_>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), i16> {
    let (_, partitions) = cx
        .shared
        .agent
        .describe_topic(topic)
        .await
        .map_err(|e| cx.agent_error(&e, ErrorContext::Other))?;
    partitions
        .iter()
        .find(|d| i64::from(d.partition) == i64::from(partition))
        .map(|d| (d.state.last_stable_offset, -1))
        .ok_or_else(|| cx.error(ResponseError::UnknownTopicOrPartition))
}

/// OffsetForLeaderEpoch: every epoch up to the partition's current one ends at its high
/// watermark, since nothing committed is ever truncated.
pub(crate) async fn offset_for_leader_epoch(
    cx: &Context<'_>,
    request: OffsetForLeaderEpochRequest,
) -> ResponseKind {
    let agent = &cx.shared.agent;
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let mut out = OffsetForLeaderTopicResult::default();
        out.topic = topic.topic;
        if let Err(refusal) = cx.authorize(Resource::topic(&name)) {
            for partition in topic.partitions {
                let mut p = EpochEndOffset::default();
                p.partition = partition.partition;
                p.error_code = cx.error(refusal.error);
                out.partitions.push(p);
            }
            response.topics.push(out);
            continue;
        }
        let described = agent.describe_topic(&name).await;
        for partition in topic.partitions {
            let mut p = EpochEndOffset::default();
            p.partition = partition.partition;
            match &described {
                Ok((_, partitions)) => {
                    match partitions
                        .iter()
                        .find(|d| i64::from(d.partition) == i64::from(partition.partition))
                    {
                        Some(d) => {
                            let current = d
                                .state
                                .owner
                                .as_ref()
                                .map_or(0, |o| (o.epoch % i32::MAX as u64) as i32);
                            p.leader_epoch = partition.leader_epoch.min(current);
                            p.end_offset = d.state.high_watermark;
                        }
                        None => {
                            p.error_code = cx.error(ResponseError::UnknownTopicOrPartition);
                        }
                    }
                }
                Err(e) => p.error_code = cx.agent_error(e, ErrorContext::Other),
            }
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    ResponseKind::OffsetForLeaderEpoch(response)
}

/// InitProducerId: for an idempotent producer a new producer id, epoch 0; for a
/// transactional one, its id's ([`super::txn`]).
pub(crate) async fn init_producer_id(
    cx: &Context<'_>,
    request: InitProducerIdRequest,
) -> ResponseKind {
    if let Some(id) = request.transactional_id.clone() {
        return super::txn::init_transactional_producer(cx, request, &id).await;
    }
    let mut response = InitProducerIdResponse::default();
    // IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (as Kafka since 2.8).
    let may_write = cx.shared.agent.authorizer().permits_on_any(
        &cx.caller,
        strata_metastore::AclOperation::Write,
        strata_metastore::ResourceType::Topic,
    );
    if !may_write && let Err(refusal) = cx.authorize(Resource::cluster()) {
        response.error_code = cx.error(refusal.error);
        response.producer_id = ProducerId(-1);
        response.producer_epoch = -1;
        return ResponseKind::InitProducerId(response);
    }
    match cx.shared.agent.init_producer_id().await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            response.error_code = cx.agent_error(&e, ErrorContext::Other);
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
        }
    }
    ResponseKind::InitProducerId(response)
}
