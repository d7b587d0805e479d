//! Transactions: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions, ListTransactions —
//! onto the agent's transaction coordinator (the one the gRPC `Transactions` service
//! uses: same placement, same etcd record, same markers).
//!
//! A transactional id's requests go to its coordinator (FindCoordinator with key type 1;
//! any other agent answers NOT_COORDINATOR), except TxnOffsetCommit, which Kafka sends to
//! the group's coordinator: that agent checks the member (KIP-447) and hands the offsets
//! to the transaction's coordinator, wherever it is. The offsets are committed with the
//! commit decision, in the same etcd write.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use kafka_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnRequest;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use kafka_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState,
};
use kafka_protocol::messages::end_txn_request::EndTxnRequest;
use kafka_protocol::messages::end_txn_response::EndTxnResponse;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_transactions_request::ListTransactionsRequest;
use kafka_protocol::messages::list_transactions_response::{
    ListTransactionsResponse, TransactionState as ListedTransaction,
};
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequest;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ProducerId, ResponseKind, TopicName, TransactionalId};
use strata_agent::Error;
use strata_agent::transaction::{
    MAX_TRANSACTION_OFFSETS, MAX_TRANSACTION_TIMEOUT_MS, TransactionalProducer,
};
use strata_metastore::{CommittedOffset, TransactionStatus};

use strata_agent::auth::Resource;

use super::{Context, str_bytes};
use crate::error::Context as ErrorContext;

/// Most transactional ids one DescribeTransactions reads (one etcd read each); the rest
/// are answered INVALID_REQUEST.
const MAX_DESCRIBED: usize = 1_000;

fn txn_code(cx: &Context<'_>, error: &Error) -> i16 {
    cx.agent_error(error, ErrorContext::Transaction)
}

fn producer(id: &TransactionalId, producer_id: ProducerId, epoch: i16) -> TransactionalProducer {
    TransactionalProducer {
        transactional_id: id.to_string(),
        producer_id: producer_id.0,
        epoch,
    }
}

/// InitProducerId with a transactional id: the id's producer id and a new epoch, which
/// fences every older producer of the id; its open transaction is aborted (or a prepared
/// one finished) first.
pub(crate) async fn init_transactional_producer(
    cx: &Context<'_>,
    request: InitProducerIdRequest,
    transactional_id: &str,
) -> ResponseKind {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if let Err(refusal) = cx.authorize(Resource::transactional_id(transactional_id)) {
        response.error_code = cx.error(refusal.error);
        return ResponseKind::InitProducerId(response);
    }
    let timeout = request.transaction_timeout_ms;
    if timeout <= 0 || i64::from(timeout) > MAX_TRANSACTION_TIMEOUT_MS as i64 {
        tracing::debug!(
            timeout,
            "kafka init_producer_id: transaction timeout out of range"
        );
        response.error_code = cx.error(ResponseError::InvalidTransactionTimeout);
        return ResponseKind::InitProducerId(response);
    }
    // KIP-360 (v3+): a producer that names its current id and epoch asks for the next
    // epoch; anyone else naming them is a zombie.
    if cx.version >= 3 && request.producer_id.0 != -1 {
        match cx.shared.agent.describe_transaction(transactional_id).await {
            Ok(record) if record.producer_id != request.producer_id.0 => {
                response.error_code = cx.error(ResponseError::InvalidProducerIdMapping);
                return ResponseKind::InitProducerId(response);
            }
            Ok(record) if record.epoch == request.producer_epoch => {}
            Ok(record)
                if record.epoch == request.producer_epoch.saturating_add(1)
                    && matches!(
                        record.status,
                        TransactionStatus::Empty
                            | TransactionStatus::CompleteCommit
                            | TransactionStatus::CompleteAbort
                    ) =>
            {
                // A retry of a bump that was done: its answer again.
                response.producer_id = ProducerId(record.producer_id);
                response.producer_epoch = record.epoch;
                return ResponseKind::InitProducerId(response);
            }
            Ok(_) => {
                response.error_code = cx.error(if cx.version >= 4 {
                    ResponseError::ProducerFenced
                } else {
                    ResponseError::InvalidProducerEpoch
                });
                return ResponseKind::InitProducerId(response);
            }
            Err(e @ (Error::NotCoordinator { .. } | Error::Unavailable(_))) => {
                response.error_code = txn_code(cx, &e);
                return ResponseKind::InitProducerId(response);
            }
            Err(_) => {
                response.error_code = cx.error(ResponseError::InvalidProducerIdMapping);
                return ResponseKind::InitProducerId(response);
            }
        }
    }
    match cx
        .shared
        .agent
        .init_transactions_finishing(transactional_id, i64::from(timeout))
        .await
    {
        Ok((producer_id, epoch)) => {
            response.producer_id = ProducerId(producer_id);
            response.producer_epoch = epoch;
        }
        Err(e) => {
            tracing::debug!(error = %e, transactional_id, "kafka init_producer_id refused");
            response.error_code = txn_code(cx, &e);
        }
    }
    ResponseKind::InitProducerId(response)
}

/// AddPartitionsToTxn (v0–3, a client's): every partition gets the one outcome.
pub(crate) async fn add_partitions_to_txn(
    cx: &Context<'_>,
    request: AddPartitionsToTxnRequest,
) -> ResponseKind {
    let partitions: Vec<(String, Vec<i32>)> = request
        .v3_and_below_topics
        .iter()
        .map(|t| (t.name.to_string(), t.partitions.clone()))
        .collect();
    let who = producer(
        &request.v3_and_below_transactional_id,
        request.v3_and_below_producer_id,
        request.v3_and_below_producer_epoch,
    );
    // WRITE on the transactional id and on every topic, else nothing is added: the
    // refused topics say why, the others OPERATION_NOT_ATTEMPTED.
    let id_refused = cx
        .authorize(Resource::transactional_id(
            &request.v3_and_below_transactional_id,
        ))
        .err()
        .map(|r| cx.error(r.error));
    let topic_refused: BTreeMap<String, i16> = if id_refused.is_some() {
        BTreeMap::new()
    } else {
        cx.refused_topics(partitions.iter().map(|(topic, _)| topic.as_str()))
    };
    let code = if let Some(code) = id_refused {
        code
    } else if !topic_refused.is_empty() {
        cx.error(ResponseError::OperationNotAttempted)
    } else {
        match cx
            .shared
            .agent
            .add_partitions_to_transaction(&who, &partitions)
            .await
        {
            Ok(()) => 0,
            Err(e) => {
                tracing::debug!(error = %e, "kafka add_partitions_to_txn refused");
                txn_code(cx, &e)
            }
        }
    };
    let mut response = AddPartitionsToTxnResponse::default();
    response.results_by_topic_v3_and_below = request
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            let mut topic = AddPartitionsToTxnTopicResult::default();
            topic.results_by_partition = t
                .partitions
                .iter()
                .map(|p| {
                    let mut partition = AddPartitionsToTxnPartitionResult::default();
                    partition.partition_index = *p;
                    partition.partition_error_code =
                        topic_refused.get(t.name.as_str()).copied().unwrap_or(code);
                    partition
                })
                .collect();
            topic.name = t.name;
            topic
        })
        .collect();
    ResponseKind::AddPartitionsToTxn(response)
}

/// AddOffsetsToTxn: opens the transaction for the group's offsets, which TxnOffsetCommit
/// then brings.
pub(crate) async fn add_offsets_to_txn(
    cx: &Context<'_>,
    request: AddOffsetsToTxnRequest,
) -> ResponseKind {
    let who = producer(
        &request.transactional_id,
        request.producer_id,
        request.producer_epoch,
    );
    let mut response = AddOffsetsToTxnResponse::default();
    let refused = cx
        .authorize(Resource::transactional_id(&request.transactional_id))
        .and_then(|()| cx.authorize(Resource::group(&request.group_id)));
    if let Err(refusal) = refused {
        response.error_code = cx.error(refusal.error);
        return ResponseKind::AddOffsetsToTxn(response);
    }
    if let Err(e) = cx
        .shared
        .agent
        .add_offsets_to_transaction(&who, &request.group_id, &[])
        .await
    {
        tracing::debug!(error = %e, "kafka add_offsets_to_txn refused");
        response.error_code = txn_code(cx, &e);
    }
    ResponseKind::AddOffsetsToTxn(response)
}

/// TxnOffsetCommit, at the group's coordinator: the member checked, the offsets added to
/// the transaction at its coordinator.
pub(crate) async fn txn_offset_commit(
    cx: &Context<'_>,
    request: TxnOffsetCommitRequest,
) -> ResponseKind {
    let agent = &cx.shared.agent;
    let now = agent.clock_ms();
    let mut offsets = Vec::new();
    let mut refused = None;
    // WRITE on the transactional id and READ on the group, else nothing; READ on each
    // topic, else its offsets are left out.
    let denied = cx
        .authorize(Resource::transactional_id(&request.transactional_id))
        .and_then(|()| cx.authorize(Resource::group(&request.group_id)))
        .err()
        .map(|r| cx.error(r.error));
    let topic_refused = cx.refused_topics(request.topics.iter().map(|t| t.name.as_str()));
    let count: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
    if count > MAX_TRANSACTION_OFFSETS {
        refused = Some(Error::InvalidArgument(format!(
            "a transaction commits at most {MAX_TRANSACTION_OFFSETS} group offsets; this \
             request names {count}"
        )));
    }
    let named = if refused.is_some() {
        &[][..]
    } else {
        &request.topics[..]
    };
    for t in named {
        let name = t.name.to_string();
        if denied.is_some() || topic_refused.contains_key(&name) {
            continue;
        }
        for p in &t.partitions {
            match u32::try_from(p.partition_index) {
                Ok(partition) => offsets.push((
                    name.clone(),
                    partition,
                    CommittedOffset {
                        offset: p.committed_offset,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        committed_at_ms: now,
                    },
                )),
                Err(_) => {
                    refused = Some(Error::InvalidArgument(format!(
                        "partition {} of '{}' is negative",
                        p.partition_index, &*t.name
                    )));
                }
            }
        }
    }
    let result = match refused {
        Some(e) => Err(e),
        None if denied.is_some() => Ok(()),
        None => {
            let checked = if cx.version >= 3 {
                agent
                    .check_group_member(
                        &request.group_id,
                        &request.member_id,
                        request
                            .group_instance_id
                            .as_ref()
                            .map(|s| s.as_str())
                            .unwrap_or(""),
                        request.generation_id,
                    )
                    .await
            } else {
                Ok(())
            };
            match checked {
                // The group's coordinator moved: the client finds it again.
                Err(Error::NotCoordinator { .. }) => Err(Error::NotCoordinator {
                    group: request.group_id.to_string(),
                    reason: "checking the member needs the group's coordinator".to_string(),
                }),
                Ok(()) => {
                    agent
                        .add_offsets_at_coordinator(
                            producer(
                                &request.transactional_id,
                                request.producer_id,
                                request.producer_epoch,
                            ),
                            request.group_id.to_string(),
                            offsets,
                        )
                        .await
                }
                Err(e) => Err(e),
            }
        }
    };
    let code = match &result {
        Ok(()) => 0,
        Err(
            e @ (Error::UnknownMember { .. }
            | Error::IllegalGeneration { .. }
            | Error::FencedInstance { .. }),
        ) => {
            tracing::debug!(error = %e, "kafka txn_offset_commit refused");
            cx.agent_error(e, ErrorContext::Group)
        }
        // A stale member epoch (consumer protocol): the client's abortable answer.
        Err(e @ Error::FencedMember { .. }) => {
            tracing::debug!(error = %e, "kafka txn_offset_commit refused");
            cx.error(ResponseError::IllegalGeneration)
        }
        Err(e @ Error::NotCoordinator { group, .. })
            if group.as_str() == request.group_id.as_str() =>
        {
            tracing::debug!(error = %e, "kafka txn_offset_commit: not the group's coordinator");
            cx.error(ResponseError::NotCoordinator)
        }
        // The transaction's coordinator moved meanwhile: the client retries.
        Err(e @ Error::NotCoordinator { .. }) => {
            tracing::debug!(error = %e, "kafka txn_offset_commit: coordinator moved");
            cx.error(ResponseError::CoordinatorLoadInProgress)
        }
        Err(e) => {
            tracing::debug!(error = %e, "kafka txn_offset_commit refused");
            txn_code(cx, e)
        }
    };
    let mut response = TxnOffsetCommitResponse::default();
    response.topics = request
        .topics
        .into_iter()
        .map(|t| {
            let mut topic = TxnOffsetCommitResponseTopic::default();
            topic.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut partition = TxnOffsetCommitResponsePartition::default();
                    partition.partition_index = p.partition_index;
                    partition.error_code = denied
                        .or_else(|| topic_refused.get(t.name.as_str()).copied())
                        .unwrap_or(code);
                    partition
                })
                .collect();
            topic.name = t.name;
            topic
        })
        .collect();
    ResponseKind::TxnOffsetCommit(response)
}

/// EndTxn: the commit (or abort) decision, then the markers in every partition of the
/// transaction; answered once they are written.
pub(crate) async fn end_txn(cx: &Context<'_>, request: EndTxnRequest) -> ResponseKind {
    let who = producer(
        &request.transactional_id,
        request.producer_id,
        request.producer_epoch,
    );
    let mut response = EndTxnResponse::default();
    if let Err(refusal) = cx.authorize(Resource::transactional_id(&request.transactional_id)) {
        response.error_code = cx.error(refusal.error);
        return ResponseKind::EndTxn(response);
    }
    if let Err(e) = cx
        .shared
        .agent
        .end_transaction_finishing(&who, request.committed)
        .await
    {
        tracing::debug!(error = %e, "kafka end_txn refused");
        response.error_code = txn_code(cx, &e);
    }
    ResponseKind::EndTxn(response)
}

/// DescribeTransactions: each id's record.
pub(crate) async fn describe_transactions(
    cx: &Context<'_>,
    request: DescribeTransactionsRequest,
) -> ResponseKind {
    let mut response = DescribeTransactionsResponse::default();
    for (n, id) in request.transactional_ids.into_iter().enumerate() {
        if n >= MAX_DESCRIBED {
            let mut state = TransactionState::default();
            state.error_code = cx.error(ResponseError::InvalidRequest);
            state.transactional_id = id;
            response.transaction_states.push(state);
            continue;
        }
        let mut state = TransactionState::default();
        if let Err(refusal) = cx.authorize(Resource::transactional_id(&id)) {
            state.error_code = cx.error(refusal.error);
            state.transactional_id = id;
            response.transaction_states.push(state);
            continue;
        }
        match cx.shared.agent.describe_transaction(&id).await {
            Ok(record) => {
                state.transaction_state = str_bytes(record.status.name());
                state.transaction_timeout_ms = record.timeout_ms.min(i32::MAX as u64) as i32;
                state.transaction_start_time_ms = if record.started_ms > 0 {
                    record.started_ms
                } else {
                    -1
                };
                state.producer_id = ProducerId(record.producer_id);
                state.producer_epoch = record.epoch;
                state.topics = record
                    .partitions
                    .iter()
                    .map(|(topic, t)| {
                        let mut data = TopicData::default();
                        data.topic = TopicName(str_bytes(topic));
                        data.partitions = t.partitions.iter().map(|p| *p as i32).collect();
                        data
                    })
                    .collect();
            }
            Err(e) => {
                tracing::debug!(error = %e, "kafka describe_transactions");
                state.error_code = match e {
                    Error::NotCoordinator { .. } => cx.error(ResponseError::NotCoordinator),
                    Error::Unavailable(_) => cx.error(ResponseError::CoordinatorNotAvailable),
                    _ => cx.error(ResponseError::TransactionalIdNotFound),
                };
            }
        }
        state.transactional_id = id;
        response.transaction_states.push(state);
    }
    ResponseKind::DescribeTransactions(response)
}

/// ListTransactions: the ids this agent coordinates, with the state and producer
/// filters (and the duration filter, v1).
pub(crate) async fn list_transactions(
    cx: &Context<'_>,
    request: ListTransactionsRequest,
) -> ResponseKind {
    const STATES: [&str; 6] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];
    let mut response = ListTransactionsResponse::default();
    let agent = &cx.shared.agent;
    let records = match agent.list_transactions().await {
        Ok(records) => records,
        Err(e) => {
            response.error_code = txn_code(cx, &e);
            return ResponseKind::ListTransactions(response);
        }
    };
    let states: Vec<String> = request
        .state_filters
        .iter()
        .map(|s| s.to_string())
        .collect();
    response.unknown_state_filters = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = agent.clock_ms();
    for record in records {
        if !agent.coordinates(&record.transactional_id)
            || !cx.permits(Resource::transactional_id(&record.transactional_id))
        {
            continue;
        }
        let status = record.status.name();
        if !states.is_empty() && !states.iter().any(|s| s == status) {
            continue;
        }
        if !request.producer_id_filters.is_empty()
            && !request
                .producer_id_filters
                .contains(&ProducerId(record.producer_id))
        {
            continue;
        }
        if cx.version >= 1
            && request.duration_filter >= 0
            && (record.started_ms <= 0 || now - record.started_ms < request.duration_filter)
        {
            continue;
        }
        let mut listed = ListedTransaction::default();
        listed.transactional_id = TransactionalId(str_bytes(&record.transactional_id));
        listed.producer_id = ProducerId(record.producer_id);
        listed.transaction_state = str_bytes(status);
        response.transaction_states.push(listed);
    }
    ResponseKind::ListTransactions(response)
}
